//! Rollout notifications: the engine's `Effect::Notify` events, sent to named channels —
//! Slack incoming webhooks (Block Kit), Microsoft Teams workflow webhooks (Adaptive Card) and
//! generic JSON webhooks signed with HMAC-SHA256.
//!
//! - `mod.rs` (this file): the notifications file (`edgecd server --notifications FILE`,
//!   [`NotifyConfig::load`], validated on load), the [`Notification`] record built from a
//!   rollout and its decision, and the [`Notifier`] handle with its per-channel counters
//!   (read by `/metrics`). [`Notifier::send`] never blocks: each channel has a bounded queue
//!   drained by its own background task, so a slow or hanging receiver delays neither the
//!   controller nor the other channels. A notification is queued only once it is saved in the
//!   outbox ([`outbox`]); a full queue leaves it pending there, with a warning, counted
//!   (`result="deferred"`), and a sweep every [`NotifyConfig::sweep_interval`] queues it later.
//! - [`outbox`]: the `notification_outbox` table — pending notifications survive restarts
//!   and crashes, and are queued again when the notifier starts.
//! - [`payload`]: pure builders of the Slack, Teams and generic JSON bodies and of the
//!   webhook signature.
//! - [`deliver`]: the HTTP POST (ureq on tokio's blocking pool, a timeout per attempt) and the
//!   retry loop (exponential backoff; 5xx, 429, connection errors and timeouts are retried,
//!   `Retry-After` honoured up to the backoff cap, other 4xx are not).
//!
//! Secrets: webhook URLs (a Slack or Teams URL is itself a credential) and HMAC keys are
//! held in [`Secret`], whose `Debug` is redacted. Logs and errors name the channel and the
//! URL's host only; error text from the YAML parser and the HTTP client passes through
//! [`redact`] first.

pub mod deliver;
pub mod outbox;
pub mod payload;

use crate::store::SharedStore;
use edgecd_rollout::engine::{Decision, Rollout, RolloutEvent, describe};
use edgecd_rollout::{GateResult, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

pub use crate::util::Secret;
pub use outbox::{OutboxError, Queued};

/// What a channel speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// Slack incoming webhook: a Block Kit message.
    Slack,
    /// Microsoft Teams workflow webhook: an Adaptive Card in a `message` envelope.
    Teams,
    /// Generic JSON webhook, signed with HMAC-SHA256.
    Webhook,
}

impl ChannelKind {
    /// The `type` in the notifications file and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Slack => "slack",
            ChannelKind::Teams => "teams",
            ChannelKind::Webhook => "webhook",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "slack" => Some(ChannelKind::Slack),
            "teams" => Some(ChannelKind::Teams),
            "webhook" => Some(ChannelKind::Webhook),
            _ => None,
        }
    }
}

/// One validated channel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    /// Where to POST. A credential: never logged.
    pub url: Secret,
    /// The URL's host (and port): what logs and errors show instead of the URL.
    pub host: String,
    /// The channel's runbook link (a rollout's `runbook_url` overrides it).
    pub runbook_url: Option<String>,
    /// HMAC-SHA256 key of a `webhook` channel.
    pub secret: Option<Secret>,
}

/// Delivery policy (the `retry:` block of the notifications file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per notification, the first included.
    pub attempts: u32,
    /// Delay after the first failed attempt; doubled after each further one.
    pub initial_backoff: Duration,
    /// Cap of the backoff and of a receiver's `Retry-After`.
    pub max_backoff: Duration,
    /// Timeout of one attempt (connect, send, response).
    pub timeout: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The validated notifications file. The default has no channels.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Base of the rollout links in messages; default: derived from the listen address.
    pub public_url: Option<String>,
    pub channels: BTreeMap<String, ChannelConfig>,
    pub retry: RetryConfig,
    /// Notifications each channel may have queued in memory; more wait in the outbox (counted
    /// as deferred) for the sweep.
    pub queue_capacity: usize,
    /// How often pending outbox rows nobody queued are queued (not in the file; tests shorten
    /// it). Default 2 s.
    pub sweep_interval: Duration,
    /// Slack and Teams messages carry Approve / Abort / Rollback buttons (not in the file:
    /// set when the server takes ChatOps actions, see `crate::chatops`).
    pub chat_actions: bool,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            channels: BTreeMap::new(),
            retry: RetryConfig::default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            chat_actions: false,
        }
    }
}

const DEFAULT_QUEUE_CAPACITY: usize = 256;

