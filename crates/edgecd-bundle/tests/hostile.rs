//! Hostile archives: one test per refusal. Each forged archive starts from a real bundle, so
//! the refusal comes from the check under test and not from some earlier accident.
mod common;

use common::{Entry, archive, entries, write};
use edgecd_bundle::{BundleError, read_bundle, unpack_bundle};
use std::path::Path;

fn forged(
    f: &common::Fixture,
    name: &str,
    edit: impl FnOnce(&mut Vec<Entry>),
) -> std::path::PathBuf {
    let mut es = entries(&std::fs::read(&f.bundle.path).unwrap());
    edit(&mut es);
    write(f.dir.path(), name, &archive(&es))
}

/// Reads the forged bundle and also tries to unpack it; asserts the target stays empty and
/// nothing appears outside it.
fn refuse(f: &common::Fixture, path: &Path) -> BundleError {
    let err = read_bundle(path, &mut |_| {}).unwrap_err();
    let target = f.dir.path().join("target");
    let _ = std::fs::remove_dir_all(&target);
    assert!(unpack_bundle(path, &target, &f.key.verifying_key(), &f.sig, &mut |_| {}).is_err());
    assert!(
        !target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(),
        "target left empty"
    );
    err
}

fn evil(name: &str, kind: u8, link: &str) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        kind,
        data: if kind == b'0' {
            b"pwned".to_vec()
        } else {
            vec![]
        },
        link: link.as_bytes().to_vec(),
    }
}

#[test]
fn absolute_path_is_refused() {
    let f = common::fixture();
    let outside = f.dir.path().join("outside-abs");
    let p = forged(&f, "abs.edgecd", |es| {
        es.insert(0, evil(outside.to_str().unwrap(), b'0', ""))
    });
    assert!(matches!(refuse(&f, &p), BundleError::AbsolutePath { .. }));
    assert!(!outside.exists());
}

#[test]
fn parent_traversal_is_refused() {
    let f = common::fixture();
    let p = forged(&f, "dotdot.edgecd", |es| {
        es.push(evil("blobs/../../escape", b'0', ""))
    });
    assert!(matches!(
        refuse(&f, &p),
        BundleError::ParentTraversal { .. }
    ));
    assert!(!f.dir.path().join("escape").exists());
}

#[test]
fn symlink_is_refused() {
    let f = common::fixture();
    let p = forged(&f, "symlink.edgecd", |es| {
        es.insert(2, evil("blobs/sha256/link", b'2', "/etc/passwd"))
    });
    assert!(matches!(refuse(&f, &p), BundleError::Symlink { .. }));
}

#[test]
fn hard_link_is_refused() {
    let f = common::fixture();
    let p = forged(&f, "hardlink.edgecd", |es| {
        es.insert(1, evil("oci-layout2", b'1', "oci-layout"))
    });
    assert!(matches!(refuse(&f, &p), BundleError::HardLink { .. }));
}

#[test]
fn device_file_is_refused() {
    let f = common::fixture();
    for kind in [b'3', b'4', b'6'] {
        let p = forged(&f, "dev.edgecd", |es| es.insert(0, evil("dev", kind, "")));
        assert!(
            matches!(refuse(&f, &p), BundleError::SpecialFile { .. }),
            "type {}",
            kind as char
        );
    }
}

#[test]
fn duplicate_entry_is_refused() {
    let f = common::fixture();
    let p = forged(&f, "dup.edgecd", |es| {
        let again = Entry::file("index.json", es[1].data.clone());
        es.insert(2, again);
    });
    assert!(matches!(refuse(&f, &p), BundleError::DuplicateEntry { .. }));
}

