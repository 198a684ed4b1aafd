//! The prost ONNX structs encode models that the `onnx` package accepts (checker, reference
//! report) and that `inspect_path` reads back with every scale and zero point.

mod common;

use edgecd_inspect::{ModelFormat, Precision, QuantParam, inspect_path};
use prost::Message;

#[test]
fn encoded_demo_model_inspects_and_passes_onnx_checker() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("demo.onnx");
    std::fs::write(&path, common::demo_qdq_model().encode_to_vec()).expect("write model");

    let info = inspect_path(&path).expect("inspect demo model");
    assert_eq!(info.format, ModelFormat::Onnx);
    assert_eq!(info.producer.as_deref(), Some("edgecd-test 1"));
    assert_eq!(info.opset, Some(13));
    assert_eq!(
        info.operators,
        [
            "Constant",
            "DequantizeLinear",
            "Flatten",
            "MatMul",
            "QuantizeLinear"
        ]
    );
    assert_eq!(info.inputs[0].shape, vec![None, Some(4)]);
    assert_eq!(info.inputs[0].dim_names, vec!["n", ""]);
    assert_eq!(info.outputs[0].shape, vec![Some(1), None]);
    let counts: Vec<(&str, u64)> = info
        .weight_dtypes
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(counts, vec![("float32", 2), ("int8", 2), ("uint8", 1)]);
    assert_eq!(info.precision, Precision::Int8);
    let x = |source: &str, tensor: &str| QuantParam {
        tensor: tensor.into(),
        source: source.into(),
        scale: vec![0.5],
        zero_point: vec![3],
        dtype: "uint8".into(),
        axis: None,
    };
    assert_eq!(
        info.quantization,
        vec![
            x("QuantizeLinear", "xq"),
            x("DequantizeLinear", "xq"),
            QuantParam {
                tensor: "w".into(),
                source: "DequantizeLinear".into(),
                scale: vec![0.25, 0.125],
                zero_point: vec![-1, 2],
                dtype: "int8".into(),
                axis: Some(1),
            },
        ]
    );

    // The same file through the onnx package: the checker accepts it, and its report agrees.
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    common::run_py(
        &python,
        &[
            "-c".as_ref(),
            "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)"
                .as_ref(),
            path.as_os_str(),
        ],
    );
    let out = common::run_py(
        &python,
        &[
            common::script("onnx_report.py").as_os_str(),
            path.as_os_str(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect("report JSON");
    let want = &report[path.to_str().expect("utf-8 path")];
    assert_eq!(want["opset"], 13);
    assert_eq!(
        want["weight_dtypes"],
        serde_json::json!({"float32": 2, "int8": 2, "uint8": 1})
    );
    let q = want["quantization"].as_array().expect("quantization list");
    assert_eq!(q.len(), 3);
    for (got, want) in info.quantization.iter().zip(q) {
        let bits: Vec<u32> = got.scale.iter().map(|s| s.to_bits()).collect();
        assert_eq!(serde_json::json!(bits), want["scale_bits"]);
        assert_eq!(serde_json::json!(got.zero_point), want["zero_point"]);
        assert_eq!(serde_json::json!(got.axis), want["axis"]);
        assert_eq!(got.dtype, want["dtype"].as_str().expect("dtype"));
    }
}
