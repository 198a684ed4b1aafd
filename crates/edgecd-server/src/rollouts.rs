//! Progressive rollouts in the control plane: stores rollouts and their audit log, keeps the
//! metric aggregates devices send with check-ins, and runs the controller that drives the
//! pure `edgecd-rollout` engine on a tick and applies its effects as new signed assignments
//! (a rollback is a new, higher assignment version pointing at the baseline).
//!
//! Restart safety: effects are applied before the new state is saved, and applying one is
//! idempotent (a device already assigned the target release is skipped), so a crash between
//! the two re-applies nothing twice and loses nothing.
use crate::auth::{Approver, Auth, Deployer, Viewer};
use crate::controller::Fence;
use crate::promql::{self, QueryContext};
use crate::store::{Fenced, RolloutSave};
use crate::util::json_col;
use crate::{ApiError, AppState, assign, notify, util};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use edgecd_api::metrics::MetricsAggregate;
use edgecd_api::protocol::{DeviceStatus, Inventory, OutcomeKind, ReleaseInfo};
use edgecd_rollout::cohort::{Device, Requirements};
use edgecd_rollout::engine::{AuditRecord, Command, Decision, Effect, Observation, Rollout};
use edgecd_rollout::gates::ExternalValue;
use edgecd_rollout::spec::{Provider, RolloutSpec};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `POST /api/v1/admin/rollouts` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartRollout {
    pub spec: RolloutSpec,
    /// The release to roll back to; default: the release most selected devices run now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// Roll out to this fleet's devices (its selector; the spec gives none). The fleet holds
    /// its other devices at their release meanwhile and takes the release on completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
}

/// A rollout's status as the API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub rollout: Rollout,
    pub eligible: usize,
    pub incompatible: Vec<(String, String)>,
    pub running_release: usize,
    pub step_description: Option<String>,
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/rollouts", post(start).get(list))
        .route("/api/v1/admin/rollouts/{id}", get(show))
        .route("/api/v1/admin/rollouts/{id}/history", get(history))
        .route("/api/v1/admin/rollouts/{id}/approve", post(approve))
        .route("/api/v1/admin/rollouts/{id}/{command}", post(command))
}

/// The app of an `APP@VERSION` release name.
fn app_of(release: &str) -> &str {
    release.split_once('@').map_or(release, |(a, _)| a)
}

fn release_name(app: &str, version: &str) -> String {
    format!("{app}@{version}")
}

/// Stores the aggregates a device sent with its check-in, tagged with what it runs (of the
/// app they are about) and the
/// period they cover: from `since` (the device's previous check-in; `None` on its first)
/// to now. An analysis counts a delta only if its whole period lies inside the analysis
/// window, so no sample taken before a step began counts for it.
pub async fn record_metrics(
    st: &AppState,
    device_id: &str,
    running: Option<&edgecd_api::protocol::RunningRelease>,
    metrics: &MetricsAggregate,
    since: Option<i64>,
) -> Result<(), ApiError> {
    metrics
        .validate()
        .map_err(|e| ApiError::bad_request(format!("metrics: {e}")))?;
    let Some(running) = running else {
        return Ok(());
    };
    if metrics.requests == 0 && metrics.temp_samples == 0 {
        return Ok(());
    }
    st.store
        .insert_device_metrics(
            device_id,
            st.now() as i64,
            &release_name(&running.app, &running.version),
            &serde_json::to_string(metrics).map_err(ApiError::internal)?,
            since,
        )
        .await?;
    Ok(())
}

async fn release_info(st: &AppState, release: &str) -> Result<ReleaseInfo, ApiError> {
    let (app, version) = release
        .split_once('@')
        .ok_or_else(|| ApiError::bad_request(format!("release {release:?} must be APP@VERSION")))?;
    json_col(&st.store.release(app, version).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no published release {release}: publish it first (edgecd release publish)"
        ))
    })?)
}