#[test]
fn blob_whose_digest_differs_is_refused() {
    let f = common::fixture();
    let p = forged(&f, "digest.edgecd", |es| {
        let last = es.last_mut().unwrap();
        last.data[10] ^= 0xff;
    });
    let err = refuse(&f, &p);
    assert!(
        matches!(err, BundleError::BlobDigestMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("does not match its name"));
}

#[test]
fn blob_whose_size_differs_from_descriptor_is_refused() {
    let f = common::fixture();
    let p = forged(&f, "size.edgecd", |es| {
        let last = es.last_mut().unwrap();
        last.data.pop();
    });
    let err = refuse(&f, &p);
    assert!(matches!(err, BundleError::BlobSizeMismatch { .. }), "{err}");
}

#[test]
fn manifest_over_one_mib_is_refused() {
    let f = common::fixture();
    let p = forged(&f, "big.edgecd", |es| {
        // A manifest padded past 1 MiB (JSON whitespace), referenced by a matching index.
        let mut m = es[2].data.clone();
        m.resize((1 << 20) + 10, b' ');
        let digest = edgecd_bundle::digest::sha256_digest(&m);
        es[1].data = edgecd_bundle::metadata::render_index(&digest, m.len() as u64, "1.2.3");
        es[2] = Entry::file(&format!("blobs/sha256/{}", &digest[7..]), m);
    });
    let err = refuse(&f, &p);
    assert!(
        matches!(
            err,
            BundleError::MetadataTooLarge {
                what: "manifest",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn declared_size_larger_than_file_is_refused() {
    let f = common::fixture();
    let bytes = std::fs::read(&f.bundle.path).unwrap();
    // Cut the archive inside the last model blob: its header promises more than remains.
    let p = write(
        f.dir.path(),
        "short.edgecd",
        &bytes[..bytes.len() - 1024 - 600],
    );
    let err = refuse(&f, &p);
    assert!(
        matches!(err, BundleError::DeclaredSizeTooLarge { .. }),
        "{err}"
    );
}

#[test]
fn more_files_than_the_limit_are_refused() {
    let f = common::fixture();
    let p = forged(&f, "many.edgecd", |es| {
        let mut m: serde_json::Value = serde_json::from_slice(&es[2].data).unwrap();
        let layer = m["layers"][2].clone();
        let layers = m["layers"].as_array_mut().unwrap();
        for i in 0..edgecd_bundle::read::MAX_ENTRIES {
            let mut l = layer.clone();
            l["annotations"]["org.cncf.model.filepath"] = format!("m{i}.hef").into();
            layers.push(l);
        }
        let bytes = serde_json::to_vec(&m).unwrap();
        let digest = edgecd_bundle::digest::sha256_digest(&bytes);
        es[1].data = edgecd_bundle::metadata::render_index(&digest, bytes.len() as u64, "1.2.3");
        es[2] = Entry::file(&format!("blobs/sha256/{}", &digest[7..]), bytes);
    });
    let err = refuse(&f, &p);
    assert!(matches!(err, BundleError::TooManyEntries { .. }), "{err}");
}

#[test]
fn too_many_physical_entries_are_refused() {
    let f = common::fixture();
    let p = forged(&f, "physical.edgecd", |es| {
        for i in 0..edgecd_bundle::read::MAX_ENTRIES + 1 {
            es.insert(0, Entry::file(&format!("junk{i}"), vec![]));
        }
    });
    // The name check fires on the first junk entry; the count limit bounds work regardless.
    assert!(matches!(
        refuse(&f, &p),
        BundleError::UnexpectedEntry { .. }
    ));
}

#[test]
fn model_path_escaping_the_target_is_refused_even_when_signed() {
    let f = common::fixture();
    let mut manifest = vec![];
    let p = forged(&f, "escape.edgecd", |es| {
        let mut m: serde_json::Value = serde_json::from_slice(&es[2].data).unwrap();
        m["layers"][2]["annotations"]["org.cncf.model.filepath"] = "../../escaped.hef".into();
        manifest = serde_json::to_vec(&m).unwrap();
        let digest = edgecd_bundle::digest::sha256_digest(&manifest);
        es[1].data = edgecd_bundle::metadata::render_index(&digest, manifest.len() as u64, "1.2.3");
        es[2] = Entry::file(&format!("blobs/sha256/{}", &digest[7..]), manifest.clone());
    });
    // Signed by the trusted key: the path check must still hold.
    let sig = edgecd_sign::sign_artifact(&f.key, &manifest);
    let target = f.dir.path().join("t");
    let err = unpack_bundle(&p, &target, &f.key.verifying_key(), &sig, &mut |_| {}).unwrap_err();
    assert!(matches!(err, BundleError::InvalidFilePath(_)), "{err}");
    assert!(!f.dir.path().join("escaped.hef").exists());
}

#[test]
fn non_canonical_header_and_padding_are_refused() {
    let f = common::fixture();
    let mut bytes = std::fs::read(&f.bundle.path).unwrap();
    // mtime field of the first header, checksum fixed up so only canonicality catches it.
    let mut h = tar::Header::from_byte_slice(&bytes[..512]).clone();
    h.set_mtime(12345);
    h.set_cksum();
    bytes[..512].copy_from_slice(h.as_bytes());
    let p = write(f.dir.path(), "mtime.edgecd", &bytes);
    assert!(matches!(
        refuse(&f, &p),
        BundleError::NonCanonicalHeader { .. }
    ));
}

#[test]
fn random_garbage_is_not_an_archive() {
    let f = common::fixture();
    let p = write(f.dir.path(), "garbage.edgecd", &common::bytes(5000, 9));
    assert!(matches!(refuse(&f, &p), BundleError::NotAnArchive { .. }));
    let p = write(f.dir.path(), "empty.edgecd", b"");
    assert!(matches!(refuse(&f, &p), BundleError::NotAnArchive { .. }));
}
