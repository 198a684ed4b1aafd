//! The control plane's persistent state behind one trait, [`Store`]: every SQL statement of the
//! server lives in one backend module — [`sqlite`] (the embedded default, one file under the
//! data directory) or [`postgres`] (`--database postgres://…`, shared by several replicas).
//! Callers see domain operations (enroll a device, save a rollout with its audit records and
//! notifications in one transaction, …), never a connection or a query.
//!
//! Both backends keep forward-only, numbered migrations with the same meaning
//! (`migrations/sqlite/`, `migrations/postgres/`); a database written by a newer server is
//! refused, not downgraded. Values that are JSON on the wire are stored as JSON text.

pub mod postgres;
pub mod sqlite;

use crate::error::ServerError;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// What every store call returns: both backends speak through sqlx.
pub type StoreResult<T> = Result<T, sqlx::Error>;

/// A shared handle on the store.
pub type SharedStore = Arc<dyn Store>;

/// Opens the store `database` names: `None` (or `sqlite:`/`sqlite://PATH`) is the embedded
/// SQLite file `DATA/edgecd.db`; `postgres://…` is a PostgreSQL database. Migrations are
/// applied before it is returned.
pub async fn open(database: Option<&str>, data_dir: &Path) -> Result<SharedStore, ServerError> {
    match database {
        None => Ok(Arc::new(
            sqlite::SqliteStore::open_file(&data_dir.join("edgecd.db")).await?,
        )),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(postgres::PgStore::open(url).await?))
        }
        Some(url) if url.starts_with("sqlite:") => {
            let path = url
                .trim_start_matches("sqlite:")
                .trim_start_matches("//")
                .split('?')
                .next()
                .unwrap_or_default();
            let path = if path.is_empty() {
                data_dir.join("edgecd.db")
            } else {
                Path::new(path).to_path_buf()
            };
            Ok(Arc::new(sqlite::SqliteStore::open_file(&path).await?))
        }
        Some(other) => Err(ServerError::Config(format!(
            "--database {:?}: unknown database; use postgres://USER@HOST:PORT/DB or sqlite://PATH \
             (default: DATA/edgecd.db)",
            redact_url(other)
        ))),
    }
}

/// `url` without a password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// One row of `devices` (JSON columns still as text).
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub id: String,
    pub cred_hash: String,
    pub labels: String,
    pub enrolled: i64,
    pub last_seen: Option<i64>,
    pub revoked: bool,
    pub inventory: Option<String>,
    pub status: Option<String>,
}

/// One row of `assignments`.
#[derive(Debug, Clone)]
pub struct AssignmentRow {
    pub device_id: String,
    pub version: i64,
    pub app: String,
    pub release_version: String,
    pub payload: String,
    pub signature: String,
    pub expires: i64,
    pub blobs: String,
    /// A signed removal of the app (`Assignment::remove`), not a release to run.
    pub removed: bool,
}

/// The columns of `assignments`, in [`AssignmentRow`]'s order.
pub(crate) type AssignmentTuple = (
    String,
    i64,
    String,
    String,
    String,
    String,
    i64,
    String,
    i32,
);

impl From<AssignmentTuple> for AssignmentRow {
    fn from(
        (device_id, version, app, release_version, payload, signature, expires, blobs, removed): AssignmentTuple,
    ) -> Self {
        Self {
            device_id,
            version,
            app,
            release_version,
            payload,
            signature,
            expires,
            blobs,
            removed: removed != 0,
        }
    }
}

/// A trusted release key.
#[derive(Debug, Clone)]
pub struct TrustedKeyRow {
    pub hint: String,
    pub name: Option<String>,
    pub pem: String,
    pub added: i64,
}

/// A device being enrolled.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub id: String,
    pub cred_hash: String,
    /// The labels the device asked for; the token's labels are added (and win).
    pub labels: BTreeMap<String, String>,
    pub enrolled: i64,
    pub inventory: String,
}

/// Why an enrollment token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    Unknown,
    Expired,
    UsedUp,
}

/// A notification to insert in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxInsert {
    pub channel: String,
    pub delivery_id: String,
    pub notification: String,
    pub created: i64,
    pub next_attempt_ms: i64,
}

/// One outbox row as diagnostics and tests read it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub channel: String,
    pub delivery_id: String,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub notification: String,
}

