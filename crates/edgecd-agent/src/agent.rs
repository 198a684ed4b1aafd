//! The agent's driver: enrollment, the check-in loop (ETag, server-given delay, jitter,
//! back-off), and the IO behind each [`Effect`] of the pure state machine.
//!
//! It always acts on the newest assignment: the one being handled is taken out of `pending`
//! first, so one that arrives during the install (a check-in while downloading, or the
//! report at its end) is kept and handled right after; a newer one that names another
//! release interrupts a download (see `machine`). Check-ins go on during a download, carrying
//! its progress. Every answer's signed timestamp is checked (freeze attack). Refusals are
//! remembered by assignment signature and retried when the device changes.
//!
//! Data directory layout:
//! ```text
//! DATA/device.json              enrollment: id, credential, pinned keys (0600)
//! DATA/state.json               the machine's persisted state (atomic writes)
//! DATA/slots/a, DATA/slots/b    the two install slots
//! DATA/current -> slots/X       what runs (switched with rename(2))
//! DATA/staging/<hex>.part       downloads in progress (resumable; only the target's are kept)
//! DATA/assignment.json          the highest accepted signed assignment (resync proof)
//! DATA/images.json              runtime images pulled (podman mode; pruned beyond the slots')
//! ```
//!
//! Podman mode (`Config::podman`, see `runtime`): a release whose manifest pins an image gets
//! the image's signature checked (when the release carries one) before any download, the image
//! pulled by digest and its digest checked before the switch, and runs in that image; health is
//! the runtime's readiness plus the golden vectors through its API; a rollback, or a crash loop
//! after commit, brings the previous image back with the previous model. Each app runs in a
//! container of its own (`edgecd-infer`, then `edgecd-infer-APP` on a port of its own, kept in
//! `apps/APP/runtime-port`).

use crate::client::{
    Checkin, Client, ClientError, DownloadError, DownloadOptions, StampHeaders, Storage,
};
use crate::exporter::Telemetry;
use crate::fsutil;
use crate::hooks::{self, HealthCheck, HookEnv};
use crate::install::BundleInstaller;
use crate::machine::{self, Effect, Event, Limits, Slot, State};
use crate::verify::{self, Refusal};
use edgecd_api::protocol::{
    AppStatus, BlobRef, CheckinRequest, DeviceReport, DeviceRequest, DeviceStatus, Diagnostics,
    DownloadProgress, EnrollRequest, Inventory, PROTOCOL_VERSION, Phase, ReleaseRef, RuntimeHealth,
    SignedAssignment,
};
use edgecd_sign::{SigstoreBundle, VerifyingKey};
use rand_core::RngCore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Stops an app's runtime when the server removes the app (`--deactivate-cmd`).
    pub deactivate_cmd: Option<String>,
    pub health: Option<HealthCheck>,
    pub activate_timeout: Duration,
    pub health_timeout: Duration,
    pub health_interval: Duration,
    pub max_download_kbps: Option<u64>,
    /// A download that receives no byte for this long is dropped and resumed (no total
    /// time budget: a large model on a slow link may take hours).
    pub download_stall_timeout: Duration,
    /// Most bytes a release's files may take in staging (`None`: limited by free space).
    pub staging_budget_bytes: Option<u64>,
    /// PEM of the CA the server's certificate must chain to.
    pub ca_pem: Option<Vec<u8>>,
    /// Release keys pinned by configuration (override those from enrollment).
    pub release_keys: Vec<VerifyingKey>,
    pub inventory: Inventory,
    pub max_trial_starts: u32,
    /// How many apps the device holds side by side (`--max-apps`), each with its own
    /// slots; reported in the inventory so the server checks it before placing one more.
    pub max_apps: u32,
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
    /// Run releases that pin a runtime image under podman (`None`: native mode only).
    pub podman: Option<crate::runtime::PodmanConfig>,
    /// The native runtime's log file (`--runtime-log`), for `edgecd device logs`.
    pub runtime_log: Option<PathBuf>,
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
    /// The app being worked on (its state, slots, staging); the others wait in `parked`.
    u: Unit,
    /// Which unit `u` is: `""` for the data directory's own (the first app, laid out as
    /// before several apps), else the app whose unit lives in `apps/APP`.
    loaded: String,
    /// The other apps' units, by the same key.
    parked: BTreeMap<String, Unit>,
    enrollment: Option<Enrollment>,
    etag: Option<String>,
    /// What the device is (configuration; [`Agent::set_inventory`] when it changes).
    inventory: Inventory,
    /// Expiry of the newest valid signed timestamp seen (`None`: the server sent none yet).
    fresh_until: Option<u64>,
    /// Since when answers have come without a valid, unexpired timestamp.
    stale_since: Option<u64>,
    /// The device's assignment version on the server, per the last valid timestamp.
    server_version: Option<u64>,
    /// Send the highest accepted assignment with the next check-ins (the server is behind).
    send_proof: bool,
    /// When the next check-in is due (also during a download).
    next_checkin_at: Instant,
    failures: u32,
    checkins: u64,
    /// The runtime's counters as of the last successful check-in (metrics are deltas).
    metrics_sent: Option<crate::metrics::Snapshot>,
    /// The same per app, when `--metrics-url` has `{app}` (each app's runtime its own).
    metrics_sent_by_app: BTreeMap<String, crate::metrics::Snapshot>,
    /// What the local exporter (`--metrics-listen`) reports.
    telemetry: Arc<Telemetry>,
    /// Podman mode, when configured and podman works here.
    podman: Option<crate::runtime::Podman>,
    /// An operator's logs/diagnose request not answered yet.
    device_request: Option<DeviceRequest>,
    /// The id of the last request answered (the server repeats a request until its answer
    /// is stored).
    answered_request: Option<String>,
    /// Recent SoC temperature readings `(unix seconds, °C)`, for a diagnosis.
    temperatures: std::collections::VecDeque<(u64, f64)>,
}

/// One app's install: its directory (`state.json`, `slots/`, `current`, `staging/`), the
/// machine's state and what the driver keeps for it between rounds.
struct Unit {
    dir: PathBuf,
    state: State,
    /// The newest assignment of this app received and not yet handled.
    pending: Option<SignedAssignment>,
    /// Assignments refused (not re-verified or re-reported until something changes).
    refused: Vec<RefusalMemo>,
    /// The signature of a refused assignment being retried (its version is "done").
    retrying: Option<String>,
    /// Progress of the download in flight, reported with check-ins.
    download: Option<DownloadProgress>,
    /// Since when the committed runtime's container has been seen down (podman mode).
    runtime_down_since: Option<Instant>,
}

impl Unit {
    /// Opens (creating) the unit in `dir` and loads its persisted state.
    fn open(dir: PathBuf) -> Result<Self, AgentError> {
        for d in [dir.clone(), dir.join("slots"), dir.join("staging")] {
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let state_path = dir.join("state.json");
        let state = match std::fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| AgentError::State(format!("{}: {e}", state_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io_err(&state_path)(e)),
        };
        Ok(Unit {
            dir,
            state,
            pending: None,
            refused: Vec::new(),
            retrying: None,
            download: None,
            runtime_down_since: None,
        })
    }

    /// The app this unit holds (installed, being installed, or last tried).
    fn app(&self) -> Option<String> {
        let s = &self.state;
        s.active
            .as_ref()
            .map(|a| a.app.clone())
            .or_else(|| s.target.as_ref().map(|t| t.release.app.clone()))
            .or_else(|| s.previous.as_ref().map(|a| a.app.clone()))
            .or_else(|| {
                s.last_outcome
                    .as_ref()
                    .and_then(|o| o.release.as_deref())
                    .and_then(|r| r.split_once('@'))
                    .map(|(a, _)| a.to_string())
            })
    }

    /// What `current` points to, as this app's status.
    fn status(&self) -> AppStatus {
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
                        image: t.image.clone(),
                    })
            }
            _ => s.active.as_ref().map(machine::Installed::running),
        };
        let downloading = matches!(s.phase, Phase::Downloading | Phase::Verifying);
        AppStatus {
            app: self.app().unwrap_or_default(),
            phase: s.phase,
            running,
            assignment_version: s.highest_version,
            last_outcome: s.last_outcome.clone(),
            download: self.download.clone().filter(|_| downloading),
        }
    }
}

