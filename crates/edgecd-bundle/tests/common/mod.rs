//! Shared helpers for the bundle tests: small model files, builds, forged archives.
#![allow(dead_code)]

use edgecd_api::profile::{HardwareProfile, RuntimePin};
use edgecd_bundle::{BuildSpec, BuiltBundle, BundleMeta};
use edgecd_sign::SigningKey;
use std::path::{Path, PathBuf};

/// Deterministic pseudo-random bytes (xorshift).
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes an opaque "accelerator" model file (`.hef`).
pub fn opaque_model(dir: &Path, name: &str, len: usize, seed: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes(len, seed)).unwrap();
    p
}

pub fn meta(name: &str, version: &str) -> BundleMeta {
    BundleMeta {
        name: name.into(),
        version: version.into(),
        hardware: HardwareProfile {
            board: "rpi5".into(),
            accelerator: Some("hailo-10h".into()),
            min_ram_mb: Some(2048),
        },
        runtime: RuntimePin {
            name: "hailort".into(),
            version: "4.20.0".into(),
        },
        selftest: None,
        labels: [("site".to_string(), "store-1".to_string())].into(),
        provenance: None,
    }
}

pub fn build(out: &Path, models: Vec<PathBuf>) -> BuiltBundle {
    edgecd_bundle::build_bundle(
        &BuildSpec {
            meta: meta("detector", "1.2.3"),
            models,
        },
        out,
        &mut |_| {},
    )
    .expect("build")
}

/// A small bundle with two opaque models, plus a signing key and its signature.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub bundle: BuiltBundle,
    pub key: SigningKey,
    pub sig: edgecd_sign::SigstoreBundle,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let m1 = opaque_model(dir.path(), "det.hef", 3000, 1);
    let m2 = opaque_model(dir.path(), "rec.hef", 700, 2);
    let bundle = build(&dir.path().join("out"), vec![m1, m2]);
    let key = SigningKey::generate();
    let summary = edgecd_bundle::read_bundle(&bundle.path, &mut |_| {}).unwrap();
    let sig = edgecd_sign::sign_artifact(&key, &summary.manifest_bytes);
    Fixture {
        dir,
        bundle,
        key,
        sig,
    }
}

/// One tar entry: (name, type flag, data, link name).
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: u8,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
}

impl Entry {
    pub fn file(name: &str, data: Vec<u8>) -> Self {
        Self {
            name: name.as_bytes().to_vec(),
            kind: b'0',
            data,
            link: vec![],
        }
    }
}

/// Splits a canonical bundle archive into its entries.
pub fn entries(archive: &[u8]) -> Vec<Entry> {
    let mut out = vec![];
    let mut pos = 0;
    while pos + 512 <= archive.len() && archive[pos..pos + 512].iter().any(|&b| b != 0) {
        let h = tar::Header::from_byte_slice(&archive[pos..pos + 512]);
        let size = h.size().unwrap() as usize;
        let name = h.path_bytes().to_vec();
        out.push(Entry {
            name,
            kind: archive[pos + 156],
            data: archive[pos + 512..pos + 512 + size].to_vec(),
            link: vec![],
        });
        pos += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// Writes entries as a tar with edgecd's header fields but any name/type (bypassing the tar
/// crate's own path checks, as an attacker would).
pub fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut out = vec![];
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(e.data.len() as u64);
        h.set_mode(0o444);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let raw = h.as_mut_bytes();
        raw[..e.name.len()].copy_from_slice(&e.name);
        raw[156] = e.kind;
        raw[157..157 + e.link.len()].copy_from_slice(&e.link);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}