/// Why no device would get `release`: none of `devices` matches `selector` (`matched` is 0),
/// or every one that does is incompatible (`bad`: device id and reason; the first 10 shown).
pub(crate) fn no_device_reason(
    devices: &str,
    selector: &BTreeMap<String, String>,
    matched: usize,
    bad: &[(String, String)],
    release: &str,
) -> String {
    let sel = if selector.is_empty() {
        "an empty selector".to_string()
    } else {
        format!(
            "selector {}",
            selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    if matched == 0 || bad.is_empty() {
        return format!(
            "no {devices} match {sel}: nothing to do (check the labels with `edgecd device list`)"
        );
    }
    let mut why: Vec<String> = bad
        .iter()
        .take(10)
        .map(|(id, reason)| format!("{id}: {reason}"))
        .collect();
    if bad.len() > 10 {
        why.push(format!("and {} more", bad.len() - 10));
    }
    format!(
        "none of the {} {devices} matching {sel} can run {release} (hardware/runtime compatibility): {}",
        bad.len(),
        why.join("; ")
    )
}

/// The fleet as the engine sees it for `app` (revoked devices left out; `app` empty: no
/// app's view): what each device
/// runs of `app` and whether its install of `app` failed; the RAM its other apps leave
/// (their releases' `min_ram_mb`); blocked when it holds other apps up to its agent's
/// limit (see `placement`).
pub(crate) async fn fleet(st: &AppState, app: &str) -> Result<Vec<Device>, ApiError> {
    let mut others: BTreeMap<String, Vec<edgecd_api::protocol::ReleaseRef>> = BTreeMap::new();
    let mut releases: BTreeMap<(String, String), Option<edgecd_api::protocol::ReleaseRef>> =
        BTreeMap::new();
    // `app` empty: the devices alone (the fleet planner weighs several apps itself).
    let assigned = if app.is_empty() {
        vec![]
    } else {
        st.store.assigned_releases().await?
    };
    for (device, a, version) in assigned {
        if a == app {
            continue;
        }
        let key = (a, version);
        if !releases.contains_key(&key) {
            let info = st.store.release(&key.0, &key.1).await?;
            let r = info
                .as_deref()
                .map(json_col::<ReleaseInfo>)
                .transpose()?
                .map(|i| i.release);
            releases.insert(key.clone(), r);
        }
        if let Some(Some(r)) = releases.get(&key) {
            others.entry(device).or_default().push(r.clone());
        }
    }
    fleet_of(&st.store.devices().await?, app, &others)
}

/// [`fleet`] from device rows already read: `others`, per device, its other apps' releases
/// (empty: the devices alone, as the fleet planner wants them).
pub(crate) fn fleet_of(
    rows: &[crate::store::DeviceRow],
    app: &str,
    others: &BTreeMap<String, Vec<edgecd_api::protocol::ReleaseRef>>,
) -> Result<Vec<Device>, ApiError> {
    let mut out = vec![];
    for d in rows.iter().filter(|d| !d.revoked) {
        let inv: Option<Inventory> = d
            .inventory
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok());
        let status: Option<DeviceStatus> = d
            .status
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok());
        let mine = status.as_ref().and_then(|s| s.app_state(app));
        let running = mine
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .map(|r| release_name(&r.app, &r.version));
        let failed = mine.as_ref().and_then(failed_release);
        let held = others.get(&d.id).map(Vec::as_slice).unwrap_or_default();
        let refs: Vec<&edgecd_api::protocol::ReleaseRef> = held.iter().collect();
        let budget = crate::placement::Budget::of(inv.as_ref());
        let blocked = crate::placement::full(&d.id, budget, &refs, app);
        let ram_taken: u64 = held.iter().filter_map(|r| r.hardware.min_ram_mb).sum();
        out.push(Device {
            id: d.id.clone(),
            labels: json_col(&d.labels)?,
            board: inv.as_ref().map(|i| i.board.clone()),
            accelerator: inv.as_ref().and_then(|i| i.accelerator.clone()),
            runtimes: inv.as_ref().map(|i| i.runtimes.clone()).unwrap_or_default(),
            ram_mb: inv.as_ref().map(|i| i.ram_mb.saturating_sub(ram_taken)),
            running,
            failed,
            blocked,
        });
    }
    Ok(out)
}

