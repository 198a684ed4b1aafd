//! Test releases: real, signed releases on disk with any hardware profile and an opaque
//! model of any size (`make_release`), built by `edgecd_bundle::package`, re-exported here.

use edgecd_api::profile::{HardwareProfile, RuntimePin};
pub use edgecd_bundle::package::{ReleaseFiles, blob_ref, package_release};
use edgecd_sign::SigningKey;
use std::path::Path;

/// The default hardware profile of test releases: a Raspberry Pi 5 on the CPU.
pub fn rpi5() -> HardwareProfile {
    HardwareProfile {
        board: "rpi5".into(),
        accelerator: None,
        min_ram_mb: None,
    }
}

/// The default runtime pin of test releases.
pub fn infer_pin() -> RuntimePin {
    RuntimePin {
        name: "edgecd-infer".into(),
        version: "0.1.0".into(),
    }
}

/// Deterministic pseudo-random model bytes (an opaque model file).
pub fn model_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Builds and signs `APP-VERSION` in `dir` with a model of `model_len` bytes.
pub fn make_release(
    dir: &Path,
    key: &SigningKey,
    app: &str,
    version: &str,
    hardware: HardwareProfile,
    runtime: RuntimePin,
    model_len: usize,
) -> Result<ReleaseFiles, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let src = dir.join(format!("src-{app}-{version}"));
    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    let model = src.join("model.bin");
    let seed = version.bytes().fold(app.len() as u64, |a, b| {
        a.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    std::fs::write(&model, model_bytes(seed, model_len)).map_err(|e| e.to_string())?;
    let spec = edgecd_bundle::BuildSpec {
        meta: edgecd_bundle::BundleMeta {
            name: app.into(),
            version: version.into(),
            hardware: hardware.clone(),
            runtime: runtime.clone(),
            selftest: None,
            labels: Default::default(),
            provenance: None,
        },
        models: vec![model],
    };
    let created = edgecd_bundle::release::rfc3339_utc(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    package_release(dir, key, &spec, &created)
}
