//! Data types shared by every edgecd component (serde only, no I/O).
//!
//! Owns: model metadata (`model`), the bundle's edgecd profile layer (`profile`: hardware
//! profile, runtime pin, model signatures, self-test vectors) and the installed-slot layout
//! constants (`layout`), the agent ↔ server protocol (`protocol`), mergeable inference metrics
//! (`metrics`) and Prometheus text syntax shared by every exporter (`exposition`).

pub mod exposition;
pub mod layout;
pub mod metrics;
pub mod model;
pub mod profile;
pub mod protocol;
pub mod redact;

/// Version of the HTTP API (`/api/v1/...`).
pub const API_VERSION: &str = "v1";
