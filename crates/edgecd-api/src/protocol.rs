//! Wire types of the agent ↔ server protocol and of the admin API (design §3–4).
//!
//! Device endpoints (bearer credential from enrollment):
//! - `POST /api/v1/devices/enroll` — [`EnrollRequest`] → [`EnrollResponse`]
//! - `POST /api/v1/devices/{id}/checkin` — [`CheckinRequest`] → [`CheckinResponse`], or `304`
//!   when `If-None-Match` names the current assignment's ETag (the next delay is then in the
//!   [`NEXT_CHECKIN_HEADER`] header).
//! - `GET /api/v1/devices/{id}/assignment` — [`SignedAssignment`] (404 when none)
//! - `GET /api/v1/blobs/sha256:{hex}` — raw bytes, HTTP `Range` supported; only blobs named by
//!   the device's current assignment.
//!
//! Admin endpoints (bearer admin token) live under `/api/v1/admin/…`, see the types below.
//!
//! **Signed assignments**: the server signs the exact bytes of [`SignedAssignment::payload`]
//! (the JSON of an [`Assignment`]) with ECDSA P-256 / SHA-256; `signature` is the base64 of
//! the ASN.1 DER signature and `keyHint` is the signing key's hint (base64 SHA-256 of its SPKI
//! DER). The agent verifies the signature over the payload bytes *before* parsing them.

use crate::profile::{HardwareProfile, RuntimePin};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Response header carrying the next check-in delay in seconds (also set on `304`).
pub const NEXT_CHECKIN_HEADER: &str = "x-edgecd-next-checkin";

/// Largest JSON request body the server accepts on non-upload endpoints.
pub const MAX_JSON_BODY: usize = 256 * 1024;

/// `POST /api/v1/devices/enroll`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time enrollment token from `edgecd device token create`.
    pub token: String,
    pub inventory: Inventory,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrollResponse {
    pub device_id: String,
    /// The per-device bearer credential; the server stores only its hash.
    pub credential: String,
    /// SPKI PEM of the key that signs assignments.
    pub assignment_key_pem: String,
    /// SPKI PEM of each key trusted to sign releases (pinned on the device).
    pub trusted_release_keys: Vec<String>,
    pub next_checkin_secs: u64,
}

/// What the device is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventory {
    /// Board id, e.g. `rpi5`.
    pub board: String,
    /// Raw board model, e.g. from `/proc/device-tree/model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_model: Option<String>,
    pub ram_mb: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<String>,
    /// Installed inference runtimes: name → version.
    #[serde(default)]
    pub runtimes: BTreeMap<String, String>,
    pub agent_version: String,
    /// The device's host name (`/proc/sys/kernel/hostname`), at most 253 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The board's serial number (`/proc/device-tree/serial-number` on a Pi), at most 128
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// The phase of the device's install state machine (design §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    Idle,
    Downloading,
    Verifying,
    Staged,
    SelfTest,
    Activating,
    Trial,
    Committed,
    RollingBack,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok();
        write!(f, "{}", s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

/// A release as it runs on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunningRelease {
    pub app: String,
    pub version: String,
    /// `sha256:` of the bundle manifest.
    pub bundle_digest: String,
    /// `a` or `b`.
    pub slot: String,
}

/// How the last operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OutcomeKind {
    /// Installed, healthy, committed.
    Committed,
    /// Refused before install (signature, version, expiry, digest, size, compatibility).
    Refused,
    /// Failed for a reason that may pass on retry (network, disk full).
    Failed,
    /// Installed but unhealthy or crash-looping: back on the previous release.
    RolledBack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outcome {
    pub kind: OutcomeKind,
    /// The assignment version the operation was about.
    pub assignment_version: u64,
    /// `APP@VERSION` of the release it was about, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Human-readable reason (empty for success).
    #[serde(default)]
    pub reason: String,
    /// Unix seconds.
    pub at: u64,
}

/// What the device actually runs and how its last operation went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceStatus {
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<RunningRelease>,
    /// Highest assignment version the device has accepted.
    pub assignment_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Outcome>,
}

/// `POST /api/v1/devices/{id}/checkin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckinRequest {
    pub inventory: Inventory,
    pub status: DeviceStatus,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Inference metrics since the previous check-in (deltas), for rollout gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::metrics::MetricsAggregate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckinResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<SignedAssignment>,
    pub next_checkin_secs: u64,
}

