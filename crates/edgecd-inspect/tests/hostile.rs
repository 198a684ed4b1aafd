//! Hostile input: truncated, bit-flipped and random files must give `Malformed` or `Opaque`,
//! never a panic. Uses the prost-encoded demo model (no Python needed) and, when the test venv
//! is there, the generated quantized TFLite model.

mod common;

use bytes::Bytes;
use edgecd_inspect::{InspectError, ModelFormat, inspect_bytes, inspect_path};
use proptest::prelude::*;
use prost::Message;

fn onnx_bytes() -> Vec<u8> {
    common::demo_qdq_model().encode_to_vec()
}

/// A minimal valid TFLite model built in Rust when Python is absent: a root `Model` table with
/// only `version` set, then identifier `TFL3`.
fn tiny_tflite() -> Vec<u8> {
    let mut b = flatbuffers::FlatBufferBuilder::new();
    let start = b.start_table();
    b.push_slot::<u32>(4, 3, 0);
    let root = b.end_table(start);
    b.finish(root, Some("TFL3"));
    b.finished_data().to_vec()
}

fn tflite_bytes() -> Vec<u8> {
    let Some(python) = edgecd_testkit::python() else {
        return tiny_tflite();
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q.tflite");
    common::run_py(
        &python,
        &[
            common::script("make_quant_tflite.py").as_os_str(),
            path.as_os_str(),
        ],
    );
    std::fs::read(path).expect("read tflite")
}

fn check(name: &str, data: &[u8]) -> Result<ModelFormat, String> {
    match inspect_bytes(name, Bytes::copy_from_slice(data)) {
        Ok(info) => Ok(info.format),
        Err(InspectError::Malformed { path, reason, .. }) => {
            assert_eq!(path, name, "the error names the file");
            assert!(!reason.is_empty());
            Err(reason)
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

#[test]
fn tiny_tflite_without_subgraph_is_malformed() {
    let err = check("tiny.tflite", &tiny_tflite()).expect_err("no subgraph");
    assert!(err.contains("subgraph"), "{err}");
}

#[test]
fn every_truncation_of_a_tflite_model_is_handled() {
    let full = tflite_bytes();
    if full != tiny_tflite() {
        assert_eq!(check("m.tflite", &full), Ok(ModelFormat::Tflite));
    }
    let mut malformed = 0;
    for len in 0..full.len() {
        match check("m.tflite", &full[..len]) {
            Ok(ModelFormat::Tflite) => {}
            Err(_) => malformed += 1,
            other => panic!("prefix of {len} bytes: {other:?}"),
        }
        // Without the extension a prefix too short for the identifier is opaque.
        match check("m.bin", &full[..len]) {
            Ok(ModelFormat::Opaque) if len < 8 => {}
            Ok(ModelFormat::Tflite) | Err(_) if len >= 8 => {}
            other => panic!("prefix of {len} bytes without extension: {other:?}"),
        }
    }
    // Cutting a flatbuffer almost always cuts something the root refers to.
    assert!(
        malformed * 10 >= full.len() * 9,
        "{malformed} of {} prefixes malformed",
        full.len()
    );
}

#[test]
fn every_truncation_of_an_onnx_model_is_handled() {
    let full = onnx_bytes();
    assert_eq!(check("m.onnx", &full), Ok(ModelFormat::Onnx));
    let mut malformed = 0;
    for len in 0..full.len() {
        match check("m.onnx", &full[..len]) {
            Ok(ModelFormat::Onnx) => {}
            Err(_) => malformed += 1,
            other => panic!("prefix of {len} bytes: {other:?}"),
        }
        // Without the extension hint a broken prefix is opaque or ONNX, never an error.
        match check("m.bin", &full[..len]) {
            Ok(_) => {}
            Err(e) => panic!("prefix of {len} bytes without hint: {e}"),
        }
    }
    assert!(
        malformed > full.len() / 2,
        "{malformed} of {} prefixes malformed",
        full.len()
    );
}

#[test]
fn truncated_files_through_inspect_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let onnx = onnx_bytes();
    let p = tmp.path().join("cut.onnx");
    std::fs::write(&p, &onnx[..onnx.len() / 2]).expect("write");
    let e = inspect_path(&p).expect_err("half an ONNX file");
    assert!(
        matches!(e, InspectError::Malformed { format: "ONNX", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("cut.onnx"), "{e}");

    let tfl = tflite_bytes();
    let p = tmp.path().join("cut.tflite");
    std::fs::write(&p, &tfl[..tfl.len() / 2]).expect("write");
    let e = inspect_path(&p).expect_err("half a TFLite file");
    assert!(
        matches!(
            e,
            InspectError::Malformed {
                format: "TFLite",
                ..
            }
        ),
        "{e}"
    );

    let p = tmp.path().join("model.hef");
    std::fs::write(&p, b"\x01\x02HAILO compiled network").expect("write");
    assert_eq!(
        inspect_path(&p).expect("opaque").format,
        ModelFormat::Opaque
    );
    let p = tmp.path().join("empty.hef");
    std::fs::write(&p, b"").expect("write");
    assert_eq!(
        inspect_path(&p).expect("opaque").format,
        ModelFormat::Opaque
    );

    let e = inspect_path(&tmp.path().join("missing.onnx")).expect_err("missing file");
    assert!(
        matches!(e, InspectError::Io { .. }) && e.to_string().contains("missing.onnx"),
        "{e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), hint in any::<bool>()) {
        let r = check(if hint { "random.onnx" } else { "random.bin" }, &data);
        if !hint && data.get(4..8) != Some(b"TFL3") {
            prop_assert!(r.is_ok(), "{r:?}");
        }
        let mut tfl = data.clone();
        if tfl.len() >= 8 {
            tfl[4..8].copy_from_slice(b"TFL3");
            let _ = check("random.tflite", &tfl);
        }
    }

    #[test]
    fn corrupted_models_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        for (bytes, name) in [(onnx_bytes(), "corrupt.onnx"), (tiny_tflite(), "corrupt.tflite")] {
            let mut data = bytes;
            for (i, v) in &flips {
                let i = i.index(data.len());
                data[i] ^= v | 1;
            }
            let _ = check(name, &data);
        }
    }
}

#[test]
fn corrupted_generated_tflite_never_panics() {
    let full = tflite_bytes();
    // Deterministic sweep: flip each byte of the model in turn.
    for i in 0..full.len() {
        let mut data = full.clone();
        data[i] ^= 0xa5;
        let _ = check("flip.tflite", &data);
    }
}