/// Why a notifications file was refused. Messages never contain a webhook URL or secret.
#[derive(Debug, thiserror::Error)]
pub enum NotifyConfigError {
    #[error("cannot read the notifications file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the notifications file is not valid YAML for edgecd: {0}")]
    Parse(String),
    #[error("the notifications file needs fixing: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// The file as written (see the README's "Notifications" section).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    #[serde(default)]
    public_url: Option<String>,
    #[serde(default)]
    channels: BTreeMap<String, ChannelRepr>,
    #[serde(default)]
    retry: RetryRepr,
    #[serde(default)]
    queue_capacity: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelRepr {
    #[serde(rename = "type")]
    kind: String,
    url: String,
    #[serde(default)]
    runbook_url: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    secret_file: Option<std::path::PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RetryRepr {
    attempts: u32,
    initial_backoff_ms: u64,
    max_backoff_ms: u64,
    timeout_ms: u64,
}

impl Default for RetryRepr {
    fn default() -> Self {
        let d = RetryConfig::default();
        Self {
            attempts: d.attempts,
            initial_backoff_ms: d.initial_backoff.as_millis() as u64,
            max_backoff_ms: d.max_backoff.as_millis() as u64,
            timeout_ms: d.timeout.as_millis() as u64,
        }
    }
}

/// Checks an absolute http(s) URL; returns its host (and port) for logs. The error does not
/// repeat the URL (it may be a secret).
pub fn check_url(url: &str) -> Result<String, String> {
    if !url.contains("://") {
        return Err("is not absolute: write https://HOST/…".into());
    }
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("is not a valid URL ({e})"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("has scheme {other:?}: use https:// (or http://)")),
        None => return Err("is not absolute: write https://HOST/…".into()),
    }
    let auth = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or("has no host")?;
    Ok(match auth.port_u16() {
        Some(p) => format!("{}:{p}", auth.host()),
        None => auth.host().to_string(),
    })
}

impl NotifyConfig {
    /// Reads and validates the notifications file; `secret_env` names are looked up in the
    /// process environment and relative `secret_file` paths are relative to the file.
    pub fn load(path: &Path) -> Result<Self, NotifyConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| NotifyConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(path)
                && m.permissions().mode() & 0o004 != 0
            {
                tracing::warn!(
                    path = %path.display(),
                    "the notifications file is world-readable, and its webhook URLs are credentials: chmod 600 it"
                );
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, base, &|k| std::env::var(k).ok())
    }

    /// Parses and validates the file's text: `env` resolves `secret_env`, `base_dir`
    /// relative `secret_file` paths. Every problem is reported, each saying what to fix.
    pub fn from_yaml(
        text: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, NotifyConfigError> {
        let repr: FileRepr = serde_yaml::from_str(text)
            .map_err(|e| NotifyConfigError::Parse(redact(&e.to_string(), &[])))?;
        let mut problems = vec![];
        let public_url = repr.public_url.and_then(|u| match check_url(&u) {
            Ok(_) => Some(u.trim_end_matches('/').to_string()),
            Err(why) => {
                problems.push(format!("public_url {u:?} {why}"));
                None
            }
        });
        let mut channels = BTreeMap::new();
        for (name, c) in repr.channels {
            let mut bad = |m: String| problems.push(format!("channel `{name}`: {m}"));
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                bad("use only letters, digits, '-', '_' and '.' in channel names".into());
                continue;
            }
            let Some(kind) = ChannelKind::parse(&c.kind) else {
                bad(format!(
                    "unknown type {:?}: use slack, teams or webhook",
                    c.kind
                ));
                continue;
            };
            let host = match check_url(&c.url) {
                Ok(h) => h,
                Err(why) => {
                    bad(format!("url {why} (the URL is not shown: it is a secret)"));
                    continue;
                }
            };
            if let Some(r) = &c.runbook_url
                && let Err(why) = check_url(r)
            {
                bad(format!("runbook_url {r:?} {why}"));
            }
            let secret = match (kind, c.secret_env, c.secret_file) {
                (ChannelKind::Webhook, Some(_), Some(_)) => {
                    bad("set only one of secret_env and secret_file".into());
                    None
                }
                (ChannelKind::Webhook, None, None) => {
                    bad("a webhook channel needs secret_env or secret_file: the HMAC-SHA256 key receivers check X-Edgecd-Signature-256 with".into());
                    None
                }
                (ChannelKind::Webhook, Some(var), None) => {
                    match env(&var).filter(|v| !v.is_empty()) {
                        Some(v) => Some(Secret::new(v)),
                        None => {
                            bad(format!(
                                "secret_env {var} is not set or empty: export {var} with the HMAC key, or use secret_file"
                            ));
                            None
                        }
                    }
                }
                (ChannelKind::Webhook, None, Some(file)) => {
                    let path = base_dir.join(&file);
                    match std::fs::read_to_string(&path) {
                        Ok(s) if !s.trim_end_matches(['\r', '\n']).is_empty() => {
                            Some(Secret::new(s.trim_end_matches(['\r', '\n'])))
                        }
                        Ok(_) => {
                            bad(format!("secret_file {} is empty", path.display()));
                            None
                        }
                        Err(e) => {
                            bad(format!("cannot read secret_file {}: {e}", path.display()));
                            None
                        }
                    }
                }
                (_, None, None) => None,
                (_, _, _) => {
                    bad(format!(
                        "secret_env/secret_file only apply to webhook channels ({} URLs carry their own credential)",
                        kind.as_str()
                    ));
                    None
                }
            };
            channels.insert(
                name.clone(),
                ChannelConfig {
                    name,
                    kind,
                    url: Secret::new(c.url),
                    host,
                    runbook_url: c.runbook_url,
                    secret,
                },
            );
        }
        let r = repr.retry;
        if !(1..=20).contains(&r.attempts) {
            problems.push(format!("retry.attempts {} must be 1 to 20", r.attempts));
        }
        if r.initial_backoff_ms == 0 || r.max_backoff_ms < r.initial_backoff_ms {
            problems.push(format!(
                "retry: initial_backoff_ms ({}) must be positive and at most max_backoff_ms ({})",
                r.initial_backoff_ms, r.max_backoff_ms
            ));
        }
        if r.timeout_ms == 0 {
            problems.push("retry.timeout_ms must be positive".into());
        }
        let queue_capacity = repr.queue_capacity.unwrap_or(DEFAULT_QUEUE_CAPACITY);
        if !(1..=100_000).contains(&queue_capacity) {
            problems.push(format!(
                "queue_capacity {queue_capacity} must be 1 to 100000"
            ));
        }
        if !problems.is_empty() {
            return Err(NotifyConfigError::Invalid(problems));
        }
        Ok(Self {
            public_url,
            channels,
            retry: RetryConfig {
                attempts: r.attempts,
                initial_backoff: Duration::from_millis(r.initial_backoff_ms),
                max_backoff: Duration::from_millis(r.max_backoff_ms),
                timeout: Duration::from_millis(r.timeout_ms),
            },
            queue_capacity,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            chat_actions: false,
        })
    }
}

