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
//!
//! **Freshness** (TUF's timestamp role, kept small): every check-in answer, `304` included,
//! carries a [`Timestamp`] in [`TIMESTAMP_HEADER`], signed with the assignment key
//! ([`TIMESTAMP_SIGNATURE_HEADER`]): device id, issue and expiry times (short-lived) and the
//! device's current assignment version on the server. An agent that sees no valid, unexpired
//! timestamp for longer than its lifetime is being fed stale answers (freeze attack) and
//! reports `staleSince`; one that holds a higher signed assignment than the server's
//! counter (a database restored from a backup) sends it as `assignmentProof` and the server
//! resyncs its counter above it.
//!
//! **Protocol versions and compatibility**: every agent ↔ server message carries the sender's
//! protocol version, `MAJOR.MINOR` ([`PROTOCOL_VERSION`]), in the [`PROTOCOL_HEADER`] header
//! and, in JSON bodies, a `protocol` field (absent means `1.0`, the first release). Within a
//! major version, fields are only ever added, and every type decoded from the other side
//! ignores fields it does not know (`deny_unknown_fields` is kept only for files people write,
//! such as rollout specs, and for admin *requests*, which people also write by hand: a typo
//! there is refused, not silently ignored; admin responses accept new fields). The promise: a server serves agents of its own minor version and of
//! the two before (1.2 serves 1.0 and 1.1: they hold one app and get the newest
//! assignment); an agent works with a server one minor version newer. A peer of another
//! major version is refused with a message that names both versions.

use crate::profile::{HardwareProfile, RuntimePin};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Response header carrying the next check-in delay in seconds (also set on `304`).
pub const NEXT_CHECKIN_HEADER: &str = "x-edgecd-next-checkin";

/// This build's protocol version (`MAJOR.MINOR`); see the module doc for the promise.
pub const PROTOCOL_VERSION: &str = "1.2";

/// Header carrying the sender's protocol version on every agent ↔ server message.
pub const PROTOCOL_HEADER: &str = "x-edgecd-protocol";

/// Header of a check-in answer carrying the signed [`Timestamp`] (its [`Timestamp::to_text`]).
pub const TIMESTAMP_HEADER: &str = "x-edgecd-timestamp";

/// base64 of the ASN.1 DER ECDSA P-256/SHA-256 signature, by the assignment key, over
/// [`Timestamp::signed_bytes`].
pub const TIMESTAMP_SIGNATURE_HEADER: &str = "x-edgecd-timestamp-signature";

/// The protocol version of a peer that did not say (the first release).
pub fn legacy_protocol() -> String {
    "1.0".to_string()
}

/// Parses `MAJOR.MINOR`.
pub fn parse_protocol(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Whether this build serves / talks to a peer of protocol `peer` (see the module doc):
/// same major version; the server side accepts its own minor version and the two before
/// (and newer minors, whose extra fields it ignores).
pub fn check_protocol(peer: &str) -> Result<(), String> {
    let ours = parse_protocol(PROTOCOL_VERSION).unwrap_or((1, 0));
    match parse_protocol(peer) {
        Some((major, minor)) if major == ours.0 && minor + 2 >= ours.1 => Ok(()),
        Some(_) => Err(format!(
            "protocol {peer} is not supported by this peer (protocol {PROTOCOL_VERSION}; supported: {}.{} and newer {}.x): upgrade the older side",
            ours.0,
            ours.1.saturating_sub(2),
            ours.0
        )),
        None => Err(format!(
            "protocol version {peer:?} is not MAJOR.MINOR (this peer speaks {PROTOCOL_VERSION})"
        )),
    }
}

/// A short-lived statement by the server, signed with the assignment key: at `issued`, the
/// current assignment version of `device_id` was `assignment_version` (0: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    pub device_id: String,
    pub issued: u64,
    pub expires: u64,
    pub assignment_version: u64,
}

impl Timestamp {
    /// `v1;device=ID;issued=N;expires=N;version=N` (header-safe text).
    pub fn to_text(&self) -> String {
        format!(
            "v1;device={};issued={};expires={};version={}",
            self.device_id, self.issued, self.expires, self.assignment_version
        )
    }

