//! edgecd's own tract operators for the 2-D window operations where tract 0.23 is slowest on
//! the models we ship against, and the rewrites that put them in a decluttered graph.
//!
//! Measured on one x86_64 core against onnxruntime's per-node profile: tract's depthwise
//! convolution took 13.1 ms of PP-OCRv4 det (onnxruntime: 2.1 ms) and its max pooling 2.7 ms
//! of squeezenet (onnxruntime: 0.17 ms); stride-2 windows fall to a generic per-pixel walk.
//! [`DepthwiseConv2d`] and [`MaxPool2d`] run the row-span loops of [`crate::spatial`] instead,
//! one channel plane at a time, spread over tract's thread pool when the request has more than
//! one thread: 6–7.5 ms and 0.8 ms on the same inputs (`edgecd-infer --bench-profile`).
//! Dense convolutions are [`crate::conv`]'s.
//!
//! Only f32, NCHW (or CHW, once tract has dropped a batch of 1), 2-D, non-quantized operators
//! are replaced; everything else stays tract's.

use crate::spatial::{Geometry, Plane};
use std::sync::atomic::{AtomicU64, Ordering};
use tract_linalg::multithread::{Executor, current_tract_executor};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::TypedConcat;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Depthwise 2-D convolution (group = input channels = output channels), inputs
/// `[x (N,C,H,W), kernel (C,1,kh,kw), bias (C or 1)]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepthwiseConv2d {
    pub pool_spec: PoolSpec,
}

/// 2-D max pooling, input `x (N,C,H,W)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaxPool2d {
    pub pool_spec: PoolSpec,
}

/// The plane geometry of `pool_spec` on an NCHW or CHW input: (channels, plane, output shape).
pub(crate) fn plane(
    pool_spec: &PoolSpec,
    shape: &[usize],
) -> TractResult<(usize, Plane, TVec<usize>)> {
    let rank = if pool_spec.data_format == DataFormat::NCHW {
        4
    } else {
        3
    };
    ensure!(
        shape.len() == rank,
        "expected a {:?} input, got shape {shape:?}",
        pool_spec.data_format
    );
    let (c, hw) = (shape[rank - 3], &shape[rank - 2..]);
    let padding = pool_spec.computed_padding(hw);
    let (strides, dilations) = (pool_spec.strides(), pool_spec.dilations());
    let geo = Geometry {
        h: hw[0],
        w: hw[1],
        oh: padding[0].convoluted,
        ow: padding[1].convoluted,
        kh: pool_spec.kernel_shape[0],
        kw: pool_spec.kernel_shape[1],
        sh: strides[0],
        sw: strides[1],
        dh: dilations[0],
        dw: dilations[1],
        pad_top: padding[0].pad_before,
        pad_left: padding[1].pad_before,
    };
    let mut out_shape: TVec<usize> = shape.into();
    out_shape[rank - 2] = geo.oh;
    out_shape[rank - 1] = geo.ow;
    Ok((c, Plane::new(geo), out_shape))
}

/// Window taps (output values × kernel size) below which a plane operation runs on one
/// thread: waking another costs more than it saves (measured with the convolutions' threshold,
/// `conv::PARALLEL_MIN_MACS`).
const PARALLEL_MIN_TAPS: usize = 1 << 15;

/// Whether `EDGECD_INFER_TRACT_OPS=1` asks for tract's own operators everywhere (to compare, or
/// to rule edgecd's out).
pub(crate) fn tract_ops_only() -> bool {
    std::env::var_os("EDGECD_INFER_TRACT_OPS").is_some_and(|v| v == "1")
}

/// Tract's current thread pool, when the request has one and `work` reaches `min_work` (below
/// that, waking another thread costs more than it saves).
pub(crate) fn pool_for(work: usize, min_work: usize) -> Option<Arc<rayon::ThreadPool>> {
    match current_tract_executor() {
        Executor::MultiThread(pool) if work >= min_work => Some(pool),
        _ => None,
    }
}

/// One thread's share of a parallel loop: items `front..back`, taken from the front by their
/// owner and from the back by the others once their own shares are done.
struct Share(AtomicU64);