/// The public URL when the file sets none: the listen address (the machine's host name when
/// listening on all interfaces), `https` with TLS.
pub fn default_public_url(listen: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = if listen.ip().is_unspecified() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    } else {
        match listen {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    };
    format!("{scheme}://{host}:{}", listen.port())
}

/// Replaces every http(s) URL in `text` by its scheme and host (path, query and user info
/// become `<redacted>`), then every occurrence of the `secrets`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let lower = text.to_ascii_lowercase();
    let mut i = 0;
    while i < text.len() {
        let next = [lower[i..].find("http://"), lower[i..].find("https://")]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next.map(|p| i + p) else {
            out.push_str(&text[i..]);
            break;
        };
        out.push_str(&text[i..at]);
        let url = &text[at..];
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(url.len());
        let url = &url[..end];
        let scheme_len = url.find("://").map_or(0, |p| p + 3);
        let rest = &url[scheme_len..];
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..auth_end];
        let host = authority.rsplit('@').next().unwrap_or_default();
        out.push_str(&url[..scheme_len]);
        out.push_str(host);
        if auth_end < rest.len() || authority.contains('@') {
            out.push_str("/<redacted>");
        }
        i = at + end;
    }
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "<redacted>");
    }
    out
}

/// The engine event's name: `started`, `step_promoted`, `held`, `approval_needed`,
/// `aborted`, `rolled_back`, `completed`, `escalated` or `group_excluded`.
pub fn event_name(e: &RolloutEvent) -> &'static str {
    match e {
        RolloutEvent::Started { .. } => "started",
        RolloutEvent::StepPromoted { .. } => "step_promoted",
        RolloutEvent::Held { .. } => "held",
        RolloutEvent::Escalated { .. } => "escalated",
        RolloutEvent::GroupExcluded { .. } => "group_excluded",
        RolloutEvent::ApprovalNeeded { .. } => "approval_needed",
        RolloutEvent::Aborted { .. } => "aborted",
        RolloutEvent::RolledBack { .. } => "rolled_back",
        RolloutEvent::Completed => "completed",
    }
}

/// One message for one channel: the event and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub channel: String,
    pub event: RolloutEvent,
    pub rollout: RolloutSummary,
    /// The latest evaluation's gates (empty before the first one).
    pub gates: Vec<GateSummary>,
    pub runbook_url: Option<String>,
    /// `{public_url}/api/v1/admin/rollouts/{id}`.
    pub link: String,
    /// Unix seconds.
    pub at: i64,
    /// Chat buttons offered (`approve`, `abort`, `rollback`): set when the server takes
    /// ChatOps actions (`crate::chatops`), from [`payload::offered_actions`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
}

/// The rollout as a message shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSummary {
    pub id: String,
    pub release: String,
    pub baseline: Option<String>,
    /// `progressing`, `paused`, `awaiting_approval`, `completed` or `aborted`.
    pub phase: String,
    /// The step the event is about, 1-based (the last step once completed).
    pub step: usize,
    pub steps: usize,
    pub step_description: Option<String>,
    /// Devices assigned the release so far.
    pub cohort: usize,
    /// Why it holds, was aborted or rolled back.
    pub reason: Option<String>,
}

/// One gate's last result with its thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateSummary {
    pub gate: String,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    pub samples: u64,
    pub max: Option<f64>,
    pub min: Option<f64>,
    pub max_ratio: Option<f64>,
    /// `pass`, `fail`, `inconclusive` or `error`.
    pub verdict: String,
    pub why: Option<String>,
    /// The value's interval at the rollout's confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
}