    /// Parses [`Timestamp::to_text`].
    pub fn parse(text: &str) -> Option<Self> {
        let mut it = text.split(';');
        if it.next()? != "v1" {
            return None;
        }
        let mut field = |name: &str| {
            it.next()
                .and_then(|kv| kv.strip_prefix(name))
                .and_then(|v| v.strip_prefix('='))
                .map(str::to_string)
        };
        let device_id = field("device")?;
        let issued = field("issued")?.parse().ok()?;
        let expires = field("expires")?.parse().ok()?;
        let assignment_version = field("version")?.parse().ok()?;
        Some(Self {
            device_id,
            issued,
            expires,
            assignment_version,
        })
    }

    /// The bytes the signature covers (domain-separated from assignments).
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!("edgecd-timestamp:{}", self.to_text()).into_bytes()
    }
}

/// Largest JSON request body the server accepts on non-upload endpoints.
pub const MAX_JSON_BODY: usize = 256 * 1024;

/// `POST /api/v1/devices/enroll`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollRequest {
    /// The one-time enrollment token from `edgecd device token create`.
    pub token: String,
    pub inventory: Inventory,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The agent's protocol version (absent: `1.0`).
    #[serde(default = "legacy_protocol")]
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollResponse {
    pub device_id: String,
    /// The per-device bearer credential; the server stores only its hash.
    pub credential: String,
    /// SPKI PEM of the key that signs assignments.
    pub assignment_key_pem: String,
    /// SPKI PEM of each key trusted to sign releases (pinned on the device).
    pub trusted_release_keys: Vec<String>,
    pub next_checkin_secs: u64,
    /// The server's protocol version (absent: `1.0`).
    #[serde(default = "legacy_protocol")]
    pub protocol: String,
}

/// What the device is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
    /// Size in MiB of the file system holding the agent's data directory (protocol 1.2):
    /// with `ram_mb`, the budget the server checks before placing several apps together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_mb: Option<u64>,
    /// How many apps the agent holds side by side (protocol 1.2, `--max-apps`); absent:
    /// one (older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_apps: Option<u32>,
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
#[serde(rename_all = "camelCase")]
pub struct RunningRelease {
    pub app: String,
    pub version: String,
    /// `sha256:` of the bundle manifest.
    pub bundle_digest: String,
    /// `a` or `b`.
    pub slot: String,
    /// The runtime container image it runs in (`name@sha256:…`), when the release pins one and
    /// the device runs it under podman; `None`: the device's native runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
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
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<RunningRelease>,
    /// Highest assignment version the device has accepted.
    pub assignment_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Outcome>,
    /// Progress of the download in flight (phase `downloading`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<DownloadProgress>,
    /// Unix seconds since which the device has seen no valid, unexpired signed timestamp on
    /// the server's answers (stale or replayed answers: freeze attack?).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<u64>,
    /// The highest assignment the device accepted, sent when the server's counter is behind
    /// it (e.g. after a database restore) so that the server can resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_proof: Option<SignedAssignment>,
    /// Protocol 1.2: one entry per app the device holds (several apps side by side, each
    /// with its own slots, install state and rollback). The fields above then describe the
    /// device's first app, for servers of protocol 1.1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppStatus>,
}

/// The install state of one app on a device (protocol 1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    pub app: String,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<RunningRelease>,
    /// Highest assignment version this app's install accepted.
    pub assignment_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<DownloadProgress>,
}

impl DeviceStatus {
    /// Each app's state: the `apps` entries (protocol 1.2), or the device-wide fields of an
    /// older agent as its one app (named by what it runs or last tried).
    pub fn app_states(&self) -> Vec<AppStatus> {
        if !self.apps.is_empty() {
            return self.apps.clone();
        }
        let app = self
            .running
            .as_ref()
            .map(|r| r.app.clone())
            .or_else(|| {
                self.last_outcome
                    .as_ref()
                    .and_then(|o| o.release.as_deref())
                    .and_then(|r| r.split_once('@'))
                    .map(|(a, _)| a.to_string())
            })
            .or_else(|| {
                self.download
                    .as_ref()
                    .and_then(|d| d.release.split_once('@'))
                    .map(|(a, _)| a.to_string())
            });
        app.map(|app| AppStatus {
            app,
            phase: self.phase,
            running: self.running.clone(),
            assignment_version: self.assignment_version,
            last_outcome: self.last_outcome.clone(),
            download: self.download.clone(),
        })
        .into_iter()
        .collect()
    }

