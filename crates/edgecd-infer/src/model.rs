//! Loading one model file with tract (ONNX via `tract-onnx`, TFLite via `tract-tflite`) and
//! running it; loading the active model of an installed bundle directory (`Engine`).
//!
//! A model whose inputs all have concrete shapes gets one optimized plan. A model with symbolic
//! dimensions gets a plan optimized for symbolic shapes when tract can build one, otherwise a plan
//! per concrete input shape, built on first use and kept in a cache bounded by the bytes its
//! plans keep alive (`crate::plan_cache`, estimated by [`plan_bytes`]). Before optimization the
//! decluttered graph goes through edgecd's own rewrites (`crate::fuse`). A request builds a fresh
//! tract `SimpleState`: profiled at well under 1% of the PP-OCR classifier's 1.3 ms, so states are
//! not pooled.

use crate::backend::{Backend, BackendModel, TractBackend};
use crate::error::{InferError, chain};
use crate::plan_cache::{DEFAULT_BUDGET_BYTES, PlanCache, PlanCacheStats, PlanCounters};
use edgecd_api::layout::{MODELS_DIR, PROFILE_FILE};
use edgecd_api::model::ModelFormat;
use edgecd_api::profile::{Profile, TensorData};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

type Plan = Arc<TypedRunnableModel>;

/// Matrix-product panel count from which tract spreads work over threads
/// (`EDGECD_INFER_PANEL_THRESHOLD` overrides it). tract's default, 64, kept most convolutions of
/// squeezenet on one thread: 16 took its 2-thread p50 from 15.2 to 12.8 ms here.
const PANEL_THRESHOLD: usize = 16;

/// Tunes tract for this CPU, once per process, before it picks its kernels.
///
/// tract uses its AVX-512 matrix kernels whenever the CPU has AVX-512F. AMD's Zen cores run most
/// 512-bit operations as two 256-bit halves, and on the AMD EPYC (AVX-512) where edgecd-infer is
/// benchmarked, tract's 256-bit FMA kernels were faster on every model (1 thread, p50, best of
/// 3: PP-OCRv4 det 87.8 → 71.3 ms, rec 27.4 → 24.5 ms, squeezenet 14.9 → 13.4 ms, resnet50
/// 118.8 → 110.5 ms, the classifier unchanged). So on AMD CPUs edgecd-infer leaves AVX-512 out
/// of tract's kernel choice. Setting `TRACT_CPU_ISA` in the environment (e.g. to `+avx512f`)
/// overrides this; Intel CPUs and Arm boards are untouched.
///
/// It also sizes edgecd's im2col blocks to the core's L2 cache when Linux reports it
/// ([`crate::conv::set_column_block_for_l2`]).
fn tune_for_cpu() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let cache = "/sys/devices/system/cpu/cpu0/cache/index2";
        let level = std::fs::read_to_string(format!("{cache}/level")).unwrap_or_default();
        let size = std::fs::read_to_string(format!("{cache}/size")).unwrap_or_default();
        if let Some(bytes) = cache_size_bytes(&size).filter(|_| level.trim() == "2") {
            crate::conv::set_column_block_for_l2(bytes);
        }
        if !cfg!(target_arch = "x86_64") || std::env::var_os("TRACT_CPU_ISA").is_some() {
            return;
        }
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let amd = cpuinfo
            .lines()
            .any(|l| l.starts_with("vendor_id") && l.ends_with("AuthenticAMD"));
        let avx512 = cpuinfo
            .lines()
            .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "avx512f"));
        if amd && avx512 {
            match tract_onnx::tract_core::knobs::set_config_global("TRACT_CPU_ISA", "-avx512f") {
                Ok(()) => tracing::debug!("AMD CPU: tract's AVX-512 kernels left out"),
                Err(e) => tracing::warn!(error = %e, "cannot tune tract's kernel choice"),
            }
        }
    });
}

/// The file format of a model, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Onnx,
    Tflite,
}

