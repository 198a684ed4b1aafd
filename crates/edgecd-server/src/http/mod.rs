//! The HTTP layer: the router, its middleware (authentication and roles, the protocol
//! header, request logging) and thin axum handlers. A handler extracts and authenticates
//! (`Auth<Role>`, [`device::Device`]), calls one domain function, and shapes the answer;
//! the work itself lives in the domain modules (`checkin`, `deploy`, `release`, `blobs`,
//! `rollouts`, …). Errors answer as `{"error": …}` JSON.
//!
//! - [`device`]: what devices call (enroll, check-in, assignment, blob download).
//! - [`blobs`]: the resumable blob upload protocol and garbage collection.
//! - [`admin`]: keys, releases, enrollment tokens, devices, deployments.
//! - [`fleets`]: desired state (apply, diff, status, delete).
//! - [`gitops`]: the GitOps source (register, status, disconnect) and its webhook.

pub mod admin;
pub mod blobs;
pub mod device;
pub mod fleets;
pub mod gitops;

use crate::AppState;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use edgecd_api::protocol::{MAX_JSON_BODY, PROTOCOL_HEADER, PROTOCOL_VERSION};

/// The whole API: every route, behind authentication (roles per the `auth::ROUTES` table),
/// the protocol header and request logging.
pub fn router(state: AppState) -> Router {
    let max_blob = usize::try_from(state.config.max_blob_bytes).unwrap_or(usize::MAX);
    let json_routes = Router::new()
        .merge(device::routes())
        .merge(admin::routes())
        .merge(blobs::routes())
        .merge(fleets::routes())
        .merge(gitops::routes())
        .route("/metrics", get(crate::metrics::metrics))
        .route(
            "/api/v1/hooks/alertmanager",
            axum::routing::post(crate::alerts::receive),
        )
        .merge(crate::rollouts::routes())
        .merge(crate::device_logs::routes())
        .merge(crate::chatops::routes())
        .merge(crate::auth::routes())
        .merge(crate::console::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY));
    json_routes
        .merge(blobs::upload_routes().layer(DefaultBodyLimit::max(max_blob)))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::layer,
        ))
        .layer(axum::middleware::map_response(protocol_header))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// `GET /readyz`: 200 when the database answers and the controller runs (as leader or
/// standby), else 503 saying what is wrong; the body tells which replica answered and
/// whether it runs the controller.
async fn readyz(State(st): State<AppState>) -> Response {
    let problem = match st.store.ping().await {
        Err(e) => Some(format!(
            "the database ({}) does not answer: {e}",
            st.store.backend()
        )),
        Ok(()) => st.controller.problem(),
    };
    let c = &st.controller;
    let body = serde_json::json!({
        "ready": problem.is_none(),
        "problem": problem,
        "database": st.store.backend(),
        "blobs": st.blob_backend.describe(),
        "replica": st.replica_id,
        "controller": if c.leader.load(std::sync::atomic::Ordering::Relaxed) { "leader" } else { "standby" },
        "controllerEpoch": c.epoch.load(std::sync::atomic::Ordering::Relaxed),
        "controllerRestarts": c.restarts.load(std::sync::atomic::Ordering::Relaxed),
    });
    let status = if problem.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Logs each request at INFO, except the routine polling of a healthy fleet (check-ins,
/// `/metrics` scrapes, `/healthz`), which logs at DEBUG when it succeeds: with hundreds of
/// devices it would bury everything else. A failed poll (4xx/5xx) stays at INFO.
async fn log_request(req: Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    let (status, ms) = (resp.status(), start.elapsed().as_millis() as u64);
    let routine = is_polling(&path) && (status.is_success() || status == StatusCode::NOT_MODIFIED);
    if routine {
        tracing::debug!(%method, %path, status = status.as_u16(), ms, "request");
    } else {
        tracing::info!(%method, %path, status = status.as_u16(), ms, "request");
    }
    resp
}

/// Paths a fleet and its monitoring hit on a timer.
fn is_polling(path: &str) -> bool {
    path == "/metrics"
        || path == "/healthz"
        || path == "/readyz"
        || path
            .strip_prefix("/api/v1/devices/")
            .is_some_and(|p| p.ends_with("/checkin"))
}

/// Every answer names the server's protocol version (see `edgecd_api::protocol`).
async fn protocol_header(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        axum::http::HeaderName::from_static(PROTOCOL_HEADER),
        HeaderValue::from_static(PROTOCOL_VERSION),
    );
    resp
}

/// A header value from text; an invalid one becomes empty rather than failing the answer.
pub(crate) fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}
