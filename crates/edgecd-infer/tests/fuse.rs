//! `fuse::fuse_hard_swish` on the real PP-OCR models (rapidocr wheel): every `x * Clip(x + 3, 0,
//! 6) / 6` of the exported graphs becomes one `HardSwish` node and no clamp-to-6 is left. The
//! numbers are the Clip nodes of each ONNX file that are hard-swish activations.

use tract_onnx::prelude::*;

#[test]
fn ppocr_hard_swish_patterns_are_all_fused() {
    let (Some(python), Some(wheels)) = (edgecd_testkit::python(), edgecd_testkit::wheels_dir())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let models = edgecd_testkit::ppocr_models(&python, &wheels, dir.path());
    let want = [
        ("ch_ppocr_mobile_v2.0_cls_infer.onnx", [1, 3, 48, 192], 18),
        ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 96, 96], 24),
        ("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 320], 28),
    ];
    for (file, shape, expected) in want {
        let path = models
            .iter()
            .find(|p| p.file_name().is_some_and(|f| f == file))
            .unwrap_or_else(|| panic!("{file} not in the wheel"));
        let mut typed = tract_onnx::onnx()
            .model_for_path(path)
            .unwrap()
            .with_input_fact(0, f32::fact(shape).into())
            .unwrap()
            .into_typed()
            .unwrap()
            .into_decluttered()
            .unwrap();
        let fused = edgecd_infer::fuse::fuse_hard_swish(&mut typed).unwrap();
        assert_eq!(fused, expected, "{file}");
        let names: Vec<String> = typed
            .nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .collect();
        assert_eq!(
            names.iter().filter(|n| *n == "HardSwish").count(),
            expected,
            "{file}"
        );
        // A second pass finds nothing left to fuse.
        assert_eq!(
            edgecd_infer::fuse::fuse_hard_swish(&mut typed).unwrap(),
            0,
            "{file}"
        );
    }
}
