//! Verifying and unpacking a downloaded bundle into a slot, behind a trait so the driver can
//! be tested without real bundles.

use edgecd_api::profile::{HardwareProfile, RuntimePin};
use edgecd_sign::{SigstoreBundle, VerifyingKey};
use std::path::Path;

/// What an unpacked, verified bundle is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedBundle {
    /// `sha256:` of the bundle's OCI manifest.
    pub digest: String,
    pub name: String,
    pub version: String,
    pub hardware: HardwareProfile,
    pub runtime: RuntimePin,
}

/// Verifies a bundle file with a release key and its Sigstore signature, and unpacks it into
/// the empty directory `dir` (left empty or absent on failure).
pub trait BundleInstaller: Send + Sync {
    fn unpack(
        &self,
        bundle: &Path,
        dir: &Path,
        key: &VerifyingKey,
        sig: &SigstoreBundle,
    ) -> Result<UnpackedBundle, String>;
}

/// The real installer: `edgecd_bundle::unpack_bundle` (signature, every digest and size,
/// safe paths) into the slot layout of `edgecd_api::layout`.
#[derive(Debug, Default, Clone, Copy)]
pub struct EdgecdBundleInstaller;

impl BundleInstaller for EdgecdBundleInstaller {
    fn unpack(
        &self,
        bundle: &Path,
        dir: &Path,
        key: &VerifyingKey,
        sig: &SigstoreBundle,
    ) -> Result<UnpackedBundle, String> {
        let v = edgecd_bundle::unpack_bundle(bundle, dir, key, sig, &mut |_| {})
            .map_err(|e| e.to_string())?;
        let s = v.into_inner();
        Ok(UnpackedBundle {
            digest: s.digest,
            name: s.profile.name,
            version: s.profile.version,
            hardware: s.profile.hardware,
            runtime: s.profile.runtime,
        })
    }
}