/// One named API token (`api_tokens`): a person's or a tool's credential with a role.
#[derive(Debug, Clone)]
pub struct ApiTokenRow {
    pub name: String,
    pub role: String,
    /// SHA-256 (hex) of the secret.
    pub hash: String,
    pub created: i64,
    pub rotated: Option<i64>,
    pub revoked: Option<i64>,
}

/// One web console session (`console_sessions`, see `crate::console`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSessionRow {
    /// SHA-256 (hex) of the session id the cookie holds.
    pub id_hash: String,
    /// The API token logged in with: its name and its secret's hash at login (a rotated or
    /// revoked token no longer matches, which ends the session).
    pub token_name: String,
    pub token_hash: String,
    /// Unix seconds.
    pub created: i64,
    pub expires: i64,
}

/// One audit record (`audit_log`): a mutating request by a token.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub token: String,
    pub role: String,
    pub method: String,
    pub route: String,
    pub path: String,
    pub status: i64,
    pub peer: Option<String>,
    pub forwarded_for: Option<String>,
    pub summary: Option<String>,
}

/// The GitOps source row (`gitops`): JSON source and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitopsRow {
    pub source: String,
    pub status: String,
    pub wake_ms: i64,
}

/// One fleet (`fleets`): its spec and the reconciler's state, both JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetRow {
    pub name: String,
    pub spec: String,
    /// `apply` (a fleet file), `deploy` (written by `edgecd deploy`) or `gitops` (a file in
    /// the GitOps repo).
    pub origin: String,
    pub updated_ms: i64,
    pub state: String,
}

/// A device's latest logs request and report (`device_logs`).
#[derive(Debug, Clone)]
pub struct DeviceLogsRow {
    pub request_id: String,
    pub lines: i64,
    pub diagnose: bool,
    /// Unix seconds.
    pub requested_at: i64,
    /// The request id the stored report answers.
    pub answered_id: Option<String>,
    pub received_at: Option<i64>,
    /// `DeviceReport` JSON.
    pub report: Option<String>,
}

impl DeviceLogsRow {
    /// The latest request is not answered yet.
    pub fn pending(&self) -> bool {
        self.answered_id.as_deref() != Some(self.request_id.as_str())
    }
}

/// Holds every change to rollouts, across all replicas sharing the database, while alive.
pub struct RolloutGuard(#[allow(dead_code)] Box<dyn Send>);

impl RolloutGuard {
    pub fn new(inner: impl Send + 'static) -> Self {
        Self(Box::new(inner))
    }
}

/// The lease fencing a save no longer belongs to its holder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the controller lease moved on (held by {holder:?} at epoch {epoch}): this replica is no longer the controller"
)]
pub struct Fenced {
    pub holder: Option<String>,
    pub epoch: i64,
}

/// A rollout's new state with what it decided, saved in one transaction.
#[derive(Debug, Clone)]
pub struct RolloutSave {
    pub id: String,
    pub state: String,
    pub finished: bool,
    pub updated: i64,
    /// `(at, kind, record JSON)`.
    pub audit: Vec<(i64, String, String)>,
    pub outbox: Vec<OutboxInsert>,
    /// Saved only while this lease is still held (controller passes); `None` for operators'
    /// commands.
    pub fence: Option<crate::controller::Fence>,
}

