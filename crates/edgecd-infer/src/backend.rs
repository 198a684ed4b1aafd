//! The seam between edgecd-infer's service and an inference runtime.
//!
//! What makes edgecd-infer worth running on every device is not its kernels but what sits
//! around them: the HTTP API (`server`), the Prometheus metrics (`metrics`), the thermal
//! governor (`governor`, `thermal`), the readiness check and the bundle's self-test
//! (`selftest`). They only see a runtime through two traits:
//!
//! - [`Backend`]: a runtime that loads one model file of an installed bundle;
//! - [`BackendModel`]: a loaded model: it describes its inputs and outputs and runs a request
//!   with a number of threads (the governor's current choice).
//!
//! Readiness is not something a backend asserts: a model is ready once it passed a real
//! inference through [`BackendModel::run`] (`selftest::check_readiness`). The tract backend
//! ([`TractBackend`], edgecd's hand-written kernels on tract) is today's only implementation;
//! another in-process runtime implements these two traits and gets the same API, metrics,
//! governor and self-test. A runtime in its own container image (LiteRT, HailoRT,
//! onnxruntime) instead meets the HTTP contract in `docs/runtime-contract.md`, which these
//! traits are the in-process form of.

use crate::error::InferError;
use crate::model::{InputSpec, Model, shape_string, tensor_from_data, tensor_to_data};
use crate::plan_cache::{DEFAULT_BUDGET_BYTES, PlanCacheStats, PlanCounters};
use edgecd_api::profile::TensorData;
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::Tensor;

/// An inference runtime: loads model files.
pub trait Backend: std::fmt::Debug + Send + Sync + 'static {
    /// The runtime's name, the `runtime` label of `edgecd_infer_model_info` (`tract`).
    fn runtime(&self) -> &'static str;

    /// Loads the model file at `path`; `name` is its filepath in the bundle (used in messages
    /// and self-test cases). A model the runtime cannot run is refused here, naming what it
    /// cannot run ([`InferError::UnsupportedOperator`]), never at the first request.
    fn load(&self, path: &Path, name: &str) -> Result<Box<dyn BackendModel>, InferError>;
}

/// A loaded model. The provided methods (request decoding, shape checks, generated inputs)
/// are the same for every runtime.
pub trait BackendModel: Send + Sync {
    /// The model's filepath in the bundle.
    fn name(&self) -> &str;

    /// The inputs, in the order [`BackendModel::run`] takes them.
    fn inputs(&self) -> &[InputSpec];

    /// The outputs' names, in the order [`BackendModel::run`] returns them.
    fn output_names(&self) -> &[String];

    /// Runs one request with `threads` threads. `inputs` passed [`BackendModel::check_inputs`];
    /// the backend converts them to its input types. A caller error is
    /// [`InferError::InvalidInput`] (a 400), anything else a model failure (a 500).
    fn run(&self, inputs: Vec<Tensor>, threads: usize) -> Result<Vec<Tensor>, InferError>;

    /// The per-shape plan cache, for a runtime that keeps one.
    fn plan_cache(&self) -> Option<PlanCacheStats> {
        None
    }

    /// A caller error unless the request has one tensor per model input.
    fn check_input_count(&self, got: usize) -> Result<(), InferError> {
        let inputs = self.inputs();
        if got == inputs.len() {
            return Ok(());
        }
        Err(InferError::InvalidInput(format!(
            "model {} takes {} input(s) ({}), got {got}",
            self.name(),
            inputs.len(),
            inputs
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )))
    }

    /// Checks input count and shapes against the model (a caller error when they differ).
    fn check_inputs(&self, inputs: &[Tensor]) -> Result<(), InferError> {
        self.check_input_count(inputs.len())?;
        for (spec, t) in self.inputs().iter().zip(inputs) {
            let fits = spec.shape.len() == t.rank()
                && spec
                    .shape
                    .iter()
                    .zip(t.shape())
                    .all(|(want, got)| want.is_none_or(|w| w == *got));
            if !fits {
                return Err(InferError::InvalidInput(format!(
                    "input {} has shape {:?}, the model wants {}",
                    spec.name,
                    t.shape(),
                    shape_string(&spec.shape)
                )));
            }
        }
        Ok(())
    }

