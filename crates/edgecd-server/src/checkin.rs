//! A device's check-in, apart from HTTP: validate what it reports, record it (inventory,
//! status, metrics for running rollouts, outcome and stale-answer events), resync the
//! assignment counter when the device proves a newer assignment than the server has (a
//! restored database), and re-sign an assignment nearing expiry. `http::device` turns the
//! result into the answer (signed timestamp, assignment or 304).

use crate::AppState;
use crate::error::ApiError;
use crate::store::{AssignmentRow, DeviceRow};
use crate::util::json_col;
use crate::validate::{check_inventory, check_text};
use base64::Engine as _;
use edgecd_api::protocol::{Assignment, CheckinRequest, DeviceStatus, SignedAssignment};
use std::collections::BTreeMap;

/// What a check-in leaves the device with.
pub struct Checkin {
    /// The device's current assignments, one per app (re-signed if near expiry or resynced).
    pub assignments: Vec<AssignmentRow>,
    /// The registry mirror of the device's site (`--image-mirror SITE=HOST`), if any.
    pub image_mirror: Option<String>,
}

/// Records `dev`'s check-in `req` and returns its assignment.
pub async fn record(
    st: &AppState,
    dev: DeviceRow,
    req: &CheckinRequest,
) -> Result<Checkin, ApiError> {
    check_inventory(&req.inventory)?;
    if let Some(o) = &req.status.last_outcome {
        check_text("lastOutcome.reason", &o.reason.replace('\n', " "), 4096)?;
    }
    let id = dev.id.as_str();
    let prev: Option<DeviceStatus> = dev
        .status
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok());
    let now = st.now() as i64;
    st.store
        .record_checkin(
            id,
            now,
            &serde_json::to_string(&req.inventory).map_err(ApiError::internal)?,
            &serde_json::to_string(&req.status).map_err(ApiError::internal)?,
        )
        .await?;
    // Device-wide readings (and a single runtime's metrics) go with the first app; with
    // several apps, each app's runtime metrics with that app (protocol 1.2).
    if let Some(m) = &req.metrics {
        let running = req.status.running.as_ref();
        crate::rollouts::record_metrics(st, id, running, m, dev.last_seen).await?;
    }
    for (app, m) in &req.app_metrics {
        let running = req.status.running_app(app);
        crate::rollouts::record_metrics(st, id, running.as_ref(), m, dev.last_seen).await?;
    }
    record_events(st, id, &req.status, prev.as_ref()).await?;
    let assignments = current_assignments(st, id, &req.status).await?;
    let labels: BTreeMap<String, String> = json_col(&dev.labels)?;
    let image_mirror = labels
        .get("site")
        .and_then(|site| st.config.image_mirrors.get(site))
        .cloned();
    Ok(Checkin {
        assignments,
        image_mirror,
    })
}

/// Events for what changed since the last check-in: a new install outcome, stale answers.
async fn record_events(
    st: &AppState,
    id: &str,
    status: &DeviceStatus,
    prev: Option<&DeviceStatus>,
) -> Result<(), ApiError> {
    let new_outcome = status.last_outcome.as_ref();
    if new_outcome.is_some() && new_outcome != prev.and_then(|p| p.last_outcome.as_ref()) {
        let detail = serde_json::to_string(&new_outcome).unwrap_or_default();
        tracing::info!(device = %id, outcome = %detail, "device reported an outcome");
        st.store
            .event(Some(id), st.now() as i64, "outcome", &detail)
            .await?;
    }
    if let Some(stale) = status.stale_since
        && prev.and_then(|p| p.stale_since) != Some(stale)
    {
        tracing::warn!(device = %id, since = stale, "device reports stale answers (no fresh signed timestamp): a proxy or cache may be replaying old responses");
        st.store
            .event(
                Some(id),
                st.now() as i64,
                "stale-answers",
                &stale.to_string(),
            )
            .await?;
    }
    Ok(())
}

/// The device's assignments (one per app) after a resync (if it proves a newer one than
/// any of them) and a refresh of those nearing expiry (if refreshing is on).
async fn current_assignments(
    st: &AppState,
    id: &str,
    status: &DeviceStatus,
) -> Result<Vec<AssignmentRow>, ApiError> {
    let mut rows = st.store.device_assignments(id).await?;
    let newest = rows.iter().map(|a| a.version).max().unwrap_or(0);
    if let Some(proof) = &status.assignment_proof
        && status.assignment_version as i64 > newest
    {
        rows = resync(st, id, proof, rows).await?;
    }
    if st.config.refresh_assignments {
        let ttl = st.config.assignment_ttl_secs as i64;
        for a in rows.iter_mut() {
            if a.expires - (st.now() as i64) < ttl / 2 {
                let p: Assignment = json_col(&a.payload)?;
                *a = crate::assign::resign(st, id, &p).await?;
            }
        }
    }
    Ok(rows)
}

/// A device holding a validly signed assignment above the server's counter (the database
/// was restored from an older backup): raise the counter above it and re-sign the current
/// assignment there, instead of issuing versions the device refuses as a rollback attack.
async fn resync(
    st: &AppState,
    id: &str,
    proof: &SignedAssignment,
    rows: Vec<AssignmentRow>,
) -> Result<Vec<AssignmentRow>, ApiError> {
    let key = st.signing_key.verifying_key();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(proof.signature.as_bytes())
        .map_err(|_| ApiError::bad_request("assignmentProof.signature is not base64"))?;
    if proof.key_hint != key.hint() || key.verify(proof.payload.as_bytes(), &sig).is_err() {
        tracing::warn!(device = %id, "assignment proof does not verify with this server's key; ignored");
        return Ok(rows);
    }
    let p: Assignment = json_col(&proof.payload)?;
    let current = rows.iter().map(|a| a.version).max().unwrap_or(0);
    if p.device_id != id || p.version as i64 <= current {
        return Ok(rows);
    }
    st.store.raise_assignment_floor(id, p.version).await?;
    st.store
        .event(
            Some(id),
            st.now() as i64,
            "resynced",
            &format!(
                "device holds signed assignment v{} above the server's v{current}: counter raised",
                p.version
            ),
        )
        .await?;
    tracing::warn!(device = %id, device_version = p.version, server_version = current, "assignment counter behind the device (restored database?): resynced");
    let mut out = Vec::with_capacity(rows.len());
    for a in rows {
        let p: Assignment = json_col(&a.payload)?;
        out.push(crate::assign::resign(st, id, &p).await?);
    }
    Ok(out)
}
