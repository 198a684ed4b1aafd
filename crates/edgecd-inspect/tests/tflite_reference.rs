//! TFLite inspection checked against an independent reader: a quantized model built by
//! `tests/py/make_quant_tflite.py` and read back by ai-edge-litert's `Interpreter`.

mod common;

use edgecd_inspect::{ModelFormat, Precision, inspect_path};
use serde_json::Value;

#[test]
fn quantized_tflite_matches_litert_interpreter() {
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q.tflite");
    let script = common::script("make_quant_tflite.py");
    common::run_py(&python, &[script.as_os_str(), path.as_os_str()]);
    let report: Value = serde_json::from_str(&common::run_py(
        &python,
        &[script.as_os_str(), "--report".as_ref(), path.as_os_str()],
    ))
    .expect("report JSON");

    let info = inspect_path(&path).expect("inspect tflite");
    assert_eq!(info.format, ModelFormat::Tflite);
    assert_eq!(
        Some(report["version"].as_i64().expect("version")),
        info.opset
    );
    assert_eq!(report["description"].as_str(), info.producer.as_deref());
    let ops: Vec<String> = serde_json::from_value(report["ops"].clone()).expect("ops");
    assert_eq!(info.operators, ops, "GELU has builtin code 150 (> 127)");

    let tensors = report["tensors"].as_array().expect("tensors");
    let tensor = |name: &str| {
        tensors
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let names = |v: &Value| -> Vec<String> { serde_json::from_value(v.clone()).expect("names") };
    assert_eq!(
        info.inputs
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>(),
        names(&report["inputs"])
    );
    assert_eq!(
        info.outputs
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>(),
        names(&report["outputs"])
    );
    for sig in info.inputs.iter().chain(&info.outputs) {
        let t = tensor(&sig.name);
        assert_eq!(sig.dtype, t["dtype"].as_str().expect("dtype"));
        let shape: Vec<i64> = serde_json::from_value(t["shape"].clone()).expect("shape");
        assert_eq!(sig.shape, shape.into_iter().map(Some).collect::<Vec<_>>());
    }

    // Every tensor the interpreter reports with scales is in `quantization`, exactly.
    let with_q: Vec<&Value> = tensors
        .iter()
        .filter(|t| !t["scale_bits"].as_array().expect("scales").is_empty())
        .collect();
    assert_eq!(
        info.quantization.len(),
        with_q.len(),
        "{:?}",
        info.quantization
    );
    assert_eq!(with_q.len(), 5);
    for (q, t) in info.quantization.iter().zip(with_q) {
        assert_eq!(q.tensor, t["name"].as_str().expect("name"));
        assert_eq!(q.source, "tensor");
        assert_eq!(q.dtype, t["dtype"].as_str().expect("dtype"));
        let bits: Vec<u32> = q.scale.iter().map(|s| s.to_bits()).collect();
        assert_eq!(serde_json::json!(bits), t["scale_bits"], "{}", q.tensor);
        assert_eq!(
            serde_json::json!(q.zero_point),
            t["zero_point"],
            "{}",
            q.tensor
        );
        let want_axis = (q.scale.len() > 1).then(|| t["quantized_dimension"].as_i64().expect("qd"));
        assert_eq!(q.axis, want_axis, "{}", q.tensor);
    }
    let w = info
        .quantization
        .iter()
        .find(|q| q.tensor == "fc/weights")
        .expect("weights");
    assert_eq!((w.scale.len(), w.axis), (3, Some(0)));

    let counts: Vec<(&str, u64)> = info
        .weight_dtypes
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        counts,
        vec![("int32", 1), ("int8", 1)],
        "weights = tensors with a non-empty buffer"
    );
    assert_eq!(info.precision, Precision::Int8);
}