impl Share {
    fn new(front: usize, back: usize) -> Share {
        Share(AtomicU64::new(((front as u64) << 32) | back as u64))
    }

    fn take(&self, from_front: bool) -> Option<usize> {
        let mut now = self.0.load(Ordering::Relaxed);
        loop {
            let (front, back) = (now >> 32, now & u64::from(u32::MAX));
            if front >= back {
                return None;
            }
            let (next, item) = if from_front {
                (((front + 1) << 32) | back, front)
            } else {
                ((front << 32) | (back - 1), back - 1)
            };
            match self
                .0
                .compare_exchange_weak(now, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(item as usize),
                Err(seen) => now = seen,
            }
        }
    }
}

/// Runs `f(i)` for every `i` in `0..n`, on `pool` when given. Each pool thread owns one
/// contiguous share, the same share of every operator, so it mostly reads what it wrote
/// itself: the rows it computed in the layer before are still in its own core's cache. Once
/// its share is done it takes what is left of the others' from their ends, so a thread that
/// woke late (or is busy with another request) delays nobody.
///
/// Measured on squeezenet (2 threads): rayon's work-stealing handed the rows of consecutive
/// layers to either thread, and a block whose input the other core had written ran up to 3×
/// slower than the same block on the core that wrote it (the 1×1 expand layers: 200 µs
/// against 70); with fixed shares, 70 and 75.
///
/// Within a plan run by [`crate::model::on_pool`], the loop goes to the run's
/// [`crate::crew::Crew`] (the plan's thread takes share 0, each helper its own), whose helpers
/// are awake; otherwise (no crew, or its helpers not there yet or gone idle, in which case new
/// ones are sent for) to the pool's threads, woken for it.
pub(crate) fn for_each_share(pool: Option<&rayon::ThreadPool>, n: usize, f: impl Fn(usize) + Sync) {
    let threads = pool.map_or(1, |p| p.current_num_threads()).min(n);
    let Some(pool) = pool.filter(|_| threads > 1) else {
        return (0..n).for_each(f);
    };
    assert!(n <= u32::MAX as usize, "too many items");
    let shares: Vec<Share> = (0..threads)
        .map(|t| Share::new(t * n / threads, (t + 1) * n / threads))
        .collect();
    let work = |me: usize| {
        let me = me % threads;
        while let Some(i) = shares[me].take(true) {
            f(i)
        }
        for other in (1..threads).map(|d| (me + d) % threads) {
            while let Some(i) = shares[other].take(false) {
                f(i)
            }
        }
    };
    if let Some(crew) = crate::crew::Crew::current() {
        if crew.has_helpers() {
            return crew.parallel(&work);
        }
        crew.recruit(pool);
    }
    let me = || rayon::current_thread_index().unwrap_or(0);
    pool.scope(|s| {
        for _ in 1..threads {
            s.spawn(|_| work(me()));
        }
        work(me());
    })
}

/// Evaluates a plane operation on `x`: allocates the output (`out_shape`) and runs
/// `f(plane index, input plane, scratch, output plane)` for each channel plane, on tract's
/// current thread pool when there is one.
fn map_planes(
    x: &TValue,
    plane: &Plane,
    out_shape: &[usize],
    f: impl Fn(usize, &[f32], &mut [f32], &mut [f32]) + Sync,
) -> TractResult<TValue> {
    let geo = plane.geometry();
    let (in_len, out_len, scratch_len) = (geo.h * geo.w, geo.oh * geo.ow, geo.scratch_len());
    let x = x.to_plain_array_view::<f32>()?;
    let x = x.as_slice().context("input is not contiguous")?;
    let mut out = Tensor::zero::<f32>(out_shape)?;
    if out_len > 0 {
        let mut plain = out.try_as_plain_ram_mut()?;
        let out = plain.as_slice_mut::<f32>()?;
        let one = |ix: usize, o: &mut [f32], scratch: &mut [f32]| {
            f(ix, &x[ix * in_len..(ix + 1) * in_len], scratch, o)
        };
        match pool_for(out.len() * geo.kh * geo.kw, PARALLEL_MIN_TAPS) {
            Some(pool) if out.len() > out_len => {
                use rayon::prelude::*;
                pool.install(|| {
                    out.par_chunks_mut(out_len).enumerate().for_each_init(
                        || vec![0.0; scratch_len],
                        |scratch, (ix, o)| one(ix, o, scratch),
                    )
                })
            }
            _ => {
                let mut scratch = vec![0.0; scratch_len];
                for (ix, o) in out.chunks_mut(out_len).enumerate() {
                    one(ix, o, &mut scratch);
                }
            }
        }
    }
    Ok(out.into_tvalue())
}

