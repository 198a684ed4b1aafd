//! Troubleshooting a device without SSH (`edgecd device logs|diagnose`): an operator's
//! request is recorded (`POST /api/v1/admin/devices/{id}/logs|diagnose`), handed to the
//! device in its next check-in answer ([`pending_request`], never hidden by a `304`), and
//! the device uploads its recent agent and runtime log lines — and, for a diagnosis, what
//! it knows about itself right now — to `POST /api/v1/devices/{id}/logs`. Lines are
//! redacted on the device and again here ([`edgecd_api::redact`]) and bounded
//! ([`MAX_LOG_BYTES`]). Reading them needs role `deployer`: logs can reveal a lot.
//!
//! `GET …/diagnose` joins the device's fresh report with what the server already has:
//! inventory, labels, status, assignment, the last install attempts with refusal reasons
//! (from the device's events) and the day's temperature history (from its check-in metrics).

use crate::AppState;
use crate::auth::{Auth, Deployer};
use crate::devices::device_or_404;
use crate::error::ApiError;
use crate::http::device::OwnDevice;
use crate::util::json_col;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::post;
use axum::{Json, Router};
use edgecd_api::metrics::MetricsAggregate;
use edgecd_api::protocol::{
    DeviceReport, DeviceRequest, DeviceStatus, Diagnostics, Inventory, LogLine, MAX_LOG_BYTES,
};
use edgecd_api::redact::redact;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Lines asked for per source when the request does not say.
pub const DEFAULT_LINES: u32 = 200;
/// Most lines per source a request may ask for.
pub const MAX_LINES: u32 = 5000;
/// Install attempts a diagnosis shows.
const ATTEMPTS: usize = 10;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/admin/devices/{id}/logs",
            post(request_logs).get(logs),
        )
        .route(
            "/api/v1/admin/devices/{id}/diagnose",
            post(request_diagnosis).get(diagnosis),
        )
        .route(
            "/api/v1/devices/{id}/logs",
            post(upload).layer(DefaultBodyLimit::max(3 * MAX_LOG_BYTES)),
        )
}

/// `POST /api/v1/admin/devices/{id}/logs|diagnose` body (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsRequest {
    /// Lines per source (default 200, at most 5000).
    #[serde(default)]
    pub lines: Option<u32>,
}

/// `GET /api/v1/admin/devices/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceLogs {
    pub device: String,
    /// RFC 3339 of the latest request.
    pub requested_at: Option<String>,
    /// RFC 3339 of the latest report.
    pub received_at: Option<String>,
    /// The latest request is not answered yet (the lines are the previous report's).
    pub pending: bool,
    pub lines: Vec<LogLine>,
}