impl Format {
    /// Guesses the format from the file name (`.onnx`, `.tflite`).
    pub fn from_path(p: &Path) -> Option<Format> {
        match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "onnx" => Some(Format::Onnx),
            "tflite" => Some(Format::Tflite),
            _ => None,
        }
    }
}

/// Time spent in one node of a plan (see [`Model::profile`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeTime {
    pub node: String,
    pub op: String,
    pub ms: f64,
}

/// One input of the model: its name, element type and shape (`None` = symbolic).
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub name: String,
    pub dtype: DatumType,
    pub shape: Vec<Option<usize>>,
    /// The name of each symbolic dimension as the model gives it (`None` for concrete ones and
    /// for unnamed unknowns).
    pub symbols: Vec<Option<String>>,
}

/// The graph plans are built from.
#[derive(Debug, Clone)]
enum Source {
    /// Typed and decluttered at load time.
    Typed(TypedModel),
    /// Only typeable once input shapes are concrete: typed per input shape.
    Inference(InferenceModel),
}

/// A loaded, runnable model.
pub struct Model {
    name: String,
    source: Source,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    generic: Option<Plan>,
    by_shape: Mutex<PlanCache<Vec<Vec<usize>>, Plan>>,
    counters: Arc<PlanCounters>,
    /// The constants of the loaded graph: a plan's constant that is one of these is shared
    /// with the model, not a cost of the plan.
    shared_consts: HashSet<usize>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

impl Model {
    /// Loads a model file. `name` is used in messages (the bundle's filepath). Its per-shape
    /// plan cache has the default budget ([`DEFAULT_BUDGET_BYTES`]).
    pub fn load(path: &Path, name: &str) -> Result<Model, InferError> {
        Model::load_with(path, name, DEFAULT_BUDGET_BYTES, Arc::default())
    }