impl Notification {
    /// The notification of `event` for `channel` (pure): the gates are those of the latest
    /// evaluation — in `decision`'s audit records when it evaluated, else the rollout's last.
    pub fn new(
        channel: &str,
        r: &Rollout,
        decision: &Decision,
        event: &RolloutEvent,
        runbook_url: Option<String>,
        link: String,
        at: i64,
    ) -> Self {
        let steps = r.spec.steps.len();
        let idx = match event {
            RolloutEvent::StepPromoted { step, .. } | RolloutEvent::ApprovalNeeded { step } => {
                *step
            }
            _ => r.state.step,
        }
        .min(steps.saturating_sub(1));
        let reason = match event {
            RolloutEvent::Held { reason }
            | RolloutEvent::Aborted { reason }
            | RolloutEvent::Escalated { reason, .. }
            | RolloutEvent::GroupExcluded { reason, .. } => Some(reason.clone()),
            _ => r.state.reason.clone(),
        };
        let gates: &[GateResult] = decision
            .audit
            .iter()
            .rev()
            .find(|a| !a.gates.is_empty())
            .map_or(&r.state.last_gates, |a| &a.gates);
        let gates = gates
            .iter()
            .map(|g| {
                let spec = r.spec.gates.iter().find(|s| s.label() == g.gate);
                let (verdict, why) = match &g.verdict {
                    Verdict::Pass => ("pass", None),
                    Verdict::Fail(w) => ("fail", Some(w.clone())),
                    Verdict::Inconclusive(w) => ("inconclusive", Some(w.clone())),
                    Verdict::Error(w) => ("error", Some(w.clone())),
                };
                GateSummary {
                    gate: g.name(),
                    interval: g.interval,
                    value: g.value,
                    baseline: g.baseline,
                    samples: g.samples,
                    max: spec.and_then(|s| s.max),
                    min: spec.and_then(|s| s.min),
                    max_ratio: spec.and_then(|s| s.max_ratio),
                    verdict: verdict.into(),
                    why,
                }
            })
            .collect();
        Notification {
            channel: channel.to_string(),
            event: event.clone(),
            rollout: RolloutSummary {
                id: r.id.clone(),
                release: r.spec.release.clone(),
                baseline: r.baseline.clone(),
                phase: serde_json::to_value(r.state.phase)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                step: idx + 1,
                steps,
                step_description: r.spec.steps.get(idx).map(describe),
                cohort: r.state.cohort.len(),
                reason,
            },
            gates,
            runbook_url,
            link,
            at,
            actions: vec![],
        }
    }
}

/// Per-channel delivery counters (monotonic, for `/metrics`).
#[derive(Debug, Default)]
pub struct ChannelStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    /// Notifications the channel's queue could not take when they were sent: they stay
    /// pending in the outbox and the sweep queues them later (so they are also counted as
    /// delivered or failed eventually).
    pub deferred: AtomicU64,
    pub attempts: AtomicU64,
}

/// A snapshot of one channel's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCounts {
    pub channel: String,
    pub kind: ChannelKind,
    pub delivered: u64,
    pub failed: u64,
    pub deferred: u64,
    pub attempts: u64,
}

/// Outbox rows queued for, or being delivered by, a channel's task: a row is offered to the
/// queue only if it is not in here, and leaves only once the task marked it (or found it
/// already finished), so no row is ever delivered twice at the same time.
#[derive(Debug, Default)]
pub struct InFlight(std::sync::Mutex<HashSet<i64>>);

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn claim(&self, id: i64) -> bool {
        self.lock().insert(id)
    }
    pub(crate) fn release(&self, id: i64) {
        self.lock().remove(&id);
    }
    fn snapshot(&self) -> HashSet<i64> {
        self.lock().clone()
    }
}

struct Handle {
    config: Arc<ChannelConfig>,
    queue: mpsc::Sender<Queued>,
    stats: Arc<ChannelStats>,
    in_flight: Arc<InFlight>,
    /// Set while deferred rows wait in the outbox: new notifications then wait too (for the
    /// sweep), so a channel's messages keep their order.
    backlog: AtomicBool,
    capacity: usize,
}

struct Inner {
    public_url: String,
    channels: BTreeMap<String, Handle>,
    store: SharedStore,
    /// Only the replica running the controller sweeps the outbox, so two replicas never
    /// queue the same row.
    controller: Arc<crate::controller::Health>,
    /// Set once this replica swept as the controller; cleared when it stops being one.
    leading: AtomicBool,
    /// How often the controller's passes sweep the outbox ([`NotifyConfig::sweep_interval`]).
    sweep_every: Duration,
    /// When the outbox was last swept, and when finished rows were last purged.
    swept: std::sync::Mutex<(Option<tokio::time::Instant>, tokio::time::Instant)>,
    /// Messages offer ChatOps buttons ([`NotifyConfig::chat_actions`]).
    chat_actions: bool,
}