impl Op for DepthwiseConv2d {
    fn name(&self) -> StaticName {
        "EdgecdDepthwiseConv2d".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(self.pool_spec.info())
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseConv2d {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, kernel, bias) = args_3!(inputs);
        let (c, plane, out_shape) = plane(&self.pool_spec, x.shape())?;
        let geo = *plane.geometry();
        let k_len = geo.kh * geo.kw;
        ensure!(
            kernel.len() == c * k_len,
            "kernel shape {:?}",
            kernel.shape()
        );
        ensure!(
            bias.len() == c || bias.len() == 1,
            "bias shape {:?}",
            bias.shape()
        );
        let kernel = kernel.to_plain_array_view::<f32>()?;
        let kernel = kernel.as_slice().context("kernel is not contiguous")?;
        let bias = bias.to_plain_array_view::<f32>()?;
        let bias = bias.as_slice().context("bias is not contiguous")?;
        let out = map_planes(&x, &plane, &out_shape, |ix, input, scratch, o| {
            let ch = ix % c;
            plane.depthwise(
                input,
                &kernel[ch * k_len..(ch + 1) * k_len],
                bias[if bias.len() == 1 { 0 } else { ch }],
                scratch,
                o,
            )
        })?;
        Ok(tvec!(out))
    }
}

impl TypedOp for DepthwiseConv2d {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.pool_spec.output_facts(inputs)
    }

    as_op!();
}

impl Op for MaxPool2d {
    fn name(&self) -> StaticName {
        "EdgecdMaxPool2d".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(self.pool_spec.info())
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2d {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let (_, plane, out_shape) = plane(&self.pool_spec, x.shape())?;
        let out = map_planes(&x, &plane, &out_shape, |_, input, scratch, o| {
            plane.max_pool(input, scratch, o)
        })?;
        Ok(tvec!(out))
    }
}

impl TypedOp for MaxPool2d {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.pool_spec.output_facts(inputs)
    }

    as_op!();
}

/// Whether `spec` is a 2-D NCHW or CHW window we run ourselves.
pub(crate) fn supported(spec: &PoolSpec, input: &TypedFact) -> bool {
    let rank = match spec.data_format {
        DataFormat::NCHW => 4,
        DataFormat::CHW => 3,
        _ => return false,
    };
    spec.kernel_shape.len() == 2
        && input.rank() == rank
        && input.datum_type == f32::datum_type()
        && spec.strides().iter().all(|s| *s > 0)
        && spec.dilations().iter().all(|d| *d > 0)
}

