//! `edgecd keygen`, `bundle build|inspect|sign|verify` and `release create|verify` end to end,
//! through the real binary, on generated and real models, checked by outside verifiers.
mod common;

use common::{build_args, fails, json, ok, run_in};
use std::path::{Path, PathBuf};
use std::process::Command;

fn demo_model(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, edgecd_cli::demo_model::classifier_onnx(seed)).unwrap();
    p
}

#[test]
fn builds_are_bit_for_bit_reproducible_across_dirs_mtimes_umask_and_order() {
    let t = tempfile::tempdir().unwrap();
    let mut outputs = vec![];
    for (i, (umask, reverse)) in [("022", false), ("077", true)].iter().enumerate() {
        let dir = t.path().join(format!("copy{i}/deeper/dir"));
        std::fs::create_dir_all(&dir).unwrap();
        let a = demo_model(&dir, "a.onnx", 1);
        let b = dir.join("b.hef");
        std::fs::write(&b, b"opaque accelerator blob").unwrap();
        let st = dir.join("selftest.json");
        std::fs::write(&st, r#"{"cases":[{"name":"c1","model":"a.onnx","inputs":[{"name":"features","dtype":"float32","shape":[1,2],"data":[0.5,1.0]}],"outputs":[]}],"tolerance":{"abs":0.001,"rel":0.01}}"#).unwrap();
        // Different modification times for every input.
        let when = std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(1_000_000 * (i as u64 + 1));
        for p in [&a, &b, &st] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        let mut models = [
            a.to_str().unwrap().to_string(),
            b.to_str().unwrap().to_string(),
        ];
        if *reverse {
            models.reverse();
        }
        let out = dir.join("out");
        let script = format!(
            "umask {umask} && exec {} bundle build --model {} --model {} --name det --version 2.0.0 --board rpi5 --accelerator hailo-10h --runtime hailort@4.20.0 --min-ram-mb 2048 --selftest {} --label site=a --label fleet=b --out {}",
            env!("CARGO_BIN_EXE_edgecd"),
            models[0],
            models[1],
            dir.display(),
            out.display()
        );
        let o = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        outputs.push((
            std::fs::read(out.join("det-2.0.0.edgecd")).unwrap(),
            std::fs::read(out.join("det-2.0.0.cdx.json")).unwrap(),
        ));
    }
    assert!(outputs[0].0 == outputs[1].0, "bundles differ");
    assert!(outputs[0].1 == outputs[1].1, "SBOMs differ");
}

#[test]
fn keygen_sign_verify_and_failures_name_what_failed() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let k = json(d, &["keygen", "--out", "keys/release", "--json"]);
    assert!(k["keyId"].as_str().unwrap().ends_with('='));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(d.join("keys/release.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(d.join("keys/release.key"))
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert!(
        std::fs::read_to_string(d.join("keys/release.pub"))
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    fails(d, &["keygen", "--out", "keys/release"]); // never overwrites a key

    demo_model(d, "m.onnx", 3);
    ok(d, &build_args("m.onnx", "clf", "dist"));
    let bundle = "dist/clf-1.0.0.edgecd";
    let err = fails(
        d,
        &["bundle", "verify", bundle, "--key", "keys/release.pub"],
    );
    assert!(
        err.contains("clf-1.0.0.edgecd.sigstore.json"),
        "names the missing signature: {err}"
    );
    ok(d, &["bundle", "sign", bundle, "--key", "keys/release.key"]);
    let v = json(
        d,
        &[
            "bundle",
            "verify",
            bundle,
            "--key",
            "keys/release.pub",
            "--json",
        ],
    );
    assert_eq!(v["name"], "clf");

    // Another key: the error names both key ids.
    ok(d, &["keygen", "--out", "keys/other"]);
    let err = fails(d, &["bundle", "verify", bundle, "--key", "keys/other.pub"]);
    assert!(
        err.contains(k["keyId"].as_str().unwrap()),
        "names the signing key: {err}"
    );

    // A flipped byte in the model blob: the error names the blob.
    let mut bytes = std::fs::read(d.join(bundle)).unwrap();
    let n = bytes.len();
    bytes[n - 1024 - 700] ^= 1;
    std::fs::write(d.join("dist/bad.edgecd"), &bytes).unwrap();
    std::fs::copy(
        d.join("dist/clf-1.0.0.edgecd.sigstore.json"),
        d.join("dist/bad.edgecd.sigstore.json"),
    )
    .unwrap();
    let err = fails(
        d,
        &[
            "bundle",
            "verify",
            "dist/bad.edgecd",
            "--key",
            "keys/release.pub",
        ],
    );
    assert!(
        err.contains("blobs/sha256/") && err.contains("does not match"),
        "{err}"
    );

    // Malformed inputs get clear errors and non-zero exits.
    let err = fails(
        d,
        &[
            "bundle",
            "build",
            "--model",
            "nope.onnx",
            "--name",
            "x",
            "--version",
            "1.0.0",
            "--board",
            "rpi5",
            "--runtime",
            "r@1",
            "--out",
            "dist",
        ],
    );
    assert!(err.contains("nope.onnx"), "{err}");
    let err = fails(
        d,
        &[
            "bundle",
            "build",
            "--model",
            "m.onnx",
            "--name",
            "x",
            "--version",
            "one",
            "--board",
            "rpi5",
            "--runtime",
            "r@1",
            "--out",
            "dist",
        ],
    );
    assert!(err.contains("semantic versioning"), "{err}");
    let err = fails(
        d,
        &[
            "bundle",
            "build",
            "--model",
            "m.onnx",
            "--name",
            "x",
            "--version",
            "1.0.0",
            "--board",
            "rpi5",
            "--runtime",
            "r1",
            "--out",
            "dist",
        ],
    );
    assert!(err.contains("NAME@VERSION"), "{err}");
    std::fs::write(
        d.join("trunc.onnx"),
        &edgecd_cli::demo_model::classifier_onnx(1)[..100],
    )
    .unwrap();
    let err = fails(d, &build_args("trunc.onnx", "t", "dist"));
    assert!(err.contains("not a valid ONNX"), "{err}");
    assert!(
        !d.join("dist/t-1.0.0.edgecd").exists(),
        "no half-written bundle"
    );
    let leftovers: Vec<_> = std::fs::read_dir(d.join("dist"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files cleaned up");
}

#[test]
fn release_manifest_binds_bundle_image_and_sbom() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    ok(d, &["keygen", "--out", "k/ci"]);
    demo_model(d, "m.onnx", 4);
    ok(d, &build_args("m.onnx", "clf", "dist"));
    ok(
        d,
        &[
            "bundle",
            "sign",
            "dist/clf-1.0.0.edgecd",
            "--key",
            "k/ci.key",
        ],
    );
    let image = format!("ghcr.io/org/edge-infer@sha256:{}", "ab".repeat(32));
    let err = fails(
        d,
        &[
            "release",
            "create",
            "--bundle",
            "dist/clf-1.0.0.edgecd",
            "--image",
            "ghcr.io/org/edge-infer:latest",
            "--key",
            "k/ci.key",
            "--out",
            "release.json",
        ],
    );
    assert!(err.contains("pin it by digest"), "{err}");
    ok(
        d,
        &[
            "release",
            "create",
            "--bundle",
            "dist/clf-1.0.0.edgecd",
            "--image",
            &image,
            "--key",
            "k/ci.key",
            "--out",
            "release.json",
        ],
    );
    let v = json(
        d,
        &[
            "release",
            "verify",
            "release.json",
            "--key",
            "k/ci.pub",
            "--bundle",
            "dist/clf-1.0.0.edgecd",
            "--json",
        ],
    );
    assert_eq!(v["release"]["image"], image.as_str());
    assert_eq!(v["bundleSignatureChecked"], true);
    assert_eq!(v["imageSignatureChecked"], false);
    assert!(v["release"].get("imageSignature").is_none());

    // --sign-image signs the image by its digest with the release key; verify checks it.
    let err = fails(
        d,
        &[
            "release",
            "create",
            "--bundle",
            "dist/clf-1.0.0.edgecd",
            "--sign-image",
            "--key",
            "k/ci.key",
            "--out",
            "signed.json",
        ],
    );
    assert!(err.contains("--image"), "{err}");
    ok(
        d,
        &[
            "release",
            "create",
            "--bundle",
            "dist/clf-1.0.0.edgecd",
            "--image",
            &image,
            "--sign-image",
            "--key",
            "k/ci.key",
            "--out",
            "signed.json",
        ],
    );
    let v = json(
        d,
        &[
            "release",
            "verify",
            "signed.json",
            "--key",
            "k/ci.pub",
            "--json",
        ],
    );
    assert_eq!(v["imageSignatureChecked"], true);
    let sig = edgecd_sign::SigstoreBundle::from_json(
        v["release"]["imageSignature"].to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(
        sig.message_digest().unwrap(),
        [0xab; 32],
        "the signed digest is the image digest"
    );
    // The image signature does not verify with another key: the release is refused.
    ok(d, &["keygen", "--out", "k/other"]);
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("signed.json")).unwrap()).unwrap();
    let other = edgecd_sign::SigningKey::load(&d.join("k/other.key"), None).unwrap();
    m["imageSignature"] =
        serde_json::to_value(edgecd_sign::sign_digest(&other, &[0xab; 32])).unwrap();
    let ci = edgecd_sign::SigningKey::load(&d.join("k/ci.key"), None).unwrap();
    let bytes = serde_json::to_vec_pretty(&m).unwrap();
    std::fs::write(d.join("forged.json"), &bytes).unwrap();
    std::fs::write(
        d.join("forged.json.sigstore.json"),
        edgecd_sign::sign_artifact(&ci, &bytes).to_json_pretty(),
    )
    .unwrap();
    let err = fails(
        d,
        &["release", "verify", "forged.json", "--key", "k/ci.pub"],
    );
    assert!(err.contains("image signature"), "{err}");
    let inspect = json(d, &["bundle", "inspect", "dist/clf-1.0.0.edgecd", "--json"]);
    assert_eq!(v["release"]["bundle"]["digest"], inspect["digest"]);
    assert_eq!(v["release"]["sbom"]["digest"], inspect["sbom"]);
    assert_eq!(v["release"]["runtime"]["name"], "edgecd-infer");

    // Another bundle does not match the release.
    demo_model(d, "m2.onnx", 5);
    ok(d, &build_args("m2.onnx", "clf", "other"));
    let err = fails(
        d,
        &[
            "release",
            "verify",
            "release.json",
            "--key",
            "k/ci.pub",
            "--bundle",
            "other/clf-1.0.0.edgecd",
        ],
    );
    assert!(err.contains("does not match this bundle"), "{err}");
    // An edited release fails its signature.
    let edited = std::fs::read_to_string(d.join("release.json"))
        .unwrap()
        .replace("1.0.0", "9.0.0");
    std::fs::write(d.join("release.json"), edited).unwrap();
    let err = fails(
        d,
        &["release", "verify", "release.json", "--key", "k/ci.pub"],
    );
    assert!(
        err.contains("changed after signing") || err.contains("digest"),
        "{err}"
    );
}

#[test]
fn signature_verifies_with_sigstore_js_and_openssl() {
    let Some(node_modules) = edgecd_testkit::node_modules() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    ok(d, &["keygen", "--out", "k/ci"]);
    demo_model(d, "m.onnx", 6);
    ok(d, &build_args("m.onnx", "clf", "dist"));
    ok(
        d,
        &[
            "bundle",
            "sign",
            "dist/clf-1.0.0.edgecd",
            "--key",
            "k/ci.key",
        ],
    );
    let manifest = common::manifest_bytes(&d.join("dist/clf-1.0.0.edgecd"));
    std::fs::write(d.join("manifest.json"), &manifest).unwrap();
    let js = common::py_script("edgecd-sign", "x")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("js/verify.mjs");
    let node = |artifact: &str| {
        Command::new("node")
            .arg(&js)
            .arg(&node_modules)
            .arg(d.join("dist/clf-1.0.0.edgecd.sigstore.json"))
            .arg(d.join(artifact))
            .arg(d.join("k/ci.pub"))
            .output()
            .unwrap()
    };
    let o = node("manifest.json");
    assert!(
        o.status.success(),
        "@sigstore/verify rejected our bundle signature: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let mut changed = manifest.clone();
    changed[20] ^= 1;
    std::fs::write(d.join("changed.json"), &changed).unwrap();
    assert_eq!(
        node("changed.json").status.code(),
        Some(1),
        "@sigstore/verify must reject a changed manifest"
    );

    // openssl with the DER signature from the Sigstore bundle.
    let sig = edgecd_sign::SigstoreBundle::from_json(
        &std::fs::read(d.join("dist/clf-1.0.0.edgecd.sigstore.json")).unwrap(),
    )
    .unwrap();
    std::fs::write(d.join("sig.der"), sig.signature_der().unwrap()).unwrap();
    let openssl = |artifact: &str| {
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(d.join("k/ci.pub"))
            .arg("-signature")
            .arg(d.join("sig.der"))
            .arg(d.join(artifact))
            .output()
            .unwrap()
    };
    assert!(
        openssl("manifest.json").status.success(),
        "openssl rejected our signature"
    );
    assert!(
        !openssl("changed.json").status.success(),
        "openssl must reject a changed manifest"
    );
}

#[test]
fn sbom_passes_cyclonedx_strict_validation_with_model_hash() {
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    demo_model(d, "m.onnx", 7);
    std::fs::write(d.join("npu.hef"), b"compiled").unwrap();
    ok(
        d,
        &[
            "bundle",
            "build",
            "--model",
            "m.onnx",
            "--model",
            "npu.hef",
            "--name",
            "clf",
            "--version",
            "1.0.0",
            "--board",
            "rpi5",
            "--accelerator",
            "hailo-10h",
            "--runtime",
            "hailort@4.20.0",
            "--out",
            "dist",
        ],
    );
    let sbom_path = d.join("dist/clf-1.0.0.cdx.json");
    let o = Command::new(&python)
        .arg(common::py_script("edgecd-cli", "validate_sbom.py"))
        .arg(&sbom_path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sbom_path).unwrap()).unwrap();
    assert_eq!(sbom["specVersion"], "1.6");
    let model_sha = edgecd_bundle::digest::sha256_digest(&std::fs::read(d.join("m.onnx")).unwrap());
    let ml: Vec<&serde_json::Value> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "machine-learning-model")
        .collect();
    assert_eq!(ml.len(), 2);
    assert_eq!(ml[0]["name"], "m.onnx");
    assert_eq!(ml[0]["hashes"][0]["alg"], "SHA-256");
    assert_eq!(
        format!("sha256:{}", ml[0]["hashes"][0]["content"].as_str().unwrap()),
        model_sha
    );
    assert!(
        ml[0]["modelCard"]["modelParameters"]["inputs"][0]["format"]
            .as_str()
            .unwrap()
            .contains("features float32[1,16]")
    );
    // The same SBOM is inside the bundle.
    let inspect = json(d, &["bundle", "inspect", "dist/clf-1.0.0.edgecd", "--json"]);
    assert_eq!(
        inspect["sbom"].as_str().unwrap(),
        edgecd_bundle::digest::sha256_digest(&std::fs::read(&sbom_path).unwrap())
    );
    // A broken SBOM is caught by the validator (the check can fail).
    let mut broken = sbom.clone();
    broken["components"][0]["type"] = "not-a-type".into();
    std::fs::write(d.join("broken.json"), serde_json::to_vec(&broken).unwrap()).unwrap();
    let o = Command::new(&python)
        .arg(common::py_script("edgecd-cli", "validate_sbom.py"))
        .arg(d.join("broken.json"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "validator must reject an invalid SBOM");
}

#[test]
fn cosign_encrypted_key_made_by_python_signs_a_bundle() {
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let o = Command::new(&python)
        .arg(common::py_script("edgecd-sign", "make_cosign_key.py"))
        .arg(d.join("cosign"))
        .arg("s3cret")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::read_to_string(d.join("cosign.key"))
            .unwrap()
            .contains("ENCRYPTED SIGSTORE PRIVATE KEY")
    );
    demo_model(d, "m.onnx", 8);
    ok(d, &build_args("m.onnx", "clf", "dist"));
    let err = fails(
        d,
        &[
            "bundle",
            "sign",
            "dist/clf-1.0.0.edgecd",
            "--key",
            "cosign.key",
        ],
    );
    assert!(err.contains("COSIGN_PASSWORD"), "{err}");
    let o = common::edgecd()
        .current_dir(d)
        .args([
            "bundle",
            "sign",
            "dist/clf-1.0.0.edgecd",
            "--key",
            "cosign.key",
        ])
        .env("COSIGN_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("wrong password"));
    let o = common::edgecd()
        .current_dir(d)
        .args([
            "bundle",
            "sign",
            "dist/clf-1.0.0.edgecd",
            "--key",
            "cosign.key",
        ])
        .env("COSIGN_PASSWORD", "s3cret")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ok(
        d,
        &[
            "bundle",
            "verify",
            "dist/clf-1.0.0.edgecd",
            "--key",
            "cosign.pub",
        ],
    );
}

fn check_quant_against_onnx_report(python: &Path, model: &Path, inspected: &serde_json::Value) {
    let out = edgecd_testkit::run_py(
        python,
        &[
            common::py_script("edgecd-inspect", "onnx_report.py").as_os_str(),
            model.as_os_str(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let r = report.as_object().unwrap().values().next().unwrap();
    let want = r["quantization"].as_array().unwrap();
    let got = inspected["quantizedTensors"].as_array().unwrap();
    assert_eq!(
        got.len(),
        want.len(),
        "{}: quantized tensor count",
        model.display()
    );
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["tensor"], w["tensor"]);
        let bits: Vec<u32> = g["scale"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s.as_f64().unwrap() as f32).to_bits())
            .collect();
        assert_eq!(
            serde_json::json!(bits),
            w["scale_bits"],
            "{}: scale of {}",
            model.display(),
            g["tensor"]
        );
        assert_eq!(
            g["zero_point"],
            w["zero_point"],
            "{}: zero point of {}",
            model.display(),
            g["tensor"]
        );
    }
    assert_eq!(inspected["opset"], r["opset"]);
}

#[test]
fn real_models_build_inspect_and_verify() {
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    let Some(wheels) = edgecd_testkit::wheels_dir() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    ok(d, &["keygen", "--out", "k/ci"]);
    let mut models = edgecd_testkit::light_models(&python);
    assert!(models.len() >= 9, "the onnx wheel's light models");
    let ppocr = edgecd_testkit::ppocr_models(&python, &wheels, d);
    assert!(ppocr.len() >= 3, "PP-OCR models");
    models.extend(ppocr);
    let qdir = d.join("quant");
    std::fs::create_dir_all(&qdir).unwrap();
    let made = edgecd_testkit::run_py(
        &python,
        &[
            common::py_script("edgecd-inspect", "make_quant_onnx.py").as_os_str(),
            qdir.as_os_str(),
        ],
    );
    let quant: Vec<PathBuf> = made.lines().map(PathBuf::from).collect();
    assert!(quant.iter().any(|p| p.ends_with("qdq_s8.onnx")));
    models.extend(quant.clone());
    let tfl = d.join("quant/int8_fc.tflite");
    edgecd_testkit::run_py(
        &python,
        &[
            common::py_script("edgecd-inspect", "make_quant_tflite.py").as_os_str(),
            tfl.as_os_str(),
        ],
    );
    models.push(tfl.clone());

    for (i, m) in models.iter().enumerate() {
        let name = format!("m{i}");
        let out = format!("dist/{name}");
        ok(d, &build_args(m.to_str().unwrap(), &name, &out));
        let b = format!("{out}/{name}-1.0.0.edgecd");
        ok(d, &["bundle", "sign", &b, "--key", "k/ci.key"]);
        let v = json(d, &["bundle", "verify", &b, "--key", "k/ci.pub", "--json"]);
        let model = &v["models"][0];
        assert_eq!(
            model["size"].as_u64().unwrap(),
            std::fs::metadata(m).unwrap().len()
        );
        let want_format = if m.extension().unwrap() == "tflite" {
            "tflite"
        } else {
            "onnx"
        };
        assert_eq!(model["format"], want_format, "{}", m.display());
        assert!(
            !model["inputs"].as_array().unwrap().is_empty(),
            "{}: inputs read",
            m.display()
        );
        if want_format == "onnx" {
            check_quant_against_onnx_report(&python, m, model);
        }
        if quant.contains(m) && !m.ends_with("float.onnx") {
            assert!(
                !model["quantizedTensors"].as_array().unwrap().is_empty(),
                "{}: quantization found",
                m.display()
            );
            assert_ne!(model["precision"], "float32", "{}", m.display());
        }
    }

    // The TFLite model's parameters match LiteRT's interpreter.
    let out = edgecd_testkit::run_py(
        &python,
        &[
            common::py_script("edgecd-inspect", "make_quant_tflite.py").as_os_str(),
            "--report".as_ref(),
            tfl.as_os_str(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let v = json(
        d,
        &[
            "bundle",
            "inspect",
            &format!(
                "dist/m{}/m{}-1.0.0.edgecd",
                models.len() - 1,
                models.len() - 1
            ),
            "--json",
        ],
    );
    let got = v["models"][0]["quantizedTensors"].as_array().unwrap();
    let want: Vec<&serde_json::Value> = report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["scale_bits"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(got.len(), want.len());
    for w in want {
        let g = got
            .iter()
            .find(|g| g["tensor"] == w["name"])
            .unwrap_or_else(|| panic!("tensor {} missing", w["name"]));
        let bits: Vec<u32> = g["scale"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s.as_f64().unwrap() as f32).to_bits())
            .collect();
        assert_eq!(serde_json::json!(bits), w["scale_bits"]);
        assert_eq!(g["zero_point"], w["zero_point"]);
    }
    let _ = run_in(d, &["--version"]);
}

#[test]
fn selftest_auto_records_vectors_with_the_reference_runtime() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    demo_model(d, "m.onnx", 9);
    std::fs::write(d.join("npu.hef"), b"compiled for an accelerator").unwrap();
    let mut args = build_args("m.onnx", "clf", "dist");
    args.extend(["--model", "npu.hef", "--selftest", "auto"]);
    ok(d, &args);
    let v = json(d, &["bundle", "inspect", "dist/clf-1.0.0.edgecd", "--json"]);
    assert_eq!(
        v["selftestCases"], 2,
        "two cases for the ONNX model, none for the opaque one"
    );
    let s = edgecd_bundle::read_bundle(&d.join("dist/clf-1.0.0.edgecd"), &mut |_| {}).unwrap();
    let st = s.profile.selftest.unwrap();
    assert!(
        st.cases
            .iter()
            .all(|c| c.model == "m.onnx" && c.outputs[0].data.len() == 4)
    );
    // The recorded outputs are the model's: probabilities summing to 1.
    let sum: f64 = st.cases[0].outputs[0].data.iter().sum();
    assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    let err = fails(
        d,
        &[
            "bundle",
            "build",
            "--model",
            "npu.hef",
            "--name",
            "x",
            "--version",
            "1.0.0",
            "--board",
            "rpi5",
            "--runtime",
            "r@1",
            "--selftest",
            "auto",
            "--out",
            "dist",
        ],
    );
    assert!(err.contains("no ONNX or TFLite model"), "{err}");
}

/// Unpacks `bundle` into `target` as an agent installs it (the installed-slot layout).
fn install(bundle: &Path, target: &Path) {
    let key = edgecd_sign::SigningKey::generate();
    let sig = edgecd_sign::sign_artifact(&key, &common::manifest_bytes(bundle));
    edgecd_bundle::unpack_bundle(bundle, target, &key.verifying_key(), &sig, &mut |_| {})
        .expect("unpack");
}

#[test]
fn demo_write_model_gives_an_example_model_and_bundle_selftest_checks_an_installed_bundle() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // The example model: the demo's generated classifier, 0644, its seed picks the weights.
    let out = ok(
        d,
        &[
            "demo",
            "--write-model",
            "models/classifier.onnx",
            "--seed",
            "3",
        ],
    );
    assert!(out.contains("models/classifier.onnx"), "{out}");
    let model = d.join("models/classifier.onnx");
    assert_eq!(
        std::fs::read(&model).unwrap(),
        edgecd_cli::demo_model::classifier_onnx(3)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&model).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert!(
        fails(d, &["demo", "--seed", "3"]).contains("--write-model"),
        "--seed without --write-model is refused"
    );

    // Built with recorded vectors and installed: the self-test passes.
    let mut args = build_args("models/classifier.onnx", "clf", "dist");
    args.extend(["--selftest", "auto"]);
    ok(d, &args);
    install(&d.join("dist/clf-1.0.0.edgecd"), &d.join("slot"));
    let out = ok(d, &["bundle", "selftest", "slot"]);
    assert!(
        out.contains("self-test of clf@1.0.0: 2 of 2 cases passed"),
        "{out}"
    );
    let report = json(d, &["bundle", "selftest", "slot", "--json"]);
    assert_eq!(report["passed"], true, "{report}");

    // Other weights under the same name: the vectors catch it, exit 1, each case says why.
    std::fs::write(
        d.join("slot/models/classifier.onnx"),
        edgecd_cli::demo_model::classifier_onnx(4),
    )
    .unwrap();
    let o = run_in(d, &["bundle", "selftest", "slot"]);
    assert_eq!(o.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("FAIL") && stdout.contains("exceeds tolerance"),
        "{stdout}"
    );

    // A bundle without vectors: an error saying how to add them.
    ok(d, &build_args("models/classifier.onnx", "plain", "dist"));
    install(&d.join("dist/plain-1.0.0.edgecd"), &d.join("plain-slot"));
    let err = fails(d, &["bundle", "selftest", "plain-slot"]);
    assert!(
        err.contains("has no self-test vectors") && err.contains("--selftest auto"),
        "{err}"
    );
}

#[test]
fn tflite_refusals_name_the_operator_the_file_holds() {
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let script = common::py_script("edgecd-infer", "make_tflite.py");
    edgecd_testkit::run_py(&python, &[script.as_os_str(), d.as_os_str()]);
    // Operator codes as old converters wrote them: only `deprecated_builtin_code`.
    for (file, op) in [
        ("dequantize.tflite", "DEQUANTIZE"),
        ("prelu.tflite", "PRELU"),
    ] {
        let name = file.trim_end_matches(".tflite");
        let out = format!("dist-{name}");
        let mut args = build_args(file, name, &out);
        args.extend(["--selftest", "auto"]);
        let err = fails(d, &args);
        assert!(
            err.contains(&format!("unsupported operator {op}")),
            "{file}: {err}"
        );
        assert!(!err.contains("ADD"), "{file}: {err}");
        ok(d, &build_args(file, name, &out));
        let v = json(
            d,
            &[
                "bundle",
                "inspect",
                &format!("{out}/{name}-1.0.0.edgecd"),
                "--json",
            ],
        );
        assert_eq!(
            v["models"][0]["operators"],
            serde_json::json!([op]),
            "{file}"
        );
    }
}

/// A convolution over `x: [N, 3, height, width]` (3×3, no padding) written by the `onnx` package.
const SYMBOLIC_CONV_PY: &str = r#"
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "conv",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "height", "width"])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "out_height", "out_width"])], [w])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
m.ir_version = 8
onnx.checker.check_model(m)
onnx.save(m, sys.argv[1])
"#;