/// What the rollout driver, the API and `/metrics` need of a notifier. The server's is
/// [`Notifier`] (delivery tasks, outbox sweep); tests inject their own through
/// `Config::notifier` to see exactly what the controller sends, and when.
pub trait Notify: std::fmt::Debug + Send + Sync + 'static {
    /// The notification of `event` for `channel`, at `at` (unix seconds).
    fn notification(
        &self,
        channel: &str,
        r: &Rollout,
        decision: &Decision,
        event: &RolloutEvent,
        at: i64,
    ) -> Notification;
    /// Queues a notification already saved in the outbox, without waiting.
    fn send(&self, q: Queued);
    /// Fails (naming the configured channels) when `names` lists one that does not exist.
    fn check_channels(&self, names: &[String]) -> Result<(), String>;
    /// The configured channels.
    fn channel_names(&self) -> Vec<String>;
    /// Every channel's counters.
    fn counts(&self) -> Vec<ChannelCounts>;
    /// The base of the links messages carry (the server as people reach it).
    fn public_url(&self) -> &str;
    /// The controller's share of notifying, run on every pass (leader or not): when due,
    /// queue the outbox's pending rows (on the leader only) and purge old finished ones.
    fn sweep_outbox(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

impl Notify for Notifier {
    fn notification(
        &self,
        channel: &str,
        r: &Rollout,
        decision: &Decision,
        event: &RolloutEvent,
        at: i64,
    ) -> Notification {
        Notifier::notification(self, channel, r, decision, event, at)
    }
    fn send(&self, q: Queued) {
        Notifier::send(self, q)
    }
    fn check_channels(&self, names: &[String]) -> Result<(), String> {
        Notifier::check_channels(self, names)
    }
    fn channel_names(&self) -> Vec<String> {
        Notifier::channel_names(self)
            .into_iter()
            .map(str::to_string)
            .collect()
    }
    fn counts(&self) -> Vec<ChannelCounts> {
        Notifier::counts(self)
    }
    fn public_url(&self) -> &str {
        Notifier::public_url(self)
    }
    fn sweep_outbox(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.sweep_when_due())
    }
}

/// The server's notification sender (cheap to clone). See the module docs.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("public_url", &self.inner.public_url)
            .field("channels", &self.channel_names())
            .finish()
    }
}

impl Notifier {
    /// Starts one delivery task per channel on the current tokio runtime (call it from within
    /// one) and sweeps the outbox once; the controller sweeps it from then on
    /// ([`Notify::sweep_outbox`] on each pass). The sweep — on the replica running the controller only
    /// (`controller.leader`), so replicas never queue the same row twice — queues the
    /// outbox's pending rows, oldest first: rows of channels no longer configured are marked
    /// failed (with a warning), the ones a full queue cannot take stay pending for the next
    /// sweep. `default_public_url` is used when the file sets no `public_url`.
    pub async fn start(
        cfg: &NotifyConfig,
        default_public_url: &str,
        store: SharedStore,
        controller: Arc<crate::controller::Health>,
    ) -> Result<Self, OutboxError> {
        let public_url = cfg
            .public_url
            .clone()
            .unwrap_or_else(|| default_public_url.trim_end_matches('/').to_string());
        let mut channels = BTreeMap::new();
        for (name, ch) in &cfg.channels {
            let capacity = cfg.queue_capacity.max(1);
            let (tx, rx) = mpsc::channel(capacity);
            let config = Arc::new(ch.clone());
            let stats = Arc::new(ChannelStats::default());
            let in_flight = Arc::new(InFlight::default());
            tokio::spawn(deliver::worker(
                deliver::Worker {
                    ch: config.clone(),
                    retry: cfg.retry.clone(),
                    stats: stats.clone(),
                    store: store.clone(),
                    in_flight: in_flight.clone(),
                },
                rx,
            ));
            tracing::info!(channel = %name, r#type = ch.kind.as_str(), host = %ch.host, "notification channel ready");
            channels.insert(
                name.clone(),
                Handle {
                    config,
                    queue: tx,
                    stats,
                    in_flight,
                    backlog: AtomicBool::new(false),
                    capacity,
                },
            );
        }
        let notifier = Self {
            inner: Arc::new(Inner {
                public_url,
                channels,
                store,
                controller,
                leading: AtomicBool::new(false),
                sweep_every: cfg.sweep_interval.max(Duration::from_millis(10)),
                swept: std::sync::Mutex::new((None, tokio::time::Instant::now())),
                chat_actions: cfg.chat_actions,
            }),
        };
        // Restart: everything still pending, due or not (the task waits for the due time).
        notifier.sweep(i64::MAX).await?;
        outbox::purge(notifier.inner.store.as_ref(), crate::util::now() as i64).await?;
        Ok(notifier)
    }

    /// The base of rollout links.
    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    /// The link to a rollout in messages.
    pub fn link(&self, rollout_id: &str) -> String {
        format!(
            "{}/api/v1/admin/rollouts/{rollout_id}",
            self.inner.public_url
        )
    }

    pub fn channel_names(&self) -> Vec<&str> {
        self.inner.channels.keys().map(String::as_str).collect()
    }

    /// Fails (with the configured names) when `names` lists a channel that does not exist.
    pub fn check_channels(&self, names: &[String]) -> Result<(), String> {
        let unknown: BTreeSet<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !self.inner.channels.contains_key(*n))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let known = self.channel_names();
        Err(format!(
            "notify names unknown channel(s) {}: {}",
            unknown.into_iter().collect::<Vec<_>>().join(", "),
            if known.is_empty() {
                "no channels are configured (start the server with --notifications FILE)"
                    .to_string()
            } else {
                format!("configured channels are {}", known.join(", "))
            }
        ))
    }

