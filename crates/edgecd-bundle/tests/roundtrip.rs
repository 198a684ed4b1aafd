//! Build → read → verify → unpack, and tamper detection over every byte of a bundle.
mod common;

use edgecd_api::layout;
use edgecd_bundle::{BundleError, read_bundle, unpack_bundle, verify_bundle};

#[test]
fn build_verify_unpack_round_trip() {
    let f = common::fixture();
    let v = verify_bundle(&f.bundle.path, &f.key.verifying_key(), &f.sig, &mut |_| {})
        .expect("verifies");
    assert_eq!(v.digest, f.bundle.digest);
    assert_eq!(v.profile.models.len(), 2);
    assert_eq!(v.profile.models[0].filepath, "det.hef");
    assert_eq!(
        v.archive_size,
        std::fs::metadata(&f.bundle.path).unwrap().len()
    );
    assert_eq!(
        v.signed_by.as_deref(),
        Some(f.key.verifying_key().hint().as_str())
    );

    let target = f.dir.path().join("slot-a");
    let u = unpack_bundle(
        &f.bundle.path,
        &target,
        &f.key.verifying_key(),
        &f.sig,
        &mut |_| {},
    )
    .expect("unpacks");
    assert_eq!(u.digest, f.bundle.digest);
    assert_eq!(
        std::fs::read(target.join("models/det.hef")).unwrap(),
        common::bytes(3000, 1)
    );
    assert_eq!(
        std::fs::read(target.join("models/rec.hef")).unwrap(),
        common::bytes(700, 2)
    );
    for f in [
        layout::MANIFEST_FILE,
        layout::CONFIG_FILE,
        layout::PROFILE_FILE,
        layout::SBOM_FILE,
    ] {
        assert!(target.join(f).is_file(), "{f} unpacked");
    }
    let profile: edgecd_api::profile::Profile =
        serde_json::from_slice(&std::fs::read(target.join(layout::PROFILE_FILE)).unwrap()).unwrap();
    assert_eq!(profile, u.profile);
    // Unpacking again into a non-empty directory is refused.
    let err = unpack_bundle(
        &f.bundle.path,
        &target,
        &f.key.verifying_key(),
        &f.sig,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::TargetNotEmpty(_)), "{err}");
}

#[test]
fn every_changed_byte_is_detected() {
    let f = common::fixture();
    let original = std::fs::read(&f.bundle.path).unwrap();
    let key = f.key.verifying_key();
    let path = f.dir.path().join("flipped.edgecd");
    for pos in 0..original.len() {
        let mut b = original.clone();
        b[pos] ^= 0x01;
        std::fs::write(&path, &b).unwrap();
        assert!(
            verify_bundle(&path, &key, &f.sig, &mut |_| {}).is_err(),
            "flipping byte {pos} of {} went unnoticed",
            original.len()
        );
    }
    // Appending or truncating is detected too.
    let mut longer = original.clone();
    longer.extend_from_slice(&[0u8; 512]);
    std::fs::write(&path, &longer).unwrap();
    assert!(matches!(
        verify_bundle(&path, &key, &f.sig, &mut |_| {}),
        Err(BundleError::TrailingData { .. })
    ));
    std::fs::write(&path, &original[..original.len() - 512]).unwrap();
    assert!(verify_bundle(&path, &key, &f.sig, &mut |_| {}).is_err());
}

#[test]
fn wrong_key_and_changed_signature_are_refused() {
    let f = common::fixture();
    let other = edgecd_sign::SigningKey::generate();
    let err =
        verify_bundle(&f.bundle.path, &other.verifying_key(), &f.sig, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BundleError::Signature(_)), "{msg}");
    assert!(
        msg.contains(&other.verifying_key().hint()) && msg.contains(&f.key.verifying_key().hint()),
        "names both keys: {msg}"
    );

    let json = f.sig.to_json_pretty();
    let mut changed = 0;
    for (i, c) in json.char_indices() {
        // Flip characters inside the base64 signature and digest values.
        if !c.is_ascii_alphanumeric() {
            continue;
        }
        let mut s = json.clone();
        let repl = if c == 'A' { "B" } else { "A" };
        s.replace_range(i..i + 1, repl);
        let Ok(sig) = edgecd_sign::SigstoreBundle::from_json(s.as_bytes()) else {
            continue;
        };
        if sig.message_digest().ok() == f.sig.message_digest().ok()
            && sig.signature_der().ok() == f.sig.signature_der().ok()
        {
            continue; // same bytes after base64 decoding (padding bits): not a change
        }
        let r = verify_bundle(&f.bundle.path, &f.key.verifying_key(), &sig, &mut |_| {});
        if sig.message_digest().is_ok()
            && sig.key_hint() == f.sig.key_hint()
            && sig.signature_der().is_ok()
        {
            assert!(
                r.is_err(),
                "changed signature file at char {i} still verifies"
            );
            changed += 1;
        }
    }
    assert!(changed > 50, "exercised {changed} signature changes");
}

#[test]
fn unsigned_read_checks_digests_but_reports_no_signer() {
    let f = common::fixture();
    let s = read_bundle(&f.bundle.path, &mut |_| {}).unwrap();
    assert_eq!(s.signed_by, None);
    assert_eq!(s.digest, f.bundle.digest);
}

#[test]
fn progress_reports_every_byte() {
    let f = common::fixture();
    let mut seen = 0u64;
    read_bundle(&f.bundle.path, &mut |n| seen += n).unwrap();
    assert_eq!(
        seen + 1024,
        std::fs::metadata(&f.bundle.path).unwrap().len(),
        "all entries reported (the trailer is not an entry)"
    );
}