/// `GET /api/v1/admin/devices/{id}/diagnose`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub device: String,
    pub requested_at: Option<String>,
    pub received_at: Option<String>,
    pub pending: bool,
    pub labels: BTreeMap<String, String>,
    pub revoked: bool,
    pub last_seen: Option<String>,
    pub inventory: Option<Inventory>,
    pub status: Option<DeviceStatus>,
    /// `APP@VERSION` the server assigns it.
    pub assigned: Option<String>,
    /// The last install attempts, newest first, with refusal and failure reasons.
    pub install_attempts: Vec<InstallAttempt>,
    /// The last day's temperature per check-in, oldest first (from the check-in metrics).
    pub temperature_history: Vec<TemperaturePoint>,
    /// The device's own report (slots, free disk, recent temperatures, the runtime's
    /// health), from the answer to the latest diagnose request.
    pub agent: Option<Diagnostics>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallAttempt {
    pub at: String,
    /// `installed`, `failed`, `rolledBack` or `refused`.
    pub outcome: String,
    pub release: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemperaturePoint {
    pub at: String,
    pub mean_c: Option<f64>,
    pub max_c: Option<f64>,
    pub throttled_fraction: Option<f64>,
}

fn rfc3339(secs: i64) -> String {
    edgecd_bundle::release::rfc3339_utc(secs.max(0) as u64)
}

/// The request a device should answer now, if any (for its check-in answer).
pub async fn pending_request(
    st: &AppState,
    device: &str,
) -> Result<Option<DeviceRequest>, ApiError> {
    Ok(st
        .store
        .device_logs_pending(device)
        .await?
        .map(|(id, lines, diagnose)| DeviceRequest {
            id,
            lines: u32::try_from(lines).unwrap_or(DEFAULT_LINES),
            diagnose,
        }))
}

async fn record(st: &AppState, id: &str, body: &[u8], diagnose: bool) -> Result<(), ApiError> {
    device_or_404(st, id).await?;
    // The body is optional: none (or empty) asks for the defaults.
    let req: LogsRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LogsRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("body: {e} (expected {{\"lines\": N}} or nothing)"))
        })?
    };
    let lines = req.lines.unwrap_or(DEFAULT_LINES);
    if !(1..=MAX_LINES).contains(&lines) {
        return Err(ApiError::bad_request(format!(
            "lines {lines}: ask for 1 to {MAX_LINES} lines"
        )));
    }
    let request_id = crate::util::random_id().replacen("dev-", "req-", 1);
    st.store
        .device_logs_request(id, &request_id, i64::from(lines), diagnose, st.now() as i64)
        .await?;
    tracing::info!(device = %id, request = %request_id, diagnose, "device report requested");
    Ok(())
}