/// The release whose install of this app last failed, was refused or rolled back.
pub(crate) fn failed_release(a: &edgecd_api::protocol::AppStatus) -> Option<String> {
    a.last_outcome
        .as_ref()
        .filter(|o| {
            matches!(
                o.kind,
                OutcomeKind::Failed | OutcomeKind::RolledBack | OutcomeKind::Refused
            )
        })
        .and_then(|o| o.release.clone())
}

async fn load(st: &AppState, id: &str) -> Result<Rollout, ApiError> {
    let state = st.store.rollout_state(id).await?;
    json_col(&state.ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))?)
}

/// Applies a decision's effects (idempotently), then saves the rollout, its audit records and
/// its notifications (in the outbox) in one transaction; the notifications are queued (never
/// waited for) once it is committed.
async fn apply(
    st: &AppState,
    r: &Rollout,
    d: &Decision,
    fence: Option<&Fence>,
) -> Result<(), ApiError> {
    if let Some(f) = fence {
        let held = st.store.lease(crate::controller::LEASE).await?;
        if held.as_ref().map(|(h, e, _)| (h, *e)) != Some((&f.holder, f.epoch)) {
            return Err(fenced(Fenced {
                epoch: held.as_ref().map_or(0, |h| h.1),
                holder: held.map(|h| h.0),
            }));
        }
    }
    let mut notifications = vec![];
    for e in &d.effects {
        match e {
            Effect::Assign { devices, release } | Effect::Rollback { devices, release } => {
                let info = release_info(st, release).await?;
                for id in devices {
                    assign::assign(st, id, &info.release, assign::Why::Rollout(&r.id)).await?;
                }
            }
            Effect::Notify { event } => {
                tracing::info!(rollout = %r.id, event = %serde_json::to_string(event).unwrap_or_default(), "rollout event");
                for channel in &r.spec.notify {
                    notifications.push(st.notifier.notification(
                        channel,
                        r,
                        d,
                        event,
                        st.now() as i64,
                    ));
                }
            }
        }
    }
    let mut rows = Vec::with_capacity(notifications.len());
    for n in &notifications {
        rows.push(notify::outbox::prepare(n).map_err(ApiError::internal)?);
    }
    let audit = d
        .audit
        .iter()
        .map(|a| Ok((a.at, a.kind.clone(), serde_json::to_string(a)?)))
        .collect::<Result<Vec<_>, serde_json::Error>>()
        .map_err(ApiError::internal)?;
    let ids = st
        .store
        .save_rollout(&RolloutSave {
            id: r.id.clone(),
            state: serde_json::to_string(r).map_err(ApiError::internal)?,
            finished: r.is_finished(),
            updated: st.now() as i64,
            audit,
            outbox: rows.clone(),
            fence: fence.cloned(),
        })
        .await?
        .map_err(fenced)?;
    for ((id, row), n) in ids.into_iter().zip(rows).zip(notifications) {
        st.notifier.send(notify::outbox::queued(id, row, n));
    }
    Ok(())
}

fn fenced(f: Fenced) -> ApiError {
    tracing::warn!(error = %f, "a controller pass was fenced off: nothing saved");
    ApiError::new(axum::http::StatusCode::CONFLICT, f.to_string())
}

/// Metrics of `devices` running `release` taken inside the window that began at `since`
/// (deltas whose whole period lies in it; a delta that began earlier is left out), merged
/// per device into `per_device` and returned merged.
async fn merged(
    st: &AppState,
    since: i64,
    release: &str,
    devices: &BTreeSet<String>,
    per_device: &mut BTreeMap<String, MetricsAggregate>,
) -> Result<MetricsAggregate, ApiError> {
    let rows = st.store.device_metrics_since(since, release).await?;
    let mut m = MetricsAggregate::default();
    for (dev, agg) in rows {
        if devices.contains(&dev)
            && let Ok(a) = serde_json::from_str::<MetricsAggregate>(&agg)
        {
            m.merge(&a);
            per_device.entry(dev).or_default().merge(&a);
        }
    }
    Ok(m)
}