#[test]
fn selftest_auto_reports_symbolic_dimensions_instead_of_panicking() {
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let model = d.join("conv.onnx");
    edgecd_testkit::run_py(
        &python,
        &["-c".as_ref(), SYMBOLIC_CONV_PY.as_ref(), model.as_os_str()],
    );
    let mut args = build_args("conv.onnx", "conv", "dist");
    args.extend(["--selftest", "auto"]);
    let out = common::run_in(d, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status (101 is a panic): {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    for want in [
        "conv.onnx",
        "input \"x\"",
        "2 (\"height\")",
        "3 (\"width\")",
        "--selftest DIR",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    assert!(!d.join("dist/conv-1.0.0.edgecd").exists());
    // Without --selftest auto the model is bundled as usual.
    ok(d, &build_args("conv.onnx", "conv", "dist"));
}

/// `logits = x · W + b` (x: [1, 4]) saved with its weights in `ext.onnx.data` by the `onnx`
/// package (`save_as_external_data`).
const EXTERNAL_DATA_PY: &str = r#"
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
rng = np.random.default_rng(1)
w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W")
b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "B")
g = helper.make_graph(
    [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["logits"])],
    "ext", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])], [w, b])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
m.ir_version = 8
onnx.save(m, sys.argv[1], save_as_external_data=True, all_tensors_to_one_file=True,
          location="ext.onnx.data", size_threshold=0)
