//! The admin API: release keys, releases, enrollment tokens, devices and deployments. Each
//! handler checks the caller's role (`Auth<Role>`) and calls one domain function.

use crate::AppState;
use crate::auth::{Admin, Auth, Deployer, Viewer};
use crate::deploy::Scope;
use crate::error::ApiError;
use crate::release::Published;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use edgecd_api::protocol::*;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/keys", post(trust_key).get(list_keys))
        .route("/api/v1/admin/releases", post(publish).get(list_releases))
        .route("/api/v1/admin/releases/check", post(check_release))
        .route("/api/v1/admin/enrollment-tokens", post(create_token))
        .route("/api/v1/admin/devices", get(list_devices))
        .route(
            "/api/v1/admin/devices/{id}",
            get(show_device).delete(delete_device),
        )
        .route("/api/v1/admin/devices/{id}/labels", patch(label_device))
        .route("/api/v1/admin/devices/{id}/revoke", post(revoke_device))
        .route("/api/v1/admin/deployments", post(deploy))
}

/// `POST /api/v1/admin/keys`: trusts a release signing key.
async fn trust_key(
    State(st): State<AppState>,
    _: Auth<Admin>,
    Json(req): Json<TrustKeyRequest>,
) -> Result<Json<TrustedKey>, ApiError> {
    Ok(Json(crate::keys::trust(&st, req).await?))
}

async fn list_keys(
    State(st): State<AppState>,
    _: Auth<Viewer>,
) -> Result<Json<Vec<TrustedKey>>, ApiError> {
    Ok(Json(crate::keys::trusted(&st).await?))
}

/// `POST /api/v1/admin/releases/check`: the pre-flight check of a release from its small
/// files (uploaded first), so a bad release is refused before its bundle is uploaded.
async fn check_release(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Json(req): Json<PublishRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let pre = crate::release::preflight(&st, &req).await?;
    Ok(Json(serde_json::json!({
        "app": pre.manifest.app,
        "version": pre.manifest.version,
        "signedBy": pre.key.hint(),
        "alreadyPublished": pre.already_published.is_some(),
    })))
}

/// `POST /api/v1/admin/releases`: 201 when published, 200 when this very release already is.
async fn publish(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Json(req): Json<PublishRequest>,
) -> Result<Response, ApiError> {
    Ok(match crate::release::publish(&st, &req).await? {
        Published::New(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Published::Existing(info) => (StatusCode::OK, Json(info)).into_response(),
    })
}

async fn list_releases(
    State(st): State<AppState>,
    _: Auth<Viewer>,
) -> Result<Json<Vec<ReleaseInfo>>, ApiError> {
    Ok(Json(crate::release::list(&st).await?))
}

/// `POST /api/v1/admin/enrollment-tokens`: a token devices enroll with.
async fn create_token(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Json(req): Json<CreateTokenRequest>,
) -> Result<Json<CreateTokenResponse>, ApiError> {
    Ok(Json(crate::devices::create_enroll_token(&st, &req).await?))
}

async fn list_devices(
    State(st): State<AppState>,
    _: Auth<Viewer>,
    Query(q): Query<crate::devices::DeviceQuery>,
) -> Result<Json<Vec<DeviceInfo>>, ApiError> {
    Ok(Json(crate::devices::list(&st, &q).await?))
}

async fn show_device(
    State(st): State<AppState>,
    _: Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    let d = crate::devices::device_or_404(&st, &id).await?;
    Ok(Json(crate::devices::device_info(&st, d).await?))
}

/// `PATCH /api/v1/admin/devices/{id}/labels`: sets labels (an empty value removes one).
async fn label_device(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Path(id): Path<String>,
    Json(req): Json<LabelRequest>,
) -> Result<Json<DeviceInfo>, ApiError> {
    Ok(Json(crate::devices::relabel(&st, &id, req.labels).await?))
}

async fn revoke_device(
    State(st): State<AppState>,
    _: Auth<Admin>,
    Path(id): Path<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    Ok(Json(crate::devices::revoke(&st, &id).await?))
}

/// `DELETE /api/v1/admin/devices/{id}`: removes the device (with it its credential, which no
/// longer authenticates) and its assignment; answers the device as it was.
async fn delete_device(
    State(st): State<AppState>,
    _: Auth<Admin>,
    Path(id): Path<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    Ok(Json(crate::devices::delete(&st, &id).await?))
}

/// `POST /api/v1/admin/deployments` query: `dryRun=true` computes without assigning;
/// `scope=app` keeps to devices of the app (assigned it, or reporting it running), which is
/// what `edgecd rollback` asks for.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeployQuery {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    scope: Option<String>,
}

/// `POST /api/v1/admin/deployments`: assigns a release to the devices its selector matches
/// that can run it; 422 when no device would get it.
async fn deploy(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Query(q): Query<DeployQuery>,
    Json(req): Json<DeployRequest>,
) -> Result<Json<DeployResponse>, ApiError> {
    let scope = Scope::parse(q.scope.as_deref())?;
    Ok(Json(
        crate::deploy::deploy(&st, &req, scope, q.dry_run).await?,
    ))
}