    /// The state of `app` on the device, if it holds it.
    pub fn app_state(&self, app: &str) -> Option<AppStatus> {
        self.app_states().into_iter().find(|a| a.app == app)
    }

    /// What the device runs for `app`.
    pub fn running_app(&self, app: &str) -> Option<RunningRelease> {
        self.app_state(app).and_then(|a| a.running)
    }

    /// Every release the device runs (one per app).
    pub fn running_all(&self) -> Vec<RunningRelease> {
        self.app_states()
            .into_iter()
            .filter_map(|a| a.running)
            .collect()
    }
}

/// How far the download of a release has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownloadProgress {
    /// `APP@VERSION` being downloaded.
    pub release: String,
    /// The assignment version it is for.
    pub assignment_version: u64,
    /// Bytes of the release's files on the device so far, and in all.
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// `POST /api/v1/devices/{id}/checkin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckinRequest {
    pub inventory: Inventory,
    pub status: DeviceStatus,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Inference metrics since the previous check-in (deltas), for rollout gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::metrics::MetricsAggregate>,
    /// The agent's protocol version (absent: `1.0`).
    #[serde(default = "legacy_protocol")]
    pub protocol: String,
    /// Protocol 1.2, several apps: each app's own runtime metrics (deltas), so that a gate
    /// judges the app its rollout is about. `metrics` then carries only device-wide
    /// readings (temperature) and the metrics of an app without its own endpoint.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub app_metrics: BTreeMap<String, crate::metrics::MetricsAggregate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckinResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<SignedAssignment>,
    pub next_checkin_secs: u64,
    /// The server's protocol version (absent: `1.0`).
    #[serde(default = "legacy_protocol")]
    pub protocol: String,
    /// The registry mirror of the device's site to pull runtime images from
    /// (`HOST[:PORT][/PREFIX]`); the image digest stays the one the release pins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_mirror: Option<String>,
    /// An operator asked for this device's recent logs (and a diagnosis): upload a
    /// [`DeviceReport`] to `POST /api/v1/devices/{id}/logs`. Repeated on every check-in
    /// (never hidden by a `304`) until the report with its id arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_request: Option<DeviceRequest>,
    /// Protocol 1.2: the device's assignment of every app it should hold (one per app,
    /// versions from one per-device counter). `assignment` is then the newest of them, for
    /// agents of protocol 1.1, which hold one app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignments: Vec<SignedAssignment>,
}

/// An assignment and the server's signature over its exact JSON bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedAssignment {
    /// The JSON text of an [`Assignment`]; the signed bytes are its UTF-8 bytes.
    pub payload: String,
    /// base64 of the ASN.1 DER ECDSA P-256/SHA-256 signature over `payload`.
    pub signature: String,
    pub key_hint: String,
}

/// Which release a device should run (signed by the server's online key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub device_id: String,
    /// Monotonically increasing per device; a rollback is a new, higher version.
    pub version: u64,
    /// Unix seconds.
    pub issued: u64,
    /// Unix seconds; the agent refuses the assignment after this (freeze attack).
    pub expires: u64,
    pub release: ReleaseRef,
    /// Protocol 1.2: remove this app from the device (stop its runtime, delete its slots);
    /// `release` names what it ran. Sent only among `assignments`, to agents that hold
    /// several apps, never as the `assignment` an agent of protocol 1.1 reads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
}

/// A content-addressed blob with its exact size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobRef {
    /// `sha256:<hex>` of the blob's bytes.
    pub digest: String,
    pub size: u64,
}

/// The files of a published release, as blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
pub struct CreateTokenResponse {
    pub token: String,
    pub expires: u64,
    pub max_uses: u32,
}

/// A device as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
    /// `APP@VERSION` and version of the newest assignment (of any app; removals left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_version: Option<u64>,
    /// `APP@VERSION` of every app assigned to the device, by app (several apps per device).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignments: Vec<String>,
}