/// An assignment and the server's signature over its exact JSON bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedAssignment {
    /// The JSON text of an [`Assignment`]; the signed bytes are its UTF-8 bytes.
    pub payload: String,
    /// base64 of the ASN.1 DER ECDSA P-256/SHA-256 signature over `payload`.
    pub signature: String,
    pub key_hint: String,
}

/// Which release a device should run (signed by the server's online key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Assignment {
    pub device_id: String,
    /// Monotonically increasing per device; a rollback is a new, higher version.
    pub version: u64,
    /// Unix seconds.
    pub issued: u64,
    /// Unix seconds; the agent refuses the assignment after this (freeze attack).
    pub expires: u64,
    pub release: ReleaseRef,
}

/// A content-addressed blob with its exact size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlobRef {
    /// `sha256:<hex>` of the blob's bytes.
    pub digest: String,
    pub size: u64,
}

/// The files of a published release, as blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseRef {
    pub app: String,
    pub version: String,
    /// `sha256:` of the bundle's OCI manifest (the bundle's identity).
    pub bundle_digest: String,
    /// `release.json` (signed by a CI key).
    pub manifest: BlobRef,
    /// `release.json.sigstore.json`.
    pub manifest_sig: BlobRef,
    /// The `.edgecd` file.
    pub bundle: BlobRef,
    /// The `.edgecd.sigstore.json` file (signature over the bundle's OCI manifest).
    pub bundle_sig: BlobRef,
    pub hardware: HardwareProfile,
    pub runtime: RuntimePin,
}

/// `POST /api/v1/admin/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustKeyRequest {
    pub public_key_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustedKey {
    pub hint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub public_key_pem: String,
    pub added: u64,
}

/// `POST /api/v1/admin/releases`: the blobs (already uploaded with
/// `PUT /api/v1/admin/blobs/sha256:{hex}`) that make up a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishRequest {
    pub manifest: BlobRef,
    pub manifest_sig: BlobRef,
    pub bundle: BlobRef,
    pub bundle_sig: BlobRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<BlobRef>,
}

/// A published release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseInfo {
    pub release: ReleaseRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<BlobRef>,
    /// Hint of the CI key that signed it.
    pub signed_by: String,
    pub published: u64,
}

/// `POST /api/v1/admin/enrollment-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Labels every device enrolled with this token gets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Validity in seconds (default 24 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    /// How many devices may enroll with it (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenResponse {
    pub token: String,
    pub expires: u64,
    pub max_uses: u32,
}

/// A device as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceInfo {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub enrolled: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceStatus>,
    /// `APP@VERSION` and version of the current assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_version: Option<u64>,
}

/// `PATCH /api/v1/admin/devices/{id}/labels`: set (or with an empty value, remove) labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelRequest {
    pub labels: BTreeMap<String, String>,
}

/// `POST /api/v1/admin/deployments`: assign a release to every device matching `selector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployRequest {
    pub app: String,
    pub version: String,
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployResponse {
    /// `(device id, new assignment version)` for each device assigned.
    pub assigned: Vec<DeployedDevice>,
    /// Devices the selector matched that cannot run the release, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedDevice>,
    /// Computed only (`?dryRun=true`): nothing was assigned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployedDevice {
    pub device_id: String,
    pub assignment_version: u64,
}

/// A device a deployment left out, and why (hardware/runtime compatibility).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedDevice {
    pub device_id: String,
    pub reason: String,
}

/// Error body of every non-2xx response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: String,
}

/// Checks a label key or value: 1–63 chars of `[A-Za-z0-9._-]` (keys may also hold `/`).
pub fn valid_label(key: &str, value: &str) -> bool {
    let ok = |s: &str, slash: bool| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || (slash && c == '/')
            })
    };
    ok(key, true) && (value.is_empty() || ok(value, false))
}

/// Checks a `sha256:<64 lowercase hex>` digest.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_digests_are_validated() {
        assert!(valid_label("site", "berlin-1"));
        assert!(valid_label("edgecd.io/fleet", "retail"));
        assert!(!valid_label("", "x"));
        assert!(!valid_label("a b", "x"));
        assert!(!valid_label("k", "x/y"));
        assert!(valid_digest(&format!("sha256:{}", "a".repeat(64))));
        assert!(!valid_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!valid_digest("sha256:../../etc/passwd"));
    }

    #[test]
    fn phase_displays_camel_case() {
        assert_eq!(Phase::RollingBack.to_string(), "rollingBack");
    }
}