/// Whether tract's `conv` at `node` is one edgecd's operators can take: f32 NCHW/CHW and 2-D
/// ([`supported`]), not quantized, with an OIHW kernel of the shape its groups imply (output
/// channels × input channels per group × kh × kw) and a bias input. The group count is the
/// caller's to check (1 for a dense convolution, the channel count for a depthwise one).
pub(crate) fn plain_conv(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<bool> {
    let (c, o) = (conv.input_channels(), conv.output_channels());
    let spatial = &conv.pool_spec.kernel_shape;
    let Some(&input) = node.inputs.first() else {
        return Ok(false);
    };
    if !supported(&conv.pool_spec, model.outlet_fact(input)?)
        || conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || node.inputs.len() != 3
        || conv.group == 0
    {
        return Ok(false);
    }
    let kernel_shape = model.outlet_fact(node.inputs[1])?.shape.as_concrete();
    Ok(kernel_shape == Some(&[o, c / conv.group, spatial[0], spatial[1]][..]))
}

/// Replaces tract's f32 NCHW/CHW depthwise convolutions and max pools by [`DepthwiseConv2d`]
/// and [`MaxPool2d`]. Returns how many nodes it replaced.
pub fn use_edgecd_window_ops(model: &mut TypedModel) -> TractResult<usize> {
    if tract_ops_only() {
        return Ok(0);
    }
    crate::fuse::patch_each(model, window_patch)
}

fn window_patch(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let Some(&input) = node.inputs.first() else {
        return Ok(None);
    };
    let op: Box<dyn TypedOp> = if let Some(conv) = node.op_as::<Conv>() {
        let (c, o) = (conv.input_channels(), conv.output_channels());
        if !(plain_conv(model, node, conv)? && conv.group == c && o == c) {
            return Ok(None);
        }
        Box::new(DepthwiseConv2d {
            pool_spec: conv.pool_spec.clone(),
        })
    } else if let Some(pool) = node.op_as::<MaxPool>() {
        if pool.with_index_outputs.is_some()
            || !supported(&pool.pool_spec, model.outlet_fact(input)?)
        {
            return Ok(None);
        }
        if let Some(patch) = pool_each_part(model, node, &pool.pool_spec)? {
            return Ok(Some(patch));
        }
        Box::new(MaxPool2d {
            pool_spec: pool.pool_spec.clone(),
        })
    } else {
        return Ok(None);
    };
    crate::fuse::replace_node(model, node, op, |_, _| Ok(())).map(Some)
}

/// A max pool of a concatenation along the channels (squeezenet's fire modules end so): the
/// concatenation of each part's max pool instead, since pooling treats each channel alone. The
/// copy of the concatenation then moves a quarter of the values (a 3×3 stride-2 pool), and
/// each part's pool reads what the thread that wrote it wrote.
fn pool_each_part(
    model: &TypedModel,
    node: &TypedNode,
    pool_spec: &PoolSpec,
) -> TractResult<Option<TypedModelPatch>> {
    let concat_node = model.node(node.inputs[0].node);
    let Some(concat) = concat_node.op_as::<TypedConcat>() else {
        return Ok(None);
    };
    let rank = model.outlet_fact(node.inputs[0])?.rank();
    let single_use = crate::fuse::only_successor(model, concat_node).map(|n| n.id) == Some(node.id);
    if concat.axis + 3 != rank || !single_use || concat_node.inputs.len() < 2 {
        return Ok(None);
    }
    let mut patch = TypedModelPatch::default();
    let mut pooled = tvec![];
    for (ix, part) in concat_node.inputs.iter().enumerate() {
        let fact = model.outlet_fact(*part)?;
        let Some(c) = fact.shape[concat.axis].to_usize().ok() else {
            return Ok(None);
        };
        if !supported(pool_spec, fact) {
            return Ok(None);
        }
        let op = MaxPool2d {
            pool_spec: PoolSpec {
                input_channels: c,
                output_channels: c,
                ..pool_spec.clone()
            },
        };
        let tap = patch.tap_model(model, *part)?;
        pooled.push(patch.wire_node(format!("{}.part{ix}", node.name), op, &[tap])?[0]);
    }
    let out = patch.wire_node(&node.name, TypedConcat { axis: concat.axis }, &pooled)?;
    patch.shunt_outside(model, OutletId::new(node.id, 0), out[0])?;
    Ok(Some(patch))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tract_linalg::multithread::multithread_tract_scope;
    use tract_onnx::tract_core::ops::cnn::PaddingSpec;

    /// Every item runs exactly once, whatever the pool size, the item count, and however the
    /// threads' shares are taken from the front and from the back; without a pool, in order.
    #[test]
    fn each_share_item_runs_once() {
        for threads in [2, 3, 4] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for n in [0, 1, 2, 3, 7, 64, 1001] {
                let runs: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                for_each_share(Some(&pool), n, |i| {
                    // Uneven items, so that threads finish early and take from the others.
                    if i % 5 == 0 {
                        std::thread::sleep(std::time::Duration::from_micros(50));
                    }
                    runs[i].fetch_add(1, Ordering::Relaxed);
                });
                let counts: Vec<usize> = runs.iter().map(|r| r.load(Ordering::Relaxed)).collect();
                assert!(
                    counts.iter().all(|&c| c == 1),
                    "{threads} threads, {n} items: {counts:?}"
                );
            }
        }
        let order = std::sync::Mutex::new(Vec::new());
        for_each_share(None, 5, |i| order.lock().unwrap().push(i));
        assert_eq!(order.into_inner().unwrap(), [0, 1, 2, 3, 4]);
    }

    /// The operators of `m`, less its sources and constants.
    pub(crate) fn ops(m: &TypedModel) -> Vec<String> {
        m.nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .filter(|n| n != "Source" && n != "Const")
            .collect()
    }

    /// Runs tract's optimized `want` once and `ours` on 1 and 2 threads, checks that they
    /// agree, and returns tract's outputs.
    pub(crate) fn agree(
        want: TypedModel,
        ours: &TypedModel,
        inputs: TVec<TValue>,
        what: &str,
    ) -> TVec<TValue> {
        let run = |m: TypedModel| {
            m.into_optimized()
                .unwrap()
                .into_runnable()
                .unwrap()
                .run(inputs.clone())
                .unwrap()
        };
        let want = run(want);
        for threads in [1, 2] {
            let got =
                multithread_tract_scope(crate::model::executor(threads), || run(ours.clone()));
            close(&got[0], &want[0], &format!("{what}, {threads} threads"));
        }
        want
    }

    /// A max pool of a channel concatenation becomes the concatenation of each part's pool,
    /// and agrees with tract's.
    #[test]
    fn a_pool_of_a_concat_pools_each_part() {
        let mut model = TypedModel::default();
        let a = model.add_source("a", f32::fact([1, 2, 9, 11])).unwrap();
        let b = model.add_source("b", f32::fact([1, 3, 9, 11])).unwrap();
        let cat = model
            .wire_node("cat", TypedConcat { axis: 1 }, &[a, b])
            .unwrap()[0];
        let pool = MaxPool {
            pool_spec: square_spec(DataFormat::NCHW, &PaddingSpec::Valid, (3, 2, 1), (5, 5)),
            with_index_outputs: None,
        };
        let out = model.wire_node("pool", pool, &[cat]).unwrap()[0];
        model.select_output_outlets(&[out]).unwrap();
        let decluttered = model.into_decluttered().unwrap();
        let mut ours = decluttered.clone();
        assert_eq!(use_edgecd_window_ops(&mut ours).unwrap(), 1);
        assert_eq!(
            ops(&ours),
            ["EdgecdMaxPool2d", "EdgecdMaxPool2d", "Concat"],
            "{ours}"
        );
        let inputs = tvec![
            random(&[1, 2, 9, 11], 7).into_tvalue(),
            random(&[1, 3, 9, 11], 8).into_tvalue()
        ];
        agree(decluttered, &ours, inputs, "pool of a concat");
    }

    pub(crate) fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        Tensor::from_shape(shape, &v).unwrap()
    }

    /// A k × k window with the same stride and dilation on both axes, c channels in, o out.
    pub(crate) fn square_spec(
        data_format: DataFormat,
        padding: &PaddingSpec,
        (k, stride, dilation): (usize, usize, usize),
        (c, o): (usize, usize),
    ) -> PoolSpec {
        PoolSpec {
            data_format,
            kernel_shape: tvec![k, k],
            padding: padding.clone(),
            dilations: Some(tvec![dilation, dilation]),
            strides: Some(tvec![stride, stride]),
            input_channels: c,
            output_channels: o,
        }
    }

    pub(crate) fn close(a: &Tensor, b: &Tensor, what: &str) {
        assert_eq!(a.shape(), b.shape(), "{what}: shape");
        let a = a.to_plain_array_view::<f32>().unwrap();
        let b = b.to_plain_array_view::<f32>().unwrap();
        for (x, y) in a.iter().zip(b.iter()) {
            assert!((x - y).abs() <= 1e-4 + 1e-4 * y.abs(), "{what}: {x} vs {y}");
        }
    }

    /// Both operators against tract's own, on batched (NCHW) and unbatched (CHW) inputs, with
    /// explicit, SAME and ceil-mode padding, strides, dilations, on one and two threads.
    #[test]
    fn depthwise_and_max_pool_match_tract() {
        let paddings = [
            PaddingSpec::Explicit(tvec![1, 2], tvec![1, 0]),
            PaddingSpec::SameUpper,
            PaddingSpec::ExplicitOnnxPool(tvec![0, 1], tvec![1, 1], true),
            PaddingSpec::Valid,
        ];
        let mut cases = 0;
        for (data_format, shape) in [
            (DataFormat::NCHW, vec![2, 5, 13, 19]),
            (DataFormat::CHW, vec![6, 17, 40]),
            // Large enough to be spread over threads (PARALLEL_MIN_TAPS).
            (DataFormat::NCHW, vec![1, 48, 48, 48]),
        ] {
            let c = shape[shape.len() - 3];
            for padding in &paddings {
                for (k, stride, dilation) in [
                    (3, 1, 1),
                    (3, 2, 1),
                    (5, 2, 1),
                    (2, 2, 1),
                    (3, 1, 2),
                    (4, 3, 1),
                ] {
                    if matches!(padding, PaddingSpec::SameUpper) && stride > 1 && dilation > 1 {
                        continue;
                    }
                    let pool_spec =
                        square_spec(data_format, padding, (k, stride, dilation), (c, c));
                    let x = random(&shape, cases);
                    let kernel = random(&[c, 1, k, k], cases + 1);
                    let bias = random(&[c], cases + 2);
                    let tract_conv = Conv {
                        pool_spec: pool_spec.clone(),
                        kernel_fmt: KernelFormat::OIHW,
                        group: c,
                        q_params: None,
                    };
                    let conv_inputs = || {
                        tvec![
                            x.clone().into_tvalue(),
                            kernel.clone().into_tvalue(),
                            bias.clone().into_tvalue()
                        ]
                    };
                    let want = tract_conv.eval_out_of_plan(conv_inputs()).unwrap().unwrap();
                    let ours = DepthwiseConv2d {
                        pool_spec: pool_spec.clone(),
                    };
                    let facts: TVec<TypedFact> =
                        conv_inputs().iter().map(|t| f32::fact(t.shape())).collect();
                    let fact_refs: TVec<&TypedFact> = facts.iter().collect();
                    let out_fact = ours.output_facts(&fact_refs).unwrap();
                    let is_max_pool = !matches!(padding, PaddingSpec::SameUpper);
                    let tract_pool = MaxPool {
                        pool_spec: pool_spec.clone(),
                        with_index_outputs: None,
                    };
                    let pool_want = tract_pool
                        .eval_out_of_plan(tvec![x.clone().into_tvalue()])
                        .unwrap()
                        .unwrap();
                    for threads in [1, 2] {
                        let what = format!(
                            "{data_format:?} {padding:?} k{k} s{stride} d{dilation} t{threads}"
                        );
                        let got = tract_linalg::multithread::multithread_tract_scope(
                            crate::model::executor(threads),
                            || ours.eval_out_of_plan(conv_inputs()).unwrap().unwrap(),
                        );
                        close(&got[0], &want[0], &format!("depthwise {what}"));
                        assert_eq!(
                            out_fact[0].shape.as_concrete(),
                            Some(got[0].shape()),
                            "{what}"
                        );
                        if is_max_pool {
                            let got = tract_linalg::multithread::multithread_tract_scope(
                                crate::model::executor(threads),
                                || {
                                    MaxPool2d {
                                        pool_spec: pool_spec.clone(),
                                    }
                                    .eval_out_of_plan(tvec![x.clone().into_tvalue()])
                                    .unwrap()
                                    .unwrap()
                                },
                            );
                            close(&got[0], &pool_want[0], &format!("max pool {what}"));
                        }
                    }
                    cases += 1;
                }
            }
        }
        assert!(cases >= 40, "{cases} cases");
    }
}
