//! The agent's driver: enrollment, the check-in loop (ETag, server-given delay, jitter,
//! back-off), and the IO behind each [`Effect`] of the pure state machine.
//!
//! Data directory layout:
//! ```text
//! DATA/device.json              enrollment: id, credential, pinned keys (0600)
//! DATA/state.json               the machine's persisted state (atomic writes)
//! DATA/slots/a, DATA/slots/b    the two install slots
//! DATA/current -> slots/X       what runs (switched with rename(2))
//! DATA/staging/<hex>.part       downloads in progress (resumable)
//! ```

use crate::client::{Checkin, Client, ClientError, DownloadError, Storage};
use crate::exporter::Telemetry;
use crate::fsutil;
use crate::hooks::{self, HealthCheck, HookEnv};
use crate::install::BundleInstaller;
use crate::machine::{self, Effect, Event, Limits, Slot, State};
use crate::verify::{self, Refusal};
use edgecd_api::protocol::{
    BlobRef, CheckinRequest, DeviceStatus, EnrollRequest, Inventory, Phase, ReleaseRef,
    SignedAssignment,
};
use edgecd_sign::{SigstoreBundle, VerifyingKey};
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Errors that stop the agent (everything else is reported and retried).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("I/O error at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("enrollment failed: {0}")]
    Enroll(ClientError),
    #[error("corrupt agent state: {0}")]
    State(String),
    #[error(transparent)]
    Machine(#[from] machine::InvalidTransition),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Agent configuration (see the `edgecd-agent` flags).
#[derive(Clone)]
pub struct Config {
    pub server: String,
    pub data_dir: PathBuf,
    pub enroll_token: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub activate_cmd: Option<String>,
    pub health: Option<HealthCheck>,
    pub activate_timeout: Duration,
    pub health_timeout: Duration,
    pub health_interval: Duration,
    pub max_download_kbps: Option<u64>,
    /// PEM of the CA the server's certificate must chain to.
    pub ca_pem: Option<Vec<u8>>,
    /// Release keys pinned by configuration (override those from enrollment).
    pub release_keys: Vec<VerifyingKey>,
    pub inventory: Inventory,
    pub max_trial_starts: u32,
    /// Overrides the server's check-in delay (tests and benchmarks).
    pub checkin_interval: Option<Duration>,
    /// Stop after this many check-ins (tests and benchmarks).
    pub max_checkins: Option<u64>,
    /// The local inference runtime's Prometheus endpoint (e.g. edgecd-infer's /metrics).
    pub metrics_url: Option<String>,
    /// SoC temperature file (millidegrees), e.g. /sys/class/thermal/thermal_zone0/temp.
    pub thermal_path: Option<PathBuf>,
    /// The firmware's throttling report (Raspberry Pi: `get_throttled`).
    pub throttle_path: Option<PathBuf>,
    /// Where to serve the agent's own Prometheus metrics (`None`: off).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Allow a non-loopback `metrics_listen` (the endpoint is unauthenticated).
    pub metrics_listen_any: bool,
}

/// Enrollment, persisted in `device.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrollment {
    pub device_id: String,
    pub credential: String,
    pub assignment_key_pem: String,
    pub trusted_release_keys: Vec<String>,
}

/// The agent: configuration, its persisted state and the IO it drives.
pub struct Agent {
    cfg: Config,
    client: Client,
    installer: Arc<dyn BundleInstaller>,
    storage: Arc<dyn Storage>,
    state: State,
    enrollment: Option<Enrollment>,
    etag: Option<String>,
    /// The last assignment received and whether it is handled.
    pending: Option<SignedAssignment>,
    /// Payloads already refused (not re-verified or re-reported).
    refused: Vec<String>,
    failures: u32,
    checkins: u64,
    /// The runtime's counters as of the last successful check-in (metrics are deltas).
    metrics_sent: Option<crate::metrics::Snapshot>,
    /// What the local exporter (`--metrics-listen`) reports.
    telemetry: Arc<Telemetry>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Agent {
    /// Opens the data directory and loads the persisted state.
    pub fn new(
        cfg: Config,
        installer: Arc<dyn BundleInstaller>,
        storage: Arc<dyn Storage>,
    ) -> Result<Self, AgentError> {
        let client = Client::new(&cfg.server, cfg.ca_pem.as_deref())
            .map_err(|e| AgentError::Config(e.to_string()))?;
        for d in [
            cfg.data_dir.clone(),
            cfg.data_dir.join("slots"),
            cfg.data_dir.join("staging"),
        ] {
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let state_path = cfg.data_dir.join("state.json");
        let state = match std::fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| AgentError::State(format!("{}: {e}", state_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io_err(&state_path)(e)),
        };
        let dev_path = cfg.data_dir.join("device.json");
        let enrollment = match std::fs::read(&dev_path) {
            Ok(b) => Some(
                serde_json::from_slice(&b)
                    .map_err(|e| AgentError::State(format!("{}: {e}", dev_path.display())))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&dev_path)(e)),
        };
        let telemetry = Arc::new(Telemetry::new(
            cfg.thermal_path.clone(),
            cfg.throttle_path.clone(),
        ));
        let agent = Self {
            cfg,
            client,
            installer,
            storage,
            state,
            enrollment,
            etag: None,
            pending: None,
            refused: Vec::new(),
            failures: 0,
            checkins: 0,
            metrics_sent: None,
            telemetry,
        };
        agent.update_telemetry();
        Ok(agent)
    }

    /// The metrics the local exporter serves (shared with its thread).
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.telemetry.clone()
    }

    /// Serves `GET /metrics` on `metrics_listen` (if configured) on a background thread.
    /// Returns the bound address.
    pub fn start_exporter(&self) -> Result<Option<std::net::SocketAddr>, AgentError> {
        let Some(addr) = self.cfg.metrics_listen else {
            return Ok(None);
        };
        let listener = crate::exporter::bind(addr, self.cfg.metrics_listen_any)
            .map_err(|e| AgentError::Config(e.to_string()))?;
        let local = listener.local_addr().map_err(|source| AgentError::Io {
            path: addr.to_string(),
            source,
        })?;
        crate::exporter::spawn(listener, self.telemetry.clone()).map_err(|source| {
            AgentError::Io {
                path: local.to_string(),
                source,
            }
        })?;
        tracing::info!(listen = %local, "serving agent metrics at /metrics");
        Ok(Some(local))
    }

    fn update_telemetry(&self) {
        self.telemetry
            .set_state(self.state.phase, self.status().running);
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn device_id(&self) -> Option<&str> {
        self.enrollment.as_ref().map(|e| e.device_id.as_str())
    }

    fn current_link(&self) -> PathBuf {
        self.cfg.data_dir.join("current")
    }

    fn slot_dir(&self, s: Slot) -> PathBuf {
        self.cfg.data_dir.join("slots").join(s.name())
    }

    fn part_path(&self, b: &BlobRef) -> PathBuf {
        self.cfg
            .data_dir
            .join("staging")
            .join(format!("{}.part", b.digest.trim_start_matches("sha256:")))
    }

    fn persist(&mut self, s: State) -> Result<(), AgentError> {
        let path = self.cfg.data_dir.join("state.json");
        let bytes = serde_json::to_vec_pretty(&s).map_err(|e| AgentError::State(e.to_string()))?;
        fsutil::write_atomic(&path, &bytes, 0o644).map_err(io_err(&path))?;
        if s.phase != self.state.phase {
            tracing::info!(from = %self.state.phase, to = %s.phase, "state change");
        }
        if let Some(o) = &s.last_outcome
            && self.state.last_outcome.as_ref() != Some(o)
        {
            self.telemetry.record_outcome(o.kind);
        }
        self.state = s;
        self.update_telemetry();
        Ok(())
    }

    /// Feeds `ev` to the machine, persisting each new state before performing its effects.
    pub fn drive(&mut self, ev: Event) -> Result<(), AgentError> {
        let mut next = Some(ev);
        while let Some(ev) = next.take() {
            let (s, effects) = machine::transition(
                &self.state,
                ev,
                Limits {
                    max_trial_starts: self.cfg.max_trial_starts,
                },
                now(),
            )?;
            self.persist(s)?;
            for eff in effects {
                if let Some(ev) = self.perform(eff)? {
                    next = Some(ev);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Handles a (re)start: resumes or finishes whatever the persisted state says.
    pub fn start(&mut self) -> Result<(), AgentError> {
        tracing::info!(phase = %self.state.phase, trial_starts = self.state.trial_starts, "agent starting");
        // Leftovers of an interrupted atomic write.
        let _ = std::fs::remove_file(self.cfg.data_dir.join(".current.tmp"));
        self.drive(Event::Start)
    }

    /// Enrolls once (if not yet enrolled), storing the credential 0600.
    pub fn ensure_enrolled(&mut self) -> Result<(), AgentError> {
        if self.enrollment.is_some() {
            return Ok(());
        }
        let token =
            self.cfg.enroll_token.clone().ok_or_else(|| {
                AgentError::Config("not enrolled yet: pass --enroll-token".into())
            })?;
        let resp = self
            .client
            .enroll(&EnrollRequest {
                token,
                inventory: self.cfg.inventory.clone(),
                labels: self.cfg.labels.clone(),
            })
            .map_err(AgentError::Enroll)?;
        VerifyingKey::from_pem(&resp.assignment_key_pem)
            .map_err(|e| AgentError::Config(format!("server's assignment key: {e}")))?;
        let e = Enrollment {
            device_id: resp.device_id,
            credential: resp.credential,
            assignment_key_pem: resp.assignment_key_pem,
            trusted_release_keys: resp.trusted_release_keys,
        };
        let path = self.cfg.data_dir.join("device.json");
        let bytes = serde_json::to_vec_pretty(&e).map_err(|e| AgentError::State(e.to_string()))?;
        fsutil::write_atomic(&path, &bytes, 0o600).map_err(io_err(&path))?;
        tracing::info!(device = %e.device_id, "enrolled");
        self.enrollment = Some(e);
        Ok(())
    }

    fn release_keys(&self) -> Vec<VerifyingKey> {
        if !self.cfg.release_keys.is_empty() {
            return self.cfg.release_keys.clone();
        }
        self.enrollment
            .as_ref()
            .map(|e| {
                e.trusted_release_keys
                    .iter()
                    .filter_map(|p| VerifyingKey::from_pem(p).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What `current` points to, as a running release.
    fn status(&self) -> DeviceStatus {
        let s = &self.state;
        let running = match s.phase {
            Phase::Activating | Phase::Trial => {
                s.target
                    .as_ref()
                    .map(|t| edgecd_api::protocol::RunningRelease {
                        app: t.release.app.clone(),
                        version: t.release.version.clone(),
                        bundle_digest: t.release.bundle_digest.clone(),
                        slot: t.slot.name().to_string(),
                    })
            }
            _ => s.active.as_ref().map(machine::Installed::running),
        };
        DeviceStatus {
            phase: s.phase,
            running,
            assignment_version: s.highest_version,
            last_outcome: s.last_outcome.clone(),
        }
    }

    /// Reads the runtime's metrics endpoint; `None` when not configured or unreachable (the
    /// check-in goes on without metrics, and the next one carries the whole delta).
    fn scrape_metrics(&self) -> Option<crate::metrics::Snapshot> {
        let url = self.cfg.metrics_url.as_deref()?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        match agent
            .get(url)
            .call()
            .and_then(|r| r.into_body().with_config().limit(4 << 20).read_to_string())
        {
            Ok(text) => Some(crate::metrics::parse(&text)),
            Err(e) => {
                tracing::warn!(url, error = %e, "could not read the runtime's metrics");
                None
            }
        }
    }

    /// Checks in once; returns the delay before the next check-in.
    pub fn checkin(&mut self) -> Result<Duration, ClientError> {
        let r = self.checkin_inner();
        self.telemetry.record_checkin(r.is_ok(), now());
        r
    }

    fn checkin_inner(&mut self) -> Result<Duration, ClientError> {
        let e = self
            .enrollment
            .clone()
            .ok_or_else(|| ClientError::Config("not enrolled".into()))?;
        let scrape = self.scrape_metrics();
        let mut metrics = scrape
            .as_ref()
            .map(|s| crate::metrics::delta(self.metrics_sent.as_ref(), s));
        if let (Some(t), throttled) = self.telemetry.read_soc() {
            metrics
                .get_or_insert_with(Default::default)
                .record_temperature(t, throttled.unwrap_or(false));
        }
        let req = CheckinRequest {
            inventory: self.cfg.inventory.clone(),
            status: self.status(),
            labels: self.cfg.labels.clone(),
            metrics,
        };
        let etag = if self.pending.is_none() {
            self.etag.as_deref()
        } else {
            None
        };
        let r = self
            .client
            .checkin(&e.device_id, &e.credential, &req, etag)?;
        self.checkins += 1;
        if scrape.is_some() {
            self.metrics_sent = scrape;
        }
        let next = match r {
            Checkin::NotModified { next_secs } => next_secs,
            Checkin::New { response, etag } => {
                self.etag = etag;
                self.pending = response.assignment;
                response.next_checkin_secs
            }
        };
        tracing::info!(checkins = self.checkins, phase = %self.state.phase, "checked in");
        Ok(self
            .cfg
            .checkin_interval
            .unwrap_or(Duration::from_secs(next.clamp(1, 24 * 3600))))
    }

    /// Verifies and installs the pending assignment, if any.
    pub fn handle_pending(&mut self) -> Result<(), AgentError> {
        let Some(signed) = self.pending.clone() else {
            return Ok(());
        };
        if self.refused.contains(&signed.payload) {
            self.pending = None;
            return Ok(());
        }
        let Some(e) = self.enrollment.clone() else {
            return Ok(());
        };
        let key = VerifyingKey::from_pem(&e.assignment_key_pem)
            .map_err(|e| AgentError::State(e.to_string()))?;
        let a = match verify::verify_assignment(
            &signed,
            &key,
            &e.device_id,
            self.state.highest_version,
            now(),
        ) {
            Ok(a) => a,
            Err(Refusal(reason)) => {
                tracing::warn!(%reason, "assignment refused");
                self.remember_refused(&signed.payload);
                self.pending = None;
                return self.drive(Event::Refused {
                    version: 0,
                    release: None,
                    reason,
                });
            }
        };
        let label = format!("{}@{}", a.release.app, a.release.version);
        let same = self.state.active.as_ref().is_some_and(|x| {
            x.app == a.release.app
                && x.version == a.release.version
                && x.bundle_digest == a.release.bundle_digest
        });
        if same {
            self.pending = None;
            return self.drive(Event::AssignedSame { version: a.version });
        }
        if a.version <= self.state.done_version {
            self.pending = None;
            return Ok(());
        }
        if let Err(Refusal(reason)) =
            verify::check_compatible(&a.release.hardware, &a.release.runtime, &self.cfg.inventory)
        {
            tracing::warn!(%reason, release = %label, "release refused");
            self.remember_refused(&signed.payload);
            self.pending = None;
            return self.drive(Event::Refused {
                version: a.version,
                release: Some(label),
                reason,
            });
        }
        tracing::info!(release = %label, version = a.version, "installing assignment");
        self.drive(Event::Assigned {
            version: a.version,
            release: Box::new(a.release),
        })?;
        if self.state.phase == Phase::Idle || self.state.phase == Phase::Committed {
            // Finished (committed, rolled back or refused) unless it failed transiently.
            let failed = self.state.last_outcome.as_ref().is_some_and(|o| {
                o.kind == edgecd_api::protocol::OutcomeKind::Failed
                    && o.assignment_version == a.version
            });
            if !failed {
                self.pending = None;
            }
        }
        Ok(())
    }

    /// Remembers a refused payload so it is not re-verified and re-reported (bounded).
    fn remember_refused(&mut self, payload: &str) {
        if self.refused.len() >= 16 {
            self.refused.remove(0);
        }
        self.refused.push(payload.to_string());
    }

    fn perform(&mut self, eff: Effect) -> Result<Option<Event>, AgentError> {
        match eff {
            Effect::Download => Ok(Some(self.download_all())),
            Effect::Unpack => Ok(Some(self.unpack())),
            Effect::Switch(slot) => {
                let link = self.current_link();
                fsutil::switch_symlink(&link, Some(&Path::new("slots").join(slot.name())))
                    .map_err(io_err(&link))?;
                tracing::info!(slot = slot.name(), "switched current");
                Ok(None)
            }
            Effect::Activate => Ok(Some(Event::Activated(self.activate()))),
            Effect::HealthCheck => Ok(Some(Event::Health(self.health()))),
            Effect::SwitchBack(slot) => {
                let link = self.current_link();
                let target = slot.map(|s| Path::new("slots").join(s.name()));
                fsutil::switch_symlink(&link, target.as_deref()).map_err(io_err(&link))?;
                tracing::warn!(
                    slot = slot.map(Slot::name),
                    reason = self.state.rollback_reason.as_deref().unwrap_or(""),
                    "rolled back current"
                );
                if slot.is_some()
                    && let Err(e) = self.activate()
                {
                    tracing::error!(error = %e, "re-activating the previous release failed");
                }
                Ok(Some(Event::RolledBack))
            }
            Effect::Report => {
                if let Some(o) = &self.state.last_outcome {
                    tracing::info!(kind = ?o.kind, reason = %o.reason, release = o.release.as_deref().unwrap_or(""), "reporting outcome");
                }
                if let Err(e) = self.checkin() {
                    tracing::warn!(error = %e, "could not report to the server; will retry at the next check-in");
                }
                Ok(None)
            }
        }
    }

    fn hook_env(&self) -> HookEnv {
        let current = self.current_link();
        let slot_dir = std::fs::canonicalize(&current).unwrap_or_else(|_| current.clone());
        let release = match self.state.phase {
            Phase::Activating | Phase::Trial => {
                self.state.target.as_ref().map(machine::Target::label)
            }
            _ => self.state.active.as_ref().map(machine::Installed::label),
        };
        HookEnv {
            current,
            slot_dir,
            release: release.unwrap_or_default(),
        }
    }

    fn activate(&self) -> Result<(), String> {
        match &self.cfg.activate_cmd {
            Some(cmd) => hooks::run_cmd(cmd, &self.hook_env(), self.cfg.activate_timeout),
            None => Ok(()),
        }
    }

    fn health(&self) -> Result<(), String> {
        match &self.cfg.health {
            Some(h) => hooks::health(
                h,
                &self.hook_env(),
                self.cfg.health_timeout,
                self.cfg.health_interval,
            ),
            None => Ok(()),
        }
    }

    fn target_release(&self) -> Option<ReleaseRef> {
        self.state.target.as_ref().map(|t| t.release.clone())
    }

    fn refused_event(&self, reason: String) -> Event {
        let t = self.state.target.as_ref();
        tracing::warn!(%reason, "release refused");
        Event::Refused {
            version: t.map_or(0, |t| t.assignment_version),
            release: t.map(machine::Target::label),
            reason,
        }
    }

    /// Downloads the four blobs (resuming), checks digests and sizes, and verifies the
    /// release manifest against the pinned release keys.
    fn download_all(&mut self) -> Event {
        let Some(r) = self.target_release() else {
            return Event::Failed("no target to download".into());
        };
        let Some(e) = self.enrollment.clone() else {
            return Event::Failed("not enrolled".into());
        };
        let keys = self.release_keys();
        if keys.is_empty() {
            return self.refused_event("no trusted release key is pinned on this device".into());
        }
        for (what, b) in [
            ("release manifest", &r.manifest),
            ("release signature", &r.manifest_sig),
            ("bundle signature", &r.bundle_sig),
            ("bundle", &r.bundle),
        ] {
            let part = self.part_path(b);
            let mut attempts = 0;
            loop {
                match self.client.download(
                    &e.credential,
                    b,
                    &part,
                    self.storage.as_ref(),
                    self.cfg.max_download_kbps,
                    &|n| self.telemetry.add_download_bytes(n),
                ) {
                    Ok(()) => break,
                    Err(DownloadError::Refused(reason)) => {
                        let _ = std::fs::remove_file(&part);
                        return self.refused_event(format!("{what}: {reason}"));
                    }
                    Err(DownloadError::Storage { path, source }) => {
                        // Free the space: drop every partial download of this release.
                        for b in [&r.manifest, &r.manifest_sig, &r.bundle_sig, &r.bundle] {
                            let _ = std::fs::remove_file(self.part_path(b));
                        }
                        let reason = if source.raw_os_error() == Some(28)
                            || source.kind() == std::io::ErrorKind::StorageFull
                        {
                            format!("disk full while downloading the {what} ({path}): {source}")
                        } else {
                            format!("writing the {what} ({path}): {source}")
                        };
                        tracing::warn!(%reason, "download failed");
                        return Event::Failed(reason);
                    }
                    Err(DownloadError::Transient(reason)) => {
                        attempts += 1;
                        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                        tracing::warn!(%reason, attempts, have, "download interrupted");
                        if attempts >= 3 {
                            return Event::Failed(format!("downloading the {what}: {reason}"));
                        }
                        std::thread::sleep(Duration::from_millis(200 * attempts));
                    }
                }
            }
            match sha256_file(&part) {
                Ok(d) if d == b.digest => {}
                Ok(d) => {
                    let _ = std::fs::remove_file(&part);
                    return self.refused_event(format!("{what}: digest mismatch: downloaded bytes hash to {d}, signed digest is {}", b.digest));
                }
                Err(err) => return Event::Failed(format!("reading {}: {err}", part.display())),
            }
        }
        let read = |b: &BlobRef| std::fs::read(self.part_path(b));
        let (Ok(manifest), Ok(sig)) = (read(&r.manifest), read(&r.manifest_sig)) else {
            return Event::Failed("reading the downloaded release manifest".into());
        };
        if let Err(Refusal(reason)) = verify::verify_release_manifest(&manifest, &sig, &keys, &r) {
            return self.refused_event(reason);
        }
        Event::Downloaded
    }

    /// Verifies the bundle with the release key and unpacks it into the target slot.
    fn unpack(&mut self) -> Event {
        let Some(t) = self.state.target.clone() else {
            return Event::Failed("no target to unpack".into());
        };
        let r = &t.release;
        let keys = self.release_keys();
        let (manifest, sig, bsig) = match (
            std::fs::read(self.part_path(&r.manifest)),
            std::fs::read(self.part_path(&r.manifest_sig)),
            std::fs::read(self.part_path(&r.bundle_sig)),
        ) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => {
                // Staging lost (e.g. cleaned): download again.
                return Event::Failed("staged files are missing; downloading again".into());
            }
        };
        let key = match verify::verify_release_manifest(&manifest, &sig, &keys, r) {
            Ok(k) => k,
            Err(Refusal(reason)) => return self.refused_event(reason),
        };
        let bsig = match SigstoreBundle::from_json(&bsig) {
            Ok(s) => s,
            Err(e) => return self.refused_event(format!("bundle signature: {e}")),
        };
        let dir = self.slot_dir(t.slot);
        if let Err(e) = fsutil::remove_dir_if_exists(&dir) {
            return Event::Failed(format!("clearing slot {}: {e}", dir.display()));
        }
        let bundle = self.part_path(&r.bundle);
        let u = match self.installer.unpack(&bundle, &dir, &key, &bsig) {
            Ok(u) => u,
            Err(reason) => {
                let _ = fsutil::remove_dir_if_exists(&dir);
                return self.refused_event(format!("bundle: {reason}"));
            }
        };
        let mismatch = if u.digest != r.bundle_digest {
            Some(format!(
                "bundle digest {} differs from the signed release's {}",
                u.digest, r.bundle_digest
            ))
        } else if u.name != r.app || u.version != r.version {
            Some(format!(
                "bundle is {}@{}, the release is {}@{}",
                u.name, u.version, r.app, r.version
            ))
        } else {
            verify::check_compatible(&u.hardware, &u.runtime, &self.cfg.inventory)
                .err()
                .map(|e| e.0)
        };
        if let Some(reason) = mismatch {
            let _ = fsutil::remove_dir_if_exists(&dir);
            return self.refused_event(reason);
        }
        if let Err(e) = fsutil::sync_tree(&dir)
            .and_then(|()| fsutil::sync_dir(&self.cfg.data_dir.join("slots")))
        {
            return Event::Failed(format!("syncing slot {}: {e}", dir.display()));
        }
        // The staged blobs are no longer needed.
        for b in [&r.manifest, &r.manifest_sig, &r.bundle, &r.bundle_sig] {
            let _ = std::fs::remove_file(self.part_path(b));
        }
        Event::Unpacked
    }

    /// One round: enroll if needed, check in, handle a new assignment. Returns the delay
    /// before the next round.
    pub fn sync_once(&mut self) -> Result<Duration, AgentError> {
        self.ensure_enrolled()?;
        match self.checkin() {
            Ok(delay) => {
                self.failures = 0;
                self.handle_pending()?;
                Ok(delay)
            }
            Err(e) => {
                self.failures += 1;
                let base = self.cfg.checkin_interval.unwrap_or(Duration::from_secs(2));
                let delay = base
                    .saturating_mul(1 << self.failures.min(8))
                    .min(Duration::from_secs(300));
                tracing::warn!(error = %e, failures = self.failures, retry_in_ms = delay.as_millis() as u64, "check-in failed; keeping the current release");
                if self.pending.is_some() {
                    self.handle_pending()?;
                }
                Ok(delay)
            }
        }
    }

    /// Runs forever (or until `max_checkins`): start, then sync rounds with jitter.
    pub fn run(&mut self) -> Result<(), AgentError> {
        self.start_exporter()?;
        self.start()?;
        let mut enroll_failures = 0u32;
        loop {
            let delay = match self.sync_once() {
                Ok(d) => d,
                Err(AgentError::Enroll(e)) => {
                    enroll_failures += 1;
                    if let ClientError::Status {
                        status: 401 | 403, ..
                    } = e
                    {
                        return Err(AgentError::Enroll(e));
                    }
                    tracing::warn!(error = %e, "enrollment failed; retrying");
                    Duration::from_secs(1 << enroll_failures.min(6))
                }
                Err(e) => return Err(e),
            };
            if self.cfg.max_checkins.is_some_and(|m| self.checkins >= m) {
                return Ok(());
            }
            std::thread::sleep(jitter(delay));
        }
    }
}

/// Adds 0–20 % random jitter so a fleet does not check in in lockstep.
pub fn jitter(d: Duration) -> Duration {
    let r = rand_core::OsRng.next_u32() % 1000;
    d + d.mul_f64(f64::from(r) / 5000.0)
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}