/// Whether `app` may name a directory under `apps/` (release names are checked by the
/// bundle format; this keeps a path out of it whatever comes).
fn app_dir_name_ok(app: &str) -> bool {
    !app.is_empty()
        && app.len() <= 64
        && !app.starts_with('.')
        && app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// SoC temperature readings a diagnosis reports.
const TEMPERATURE_HISTORY: usize = 120;

/// How long the committed runtime's container may stay exited before it counts as a crash
/// loop (podman restarts a crash at once; a container that stays down does not come back).
const RUNTIME_DOWN_GRACE: Duration = Duration::from_secs(5);

/// In an app's directory under `apps/`: the host port of its runtime container (podman mode).
const RUNTIME_PORT_FILE: &str = "runtime-port";

/// The runtime port kept in an app's directory, once chosen (see `Agent::runtime_port`).
fn kept_port(dir: &Path) -> Option<u16> {
    std::fs::read_to_string(dir.join(RUNTIME_PORT_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

/// The runtime image of the release a unit's `current` points to (`None`: native).
fn unit_image(u: &Unit) -> Option<String> {
    match u.state.phase {
        Phase::Activating | Phase::Trial => u.state.target.as_ref()?.image.clone(),
        _ => u.state.active.as_ref()?.image.clone(),
    }
}

/// A refused assignment: identified by its signature (an unsigned or wrongly signed copy of a
/// payload never blocks the genuine one) and the conditions under which it was refused.
#[derive(Debug, Clone)]
struct RefusalMemo {
    /// Kept to retry it when the device changes (the server's ETag stays the same).
    assignment: SignedAssignment,
    signature: String,
    inventory: Inventory,
    /// Refused for want of this much free space: retried once the device has it.
    needs_free_bytes: Option<u64>,
    /// The signature verified (the refusal is about the release, not a forged copy).
    verified: bool,
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
        let u = Unit::open(cfg.data_dir.clone())?;
        let mut parked = BTreeMap::new();
        let apps_dir = cfg.data_dir.join("apps");
        for entry in std::fs::read_dir(&apps_dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if app_dir_name_ok(&name) && entry.path().join("state.json").is_file() {
                parked.insert(name, Unit::open(entry.path())?);
            }
        }
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
        let mut inventory = cfg.inventory.clone();
        inventory.max_apps = Some(cfg.max_apps.max(1));
        let (_, total) = crate::report::disk(&cfg.data_dir);
        inventory.storage_mb = total.map(|t| t >> 20);
        let podman = cfg.podman.clone().map(crate::runtime::Podman::new).filter(|p| {
            let ok = p.available();
            if !ok {
                tracing::warn!(podman = %p.cfg.podman.display(), "podman does not work here: releases run in native mode");
            }
            ok
        });
        let agent = Self {
            cfg,
            client,
            installer,
            storage,
            u,
            loaded: String::new(),
            parked,
            enrollment,
            etag: None,
            inventory,
            fresh_until: None,
            stale_since: None,
            server_version: None,
            send_proof: false,
            next_checkin_at: Instant::now(),
            failures: 0,
            checkins: 0,
            metrics_sent: None,
            metrics_sent_by_app: BTreeMap::new(),
            telemetry,
            podman,
            device_request: None,
            answered_request: None,
            temperatures: Default::default(),
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
            .set_state(self.u.state.phase, self.status().running);
    }

    /// The state of the data directory's own unit (the first app).
    pub fn state(&self) -> &State {
        if self.loaded.is_empty() {
            &self.u.state
        } else {
            &self.parked[""].state
        }
    }

    /// The state of `app`'s unit, if the device holds it.
    pub fn app_state(&self, app: &str) -> Option<&State> {
        self.units()
            .into_iter()
            .find(|(_, u)| u.app().as_deref() == Some(app))
            .map(|(_, u)| &u.state)
    }

    /// The device changed (runtime installed, accelerator fitted…): sent with the next
    /// check-in, and refusals made under the old inventory are retried.
    pub fn set_inventory(&mut self, inventory: Inventory) {
        self.inventory = inventory;
    }

    pub fn device_id(&self) -> Option<&str> {
        self.enrollment.as_ref().map(|e| e.device_id.as_str())
    }

    fn current_link(&self) -> PathBuf {
        self.u.dir.join("current")
    }

    fn slot_dir(&self, s: Slot) -> PathBuf {
        self.u.dir.join("slots").join(s.name())
    }

    fn part_path(&self, b: &BlobRef) -> PathBuf {
        staging_path(&self.u.dir, b)
    }

    /// Makes `key`'s unit the one worked on (opening it if new), parking the other.
    fn switch_to(&mut self, key: &str) -> Result<(), AgentError> {
        if self.loaded == key {
            return Ok(());
        }
        let next = match self.parked.remove(key) {
            Some(u) => u,
            None => Unit::open(self.unit_dir(key))?,
        };
        let prev = std::mem::replace(&mut self.u, next);
        let prev_key = std::mem::replace(&mut self.loaded, key.to_string());
        self.parked.insert(prev_key, prev);
        Ok(())
    }

    fn unit_dir(&self, key: &str) -> PathBuf {
        if key.is_empty() {
            self.cfg.data_dir.clone()
        } else {
            self.cfg.data_dir.join("apps").join(key)
        }
    }

    /// Every unit's key, the data directory's own first.
    fn unit_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = std::iter::once(self.loaded.clone())
            .chain(self.parked.keys().cloned())
            .collect();
        keys.sort();
        keys
    }

    /// The units as they are now (the loaded one included), by key.
    fn units(&self) -> Vec<(&str, &Unit)> {
        let mut all: Vec<(&str, &Unit)> = std::iter::once((self.loaded.as_str(), &self.u))
            .chain(self.parked.iter().map(|(k, u)| (k.as_str(), u)))
            .collect();
        all.sort_by_key(|(k, _)| *k);
        all
    }

    /// The unit an assignment of `app` goes to: the one holding the app, else the data
    /// directory's own while it holds nothing, else a new one under `apps/` (up to
    /// `--max-apps`). `None`: no room (the server checks the same limit before assigning).
    fn unit_for(&self, app: &str) -> Option<String> {
        let units = self.units();
        if let Some((k, _)) = units.iter().find(|(_, u)| u.app().as_deref() == Some(app)) {
            return Some(k.to_string());
        }
        if units.iter().any(|(k, u)| k.is_empty() && u.app().is_none()) {
            return Some(String::new());
        }
        if let Some((k, _)) = units.iter().find(|(k, u)| *k == app && u.app().is_none()) {
            return Some(k.to_string());
        }
        let held = units.iter().filter(|(_, u)| u.app().is_some()).count();
        if held >= self.cfg.max_apps.max(1) as usize || !app_dir_name_ok(app) {
            return None;
        }
        Some(app.to_string())
    }

    /// Queues a signed assignment with the unit of its app (read from the payload unverified:
    /// the unit verifies it before anything is done).
    fn route(&mut self, signed: SignedAssignment) {
        let peek = serde_json::from_str::<edgecd_api::protocol::Assignment>(&signed.payload).ok();
        let app = peek
            .as_ref()
            .map(|a| a.release.app.clone())
            .unwrap_or_default();
        if peek.as_ref().is_some_and(|a| a.remove)
            && !self
                .units()
                .iter()
                .any(|(_, u)| u.app().as_deref() == Some(app.as_str()))
        {
            // The removal of an app this device does not hold (any more): nothing to do.
            return;
        }
        // A new unit accepts nothing older than what the device accepted already: an old
        // assignment of an app removed since cannot be replayed into a fresh unit.
        let floor = self.highest_version();
        let key = if app.is_empty() {
            // Unreadable: the loaded unit refuses it with the reason.
            Some(self.loaded.clone())
        } else {
            self.unit_for(&app)
        };
        let Some(key) = key else {
            tracing::warn!(%app, max_apps = self.cfg.max_apps, "an assignment for one app more than this agent holds (--max-apps): ignored");
            return;
        };
        if key == self.loaded {
            self.u.pending = Some(signed);
        } else {
            let dir = self.unit_dir(&key);
            match self.parked.entry(key) {
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    e.get_mut().pending = Some(signed);
                }
                std::collections::btree_map::Entry::Vacant(e) => match Unit::open(dir) {
                    Ok(mut u) => {
                        if u.app().is_none() {
                            u.state.highest_version = u.state.highest_version.max(floor);
                        }
                        u.pending = Some(signed);
                        e.insert(u);
                    }
                    Err(err) => {
                        tracing::error!(error = %err, %app, "cannot open the app's directory")
                    }
                },
            }
        }
    }

    /// The highest assignment version any app accepted.
    fn highest_version(&self) -> u64 {
        self.units()
            .iter()
            .map(|(_, u)| u.state.highest_version)
            .max()
            .unwrap_or(0)
    }

    fn any_pending(&self) -> bool {
        self.units().iter().any(|(_, u)| u.pending.is_some())
    }

    fn persist(&mut self, s: State) -> Result<(), AgentError> {
        let path = self.u.dir.join("state.json");
        let bytes = serde_json::to_vec_pretty(&s).map_err(|e| AgentError::State(e.to_string()))?;
        fsutil::write_atomic(&path, &bytes, 0o644).map_err(io_err(&path))?;
        if s.phase != self.u.state.phase {
            tracing::info!(from = %self.u.state.phase, to = %s.phase, "state change");
        }
        if let Some(o) = &s.last_outcome
            && self.u.state.last_outcome.as_ref() != Some(o)
        {
            self.telemetry.record_outcome(o.kind);
        }
        self.u.state = s;
        self.update_telemetry();
        Ok(())
    }

    /// Feeds `ev` to the machine, persisting each new state before performing its effects.
    pub fn drive(&mut self, ev: Event) -> Result<(), AgentError> {
        let mut next = Some(ev);
        while let Some(ev) = next.take() {
            let (s, effects) = machine::transition(
                &self.u.state,
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
        tracing::info!(phase = %self.u.state.phase, trial_starts = self.u.state.trial_starts, "agent starting");
        // Leftovers of an interrupted atomic write.
        for key in self.unit_keys() {
            self.switch_to(&key)?;
            let _ = std::fs::remove_file(self.u.dir.join(".current.tmp"));
            self.drive(Event::Start)?;
        }
        self.watch_runtime()
    }

    /// Podman mode, at rest: starts the committed release's container when it is missing
    /// (e.g. after a reboot) and rolls back, image and model together, when it crash-loops.
    pub fn watch_runtime(&mut self) -> Result<(), AgentError> {
        for key in self.unit_keys() {
            self.switch_to(&key)?;
            self.watch_unit_runtime()?;
        }
        Ok(())
    }

    fn watch_unit_runtime(&mut self) -> Result<(), AgentError> {
        let (Some(p), Phase::Committed) = (self.unit_podman(), self.u.state.phase) else {
            return Ok(());
        };
        let Some(image) = self.u.state.active.as_ref().and_then(|a| a.image.clone()) else {
            return Ok(());
        };
        let reason = match p.watch(&image) {
            crate::runtime::Health::Running => {
                self.u.runtime_down_since = None;
                return Ok(());
            }
            crate::runtime::Health::Missing => {
                tracing::warn!(%image, "the runtime container is missing: starting it");
                if let Err(e) = self.activate() {
                    tracing::error!(error = %e, "starting the runtime container failed");
                }
                return Ok(());
            }
            crate::runtime::Health::Looping(reason) => Some(reason),
            // Podman restarts a crashed runtime at once: down for a while is down for good.
            crate::runtime::Health::Down(reason) => match self.u.runtime_down_since {
                Some(t) if t.elapsed() >= RUNTIME_DOWN_GRACE => Some(reason),
                Some(_) => None,
                None => {
                    self.u.runtime_down_since = Some(Instant::now());
                    None
                }
            },
        };
        if let Some(reason) = reason {
            self.u.runtime_down_since = None;
            if self.u.state.previous.is_some() {
                tracing::warn!(%reason, "runtime crash loop after commit: rolling back image and model");
                self.drive(Event::CrashLoop(reason))?;
            } else {
                tracing::error!(%reason, "runtime crash loop, and no previous release to go back to");
            }
        }
        Ok(())
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
                inventory: self.inventory.clone(),
                labels: self.cfg.labels.clone(),
                protocol: PROTOCOL_VERSION.into(),
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

    /// Each app's install state; the device-wide fields describe the data directory's own
    /// unit (the first app), for servers of protocol 1.1.
    fn status(&self) -> DeviceStatus {
        let units = self.units();
        let apps: Vec<AppStatus> = units
            .iter()
            .filter(|(_, u)| u.app().is_some())
            .map(|(_, u)| u.status())
            .collect();
        let first = units
            .iter()
            .find(|(k, u)| k.is_empty() && u.app().is_some())
            .or_else(|| units.iter().find(|(_, u)| u.app().is_some()))
            .or_else(|| units.first())
            .map(|(_, u)| u.status());
        let first = first.unwrap_or(AppStatus {
            app: String::new(),
            phase: Phase::Idle,
            running: None,
            assignment_version: 0,
            last_outcome: None,
            download: None,
        });
        DeviceStatus {
            phase: first.phase,
            running: first.running,
            assignment_version: self.highest_version(),
            last_outcome: first.last_outcome,
            download: first.download,
            stale_since: self.stale_since,
            assignment_proof: if self.send_proof {
                self.load_proof()
            } else {
                None
            },
            apps,
        }
    }

    /// Reads the runtime's metrics endpoint (`app`'s, with `{app}` in the URL, or `{port}`:
    /// its runtime container's port in podman mode); `None` when
    /// not configured or unreachable (the check-in goes on without metrics, and the next one
    /// carries the whole delta).
    fn scrape_metrics(&self, app: Option<&str>) -> Option<crate::metrics::Snapshot> {
        let url = self.cfg.metrics_url.as_deref()?;
        let url = &match app {
            Some(app) => {
                let url = url.replace("{app}", app);
                if !url.contains("{port}") {
                    url
                } else {
                    // The port its container was given; only read here (a port is chosen
                    // when a container first starts, never by a scrape).
                    let port = self
                        .units()
                        .into_iter()
                        .find(|(_, u)| u.app().as_deref() == Some(app))
                        .and_then(|(k, u)| match (k.is_empty(), &self.podman) {
                            (true, Some(p)) => Some(p.cfg.publish.port()),
                            (false, Some(_)) => kept_port(&u.dir),
                            (_, None) => None,
                        });
                    let Some(port) = port else {
                        tracing::debug!(%app, "no runtime container port for this app (yet): its metrics are not read");
                        return None;
                    };
                    url.replace("{port}", &port.to_string())
                }
            }
            None => url.to_string(),
        };
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
        let delay = match &r {
            Ok(d) => *d,
            Err(_) => self.cfg.checkin_interval.unwrap_or(Duration::from_secs(10)),
        };
        self.next_checkin_at = Instant::now() + delay;
        r
    }

    fn checkin_inner(&mut self) -> Result<Duration, ClientError> {
        let e = self
            .enrollment
            .clone()
            .ok_or_else(|| ClientError::Config("not enrolled".into()))?;
        let per_app = self
            .cfg
            .metrics_url
            .as_deref()
            .is_some_and(|u| u.contains("{app}") || u.contains("{port}"));
        let scrape = if per_app {
            None
        } else {
            self.scrape_metrics(None)
        };
        let mut metrics = scrape
            .as_ref()
            .map(|s| crate::metrics::delta(self.metrics_sent.as_ref(), s));
        // Several apps, each runtime with its own endpoint (`{app}` or `{port}` in
        // `--metrics-url`):
        // each app's deltas go separately, for the gates of that app's rollouts.
        let mut app_scrapes = BTreeMap::new();
        let mut app_metrics = BTreeMap::new();
        if per_app {
            let apps: Vec<String> = self.units().iter().filter_map(|(_, u)| u.app()).collect();
            for app in apps {
                if let Some(s) = self.scrape_metrics(Some(&app)) {
                    let d = crate::metrics::delta(self.metrics_sent_by_app.get(&app), &s);
                    app_metrics.insert(app.clone(), d);
                    app_scrapes.insert(app, s);
                }
            }
        }
        if let (Some(t), throttled) = self.telemetry.read_soc() {
            if self.temperatures.len() == TEMPERATURE_HISTORY {
                self.temperatures.pop_front();
            }
            self.temperatures.push_back((now(), t));
            metrics
                .get_or_insert_with(Default::default)
                .record_temperature(t, throttled.unwrap_or(false));
        }
        let req = CheckinRequest {
            app_metrics,
            inventory: self.inventory.clone(),
            status: self.status(),
            labels: self.cfg.labels.clone(),
            metrics,
            protocol: PROTOCOL_VERSION.into(),
        };
        let etag = if !self.any_pending() {
            self.etag.as_deref()
        } else {
            None
        };
        let (r, stamp) = self
            .client
            .checkin_stamped(&e.device_id, &e.credential, &req, etag)?;
        self.checkins += 1;
        if scrape.is_some() {
            self.metrics_sent = scrape;
        }
        self.metrics_sent_by_app.extend(app_scrapes);
        if req.status.assignment_proof.is_some() {
            self.send_proof = false;
        }
        self.check_freshness(stamp.as_ref(), &e);
        let next = match r {
            Checkin::NotModified { next_secs } => next_secs,
            Checkin::New { response, etag } => {
                self.etag = etag;
                if let Some(p) = &mut self.podman {
                    p.server_mirror = response.image_mirror.clone();
                }
                // Protocol 1.2: every app's assignment; 1.1: the one.
                let list = if response.assignments.is_empty() {
                    response.assignment.into_iter().collect()
                } else {
                    response.assignments
                };
                for signed in list {
                    self.route(signed);
                }
                if let Some(r) = response.device_request
                    && self.answered_request.as_deref() != Some(r.id.as_str())
                {
                    self.device_request = Some(r);
                }
                response.next_checkin_secs
            }
        };
        tracing::debug!(checkins = self.checkins, phase = %self.u.state.phase, "checked in");
        Ok(self
            .cfg
            .checkin_interval
            .unwrap_or(Duration::from_secs(next.clamp(1, 24 * 3600))))
    }

    /// Checks the answer's signed timestamp (TUF's freeze attack): a valid, unexpired one
    /// renews freshness; once the last one has expired without a new one, the answers are
    /// stale and the device says so (`staleSince`) until fresh ones come back. Also learns the
    /// server's assignment version: above ours, the ETag is dropped (fetch it); below ours,
    /// the server is behind (restored database) and gets our signed proof.
    fn check_freshness(&mut self, stamp: Option<&StampHeaders>, e: &Enrollment) {
        let now = now();
        let valid = stamp.and_then(|(text, sig)| {
            let key = VerifyingKey::from_pem(&e.assignment_key_pem).ok()?;
            verify::verify_timestamp(text, sig, &key, &e.device_id, now)
                .map_err(|Refusal(reason)| tracing::warn!(%reason, "check-in answer's timestamp refused"))
                .ok()
        });
        match valid {
            Some(t) => {
                if self.stale_since.take().is_some() {
                    tracing::info!("fresh signed timestamps again");
                }
                self.fresh_until = Some(t.expires);
                self.server_version = Some(t.assignment_version);
                if t.assignment_version > self.highest_version() && !self.any_pending() {
                    // A 304 for an ETag older than the server's assignment: fetch it.
                    self.etag = None;
                }
                if t.assignment_version < self.highest_version() {
                    self.send_proof = true;
                }
            }
            None => {
                if let Some(until) = self.fresh_until
                    && until <= now
                    && self.stale_since.is_none()
                {
                    tracing::warn!(
                        expired_at = until,
                        "no fresh signed timestamp from the server since it expired: answers may be replayed or stale (freeze attack?); reporting it"
                    );
                    self.stale_since = Some(until);
                }
            }
        }
    }

    /// Handles the newest pending assignment and, when another arrived meanwhile (say a
    /// rollback reported at the end of an install), that one right after.
    pub fn handle_pending(&mut self) -> Result<(), AgentError> {
        // Each app in turn; one that installs checks in meanwhile, which may queue more for
        // any app, so go round until none is left (bounded).
        for _ in 0..4 {
            for key in self.unit_keys() {
                if key != self.loaded && !self.parked.contains_key(&key) {
                    continue; // removed meanwhile
                }
                self.switch_to(&key)?;
                self.handle_unit_pending()?;
            }
            if !self.units().iter().any(|(_, u)| {
                u.pending.is_some()
                    && matches!(
                        u.state.phase,
                        Phase::Idle | Phase::Committed | Phase::Downloading | Phase::Verifying
                    )
            }) {
                break;
            }
        }
        Ok(())
    }

    fn handle_unit_pending(&mut self) -> Result<(), AgentError> {
        self.requeue_changed_refusal();
        let r = self.handle_pending_rounds();
        if self.u.state.target.is_none() {
            // Nothing in flight (installed, refused, cancelled): staging holds nothing.
            self.prune_staging(None);
        }
        r
    }

    fn handle_pending_rounds(&mut self) -> Result<(), AgentError> {
        for _ in 0..8 {
            if !matches!(
                self.u.state.phase,
                Phase::Idle | Phase::Committed | Phase::Downloading | Phase::Verifying
            ) {
                // Mid-activation (not after a normal drive): handled once it settles.
                return Ok(());
            }
            let Some(signed) = self.u.pending.take() else {
                return Ok(());
            };
            if let Some(retry) = self.handle_one(signed)? {
                // Failed transiently: retry later, unless something newer arrived meanwhile.
                if self.u.pending.is_none() {
                    self.u.pending = Some(retry);
                }
                return Ok(());
            }
        }
        Ok(())
    }

    /// Whether the conditions of refusal `m` changed (inventory, enough free space now).
    fn device_changed_since(&self, m: &RefusalMemo) -> bool {
        m.inventory != self.inventory
            || m.needs_free_bytes
                .is_some_and(|need| self.free_bytes().is_none_or(|f| f >= need))
    }

    /// Whether `signed` was refused before under the same conditions.
    fn refused_before(&mut self, signed: &SignedAssignment) -> bool {
        let Some(i) = self
            .u
            .refused
            .iter()
            .position(|m| m.signature == signed.signature)
        else {
            return false;
        };
        if self.device_changed_since(&self.u.refused[i]) {
            tracing::info!("retrying an assignment refused before: the device changed since");
            self.u.refused.remove(i);
            self.u.retrying = Some(signed.signature.clone());
            return false;
        }
        if !self.u.refused[i].verified {
            // A forged copy again: keep asking for the whole answer (not 304).
            self.etag = None;
        }
        true
    }

    /// With nothing newer pending, queues again the newest refused assignment whose
    /// conditions changed (the server answers 304 for it: it is the same assignment).
    fn requeue_changed_refusal(&mut self) {
        if self.u.pending.is_some() {
            return;
        }
        if let Some(i) = (0..self.u.refused.len())
            .rev()
            .find(|&i| self.u.refused[i].verified && self.device_changed_since(&self.u.refused[i]))
        {
            let m = self.u.refused.remove(i);
            tracing::info!("the device changed since an assignment was refused: retrying it");
            self.u.retrying = Some(m.signature);
            self.u.pending = Some(m.assignment);
        }
    }

    /// Remembers a refusal so it is not re-verified and re-reported (bounded).
    fn remember_refused(
        &mut self,
        signed: &SignedAssignment,
        needs_free_bytes: Option<u64>,
        verified: bool,
    ) {
        if self.u.refused.len() >= 16 {
            self.u.refused.remove(0);
        }
        self.u.refused.push(RefusalMemo {
            assignment: signed.clone(),
            signature: signed.signature.clone(),
            inventory: self.inventory.clone(),
            needs_free_bytes,
            verified,
        });
    }

    fn free_bytes(&self) -> Option<u64> {
        self.storage.free_bytes(&self.u.dir.join("staging"))
    }

    /// Verifies and installs one assignment. Returns it when it failed transiently (retry).
    fn handle_one(
        &mut self,
        signed: SignedAssignment,
    ) -> Result<Option<SignedAssignment>, AgentError> {
        if self.refused_before(&signed) {
            return Ok(None);
        }
        let Some(e) = self.enrollment.clone() else {
            return Ok(Some(signed));
        };
        let key = VerifyingKey::from_pem(&e.assignment_key_pem)
            .map_err(|e| AgentError::State(e.to_string()))?;
        let a = match verify::verify_assignment(
            &signed,
            &key,
            &e.device_id,
            self.u.state.highest_version,
            now(),
        ) {
            Ok(a) => a,
            Err(Refusal(reason)) => {
                tracing::warn!(%reason, "assignment refused");
                if self
                    .server_version
                    .is_some_and(|v| v < self.u.state.highest_version)
                    || reason.contains("lower than the highest accepted version")
                {
                    self.send_proof = true;
                }
                self.remember_refused(&signed, None, false);
                // Ask for the whole answer again: the genuine assignment has this ETag too.
                self.etag = None;
                let phase = self.u.state.phase;
                if matches!(phase, Phase::Downloading | Phase::Verifying) {
                    // A bad copy never disturbs the install in flight.
                    return Ok(None);
                }
                self.drive(Event::Refused {
                    version: 0,
                    release: None,
                    reason,
                })?;
                return Ok(None);
            }
        };
        if a.remove {
            return self.remove_app(&signed, &a);
        }
        let label = format!("{}@{}", a.release.app, a.release.version);
        if let Some(held) = self.u.app()
            && held != a.release.app
        {
            // Routed here by an unverified payload, or the app changed under it: not this
            // unit's (the next check-in routes it again).
            tracing::warn!(release = %label, unit = %held, "assignment for another app: not installed over this one");
            return Ok(None);
        }
        let same = self.u.state.active.as_ref().is_some_and(|x| {
            x.app == a.release.app
                && x.version == a.release.version
                && x.bundle_digest == a.release.bundle_digest
        });
        let in_flight = self.u.state.target.as_ref();
        if in_flight.is_some_and(|t| t.assignment_version >= a.version) {
            // Already being installed (or superseded by what is).
            return Ok(None);
        }
        if same {
            self.save_proof(&signed);
            if in_flight.is_some() {
                tracing::info!(release = %label, version = a.version, "the running release is assigned again: cancelling the install in flight");
            }
            self.drive(Event::AssignedSame { version: a.version })?;
            return Ok(None);
        }
        let retry = self
            .u
            .retrying
            .take()
            .is_some_and(|s| s == signed.signature);
        if a.version <= self.u.state.done_version && !retry {
            return Ok(None);
        }
        let refusal =
            verify::check_compatible(&a.release.hardware, &a.release.runtime, &self.inventory)
                .err()
                .map(|r| (r.0, None))
                .or_else(|| self.staging_refusal(&a.release));
        if let Some((reason, needs_free_bytes)) = refusal {
            tracing::warn!(%reason, release = %label, "release refused");
            self.remember_refused(&signed, needs_free_bytes, true);
            self.drive(Event::Refused {
                version: a.version,
                release: Some(label),
                reason,
            })?;
            return Ok(None);
        }
        tracing::info!(release = %label, version = a.version, "installing assignment");
        self.save_proof(&signed);
        self.drive(Event::Assigned {
            version: a.version,
            release: Box::new(a.release),
        })?;
        let failed = self.u.state.last_outcome.as_ref().is_some_and(|o| {
            o.kind == edgecd_api::protocol::OutcomeKind::Failed && o.assignment_version == a.version
        });
        if failed && matches!(self.u.state.phase, Phase::Idle | Phase::Committed) {
            return Ok(Some(signed));
        }
        Ok(None)
    }

    /// The server removed this unit's app: stops its runtime (podman, `--deactivate-cmd`),
    /// deletes its files (the data directory's own unit is emptied, keeping its version
    /// floor; another app's directory goes) and reports. Waits while an install runs.
    fn remove_app(
        &mut self,
        signed: &SignedAssignment,
        a: &edgecd_api::protocol::Assignment,
    ) -> Result<Option<SignedAssignment>, AgentError> {
        let app = a.release.app.clone();
        if self.u.app().as_deref() != Some(app.as_str()) {
            return Ok(None);
        }
        if !matches!(self.u.state.phase, Phase::Idle | Phase::Committed) {
            // An install in flight finishes (or rolls back) first.
            return Ok(Some(signed.clone()));
        }
        self.save_proof(signed);
        tracing::info!(%app, version = a.version, "the server removed this app: stopping it and deleting its slots");
        if let Some(p) = self.unit_podman() {
            p.stop();
        }
        if let Some(cmd) = &self.cfg.deactivate_cmd
            && let Err(e) = hooks::run_cmd(cmd, &self.hook_env(), self.cfg.activate_timeout)
        {
            tracing::warn!(error = %e, %app, "the deactivation command failed; removing the app anyway");
        }
        if self.loaded.is_empty() {
            let link = self.current_link();
            fsutil::switch_symlink(&link, None).map_err(io_err(&link))?;
            for s in [Slot::A, Slot::B] {
                let d = self.slot_dir(s);
                fsutil::remove_dir_if_exists(&d).map_err(io_err(&d))?;
            }
            self.prune_staging(None);
            self.u.refused.clear();
            self.u.retrying = None;
            self.persist(State {
                highest_version: a.version,
                done_version: a.version,
                ..State::default()
            })?;
        } else {
            let key = self.loaded.clone();
            let dir = self.u.dir.clone();
            self.switch_to("")?;
            self.parked.remove(&key);
            fsutil::remove_dir_if_exists(&dir).map_err(io_err(&dir))?;
        }
        if let Err(e) = self.checkin() {
            tracing::warn!(error = %e, "could not report the removal; will at the next check-in");
        }
        Ok(None)
    }

    /// Whether a release's files fit in staging: its budget (permanent for this version)
    /// and the free space (retried once there is enough). `(reason, free bytes needed)`.
    fn staging_refusal(&self, r: &ReleaseRef) -> Option<(String, Option<u64>)> {
        let total: u64 = release_blobs(r).iter().map(|b| b.size).sum();
        if let Some(budget) = self.cfg.staging_budget_bytes
            && total > budget
        {
            return Some((
                format!(
                    "release {}@{} needs {} of staging, over this device's staging budget of {} (--staging-budget-mb)",
                    r.app,
                    r.version,
                    mib(total),
                    mib(budget)
                ),
                None,
            ));
        }
        let have = self.staged_bytes(r);
        // Staging the rest, then unpacking the bundle into a slot (about its size again).
        let need = total - have + r.bundle.size;
        match self.free_bytes() {
            Some(free) if free < need => Some((
                format!(
                    "not enough free space for release {}@{}: needs {} (download and unpack), {} free under {}; free some space and it is retried",
                    r.app,
                    r.version,
                    mib(need),
                    mib(free),
                    self.cfg.data_dir.display()
                ),
                Some(need),
            )),
            _ => None,
        }
    }

    /// Keeps the highest accepted signed assignment (the proof for a server that is behind).
    fn save_proof(&self, signed: &SignedAssignment) {
        let version = |s: &SignedAssignment| {
            serde_json::from_str::<edgecd_api::protocol::Assignment>(&s.payload)
                .map_or(0, |a| a.version)
        };
        if self
            .load_proof()
            .is_some_and(|p| version(&p) > version(signed))
        {
            // Another app's assignment is newer: that one proves the device's counter.
            return;
        }
        let path = self.cfg.data_dir.join("assignment.json");
        if let Ok(bytes) = serde_json::to_vec(signed)
            && let Err(e) = fsutil::write_atomic(&path, &bytes, 0o600)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not keep the accepted assignment");
        }
    }

    fn load_proof(&self) -> Option<SignedAssignment> {
        let bytes = std::fs::read(self.cfg.data_dir.join("assignment.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// During a download: checks in when due (reporting progress). Returns `false` when a
    /// newer, valid assignment for another release supersedes the target (stop downloading).
    fn checkin_while_installing(&mut self) -> bool {
        if Instant::now() < self.next_checkin_at {
            return true;
        }
        if let Err(e) = self.checkin() {
            tracing::warn!(error = %e, "check-in during the download failed; downloading on");
            return true;
        }
        !self.superseded()
    }

    /// Whether the pending assignment is valid, newer than the target, and names another
    /// release (a copy that does not verify never stops an install). A removal of the app
    /// does not: the install runs to its end and the app is removed right after.
    fn superseded(&self) -> bool {
        let (Some(p), Some(t), Some(e)) = (&self.u.pending, &self.u.state.target, &self.enrollment)
        else {
            return false;
        };
        let Ok(key) = VerifyingKey::from_pem(&e.assignment_key_pem) else {
            return false;
        };
        verify::verify_assignment(p, &key, &e.device_id, self.u.state.highest_version, now())
            .is_ok_and(|a| !a.remove && a.version > t.assignment_version && a.release != t.release)
    }

    fn perform(&mut self, eff: Effect) -> Result<Option<Event>, AgentError> {
        match eff {
            Effect::Download => Ok(self.download_all()),
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
                    reason = self.u.state.rollback_reason.as_deref().unwrap_or(""),
                    "rolled back current"
                );
                if slot.is_some() {
                    if let Err(e) = self.activate() {
                        tracing::error!(error = %e, "re-activating the previous release failed");
                    }
                } else if let Some(p) = self.unit_podman() {
                    // Nothing to go back to: the failed release's runtime must not keep running.
                    p.stop();
                }
                Ok(Some(Event::RolledBack))
            }
            Effect::Report => {
                self.prune_images();
                if let Some(o) = &self.u.state.last_outcome {
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
        let release = match self.u.state.phase {
            Phase::Activating | Phase::Trial => {
                self.u.state.target.as_ref().map(machine::Target::label)
            }
            _ => self.u.state.active.as_ref().map(machine::Installed::label),
        };
        HookEnv {
            current,
            slot_dir,
            release: release.unwrap_or_default(),
            app: self.u.app().unwrap_or_default(),
        }
    }

    /// Podman, for the unit it serves: the data directory's own (the first app) runs in the
    /// container `--runtime-listen` names, each other app in its own (see [`Self::podman_for`]).
    fn unit_podman(&self) -> Option<crate::runtime::Podman> {
        self.podman_for(&self.loaded, &self.u.dir)
    }

    /// Podman for unit `key` (in `dir`): the first app's container is `edgecd-infer`,
    /// published at `--runtime-listen`; another app's is `edgecd-infer-APP`, published on the
    /// same address at a port above it, chosen once and kept in `apps/APP/runtime-port`
    /// (see [`Self::runtime_port`]).
    fn podman_for(&self, key: &str, dir: &Path) -> Option<crate::runtime::Podman> {
        let base = self.podman.as_ref()?;
        if key.is_empty() {
            return Some(base.clone());
        }
        let mut p = base.clone();
        p.cfg.container = format!("{}-{key}", base.cfg.container);
        match self.runtime_port(key, dir) {
            Ok(port) => p.cfg.publish.set_port(port),
            Err(e) => {
                tracing::error!(error = %e, app = key, "cannot choose the app's runtime port");
                return None;
            }
        }
        Some(p)
    }

    /// The host port of app unit `key`'s runtime container: the one kept in its
    /// `runtime-port` file, else the lowest port above `--runtime-listen`'s that no other
    /// unit holds and that can be bound now (then kept, so it never moves).
    fn runtime_port(&self, key: &str, dir: &Path) -> Result<u16, String> {
        if let Some(port) = kept_port(dir) {
            return Ok(port);
        }
        let file = dir.join(RUNTIME_PORT_FILE);
        let base = self
            .podman
            .as_ref()
            .map(|p| p.cfg.publish)
            .ok_or("not in podman mode")?;
        let held: Vec<u16> = self
            .units()
            .into_iter()
            .filter(|(k, _)| *k != key)
            .filter_map(|(k, u)| {
                if k.is_empty() {
                    Some(base.port())
                } else {
                    kept_port(&u.dir)
                }
            })
            .collect();
        let port = (base.port().saturating_add(1)..=u16::MAX)
            .filter(|p| !held.contains(p))
            .find(|p| std::net::TcpListener::bind((base.ip(), *p)).is_ok())
            .ok_or_else(|| format!("no free port above {base} for the app's runtime"))?;
        fsutil::write_atomic(&file, port.to_string().as_bytes(), 0o644)
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
        tracing::info!(
            app = key,
            port,
            "the app's runtime container will listen on this port"
        );
        Ok(port)
    }

    /// The runtime image of the release `current` points to (podman mode).
    fn current_image(&self) -> Option<String> {
        self.podman.as_ref()?;
        unit_image(&self.u)
    }

    /// Podman mode: every app's runtime container that should run, with its image, the
    /// first app's first.
    fn containers(&self) -> Vec<(crate::runtime::Podman, String)> {
        if self.podman.is_none() {
            return Vec::new();
        }
        self.units()
            .into_iter()
            .filter_map(|(k, u)| {
                let image = unit_image(u)?;
                Some((self.podman_for(k, &u.dir)?, image))
            })
            .collect()
    }

    /// Starts what `current` points to: its runtime image under podman (podman mode, the
    /// release pins one; otherwise any runtime container is stopped), then the activation
    /// command.
    fn activate(&self) -> Result<(), String> {
        if let Some(p) = self.unit_podman() {
            match self.current_image() {
                Some(image) => {
                    let env = self.hook_env();
                    let profile_path = env.slot_dir.join(edgecd_api::layout::PROFILE_FILE);
                    let profile: edgecd_api::profile::Profile = serde_json::from_slice(
                        &std::fs::read(&profile_path)
                            .map_err(|e| format!("reading {}: {e}", profile_path.display()))?,
                    )
                    .map_err(|e| format!("{}: {e}", profile_path.display()))?;
                    tracing::info!(%image, release = %env.release, "starting the runtime container");
                    p.start(&crate::runtime::RunSpec {
                        image,
                        slot_dir: env.slot_dir,
                        release: env.release,
                        hardware: profile.hardware,
                    })
                    .map_err(|e| format!("starting the runtime container: {e}"))?;
                }
                None => p.stop(),
            }
        }
        match &self.cfg.activate_cmd {
            Some(cmd) => hooks::run_cmd(cmd, &self.hook_env(), self.cfg.activate_timeout),
            None => Ok(()),
        }
    }

    fn health(&self) -> Result<(), String> {
        if let (Some(p), Some(_)) = (self.unit_podman(), self.current_image()) {
            let alive = || match p.state() {
                Some(s) if s.status == "exited" || s.status == "stopped" => Err(format!(
                    "the runtime container {} with exit code {}: {}",
                    s.status,
                    s.exit_code,
                    p.logs_tail()
                )),
                Some(s) if s.restarts > p.cfg.max_restarts => Err(format!(
                    "the runtime container restarted {} times: {}",
                    s.restarts,
                    p.logs_tail()
                )),
                Some(_) => Ok(()),
                None => Err("the runtime container is gone".into()),
            };
            crate::runtime::check_health(
                &p.cfg.base_url(),
                &self.hook_env().slot_dir,
                self.cfg.health_timeout,
                self.cfg.health_interval,
                &alive,
            )?;
        }
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
        self.u.state.target.as_ref().map(|t| t.release.clone())
    }

    /// Removes the target's staged files (a refused release leaves nothing behind).
    fn clear_staging(&self, r: &ReleaseRef) {
        for b in release_blobs(r) {
            let _ = std::fs::remove_file(self.part_path(b));
        }
    }

    /// Bytes of `r`'s files already staged (resumable downloads).
    fn staged_bytes(&self, r: &ReleaseRef) -> u64 {
        release_blobs(r)
            .iter()
            .map(|b| std::fs::metadata(self.part_path(b)).map_or(0, |m| m.len().min(b.size)))
            .sum()
    }

    /// Removes staged files that do not belong to `keep` (left by a superseded, refused or
    /// finished install): staging only ever holds the target's files, or nothing.
    fn prune_staging(&self, keep: Option<&ReleaseRef>) {
        let keep: Vec<PathBuf> = keep
            .map(release_blobs)
            .into_iter()
            .flatten()
            .map(|b| self.part_path(b))
            .collect();
        let dir = self.u.dir.join("staging");
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if !keep.contains(&p) {
                tracing::debug!(path = %p.display(), "removing a stale staged file");
                let _ = std::fs::remove_file(&p);
            }
        }
    }

    fn refused_event(&self, reason: String) -> Event {
        let t = self.u.state.target.as_ref();
        if let Some(t) = t {
            self.clear_staging(&t.release);
        }
        tracing::warn!(%reason, "release refused");
        Event::Refused {
            version: t.map_or(0, |t| t.assignment_version),
            release: t.map(machine::Target::label),
            reason,
        }
    }

    /// Downloads one blob into staging (resuming; no byte for the stall timeout drops the
    /// connection and resumes with Range; three attempts in a row without a byte fail),
    /// checking in when due. `Ok(false)`: a newer assignment superseded the target.
    fn fetch(&mut self, what: &str, b: &BlobRef, credential: &str) -> Result<bool, Event> {
        let client = self.client.clone();
        let storage = self.storage.clone();
        let part = self.part_path(b);
        let opts = DownloadOptions {
            max_kbps: self.cfg.max_download_kbps,
            stall_timeout: self.cfg.download_stall_timeout,
        };
        let mut idle_attempts = 0u32;
        loop {
            let r = client.download(credential, b, &part, storage.as_ref(), opts, &mut |n| {
                self.telemetry.add_download_bytes(n);
                if let Some(d) = &mut self.u.download {
                    d.done_bytes += n;
                }
                self.checkin_while_installing()
            });
            match r {
                Ok(()) => break,
                Err(DownloadError::Interrupted(at)) => {
                    tracing::info!(%at, "a newer assignment supersedes this download: stopping it");
                    return Ok(false);
                }
                Err(DownloadError::Refused(reason)) => {
                    let _ = std::fs::remove_file(&part);
                    return Err(self.refused_event(format!("{what}: {reason}")));
                }
                Err(DownloadError::Storage { path, source }) => {
                    // Free the space: drop every partial download of this release.
                    if let Some(r) = self.target_release() {
                        self.clear_staging(&r);
                    }
                    let reason = if source.raw_os_error() == Some(28)
                        || source.kind() == std::io::ErrorKind::StorageFull
                    {
                        format!("disk full while downloading the {what} ({path}): {source}")
                    } else {
                        format!("writing the {what} ({path}): {source}")
                    };
                    tracing::warn!(%reason, "download failed");
                    return Err(Event::Failed(reason));
                }
                Err(DownloadError::Transient { reason, progressed }) => {
                    idle_attempts = if progressed { 0 } else { idle_attempts + 1 };
                    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                    tracing::warn!(%reason, idle_attempts, have, "download interrupted; resuming");
                    if idle_attempts >= 3 {
                        return Err(Event::Failed(format!("downloading the {what}: {reason}")));
                    }
                    std::thread::sleep(Duration::from_millis(200 * u64::from(idle_attempts)));
                    if !self.checkin_while_installing() {
                        return Ok(false);
                    }
                }
            }
        }
        match sha256_file(&part) {
            Ok(d) if d == b.digest => Ok(true),
            Ok(d) => {
                let _ = std::fs::remove_file(&part);
                Err(self.refused_event(format!(
                    "{what}: digest mismatch: downloaded bytes hash to {d}, signed digest is {}",
                    b.digest
                )))
            }
            Err(err) => Err(Event::Failed(format!("reading {}: {err}", part.display()))),
        }
    }

    /// Downloads the release's blobs (resuming) and checks their digests and sizes. The
    /// release manifest's signature and key, and the bundle signature's key, are checked
    /// before a byte of the bundle is fetched. `None`: superseded (stop here).
    fn download_all(&mut self) -> Option<Event> {
        let Some(r) = self.target_release() else {
            return Some(Event::Failed("no target to download".into()));
        };
        let Some(e) = self.enrollment.clone() else {
            return Some(Event::Failed("not enrolled".into()));
        };
        let keys = self.release_keys();
        if keys.is_empty() {
            return Some(
                self.refused_event("no trusted release key is pinned on this device".into()),
            );
        }
        self.prune_staging(Some(&r));
        let version = self
            .u
            .state
            .target
            .as_ref()
            .map_or(0, |t| t.assignment_version);
        self.u.download = Some(DownloadProgress {
            release: format!("{}@{}", r.app, r.version),
            assignment_version: version,
            done_bytes: self.staged_bytes(&r),
            total_bytes: release_blobs(&r).iter().map(|b| b.size).sum(),
        });
        let ev = self.download_steps(&r, &e.credential, &keys);
        self.u.download = None;
        ev
    }

    fn download_steps(
        &mut self,
        r: &ReleaseRef,
        credential: &str,
        keys: &[VerifyingKey],
    ) -> Option<Event> {
        for (what, b) in [
            ("release manifest", &r.manifest),
            ("release signature", &r.manifest_sig),
        ] {
            match self.fetch(what, b, credential) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(ev) => return Some(ev),
            }
        }
        let read = |b: &BlobRef| std::fs::read(staging_path(&self.u.dir, b));
        let (Ok(manifest), Ok(sig)) = (read(&r.manifest), read(&r.manifest_sig)) else {
            return Some(Event::Failed(
                "reading the downloaded release manifest".into(),
            ));
        };
        let key = match verify::verify_release_manifest(&manifest, &sig, keys, r) {
            Ok(k) => k,
            Err(Refusal(reason)) => return Some(self.refused_event(reason)),
        };
        let image = match self.runtime_image(&manifest, &key) {
            Ok(i) => i,
            Err(Refusal(reason)) => return Some(self.refused_event(reason)),
        };
        match self.fetch("bundle signature", &r.bundle_sig, credential) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(ev) => return Some(ev),
        }
        let bsig = std::fs::read(self.part_path(&r.bundle_sig)).unwrap_or_default();
        if let Err(Refusal(reason)) = verify::check_bundle_signature_key(&bsig, &key) {
            return Some(self.refused_event(reason));
        }
        match self.fetch("bundle", &r.bundle, credential) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(ev) => return Some(ev),
        }
        if let (Some(p), Some(image)) = (&self.podman, image) {
            tracing::info!(%image, "pulling the release's runtime image");
            self.remember_pulled(&image);
            match p.pull(&image) {
                Ok(()) => {}
                Err(crate::runtime::RuntimeError::Refused(reason)) => {
                    return Some(self.refused_event(reason));
                }
                Err(crate::runtime::RuntimeError::Failed(reason)) => {
                    return Some(Event::Failed(reason));
                }
            }
        }
        Some(Event::Downloaded)
    }

    /// Podman mode: the runtime image the verified release manifest pins, after checking its
    /// signature (when the release carries one) with the key that signed the release.
    /// `Ok(None)`: native mode, or the release pins no image.
    fn runtime_image(
        &self,
        manifest: &[u8],
        key: &VerifyingKey,
    ) -> Result<Option<String>, Refusal> {
        if self.podman.is_none() {
            return Ok(None);
        }
        let m = edgecd_bundle::release::ReleaseManifest::from_json(manifest)
            .map_err(|e| Refusal(format!("release manifest: {e}")))?;
        if m.image.is_some() {
            m.verify_image_signature(key)
                .map_err(|e| Refusal(format!("runtime image refused: {e}")))?;
        }
        Ok(m.image)
    }

    fn images_path(&self) -> PathBuf {
        self.cfg.data_dir.join("images.json")
    }

    fn pulled_images(&self) -> Vec<String> {
        std::fs::read(self.images_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Records an image before it is pulled (so a pull cut short is pruned too).
    fn remember_pulled(&self, image: &str) {
        let mut list = self.pulled_images();
        if !list.iter().any(|i| i == image) {
            list.push(image.to_string());
            if let Ok(b) = serde_json::to_vec_pretty(&list)
                && let Err(e) = fsutil::write_atomic(&self.images_path(), &b, 0o644)
            {
                tracing::warn!(error = %e, "could not record a pulled image");
            }
        }
    }

    /// Removes pulled images that neither slot's release (nor the install in flight) uses:
    /// the last two are kept, older ones go.
    fn prune_images(&self) {
        let Some(p) = &self.podman else { return };
        // Every app's slots keep their images (two apps may share one).
        let keep: Vec<String> = self
            .units()
            .iter()
            .flat_map(|(_, u)| {
                let s = &u.state;
                [
                    s.active.as_ref().and_then(|a| a.image.clone()),
                    s.previous.as_ref().and_then(|a| a.image.clone()),
                    s.target.as_ref().and_then(|t| t.image.clone()),
                ]
            })
            .flatten()
            .collect();
        let pulled = self.pulled_images();
        if pulled.iter().all(|i| keep.contains(i)) {
            return;
        }
        p.prune(&pulled, &keep);
        let left: Vec<String> = pulled.into_iter().filter(|i| keep.contains(i)).collect();
        if let Ok(b) = serde_json::to_vec_pretty(&left) {
            let _ = fsutil::write_atomic(&self.images_path(), &b, 0o644);
        }
    }

    /// Verifies the bundle with the release key and unpacks it into the target slot.
    fn unpack(&mut self) -> Event {
        let Some(t) = self.u.state.target.clone() else {
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
            verify::check_compatible(&u.hardware, &u.runtime, &self.inventory)
                .err()
                .map(|e| e.0)
        };
        if let Some(reason) = mismatch {
            let _ = fsutil::remove_dir_if_exists(&dir);
            return self.refused_event(reason);
        }
        if let Err(e) =
            fsutil::sync_tree(&dir).and_then(|()| fsutil::sync_dir(&self.u.dir.join("slots")))
        {
            return Event::Failed(format!("syncing slot {}: {e}", dir.display()));
        }
        let image = match self.runtime_image(&manifest, &key) {
            Ok(i) => i,
            Err(Refusal(reason)) => {
                let _ = fsutil::remove_dir_if_exists(&dir);
                return self.refused_event(reason);
            }
        };
        // The staged blobs are no longer needed.
        self.clear_staging(r);
        Event::Unpacked { image }
    }

    /// Uploads the answer to an operator's logs/diagnose request, if one is waiting; a
    /// failure is logged and retried after the next check-in.
    fn answer_device_request(&mut self) {
        let (Some(req), Some(e)) = (self.device_request.clone(), self.enrollment.clone()) else {
            return;
        };
        let n = req.lines.clamp(1, 5000) as usize;
        let now = now();
        let containers = self.containers();
        let runtime = match &self.cfg.runtime_log {
            _ if !containers.is_empty() => {
                let several = containers.len() > 1;
                let mut all = Vec::new();
                for (p, _) in &containers {
                    let lines = match p.logs(n) {
                        Ok(text) => crate::report::podman_lines(&text),
                        Err(err) => vec![(String::new(), format!("podman logs failed: {err}"))],
                    };
                    // Several runtimes: each line says whose it is.
                    all.extend(lines.into_iter().map(|(ts, l)| {
                        let l = if several {
                            format!("[{}] {l}", p.cfg.container)
                        } else {
                            l
                        };
                        (ts, l)
                    }));
                }
                all
            }
            Some(path) => crate::report::file_tail(path, n, now),
            None => vec![],
        };
        let (lines, truncated) = crate::report::lines(crate::logbuf::recent(n), runtime, now);
        let diagnostics = req.diagnose.then(|| self.diagnostics(now));
        let report = DeviceReport {
            request_id: req.id.clone(),
            lines,
            truncated,
            diagnostics,
        };
        match self
            .client
            .upload_report(&e.device_id, &e.credential, &report)
        {
            Ok(()) => {
                tracing::info!(request = %req.id, lines = report.lines.len(), diagnose = req.diagnose, "sent the logs an operator asked for");
                self.answered_request = Some(req.id);
                self.device_request = None;
            }
            Err(ClientError::Status { status: 409, .. }) => {
                // A newer request replaced it: the next check-in brings that one.
                self.device_request = None;
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not send the logs an operator asked for; retrying")
            }
        }
    }

    /// What a diagnosis reports from the device itself.
    fn diagnostics(&self, now: u64) -> Diagnostics {
        let (free, total) = crate::report::disk(&self.cfg.data_dir);
        let containers = self.containers();
        let runtime = if !containers.is_empty() {
            let mut healthy = true;
            let detail: Vec<String> = containers
                .iter()
                .map(|(p, image)| match p.state() {
                    Some(s) => {
                        healthy &= s.status == "running" && s.restarts <= p.cfg.max_restarts;
                        format!(
                            "container {} {} (image {image}), {} restarts, last exit code {}",
                            p.cfg.container, s.status, s.restarts, s.exit_code
                        )
                    }
                    None => {
                        healthy = false;
                        format!("container {} is gone (image {image})", p.cfg.container)
                    }
                })
                .collect();
            RuntimeHealth {
                kind: "podman".into(),
                healthy: Some(healthy),
                detail: detail.join("; "),
            }
        } else if let Some(h) = &self.cfg.health {
            let kind = match h {
                HealthCheck::Cmd(_) => "health-cmd",
                HealthCheck::Url(_) => "health-url",
            };
            let r = hooks::health(
                h,
                &self.hook_env(),
                Duration::from_secs(3),
                Duration::from_millis(500),
            );
            RuntimeHealth {
                kind: kind.into(),
                healthy: Some(r.is_ok()),
                detail: match r {
                    Ok(()) => "healthy".into(),
                    Err(e) => e,
                },
            }
        } else {
            RuntimeHealth {
                kind: "none".into(),
                healthy: None,
                detail: "no health check configured (--health-url, --health-cmd or --podman)"
                    .into(),
            }
        };
        Diagnostics {
            collected_at: crate::report::rfc3339(now),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            phase: self.u.state.phase,
            slots: crate::report::slots(&self.u.dir, &self.u.state),
            free_disk_bytes: free,
            total_disk_bytes: total,
            temperatures: self.temperatures.iter().copied().collect(),
            throttled: self.telemetry.sample().throttled,
            runtime,
        }
    }

    /// One round: enroll if needed, check in, handle a new assignment. Returns the delay
    /// before the next round.
    pub fn sync_once(&mut self) -> Result<Duration, AgentError> {
        self.ensure_enrolled()?;
        match self.checkin() {
            Ok(delay) => {
                self.failures = 0;
                self.handle_pending()?;
                self.watch_runtime()?;
                self.answer_device_request();
                Ok(delay)
            }
            Err(e) => {
                self.failures += 1;
                let base = self.cfg.checkin_interval.unwrap_or(Duration::from_secs(2));
                let delay = base
                    .saturating_mul(1 << self.failures.min(8))
                    .min(Duration::from_secs(300));
                tracing::warn!(error = %e, failures = self.failures, retry_in_ms = delay.as_millis() as u64, "check-in failed; keeping the current release");
                if self.any_pending() {
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

/// The four files of a release, in download order.
fn release_blobs(r: &ReleaseRef) -> [&BlobRef; 4] {
    [&r.manifest, &r.manifest_sig, &r.bundle_sig, &r.bundle]
}

/// Where `b` is staged while it downloads.
fn staging_path(data_dir: &Path, b: &BlobRef) -> PathBuf {
    data_dir
        .join("staging")
        .join(format!("{}.part", b.digest.trim_start_matches("sha256:")))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    edgecd_bundle::digest::sha256_reader(std::fs::File::open(path)?).map(|(d, _)| d)
}