/// The control plane's persistent state. Implementations hold all of their backend's SQL.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// `sqlite` or `postgres` (logs, metrics, `/readyz`).
    fn backend(&self) -> &'static str;

    /// A cheap round trip to the database (readiness).
    async fn ping(&self) -> StoreResult<()>;

    // ---- settings ----
    async fn setting(&self, key: &str) -> StoreResult<Option<String>>;
    async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()>;
    /// Stores `value` under `key` unless the key exists; returns the value stored now (the
    /// first writer's, when several replicas start at once).
    async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String>;

    // ---- trusted release keys ----
    /// Adds a key, or renames it when its hint is known.
    async fn put_trusted_key(&self, k: &TrustedKeyRow) -> StoreResult<()>;
    /// Oldest first.
    async fn trusted_keys(&self) -> StoreResult<Vec<TrustedKeyRow>>;

    // ---- releases ----
    /// The stored `ReleaseInfo` JSON of `app@version`, if published.
    async fn release(&self, app: &str, version: &str) -> StoreResult<Option<String>>;
    /// Inserts a release; `false` when `app@version` already exists (nothing changed).
    async fn insert_release(
        &self,
        app: &str,
        version: &str,
        info: &str,
        published: i64,
    ) -> StoreResult<bool>;
    /// Every release's `ReleaseInfo` JSON, in publishing order.
    async fn release_infos(&self) -> StoreResult<Vec<String>>;

    // ---- enrollment and devices ----
    async fn create_enroll_token(
        &self,
        hash: &str,
        labels: &str,
        expires: i64,
        uses: i64,
    ) -> StoreResult<()>;
    /// Takes one use of the token `token_hash` (valid at `now`) and inserts `device` with its
    /// labels merged with the token's, in one transaction; the merged labels.
    async fn enroll(
        &self,
        token_hash: &str,
        now: i64,
        device: &NewDevice,
    ) -> StoreResult<Result<BTreeMap<String, String>, TokenRefusal>>;
    async fn device(&self, id: &str) -> StoreResult<Option<DeviceRow>>;
    /// In enrollment order.
    async fn devices(&self) -> StoreResult<Vec<DeviceRow>>;
    /// Records a check-in: when, and what the device reported (JSON).
    async fn record_checkin(
        &self,
        id: &str,
        at: i64,
        inventory: &str,
        status: &str,
    ) -> StoreResult<()>;
    /// `false` when there is no such device.
    async fn set_labels(&self, id: &str, labels: &str) -> StoreResult<bool>;
    /// `false` when there is no such device.
    async fn revoke(&self, id: &str) -> StoreResult<bool>;
    /// Deletes a device and its assignment; `false` when there was none.
    async fn delete_device(&self, id: &str) -> StoreResult<bool>;

    // ---- assignments ----
    /// The device's newest assignment of a release (highest version, any app, removals
    /// left out): what an agent of protocol 1.1, which holds one app, is given.
    async fn assignment(&self, device_id: &str) -> StoreResult<Option<AssignmentRow>>;
    /// The device's assignment of `app`.
    async fn app_assignment(
        &self,
        device_id: &str,
        app: &str,
    ) -> StoreResult<Option<AssignmentRow>>;
    /// Every assignment of the device, one per app, by app (removals included).
    async fn device_assignments(&self, device_id: &str) -> StoreResult<Vec<AssignmentRow>>;
    /// The version the device's next assignment must carry: above its current assignment and
    /// above any version the device proved it accepted (`assignment_floor`).
    async fn next_assignment_version(&self, device_id: &str) -> StoreResult<u64>;
    /// Raises the device's assignment floor to `version` (never lowers it).
    async fn raise_assignment_floor(&self, device_id: &str, version: u64) -> StoreResult<()>;
    /// Inserts or replaces a device's assignment of an app; refuses (`false`) a version not
    /// above every assignment the device has (any app), so two writers racing for one
    /// version of an app cannot both win.
    async fn put_assignment(&self, a: &AssignmentRow) -> StoreResult<bool>;
    /// Test and recovery hook: replaces an assignment regardless of its version.
    async fn force_assignment(&self, a: &AssignmentRow) -> StoreResult<()>;

    // ---- device events ----
    async fn event(
        &self,
        device_id: Option<&str>,
        at: i64,
        kind: &str,
        detail: &str,
    ) -> StoreResult<()>;
    /// A device's events, oldest first: `(at, kind, detail)`.
    async fn events(&self, device_id: &str) -> StoreResult<Vec<(i64, String, String)>>;

    // ---- rollouts ----
    async fn insert_rollout(
        &self,
        id: &str,
        app: &str,
        state: &str,
        created: i64,
    ) -> StoreResult<()>;
    /// A rollout's state JSON.
    async fn rollout_state(&self, id: &str) -> StoreResult<Option<String>>;
    /// The id of the app's unfinished rollout, if any.
    async fn active_rollout_for_app(&self, app: &str) -> StoreResult<Option<String>>;
    /// Unfinished rollouts' ids, oldest first.
    async fn active_rollout_ids(&self) -> StoreResult<Vec<String>>;
    /// Unfinished rollouts' states, oldest first.
    async fn active_rollout_states(&self) -> StoreResult<Vec<String>>;
    /// Every rollout's state, newest first.
    async fn rollout_states(&self) -> StoreResult<Vec<String>>;
    /// A rollout's audit records (JSON), oldest first.
    async fn rollout_audit(&self, id: &str) -> StoreResult<Vec<String>>;
    /// Saves a rollout's state, its audit records and its notifications in one transaction;
    /// the outbox ids of the notifications, in order. With a fence, nothing is saved unless
    /// the lease is still held at the fence's epoch.
    async fn save_rollout(&self, s: &RolloutSave) -> StoreResult<Result<Vec<i64>, Fenced>>;
    /// Serializes changes to rollouts across every server on this database (starts,
    /// commands, controller passes) until the guard is dropped.
    async fn lock_rollouts(&self) -> StoreResult<RolloutGuard>;

    // ---- leases ----
    /// Takes the lease `name` for `holder` until `now_ms + ttl_ms` if it is free, expired or
    /// already held by `holder`; its epoch (raised whenever the holder changes), or `None`
    /// while another holder's lease runs. PostgreSQL judges expiry by the database's clock
    /// (replicas' clocks may differ), SQLite by `now_ms`.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Option<i64>>;
    /// Gives the lease up (a server stopping), so another replica need not wait for it to
    /// expire.
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()>;
    /// `(holder, epoch, expires_ms)` of the lease.
    async fn lease(&self, name: &str) -> StoreResult<Option<(String, i64, i64)>>;

    // ---- device metrics ----
    async fn insert_device_metrics(
        &self,
        device_id: &str,
        at: i64,
        release: &str,
        agg: &str,
        since: Option<i64>,
    ) -> StoreResult<()>;
    /// `(device, aggregate JSON)` of `release` whose period began at or after `since`.
    async fn device_metrics_since(
        &self,
        since: i64,
        release: &str,
    ) -> StoreResult<Vec<(String, String)>>;
    async fn prune_device_metrics(&self, before: i64) -> StoreResult<u64>;

    // ---- notification outbox (see `notify::outbox`) ----
    async fn outbox_insert(&self, n: &OutboxInsert) -> StoreResult<i64>;
    /// A pending row's attempts and next due time (unix ms).
    async fn outbox_pending_state(&self, id: i64) -> StoreResult<Option<(i64, i64)>>;
    async fn outbox_retry_later(
        &self,
        id: i64,
        attempts: i64,
        next_attempt_ms: i64,
        why: &str,
    ) -> StoreResult<()>;
    /// Marks a pending row `delivered` or `failed`.
    async fn outbox_finish(
        &self,
        id: i64,
        status: &str,
        attempts: i64,
        finished: i64,
        error: Option<&str>,
    ) -> StoreResult<()>;
    /// `(id, delivery id, notification JSON)` of the channel's pending rows due by `due_ms`,
    /// the `limit` oldest.
    async fn outbox_due(
        &self,
        channel: &str,
        due_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, String, String)>>;
    async fn outbox_pending_channels(&self) -> StoreResult<Vec<String>>;
    /// Marks every pending row of `channel` failed; how many.
    async fn outbox_fail_channel(&self, channel: &str, now: i64, why: &str) -> StoreResult<u64>;
    /// Deletes finished rows finished before `before`; how many.
    async fn outbox_purge(&self, before: i64) -> StoreResult<u64>;
    /// Pending rows per channel.
    async fn outbox_pending_counts(&self) -> StoreResult<Vec<(String, i64)>>;
    /// Every row, oldest first (diagnostics and tests).
    async fn outbox_rows(&self) -> StoreResult<Vec<OutboxRow>>;

    // ---- API tokens and the audit log (people and access) ----
    /// Creates token `t`, replacing a revoked token of the same name; false (nothing
    /// changed) when an active token has the name.
    async fn api_token_create(&self, t: &ApiTokenRow) -> StoreResult<bool>;
    /// Inserts `t` unless a token of its name exists (the bootstrap `admin` token).
    async fn api_token_ensure(&self, t: &ApiTokenRow) -> StoreResult<()>;
    /// The token whose secret hashes to `hash` (revoked ones too).
    async fn api_token_by_hash(&self, hash: &str) -> StoreResult<Option<ApiTokenRow>>;
    /// Every token, by name.
    async fn api_tokens(&self) -> StoreResult<Vec<ApiTokenRow>>;
    /// Gives active token `name` a new secret hash; false when there is none.
    async fn api_token_rotate(&self, name: &str, hash: &str, now: i64) -> StoreResult<bool>;
    /// Revokes active token `name` unless it is the last active admin token; false when
    /// nothing was revoked.
    async fn api_token_revoke(&self, name: &str, now: i64) -> StoreResult<bool>;
    /// Appends an audit record (`id` is assigned).
    async fn audit_insert(&self, r: &AuditRow) -> StoreResult<()>;
    /// Audit records at or after `since_ms`, of `token` when given, newest first, at most `limit`.
    async fn audit(
        &self,
        since_ms: i64,
        token: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<AuditRow>>;

    /// Runs one maintenance statement in the backend's own dialect (tests inject faults with
    /// it; operators never need it).
    async fn execute_raw(&self, sql: &str) -> StoreResult<()>;

    // ---- fleets (desired state, see `fleets`) ----
    /// Inserts or replaces fleet `f.name`.
    async fn put_fleet(&self, f: &FleetRow) -> StoreResult<()>;
    async fn fleet(&self, name: &str) -> StoreResult<Option<FleetRow>>;
    /// Every fleet, by name.
    async fn fleets(&self) -> StoreResult<Vec<FleetRow>>;
    /// `false` when there was no such fleet.
    async fn delete_fleet(&self, name: &str) -> StoreResult<bool>;
    /// Every assignment's `(device, app, version)`, removals left out (one query for the
    /// fleet reconciler).
    async fn assigned_releases(&self) -> StoreResult<Vec<(String, String, String)>>;

    // ---- the GitOps source (see `gitops`) ----
    /// The source, its status and when a webhook last asked for a fetch.
    async fn gitops(&self) -> StoreResult<Option<GitopsRow>>;
    /// Registers the source (replacing one), with its initial status.
    async fn put_gitops(&self, source: &str, status: &str) -> StoreResult<()>;
    /// Saves the status; `false` when no source is registered (disconnected meanwhile) or,
    /// with a `fence`, when the controller lease moved on (a deposed leader's pass writes
    /// nothing over the new leader's status).
    async fn set_gitops_status(
        &self,
        status: &str,
        fence: Option<&crate::controller::Fence>,
    ) -> StoreResult<bool>;
    /// A verified webhook asks for a fetch; `false` when no source is registered.
    async fn gitops_wake(&self, now_ms: i64) -> StoreResult<bool>;
    /// `false` when no source was registered.
    async fn delete_gitops(&self) -> StoreResult<bool>;

    // ---- device logs and diagnoses (`device_logs`) ----
    /// Records a new logs request for the device (replacing the previous request; the last
    /// report stays until a new one arrives). A diagnosis still pending is kept asked for.
    async fn device_logs_request(
        &self,
        device_id: &str,
        request_id: &str,
        lines: i64,
        diagnose: bool,
        at: i64,
    ) -> StoreResult<()>;
    /// The device's latest request and report.
    async fn device_logs(&self, device_id: &str) -> StoreResult<Option<DeviceLogsRow>>;
    /// The device's latest request while it is unanswered: `(request_id, lines, diagnose)`
    /// (read on every check-in, so without the stored report).
    async fn device_logs_pending(
        &self,
        device_id: &str,
    ) -> StoreResult<Option<(String, i64, bool)>>;
    /// Stores the report answering `request_id`; false (nothing stored) when that is not the
    /// device's latest request.
    async fn device_logs_put(
        &self,
        device_id: &str,
        request_id: &str,
        at: i64,
        report: &str,
    ) -> StoreResult<bool>;
    /// `(at, aggregate JSON)` of the device's metric deltas at or after `since`, oldest first.
    async fn device_metrics_of(
        &self,
        device_id: &str,
        since: i64,
    ) -> StoreResult<Vec<(i64, String)>>;

    // ---- ChatOps replay protection (`chat_replays`) ----
    /// Remembers `key` (a request signature) until `expires_ms`, forgetting expired keys;
    /// false when it was already remembered (a replay).
    async fn chat_replay_first(&self, key: &str, expires_ms: i64, now_ms: i64)
    -> StoreResult<bool>;

    // ---- web console sessions (see `crate::console`) ----
    /// Stores a new session.
    async fn console_session_create(&self, s: &ConsoleSessionRow) -> StoreResult<()>;
    /// The session whose id hashes to `id_hash` (expired ones too: the caller checks).
    async fn console_session(&self, id_hash: &str) -> StoreResult<Option<ConsoleSessionRow>>;
    /// Deletes a session (logout); false when there was none.
    async fn console_session_delete(&self, id_hash: &str) -> StoreResult<bool>;
    /// Deletes the sessions expired at `now`; how many.
    async fn console_sessions_purge(&self, now: i64) -> StoreResult<u64>;
}

/// Merges the token's labels over the device's.
pub(crate) fn merge_labels(
    asked: &BTreeMap<String, String>,
    token_labels: &str,
) -> Result<BTreeMap<String, String>, sqlx::Error> {
    let token: BTreeMap<String, String> =
        serde_json::from_str(token_labels).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let mut labels = asked.clone();
    labels.extend(token);
    Ok(labels)
}