    /// Converts request tensors to model inputs: matched by name, or by position when the
    /// request's names are empty.
    fn tensors_from_data(&self, data: &[TensorData]) -> Result<Vec<Tensor>, InferError> {
        let by_name = data.iter().all(|d| !d.name.is_empty());
        self.check_input_count(data.len())?;
        let mut out = Vec::with_capacity(data.len());
        for (ix, spec) in self.inputs().iter().enumerate() {
            let d = if by_name {
                data.iter().find(|d| d.name == spec.name).ok_or_else(|| {
                    InferError::InvalidInput(format!(
                        "missing input {:?} (got {:?})",
                        spec.name,
                        data.iter().map(|d| &d.name).collect::<Vec<_>>()
                    ))
                })?
            } else {
                &data[ix]
            };
            out.push(tensor_from_data(d)?);
        }
        Ok(out)
    }

    /// The model's output tensors as `TensorData` (named after the graph's outputs).
    fn tensors_to_data(&self, outputs: &[Tensor]) -> Result<Vec<TensorData>, InferError> {
        outputs
            .iter()
            .zip(self.output_names())
            .map(|(t, name)| tensor_to_data(name, t))
            .collect()
    }

    /// Input shapes with symbolic dimensions replaced by 1 (the benchmark's zero inputs).
    fn default_input_shapes(&self) -> Vec<Vec<usize>> {
        self.inputs()
            .iter()
            .map(|i| i.shape.iter().map(|d| d.unwrap_or(1)).collect())
            .collect()
    }

    /// Input shapes for generated inputs: a symbolic leading (batch) dimension becomes 1. Any
    /// other symbolic dimension (an image's height, a sequence's length) has no size that is
    /// right for every model, so it is an error naming each input and dimension: such a model
    /// needs self-test vectors with inputs of the sizes it takes.
    fn generated_input_shapes(&self) -> Result<Vec<Vec<usize>>, InferError> {
        let mut problems = Vec::new();
        let shapes = self
            .inputs()
            .iter()
            .map(|i| {
                let open: Vec<String> = i
                    .shape
                    .iter()
                    .enumerate()
                    .filter(|(ix, d)| *ix > 0 && d.is_none())
                    .map(|(ix, _)| match i.symbols.get(ix).cloned().flatten() {
                        Some(sym) => format!("{ix} ({sym:?})"),
                        None => ix.to_string(),
                    })
                    .collect();
                if !open.is_empty() {
                    problems.push(format!(
                        "input {:?} {} has symbolic dimension{} {}",
                        i.name,
                        shape_string(&i.shape),
                        if open.len() > 1 { "s" } else { "" },
                        open.join(", ")
                    ));
                }
                i.shape.iter().map(|d| d.unwrap_or(1)).collect()
            })
            .collect();
        if problems.is_empty() {
            return Ok(shapes);
        }
        Err(InferError::NoGeneratedInput {
            model: self.name().to_string(),
            reason: format!(
                "{}; only a leading batch dimension is set to 1, other sizes cannot be guessed: \
                 give self-test vectors whose inputs have sizes the model takes \
                 (`edgecd bundle build --selftest DIR` with a selftest.json)",
                problems.join("; ")
            ),
        })
    }
}

/// tract with edgecd's own operators ([`Model`]).
#[derive(Debug, Clone)]
pub struct TractBackend {
    /// Byte budget of each model's per-shape plan cache.
    pub plan_cache_bytes: u64,
    counters: Arc<PlanCounters>,
}

impl Default for TractBackend {
    fn default() -> Self {
        TractBackend::new(DEFAULT_BUDGET_BYTES)
    }
}

impl TractBackend {
    pub fn new(plan_cache_bytes: u64) -> Self {
        TractBackend {
            plan_cache_bytes,
            counters: Arc::default(),
        }
    }
}

impl Backend for TractBackend {
    fn runtime(&self) -> &'static str {
        "tract"
    }

    fn load(&self, path: &Path, name: &str) -> Result<Box<dyn BackendModel>, InferError> {
        Ok(Box::new(Model::load_with(
            path,
            name,
            self.plan_cache_bytes,
            self.counters.clone(),
        )?))
    }
}

impl BackendModel for Model {
    fn name(&self) -> &str {
        Model::name(self)
    }

    fn inputs(&self) -> &[InputSpec] {
        Model::inputs(self)
    }

    fn output_names(&self) -> &[String] {
        Model::output_names(self)
    }

    fn run(&self, inputs: Vec<Tensor>, threads: usize) -> Result<Vec<Tensor>, InferError> {
        Model::run(self, inputs, threads)
    }

    fn plan_cache(&self) -> Option<PlanCacheStats> {
        Some(Model::plan_cache_stats(self))
    }
}
