//! Self-test: running a profile's vectors on the device (`run_selftest`), recording them when
//! a bundle is built (`record_selftest`), and the readiness check every loaded model passes
//! before `/readyz` says ready (`check_readiness`: its vectors, or a generated input).

use crate::backend::BackendModel;
use crate::error::InferError;
use crate::model::{Engine, Model, model_path, tensor_to_data};
use edgecd_api::profile::{SelfTest, SelfTestCase, TensorData, Tolerance};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use tract_onnx::prelude::{DatumType, Tensor};

/// Tolerance recorded by `record_selftest`: covers the different SIMD kernels and summation
/// orders of x86-64 (where bundles are built) and aarch64 (where they run).
pub const RECORD_TOLERANCE: Tolerance = Tolerance {
    abs: 1e-3,
    rel: 1e-3,
};

/// The outcome of one self-test case.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseReport {
    pub name: String,
    pub model: String,
    pub passed: bool,
    /// Largest |actual - expected| over all output elements.
    pub max_abs_error: f64,
    /// Largest |actual - expected| / (abs + rel·|expected|): ≤ 1 passes.
    pub max_tolerance_ratio: f64,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_budget_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome of a whole self-test.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfTestReport {
    pub release: String,
    pub passed: bool,
    pub cases: Vec<CaseReport>,
}

/// Runs every case of `st` against the engine's bundle, through the engine's backend. Cases
/// for another model file of the same bundle load that file with the same backend.
pub fn run_selftest(engine: &Engine, st: &SelfTest, threads: usize) -> SelfTestReport {
    let mut others: Vec<Box<dyn BackendModel>> = Vec::new();
    let mut cases = Vec::new();
    for case in &st.cases {
        let model: Result<&dyn BackendModel, InferError> = if case.model == engine.model.name() {
            Ok(engine.model.as_ref())
        } else if let Some(i) = others.iter().position(|m| m.name() == case.model) {
            Ok(others[i].as_ref())
        } else {
            match model_path(&engine.dir, &case.model)
                .and_then(|p| engine.backend.load(&p, &case.model))
            {
                Ok(m) => {
                    others.push(m);
                    Ok(others.last().map_or(engine.model.as_ref(), |m| m.as_ref()))
                }
                Err(e) => Err(e),
            }
        };
        cases.push(match model {
            Ok(m) => run_case(m, case, st, threads),
            Err(e) => failed(case, st, e.to_string()),
        });
    }
    SelfTestReport {
        release: engine.release.clone(),
        passed: cases.iter().all(|c| c.passed),
        cases,
    }
}

fn failed(case: &SelfTestCase, st: &SelfTest, error: String) -> CaseReport {
    CaseReport {
        name: case.name.clone(),
        model: case.model.clone(),
        passed: false,
        max_abs_error: f64::NAN,
        max_tolerance_ratio: f64::NAN,
        latency_ms: 0.0,
        latency_budget_ms: st.latency_budget_ms,
        error: Some(error),
    }
}

fn run_case(
    model: &dyn BackendModel,
    case: &SelfTestCase,
    st: &SelfTest,
    threads: usize,
) -> CaseReport {
    let inputs = match model.tensors_from_data(&case.inputs) {
        Ok(i) => i,
        Err(e) => return failed(case, st, e.to_string()),
    };
    let started = Instant::now();
    let outputs = match run_guarded(model, inputs, threads) {
        Ok(o) => o,
        Err(e) => return failed(case, st, e.to_string()),
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    let actual = match model.tensors_to_data(&outputs) {
        Ok(a) => a,
        Err(e) => return failed(case, st, e.to_string()),
    };
    let mut report = CaseReport {
        name: case.name.clone(),
        model: case.model.clone(),
        passed: true,
        max_abs_error: 0.0,
        max_tolerance_ratio: 0.0,
        latency_ms,
        latency_budget_ms: st.latency_budget_ms,
        error: None,
    };
    let mut problems = Vec::new();
    for (i, want) in case.outputs.iter().enumerate() {
        let got = actual
            .iter()
            .find(|a| !want.name.is_empty() && a.name == want.name)
            .or_else(|| actual.get(i));
        let Some(got) = got else {
            problems.push(format!("output {} missing", want.name));
            continue;
        };
        if got.shape != want.shape {
            problems.push(format!(
                "output {}: shape {:?}, expected {:?}",
                want.name, got.shape, want.shape
            ));
            continue;
        }
        let (abs, ratio) = st.tolerance.compare(&got.data, &want.data);
        report.max_abs_error = report.max_abs_error.max(abs);
        report.max_tolerance_ratio = report.max_tolerance_ratio.max(ratio);
        if ratio.is_nan() || ratio > 1.0 {
            problems.push(format!(
                "output {}: max error {abs:e} exceeds tolerance",
                want.name
            ));
        }
    }
    if let Some(budget) = st.latency_budget_ms.filter(|b| latency_ms > *b) {
        problems.push(format!(
            "latency {latency_ms:.1} ms exceeds budget {budget} ms"
        ));
    }
    if !problems.is_empty() {
        report.passed = false;
        report.error = Some(problems.join("; "));
    }
    report
}

/// A small deterministic generator (SplitMix64): the same seed gives the same inputs on every
/// machine.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), on a 2^-24 grid so it is exact in float32.
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 40) as f64 / (1u64 << 24) as f64
    }
}

/// Deterministic input values for a tensor of `dt`: floats uniform in [0, 1), integers in
/// [0, 10), booleans 0/1.
pub fn random_input(
    rng: &mut SplitMix64,
    name: &str,
    dt: DatumType,
    shape: &[usize],
) -> TensorData {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|_| match dt {
            DatumType::F16 | DatumType::F32 | DatumType::F64 => rng.next_unit(),
            DatumType::Bool => (rng.next_u64() & 1) as f64,
            _ => (rng.next_u64() % 10) as f64,
        })
        .collect();
    TensorData {
        name: name.to_string(),
        dtype: crate::model::dtype_name(dt).to_string(),
        shape: shape.to_vec(),
        data,
    }
}

