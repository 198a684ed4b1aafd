//! ONNX inspection checked against an independent reader: `tests/py/onnx_report.py` (the `onnx`
//! Python package) on the `onnx` wheel's light models, the PP-OCR models from the rapidocr wheel
//! and int8 models quantized by onnxruntime (`tests/py/make_quant_onnx.py`).

mod common;

use std::path::{Path, PathBuf};

use edgecd_inspect::{ModelFormat, ModelInfo, Precision, TensorSignature, inspect_path};
use serde_json::{Value, json};

fn sig_json(s: &TensorSignature) -> Value {
    json!({ "name": s.name, "dtype": s.dtype, "shape": s.shape, "dim_names": s.dim_names })
}

/// ModelInfo in the shape `onnx_report.py` prints (scales as f32 bit patterns).
fn as_report(info: &ModelInfo) -> Value {
    json!({
        "producer": info.producer,
        "opset": info.opset,
        "inputs": info.inputs.iter().map(sig_json).collect::<Vec<_>>(),
        "outputs": info.outputs.iter().map(sig_json).collect::<Vec<_>>(),
        "operators": info.operators,
        "weight_dtypes": info.weight_dtypes,
        "quantization": info.quantization.iter().map(|q| json!({
            "tensor": q.tensor,
            "source": q.source,
            "scale_bits": q.scale.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
            "zero_point": q.zero_point,
            "dtype": q.dtype,
            "axis": q.axis,
        })).collect::<Vec<_>>(),
    })
}

/// Inspects every model and compares with the Python report, field by field.
fn compare_with_reference(python: &Path, models: &[PathBuf]) -> Vec<ModelInfo> {
    let mut args: Vec<&std::ffi::OsStr> =
        vec![common::script("onnx_report.py").into_os_string().leak()];
    args.extend(models.iter().map(|p| p.as_os_str()));
    let reports: Value = serde_json::from_str(&common::run_py(python, &args)).expect("report JSON");
    let mut infos = Vec::new();
    for m in models {
        let info = inspect_path(m).unwrap_or_else(|e| panic!("inspect {}: {e}", m.display()));
        assert_eq!(info.format, ModelFormat::Onnx, "{}", m.display());
        let want = &reports[m.to_str().expect("utf-8 path")];
        assert!(want.is_object(), "no reference report for {}", m.display());
        let got = as_report(&info);
        for field in [
            "producer",
            "opset",
            "inputs",
            "outputs",
            "operators",
            "weight_dtypes",
            "quantization",
        ] {
            assert_eq!(
                got[field],
                want[field],
                "{}: field {field} differs from the onnx package",
                m.display()
            );
        }
        infos.push(info);
    }
    infos
}

#[test]
fn light_and_ppocr_models_match_onnx_package() {
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    let light = common::light_models(&python);
    assert!(
        light.len() >= 9,
        "expected the 9 light models, found {light:?}"
    );
    let mut models = light.clone();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ppocr = match edgecd_testkit::wheels_dir() {
        Some(w) => common::ppocr_models(&python, &w, tmp.path()),
        None => vec![],
    };
    if edgecd_testkit::wheels_dir().is_some() {
        assert!(
            ppocr.len() >= 3,
            "expected the PP-OCR cls/det/rec models, found {ppocr:?}"
        );
    }
    models.extend(ppocr.iter().cloned());
    let infos = compare_with_reference(&python, &models);
    for (m, info) in models.iter().zip(&infos) {
        assert!(
            !info.operators.is_empty() && !info.inputs.is_empty() && !info.outputs.is_empty(),
            "{}",
            m.display()
        );
        assert_eq!(
            info.precision,
            Precision::Float32,
            "{}: all these models hold float32 weights",
            m.display()
        );
        assert!(info.quantization.is_empty(), "{}", m.display());
    }
    // Spot checks that do not depend on the reference script.
    let squeeze = light
        .iter()
        .position(|p| p.ends_with("light_squeezenet.onnx"))
        .expect("squeezenet");
    let info = &infos[squeeze];
    assert!(
        info.operators.contains(&"Conv".to_string())
            && info.operators.contains(&"Concat".to_string())
    );
    assert_eq!(info.inputs[0].dtype, "float32");
    assert_eq!(info.inputs[0].shape.len(), 4);
}

#[test]
fn quantized_models_match_onnx_package() {
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = common::run_py(
        &python,
        &[
            common::script("make_quant_onnx.py").as_os_str(),
            tmp.path().as_os_str(),
        ],
    );
    let models: Vec<PathBuf> = out.lines().map(PathBuf::from).collect();
    assert_eq!(models.len(), 4, "{out}");
    let infos = compare_with_reference(&python, &models);
    let by_name = |n: &str| &infos[models.iter().position(|p| p.ends_with(n)).expect(n)];

    let float = by_name("float.onnx");
    assert_eq!(float.precision, Precision::Float32);
    assert!(float.quantization.is_empty());
    assert_eq!(
        float.inputs[0].shape,
        vec![None, Some(3), Some(16), Some(16)]
    );
    assert_eq!(float.inputs[0].dim_names, vec!["batch", "", "", ""]);

    for name in ["qdq_s8.onnx", "qdq_u8_perchannel.onnx", "qop_u8.onnx"] {
        let info = by_name(name);
        assert_eq!(info.precision, Precision::Int8, "{name}: weights are int8");
        assert!(!info.quantization.is_empty(), "{name}");
        for q in &info.quantization {
            assert!(
                !q.scale.is_empty() && q.scale.iter().all(|s| *s > 0.0),
                "{name}: {q:?}"
            );
            assert_eq!(q.zero_point.len(), q.scale.len(), "{name}: {q:?}");
        }
    }
    let s8 = by_name("qdq_s8.onnx");
    let w = s8
        .quantization
        .iter()
        .find(|q| q.tensor == "w_quantized")
        .expect("conv weight DQ");
    assert_eq!(
        (w.source.as_str(), w.dtype.as_str(), w.axis, w.scale.len()),
        ("DequantizeLinear", "int8", None, 1)
    );
    assert!(
        s8.quantization
            .iter()
            .any(|q| q.source == "QuantizeLinear" && q.dtype == "int8")
    );

    let pc = by_name("qdq_u8_perchannel.onnx");
    let w = pc
        .quantization
        .iter()
        .find(|q| q.tensor == "w_quantized")
        .expect("conv weight DQ");
    assert_eq!(
        (w.dtype.as_str(), w.axis, w.scale.len()),
        ("int8", Some(0), 8)
    );
    assert!(pc.quantization.iter().any(|q| q.dtype == "uint8"));

    let qop = by_name("qop_u8.onnx");
    assert!(qop.operators.contains(&"QLinearConv".to_string()));
    assert!(
        qop.operators
            .contains(&"com.microsoft:QLinearAdd".to_string())
    );
    let conv: Vec<_> = qop
        .quantization
        .iter()
        .filter(|q| q.source == "QLinearConv")
        .collect();
    assert_eq!(
        conv.len(),
        3,
        "QLinearConv has x, w and y parameters: {conv:?}"
    );
    assert_eq!(conv[1].tensor, "w_quantized");
    assert_eq!(conv[1].dtype, "int8");
    assert_eq!(conv[0].dtype, "uint8");
}
