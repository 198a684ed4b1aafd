//! `fuse::fuse_hard_swish` on the real PP-OCR models (rapidocr wheel): every `x * Clip(x + 3, 0,
//! 6) / 6` of the exported graphs becomes one `HardSwish` node and no clamp-to-6 is left. The
//! numbers are the Clip nodes of each ONNX file that are hard-swish activations.

use std::path::PathBuf;
use tract_onnx::prelude::*;

/// The PP-OCR models of the rapidocr wheel, unpacked in a temporary directory (None when the
/// wheel or Python is missing).
fn wheel_models() -> Option<(tempfile::TempDir, Vec<PathBuf>)> {
    let python = edgecd_testkit::python()?;
    let wheels = edgecd_testkit::wheels_dir()?;
    let dir = tempfile::tempdir().unwrap();
    let models = edgecd_testkit::ppocr_models(&python, &wheels, dir.path());
    Some((dir, models))
}

/// Nodes of `model` whose operator is `op`.
fn count_ops(model: &TypedModel, op: &str) -> usize {
    model.nodes().iter().filter(|n| n.op.name() == op).count()
}

/// The decluttered graph of the wheel's model `file` for an input of `shape`.
fn decluttered(models: &[PathBuf], file: &str, shape: [usize; 4]) -> TypedModel {
    let path = models
        .iter()
        .find(|p| p.file_name().is_some_and(|f| f == file))
        .unwrap_or_else(|| panic!("{file} not in the wheel"));
    tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_typed()
        .unwrap()
        .into_decluttered()
        .unwrap()
}

#[test]
fn ppocr_hard_swish_patterns_are_all_fused() {
    let Some((_dir, models)) = wheel_models() else {
        return;
    };
    let want = [
        ("ch_ppocr_mobile_v2.0_cls_infer.onnx", [1, 3, 48, 192], 18),
        ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 96, 96], 24),
        ("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 320], 28),
    ];
    for (file, shape, expected) in want {
        let mut typed = decluttered(&models, file, shape);
        let fused = edgecd_infer::fuse::fuse_hard_swish(&mut typed).unwrap();
        assert_eq!(fused, expected, "{file}");
        assert_eq!(count_ops(&typed, "HardSwish"), expected, "{file}");
        // A second pass finds nothing left to fuse.
        assert_eq!(
            edgecd_infer::fuse::fuse_hard_swish(&mut typed).unwrap(),
            0,
            "{file}"
        );
    }
}

/// `ops::use_edgecd_window_ops` and `conv::use_edgecd_conv` on the real PP-OCR models: every
/// depthwise convolution and max pool becomes edgecd's operator, so do the dense and 1×1
/// convolutions (with the batch norms and activations after them folded in), and the optimized
/// plans with and without them agree on a random input (on one and two threads).
#[test]
fn ppocr_edgecd_ops_replace_tracts_and_agree() {
    let Some((_dir, models)) = wheel_models() else {
        return;
    };
    // (file, input shape, depthwise convolutions, max pools, dense convolutions): the grouped
    // Conv and the MaxPool nodes of each ONNX file, and its other Conv nodes but those of the
    // squeeze-and-excite blocks (1×1 on a 1×1 image, which tract makes a vector product). rec
    // has 20 such Conv nodes; tract writes three of them, 1×1 on a one-row image, as products
    // without the row axis (`NIHW,OI->OW`), which stay tract's.
    let want = [
        (
            "ch_ppocr_mobile_v2.0_cls_infer.onnx",
            [1, 3, 48, 192],
            11,
            1,
            24,
        ),
        ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 96, 96], 14, 0, 28),
        ("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 320], 14, 0, 17),
    ];
    for (file, shape, depthwise, pools, dense) in want {
        let mut typed = decluttered(&models, file, shape);
        edgecd_infer::fuse::fuse_hard_swish(&mut typed).unwrap();
        let mut ours = typed.clone();
        let replaced = edgecd_infer::ops::use_edgecd_window_ops(&mut ours).unwrap();
        assert_eq!(
            count_ops(&ours, "EdgecdDepthwiseConv2d"),
            depthwise,
            "{file}"
        );
        assert_eq!(count_ops(&ours, "EdgecdMaxPool2d"), pools, "{file}");
        assert_eq!(replaced, depthwise + pools, "{file}");
        assert_eq!(
            edgecd_infer::ops::use_edgecd_window_ops(&mut ours).unwrap(),
            0,
            "{file}"
        );
        let convs = edgecd_infer::conv::use_edgecd_conv(&mut ours).unwrap();
        assert_eq!(convs, dense, "{file}");
        assert_eq!(count_ops(&ours, "EdgecdConv2d"), dense, "{file}");
        assert_eq!(count_ops(&ours, "Conv"), 0, "{file}");
        assert_eq!(
            edgecd_infer::conv::use_edgecd_conv(&mut ours).unwrap(),
            0,
            "{file}"
        );

        let n: usize = shape.iter().product();
        let input: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        let input = Tensor::from_shape(&shape, &input).unwrap();
        let theirs = typed.into_optimized().unwrap().into_runnable().unwrap();
        let ours = ours.into_optimized().unwrap().into_runnable().unwrap();
        let want = theirs.run(tvec![input.clone().into_tvalue()]).unwrap();
        for threads in [1, 2] {
            let got = tract_linalg::multithread::multithread_tract_scope(
                edgecd_infer::model::executor(threads),
                || ours.run(tvec![input.clone().into_tvalue()]).unwrap(),
            );
            for (g, w) in got.iter().zip(&want) {
                let g = g.to_plain_array_view::<f32>().unwrap();
                let w = w.to_plain_array_view::<f32>().unwrap();
                assert_eq!(g.shape(), w.shape(), "{file}");
                for (a, b) in g.iter().zip(w.iter()) {
                    assert!(
                        (a - b).abs() <= 1e-3 + 1e-3 * b.abs(),
                        "{file} t{threads}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