/// Deterministic generated inputs for `model` (see [`BackendModel::generated_input_shapes`]: only a
/// symbolic leading batch dimension is chosen, as 1).
pub fn generated_inputs(
    model: &dyn BackendModel,
    rng: &mut SplitMix64,
) -> Result<Vec<TensorData>, InferError> {
    let shapes = model.generated_input_shapes()?;
    Ok(model
        .inputs()
        .iter()
        .zip(&shapes)
        .map(|(spec, shape)| random_input(rng, &spec.name, spec.dtype, shape))
        .collect())
}

/// Runs `model` like [`BackendModel::run`], turning a panic inside the runtime into an
/// execution error (a tool recording vectors or a readiness check must report, not crash).
fn run_guarded(
    model: &dyn BackendModel,
    inputs: Vec<Tensor>,
    threads: usize,
) -> Result<Vec<Tensor>, InferError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.run(inputs, threads)))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(InferError::Execution(format!(
                "model {} panicked while running: {what}",
                model.name()
            )))
        })
}

/// What `/readyz` reports about the loaded model.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// The model passed a real inference.
    pub ready: bool,
    /// How it was checked: `selftest` (the profile's vectors for this model) or `generated`
    /// (a deterministic input shaped like the model's inputs).
    pub check: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Checks that the engine's model answers: its self-test cases when the profile has some for
/// it (outputs within tolerance; the latency budget is left to `/v1/selftest`, a cold first
/// run is no measure of it), else one run on a generated input. A model that fails this
/// fails every request of that kind, and is never reported ready.
pub fn check_readiness(engine: &Engine, threads: usize) -> Readiness {
    let name = engine.model.name();
    let cases: Vec<SelfTestCase> = engine
        .profile
        .selftest
        .iter()
        .flat_map(|st| &st.cases)
        .filter(|c| c.model == name)
        .cloned()
        .collect();
    if let (Some(st), false) = (&engine.profile.selftest, cases.is_empty()) {
        let st = SelfTest {
            cases,
            tolerance: st.tolerance,
            latency_budget_ms: None,
        };
        let report = run_selftest(engine, &st, threads);
        let failures: Vec<String> = report
            .cases
            .iter()
            .filter(|c| !c.passed)
            .map(|c| {
                format!(
                    "case {}: {}",
                    c.name,
                    c.error.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        return Readiness {
            ready: report.passed,
            check: "selftest",
            error: (!failures.is_empty())
                .then(|| format!("model {name} failed its self-test: {}", failures.join("; "))),
        };
    }
    let model = engine.model.as_ref();
    let ran = generated_inputs(model, &mut SplitMix64::new(1))
        .and_then(|data| model.tensors_from_data(&data))
        .and_then(|tensors| run_guarded(model, tensors, threads));
    Readiness {
        ready: ran.is_ok(),
        check: "generated",
        error: ran
            .err()
            .map(|e| format!("model {name} failed an inference on a generated input: {e}")),
    }
}

/// Runs the model at `model_path` on `cases` deterministic pseudo-random inputs (seeded by
/// `seed`; a symbolic leading batch dimension becomes 1, any other symbolic dimension is an
/// error: see [`BackendModel::generated_input_shapes`]) and records the outputs as self-test vectors, with
/// [`RECORD_TOLERANCE`] and a latency budget of 20× the slowest run here plus 100 ms (the
/// device is slower than the build machine). Each case's `model` is the file name of
/// `model_path`; callers that put the file elsewhere in the bundle rewrite it.
pub fn record_selftest(model_path: &Path, cases: usize, seed: u64) -> Result<SelfTest, InferError> {
    let name = model_path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let model = Model::load(model_path, &name)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(cases);
    let mut slowest = 0f64;
    for i in 0..cases {
        let inputs = generated_inputs(&model, &mut rng)?;
        let tensors: Vec<Tensor> = model.tensors_from_data(&inputs)?;
        // The first run also builds any per-shape plan: time a second one.
        run_guarded(&model, tensors.clone(), threads)?;
        let started = Instant::now();
        let outputs = run_guarded(&model, tensors, threads)?;
        slowest = slowest.max(started.elapsed().as_secs_f64() * 1e3);
        let outputs = outputs
            .iter()
            .zip(model.output_names())
            .map(|(t, n)| tensor_to_data(n, t))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(SelfTestCase {
            name: format!("auto-{seed}-{i}"),
            model: name.clone(),
            inputs,
            outputs,
        });
    }
    Ok(SelfTest {
        cases: out,
        tolerance: RECORD_TOLERANCE,
        latency_budget_ms: Some((slowest * 20.0 + 100.0).ceil()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic() {
        let a: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut r = SplitMix64::new(1);
        assert!(
            (0..1000)
                .map(|_| r.next_unit())
                .all(|v| (0.0..1.0).contains(&v))
        );
    }

    #[test]
    fn compare_uses_abs_and_rel() {
        let tol = Tolerance { abs: 0.1, rel: 0.1 };
        assert_eq!(tol.compare(&[1.0], &[1.0]), (0.0, 0.0));
        let (abs, ratio) = tol.compare(&[10.15, 0.0], &[10.0, 0.0]);
        assert!((abs - 0.15).abs() < 1e-9 && ratio < 1.0);
        assert!(tol.compare(&[2.0], &[1.0]).1 > 1.0);
        assert!(tol.compare(&[f64::NAN], &[1.0]).1.is_nan());
    }
}
