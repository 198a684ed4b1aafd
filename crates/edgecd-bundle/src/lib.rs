//! The edgecd bundle format.
//!
//! A bundle is a signed OCI artifact following the CNCF ModelPack spec, stored as one
//! `.edgecd` file: an OCI image layout in a deterministic tar (see `metadata` for the entry
//! order and `tarfmt` for the framing). Its identity is the SHA-256 of its manifest, which
//! is what Sigstore signatures cover.
//!
//! Modules: `metadata` (pure rendering of manifest, config, profile, SBOM), `sbom`
//! (CycloneDX 1.6), `oci` (types), `build` (streaming writer), `read` (safe streaming reader,
//! verification, unpacking), `release` (signed release manifests), `provenance` (MLflow run,
//! DVC datasets and git commit a bundle records).

pub mod build;
pub mod digest;
mod error;
pub mod metadata;
pub mod oci;
pub mod package;
pub mod provenance;
pub mod read;
pub mod release;
pub mod sbom;
pub mod tarfmt;

pub use build::{
    BuildSpec, BuiltBundle, build_bundle, bundle_file_name, load_selftest, write_atomic,
};
pub use error::BundleError;
pub use metadata::BundleMeta;
pub use read::{BundleSummary, Verified, read_bundle, unpack_bundle, verify_bundle};

/// Default path of a bundle's detached signature: `FILE.sigstore.json`.
pub fn signature_path(bundle: &std::path::Path) -> std::path::PathBuf {
    let mut s = bundle.as_os_str().to_owned();
    s.push(".sigstore.json");
    std::path::PathBuf::from(s)
}
