//! The layout of an unpacked (installed) bundle directory, e.g. the agent's `current` slot.
//!
//! ```text
//! DIR/manifest.json    the OCI image manifest (its SHA-256 is the bundle digest)
//! DIR/config.json      the ModelPack config
//! DIR/profile.json     the edgecd profile (`profile::Profile`)
//! DIR/sbom.cdx.json    the CycloneDX SBOM
//! DIR/models/<path>    each model file at its `org.cncf.model.filepath`
//! ```

pub const MANIFEST_FILE: &str = "manifest.json";
pub const CONFIG_FILE: &str = "config.json";
pub const PROFILE_FILE: &str = "profile.json";
pub const SBOM_FILE: &str = "sbom.cdx.json";
pub const MODELS_DIR: &str = "models";
