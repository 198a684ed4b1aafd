//! tract (through edgecd-infer's `Model`) against onnxruntime on real architectures: the `onnx`
//! wheel's light models and the PP-OCR models from the rapidocr wheel. `tests/py/reference.py`
//! writes deterministic inputs and onnxruntime's outputs as .npy; each model runs once here.

mod common;

use common::tensor_values as values;
use edgecd_infer::Model;
use edgecd_infer::npy::read_npy;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tract_onnx::prelude::Tensor;

/// |tract - onnxruntime| ≤ ABS + REL·|onnxruntime| for every element.
const ABS: f64 = 1e-4;
const REL: f64 = 1e-3;

fn reference(args: &[&str]) -> Option<(tempfile::TempDir, serde_json::Value)> {
    let python = edgecd_testkit::python()?;
    let out = tempfile::tempdir().unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/reference.py");
    let st = std::process::Command::new(python)
        .arg(script)
        .arg(out.path())
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "reference.py failed");
    let manifest =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    Some((out, manifest))
}

fn load_npy(dir: &Path, f: &serde_json::Value) -> Tensor {
    read_npy(&std::fs::read(dir.join(f.as_str().unwrap())).unwrap()).unwrap()
}

/// `varied`: each model's reference outputs must not be constant (a model whose answer does not
/// depend on its input proves nothing about the kernels: the light models' often is).
fn check_all(dir: &Path, manifest: &serde_json::Value, expect: usize, varied: bool) {
    let cases = manifest.as_array().unwrap();
    assert_eq!(cases.len(), expect, "models found by reference.py");
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let started = Instant::now();
        let model = Model::load(Path::new(case["model"].as_str().unwrap()), name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let loaded = started.elapsed();
        let inputs: Vec<Tensor> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| load_npy(dir, f))
            .collect();
        let outputs = model
            .run(inputs, 2)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let wants = case["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), wants.len(), "{name}: output count");
        let mut worst = 0f64;
        for (got, want) in outputs.iter().zip(wants) {
            let want = load_npy(dir, want);
            assert_eq!(got.shape(), want.shape(), "{name}: output shape");
            if varied {
                let w = values(&want);
                let (lo, hi) = w
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                        (lo.min(*v), hi.max(*v))
                    });
                assert!(
                    hi - lo > 1e-3,
                    "{name}: onnxruntime's output is constant ({lo}..{hi}): the case proves nothing"
                );
            }
            for (g, w) in values(got).iter().zip(values(&want)) {
                let ratio = (g - w).abs() / (ABS + REL * w.abs());
                worst = if ratio.is_nan() {
                    f64::INFINITY
                } else {
                    worst.max(ratio)
                };
            }
        }
        eprintln!(
            "{name}: load {:.2}s, run {:.2}s, worst error / tolerance = {worst:.3}",
            loaded.as_secs_f64(),
            (started.elapsed() - loaded).as_secs_f64()
        );
        if worst > 1.0 {
            failures.push(format!("{name}: error {worst:.3}× the tolerance"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn onnx_light_models_match_onnxruntime() {
    let Some((dir, manifest)) = reference(&["--light"]) else {
        return;
    };
    check_all(dir.path(), &manifest, 9, false);
}

#[test]
fn ppocr_models_match_onnxruntime() {
    let Some(wheels) = edgecd_testkit::wheels_dir() else {
        return;
    };
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|f| {
                f.to_string_lossy()
                    .starts_with("rapidocr_onnxruntime-1.4.4")
            })
        });
    let Some(wheel) = wheel else {
        let _ = edgecd_testkit::external(
            "rapidocr_onnxruntime-1.4.4 wheel",
            wheels.join("rapidocr_onnxruntime-1.4.4-py3-none-any.whl"),
        );
        return;
    };
    let Some((dir, manifest)) = reference(&["--wheel", wheel.to_str().unwrap()]) else {
        return;
    };
    check_all(dir.path(), &manifest, 3, true);
}