/// One controller pass over every active rollout; `fence`: the controller lease it holds
/// (nothing is saved once it moved on).
pub async fn tick_all(st: &AppState, fence: Option<&Fence>) -> Result<(), ApiError> {
    // Prometheus queries run before the lock is taken, so a slow or hung Prometheus never
    // holds up operators' commands; each answer is used only if the rollout is still where it
    // was when the query ran (same step and cohort).
    let mut prefetched: BTreeMap<String, (usize, usize, BTreeMap<usize, ExternalValue>)> =
        BTreeMap::new();
    for r in active(st).await? {
        let now = st.now() as i64;
        if has_prometheus_gates(&r) && r.evaluation_due(now) {
            let values = external_values(st, &r, now).await;
            prefetched.insert(r.id.clone(), (r.state.step, r.state.cohort.len(), values));
        }
    }
    let _serialized = st.store.lock_rollouts().await?;
    let ids = st.store.active_rollout_ids().await?;
    if ids.is_empty() {
        return Ok(());
    }
    // One view of the fleet per app (a device's state differs per app).
    let mut fleets: BTreeMap<String, Vec<Device>> = BTreeMap::new();
    for id in ids {
        let mut r = load(st, &id).await?;
        let app = app_of(&r.spec.release).to_string();
        if !fleets.contains_key(&app) {
            fleets.insert(app.clone(), fleet(st, &app).await?);
        }
        let fleet = &fleets[&app];
        let now = st.now() as i64;
        let (eligible, _) = r.eligible(fleet);
        let selected: BTreeSet<String> = eligible.iter().map(|d| d.id.clone()).collect();
        let canary_devices: BTreeSet<String> = r.state.cohort.clone();
        let baseline_devices: BTreeSet<String> =
            selected.difference(&canary_devices).cloned().collect();
        let mut per_device = BTreeMap::new();
        let canary = merged(
            st,
            r.metrics_since(),
            &r.spec.release,
            &canary_devices,
            &mut per_device,
        )
        .await?;
        let baseline = match &r.baseline {
            Some(b) => merged(st, r.metrics_since(), b, &baseline_devices, &mut per_device).await?,
            None => MetricsAggregate::default(),
        };
        let external = match prefetched.remove(&id) {
            Some((step, cohort, values))
                if step == r.state.step && cohort == r.state.cohort.len() =>
            {
                values
            }
            // Due, but its queries did not run for this state: next pass (never evaluate
            // without them, which would count as a provider error).
            _ if has_prometheus_gates(&r) && r.evaluation_due(now) => continue,
            _ => BTreeMap::new(),
        };
        let d = r.tick(&Observation {
            now,
            fleet,
            canary: &canary,
            baseline: &baseline,
            external: &external,
            devices: &per_device,
        });
        if !d.effects.is_empty() || !d.audit.is_empty() {
            apply(st, &r, &d, fence).await?;
        }
    }
    // Keep a day of metrics.
    st.store
        .prune_device_metrics(st.now() as i64 - 86_400)
        .await?;
    Ok(())
}

/// Runs the `provider: prometheus` gates' queries when the engine is about to evaluate
/// (concurrently, each bounded by the provider's timeout). Failures become errors the engine
/// holds on; they are logged here and recorded, with the query, in the audit log.
fn has_prometheus_gates(r: &Rollout) -> bool {
    r.spec
        .gates
        .iter()
        .any(|g| g.provider == Provider::Prometheus)
}

