//! An int8 quantize/dequantize-wrapped Softmax against onnxruntime (`tests/py/make_qdq_softmax.py`
//! writes the models and onnxruntime's outputs): tract alone folds the chain into a lookup
//! table and answers wrong; edgecd-infer must match.

mod common;

use common::tensor_values as values;
use edgecd_infer::Model;
use edgecd_infer::npy::read_npy;
use std::path::Path;
use tract_onnx::prelude::Tensor;

fn npy(dir: &Path, name: &str) -> Tensor {
    read_npy(&std::fs::read(dir.join(name)).unwrap()).unwrap()
}

#[test]
fn quantized_softmax_matches_onnxruntime() {
    let Some(dir) = common::py_outputs("make_qdq_softmax.py") else {
        return;
    };
    let x = npy(dir.path(), "qdq_softmax.in.npy");
    for (name, tolerance) in [
        // One output quantization step (1/256): a float summation order may move a value
        // across a rounding boundary.
        ("qdq_softmax", 1.0 / 256.0 + 1e-6),
        ("float_softmax", 1e-5),
    ] {
        let file = format!("{name}.onnx");
        let model = Model::load(&dir.path().join(&file), &file).unwrap();
        let got = model.run(vec![x.clone()], 1).unwrap();
        let want = npy(dir.path(), &format!("{name}.out.npy"));
        assert_eq!(got[0].shape(), want.shape(), "{name}");
        let (got, want) = (values(&got[0]), values(&want));
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0f64, f64::max);
        assert!(
            worst <= tolerance,
            "{name}: max |edgecd-infer - onnxruntime| = {worst}\n got {got:?}\nwant {want:?}"
        );
        // Each row is a distribution (up to the output quantization).
        for row in got.chunks(10) {
            let sum: f64 = row.iter().sum();
            assert!((sum - 1.0).abs() < 0.03, "{name}: row sums to {sum}");
        }
    }
}