    /// Loads a model file with a per-shape plan cache of `plan_cache_bytes`, counting the
    /// plans it builds and evicts in `counters`.
    pub fn load_with(
        path: &Path,
        name: &str,
        plan_cache_bytes: u64,
        counters: Arc<PlanCounters>,
    ) -> Result<Model, InferError> {
        tune_for_cpu();
        let format = Format::from_path(path)
            .ok_or_else(|| InferError::NoModel(format!("{name}: not an .onnx or .tflite file")))?;
        let load_err = |e: TractError| InferError::Load {
            model: name.to_string(),
            message: chain(&e),
        };
        if !path.is_file() {
            return Err(InferError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model file not found"),
            ));
        }
        let source = match format {
            Format::Onnx => {
                let inference = tract_onnx::onnx().model_for_path(path).map_err(load_err)?;
                let mut unsupported: Vec<String> = inference
                    .nodes()
                    .iter()
                    .filter_map(|n| {
                        let op = n.op.name();
                        op.strip_prefix("Unimplemented(")
                            .and_then(|s| s.strip_suffix(')'))
                            .map(str::to_string)
                    })
                    .collect();
                unsupported.sort();
                unsupported.dedup();
                if !unsupported.is_empty() {
                    return Err(InferError::UnsupportedOperator {
                        model: name.to_string(),
                        operator: unsupported.join(", "),
                    });
                }
                let symbolic = inference_inputs(&inference)
                    .map_err(load_err)?
                    .iter()
                    .any(|i| i.shape.iter().any(Option::is_none));
                match inference
                    .clone()
                    .into_typed()
                    .and_then(crate::qdq::guard_quantized_softmax)
                    .and_then(|t| t.into_decluttered())
                    .and_then(rewritten)
                {
                    Ok(t) => Source::Typed(t),
                    // Some graphs (PP-OCR det) only type-check once the input shape is known.
                    Err(e) if symbolic => {
                        tracing::info!(model = name, error = %chain(&e), "model needs concrete input shapes; typing it per input shape");
                        Source::Inference(inference)
                    }
                    Err(e) => return Err(load_err(e)),
                }
            }
            Format::Tflite => Source::Typed(
                tract_tflite::tflite()
                    .model_for_path(path)
                    .map_err(|e| {
                        let msg = chain(&e);
                        match tflite_unsupported(&msg) {
                            Some(op) => InferError::UnsupportedOperator {
                                model: name.to_string(),
                                operator: op,
                            },
                            None => InferError::Load {
                                model: name.to_string(),
                                message: msg,
                            },
                        }
                    })?
                    .into_decluttered()
                    .and_then(rewritten)
                    .map_err(load_err)?,
            ),
        };
        let (inputs, outputs, generic) = match &source {
            Source::Typed(typed) => {
                let mut inputs = Vec::new();
                for (ix, outlet) in typed.input_outlets().map_err(load_err)?.iter().enumerate() {
                    let fact = typed.input_fact(ix).map_err(load_err)?;
                    let shape = fact
                        .shape
                        .iter()
                        .map(|d| d.to_i64().ok().and_then(|v| usize::try_from(v).ok()))
                        .collect();
                    let symbols = fact
                        .shape
                        .iter()
                        .map(|d| d.to_i64().is_err().then(|| d.to_string()))
                        .collect();
                    inputs.push(InputSpec {
                        name: typed.node(outlet.node).name.clone(),
                        dtype: fact.datum_type,
                        shape,
                        symbols,
                    });
                }
                let concrete = inputs.iter().all(|i| i.shape.iter().all(Option::is_some));
                let generic = match typed
                    .clone()
                    .into_optimized()
                    .and_then(|m| m.into_runnable())
                {
                    Ok(plan) => Some(plan),
                    Err(e) if concrete => return Err(load_err(e)),
                    Err(e) => {
                        tracing::info!(model = name, error = %chain(&e), "no symbolic-shape plan; building one plan per input shape");
                        None
                    }
                };
                (inputs, output_names(typed).map_err(load_err)?, generic)
            }
            Source::Inference(inference) => (
                inference_inputs(inference).map_err(load_err)?,
                output_names(inference).map_err(load_err)?,
                None,
            ),
        };
        let shared_consts = match &source {
            Source::Typed(t) => const_tensors(t)
                .map(|(t, _)| Arc::as_ptr(t) as usize)
                .collect(),
            Source::Inference(_) => HashSet::new(),
        };
        Ok(Model {
            name: name.to_string(),
            source,
            inputs,
            outputs,
            generic,
            by_shape: Mutex::new(PlanCache::new(plan_cache_bytes)),
            counters,
            shared_consts,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Runs the model on `inputs` (converted to the model's input types) with `threads` threads.
    pub fn run(&self, inputs: Vec<Tensor>, threads: usize) -> Result<Vec<Tensor>, InferError> {
        let (plan, values) = self.prepare(inputs)?;
        on_pool(threads, move || {
            let values = values.into_iter().map(Tensor::into_tvalue).collect();
            let out = plan.run(values)?;
            Ok(out.into_iter().map(|v| v.into_tensor()).collect())
        })
        .map_err(|e: TractError| InferError::Execution(chain(&e)))
    }

    /// Checks `inputs`, converts them to the model's input types and finds the plan for their
    /// shapes.
    fn prepare(&self, inputs: Vec<Tensor>) -> Result<(Plan, Vec<Tensor>), InferError> {
        self.check_inputs(&inputs)?;
        let mut values = Vec::with_capacity(inputs.len());
        for (spec, t) in self.inputs.iter().zip(inputs) {
            let t = if t.datum_type() == spec.dtype {
                t
            } else {
                t.cast_to_dt(spec.dtype)
                    .map_err(|e| {
                        InferError::InvalidInput(format!(
                            "input {}: cannot convert to {:?}: {e}",
                            spec.name, spec.dtype
                        ))
                    })?
                    .into_owned()
            };
            values.push(t);
        }
        let plan = match &self.generic {
            Some(p) => p.clone(),
            None => self.plan_for(&values)?,
        };
        Ok((plan, values))
    }

    /// Runs the model like [`Model::run`] and returns the time spent in each node of the plan
    /// (name, operator, milliseconds), slowest first: where an inference's time goes.
    pub fn profile(
        &self,
        inputs: Vec<Tensor>,
        threads: usize,
    ) -> Result<Vec<NodeTime>, InferError> {
        let (plan, values) = self.prepare(inputs)?;
        let mut times = on_pool(threads, move || -> TractResult<Vec<NodeTime>> {
            let mut times = Vec::new();
            let values = values.into_iter().map(Tensor::into_tvalue).collect();
            let mut state = plan.spawn()?;
            state.run_plan_with_eval(values, |ctx, op_state, node, input| {
                let started = Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, input);
                times.push(NodeTime {
                    node: node.name.clone(),
                    op: node.op().name().to_string(),
                    ms: started.elapsed().as_secs_f64() * 1e3,
                });
                out
            })?;
            Ok(times)
        })
        .map_err(|e| InferError::Execution(chain(&e)))?;
        times.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(times)
    }

    fn plan_for(&self, values: &[Tensor]) -> Result<Plan, InferError> {
        let shapes: Vec<Vec<usize>> = values.iter().map(|v| v.shape().to_vec()).collect();
        if let Some(p) = self
            .by_shape
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&shapes)
        {
            return Ok(p);
        }
        let build = || -> TractResult<Plan> {
            let typed = match &self.source {
                Source::Typed(t) => {
                    let mut m = t.clone();
                    for (ix, (spec, shape)) in self.inputs.iter().zip(&shapes).enumerate() {
                        m.set_input_fact(ix, spec.dtype.fact(shape))?;
                    }
                    m
                }
                Source::Inference(i) => {
                    let mut m = i.clone();
                    for (ix, (spec, shape)) in self.inputs.iter().zip(&shapes).enumerate() {
                        m.set_input_fact(
                            ix,
                            InferenceFact::dt_shape(spec.dtype, shape.as_slice()),
                        )?;
                    }
                    let typed = crate::qdq::guard_quantized_softmax(m.into_typed()?)?;
                    rewritten(typed.into_decluttered()?)?
                }
            };
            typed.into_optimized()?.into_runnable()
        };
        let plan = build().map_err(|e| {
            InferError::Execution(format!(
                "cannot plan for input shapes {shapes:?}: {}",
                chain(&e)
            ))
        })?;
        self.counters.built.fetch_add(1, Ordering::Relaxed);
        let bytes = plan_bytes(&plan, &self.shared_consts);
        let mut cache = self.by_shape.lock().unwrap_or_else(|e| e.into_inner());
        let evicted = cache.insert(shapes.clone(), plan.clone(), bytes);
        if evicted > 0 {
            self.counters
                .evictions
                .fetch_add(evicted, Ordering::Relaxed);
            tracing::debug!(model = %self.name, ?shapes, plan_bytes = bytes, evicted, cache_bytes = cache.bytes(), budget = cache.budget(), "plan cache full: least recently used plans dropped");
        }
        if bytes > cache.budget() {
            tracing::warn!(model = %self.name, ?shapes, plan_bytes = bytes, budget = cache.budget(), "a plan for these shapes is bigger than the whole plan cache: it is rebuilt for every request; raise --plan-cache-bytes");
        }
        Ok(plan)
    }

    /// What the per-shape plan cache holds, with the backend's counters.
    pub fn plan_cache_stats(&self) -> PlanCacheStats {
        self.by_shape
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats(&self.counters)
    }
}

/// A decluttered model after edgecd's rewrites (`crate::fuse`, then `crate::ops`).
fn rewritten(mut model: TypedModel) -> TractResult<TypedModel> {
    crate::fuse::fuse_hard_swish(&mut model)?;
    crate::ops::use_edgecd_window_ops(&mut model)?;
    crate::conv::use_edgecd_conv(&mut model)?;
    Ok(model)
}

/// Graph bookkeeping a plan keeps per node (names, facts, the operator), in the estimate.
const NODE_OVERHEAD_BYTES: u64 = 1024;

/// The constants of a typed graph with their sizes in bytes (a packed weight's from its
/// exotic fact, which knows its buffers).
fn const_tensors(model: &TypedModel) -> impl Iterator<Item = (&Arc<Tensor>, u64)> {
    model.nodes().iter().filter_map(|n| {
        let c = n.op_as::<tract_onnx::tract_core::ops::konst::Const>()?;
        let bytes = match c.exotic_fact() {
            Some(f) => f.mem_size().to_i64().map_or(0, |b| b.max(0) as u64),
            None => (c.val().len() * c.val().datum_type().size_of()) as u64,
        };
        Some((c.val(), bytes))
    })
}

/// An estimate of the bytes a plan keeps alive while it is cached: the constants it does not
/// share with the loaded graph (`shared`: their addresses) — weights packed for its kernels,
/// tables computed for its shapes — plus [`NODE_OVERHEAD_BYTES`] per node. Activations are
/// allocated per request and freed after it, so they are not a cost of keeping the plan.
pub(crate) fn plan_bytes(plan: &TypedRunnableModel, shared: &HashSet<usize>) -> u64 {
    let model = plan.model();
    let consts: u64 = const_tensors(model)
        .filter(|(t, _)| !shared.contains(&(Arc::as_ptr(t) as usize)))
        .map(|(_, b)| b)
        .sum();
    consts + model.nodes().len() as u64 * NODE_OVERHEAD_BYTES
}

/// Inputs of a not-yet-typed ONNX graph (dtype defaults to float32 when the file leaves it open).
fn inference_inputs(m: &InferenceModel) -> TractResult<Vec<InputSpec>> {
    let mut inputs = Vec::new();
    for (ix, outlet) in m.input_outlets()?.iter().enumerate() {
        let fact = m.input_fact(ix)?;
        let shape = fact
            .shape
            .dims()
            .map(|d| {
                d.concretize()
                    .and_then(|v| v.to_i64().ok())
                    .and_then(|v| usize::try_from(v).ok())
            })
            .collect();
        let symbols = fact
            .shape
            .dims()
            .map(|d| {
                d.concretize()
                    .filter(|v| v.to_i64().is_err())
                    .map(|v| v.to_string())
            })
            .collect();
        inputs.push(InputSpec {
            name: m.node(outlet.node).name.clone(),
            dtype: fact.datum_type.concretize().unwrap_or(DatumType::F32),
            shape,
            symbols,
        });
    }
    Ok(inputs)
}

fn output_names<F, O>(m: &Graph<F, O>) -> TractResult<Vec<String>>
where
    F: Fact + Clone + 'static,
    O: std::fmt::Debug + std::fmt::Display + AsRef<dyn Op> + AsMut<dyn Op> + Clone + 'static,
{
    Ok(m.output_outlets()?
        .iter()
        .map(|o| {
            m.outlet_label(*o)
                .map(str::to_string)
                .unwrap_or_else(|| m.node(o.node).name.clone())
        })
        .collect())
}

/// Finds the operator name in tract-tflite's "Unsupported: OperatorCode { … }" error.
///
/// The operator is read as TFLite's schema says: `deprecated_builtin_code` (int8, the only
/// field of old files) and `builtin_code` (int32, added later for codes above 127, and 0 =
/// ADD when a writer leaves it out); the real code is the larger of the two (TFLite's
/// `GetBuiltinCode`, and what tract itself dispatches on).
fn tflite_unsupported(msg: &str) -> Option<String> {
    let rest = &msg[msg.find("Unsupported")?..];
    let field = |key: &str| -> Option<&str> {
        rest.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim_end_matches(','))
    };
    if let Some(custom) =
        field("custom_code: Some(").map(|v| v.trim_end_matches(')').trim_matches('"'))
    {
        return Some(format!("custom {custom}"));
    }
    let deprecated = field("deprecated_builtin_code: ").and_then(|v| v.parse::<i32>().ok());
    let builtin = field("builtin_code: ").and_then(builtin_code_from_debug);
    let code = match (deprecated, builtin) {
        (Some(d), Some(b)) => d.max(b),
        (d, b) => d.or(b)?,
    };
    Some(tflite_operator_name(code))
}

/// The code of a `BuiltinOperator` as its `Debug` prints it: the variant name, or
/// `<UNKNOWN n>` for a code tract does not know.
fn builtin_code_from_debug(s: &str) -> Option<i32> {
    use tract_tflite::tflite::BuiltinOperator;
    if let Some(n) = s
        .strip_prefix("<UNKNOWN ")
        .and_then(|v| v.strip_suffix('>'))
    {
        return n.trim().parse().ok();
    }
    BuiltinOperator::ENUM_VALUES
        .iter()
        .find(|op| op.variant_name() == Some(s))
        .map(|op| op.0)
}

/// The schema's name of a TFLite builtin operator code (`BUILTIN_<n>` for one tract does not
/// know).
fn tflite_operator_name(code: i32) -> String {
    tract_tflite::tflite::BuiltinOperator(code)
        .variant_name()
        .map_or_else(|| format!("BUILTIN_{code}"), str::to_string)
}

pub(crate) fn shape_string(s: &[Option<usize>]) -> String {
    let dims: Vec<String> = s
        .iter()
        .map(|d| d.map_or_else(|| "?".to_string(), |v| v.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// A rayon pool per thread count, shared by every model (built once, on first use).
pub fn executor(threads: usize) -> Executor {
    static POOLS: OnceLock<Mutex<HashMap<usize, Executor>>> = OnceLock::new();
    if threads <= 1 {
        return Executor::SingleThread;
    }
    static TUNED: std::sync::Once = std::sync::Once::new();
    TUNED.call_once(|| {
        let panels = std::env::var("EDGECD_INFER_PANEL_THRESHOLD")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(PANEL_THRESHOLD);
        tract_linalg::multithread::set_threading_panel_threshold(panels);
    });
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    pools
        .entry(threads)
        .or_insert_with(|| Executor::multithread_with_name(threads, "edgecd-infer"))
        .clone()
}

/// Runs `f` under tract's executor for `threads`, on one of its pool's threads when it has a
/// pool. The thread that runs the plan then takes a share of each parallel operator itself, and
/// runs a share nobody has stolen yet instead of waiting for a sleeping thread to wake. Called
/// from outside the pool, each parallel operator instead woke a pool thread and then the
/// caller. Two threads, p50, best of 3: squeezenet 5.9 → 5.6 ms, PP-OCR rec 14.0 → 11.9 ms,
/// cls 1.15 → 0.89 ms.
pub fn on_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    match executor(threads) {
        Executor::MultiThread(pool) => {
            let executor = Executor::MultiThread(pool.clone());
            pool.install(|| {
                let crew = crate::crew::Crew::start(&pool, pool.current_num_threads() - 1);
                crew.run(|| multithread_tract_scope(executor, f))
            })
        }
        single => multithread_tract_scope(single, f),
    }
}

/// A cache size as Linux writes it in `/sys/devices/system/cpu/cpu*/cache/index*/size`
/// ("1024K", "2M", "32768").
fn cache_size_bytes(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, unit) = match text.strip_suffix(['K', 'k']) {
        Some(d) => (d, 1024),
        None => match text.strip_suffix('M') {
            Some(d) => (d, 1024 * 1024),
            None => (text, 1),
        },
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

/// The lower-case dtype name used in `TensorData` and the profile (numpy names).
pub fn dtype_name(dt: DatumType) -> &'static str {
    match dt {
        DatumType::F32 => "float32",
        DatumType::F64 => "float64",
        DatumType::F16 => "float16",
        DatumType::I64 => "int64",
        DatumType::I32 => "int32",
        DatumType::I16 => "int16",
        DatumType::I8 => "int8",
        DatumType::U64 => "uint64",
        DatumType::U32 => "uint32",
        DatumType::U16 => "uint16",
        DatumType::U8 => "uint8",
        DatumType::Bool => "bool",
        _ => "unknown",
    }
}

/// Parses a dtype name (`float32`, `int64`, …; `f32`-style short names too).
pub fn parse_dtype(s: &str) -> Option<DatumType> {
    Some(match s {
        "float32" | "f32" | "float" => DatumType::F32,
        "float64" | "f64" | "double" => DatumType::F64,
        "float16" | "f16" => DatumType::F16,
        "int64" | "i64" => DatumType::I64,
        "int32" | "i32" => DatumType::I32,
        "int16" | "i16" => DatumType::I16,
        "int8" | "i8" => DatumType::I8,
        "uint64" | "u64" => DatumType::U64,
        "uint32" | "u32" => DatumType::U32,
        "uint16" | "u16" => DatumType::U16,
        "uint8" | "u8" => DatumType::U8,
        "bool" => DatumType::Bool,
        _ => return None,
    })
}

/// Converts one JSON tensor to a tract tensor of its declared dtype.
pub fn tensor_from_data(d: &TensorData) -> Result<Tensor, InferError> {
    let dt = parse_dtype(&d.dtype).ok_or_else(|| {
        InferError::InvalidInput(format!("input {}: unknown dtype {:?}", d.name, d.dtype))
    })?;
    let n = d.shape.iter().try_fold(1usize, |a, b| a.checked_mul(*b));
    if n != Some(d.data.len()) {
        return Err(InferError::InvalidInput(format!(
            "input {}: shape {:?} needs {} values, got {}",
            d.name,
            d.shape,
            n.map_or_else(|| "too many".to_string(), |n| n.to_string()),
            d.data.len()
        )));
    }
    let t = Tensor::from_shape(&d.shape, &d.data)
        .map_err(|e| InferError::InvalidInput(format!("input {}: {e}", d.name)))?;
    if dt == DatumType::F64 {
        return Ok(t);
    }
    let t = if dt == DatumType::Bool {
        t.cast_to_dt(DatumType::F32).map(|c| c.into_owned())
    } else {
        Ok(t)
    }
    .and_then(|t| t.cast_to_dt(dt).map(|c| c.into_owned()));
    t.map_err(|e| {
        InferError::InvalidInput(format!(
            "input {}: cannot convert to {}: {e}",
            d.name, d.dtype
        ))
    })
}

/// Converts a tract tensor to a JSON tensor.
pub fn tensor_to_data(name: &str, t: &Tensor) -> Result<TensorData, InferError> {
    let as_f64 = t
        .cast_to::<f64>()
        .map_err(|e| InferError::Execution(format!("output {name}: {e}")))?;
    let view = as_f64
        .to_plain_array_view::<f64>()
        .map_err(|e| InferError::Execution(format!("output {name}: {e}")))?;
    Ok(TensorData {
        name: name.to_string(),
        dtype: dtype_name(t.datum_type()).to_string(),
        shape: t.shape().to_vec(),
        data: view.iter().copied().collect(),
    })
}

/// The active model of an installed bundle, as loaded at one moment by a [`Backend`].
pub struct Engine {
    /// The directory the bundle was read from, with symlinks resolved (a slot, not `current`).
    pub dir: PathBuf,
    pub profile: Profile,
    /// `name@version` of the profile.
    pub release: String,
    pub model: Box<dyn BackendModel>,
    /// The backend that loaded it (self-test cases for other model files of the bundle load
    /// them with it).
    pub backend: Arc<dyn Backend>,
    pub load_seconds: f64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.dir)
            .field("release", &self.release)
            .field("model", &self.model.name())
            .field("runtime", &self.backend.runtime())
            .field("load_seconds", &self.load_seconds)
            .finish()
    }
}

impl Engine {
    /// Loads `DIR/profile.json` and the chosen model with the tract backend (defaults); see
    /// [`Engine::load_with`].
    pub fn load(dir: &Path, model: Option<&str>) -> Result<Engine, InferError> {
        Engine::load_with(Arc::new(TractBackend::default()), dir, model)
    }

