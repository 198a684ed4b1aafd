//! A release on disk, as CI packages it and `edgecd release publish` uploads it: the bundle
//! and its Sigstore signature, the CI-signed release manifest (`NAME-VERSION.release.json` +
//! `.sigstore.json`) and the SBOM ([`package_release`], [`ReleaseFiles`]).

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

/// Builds `spec` into `dir`, signs the bundle, and writes the CI-signed release manifest
/// (`APP-VERSION.release.json` + `.sigstore.json`) created at `created` (RFC 3339).
pub fn package_release(
    dir: &Path,
    key: &SigningKey,
    spec: &crate::BuildSpec,
    created: &str,
) -> Result<ReleaseFiles, String> {
    let (app, version) = (&spec.meta.name, &spec.meta.version);
    let built = crate::build_bundle(spec, dir, &mut |_| {}).map_err(|e| e.to_string())?;
    let summary = crate::read_bundle(&built.path, &mut |_| {}).map_err(|e| e.to_string())?;
    let bundle_sig = crate::signature_path(&built.path);
    std::fs::write(
        &bundle_sig,
        sign_artifact(key, &summary.manifest_bytes).to_json_pretty(),
    )
    .map_err(|e| e.to_string())?;
    let manifest = crate::release::ReleaseManifest::for_bundle(&summary, None, created.to_string())
        .map_err(|e| e.to_string())?;
    let manifest_path = dir.join(format!("{app}-{version}.release.json"));
    let bytes = manifest.to_json();
    std::fs::write(&manifest_path, &bytes).map_err(|e| e.to_string())?;
    let manifest_sig = crate::signature_path(&manifest_path);
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