#[test]
fn large_models_stream_through_every_pipeline_chunk() {
    // More chunks than the copy pipeline holds, and a ragged tail.
    let dir = tempfile::tempdir().unwrap();
    let len = 9 * (1 << 20) + 123;
    let m = common::opaque_model(dir.path(), "big.hef", len, 42);
    let small = common::opaque_model(dir.path(), "a-small.hef", 10, 43);
    let built = common::build(&dir.path().join("out"), vec![m.clone(), small]);
    let key = edgecd_sign::SigningKey::generate();
    let manifest = read_bundle(&built.path, &mut |_| {})
        .unwrap()
        .manifest_bytes;
    let sig = edgecd_sign::sign_artifact(&key, &manifest);
    let target = dir.path().join("slot");
    unpack_bundle(
        &built.path,
        &target,
        &key.verifying_key(),
        &sig,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        std::fs::read(target.join("models/big.hef")).unwrap() == std::fs::read(&m).unwrap(),
        "unpacked model equals the input"
    );
}

#[test]
fn provenance_is_signed_in_the_manifest_and_bound_by_the_release() {
    use edgecd_bundle::provenance::{GitSource, Provenance, TrackedFile, TrainingRun};
    use edgecd_bundle::release::ReleaseManifest;
    let dir = tempfile::tempdir().unwrap();
    let m = common::opaque_model(dir.path(), "det.hef", 500, 9);
    let provenance = Provenance {
        git: Some(GitSource {
            commit: "c".repeat(40),
            dirty: false,
        }),
        training_run: Some(TrainingRun {
            system: "dvc".into(),
            id: "train".into(),
            name: None,
            experiment: None,
            model_uri: None,
            command: Some("python train.py".into()),
            params: [("lr".to_string(), "0.1".to_string())].into(),
            metrics: Default::default(),
        }),
        datasets: vec![TrackedFile {
            path: "data/train".into(),
            origin: "dvc".into(),
            hash: format!("md5:{}.dir", "d".repeat(32)),
            size: Some(10),
            nfiles: Some(2),
            uri: None,
        }],
        models: vec![],
    };
    let build = |out: &str, p: Option<Provenance>| {
        let mut meta = common::meta("detector", "1.2.3");
        meta.provenance = p;
        edgecd_bundle::build_bundle(
            &edgecd_bundle::BuildSpec {
                meta,
                models: vec![m.clone()],
            },
            &dir.path().join(out),
            &mut |_| {},
        )
        .expect("build")
    };
    let plain = build("plain", None);
    let with = build("with", Some(provenance.clone()));
    // The provenance changes the manifest, so the signature covers it.
    assert_ne!(plain.digest, with.digest);
    let key = edgecd_sign::SigningKey::generate();
    let s = edgecd_bundle::read_bundle(&with.path, &mut |_| {}).unwrap();
    let sig = edgecd_sign::sign_artifact(&key, &s.manifest_bytes);
    let v = edgecd_bundle::verify_bundle(&with.path, &key.verifying_key(), &sig, &mut |_| {})
        .expect("verifies");
    assert_eq!(
        Provenance::from_annotations(&v.manifest.annotations).unwrap(),
        Some(provenance.clone())
    );
    // A directory hash has no CycloneDX MD5: it stays a property.
    let sbom: serde_json::Value = serde_json::from_slice(s.sbom.as_ref().unwrap()).unwrap();
    let data = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "data")
        .expect("data component");
    assert!(data.get("hashes").is_none(), "{data}");
    assert_eq!(sbom["formulation"][0]["workflows"][0]["uid"], "train");
    // The release copies it; one that claims another lineage does not match the bundle.
    let release = ReleaseManifest::for_bundle(&s, None, "2026-12-03T00:00:00Z".into()).unwrap();
    assert_eq!(release.provenance.as_ref(), Some(&provenance));
    release.check_bundle(&s).expect("matches");
    let back = ReleaseManifest::from_json(&release.to_json()).unwrap();
    assert_eq!(back, release);
    let mut forged = release.clone();
    forged
        .provenance
        .as_mut()
        .unwrap()
        .git
        .as_mut()
        .unwrap()
        .commit = "e".repeat(40);
    let e = forged.check_bundle(&s).unwrap_err().to_string();
    assert!(e.contains("provenance"), "{e}");
    // Leaving it out (for older agents) is allowed.
    let mut omitted = release.clone();
    omitted.provenance = None;
    omitted
        .check_bundle(&s)
        .expect("a release may omit the provenance");
    // A release without provenance for a bundle without it: no field, as before.
    let ps = edgecd_bundle::read_bundle(&plain.path, &mut |_| {}).unwrap();
    let pr = ReleaseManifest::for_bundle(&ps, None, "2026-12-03T00:00:00Z".into()).unwrap();
    assert!(
        !String::from_utf8(pr.to_json())
            .unwrap()
            .contains("provenance")
    );
    // A bad commit is refused before anything is written.
    let mut bad = provenance;
    bad.git.as_mut().unwrap().commit = "main".into();
    let mut meta = common::meta("detector", "1.2.4");
    meta.provenance = Some(bad);
    let e = edgecd_bundle::build_bundle(
        &edgecd_bundle::BuildSpec {
            meta,
            models: vec![m],
        },
        &dir.path().join("bad"),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a full commit hash"), "{e}");
    assert!(!dir.path().join("bad/detector-1.2.4.edgecd").exists());
}
