//! The GitOps API (thin handlers over [`crate::gitops`]): `POST /api/v1/admin/gitops`
//! registers the source, `GET` is its status, `DELETE` disconnects it (admin: a source decides
//! what every device runs); `POST /api/v1/gitops/webhook` wakes the next fetch when its
//! `X-Hub-Signature-256` (HMAC-SHA256 of the body with the webhook secret) is right, else 401.

use crate::auth::{Admin, Auth, Viewer};
use crate::gitops::{self, GitopsSource, GitopsStatus};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/admin/gitops",
            post(connect).get(status).delete(disconnect),
        )
        .route("/api/v1/gitops/webhook", post(webhook))
}

async fn connect(
    State(st): State<AppState>,
    _: Auth<Admin>,
    Json(source): Json<GitopsSource>,
) -> Result<Json<GitopsStatus>, ApiError> {
    Ok(Json(gitops::connect(&st, source).await?))
}

async fn status(
    State(st): State<AppState>,
    _: Auth<Viewer>,
) -> Result<Json<GitopsStatus>, ApiError> {
    Ok(Json(gitops::status(&st).await?))
}

async fn disconnect(
    State(st): State<AppState>,
    _: Auth<Admin>,
) -> Result<Json<GitopsStatus>, ApiError> {
    Ok(Json(gitops::disconnect(&st).await?))
}

async fn webhook(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    gitops::webhook(&st, &body, sig).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"fetch": "queued"})),
    ))
}