impl DeviceInfo {
    /// `APP@VERSION` of every app assigned to the device (`assigned` alone from a server
    /// that lists no `assignments`).
    pub fn assigned_all(&self) -> Vec<String> {
        if self.assignments.is_empty() {
            self.assigned.iter().cloned().collect()
        } else {
            self.assignments.clone()
        }
    }
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
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
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

/// Largest size of the log lines (bytes of `line` text) in one [`DeviceReport`].
pub const MAX_LOG_BYTES: usize = 256 * 1024;

/// What the server asks a device to report (in [`CheckinResponse::device_request`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRequest {
    /// Echoed in the report; a device answers each id once.
    pub id: String,
    /// At most this many recent lines per source.
    pub lines: u32,
    /// Also send [`Diagnostics`].
    #[serde(default)]
    pub diagnose: bool,
}

/// One log line a device reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339 UTC.
    pub ts: String,
    /// `agent` or `runtime`.
    pub source: String,
    pub line: String,
}

/// `POST /api/v1/devices/{id}/logs`: a device's answer to a [`DeviceRequest`]. Lines are
/// redacted (credentials, keys, `token=`/`secret=`/`password=` values) and bounded by
/// [`MAX_LOG_BYTES`] (oldest dropped first, `truncated` set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceReport {
    pub request_id: String,
    pub lines: Vec<LogLine>,
    #[serde(default)]
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Diagnostics>,
}

/// What a device knows about itself right now (`edgecd device diagnose`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostics {
    /// RFC 3339 UTC, the device's clock.
    pub collected_at: String,
    pub agent_version: String,
    pub phase: Phase,
    /// The A/B slots and what each holds.
    pub slots: Vec<SlotReport>,
    /// Free and total bytes of the agent's data directory's file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_disk_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_disk_bytes: Option<u64>,
    /// Recent SoC temperature readings: `[unix seconds, °C]`, oldest first.
    #[serde(default)]
    pub temperatures: Vec<(u64, f64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled: Option<bool>,
    pub runtime: RuntimeHealth,
}

/// One install slot as the device sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotReport {
    pub slot: String,
    /// `APP@VERSION` installed there, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// `current` points here.
    pub current: bool,
    pub bytes: u64,
}

