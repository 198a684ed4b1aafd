//! The server's Prometheus exposition (`GET /metrics`, text format 0.0.4): check-in rate and
//! latency (counted in-process), devices by running release and phase, rollouts by phase,
//! devices that stopped checking in, each active rollout's step and last gate values and
//! thresholds (read from the store at scrape time), rollouts aborted by cause and devices
//! rolled back, rollout notifications and delivery attempts per channel (counted by `notify`),
//! each fleet's devices by standing.
//! Names follow Prometheus conventions (base units, `_total` counters, bounded labels).
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use edgecd_api::exposition::escape_label_value;
use edgecd_api::protocol::DeviceStatus;
use edgecd_rollout::StopCause;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

const BOUNDS_SECONDS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// The check-in latency histogram of one server (in `AppState`).
#[derive(Debug, Default)]
pub struct Checkins {
    buckets: [AtomicU64; 11],
    sum_micros: AtomicU64,
}

impl Checkins {
    /// Records one handled check-in and how long it took.
    pub fn observe(&self, seconds: f64) {
        let i = BOUNDS_SECONDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BOUNDS_SECONDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let mut out = String::new();
    checkin_metrics(&mut out, &st.checkins);
    controller_metrics(&mut out, &st);
    device_metrics(&mut out, &st).await?;
    rollout_metrics(&mut out, &st).await?;
    fleet_metrics(&mut out, &st).await?;
    notification_metrics(&mut out, st.notifier.as_ref());
    pending_notification_metrics(&mut out, &st).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}

/// The check-in latency histogram.
fn checkin_metrics(w: &mut String, checkins: &Checkins) {
    let _ = writeln!(
        w,
        "# HELP edgecd_server_checkin_duration_seconds Time to handle a device check-in."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_checkin_duration_seconds histogram");
    let mut cumulative = 0;
    for (i, b) in BOUNDS_SECONDS.iter().enumerate() {
        cumulative += checkins.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(
            w,
            "edgecd_server_checkin_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
        );
    }
    cumulative += checkins.buckets[BOUNDS_SECONDS.len()].load(Ordering::Relaxed);
    let _ = writeln!(
        w,
        "edgecd_server_checkin_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        w,
        "edgecd_server_checkin_duration_seconds_sum {}",
        checkins.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(
        w,
        "edgecd_server_checkin_duration_seconds_count {cumulative}"
    );
}

/// Devices by running release and phase; enrolled, revoked and silent devices.
async fn device_metrics(w: &mut String, st: &AppState) -> Result<(), ApiError> {
    let mut by_release: BTreeMap<(String, String), u64> = BTreeMap::new();
    let (mut total, mut revoked, mut silent) = (0u64, 0u64, 0u64);
    let silent_before = crate::util::silent_before(st.config.checkin_interval_secs);
    for d in st.store.devices().await? {
        total += 1;
        if d.revoked {
            revoked += 1;
            continue;
        }
        if d.last_seen.unwrap_or(d.enrolled) < silent_before {
            silent += 1;
        }
        let status: Option<DeviceStatus> = d
            .status
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok());
        // A device with several apps counts once per app (each runs its own release).
        let apps = status.as_ref().map(|s| s.app_states()).unwrap_or_default();
        if apps.is_empty() {
            let phase = status
                .as_ref()
                .map_or("unknown".to_string(), |s| s.phase.to_string());
            *by_release.entry(("none".to_string(), phase)).or_default() += 1;
        }
        for a in apps {
            let release = a
                .running
                .as_ref()
                .map_or("none".to_string(), |r| format!("{}@{}", r.app, r.version));
            *by_release
                .entry((release, a.phase.to_string()))
                .or_default() += 1;
        }
    }
    let _ = writeln!(
        w,
        "# HELP edgecd_server_devices Enrolled devices by the release they report running and their install phase (a device counts once per app)."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_devices gauge");
    for ((release, phase), n) in &by_release {
        let _ = writeln!(
            w,
            "edgecd_server_devices{{release=\"{}\",phase=\"{}\"}} {n}",
            escape_label_value(release),
            escape_label_value(phase)
        );
    }
    let _ = writeln!(
        w,
        "# HELP edgecd_server_devices_enrolled Devices ever enrolled, including revoked ones."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_devices_enrolled gauge");
    let _ = writeln!(w, "edgecd_server_devices_enrolled {total}");
    let _ = writeln!(w, "# HELP edgecd_server_devices_revoked Revoked devices.");
    let _ = writeln!(w, "# TYPE edgecd_server_devices_revoked gauge");
    let _ = writeln!(w, "edgecd_server_devices_revoked {revoked}");
    let _ = writeln!(
        w,
        "# HELP edgecd_server_devices_silent Non-revoked devices whose last check-in is older than 3 check-in intervals."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_devices_silent gauge");
    let _ = writeln!(w, "edgecd_server_devices_silent {silent}");
    Ok(())
}

/// Each fleet's devices by standing (converged, converging, blocked, left): what `fleet
/// status` counts, so a fleet that stops converging can be graphed and alerted on.
async fn fleet_metrics(w: &mut String, st: &AppState) -> Result<(), ApiError> {
    use crate::fleets::Standing;
    let fleets = crate::fleets::list(st).await?;
    let _ = writeln!(
        w,
        "# HELP edgecd_server_fleet_devices Devices of each fleet by standing (a device counts once per app the fleet places on it)."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_fleet_devices gauge");
    for f in &fleets {
        for state in [
            Standing::Converged,
            Standing::Converging,
            Standing::Blocked,
            Standing::Left,
        ] {
            let _ = writeln!(
                w,
                "edgecd_server_fleet_devices{{fleet=\"{}\",state=\"{}\"}} {}",
                escape_label_value(&f.name),
                state.as_str(),
                f.counts.get(&state).copied().unwrap_or(0)
            );
        }
    }
    Ok(())
}

/// Rollouts by phase, aborts by cause, devices rolled back, each active rollout's step and
/// gate values and thresholds.
async fn rollout_metrics(w: &mut String, st: &AppState) -> Result<(), ApiError> {
    let rows = st.store.rollout_states().await?;
    let mut phases: BTreeMap<String, u64> = [
        "progressing",
        "paused",
        "awaiting_approval",
        "completed",
        "aborted",
    ]
    .iter()
    .map(|p| (p.to_string(), 0))
    .collect();
    let mut active = vec![];
    let mut aborts: BTreeMap<&str, u64> = StopCause::ALL.iter().map(|c| (c.as_str(), 0)).collect();
    let mut rolled_back_devices = 0u64;
    for s in rows {
        if let Ok(r) = serde_json::from_str::<edgecd_rollout::engine::Rollout>(&s) {
            let phase = serde_json::to_value(r.state.phase)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *phases.entry(phase).or_default() += 1;
            if r.state.phase == edgecd_rollout::Phase::Aborted {
                // Rollouts stored before causes were recorded count as "unknown".
                let cause = r.state.stop_cause.map_or("unknown", StopCause::as_str);
                *aborts.entry(cause).or_default() += 1;
            }
            rolled_back_devices += r.state.rolled_back.len() as u64;
            if !r.is_finished() {
                active.push(r);
            }
        }
    }
    let _ = writeln!(w, "# HELP edgecd_server_rollouts Rollouts by phase.");
    let _ = writeln!(w, "# TYPE edgecd_server_rollouts gauge");
    for (p, n) in &phases {
        let _ = writeln!(w, "edgecd_server_rollouts{{phase=\"{p}\"}} {n}");
    }
    let _ = writeln!(
        w,
        "# HELP edgecd_server_rollout_aborts_total Rollouts aborted, by what stopped them."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_rollout_aborts_total counter");
    for (cause, n) in &aborts {
        let _ = writeln!(
            w,
            "edgecd_server_rollout_aborts_total{{cause=\"{cause}\"}} {n}"
        );
    }
    let _ = writeln!(
        w,
        "# HELP edgecd_server_rollback_devices_total Devices assigned back to the baseline by aborted rollouts."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_rollback_devices_total counter");
    let _ = writeln!(
        w,
        "edgecd_server_rollback_devices_total {rolled_back_devices}"
    );
    active_rollout_metrics(w, &active);
    Ok(())
}

/// Each active rollout's step, and its gates' last values and thresholds.
fn active_rollout_metrics(w: &mut String, active: &[edgecd_rollout::engine::Rollout]) {
    let _ = writeln!(
        w,
        "# HELP edgecd_server_rollout_step Current step (1-based) of each active rollout."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_rollout_step gauge");
    for r in active {
        let _ = writeln!(
            w,
            "edgecd_server_rollout_step{{rollout=\"{}\",release=\"{}\"}} {}",
            escape_label_value(&r.id),
            escape_label_value(&r.spec.release),
            r.state.step + 1
        );
    }
    let _ = writeln!(
        w,
        "# HELP edgecd_server_rollout_gate_value Last evaluated value of each gate of each active rollout."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_rollout_gate_value gauge");
    for r in active {
        for g in &r.state.last_gates {
            if let Some(v) = g.value.filter(|v| v.is_finite()) {
                let verdict = match g.verdict {
                    edgecd_rollout::Verdict::Pass => "pass",
                    edgecd_rollout::Verdict::Fail(_) => "fail",
                    edgecd_rollout::Verdict::Inconclusive(_) => "inconclusive",
                    edgecd_rollout::Verdict::Error(_) => "error",
                };
                let _ = writeln!(
                    w,
                    "edgecd_server_rollout_gate_value{{rollout=\"{}\",gate=\"{}\",verdict=\"{verdict}\"}} {v}",
                    escape_label_value(&r.id),
                    escape_label_value(&g.gate)
                );
            }
        }
    }
    let _ = writeln!(
        w,
        "# HELP edgecd_server_rollout_gate_threshold Bound each gate's value is held to (a ratio gate's bound is the baseline times the ratio)."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_rollout_gate_threshold gauge");
    for r in active {
        for g in &r.state.last_gates {
            let Some(spec) = r.spec.gates.iter().find(|s| s.label() == g.gate) else {
                continue;
            };
            let ratio_max = spec.max_ratio.zip(g.baseline).map(|(x, b)| x * b);
            let max = match (spec.max, ratio_max) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            for (bound, v) in [("max", max), ("min", spec.min)] {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    let _ = writeln!(
                        w,
                        "edgecd_server_rollout_gate_threshold{{rollout=\"{}\",gate=\"{}\",bound=\"{bound}\"}} {v}",
                        escape_label_value(&r.id),
                        escape_label_value(&g.gate)
                    );
                }
            }
        }
    }
}

/// Notifications waiting in the outbox, by channel (every configured channel, zeros too).
async fn pending_notification_metrics(w: &mut String, st: &AppState) -> Result<(), ApiError> {
    let pending = st.store.outbox_pending_counts().await?;
    let _ = writeln!(
        w,
        "# HELP edgecd_server_notifications_pending Rollout notifications waiting in the outbox for delivery, by channel."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_notifications_pending gauge");
    let mut pending: BTreeMap<String, i64> = pending.into_iter().collect();
    for c in st.notifier.channel_names() {
        pending.entry(c).or_insert(0);
    }
    for (channel, n) in &pending {
        let _ = writeln!(
            w,
            "edgecd_server_notifications_pending{{channel=\"{}\"}} {n}",
            escape_label_value(channel)
        );
    }
    Ok(())
}

/// Notification counters: every configured channel with every result, zeros included.
fn notification_metrics(w: &mut String, notifier: &dyn crate::notify::Notify) {
    let counts = notifier.counts();
    let _ = writeln!(
        w,
        "# HELP edgecd_server_notifications_total Rollout notifications by channel and result: delivered, failed (refused or out of attempts), deferred (queue full when sent: kept pending in the outbox and queued later, so also counted once delivered or failed)."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_notifications_total counter");
    for c in &counts {
        for (result, n) in [
            ("delivered", c.delivered),
            ("failed", c.failed),
            ("deferred", c.deferred),
        ] {
            let _ = writeln!(
                w,
                "edgecd_server_notifications_total{{channel=\"{}\",type=\"{}\",result=\"{result}\"}} {n}",
                escape_label_value(&c.channel),
                c.kind.as_str()
            );
        }
    }
    let _ = writeln!(
        w,
        "# HELP edgecd_server_notification_attempts_total HTTP attempts to deliver rollout notifications, retries included."
    );
    let _ = writeln!(
        w,
        "# TYPE edgecd_server_notification_attempts_total counter"
    );
    for c in &counts {
        let _ = writeln!(
            w,
            "edgecd_server_notification_attempts_total{{channel=\"{}\",type=\"{}\"}} {}",
            escape_label_value(&c.channel),
            c.kind.as_str(),
            c.attempts
        );
    }
}

/// The controller's health: leader or standby, restarts after a crash, passes, last good pass.
fn controller_metrics(w: &mut String, st: &AppState) {
    let c = &st.controller;
    let replica = escape_label_value(&st.replica_id);
    let _ = writeln!(
        w,
        "# HELP edgecd_server_controller_leader 1 when this server replica holds the controller lease and drives rollouts, 0 on a standby."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_controller_leader gauge");
    let _ = writeln!(
        w,
        "edgecd_server_controller_leader{{replica=\"{replica}\"}} {}",
        u8::from(c.leader.load(Ordering::Relaxed))
    );
    let _ = writeln!(
        w,
        "# HELP edgecd_server_controller_restarts_total Times the controller was restarted after a crash."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_controller_restarts_total counter");
    let _ = writeln!(
        w,
        "edgecd_server_controller_restarts_total {}",
        c.restarts.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        w,
        "# HELP edgecd_server_controller_passes_total Controller passes over the active rollouts, by result."
    );
    let _ = writeln!(w, "# TYPE edgecd_server_controller_passes_total counter");
    for (result, n) in [("ok", &c.passes_ok), ("failed", &c.passes_failed)] {
        let _ = writeln!(
            w,
            "edgecd_server_controller_passes_total{{result=\"{result}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        w,
        "# HELP edgecd_server_controller_last_pass_timestamp_seconds When the last successful controller pass ended (0: none yet on this replica)."
    );
    let _ = writeln!(
        w,
        "# TYPE edgecd_server_controller_last_pass_timestamp_seconds gauge"
    );
    let _ = writeln!(
        w,
        "edgecd_server_controller_last_pass_timestamp_seconds {}",
        c.last_ok_ms.load(Ordering::Relaxed) as f64 / 1000.0
    );
}