async fn external_values(st: &AppState, r: &Rollout, now: i64) -> BTreeMap<usize, ExternalValue> {
    let gates: Vec<(usize, &str)> = r
        .spec
        .gates
        .iter()
        .enumerate()
        .filter(|(_, g)| g.provider == Provider::Prometheus)
        .filter_map(|(i, g)| g.query.as_deref().map(|q| (i, q)))
        .collect();
    if gates.is_empty() || !r.evaluation_due(now) {
        return BTreeMap::new();
    }
    let cohort: Vec<String> = r.state.cohort.iter().cloned().collect();
    let ctx = QueryContext {
        rollout: &r.id,
        release: &r.spec.release,
        baseline: r.baseline.as_deref(),
        cohort: &cohort,
    };
    let runs = gates.iter().map(|(i, template)| {
        let rendered = promql::render(template, &ctx);
        async move {
            let (query, result) = match (rendered, &st.prometheus) {
                (Err(e), _) => (template.to_string(), Err(e)),
                (Ok(q), None) => (
                    q,
                    Err("no Prometheus configured: start the server with --prometheus-url".into()),
                ),
                (Ok(q), Some(p)) => {
                    let res = p.query(&q).await;
                    (q, res)
                }
            };
            if let Err(e) = &result {
                tracing::warn!(rollout = %r.id, gate = i, query = %query, error = %e, "prometheus gate query failed");
            }
            (*i, ExternalValue { query, result })
        }
    });
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .collect()
}

/// `POST /api/v1/admin/rollouts`.
async fn start(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Json(req): Json<StartRollout>,
) -> Result<Json<RolloutStatus>, ApiError> {
    Ok(Json(start_rollout(&st, req).await?))
}

/// Starts the rollout `req` describes, over a fleet's devices when it names one (the fleet's
/// selector; the fleet takes the release when it completes). Holds the rollout lock.
pub async fn start_rollout(
    st: &AppState,
    mut req: StartRollout,
) -> Result<RolloutStatus, ApiError> {
    let _serialized = st.store.lock_rollouts().await?;
    let fleet = req.fleet.take();
    if let Some(name) = &fleet {
        if !req.spec.selector.is_empty() {
            return Err(ApiError::unprocessable(format!(
                "the rollout targets fleet {name}: drop the spec's selector (the fleet's is used)"
            )));
        }
        req.spec.selector = crate::fleets::rollout_selector(st, name, &req.spec.release).await?;
    } else if let Ok((app, _)) = req.spec.app_and_version() {
        // A bare selector may not reach past git into a fleet managed from a repo (its
        // rollouts start from commits), just as `deploy` may not.
        crate::gitops::refuse_change_over(st, app, &req.spec.selector).await?;
    }
    let r = start_locked(st, req).await?;
    if let Some(name) = &fleet
        && let Ok((app, version)) = r.spec.app_and_version()
    {
        crate::fleets::link_rollout(st, name, app, version, &r.id).await?;
    }
    status_of(st, r).await
}

/// Starts a rollout (the rollout lock held by the caller): its spec checked against this
/// server (Prometheus, channels), one rollout per app at a time, a baseline to roll back
/// to, and a cohort that is not empty; stores it and applies its first decision.
pub(crate) async fn start_locked(st: &AppState, req: StartRollout) -> Result<Rollout, ApiError> {
    check_spec(st, &req.spec)?;
    let info = release_info(st, &req.spec.release).await?;
    let app = req
        .spec
        .app_and_version()
        .map_err(|e| ApiError::unprocessable(e.to_string()))?
        .0
        .to_string();
    if let Some(other) = st.store.active_rollout_for_app(&app).await? {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            format!("rollout {other} of {app} is still running: abort or finish it first"),
        ));
    }
    let fleet = fleet(st, &app).await?;
    let baseline = match req.baseline {
        Some(b) => release_info(st, &b).await.map(|_| Some(b))?,
        None => usual_release(&req.spec, &fleet, &app),
    };
    let id = format!("{app}-{}", &util::random_id()[4..12]);
    let requirements = Requirements {
        hardware: info.release.hardware.clone(),
        runtime: info.release.runtime.clone(),
    };
    let (r, d) = Rollout::start(&id, req.spec, requirements, baseline, st.now() as i64)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    refuse_empty_cohort(&r, &fleet)?;
    let state = serde_json::to_string(&r).map_err(ApiError::internal)?;
    st.store
        .insert_rollout(&id, &app, &state, st.now() as i64)
        .await?;
    apply(st, &r, &d, None).await?;
    Ok(r)
}