"#;

#[test]
fn onnx_external_data_is_bundled_with_its_model_or_refused() {
    let Some(python) = edgecd_testkit::python() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    edgecd_testkit::run_py(
        &python,
        &[
            "-c".as_ref(),
            EXTERNAL_DATA_PY.as_ref(),
            src.join("ext.onnx").as_os_str(),
        ],
    );
    let data = std::fs::read(src.join("ext.onnx.data")).unwrap();
    assert_eq!(
        data.len(),
        (12 + 3) * 4,
        "the weights are outside the .onnx file"
    );
    let data_digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))
    );

    // The data file comes along, whether or not it is named with --model; --selftest auto
    // runs the model with it.
    for (out, extra) in [("a", None), ("b", Some("src/ext.onnx.data"))] {
        let mut args = build_args("src/ext.onnx", "ext", out);
        if let Some(extra) = extra {
            args.extend(["--model", extra]);
        }
        args.extend(["--selftest", "auto"]);
        ok(d, &args);
        let s =
            edgecd_bundle::read_bundle(&d.join(out).join("ext-1.0.0.edgecd"), &mut |_| {}).unwrap();
        let files: Vec<(&str, &str)> = s
            .profile
            .models
            .iter()
            .map(|m| (m.filepath.as_str(), m.digest.as_str()))
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(files[0].0, "ext.onnx");
        assert_eq!(files[1], ("ext.onnx.data", data_digest.as_str()));
        assert_eq!(s.profile.selftest.unwrap().cases.len(), 2);
    }

    // Without its data file: refused, naming the file and what to do; nothing written.
    std::fs::remove_file(src.join("ext.onnx.data")).unwrap();
    let err = fails(d, &build_args("src/ext.onnx", "ext", "c"));
    for want in [
        "ext.onnx",
        "\"W\"",
        "ext.onnx.data",
        "does not exist",
        "save",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    assert!(!d.join("c/ext-1.0.0.edgecd").exists());
}
