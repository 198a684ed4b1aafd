//! edgecd's dense convolution for tract ([`Conv2d`]), and the rewrites that put it in a
//! decluttered graph in place of tract's dense convolutions and of the matrix products tract
//! makes of 1×1 convolutions, with the elementwise operations that follow them folded in.
//!
//! Why: on one x86_64 core, tract 0.23's matrix product ran the 3×3 layers of squeezenet at
//! 20–75 GFLOP/s (the RGB stem at 20), where onnxruntime's reaches 80–115 on the same core. The
//! `gemm` crate reaches 90–107 on the same shapes, so each image becomes an im2col matrix
//! ([`crate::spatial::Plane::im2col_rows`], a block of output rows at a time so that it stays in
//! cache) times the kernel, by `gemm`.
//!
//! A 3×3 stride-1 window over 8 input channels or more runs by [`crate::winograd`] (2.25×
//! fewer multiply-adds), another window bigger than 1×1 whose output positions
//! [`crate::direct`] computes with little waste ([`direct_pays`], decided from the input shape
//! when the plan is built) by [`crate::direct`]: either skips the im2col matrix, its kernel
//! packed once ([`pack_kernels`], [`Method`]), each block's epilogue applied on the way out.
//!
//! What follows a convolution is folded into it when it can be ([`fuse_conv_epilogues`]):
//! per-channel constant products and sums (batch norm, bias) go into the kernel and the bias
//! (of depthwise convolutions too), a same-shape sum (a residual connection) becomes a fourth
//! input added in place, and constant `max`/`min` (ReLU, ReLU6) a clamp; all applied to each
//! block just after it is computed. A max pool that alone reads a convolution's output is
//! folded in last ([`fuse_conv_pools`]): each block of pooled rows computes the convolution
//! rows it reads into a band of its thread's, and pools them while they are in cache.
//! The 1×1 products that tract split over a channel concatenation (`a · Ka + b · Kb`) are put
//! back into one convolution that reads its image in parts, where they are
//! ([`merge_split_products`]).
//!
//! On several threads ([`crate::ops::for_each_share`]), each thread owns the same share of
//! every layer (a band of output rows; or, in deep layers with more channels than positions, a
//! range of output channels), so that it mostly reads what it wrote itself; each block pads only
//! the input rows it reads ([`crate::spatial::Plane::band`]). A stride-2 1×1 convolution, which
//! tract declutters into `Downsample`s and a product, is one strided [`Conv2d`] again.
//!
//! Only f32, NCHW (or CHW), 2-D, non-quantized, group-1 convolutions are replaced.

use crate::ops::{
    DepthwiseConv2d, MaxPool2d, for_each_share, plain_conv, plane, pool_for, supported,
};
use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::Downsample;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::{Add, Max, Min, Mul};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// What is applied to each output value after the product and the bias: the residual input's
/// value added (when there is one), then clamped to `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Epilogue {
    pub residual: bool,
    pub low: f32,
    pub high: f32,
}

/// `v` clamped to `[low, high]` (neither NaN), as `v.max(low).min(high)` (a NaN `v` gives
/// `low`), written as the comparisons that are one vector max and one min instruction each
/// (`f32::max` adds a NaN test and a blend to each).
#[inline(always)]
fn clamp(v: f32, low: f32, high: f32) -> f32 {
    let v = if v > low { v } else { low };
    if v < high { v } else { high }
}

impl Default for Epilogue {
    fn default() -> Self {
        Epilogue {
            residual: false,
            low: f32::NEG_INFINITY,
            high: f32::INFINITY,
        }
    }
}

impl Eq for Epilogue {}

impl std::hash::Hash for Epilogue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.residual, self.low.to_bits(), self.high.to_bits()).hash(state)
    }
}

impl Epilogue {
    fn clamps(&self) -> bool {
        self.low > f32::NEG_INFINITY || self.high < f32::INFINITY
    }
}

/// How a [`Conv2d`] computes its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Method {
    /// im2col and `gemm` (or the image itself for a 1×1, stride-1, unpadded kernel), the
    /// kernel as ONNX stores it.
    #[default]
    Gemm,
    /// [`crate::direct`], from the padded input, the kernel packed by
    /// [`crate::direct::pack`].
    Direct,
    /// [`crate::winograd`] (3×3, stride 1), the kernel packed by [`crate::winograd::pack`].
    Winograd,
}

/// Dense 2-D convolution (group 1), inputs `[x (N,C,H,W), kernel (O,C,kh,kw), bias (O or 1)]`
/// and, with `epilogue.residual`, `residual` (the output's shape): per image, the im2col matrix
/// times the kernel (by `gemm`), plus the bias, then the [`Epilogue`]. A 1×1, stride-1,
/// unpadded kernel reads the image as it is. `output_rank` is the pool spec's output rank, or
/// that rank ± a leading batch axis of 1 (how tract writes a 1×1 convolution as a product).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Conv2d {
    pub pool_spec: PoolSpec,
    pub epilogue: Epilogue,
    pub output_rank: usize,
    /// How the convolution is computed, and so how its kernel input is laid out
    /// ([`pack_kernels`]).
    pub method: Method,
    /// A max pool of the output (after the epilogue), folded in by [`fuse_conv_pools`]: the
    /// output is then the pool's, and the convolution's is never written whole.
    pub pool: Option<PoolSpec>,
    /// How many inputs the image comes in: channel ranges of it, one after the other, each
    /// read where it is (a 1×1 product that tract split over a concatenation, put back
    /// together by [`merge_split_products`]). The inputs are then `[x_1 .. x_parts, kernel,
    /// bias]` and the residual.
    pub parts: usize,
}

/// Values in one block of the im2col matrix when the core's L2 cache size is not known: small
/// enough to stay in cache between its writing and the matrix product (a whole image's matrix
/// was 50 MB for a PP-OCR det layer, and twice as slow).
const COLUMN_BLOCK: usize = 64 * 1024;

static COLUMN_BLOCK_NOW: AtomicUsize = AtomicUsize::new(COLUMN_BLOCK);

/// Sizes the im2col blocks to a core's L2 cache of `l2_bytes` (as many f32 as it holds, within
/// 16K–1M values). On this AMD EPYC (1 MiB L2) a block that fills the L2 beat the 256 KB
/// default: p50, best of 3, PP-OCR det 48.5 → 43.7–44.9 ms on 1 thread, resnet50 95.7 →
/// 91.9–92.4 ms on 1 thread and 52 → 49.2–49.4 ms on 2; squeezenet and rec within noise. Twice
/// the L2 was slower again (det 48.7 ms).
pub fn set_column_block_for_l2(l2_bytes: usize) {
    let values = (l2_bytes / 4).clamp(16 * 1024, 1024 * 1024);
    COLUMN_BLOCK_NOW.store(values, Ordering::Relaxed);
}

fn column_block() -> usize {
    COLUMN_BLOCK_NOW.load(Ordering::Relaxed)
}

/// Multiply-adds below which a dense convolution runs on one thread. With the inference on a
/// pool thread ([`crate::model::on_pool`]) and fixed shares, a second thread pays off from
/// about here: 2 threads, p50, against 2M (the threshold when each operator woke the pool from
/// outside): PP-OCR cls 0.90 → 0.77 ms, squeezenet 5.03 → 4.75 ms, rec, det and resnet50
/// within noise.
const PARALLEL_MIN_MACS: usize = 1 << 17;