/// The runtime's health as the agent checks it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeHealth {
    /// `podman`, `health-url`, `health-cmd` or `none` (nothing to check).
    pub kind: String,
    /// `None`: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{HardwareProfile, RuntimePin};

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

    /// Adds `"futureField"` (an object) to every JSON object in `v`.
    fn with_future_fields(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                // Maps of data (labels, runtimes) are not structs: no new fields there.
                for (k, x) in m.iter_mut() {
                    if k != "labels" && k != "runtimes" {
                        with_future_fields(x);
                    }
                }
                m.insert("futureField".into(), serde_json::json!({"added": [1, 2]}));
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(with_future_fields),
            _ => {}
        }
    }

    fn roundtrips_with_future_fields<T>(x: &T)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let mut v = serde_json::to_value(x).expect("serializes");
        with_future_fields(&mut v);
        let back: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| {
            panic!(
                "{} refused a newer peer's fields: {e}",
                std::any::type_name::<T>()
            )
        });
        assert_eq!(&back, x);
    }

    fn release() -> ReleaseRef {
        let b = BlobRef {
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 1,
        };
        ReleaseRef {
            app: "app".into(),
            version: "1.0.0".into(),
            bundle_digest: b.digest.clone(),
            manifest: b.clone(),
            manifest_sig: b.clone(),
            bundle: b.clone(),
            bundle_sig: b,
            hardware: HardwareProfile {
                board: "rpi5".into(),
                accelerator: Some("hailo-8l".into()),
                min_ram_mb: Some(1),
            },
            runtime: RuntimePin {
                name: "edgecd-infer".into(),
                version: "0.1.0".into(),
            },
        }
    }

    #[test]
    fn wire_types_accept_fields_a_newer_peer_adds() {
        let inventory = Inventory {
            board: "rpi5".into(),
            ram_mb: 8192,
            runtimes: [("edgecd-infer".to_string(), "0.1.0".to_string())].into(),
            agent_version: "0.1.0".into(),
            ..Default::default()
        };
        let signed = SignedAssignment {
            payload: "{}".into(),
            signature: "c2ln".into(),
            key_hint: "hint".into(),
        };
        let status = DeviceStatus {
            apps: Default::default(),
            phase: Phase::Downloading,
            running: Some(RunningRelease {
                app: "app".into(),
                version: "1.0.0".into(),
                bundle_digest: "sha256:x".into(),
                slot: "a".into(),
                image: None,
            }),
            assignment_version: 3,
            last_outcome: Some(Outcome {
                kind: OutcomeKind::Refused,
                assignment_version: 3,
                release: Some("app@2".into()),
                reason: "r".into(),
                at: 1,
            }),
            download: Some(DownloadProgress {
                release: "app@2".into(),
                assignment_version: 4,
                done_bytes: 1,
                total_bytes: 2,
            }),
            stale_since: Some(5),
            assignment_proof: Some(signed.clone()),
        };
        roundtrips_with_future_fields(&CheckinRequest {
            app_metrics: Default::default(),
            inventory: inventory.clone(),
            status,
            labels: BTreeMap::new(),
            metrics: Some(crate::metrics::MetricsAggregate::default()),
            protocol: PROTOCOL_VERSION.into(),
        });
        roundtrips_with_future_fields(&CheckinResponse {
            assignments: Default::default(),
            assignment: Some(signed),
            next_checkin_secs: 1,
            protocol: PROTOCOL_VERSION.into(),
            image_mirror: Some("mirror.site:5000".into()),
            device_request: Some(DeviceRequest {
                id: "r1".into(),
                lines: 100,
                diagnose: true,
            }),
        });
        roundtrips_with_future_fields(&EnrollRequest {
            token: "t".into(),
            inventory,
            labels: BTreeMap::new(),
            protocol: PROTOCOL_VERSION.into(),
        });
        roundtrips_with_future_fields(&EnrollResponse {
            device_id: "d".into(),
            credential: "c".into(),
            assignment_key_pem: "k".into(),
            trusted_release_keys: vec!["k".into()],
            next_checkin_secs: 1,
            protocol: PROTOCOL_VERSION.into(),
        });
        roundtrips_with_future_fields(&Assignment {
            remove: Default::default(),
            device_id: "d".into(),
            version: 1,
            issued: 1,
            expires: 2,
            release: release(),
        });
    }

    #[test]
    fn an_older_peer_without_the_new_fields_is_read_as_protocol_1_0() {
        let r: CheckinResponse = serde_json::from_str(r#"{"nextCheckinSecs":5}"#).expect("old");
        assert_eq!(r.protocol, "1.0");
        assert!(check_protocol(&r.protocol).is_ok());
        let s: DeviceStatus =
            serde_json::from_str(r#"{"phase":"idle","assignmentVersion":0}"#).expect("old");
        assert!(s.download.is_none() && s.assignment_proof.is_none());
    }

    #[test]
    fn protocol_versions_one_minor_apart_are_served_other_majors_refused() {
        assert!(check_protocol(PROTOCOL_VERSION).is_ok());
        assert!(check_protocol("1.0").is_ok());
        assert!(check_protocol("1.7").is_ok());
        let e = check_protocol("2.0").expect_err("other major");
        assert!(e.contains("2.0") && e.contains(PROTOCOL_VERSION), "{e}");
        assert!(check_protocol("one").is_err());
    }

    #[test]
    fn timestamps_round_trip_as_header_text() {
        let t = Timestamp {
            device_id: "dev-1".into(),
            issued: 10,
            expires: 70,
            assignment_version: 4,
        };
        assert_eq!(Timestamp::parse(&t.to_text()), Some(t.clone()));
        assert!(axum_free_header_safe(&t.to_text()));
        assert_eq!(Timestamp::parse("v2;device=x"), None);
        assert!(t.signed_bytes().starts_with(b"edgecd-timestamp:v1;"));
    }

    fn axum_free_header_safe(s: &str) -> bool {
        s.bytes().all(|b| (0x20..0x7f).contains(&b))
    }

    #[test]
    fn phase_displays_camel_case() {
        assert_eq!(Phase::RollingBack.to_string(), "rollingBack");
    }
}