    /// Loads `DIR/profile.json` and the chosen model (`model`: a filepath or file name; default
    /// the first ONNX/TFLite model of the profile) with `backend`.
    pub fn load_with(
        backend: Arc<dyn Backend>,
        dir: &Path,
        model: Option<&str>,
    ) -> Result<Engine, InferError> {
        let started = Instant::now();
        let dir = dir.canonicalize().map_err(|e| InferError::io(dir, e))?;
        let profile = read_profile(&dir)?;
        let entry = profile
            .models
            .iter()
            .find(|m| match model {
                Some(want) => {
                    m.filepath == want
                        || Path::new(&m.filepath)
                            .file_name()
                            .is_some_and(|f| f == want)
                        || Path::new(&m.filepath)
                            .file_stem()
                            .is_some_and(|f| f == want)
                }
                None => matches!(m.info.format, ModelFormat::Onnx | ModelFormat::Tflite),
            })
            .ok_or_else(|| {
                let have: Vec<&str> = profile.models.iter().map(|m| m.filepath.as_str()).collect();
                InferError::NoModel(match model {
                    Some(want) => format!("profile has no model {want:?} (has {have:?})"),
                    None => format!("profile has no ONNX or TFLite model (has {have:?})"),
                })
            })?;
        let path = model_path(&dir, &entry.filepath)?;
        let loaded = backend.load(&path, &entry.filepath)?;
        let release = format!("{}@{}", profile.name, profile.version);
        Ok(Engine {
            dir,
            release,
            model: loaded,
            backend,
            profile,
            load_seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// Reads and parses `DIR/profile.json`.
pub fn read_profile(dir: &Path) -> Result<Profile, InferError> {
    let p = dir.join(PROFILE_FILE);
    let bytes = std::fs::read(&p).map_err(|e| InferError::io(&p, e))?;
    serde_json::from_slice(&bytes).map_err(|e| InferError::Profile {
        path: p,
        message: e.to_string(),
    })
}

/// `DIR/models/<filepath>`, refusing paths that leave the models directory.
pub fn model_path(dir: &Path, filepath: &str) -> Result<PathBuf, InferError> {
    let rel = Path::new(filepath);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(InferError::NoModel(format!(
            "model filepath {filepath:?} is not a plain relative path"
        )));
    }
    Ok(dir.join(MODELS_DIR).join(rel))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tflite_operator_codes_read_as_the_schema_says() {
        let msg = |deprecated: i32, builtin: &str| {
            format!(
                "Unsupported: OperatorCode {{\n    deprecated_builtin_code: {deprecated},\n    \
                 custom_code: None,\n    version: 1,\n    builtin_code: {builtin},\n}}, inputs: []"
            )
        };
        // Old files: only the deprecated field; `builtin_code` reads as its default, ADD.
        assert_eq!(
            super::tflite_unsupported(&msg(6, "ADD")).as_deref(),
            Some("DEQUANTIZE")
        );
        assert_eq!(
            super::tflite_unsupported(&msg(54, "ADD")).as_deref(),
            Some("PRELU")
        );
        // New files: both fields, or the placeholder 127 and the real code above it.
        assert_eq!(
            super::tflite_unsupported(&msg(54, "PRELU")).as_deref(),
            Some("PRELU")
        );
        assert_eq!(
            super::tflite_unsupported(&msg(127, "CUMSUM")).as_deref(),
            Some("CUMSUM")
        );
        assert_eq!(
            super::tflite_unsupported(&msg(127, "<UNKNOWN 300>")).as_deref(),
            Some("BUILTIN_300")
        );
        let custom = "Unsupported: OperatorCode {\n    deprecated_builtin_code: 32,\n    custom_code: Some(\"Frob\"),\n    version: 1,\n    builtin_code: CUSTOM,\n}";
        assert_eq!(
            super::tflite_unsupported(custom).as_deref(),
            Some("custom Frob")
        );
    }

    #[test]
    fn cache_sizes_as_linux_writes_them() {
        assert_eq!(super::cache_size_bytes("1024K\n"), Some(1024 * 1024));
        assert_eq!(super::cache_size_bytes("2M"), Some(2 * 1024 * 1024));
        assert_eq!(super::cache_size_bytes("32768"), Some(32768));
        assert_eq!(super::cache_size_bytes(""), None);
        assert_eq!(super::cache_size_bytes("big"), None);
    }
}