/// Refuses a spec this server cannot run: invalid, Prometheus gates without Prometheus,
/// notifications to channels it does not have.
fn check_spec(st: &AppState, spec: &RolloutSpec) -> Result<(), ApiError> {
    spec.validate()
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    if st.prometheus.is_none()
        && let Some(g) = spec
            .gates
            .iter()
            .find(|g| g.provider == Provider::Prometheus)
    {
        return Err(ApiError::unprocessable(format!(
            "gate {} queries Prometheus, but this server has none: start it with --prometheus-url",
            g.label()
        )));
    }
    st.notifier
        .check_channels(&spec.notify)
        .map_err(ApiError::unprocessable)
}

/// The default baseline: the release of `app` most of the selected devices run now (not the
/// one rolled out).
fn usual_release(spec: &RolloutSpec, fleet: &[Device], app: &str) -> Option<String> {
    let prefix = format!("{app}@");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let selected = fleet.iter().filter(|d| {
        spec.selector
            .iter()
            .all(|(k, v)| d.labels.get(k) == Some(v))
    });
    for d in selected {
        if let Some(r) = d
            .running
            .as_ref()
            .filter(|r| r.starts_with(&prefix) && **r != spec.release)
        {
            *counts.entry(r.clone()).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(r, _)| r)
}

/// An empty cohort would "complete" at once having changed nothing: refused, saying why.
fn refuse_empty_cohort(r: &Rollout, fleet: &[Device]) -> Result<(), ApiError> {
    let (eligible, bad) = r.eligible(fleet);
    if !eligible.is_empty() {
        return Ok(());
    }
    let bad: Vec<(String, String)> = bad
        .into_iter()
        .map(|(d, why)| (d.id.clone(), why))
        .collect();
    Err(ApiError::unprocessable(format!(
        "rollout not started: {}",
        no_device_reason(
            "devices",
            &r.spec.selector,
            bad.len(),
            &bad,
            &r.spec.release
        )
    )))
}

async fn status_of(st: &AppState, r: Rollout) -> Result<RolloutStatus, ApiError> {
    let fleet = fleet(st, app_of(&r.spec.release)).await?;
    let (eligible, bad) = r.eligible(&fleet);
    let running_release = fleet
        .iter()
        .filter(|d| d.running.as_deref() == Some(r.spec.release.as_str()))
        .count();
    Ok(RolloutStatus {
        eligible: eligible.len(),
        incompatible: bad
            .into_iter()
            .map(|(d, why)| (d.id.clone(), why))
            .collect(),
        running_release,
        step_description: r
            .spec
            .steps
            .get(r.state.step)
            .map(edgecd_rollout::engine::describe),
        rollout: r,
    })
}

async fn list(
    State(st): State<AppState>,
    _: Auth<Viewer>,
) -> Result<Json<Vec<RolloutStatus>>, ApiError> {
    let mut out = vec![];
    for s in st.store.rollout_states().await? {
        out.push(status_of(&st, json_col(&s)?).await?);
    }
    Ok(Json(out))
}

async fn show(
    State(st): State<AppState>,
    _: Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<RolloutStatus>, ApiError> {
    let r = load(&st, &id).await?;
    Ok(Json(status_of(&st, r).await?))
}

async fn history(
    State(st): State<AppState>,
    _: Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    load(&st, &id).await?;
    st.store
        .rollout_audit(&id)
        .await?
        .iter()
        .map(|s| json_col(s))
        .collect::<Result<Vec<_>, _>>()
        .map(Json)
}

/// Active (unfinished) rollouts.
pub(crate) async fn active(st: &AppState) -> Result<Vec<Rollout>, ApiError> {
    st.store
        .active_rollout_states()
        .await?
        .iter()
        .map(|s| json_col(s))
        .collect()
}

/// Stops rollout `id` for an outside reason (a firing alert), per its `on_failure`.
/// `Ok(Err(why))`: nothing to do (already finished or paused).
pub(crate) async fn fail(
    st: &AppState,
    id: &str,
    reason: String,
) -> Result<Result<Rollout, String>, ApiError> {
    let _serialized = st.store.lock_rollouts().await?;
    let mut r = load(st, id).await?;
    match r.fail(reason, st.now() as i64) {
        Ok(d) => {
            apply(st, &r, &d, None).await?;
            Ok(Ok(r))
        }
        Err(why) => Ok(Err(why)),
    }
}

async fn command(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Path((id, cmd)): Path<(String, String)>,
) -> Result<Json<RolloutStatus>, ApiError> {
    let cmd = match cmd.as_str() {
        "promote" => Command::Promote,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "abort" => Command::Abort,
        "rollback" => return rollback(&st, &id).await.map(Json),
        other => {
            return Err(ApiError::not_found(format!(
                "unknown rollout command {other:?}: use promote, pause, resume, abort, rollback or approve"
            )));
        }
    };
    run_command(&st, &id, cmd).await
}

/// `POST /api/v1/admin/rollouts/{id}/rollback`: the release's devices back to the baseline
/// (an unfinished rollout is aborted; a completed one too, unless a newer rollout of the
/// app is running).
async fn rollback(st: &AppState, id: &str) -> Result<RolloutStatus, ApiError> {
    let _serialized = st.store.lock_rollouts().await?;
    let mut r = load(st, id).await?;
    if r.is_finished()
        && let Ok((app, _)) = r.spec.app_and_version()
        && let Some(other) = st.store.active_rollout_for_app(app).await?
    {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            format!("rollout {other} of {app} is running: abort it instead of rolling back {id}"),
        ));
    }
    let d = r
        .rollback(st.now() as i64)
        .map_err(|e| ApiError::new(axum::http::StatusCode::CONFLICT, e))?;
    apply(st, &r, &d, None).await?;
    status_of(st, r).await
}