    /// The notification of `event` for `channel`: the rollout's runbook URL, else the
    /// channel's, and the link to the rollout.
    pub fn notification(
        &self,
        channel: &str,
        r: &Rollout,
        decision: &Decision,
        event: &RolloutEvent,
        at: i64,
    ) -> Notification {
        let runbook = r.spec.runbook_url.clone().or_else(|| {
            self.inner
                .channels
                .get(channel)
                .and_then(|h| h.config.runbook_url.clone())
        });
        let mut n = Notification::new(channel, r, decision, event, runbook, self.link(&r.id), at);
        if self.inner.chat_actions {
            n.actions = payload::offered_actions(&n.rollout.phase)
                .iter()
                .map(|a| a.to_string())
                .collect();
        }
        n
    }

    /// Queues a notification already saved in the outbox ([`outbox::prepare`]d and saved in
    /// the transaction of the state it announces) for its channel, without waiting. When the
    /// queue is full (or older rows wait) it stays pending in the outbox, counted as
    /// deferred, and the sweep queues it later.
    pub fn send(&self, q: Queued) {
        let event = event_name(&q.notification.event);
        let Some(h) = self.inner.channels.get(&q.notification.channel) else {
            tracing::warn!(channel = %q.notification.channel, event, rollout = %q.notification.rollout.id, "notification for a channel that is not configured: it will be marked failed");
            return;
        };
        let rollout = q.notification.rollout.id.clone();
        let why = if h.backlog.load(Ordering::Acquire) {
            "older notifications of the channel are waiting"
        } else {
            match offer(h, q) {
                Ok(()) => return,
                Err(why) => why,
            }
        };
        h.stats.deferred.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(channel = %h.config.name, r#type = h.config.kind.as_str(), host = %h.config.host, event, %rollout, "notification deferred ({why}): it stays pending in the outbox and is queued again shortly");
    }

    /// Saves `n` in the outbox in a transaction of its own, then [`Self::send`]s it — for
    /// notifications that announce no saved state change (tests, tools).
    pub async fn enqueue(&self, n: Notification) -> Result<(), OutboxError> {
        let q = outbox::insert(self.inner.store.as_ref(), n).await?;
        self.send(q);
        Ok(())
    }

    /// Queues the pending rows due by `due_ms` that are not queued yet, oldest first, until a
    /// queue is full; marks failed the rows of channels that are not configured.
    async fn sweep(&self, due_ms: i64) -> Result<(), OutboxError> {
        if !self.inner.controller.leader.load(Ordering::Relaxed) {
            self.inner.leading.store(false, Ordering::Relaxed);
            return Ok(());
        }
        // Newly the controller (a start, a restart, a failover): everything still pending,
        // due or not (the delivery task waits for the due time, at most `max_backoff`).
        let due_ms = if self.inner.leading.swap(true, Ordering::Relaxed) {
            due_ms
        } else {
            i64::MAX
        };
        let store = self.inner.store.as_ref();
        for (channel, n) in outbox::fail_unconfigured(store, &self.channel_names()).await? {
            tracing::warn!(%channel, notifications = n, "pending notifications for a channel that is no longer configured: marked failed");
        }
        for h in self.inner.channels.values() {
            let skip = h.in_flight.snapshot();
            let limit = h.capacity + skip.len() + 1;
            let (rows, more) = outbox::pending(store, &h.config.name, due_ms, limit, &skip).await?;
            let mut all = !more;
            for q in rows {
                if offer(h, q).is_err() {
                    all = false;
                    break;
                }
            }
            h.backlog.store(!all, Ordering::Release);
        }
        Ok(())
    }

    /// Sweeps the outbox when `sweep_interval` has passed since the last sweep (see
    /// [`Notify::sweep_outbox`]), and purges old finished rows hourly.
    async fn sweep_when_due(&self) {
        let (sweep, purge) = {
            let Ok(mut s) = self.inner.swept.lock() else {
                return;
            };
            let now = tokio::time::Instant::now();
            let sweep = s.0.is_none_or(|l| now >= l + self.inner.sweep_every);
            let purge = now >= s.1 + Duration::from_secs(3600);
            if sweep {
                s.0 = Some(now);
            }
            if purge {
                s.1 = now;
            }
            (sweep, purge)
        };
        if sweep && let Err(e) = self.sweep(outbox::now_ms()).await {
            tracing::warn!(error = %e, "notification outbox sweep failed; retrying");
        }
        if purge {
            match outbox::purge(self.inner.store.as_ref(), crate::util::now() as i64).await {
                Ok(k) if k > 0 => tracing::info!(rows = k, "deleted old finished notifications"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot delete old finished notifications"),
            }
        }
    }

    /// Every channel's counters.
    pub fn counts(&self) -> Vec<ChannelCounts> {
        self.inner
            .channels
            .values()
            .map(|h| ChannelCounts {
                channel: h.config.name.clone(),
                kind: h.config.kind,
                delivered: h.stats.delivered.load(Ordering::Relaxed),
                failed: h.stats.failed.load(Ordering::Relaxed),
                deferred: h.stats.deferred.load(Ordering::Relaxed),
                attempts: h.stats.attempts.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// Puts `q` on its channel's queue unless it is already queued (then nothing to do).
fn offer(h: &Handle, q: Queued) -> Result<(), &'static str> {
    let id = q.id;
    if !h.in_flight.claim(id) {
        return Ok(());
    }
    h.queue.try_send(q).map_err(|e| {
        h.in_flight.release(id);
        match e {
            mpsc::error::TrySendError::Full(_) => "the channel's queue is full",
            mpsc::error::TrySendError::Closed(_) => "the channel's delivery task stopped",
        }
    })
}

/// How often the sweep runs by default.
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Every `every`: queues due pending rows nobody queued, and (hourly) deletes old finished
/// rows. Ends with the notifier.
#[cfg(test)]
mod tests {
    use super::*;

    const SLACK: &str = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX";

    fn env(k: &str) -> Option<String> {
        (k == "HOOK_KEY").then(|| "k3y-material".to_string())
    }

    fn parse(yaml: &str) -> Result<NotifyConfig, NotifyConfigError> {
        NotifyConfig::from_yaml(yaml, Path::new("/nonexistent"), &env)
    }

    fn problems(yaml: &str) -> String {
        parse(yaml).expect_err("should be refused").to_string()
    }

    #[test]
    fn parses_the_documented_example() {
        let c = parse(&format!(
            "public_url: https://edgecd.example.com/\nchannels:\n  ops-slack: {{type: slack, url: \"{SLACK}\", runbook_url: \"https://wiki/rb\"}}\n  ops-teams: {{type: teams, url: \"https://x.logic.azure.com:443/workflows/abc?sig=s\"}}\n  audit-hook: {{type: webhook, url: \"http://127.0.0.1:9000/hook\", secret_env: HOOK_KEY}}\nretry: {{attempts: 3, initial_backoff_ms: 100, max_backoff_ms: 1000, timeout_ms: 2000}}\nqueue_capacity: 8\n"
        ))
        .expect("valid");
        assert_eq!(c.public_url.as_deref(), Some("https://edgecd.example.com"));
        assert_eq!(c.channels.len(), 3);
        let s = &c.channels["ops-slack"];
        assert_eq!(
            (s.kind, s.host.as_str(), s.runbook_url.as_deref()),
            (
                ChannelKind::Slack,
                "hooks.slack.com",
                Some("https://wiki/rb")
            )
        );
        assert_eq!(c.channels["ops-teams"].host, "x.logic.azure.com:443");
        let h = &c.channels["audit-hook"];
        assert_eq!(h.kind, ChannelKind::Webhook);
        assert_eq!(h.secret.as_ref().map(Secret::expose), Some("k3y-material"));
        assert_eq!(
            c.retry,
            RetryConfig {
                attempts: 3,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(1000),
                timeout: Duration::from_millis(2000)
            }
        );
        assert_eq!(c.queue_capacity, 8);
        // Defaults.
        let d = parse("channels: {}\n").expect("valid");
        assert_eq!(d.retry, RetryConfig::default());
        assert_eq!(d.queue_capacity, DEFAULT_QUEUE_CAPACITY);
        assert!(d.public_url.is_none());
    }

    #[test]
    fn refuses_mistakes_saying_what_to_fix() {
        let e = problems("channels:\n  a: {type: discord, url: \"https://x/y\"}\n");
        assert!(
            e.contains("channel `a`: unknown type \"discord\": use slack, teams or webhook"),
            "{e}"
        );
        let e = problems(
            "channels:\n  a: {type: slack, url: \"hooks.slack.com/services/T0/SECRETPATH\"}\n",
        );
        assert!(e.contains("channel `a`: url is not absolute"), "{e}");
        assert!(!e.contains("SECRETPATH"), "{e}");
        let e = problems("channels:\n  a: {type: slack, url: \"ftp://h/SECRETPATH\"}\n");
        assert!(e.contains("scheme \"ftp\""), "{e}");
        assert!(!e.contains("SECRETPATH"), "{e}");
        let e = problems(
            "channels:\n  h: {type: webhook, url: \"https://x/y\", secret_env: MISSING_VAR}\n",
        );
        assert!(e.contains("secret_env MISSING_VAR is not set"), "{e}");
        assert!(e.contains("export MISSING_VAR"), "{e}");
        let e = problems("channels:\n  h: {type: webhook, url: \"https://x/y\"}\n");
        assert!(e.contains("needs secret_env or secret_file"), "{e}");
        let e = problems(
            "channels:\n  h: {type: webhook, url: \"https://x/y\", secret_file: no-such-key}\n",
        );
        assert!(
            e.contains("cannot read secret_file /nonexistent/no-such-key"),
            "{e}"
        );
        let e =
            problems("channels:\n  s: {type: slack, url: \"https://x/y\", secret_env: HOOK_KEY}\n");
        assert!(e.contains("only apply to webhook channels"), "{e}");
        let e = problems("channels:\n  \"bad name\": {type: slack, url: \"https://x/y\"}\n");
        assert!(e.contains("channel `bad name`: use only letters"), "{e}");
        let e =
            problems("channels:\n  s: {type: slack, url: \"https://x/y\", runbook_url: wiki}\n");
        assert!(e.contains("runbook_url \"wiki\" is not absolute"), "{e}");
        let e = problems("public_url: edgecd.example.com\n");
        assert!(e.contains("public_url"), "{e}");
        let e = problems("retry: {attempts: 0, initial_backoff_ms: 10, max_backoff_ms: 5}\n");
        assert!(e.contains("retry.attempts 0 must be 1 to 20"), "{e}");
        assert!(e.contains("at most max_backoff_ms (5)"), "{e}");
        let e = problems("queue_capacity: 0\n");
        assert!(e.contains("queue_capacity 0"), "{e}");
        let e = problems("chanels: {}\n");
        assert!(e.contains("unknown field `chanels`"), "{e}");
        // Several problems are reported together.
        let e = problems(
            "channels:\n  a: {type: x, url: \"https://x/y\"}\n  b: {type: y, url: \"https://x/y\"}\n",
        );
        assert!(e.contains("`a`") && e.contains("`b`"), "{e}");
        // An unreadable file names the path.
        let e = NotifyConfig::load(Path::new("/nonexistent/notify.yaml"))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("/nonexistent/notify.yaml"), "{e}");
    }

    #[test]
    fn secret_files_are_read_relative_to_the_config_file() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::write(d.path().join("hook.key"), "s3cr3t-key\n").expect("write");
        std::fs::write(
            d.path().join("notify.yaml"),
            "channels:\n  h: {type: webhook, url: \"https://x/y\", secret_file: hook.key}\n",
        )
        .expect("write");
        let c = NotifyConfig::load(&d.path().join("notify.yaml")).expect("valid");
        assert_eq!(
            c.channels["h"].secret.as_ref().map(Secret::expose),
            Some("s3cr3t-key")
        );
        std::fs::write(d.path().join("hook.key"), "\n").expect("write");
        let e = NotifyConfig::load(&d.path().join("notify.yaml"))
            .expect_err("empty")
            .to_string();
        assert!(e.contains("hook.key is empty"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let c = parse(&format!(
            "channels:\n  s: {{type: slack, url: \"{SLACK}\"}}\n  h: {{type: webhook, url: \"https://hooks.example.com/p/TOPSECRETPATH\", secret_env: HOOK_KEY}}\n"
        ))
        .expect("valid");
        let dbg = format!("{c:?}");
        for s in [
            "XXXXSECRETXXXX",
            "TOPSECRETPATH",
            "k3y-material",
            "/services/",
        ] {
            assert!(!dbg.contains(s), "{s} in {dbg}");
        }
        assert!(dbg.contains("hooks.slack.com"), "{dbg}");
        let cfg = crate::Config {
            notifications: c,
            ..crate::Config::new("/tmp/x")
        };
        let dbg = format!("{cfg:?}");
        assert!(
            !dbg.contains("XXXXSECRETXXXX") && !dbg.contains("k3y-material"),
            "{dbg}"
        );
        // A YAML error that quotes a URL (a channel written as a bare string) redacts it.
        let e = problems(&format!("channels:\n  s: \"{SLACK}\"\n"));
        assert!(
            !e.contains("XXXXSECRETXXXX") && !e.contains("/services/"),
            "{e}"
        );
        assert!(e.contains("https://hooks.slack.com/<redacted>"), "{e}");
    }

    #[test]
    fn notifications_round_trip_through_the_outbox_json() {
        let n = payload::tests_support::notification();
        let text = serde_json::to_string(&n).expect("serialize");
        let back: Notification = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, n);
        assert_eq!(payload::webhook(&back), payload::webhook(&n));
    }

    #[test]
    fn redact_keeps_only_scheme_and_host() {
        assert_eq!(
            redact(
                &format!(
                    "io: connect to {SLACK} failed; retry \"http://user:pw@10.0.0.1:8080?sig=abc\" now"
                ),
                &[]
            ),
            "io: connect to https://hooks.slack.com/<redacted> failed; retry \"http://10.0.0.1:8080/<redacted>\" now"
        );
        assert_eq!(redact("HTTPS://Host.example", &[]), "HTTPS://Host.example");
        assert_eq!(
            redact("key=k3y-material!", &["k3y-material"]),
            "key=<redacted>!"
        );
        assert_eq!(redact("no urls here", &[]), "no urls here");
    }

    #[test]
    fn default_public_url_follows_the_listen_address() {
        assert_eq!(
            default_public_url("127.0.0.1:8080".parse().expect("addr"), false),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            default_public_url("[::1]:443".parse().expect("addr"), true),
            "https://[::1]:443"
        );
        let any = default_public_url("0.0.0.0:8443".parse().expect("addr"), true);
        assert!(
            any.starts_with("https://") && any.ends_with(":8443"),
            "{any}"
        );
        assert!(!any.contains("0.0.0.0"), "{any}");
    }
}