async fn request_logs(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<DeviceLogs>, ApiError> {
    record(&st, &id, &body, false).await?;
    Ok(Json(logs_of(&st, &id).await?))
}

async fn request_diagnosis(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Diagnosis>, ApiError> {
    record(&st, &id, &body, true).await?;
    Ok(Json(diagnosis_of(&st, &id).await?))
}

async fn logs_of(st: &AppState, id: &str) -> Result<DeviceLogs, ApiError> {
    device_or_404(st, id).await?;
    let row = st.store.device_logs(id).await?;
    let report: Option<DeviceReport> = row
        .as_ref()
        .and_then(|r| r.report.as_deref())
        .map(json_col)
        .transpose()?;
    Ok(DeviceLogs {
        device: id.to_string(),
        requested_at: row.as_ref().map(|r| rfc3339(r.requested_at)),
        received_at: row.as_ref().and_then(|r| r.received_at).map(rfc3339),
        pending: row.as_ref().is_some_and(|r| r.pending()),
        lines: report.map(|r| r.lines).unwrap_or_default(),
    })
}

async fn logs(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Path(id): Path<String>,
) -> Result<Json<DeviceLogs>, ApiError> {
    Ok(Json(logs_of(&st, &id).await?))
}

async fn diagnosis(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Path(id): Path<String>,
) -> Result<Json<Diagnosis>, ApiError> {
    Ok(Json(diagnosis_of(&st, &id).await?))
}

async fn diagnosis_of(st: &AppState, id: &str) -> Result<Diagnosis, ApiError> {
    let d = device_or_404(st, id).await?;
    let row = st.store.device_logs(id).await?;
    let report: Option<DeviceReport> = row
        .as_ref()
        .and_then(|r| r.report.as_deref())
        .map(json_col)
        .transpose()?;
    let assigned = st
        .store
        .assignment(id)
        .await?
        .map(|a| format!("{}@{}", a.app, a.release_version));
    let mut install_attempts = vec![];
    for (at, kind, detail) in st.store.events(id).await?.into_iter().rev() {
        if kind != "outcome" {
            continue;
        }
        let Ok(Some(o)) = serde_json::from_str::<Option<edgecd_api::protocol::Outcome>>(&detail)
        else {
            continue;
        };
        install_attempts.push(InstallAttempt {
            at: rfc3339(at),
            outcome: serde_json::to_value(o.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            release: o.release,
            // A reason may quote a hook's output: redacted like the logs.
            reason: redact(&o.reason),
        });
        if install_attempts.len() == ATTEMPTS {
            break;
        }
    }
    let mut temperature_history = vec![];
    for (at, agg) in st
        .store
        .device_metrics_of(id, st.now() as i64 - 86_400)
        .await?
    {
        let Ok(m) = serde_json::from_str::<MetricsAggregate>(&agg) else {
            continue;
        };
        if m.temp_samples == 0 {
            continue;
        }
        temperature_history.push(TemperaturePoint {
            at: rfc3339(at),
            mean_c: m.temp_mean_c(),
            max_c: m.temp_c_max,
            throttled_fraction: m.throttled_ratio(),
        });
    }
    Ok(Diagnosis {
        device: id.to_string(),
        requested_at: row.as_ref().map(|r| rfc3339(r.requested_at)),
        received_at: row.as_ref().and_then(|r| r.received_at).map(rfc3339),
        pending: row.as_ref().is_some_and(|r| r.pending()),
        labels: json_col(&d.labels)?,
        revoked: d.revoked,
        last_seen: d.last_seen.map(rfc3339),
        inventory: d.inventory.as_deref().map(json_col).transpose()?,
        status: d.status.as_deref().map(json_col).transpose()?,
        assigned,
        install_attempts,
        temperature_history,
        agent: report.and_then(|r| r.diagnostics),
    })
}

/// Redacts every line again and keeps the newest lines within [`MAX_LOG_BYTES`].
pub fn sanitize(report: &mut DeviceReport) -> Result<(), ApiError> {
    for l in &mut report.lines {
        if l.source != "agent" && l.source != "runtime" {
            return Err(ApiError::bad_request(format!(
                "log line source {:?}: use agent or runtime",
                l.source
            )));
        }
        l.line = redact(&l.line);
        l.ts.truncate(64);
    }
    let mut total = 0usize;
    let mut keep = report.lines.len();
    for (i, l) in report.lines.iter().enumerate().rev() {
        total += l.line.len();
        if total > MAX_LOG_BYTES {
            keep = report.lines.len() - i - 1;
            break;
        }
    }
    if keep < report.lines.len() {
        let drop = report.lines.len() - keep;
        report.lines.drain(..drop);
        report.truncated = true;
    }
    Ok(())
}

/// `POST /api/v1/devices/{id}/logs`: the device's answer to its latest request.
async fn upload(
    State(st): State<AppState>,
    OwnDevice(dev): OwnDevice,
    Json(mut report): Json<DeviceReport>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = dev.id;
    sanitize(&mut report)?;
    let stored = st
        .store
        .device_logs_put(
            &id,
            &report.request_id,
            st.now() as i64,
            &serde_json::to_string(&report).map_err(ApiError::internal)?,
        )
        .await?;
    if !stored {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            format!(
                "request {:?} is not this device's latest logs request: nothing stored",
                report.request_id
            ),
        ));
    }
    tracing::info!(device = %id, request = %report.request_id, lines = report.lines.len(), truncated = report.truncated, "device report received");
    Ok(Json(serde_json::json!({"stored": report.lines.len()})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_bounds_and_redacts() {
        let line = |i: usize| LogLine {
            ts: "2026-01-01T00:00:00Z".into(),
            source: "agent".into(),
            line: format!("{i:06} password=p{i} {}", "x".repeat(1000)),
        };
        let mut r = DeviceReport {
            request_id: "r".into(),
            lines: (0..400).map(line).collect(),
            truncated: false,
            diagnostics: None,
        };
        sanitize(&mut r).expect("ok");
        assert!(r.truncated);
        let total: usize = r.lines.iter().map(|l| l.line.len()).sum();
        assert!(total <= MAX_LOG_BYTES, "{total}");
        assert!(
            r.lines
                .last()
                .expect("lines")
                .line
                .starts_with("000399 password=[REDACTED]")
        );
        assert!(r.lines.iter().all(|l| !l.line.contains("password=p")));
        r.lines[0].source = "kernel".into();
        assert!(sanitize(&mut r).is_err());
    }
}