thread_local! {
    /// The im2col block this thread last filled, and the padded input band of one channel it
    /// last read, kept for the next block (a fresh buffer costs its page faults every time).
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BAND: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A pooled convolution's rows for one block of pooled rows (every channel), and the
    /// pool's scratch.
    static POOLED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static POOL_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One image's output (channels × positions, row-major), or a band of its rows, lent to the
/// blocks that compute it, each its own range of positions of every channel, possibly on
/// several threads at once.
#[derive(Clone, Copy)]
struct ImageOut {
    ptr: *mut f32,
    channels: usize,
    positions: usize,
    /// The image row at position 0 (not 0 for a band of rows).
    first_row: usize,
}

impl ImageOut {
    /// Positions `start .. start + len` of channel `ch`.
    ///
    /// # Safety
    /// They are inside the image (or band), and no one else reads or writes them while the
    /// slice lives.
    #[allow(unsafe_code)]
    unsafe fn slice<'a>(self, ch: usize, start: usize, len: usize) -> &'a mut [f32] {
        assert!(
            ch < self.channels && start + len <= self.positions,
            "outside the image"
        );
        // SAFETY: inside the image (checked above), and this caller's alone (the contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(ch * self.positions + start), len) }
    }
}

// SAFETY: an `ImageOut` is built from a `&mut [f32]` that stays borrowed, and unused, while the
// blocks run; the blocks write disjoint position ranges (see `Block::run`).
#[allow(unsafe_code)]
unsafe impl Send for ImageOut {}
#[allow(unsafe_code)]
unsafe impl Sync for ImageOut {}

/// Where a block's columns come from.
enum Source<'a> {
    /// The image itself (a 1×1, stride-1, unpadded kernel): channels × positions.
    Image(&'a [f32]),
    /// The image (channels × positions), padded a band at a time: each block pads, channel
    /// by channel, only the input rows its output rows read ([`crate::spatial::Plane::band`]).
    Bands(&'a [f32]),
    /// The image in parts of (channels × positions, channels), one after the other (a 1×1,
    /// stride-1, unpadded kernel): one product per part, each added to the ones before.
    Parts(TVec<(&'a [f32], usize)>),
}

/// What every block of one image's convolution shares.
struct Block<'a> {
    plane: &'a crate::spatial::Plane,
    /// Output channels × (input channels · taps), row-major.
    kernel: &'a [f32],
    /// One value per output channel, or one for all.
    bias: &'a [f32],
    taps: usize,
    k: usize,
    source: Source<'a>,
    /// The residual input of this image, shaped like its output.
    residual: Option<&'a [f32]>,
    epilogue: Epilogue,
    /// How `kernel` is packed, and so which computes the block.
    method: Method,
}

/// Where [`crate::direct::run`] hands a block's output values: through the bias and the
/// epilogue into the image.
struct DirectOut<'a, 'b> {
    block: &'a Block<'b>,
    out: ImageOut,
    /// The block's first position in the image, its channels' end and its positions.
    start: usize,
    end: usize,
    len: usize,
}

impl crate::direct::Emit for DirectOut<'_, '_> {
    // Inlined into the kernel's caller, so compiled for its vector instructions.
    #[inline(always)]
    fn emit(&mut self, r: usize, pos: usize, values: &[f32]) {
        if r >= self.end {
            return;
        }
        assert!(pos + values.len() <= self.len, "run outside the block");
        let at = r * self.out.positions + self.start + pos;
        // SAFETY: positions start + pos .. + values.len() of channel r are inside the block
        // (checked just above), which is inside the image and this block's alone (checked by
        // `run_direct`).
        #[allow(unsafe_code)]
        let dst = unsafe { self.out.slice(r, self.start + pos, values.len()) };
        let b = self.block;
        let bias = b.bias[if b.bias.len() == 1 { 0 } else { r }];
        let (low, high) = (b.epilogue.low, b.epilogue.high);
        match b.residual {
            Some(residual) => {
                let residual = &residual[at..][..values.len()];
                for ((d, v), s) in dst.iter_mut().zip(values).zip(residual) {
                    *d = clamp(*v + bias + *s, low, high);
                }
            }
            None if b.epilogue.clamps() => {
                for (d, v) in dst.iter_mut().zip(values) {
                    *d = clamp(*v + bias, low, high);
                }
            }
            None => {
                for (d, v) in dst.iter_mut().zip(values) {
                    *d = *v + bias;
                }
            }
        }
    }
}

impl<'a> Block<'a> {
    /// Where a block of output rows `rows` and channels `channels` lies in `out`: its first
    /// position and its positions per channel, checked to be inside it.
    fn span(&self, rows: &Range<usize>, channels: &Range<usize>, out: ImageOut) -> (usize, usize) {
        let ow = self.plane.geometry().ow;
        assert!(rows.start >= out.first_row, "block before the band");
        let (start, len) = ((rows.start - out.first_row) * ow, rows.len() * ow);
        assert!(start + len <= out.positions, "block outside the image");
        assert!(channels.end <= out.channels, "block outside the channels");
        (start, len)
    }

    /// Where a block of output rows `rows` and channels `channels` (a whole number of
    /// [`crate::direct::TILE`]s from the start) of `out` hands its values.
    fn emitter(
        &self,
        rows: &Range<usize>,
        channels: &Range<usize>,
        out: ImageOut,
    ) -> DirectOut<'_, 'a> {
        let (start, len) = self.span(rows, channels, out);
        assert_eq!(
            channels.start % crate::direct::TILE,
            0,
            "tile-aligned channels"
        );
        DirectOut {
            block: self,
            out,
            start,
            end: channels.end,
            len,
        }
    }

    /// A block by [`crate::direct::run`]: pads the band of every input channel its rows read,
    /// then computes its channels' tiles, each run of output values going through the bias and
    /// the epilogue on its way out.
    fn run_direct(&self, rows: &Range<usize>, channels: &Range<usize>, out: ImageOut) {
        let geo = self.plane.geometry();
        let ow = geo.ow;
        let mut emit = self.emitter(rows, channels, out);
        let Source::Bands(image) = self.source else {
            panic!("a direct convolution reads padded bands");
        };
        let (band, read) = self.plane.band(rows.clone());
        let channel_len = band.geometry().scratch_len();
        let c = self.k / self.taps.max(1);
        let layout = crate::direct::Layout {
            offsets: (0..c)
                .flat_map(|ch| band.offsets().iter().map(move |t| ch * channel_len + t))
                .collect(),
            rows: rows.len(),
            ow,
            row_step: band.row_step(),
            flat: geo.sh == 1 && geo.sw == 1,
        };
        let (hw, read) = (geo.h * geo.w, read.start * geo.w..read.end * geo.w);
        BAND.with_borrow_mut(|padded| {
            let need = (c * channel_len).max(layout.padded_len());
            if padded.len() < need {
                padded.resize(need, 0.0);
            }
            for (ch, dst) in padded.chunks_exact_mut(channel_len).take(c).enumerate() {
                band.pad(&image[ch * hw..][read.clone()], dst);
            }
            let tiles =
                channels.start / crate::direct::TILE..channels.end.div_ceil(crate::direct::TILE);
            let work = crate::direct::Work {
                packed: self.kernel,
                k: self.k,
                tiles,
                padded,
                layout: &layout,
            };
            crate::direct::run(&work, &mut emit);
        });
    }

    /// A block by [`crate::winograd::run`], from the image as it is, each output row going
    /// through the bias and the epilogue on its way out.
    fn run_winograd(&self, rows: &Range<usize>, channels: &Range<usize>, out: ImageOut) {
        let geo = self.plane.geometry();
        let mut emit = self.emitter(rows, channels, out);
        let Source::Bands(image) = self.source else {
            panic!("a Winograd convolution reads the image");
        };
        let work = crate::winograd::Work {
            packed: self.kernel,
            o: out.channels,
            c: self.k / self.taps.max(1),
            image,
            h: geo.h,
            w: geo.w,
            pad_top: geo.pad_top,
            pad_left: geo.pad_left,
            ow: geo.ow,
            rows: rows.clone(),
            tiles: channels.start / crate::direct::TILE..channels.end.div_ceil(crate::direct::TILE),
        };
        COLUMNS.with_borrow_mut(|scratch| crate::winograd::run(&work, scratch, &mut emit));
    }

    /// Rows `rows` of the max pool `pool_plane` of this convolution's output, into `out` (the
    /// pooled image): the convolution rows they read, every channel, into a band of this
    /// thread's (a block at a time, as [`blocks`] cuts them), then each channel's pool from it,
    /// while the band is in cache.
    fn run_pooled(&self, pool_plane: &crate::spatial::Plane, rows: &Range<usize>, out: ImageOut) {
        let geo = self.plane.geometry();
        let (band, read) = pool_plane.band(rows.clone());
        let o = out.channels;
        let (band_len, out_len) = (read.len() * geo.ow, rows.len() * pool_plane.geometry().ow);
        let most_rows = rows_per_block(self.k, geo.ow);
        POOLED.with_borrow_mut(|conv_rows| {
            if conv_rows.len() < o * band_len {
                conv_rows.resize(o * band_len, 0.0);
            }
            let band_out = ImageOut {
                ptr: conv_rows.as_mut_ptr(),
                channels: o,
                positions: band_len,
                first_row: read.start,
            };
            for first in read.clone().step_by(most_rows) {
                let chunk = first..(first + most_rows).min(read.end);
                self.run(&(chunk, 0..o), band_out);
            }
            POOL_SCRATCH.with_borrow_mut(|scratch| {
                let need = band.geometry().scratch_len();
                if scratch.len() < need {
                    scratch.resize(need, 0.0);
                }
                for (ch, input) in conv_rows.chunks_exact(band_len.max(1)).take(o).enumerate() {
                    // SAFETY: rows `rows` of every channel of the pooled image are this
                    // block's alone.
                    #[allow(unsafe_code)]
                    let dst = unsafe { out.slice(ch, rows.start * band.geometry().ow, out_len) };
                    band.max_pool(&input[..band_len], scratch, dst);
                }
            });
        });
    }

    /// Output rows `rows` of output channels `channels`: their im2col block, its product by
    /// those rows of the kernel into `out`, then the bias and the epilogue, in one pass while
    /// the block is in cache.
    fn run(&self, (rows, channels): &(Range<usize>, Range<usize>), out: ImageOut) {
        assert!(
            self.residual.is_none() || out.first_row == 0,
            "a residual is read from the whole image"
        );
        match self.method {
            Method::Direct => return self.run_direct(rows, channels, out),
            Method::Winograd => return self.run_winograd(rows, channels, out),
            Method::Gemm => {}
        }
        let geo = self.plane.geometry();
        let ow = geo.ow;
        let (start, len) = self.span(rows, channels, out);
        let (o, ohw, k) = (out.channels, out.positions, self.k);
        COLUMNS.with_borrow_mut(|columns| {
            // (the im2col rows of one product, their kernel values per channel, their stride)
            let products: TVec<(&[f32], usize, usize)> = match &self.source {
                // The image is its own im2col matrix: as many positions as the output.
                Source::Image(image) => tvec![(&image[rows.start * ow..], k, geo.oh * ow)],
                Source::Parts(parts) => parts
                    .iter()
                    .map(|(image, c)| (&image[rows.start * ow..], *c, geo.oh * ow))
                    .collect(),
                Source::Bands(image) => {
                    if columns.len() < k * len {
                        columns.resize(k * len, 0.0);
                    }
                    let block = &mut columns[..k * len];
                    let (band, read) = self.plane.band(rows.clone());
                    let read = read.start * geo.w..read.end * geo.w;
                    BAND.with_borrow_mut(|padded| {
                        let padded_len = band.geometry().scratch_len();
                        if padded.len() < padded_len {
                            padded.resize(padded_len, 0.0);
                        }
                        let hw = geo.h * geo.w;
                        for (ch, dst) in block.chunks_exact_mut(self.taps * len).enumerate() {
                            band.pad(&image[ch * hw..][read.clone()], padded);
                            band.im2col_rows(padded, 0..rows.len(), dst);
                        }
                    });
                    tvec![(&columns[..k * len], k, len)]
                }
            };
            assert_eq!(self.kernel.len(), o * k, "kernel size");
            assert_eq!(
                products.iter().map(|p| p.1).sum::<usize>(),
                k,
                "kernel values per channel"
            );
            let (mut from, mut wrote) = (0, false);
            for (b, kp, b_stride) in products {
                if kp == 0 {
                    continue;
                }
                assert!(b.len() >= (kp - 1) * b_stride + len, "columns size");
                // SAFETY: `kernel` is o × k, of which this product reads columns from..from +
                // kp (inside k, checked above), and `b` holds kp rows of `len` values
                // `b_stride` apart (checked above); the destination is rows `channels` (inside
                // the o × ohw image `out` points to, checked above) of `len` values, `ohw`
                // apart, from `start`, and no other block writes those positions of those
                // channels. A product after the first adds to what the ones before wrote.
                #[allow(unsafe_code)]
                unsafe {
                    gemm::gemm(
                        channels.len(),
                        len,
                        kp,
                        out.ptr.add(channels.start * ohw + start),
                        1,
                        ohw as isize,
                        wrote,
                        self.kernel[channels.start * k + from..].as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        b_stride as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
                from += kp;
                wrote = true;
            }
        });
        finish(self, channels, start, len, out);
    }
}

/// A block's rows after its product: channels `channels`, positions `start .. start + len` of
/// `out` get the bias and the epilogue, in place (from zero when the kernel is empty). Compiled
/// for the CPU's widest vectors (picked at run time, as [`crate::direct::run`] does): the
/// baseline's 4-lane loop, with `max`'s NaN handling, took a third of a 1×1 layer's time.
fn finish(block: &Block, channels: &Range<usize>, start: usize, len: usize, out: ImageOut) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn avx512(b: &Block, c: &Range<usize>, start: usize, len: usize, out: ImageOut) {
            finish_body(b, c, start, len, out)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(b: &Block, c: &Range<usize>, start: usize, len: usize, out: ImageOut) {
            finish_body(b, c, start, len, out)
        }
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above; the function is safe Rust
            // otherwise.
            #[allow(unsafe_code)]
            return unsafe { avx512(block, channels, start, len, out) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: as above, for AVX2 and FMA.
            #[allow(unsafe_code)]
            return unsafe { avx2(block, channels, start, len, out) };
        }
    }
    finish_body(block, channels, start, len, out)
}

#[inline(always)]
fn finish_body(block: &Block, channels: &Range<usize>, start: usize, len: usize, out: ImageOut) {
    let (low, high) = (block.epilogue.low, block.epilogue.high);
    let ohw = out.positions;
    assert!(start + len <= ohw, "block outside the image");
    assert!(channels.end <= out.channels, "block outside the channels");
    for r in channels.clone() {
        // SAFETY: positions start..start + len of channel r are inside the image (checked
        // above) and this block's alone; the product wrote them all (k > 0), or they are
        // filled here first.
        #[allow(unsafe_code)]
        let row = unsafe { out.slice(r, start, len) };
        if block.k == 0 {
            row.fill(0.0);
        }
        let bias = block.bias[if block.bias.len() == 1 { 0 } else { r }];
        match block.residual {
            Some(residual) => {
                let residual = &residual[r * ohw + start..][..len];
                for (d, s) in row.iter_mut().zip(residual) {
                    *d = clamp(*d + bias + *s, low, high);
                }
            }
            None if block.epilogue.clamps() => {
                for d in row.iter_mut() {
                    *d = clamp(*d + bias, low, high);
                }
            }
            None => row.iter_mut().for_each(|d| *d += bias),
        }
    }
}

/// How one image's convolution is cut into blocks of (output rows, output channels): rows whose
/// im2col block stays in cache, as even as can be. On several threads, when the output has
/// fewer positions than channels (deep layers: the kernel is the bigger operand), each thread
/// takes a range of channels, so that it reads only its part of the kernel and no thread is
/// left with one more row than another (a 7×7 image in two: 4 rows against 3); otherwise a
/// multiple of the thread count of row blocks, so that no thread waits for another's last.
/// Blocks are listed thread share by thread share ([`for_each_share`]).
fn blocks(
    geo: &crate::spatial::Geometry,
    o: usize,
    k: usize,
    threads: usize,
) -> Vec<(Range<usize>, Range<usize>)> {
    let most_rows = rows_per_block(k, geo.ow).min(geo.oh);
    let count = geo.oh.div_ceil(most_rows);
    let by_channels = threads > 1 && o >= geo.oh * geo.ow && o >= 2 * CHANNEL_ALIGN;
    let count = if by_channels {
        count
    } else {
        count.next_multiple_of(threads).min(geo.oh)
    };
    let rows = even_ranges(geo.oh, count);
    if !by_channels {
        return rows.map(|r| (r, 0..o)).collect();
    }
    let shares = threads.min(o / CHANNEL_ALIGN);
    let bounds: Vec<usize> = (0..=shares)
        .map(|t| match t {
            t if t == shares => o,
            t => (t * o / shares + CHANNEL_ALIGN / 2) / CHANNEL_ALIGN * CHANNEL_ALIGN,
        })
        .collect();
    let rows: Vec<_> = rows.collect();
    bounds
        .windows(2)
        .flat_map(|c| rows.iter().map(move |r| (r.clone(), c[0]..c[1])))
        .collect()
}

/// How a pooled convolution's image is cut into blocks of pooled rows (`pool` is the pool's
/// geometry, `o` and `ow` the convolution's channels and output width): as many rows as read
/// convolution rows that fill at most half a column block, every channel (so that they stay in
/// cache until pooled), as even as can be, a multiple of the thread count of them.
fn pooled_blocks(
    pool: &crate::spatial::Geometry,
    o: usize,
    ow: usize,
    threads: usize,
) -> Vec<Range<usize>> {
    let conv_rows = column_block() / 2 / (o * ow).max(1);
    let span = (pool.kh - 1) * pool.dh + 1;
    let most = (conv_rows.saturating_sub(span) / pool.sh.max(1) + 1).clamp(1, pool.oh.max(1));
    let count = pool
        .oh
        .div_ceil(most)
        .next_multiple_of(threads.max(1))
        .min(pool.oh);
    even_ranges(pool.oh, count).collect()
}

/// Output rows of `ow` columns whose im2col block (`k` values per position) fits a column
/// block; at least one.
fn rows_per_block(k: usize, ow: usize) -> usize {
    (column_block() / (k * ow).max(1)).max(1)
}

/// `0..n` cut into `count` ranges as even as can be.
fn even_ranges(n: usize, count: usize) -> impl Iterator<Item = Range<usize>> {
    (0..count).map(move |b| b * n / count..(b + 1) * n / count)
}

/// Channel ranges of a block start at multiples of this (whole register tiles of the
/// product).
const CHANNEL_ALIGN: usize = 16;

impl Conv2d {
    /// The output shape for an input of `shape` (whose pool-spec output shape is `spec_shape`).
    fn output_shape<D: Clone + From<usize>>(&self, spec_shape: &[D]) -> TVec<D> {
        let mut shape: TVec<D> = spec_shape.into();
        if self.output_rank > shape.len() {
            shape.insert(0, D::from(1));
        } else if self.output_rank < shape.len() {
            shape.remove(0);
        }
        shape
    }
}

impl Op for Conv2d {
    fn name(&self) -> StaticName {
        "EdgecdConv2d".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = self.pool_spec.info();
        info.push(format!("{:?}", self.epilogue));
        if self.method != Method::Gemm {
            info.push(format!("{:?}", self.method));
        }
        if let Some(pool) = &self.pool {
            info.push(format!("then max pool {:?}", pool.info()));
        }
        Ok(info)
    }

    op_as_typed_op!();
}

impl EvalOp for Conv2d {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let parts = self.parts.max(1);
        let want = parts + 2 + usize::from(self.epilogue.residual);
        ensure!(
            inputs.len() == want,
            "expected {want} inputs, got {}",
            inputs.len()
        );
        let residual = if self.epilogue.residual {
            inputs.pop()
        } else {
            None
        };
        let (bias, kernel) = (inputs.pop().unwrap(), inputs.pop().unwrap());
        // The image's parts (channel ranges, one after the other).
        let xs = inputs;
        let mut shape: TVec<usize> = xs[0].shape().into();
        ensure!(shape.len() >= 3, "input shape {shape:?}");
        let channel_axis = shape.len() - 3;
        let mut part_channels: TVec<usize> = tvec![];
        for x in &xs {
            let mut same = x.shape().to_vec();
            part_channels.push(same[channel_axis]);
            same[channel_axis] = shape[channel_axis];
            ensure!(
                same == *shape,
                "input parts of shapes {:?} and {shape:?}",
                x.shape()
            );
        }
        shape[channel_axis] = part_channels.iter().sum();
        let (c, plane, mut out_shape) = plane(&self.pool_spec, &shape)?;
        let geo = *plane.geometry();
        let rank = out_shape.len();
        let o = self.pool_spec.output_channels;
        out_shape[rank - 3] = o;
        let out_shape = self.output_shape(&out_shape);
        let (taps, ohw, hw) = (geo.kh * geo.kw, geo.oh * geo.ow, geo.h * geo.w);
        let k = c * taps;
        let kernel_len = match self.method {
            Method::Gemm => o * k,
            Method::Direct => crate::direct::packed_len(o, k),
            Method::Winograd => crate::winograd::packed_len(o, c),
        };
        ensure!(
            kernel.len() == kernel_len,
            "kernel shape {:?}",
            kernel.shape()
        );
        ensure!(
            bias.len() == o || bias.len() == 1,
            "bias shape {:?}",
            bias.shape()
        );
        let views = xs
            .iter()
            .map(|x| x.to_plain_array_view::<f32>())
            .collect::<TractResult<TVec<_>>>()?;
        let xs = views
            .iter()
            .map(|x| x.as_slice().context("input is not contiguous"))
            .collect::<TractResult<TVec<_>>>()?;
        let kernel = kernel.to_plain_array_view::<f32>()?;
        let kernel = kernel.as_slice().context("kernel is not contiguous")?;
        let bias = bias.to_plain_array_view::<f32>()?;
        let bias = bias.as_slice().context("bias is not contiguous")?;
        if let Some(r) = &residual {
            ensure!(
                r.shape() == &*out_shape,
                "residual shape {:?}, output {out_shape:?}",
                r.shape()
            );
        }
        let residual = residual
            .as_ref()
            .map(|r| r.to_plain_array_view::<f32>())
            .transpose()?;
        let residual = residual
            .as_ref()
            .map(|r| r.as_slice().context("residual is not contiguous"))
            .transpose()?;
        let pooled = match &self.pool {
            Some(spec) => {
                ensure!(residual.is_none(), "a pooled convolution has no residual");
                let (pc, pool_plane, pool_shape) = crate::ops::plane(spec, &out_shape)?;
                ensure!(pc == o, "the pool reads {pc} channels of {o}");
                Some((pool_plane, pool_shape))
            }
            None => None,
        };
        if ohw == 0 || o == 0 {
            // Folded only where the shapes are known and not empty (`fuse_conv_pools`).
            ensure!(pooled.is_none(), "a pooled convolution of an empty output");
            return Ok(tvec!(Tensor::zero::<f32>(&out_shape)?.into_tvalue()));
        }
        let threads_pool = pool_for(o * k * ohw, PARALLEL_MIN_MACS);
        let threads_pool = threads_pool.as_deref();
        let threads = threads_pool.map_or(1, |p| p.current_num_threads());
        // A 1×1 kernel with stride 1 and no padding reads the image as it is.
        let whole = taps == 1 && geo.sh == 1 && geo.sw == 1 && geo.oh == geo.h && geo.ow == geo.w;
        ensure!(
            parts == 1 || (whole && self.method == Method::Gemm),
            "an image in parts takes a 1x1, stride-1, unpadded kernel"
        );
        let result_shape = pooled.as_ref().map_or(&out_shape, |(_, s)| s);
        let blocks = blocks(&geo, o, k, threads);
        let pooled_blocks = pooled
            .as_ref()
            .map(|(p, _)| pooled_blocks(p.geometry(), o, geo.ow, threads));
        // SAFETY: every value is written before it is read: the blocks below cover every
        // position of every channel of every image, and each writes all of its own.
        #[allow(unsafe_code)]
        let mut result = unsafe { Tensor::uninitialized::<f32>(result_shape)? };
        let mut plain = result.try_as_plain_ram_mut()?;
        let out = plain.as_slice_mut::<f32>()?;
        let image_len = match &pooled {
            Some((p, _)) => o * p.geometry().oh * p.geometry().ow,
            None => o * ohw,
        };
        if image_len == 0 {
            return Ok(tvec!(result.into_tvalue()));
        }
        for (n, out) in out.chunks_exact_mut(image_len).enumerate() {
            // This image's part of each input (its channels), one after the other.
            let images: TVec<(&[f32], usize)> = xs
                .iter()
                .zip(&part_channels)
                .map(|(x, &cp)| (&x[n * cp * hw..(n + 1) * cp * hw], cp))
                .collect();
            let source = if parts > 1 {
                Source::Parts(images)
            } else if whole && self.method == Method::Gemm {
                Source::Image(images[0].0)
            } else {
                Source::Bands(images[0].0)
            };
            let residual = residual.map(|r| &r[n * o * ohw..(n + 1) * o * ohw]);
            let block = Block {
                plane: &plane,
                kernel,
                bias,
                taps,
                k,
                source,
                residual,
                epilogue: self.epilogue,
                method: self.method,
            };
            let image_out = ImageOut {
                ptr: out.as_mut_ptr(),
                channels: o,
                positions: image_len / o,
                first_row: 0,
            };
            match (&pooled, &pooled_blocks) {
                (Some((pool_plane, _)), Some(pooled_blocks)) => {
                    for_each_share(threads_pool, pooled_blocks.len(), |b| {
                        block.run_pooled(pool_plane, &pooled_blocks[b], image_out)
                    })
                }
                _ => for_each_share(threads_pool, blocks.len(), |b| {
                    block.run(&blocks[b], image_out)
                }),
            }
        }
        Ok(tvec!(result.into_tvalue()))
    }
}

impl TypedOp for Conv2d {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        // The image, of all its parts' channels.
        let parts = &inputs[..self.parts.max(1)];
        let mut dims: TVec<TDim> = parts[0].shape.iter().cloned().collect();
        ensure!(dims.len() >= 3, "input shape {dims:?}");
        let axis = dims.len() - 3;
        dims[axis] = parts.iter().map(|f| f.shape[axis].clone()).sum();
        let facts = self.pool_spec.output_facts(&[&f32::fact(dims)])?;
        let shape: TVec<TDim> = facts[0].shape.iter().cloned().collect();
        let conv = f32::fact(self.output_shape(&shape));
        match &self.pool {
            Some(pool) => pool.output_facts(&[&conv]),
            None => Ok(tvec!(conv)),
        }
    }

    as_op!();
}

/// Replaces tract's f32 group-1 convolutions, and the products tract made of 1×1 convolutions
/// (`EinSum` `NIHW,OI->NOHW` and its batch-less forms, with a constant weight), by [`Conv2d`],
/// then folds what follows them in ([`fuse_conv_epilogues`]). Returns how many it replaced.
pub fn use_edgecd_conv(model: &mut TypedModel) -> TractResult<usize> {
    if crate::ops::tract_ops_only() {
        return Ok(0);
    }
    let replaced = crate::fuse::patch_each(model, conv_patch)?;
    fuse_conv_epilogues(model)?;
    merge_split_products(model)?;
    fuse_conv_pools(model)?;
    pack_kernels(model)?;
    Ok(replaced)
}

/// Whether a convolution runs faster by [`crate::direct`] than by im2col and `gemm`, on an
/// input of `shape`: a window bigger than 1×1 (a 1×1 one needs no im2col) whose output
/// positions [`crate::direct`] computes with little waste ([`crate::direct::overhead`]): at
/// most 20% more than there are, or 35% on a small output (under 100 positions), where
/// `gemm`'s packing of the whole kernel for few positions costs as much.
///
/// Measured, one layer, one thread, p50 ms, im2col and `gemm` → direct (overhead):
///
/// | layer | gemm | direct |
/// |---|---|---|
/// | 3→64, 3×3 s2, 224² (squeezenet's stem; 1.00) | 0.71 | 0.57 |
/// | 3→64, 7×7 s2, 224² (resnet50's stem; 1.00) | 2.71 | 2.26 |
/// | 16→64, 3×3, 55² (1.04) | 0.64 | 0.56 |
/// | 64→64, 3×3, 56² (1.04) | 3.23 | 2.19 |
/// | 96→24, 3×3, 120² (1.02) | 7.85 | 7.04 |
/// | 128→128, 3×3, 28² (1.08) | 2.43 | 2.22 |
/// | 96→24, 3×3, 15² (1.14) | 0.158 | 0.115 |
/// | 256→256, 3×3, 14² (1.14) | 2.54 | 2.35 |
/// | 480→60, 1×3, 1×40 (1.20) | 0.101 | 0.093 |
/// | 64→256, 3×3, 13² (1.23) | 0.50 | 0.55 |
/// | 512→512, 3×3, 7² (1.31) | 2.82 | 2.68 |
/// | 512→512, 3×3 s2, 14² (2.29) | 2.97 | 4.79 |
fn direct_pays(pool_spec: &PoolSpec, shape: &[usize]) -> bool {
    let Ok((_, plane, _)) = plane(pool_spec, shape) else {
        return false;
    };
    let g = plane.geometry();
    let flat = g.sh == 1 && g.sw == 1;
    let overhead = crate::direct::overhead(g.oh, g.ow, plane.row_step(), flat);
    let most = if g.oh * g.ow < 100 { 1.35 } else { 1.2 };
    g.kh * g.kw > 1 && overhead <= most
}

/// Whether `conv` is a 1×1, stride-1, unpadded product by `gemm` with nothing after it but
/// its epilogue: one that can read its image in parts.
fn reads_in_parts(conv: &Conv2d) -> bool {
    let spec = &conv.pool_spec;
    let unpadded = match &spec.padding {
        PaddingSpec::Valid => true,
        PaddingSpec::Explicit(before, after) => before.iter().chain(after).all(|p| *p == 0),
        _ => false,
    };
    conv.method == Method::Gemm
        && conv.pool.is_none()
        && *spec.kernel_shape == [1, 1]
        && spec.strides().iter().all(|s| *s == 1)
        && unpadded
}

/// Puts back together the 1×1 products that tract split over a channel concatenation (its
/// declutter makes `x · [Ka | Kb]` of `concat(a, b)` into `a · Ka + b · Kb`, which
/// [`fuse_conv_epilogues`] leaves as one [`Conv2d`] whose residual is the other): one
/// [`Conv2d`] that reads its image in parts ([`Conv2d::parts`]), one product added to the
/// other in place, by a kernel `[Ka | Kb]` and the sum of the biases. Squeezenet's squeeze
/// layers and its last convolution read such concatenations. One operator instead of two:
/// one pass of the threads, one output instead of two, and no residual read back. Returns
/// how many it merged.
pub fn merge_split_products(model: &mut TypedModel) -> TractResult<usize> {
    crate::fuse::patch_each(model, |model, id| {
        let node = model.node(id);
        let Some(b) = node.op_as::<Conv2d>() else {
            return Ok(None);
        };
        let Some(&first) = node.inputs.last().filter(|_| b.epilogue.residual) else {
            return Ok(None);
        };
        let a_node = model.node(first.node);
        let Some(a) = a_node.op_as::<Conv2d>() else {
            return Ok(None);
        };
        let alone = crate::fuse::only_successor(model, a_node).is_some_and(|n| n.id == id);
        let (sa, sb) = (&a.pool_spec, &b.pool_spec);
        let alike = a.output_rank == b.output_rank
            && sa.data_format == sb.data_format
            && sa.output_channels == sb.output_channels
            && model.outlet_fact(first)?.shape == model.outlet_fact(OutletId::new(id, 0))?.shape;
        if !(alone && alike && reads_in_parts(a) && reads_in_parts(b))
            || a.epilogue != Epilogue::default()
        {
            return Ok(None);
        }
        let o = sb.output_channels;
        let kernel_of = |node: &TypedNode, conv: &Conv2d| -> TractResult<Option<Vec<f32>>> {
            let kernel = model.outlet_fact(node.inputs[conv.parts])?.konst.as_ref();
            kernel.map(|k| f32_values(k)).transpose()
        };
        let bias_of =
            |node: &TypedNode, conv: &Conv2d| channel_bias(model, node.inputs[conv.parts + 1], o);
        let (Some(ka), Some(kb), Some(ba), Some(bb)) = (
            kernel_of(a_node, a)?,
            kernel_of(node, b)?,
            bias_of(a_node, a)?,
            bias_of(node, b)?,
        ) else {
            return Ok(None);
        };
        let (ca, cb) = (sa.input_channels, sb.input_channels);
        if ka.len() != o * ca || kb.len() != o * cb {
            return Ok(None);
        }
        let kernel: Vec<f32> = (0..o)
            .flat_map(|ch| ka[ch * ca..][..ca].iter().chain(&kb[ch * cb..][..cb]))
            .copied()
            .collect();
        let bias: Vec<f32> = ba.iter().zip(&bb).map(|(a, b)| a + b).collect();
        let op = Conv2d {
            pool_spec: PoolSpec {
                input_channels: ca + cb,
                ..sb.clone()
            },
            epilogue: Epilogue {
                residual: false,
                ..b.epilogue
            },
            parts: a.parts + b.parts,
            ..b.clone()
        };
        let images: TVec<OutletId> = (a_node.inputs[..a.parts].iter())
            .chain(&node.inputs[..b.parts])
            .copied()
            .collect();
        let kernel = Tensor::from_shape(&[o, ca + cb, 1, 1], &kernel)?.into_arc_tensor();
        let bias = tensor1(&bias).into_arc_tensor();
        let name = &node.name;
        crate::fuse::replace_node_reading(model, node, &images, op, |patch, taps| {
            taps.push(patch.add_const(format!("{name}.merged-kernel"), kernel)?);
            taps.push(patch.add_const(format!("{name}.merged-bias"), bias)?);
            Ok(())
        })
        .map(Some)
    })
}

/// Folds each [`MaxPool2d`] that alone reads a [`Conv2d`]'s output (with no residual input, of
/// known, non-empty shape) into that convolution ([`Conv2d::pool`]): a block of pooled rows
/// then computes the convolution rows it reads into a band that stays in its thread's cache,
/// and pools them from there. A 224² stem's 3 MB output is never written whole, nor read back,
/// and the pool is shared out with the convolution (on its own, it did not run faster on two
/// threads than on one). Squeezenet's stem and its expand layers before a pool
/// (`crate::ops` pools each part of a concatenation), and resnet50's stem. Returns how many it
/// folded.
pub fn fuse_conv_pools(model: &mut TypedModel) -> TractResult<usize> {
    crate::fuse::patch_each(model, |model, id| {
        let node = model.node(id);
        let (Some(pool), Some(&input)) = (node.op_as::<MaxPool2d>(), node.inputs.first()) else {
            return Ok(None);
        };
        let conv_node = model.node(input.node);
        let Some(conv) = conv_node.op_as::<Conv2d>() else {
            return Ok(None);
        };
        let alone = crate::fuse::only_successor(model, conv_node).is_some_and(|n| n.id == id);
        let shape = model
            .outlet_fact(input)?
            .shape
            .as_concrete()
            .map(<[usize]>::to_vec);
        let known = shape.is_some_and(|s| s.iter().all(|d| *d > 0));
        if !alone || !known || conv.pool.is_some() || conv.epilogue.residual {
            return Ok(None);
        }
        let op = Conv2d {
            pool: Some(pool.pool_spec.clone()),
            ..conv.clone()
        };
        let inputs = &conv_node.inputs;
        crate::fuse::replace_node_reading(model, node, inputs, op, |_, _| Ok(())).map(Some)
    })
}

/// Gives each [`Conv2d`] with a constant kernel and an input of known shape the fastest
/// [`Method`] for its shape, and its kernel packed for it (once, here, rather than at every
/// inference): [`crate::winograd`] where it [`applies`](crate::winograd::applies),
/// [`crate::direct`] where [`direct_pays`]. Runs after the epilogues are folded, which rewrite
/// the kernel. Returns how many it packed.
pub fn pack_kernels(model: &mut TypedModel) -> TractResult<usize> {
    crate::fuse::patch_each(model, |model, id| {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv2d>() else {
            return Ok(None);
        };
        let Some(kernel) = model.outlet_fact(node.inputs[1])?.konst.as_ref() else {
            return Ok(None);
        };
        let &[o, c, kh, kw] = kernel.shape() else {
            return Ok(None);
        };
        let Some(shape) = model.outlet_fact(node.inputs[0])?.shape.as_concrete() else {
            return Ok(None);
        };
        if conv.method != Method::Gemm || conv.parts != 1 || o != conv.pool_spec.output_channels {
            return Ok(None);
        }
        let spec = &conv.pool_spec;
        let pair = |v: &[usize]| -> [usize; 2] { v.try_into().unwrap_or([0, 0]) };
        let winograd = crate::winograd::applies(
            pair(&spec.kernel_shape),
            pair(&spec.strides()),
            pair(&spec.dilations()),
            c,
        );
        let (method, packed) = if winograd {
            (
                Method::Winograd,
                crate::winograd::pack(&f32_values(kernel)?, o, c),
            )
        } else if direct_pays(spec, shape) {
            (
                Method::Direct,
                crate::direct::pack(&f32_values(kernel)?, o, c * kh * kw),
            )
        } else {
            return Ok(None);
        };
        let op = Conv2d {
            method,
            ..conv.clone()
        };
        let name = format!("{}.packed", node.name);
        crate::fuse::replace_node(model, node, op, |patch, taps| {
            taps[1] = patch.add_const(name, tensor1(&packed).into_arc_tensor())?;
            Ok(())
        })
        .map(Some)
    })
}

fn conv_patch(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let Some(&input) = node.inputs.first() else {
        return Ok(None);
    };
    let fact = model.outlet_fact(input)?;
    let (op, kernel, bias) = if let Some(conv) = node.op_as::<Conv>() {
        if !(conv.group == 1 && plain_conv(model, node, conv)?) {
            return Ok(None);
        }
        let op = Conv2d {
            pool_spec: conv.pool_spec.clone(),
            epilogue: Epilogue::default(),
            output_rank: fact.rank(),
            method: Method::Gemm,
            pool: None,
            parts: 1,
        };
        (op, None, None)
    } else if let Some(einsum) = node.op_as::<EinSum>() {
        let Some((op, kernel, x)) = pointwise(model, node, einsum)? else {
            return Ok(None);
        };
        let o = op.pool_spec.output_channels;
        (
            op,
            Some((kernel, x)),
            Some(Tensor::zero::<f32>(&[o])?.into_arc_tensor()),
        )
    } else {
        return Ok(None);
    };
    let mut patch = TypedModelPatch::default();
    let (kernel, x) = kernel.unzip();
    let mut taps = conv_inputs(&mut patch, model, node, &node.name, kernel, bias)?;
    if let Some(x) = x {
        taps[0] = patch.tap_model(model, x)?;
    }
    let out = patch.wire_node(&node.name, op, &taps)?;
    patch.shunt_outside(model, OutletId::new(id, 0), out[0])?;
    Ok(Some(patch))
}

/// The input, kernel and bias of a new convolution in `patch`: `node`'s own, or the `kernel`
/// and `bias` given, as constants named after `name`.
fn conv_inputs(
    patch: &mut TypedModelPatch,
    model: &TypedModel,
    node: &TypedNode,
    name: &str,
    kernel: Option<Arc<Tensor>>,
    bias: Option<Arc<Tensor>>,
) -> TractResult<TVec<OutletId>> {
    let mut taps = tvec![patch.tap_model(model, node.inputs[0])?];
    for (ix, (value, what)) in [(kernel, "kernel"), (bias, "bias")].into_iter().enumerate() {
        taps.push(match value {
            Some(v) => patch.add_const(format!("{name}.{what}"), v)?,
            None => patch.tap_model(model, node.inputs[ix + 1])?,
        });
    }
    Ok(taps)
}

/// A [`Conv2d`] and its (O, I, 1, 1) kernel for an `EinSum` that is a 1×1 convolution.
/// A stride-2 1×1 convolution reaches us as tract's `Downsample` of the rows, then of the
/// columns (single-threaded, 1.7 ms of resnet50's 52 on two threads), then a product:
/// [`pointwise`] takes the downsamples back into the convolution's strides.
fn pointwise(
    model: &TypedModel,
    node: &TypedNode,
    einsum: &EinSum,
) -> TractResult<Option<(Conv2d, Arc<Tensor>, OutletId)>> {
    if einsum.q_params.is_some()
        || einsum.operating_dt != f32::datum_type()
        || node.inputs.len() != 2
    {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let w = model.outlet_fact(node.inputs[1])?;
    let (Some(x_shape), Some(weights)) = (x.shape.as_concrete(), w.konst.as_ref()) else {
        return Ok(None);
    };
    if x.datum_type != f32::datum_type() || weights.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let (data_format, output_rank) = match einsum.axes.to_string().as_str() {
        "NIHW,OI->NOHW" => (DataFormat::NCHW, 4),
        "NIHW,OI->OHW" if x_shape[0] == 1 => (DataFormat::NCHW, 3),
        "IHW,OI->OHW" => (DataFormat::CHW, 3),
        "IHW,OI->NOHW" => (DataFormat::CHW, 4),
        _ => return Ok(None),
    };
    let rank = x_shape.len();
    let (o, i) = match weights.shape() {
        &[o, i] if rank >= 3 && x_shape[rank - 3] == i => (o, i),
        _ => return Ok(None),
    };
    // Downsamples of the rows or columns (and nothing else) that only this product reads.
    let (mut input, mut strides) = (node.inputs[0], [1, 1]);
    while let Some(down) = model.node(input.node).op_as::<Downsample>() {
        let axis = down.axis.checked_sub(rank - 2).filter(|a| *a < 2);
        let (Some(axis), Ok(stride)) = (axis, usize::try_from(down.stride)) else {
            break;
        };
        if down.modulo != 0 || stride == 0 || model.outlet_successors(input).len() != 1 {
            break;
        }
        strides[axis] *= stride;
        input = model.node(input.node).inputs[0];
    }
    let pool_spec = PoolSpec {
        data_format,
        kernel_shape: tvec![1, 1],
        padding: PaddingSpec::Valid,
        dilations: None,
        strides: (strides != [1, 1]).then(|| tvec![strides[0], strides[1]]),
        input_channels: i,
        output_channels: o,
    };
    if !supported(&pool_spec, model.outlet_fact(input)?) {
        return Ok(None);
    }
    let kernel = weights.clone().into_tensor().into_shape(&[o, i, 1, 1])?;
    let op = Conv2d {
        pool_spec,
        epilogue: Epilogue::default(),
        output_rank,
        method: Method::Gemm,
        pool: None,
        parts: 1,
    };
    Ok(Some((op, kernel.into_arc_tensor(), input)))
}

/// Folds the elementwise operations that follow each [`Conv2d`] into it, for as long as they
/// can be: per-channel constant `*` and `+` (into the kernel and the bias; a `*` only before a
/// residual sum), one same-shape `+` (the residual input), then constant `max` and `min` (the
/// clamp). A [`DepthwiseConv2d`] takes the per-channel `*` and `+` (a batch norm). Returns how
/// many operations it folded.
pub fn fuse_conv_epilogues(model: &mut TypedModel) -> TractResult<usize> {
    let mut folded = 0;
    loop {
        let mut changed = false;
        for id in model.eval_order()? {
            if let Some(patch) = epilogue_patch(model, id)? {
                patch.apply(model)?;
                folded += 1;
                changed = true;
                break;
            }
        }
        if !changed {
            break;
        }
    }
    if folded > 0 {
        model.compact()?;
    }
    Ok(folded)
}

/// The values of a constant that broadcasts along the channel axis of a `rank`-D output with
/// `o` channels (3rd from the end): one per channel.
fn channel_values(k: &Tensor, rank: usize, o: usize) -> Option<Vec<f32>> {
    if k.datum_type() != f32::datum_type() || k.rank() > rank {
        return None;
    }
    let values = f32_values(k).ok()?;
    if values.len() == 1 {
        return Some(vec![values[0]; o]);
    }
    let channel_only = k
        .shape()
        .iter()
        .rev()
        .enumerate()
        .all(|(axis, d)| if axis == 2 { *d == o } else { *d == 1 });
    channel_only.then_some(values)
}

/// A f32 tensor's values, in order.
fn f32_values(k: &Tensor) -> TractResult<Vec<f32>> {
    Ok(k.to_plain_array_view::<f32>()?.iter().copied().collect())
}

/// The bias of a convolution of `o` output channels, one value per channel, when the input
/// `bias` is a constant of one value per channel or one for all.
fn channel_bias(model: &TypedModel, bias: OutletId, o: usize) -> TractResult<Option<Vec<f32>>> {
    let Some(b) = model.outlet_fact(bias)?.konst.as_ref() else {
        return Ok(None);
    };
    let b = f32_values(b)?;
    if b.len() != 1 && b.len() != o {
        return Ok(None);
    }
    Ok(Some(
        (0..o)
            .map(|ch| b[if b.len() == 1 { 0 } else { ch }])
            .collect(),
    ))
}

fn epilogue_patch(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    // A depthwise convolution takes the per-channel products and sums only.
    let (o, conv) = if let Some(conv) = node.op_as::<Conv2d>() {
        if conv.pool.is_some() || conv.parts != 1 {
            return Ok(None);
        }
        (conv.pool_spec.output_channels, Some(conv))
    } else if let Some(depthwise) = node.op_as::<DepthwiseConv2d>() {
        (depthwise.pool_spec.output_channels, None)
    } else {
        return Ok(None);
    };
    let conv_out = OutletId::new(id, 0);
    let Some(next) = crate::fuse::only_successor(model, node) else {
        return Ok(None);
    };
    let Some(bin) = next.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    if next.inputs.len() != 2 {
        return Ok(None);
    }
    let out_fact = model.outlet_fact(conv_out)?;
    if model.outlet_fact(OutletId::new(next.id, 0))?.shape != out_fact.shape {
        return Ok(None);
    }
    let other = if next.inputs[0] == conv_out {
        next.inputs[1]
    } else {
        next.inputs[0]
    };
    if other == conv_out {
        return Ok(None);
    }
    let other_fact = model.outlet_fact(other)?;
    let rank = out_fact.rank();
    let mut epilogue = conv.map(|c| c.epilogue).unwrap_or_default();
    let mut kernel = None;
    let mut bias = None;
    let konst = other_fact.konst.as_ref();
    let mini = &bin.0;
    let clamped = epilogue.clamps();
    if (mini.is::<Max>() || mini.is::<Min>()) && conv.is_some() {
        let Some(v) = konst.and_then(|k| crate::fuse::uniform_f32(k)) else {
            return Ok(None);
        };
        if mini.is::<Max>() {
            epilogue.low = epilogue.low.max(v);
        } else {
            epilogue.high = epilogue.high.min(v);
        }
        // Both orders of max and min agree only while the range is not empty.
        if epilogue.low > epilogue.high || v.is_nan() {
            return Ok(None);
        }
    } else if clamped {
        return Ok(None);
    } else if mini.is::<Add>() {
        match konst.and_then(|k| channel_values(k, rank, o)) {
            Some(add) => {
                let Some(b) = channel_bias(model, node.inputs[2], o)? else {
                    return Ok(None);
                };
                let b: Vec<f32> = b.iter().zip(&add).map(|(b, a)| b + a).collect();
                bias = Some(tensor1(&b).into_arc_tensor());
            }
            None if !epilogue.residual
                && conv.is_some()
                && konst.is_none()
                && other_fact.datum_type == f32::datum_type()
                && other_fact.shape == out_fact.shape =>
            {
                epilogue.residual = true;
            }
            None => return Ok(None),
        }
    } else if mini.is::<Mul>() && !epilogue.residual {
        let Some(scale) = konst.and_then(|k| channel_values(k, rank, o)) else {
            return Ok(None);
        };
        let k = model.outlet_fact(node.inputs[1])?.konst.clone();
        let (Some(k), Some(b)) = (k, channel_bias(model, node.inputs[2], o)?) else {
            return Ok(None);
        };
        let per = k.len() / o.max(1);
        let k_values = f32_values(&k)?;
        let scaled: Vec<f32> = k_values
            .iter()
            .enumerate()
            .map(|(ix, v)| v * scale[ix / per])
            .collect();
        kernel = Some(Tensor::from_shape(k.shape(), &scaled)?.into_arc_tensor());
        let b: Vec<f32> = b.iter().zip(&scale).map(|(b, s)| b * s).collect();
        bias = Some(tensor1(&b).into_arc_tensor());
    } else {
        return Ok(None);
    }
    let mut patch = TypedModelPatch::default();
    let mut taps = conv_inputs(&mut patch, model, node, &next.name, kernel, bias)?;
    let op: Box<dyn TypedOp> = match conv {
        Some(conv) => {
            if conv.epilogue.residual {
                taps.push(patch.tap_model(model, node.inputs[3])?);
            } else if epilogue.residual {
                taps.push(patch.tap_model(model, other)?);
            }
            Box::new(Conv2d {
                epilogue,
                ..conv.clone()
            })
        }
        None => node.op.clone(),
    };
    let out = patch.wire_node(&node.name, op, &taps)?;
    patch.shunt_outside(model, OutletId::new(next.id, 0), out[0])?;
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::tests::{agree, close, ops, random, square_spec};
    use tract_linalg::multithread::multithread_tract_scope;
    use tract_onnx::tract_core::ops::array::TypedConcat;
    use tract_onnx::tract_core::ops::cnn::KernelFormat;

    fn conv(pool_spec: &PoolSpec) -> Conv {
        Conv {
            pool_spec: pool_spec.clone(),
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        }
    }

    #[test]
    fn clamp_is_max_then_min() {
        for (v, low, high) in [
            (3.0, 0.0, 6.0),
            (-1.0, 0.0, 6.0),
            (7.0, 0.0, 6.0),
            (f32::NAN, 0.0, 6.0),
            (f32::INFINITY, f32::NEG_INFINITY, 1.0),
            (-5.0, f32::NEG_INFINITY, f32::INFINITY),
        ] {
            let want = v.max(low).min(high);
            assert_eq!(
                clamp(v, low, high).to_bits(),
                want.to_bits(),
                "{v} {low} {high}"
            );
        }
    }

    /// [`Conv2d`] against tract's `Conv` on random kernels: batched and unbatched inputs,
    /// padding kinds, strides, dilations, the direct 1×1 path, images split into several
    /// im2col blocks, one and two threads.
    #[test]
    fn conv2d_matches_tract() {
        let paddings = [
            PaddingSpec::Explicit(tvec![1, 2], tvec![1, 0]),
            PaddingSpec::SameUpper,
            PaddingSpec::Valid,
        ];
        let mut cases = 0;
        for (data_format, shape, o) in [
            (DataFormat::NCHW, vec![2, 5, 13, 19], 7),
            (DataFormat::CHW, vec![6, 17, 40], 3),
            // 64 channels × 3 × 3 × 40 columns: several blocks of output rows.
            (DataFormat::NCHW, vec![1, 64, 21, 40], 9),
            // More output channels than positions: on 2 threads, split by channels.
            (DataFormat::NCHW, vec![1, 64, 8, 9], 100),
        ] {
            let c = shape[shape.len() - 3];
            for padding in &paddings {
                for (k, stride, dilation) in [(3, 1, 1), (3, 2, 1), (1, 1, 1), (1, 2, 1), (5, 1, 2)]
                {
                    if matches!(padding, PaddingSpec::SameUpper) && stride > 1 && dilation > 1 {
                        continue;
                    }
                    let pool_spec =
                        square_spec(data_format, padding, (k, stride, dilation), (c, o));
                    let inputs = || {
                        tvec![
                            random(&shape, cases).into_tvalue(),
                            random(&[o, c, k, k], cases + 1).into_tvalue(),
                            random(&[o], cases + 2).into_tvalue()
                        ]
                    };
                    let want = conv(&pool_spec)
                        .eval_out_of_plan(inputs())
                        .unwrap()
                        .unwrap();
                    let methods = [Method::Gemm, Method::Direct, Method::Winograd];
                    let winograd = k == 3 && stride == 1 && dilation == 1;
                    let methods = methods
                        .into_iter()
                        .filter(|m| *m != Method::Winograd || winograd);
                    for (method, threads) in methods.flat_map(|m| [(m, 1), (m, 2)]) {
                        let ours = Conv2d {
                            pool_spec: pool_spec.clone(),
                            epilogue: Epilogue::default(),
                            output_rank: shape.len(),
                            method,
                            pool: None,
                            parts: 1,
                        };
                        let inputs = || {
                            let mut inputs = inputs();
                            let kernel = f32_values(&inputs[1]).unwrap();
                            let packed = match method {
                                Method::Gemm => return inputs,
                                Method::Direct => crate::direct::pack(&kernel, o, c * k * k),
                                Method::Winograd => crate::winograd::pack(&kernel, o, c),
                            };
                            inputs[1] = tensor1(&packed).into_tvalue();
                            inputs
                        };
                        let facts: TVec<TypedFact> =
                            inputs().iter().map(|t| f32::fact(t.shape())).collect();
                        let fact_refs: TVec<&TypedFact> = facts.iter().collect();
                        let out_fact = ours.output_facts(&fact_refs).unwrap();
                        let what = format!(
                            "{data_format:?} {shape:?} {padding:?} k{k} s{stride} d{dilation} t{threads} {method:?}"
                        );
                        let got = multithread_tract_scope(crate::model::executor(threads), || {
                            ours.eval_out_of_plan(inputs()).unwrap().unwrap()
                        });
                        close(&got[0], &want[0], &what);
                        assert_eq!(
                            out_fact[0].shape.as_concrete(),
                            Some(got[0].shape()),
                            "{what}"
                        );
                    }
                    cases += 1;
                }
            }
        }
        assert!(cases >= 40, "only {cases} cases ran");
    }

    #[test]
    fn blocks_cover_every_row_and_channel_once() {
        for (h, w, o, c) in [
            (55, 55, 64, 16),
            (13, 13, 1000, 256),
            (7, 7, 512, 2048),
            (7, 7, 40, 8),
            (1, 30, 100, 3),
            (40, 1, 16, 64),
        ] {
            for threads in [1, 2, 3, 4] {
                let geo = crate::spatial::tests::geometry(h, w, 3, 1, 1, 1);
                let k = c * 9;
                let blocks = blocks(&geo, o, k, threads);
                let mut seen = vec![0; o * h];
                for (rows, channels) in &blocks {
                    assert!(!rows.is_empty() && !channels.is_empty(), "{blocks:?}");
                    assert!(rows.len() * w * k <= column_block().max(w * k), "{rows:?}");
                    for ch in channels.clone() {
                        for r in rows.clone() {
                            seen[ch * h + r] += 1;
                        }
                    }
                    if channels.len() < o {
                        assert_eq!(channels.start % CHANNEL_ALIGN, 0, "{blocks:?}");
                    }
                }
                assert!(
                    seen.iter().all(|&n| n == 1),
                    "{h}x{w} o{o} t{threads}: {blocks:?}"
                );
                let by_channels = blocks.iter().any(|(_, ch)| ch.len() < o);
                assert_eq!(
                    by_channels,
                    threads > 1 && o >= h * w && o >= 32,
                    "{h}x{w} o{o} t{threads}"
                );
                if !by_channels {
                    assert!(
                        blocks.len().is_multiple_of(threads) || blocks.len() == h,
                        "{blocks:?}"
                    );
                }
            }
        }
    }

    fn wire_bin(
        model: &mut TypedModel,
        name: &str,
        op: Box<dyn tract_onnx::tract_core::ops::binary::BinMiniOp>,
        a: OutletId,
        b: OutletId,
    ) -> OutletId {
        model
            .wire_node(name, TypedBinOp(op, None), &[a, b])
            .unwrap()[0]
    }

    /// A depthwise convolution and a batch norm, then a 3×3 and a 1×1 convolution (which tract
    /// declutters into a product), each followed by batch norm (per-channel `*` and `+`), a
    /// residual sum and ReLU6: after the rewrites only the three convolutions are left, and the
    /// outputs agree with tract's.
    #[test]
    fn epilogues_fold_into_the_convolutions() {
        let (c, o, h, w) = (8, 16, 12, 10);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, c, h, w])).unwrap();
        let residual = model.add_source("r", f32::fact([1, c, h, w])).unwrap();
        let residual0 = model.add_source("r0", f32::fact([1, o, h, w])).unwrap();
        // A depthwise convolution and a batch norm first.
        let dw_spec = square_spec(DataFormat::NCHW, &PaddingSpec::SameUpper, (3, 1, 1), (c, c));
        let dw_kernel = model.add_const("dk", random(&[c, 1, 3, 3], 50)).unwrap();
        let dw_bias = model.add_const("db", random(&[c], 51)).unwrap();
        let depthwise = Conv {
            group: c,
            ..conv(&dw_spec)
        };
        let mut wire = model
            .wire_node("depthwise", depthwise, &[x, dw_kernel, dw_bias])
            .unwrap()[0];
        let scale = model.add_const("ds", random(&[1, c, 1, 1], 52)).unwrap();
        let shift = model.add_const("dt", random(&[1, c, 1, 1], 53)).unwrap();
        wire = wire_bin(&mut model, "dmul", Box::new(Mul), wire, scale);
        wire = wire_bin(&mut model, "dadd", Box::new(Add), wire, shift);
        for (ix, (k, out)) in [(3, o), (1, c)].into_iter().enumerate() {
            let cin = if ix == 0 { c } else { o };
            let pool_spec = square_spec(
                DataFormat::NCHW,
                &PaddingSpec::SameUpper,
                (k, 1, 1),
                (cin, out),
            );
            let seed = 10 * ix as u64;
            let kernel = model
                .add_const(format!("k{ix}"), random(&[out, cin, k, k], seed))
                .unwrap();
            let bias = model
                .add_const(format!("b{ix}"), random(&[out], seed + 1))
                .unwrap();
            wire = model
                .wire_node(format!("conv{ix}"), conv(&pool_spec), &[wire, kernel, bias])
                .unwrap()[0];
            let scale = model
                .add_const(format!("s{ix}"), random(&[1, out, 1, 1], seed + 2))
                .unwrap();
            let shift = model
                .add_const(format!("t{ix}"), random(&[1, out, 1, 1], seed + 3))
                .unwrap();
            wire = wire_bin(&mut model, &format!("mul{ix}"), Box::new(Mul), wire, scale);
            wire = wire_bin(&mut model, &format!("add{ix}"), Box::new(Add), shift, wire);
            let residual = if ix == 0 { residual0 } else { residual };
            wire = wire_bin(
                &mut model,
                &format!("res{ix}"),
                Box::new(Add),
                wire,
                residual,
            );
            let zero = model
                .add_const(format!("zero{ix}"), tensor4(&[[[[0f32]]]]))
                .unwrap();
            let six = model
                .add_const(format!("six{ix}"), tensor4(&[[[[6f32]]]]))
                .unwrap();
            wire = wire_bin(&mut model, &format!("max{ix}"), Box::new(Max), wire, zero);
            wire = wire_bin(&mut model, &format!("min{ix}"), Box::new(Min), wire, six);
        }
        model.select_output_outlets(&[wire]).unwrap();
        let decluttered = model.into_decluttered().unwrap();
        let mut ours = decluttered.clone();
        assert_eq!(crate::ops::use_edgecd_window_ops(&mut ours).unwrap(), 1);
        assert_eq!(
            ops(&ours)[..3],
            ["EdgecdDepthwiseConv2d", "Mul", "Add"],
            "{ours}"
        );
        assert_eq!(use_edgecd_conv(&mut ours).unwrap(), 2);
        assert_eq!(
            ops(&ours),
            ["EdgecdDepthwiseConv2d", "EdgecdConv2d", "EdgecdConv2d"],
            "{ours}"
        );
        // The 3×3 convolution runs by `winograd`, the 1×1 by `gemm`; both with a residual and
        // a clamp.
        let convs: Vec<(Method, Epilogue)> = ours
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<Conv2d>().map(|c| (c.method, c.epilogue)))
            .collect();
        let clamped = |residual| Epilogue {
            residual,
            low: 0.0,
            high: 6.0,
        };
        assert_eq!(
            convs,
            [
                (Method::Winograd, clamped(true)),
                (Method::Gemm, clamped(true))
            ]
        );
        let inputs = tvec![
            random(&[1, c, h, w], 100).into_tvalue(),
            random(&[1, c, h, w], 101).into_tvalue(),
            random(&[1, o, h, w], 102).into_tvalue()
        ];
        agree(decluttered, &ours, inputs, "epilogues");
    }

    /// `decluttered` after edgecd's rewrites, which leave one [`Conv2d`], and that convolution.
    /// tract's convolution `spec` of `input` wired into `model` ("conv"), with a random kernel
    /// ("k", square, of `spec`'s channels and window) and bias ("b") from `seed` and `seed + 1`.
    fn wire_conv(model: &mut TypedModel, input: OutletId, spec: &PoolSpec, seed: u64) -> OutletId {
        let (c, o, k) = (
            spec.input_channels,
            spec.output_channels,
            spec.kernel_shape[0],
        );
        let kernel = model.add_const("k", random(&[o, c, k, k], seed)).unwrap();
        let bias = model.add_const("b", random(&[o], seed + 1)).unwrap();
        model
            .wire_node("conv", conv(spec), &[input, kernel, bias])
            .unwrap()[0]
    }

    /// `max(wire, 0)` wired into `model` ("relu").
    fn wire_relu(model: &mut TypedModel, wire: OutletId) -> OutletId {
        let zero = model.add_const("zero", tensor4(&[[[[0f32]]]])).unwrap();
        wire_bin(model, "relu", Box::new(Max), wire, zero)
    }

    fn one_conv(decluttered: &TypedModel, what: &str) -> (TypedModel, Conv2d) {
        let mut ours = decluttered.clone();
        crate::ops::use_edgecd_window_ops(&mut ours).unwrap();
        use_edgecd_conv(&mut ours).unwrap();
        assert_eq!(ops(&ours), ["EdgecdConv2d"], "{what}: {ours}");
        let conv = ours.nodes().iter().find_map(|n| n.op_as::<Conv2d>());
        let conv = conv.unwrap().clone();
        (ours, conv)
    }

    /// A 1×1 convolution of a concatenation of three images (which tract declutters into a
    /// sum of three products) becomes one [`Conv2d`] that reads the three in place, with the
    /// ReLU after it, and agrees with tract's; on a batch of two and on one image.
    #[test]
    fn split_products_merge_back() {
        for n in [2, 1] {
            let channels = [5, 7, 3];
            let (o, h, w) = (6, 9, 11);
            let mut model = TypedModel::default();
            let sources: TVec<OutletId> = channels
                .iter()
                .enumerate()
                .map(|(ix, c)| {
                    model
                        .add_source(format!("x{ix}"), f32::fact([n, *c, h, w]))
                        .unwrap()
                })
                .collect();
            let cat = model
                .wire_node("cat", TypedConcat { axis: 1 }, &sources)
                .unwrap()[0];
            let c = channels.iter().sum();
            let spec = square_spec(DataFormat::NCHW, &PaddingSpec::Valid, (1, 1, 1), (c, o));
            let wire = wire_conv(&mut model, cat, &spec, 70);
            let wire = wire_relu(&mut model, wire);
            model.select_output_outlets(&[wire]).unwrap();
            let decluttered = model.into_decluttered().unwrap();
            assert!(
                !ops(&decluttered).contains(&"Concat".to_string()),
                "{decluttered}"
            );
            let (ours, merged) = one_conv(&decluttered, "split products");
            assert_eq!((merged.parts, merged.epilogue.low), (3, 0.0));
            let inputs = channels
                .iter()
                .enumerate()
                .map(|(ix, c)| random(&[n, *c, h, w], 72 + ix as u64).into_tvalue())
                .collect();
            agree(
                decluttered,
                &ours,
                inputs,
                &format!("split products, batch {n}"),
            );
        }
    }

    /// A max pool that alone reads a convolution's output (after a ReLU) folds into it, and
    /// the outputs agree with tract's: a direct 3×3 and a strided 3×3 by im2col, each with a
    /// 3×3 stride-2 pool, and a 1×1 (which tract makes a product) with a padded 2×2 pool on a
    /// batch of two. The images are cut into several blocks of pooled rows.
    #[test]
    fn pools_fold_into_the_convolutions() {
        use tract_onnx::tract_core::ops::cnn::MaxPool;
        let cases = [
            // (input shape, output channels, conv k and stride, pool k, stride and padding)
            ([1, 8, 70, 60], 40, (3, 1), (3, 2, PaddingSpec::Valid)),
            ([1, 3, 260, 34], 64, (3, 2), (3, 2, PaddingSpec::SameUpper)),
            (
                [2, 8, 61, 29],
                64,
                (1, 1),
                (2, 2, PaddingSpec::Explicit(tvec![1, 0], tvec![0, 1])),
            ),
        ];
        let mut methods = vec![];
        for (ix, (shape, o, (k, stride), (pk, ps, pool_padding))) in cases.into_iter().enumerate() {
            let c = shape[1];
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact(shape)).unwrap();
            let spec = square_spec(
                DataFormat::NCHW,
                &PaddingSpec::SameUpper,
                (k, stride, 1),
                (c, o),
            );
            let wire = wire_conv(&mut model, x, &spec, 60);
            let mut wire = wire_relu(&mut model, wire);
            let pool = MaxPool {
                pool_spec: square_spec(DataFormat::NCHW, &pool_padding, (pk, ps, 1), (o, o)),
                with_index_outputs: None,
            };
            wire = model.wire_node("pool", pool, &[wire]).unwrap()[0];
            model.select_output_outlets(&[wire]).unwrap();
            let decluttered = model.into_decluttered().unwrap();
            let (ours, node) = one_conv(&decluttered, &format!("case {ix}"));
            assert!(node.pool.is_some() && node.epilogue.low == 0.0, "case {ix}");
            methods.push(node.method);
            let pooled = ours.output_fact(0).unwrap().shape.as_concrete().unwrap();
            let geo = plane(&node.pool_spec, &shape).unwrap().1;
            let pool_geo = plane(
                node.pool.as_ref().unwrap(),
                &[shape[0], o, geo.geometry().oh, geo.geometry().ow],
            )
            .unwrap()
            .1;
            let blocks = pooled_blocks(pool_geo.geometry(), o, geo.geometry().ow, 1);
            // (Unless a model loaded in this process sized the blocks to a bigger cache.)
            if column_block() == COLUMN_BLOCK {
                assert!(blocks.len() > 1, "case {ix}: {blocks:?} for {pooled:?}");
            }
            let inputs = tvec![random(&shape, 62 + ix as u64).into_tvalue()];
            agree(decluttered, &ours, inputs, &format!("pooled case {ix}"));
        }
        assert_eq!(methods, [Method::Winograd, Method::Gemm, Method::Gemm]);
    }

    #[test]
    fn pooled_blocks_cover_every_row_once() {
        for (h, w, o, k, s) in [
            (111, 111, 64, 3, 2),
            (55, 55, 128, 3, 2),
            (7, 9, 8, 2, 2),
            (3, 5, 300, 3, 1),
        ] {
            for threads in [1, 2, 3] {
                let conv = crate::spatial::tests::geometry(h, w, 1, 1, 1, 0);
                let pool = crate::spatial::tests::geometry(h, w, k, s, 1, 0);
                let blocks = pooled_blocks(&pool, o, conv.ow, threads);
                let mut seen = vec![0; pool.oh];
                for rows in &blocks {
                    assert!(!rows.is_empty(), "{blocks:?}");
                    let read = (rows.len() - 1) * s + k;
                    assert!(
                        rows.len() == 1 || read * o * w <= column_block() / 2,
                        "{rows:?}"
                    );
                    rows.clone().for_each(|r| seen[r] += 1);
                }
                assert!(
                    seen.iter().all(|&n| n == 1),
                    "{h}x{w} t{threads}: {blocks:?}"
                );
                assert!(blocks.len().is_multiple_of(threads) || blocks.len() == pool.oh);
            }
        }
    }

    /// tract declutters a stride-2 1×1 convolution into two `Downsample`s and a product; the
    /// rewrite takes them back into one strided [`Conv2d`].
    #[test]
    fn strided_pointwise_takes_its_downsamples_back() {
        let (c, o, h, w) = (64, 128, 39, 41);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, c, h, w])).unwrap();
        let pool_spec = square_spec(DataFormat::NCHW, &PaddingSpec::Valid, (1, 2, 1), (c, o));
        let wire = wire_conv(&mut model, x, &pool_spec, 7);
        model.select_output_outlets(&[wire]).unwrap();
        let decluttered = model.into_decluttered().unwrap();
        assert_eq!(
            ops(&decluttered)
                .iter()
                .filter(|n| *n == "Downsample")
                .count(),
            2,
            "{decluttered}"
        );
        let mut ours = decluttered.clone();
        assert_eq!(use_edgecd_conv(&mut ours).unwrap(), 1);
        assert_eq!(ops(&ours), ["EdgecdConv2d"], "{ours}");
        let input = tvec![random(&[1, c, h, w], 9).into_tvalue()];
        let want = agree(decluttered, &ours, input, "strided 1x1");
        assert_eq!(want[0].shape(), [1, o, 20, 21]);
    }
}
