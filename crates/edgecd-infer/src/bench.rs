//! Latency benchmark of one model file, in process (used by `scripts/bench-infer` through
//! `edgecd-infer --bench-model`): load time, p50/p99/mean latency, sequential throughput, peak RSS;
//! and a per-node, per-operator time profile (`--bench-profile`).

use crate::backend::BackendModel as _;
use crate::error::InferError;
use crate::model::{Model, NodeTime};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use tract_onnx::prelude::Tensor;

/// Benchmark results (milliseconds unless named otherwise).
#[derive(Debug, Clone, Serialize)]
pub struct BenchStats {
    pub model: String,
    pub threads: usize,
    pub iterations: usize,
    pub load_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    /// Sequential inferences per second (1 / mean latency).
    pub throughput_per_s: f64,
    /// Peak resident set size of this process (Linux `VmHWM`), in KiB.
    pub peak_rss_kib: Option<u64>,
}

/// Loads `model_path`, runs `warmup` untimed and `iterations` timed inferences on `inputs`
/// (default: zeros in the model's shapes, symbolic dimensions 1).
pub fn bench(
    model_path: &Path,
    inputs: Option<Vec<Tensor>>,
    threads: usize,
    warmup: usize,
    iterations: usize,
) -> Result<BenchStats, InferError> {
    let (name, model, inputs, load_ms) = warmed_up(model_path, inputs, threads, warmup)?;
    let iterations = iterations.max(1);
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        // The copy of the inputs is not the inference's (onnxruntime's timing reads a numpy
        // array in place).
        let batch = inputs.clone();
        let t = Instant::now();
        model.run(batch, threads)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mean_ms = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    Ok(BenchStats {
        model: name,
        threads,
        iterations,
        load_ms,
        p50_ms: percentile(&times, 0.50),
        p99_ms: percentile(&times, 0.99),
        mean_ms,
        throughput_per_s: 1e3 / mean_ms,
        peak_rss_kib: peak_rss_kib(),
    })
}

/// Where an inference's time goes, averaged over `iterations` runs after `warmup` untimed ones.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub model: String,
    pub threads: usize,
    pub iterations: usize,
    /// Mean of the per-node times summed over the plan, in milliseconds.
    pub total_ms: f64,
    /// Mean time per operator kind (`Conv`, `MaxPool`, …), slowest first.
    pub by_op: Vec<(String, f64)>,
    /// Mean time per node, slowest first.
    pub by_node: Vec<NodeTime>,
}

/// Profiles `model_path` per node and per operator kind (`edgecd-infer --bench-model M
/// --bench-profile`).
pub fn profile(
    model_path: &Path,
    inputs: Option<Vec<Tensor>>,
    threads: usize,
    warmup: usize,
    iterations: usize,
) -> Result<Profile, InferError> {
    let (name, model, inputs, _) = warmed_up(model_path, inputs, threads, warmup)?;
    let iterations = iterations.max(1);
    let mut by_node: Vec<NodeTime> = Vec::new();
    for _ in 0..iterations {
        for t in model.profile(inputs.clone(), threads)? {
            match by_node.iter_mut().find(|n| n.node == t.node) {
                Some(n) => n.ms += t.ms,
                None => by_node.push(t),
            }
        }
    }
    let mut by_op: Vec<(String, f64)> = Vec::new();
    for n in &mut by_node {
        n.ms /= iterations as f64;
        match by_op.iter_mut().find(|(op, _)| *op == n.op) {
            Some((_, ms)) => *ms += n.ms,
            None => by_op.push((n.op.clone(), n.ms)),
        }
    }
    by_node.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Profile {
        model: name,
        threads,
        iterations,
        total_ms: by_node.iter().map(|n| n.ms).sum(),
        by_op,
        by_node,
    })
}

/// Loads `model_path` and runs `warmup` untimed inferences on `inputs` (default: zeros in the
/// model's shapes, symbolic dimensions 1). Returns the load time in milliseconds last.
fn warmed_up(
    model_path: &Path,
    inputs: Option<Vec<Tensor>>,
    threads: usize,
    warmup: usize,
) -> Result<(String, Model, Vec<Tensor>, f64), InferError> {
    let started = Instant::now();
    let name = model_path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let model = Model::load(model_path, &name)?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let inputs = match inputs {
        Some(i) => i,
        None => default_inputs(&model)?,
    };
    for _ in 0..warmup {
        model.run(inputs.clone(), threads)?;
    }
    Ok((name, model, inputs, load_ms))
}

fn default_inputs(model: &Model) -> Result<Vec<Tensor>, InferError> {
    model
        .inputs()
        .iter()
        .zip(model.default_input_shapes())
        .map(|(spec, shape)| {
            Tensor::zero_dt(spec.dtype, &shape).map_err(|e| InferError::InvalidInput(e.to_string()))
        })
        .collect()
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::percentile(&v, 0.5), 50.0);
        assert_eq!(super::percentile(&v, 0.99), 99.0);
        assert_eq!(super::percentile(&[3.0], 0.99), 3.0);
    }
}