/// Aborts rollout `id` with the rollouts lock already held (a fleet whose release changed
/// while its rollout ran): its cohort goes back to the baseline, as `rollout abort` does.
pub(crate) async fn abort_locked(st: &AppState, id: &str) -> Result<(), ApiError> {
    let mut r = load(st, id).await?;
    let d = r
        .command(Command::Abort, st.now() as i64)
        .map_err(|e| ApiError::new(axum::http::StatusCode::CONFLICT, e))?;
    apply(st, &r, &d, None).await
}

/// What a chat button does (`approve`, `abort`, `rollback`), through the same code as the
/// JSON API's routes; the role each needs is [`action_role`].
pub(crate) async fn act(st: &AppState, id: &str, action: &str) -> Result<RolloutStatus, ApiError> {
    match action {
        "approve" => run_command(st, id, Command::Approve).await.map(|j| j.0),
        "abort" => run_command(st, id, Command::Abort).await.map(|j| j.0),
        "rollback" => rollback(st, id).await,
        other => Err(ApiError::bad_request(format!(
            "unknown action {other:?}: use approve, abort or rollback"
        ))),
    }
}

/// The role a rollout action needs (as its JSON API route in `auth::ROUTES`).
pub(crate) fn action_role(action: &str) -> Option<crate::auth::Role> {
    match action {
        "approve" => Some(crate::auth::Role::Approver),
        "abort" | "rollback" => Some(crate::auth::Role::Deployer),
        _ => None,
    }
}

/// `POST /api/v1/admin/rollouts/{id}/approve`: its own route, as it needs role `approver`.
async fn approve(
    State(st): State<AppState>,
    _: Auth<Approver>,
    Path(id): Path<String>,
) -> Result<Json<RolloutStatus>, ApiError> {
    run_command(&st, &id, Command::Approve).await
}

async fn run_command(
    st: &AppState,
    id: &str,
    cmd: Command,
) -> Result<Json<RolloutStatus>, ApiError> {
    let _serialized = st.store.lock_rollouts().await?;
    let mut r = load(st, id).await?;
    let d = r
        .command(cmd, st.now() as i64)
        .map_err(|e| ApiError::new(axum::http::StatusCode::CONFLICT, e))?;
    apply(st, &r, &d, None).await?;
    Ok(Json(status_of(st, r).await?))
}
