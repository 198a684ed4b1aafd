//! TFLite through tract-tflite: a model it supports runs (checked against LiteRT by the script
//! that writes it), and ones with an operator it lacks (QUANTIZE; DEQUANTIZE and PRELU with
//! old-style operator codes) fail naming the operator.

mod common;

use edgecd_infer::{InferError, Model};
use tract_onnx::prelude::Tensor;

#[test]
fn tflite_runs_supported_and_names_unsupported_operators() {
    let Some(dir) = common::py_outputs("make_tflite.py") else {
        return;
    };

    let add = Model::load(&dir.path().join("add.tflite"), "add.tflite").unwrap();
    assert_eq!(add.inputs()[0].shape, vec![Some(1), Some(4)]);
    let x = Tensor::from_shape(&[1, 4], &[0.5f32, -1.0, 2.0, 0.0]).unwrap();
    let y = add.run(vec![x], 1).unwrap();
    let got: Vec<f32> = y[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert_eq!(got, vec![1.5, 1.0, 5.0, 4.0]);

    let err = Model::load(&dir.path().join("quantize.tflite"), "quantize.tflite").unwrap_err();
    match &err {
        InferError::UnsupportedOperator { operator, .. } => {
            assert!(operator.contains("QUANTIZE"), "{err}")
        }
        other => panic!("expected an unsupported-operator error, got {other}"),
    }

    // Operator codes with only `deprecated_builtin_code` set (`builtin_code` reads as 0 = ADD):
    // the refusal names the operator the file holds.
    for (file, op) in [
        ("dequantize.tflite", "DEQUANTIZE"),
        ("prelu.tflite", "PRELU"),
    ] {
        let err = Model::load(&dir.path().join(file), file).unwrap_err();
        match &err {
            InferError::UnsupportedOperator { operator, .. } => {
                assert_eq!(operator, op, "{err}")
            }
            other => panic!("{file}: expected an unsupported-operator error, got {other}"),
        }
    }
}
