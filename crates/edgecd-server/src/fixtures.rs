//! Test and demo support (used by this crate's and the agent's tests, `scripts/bench-agent`
//! and `edgecd demo`):
//! builds real, signed releases on disk — a bundle (via `edgecd-bundle`), its Sigstore
//! signature, a CI-signed `release.json` and the SBOM — with any hardware profile.

use edgecd_api::profile::{HardwareProfile, RuntimePin};
use edgecd_api::protocol::{BlobRef, PublishRequest};
use edgecd_sign::{SigningKey, sign_artifact};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The files of one release, as `edgecd release publish` uploads them.
#[derive(Debug, Clone)]
pub struct ReleaseFiles {
    pub app: String,
    pub version: String,
    pub bundle: PathBuf,
    pub bundle_sig: PathBuf,
    pub manifest: PathBuf,
    pub manifest_sig: PathBuf,
    pub sbom: PathBuf,
    /// `sha256:` of the bundle's OCI manifest.
    pub bundle_digest: String,
}

impl ReleaseFiles {
    /// The publish request naming these files' blobs.
    pub fn publish_request(&self) -> std::io::Result<PublishRequest> {
        Ok(PublishRequest {
            manifest: blob_ref(&self.manifest)?,
            manifest_sig: blob_ref(&self.manifest_sig)?,
            bundle: blob_ref(&self.bundle)?,
            bundle_sig: blob_ref(&self.bundle_sig)?,
            sbom: Some(blob_ref(&self.sbom)?),
        })
    }

    /// `(blob ref, path)` of each file to upload.
    pub fn blobs(&self) -> std::io::Result<Vec<(BlobRef, PathBuf)>> {
        [
            &self.manifest,
            &self.manifest_sig,
            &self.bundle,
            &self.bundle_sig,
            &self.sbom,
        ]
        .into_iter()
        .map(|p| Ok((blob_ref(p)?, p.clone())))
        .collect()
    }
}

/// SHA-256 digest and size of a file.
pub fn blob_ref(path: &Path) -> std::io::Result<BlobRef> {
    let bytes = std::fs::read(path)?;
    Ok(BlobRef {
        digest: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
        size: bytes.len() as u64,
    })
}

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
        },
        models: vec![model],
    };
    let created = edgecd_bundle::release::rfc3339_utc(crate::util::now());
    package_release(dir, key, &spec, &created)
}

/// Builds `spec` into `dir`, signs the bundle, and writes the CI-signed release manifest
/// (`APP-VERSION.release.json` + `.sigstore.json`) created at `created` (RFC 3339).
pub fn package_release(
    dir: &Path,
    key: &SigningKey,
    spec: &edgecd_bundle::BuildSpec,
    created: &str,
) -> Result<ReleaseFiles, String> {
    let (app, version) = (&spec.meta.name, &spec.meta.version);
    let built = edgecd_bundle::build_bundle(spec, dir, &mut |_| {}).map_err(|e| e.to_string())?;
    let summary =
        edgecd_bundle::read_bundle(&built.path, &mut |_| {}).map_err(|e| e.to_string())?;
    let bundle_sig = edgecd_bundle::signature_path(&built.path);
    std::fs::write(
        &bundle_sig,
        sign_artifact(key, &summary.manifest_bytes).to_json_pretty(),
    )
    .map_err(|e| e.to_string())?;
    let manifest =
        edgecd_bundle::release::ReleaseManifest::for_bundle(&summary, None, created.to_string())
            .map_err(|e| e.to_string())?;
    let manifest_path = dir.join(format!("{app}-{version}.release.json"));
    let bytes = manifest.to_json();
    std::fs::write(&manifest_path, &bytes).map_err(|e| e.to_string())?;
    let manifest_sig = edgecd_bundle::signature_path(&manifest_path);
    std::fs::write(&manifest_sig, sign_artifact(key, &bytes).to_json_pretty())
        .map_err(|e| e.to_string())?;
    Ok(ReleaseFiles {
        app: app.clone(),
        version: version.clone(),
        bundle: built.path,
        bundle_sig,
        manifest: manifest_path,
        manifest_sig,
        sbom: built.sbom_path,
        bundle_digest: built.digest,
    })
}
