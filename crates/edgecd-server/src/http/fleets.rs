//! The fleets API (thin handlers over [`crate::fleets`]): `POST /api/v1/admin/fleets` applies
//! a fleet (`?dryRun=true`: the diff, nothing stored), `GET …/fleets` lists them with their
//! status, `GET …/fleets/{name}` is one fleet's per-device status, `DELETE …/fleets/{name}`
//! removes the desired state (devices keep what they run).

use crate::auth::{Auth, Deployer, Viewer};
use crate::fleets::{self, FleetSpec, FleetStatus};
use crate::{ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/fleets", post(apply).get(list))
        .route("/api/v1/admin/fleets/{name}", get(show).delete(delete))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
}

async fn apply(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Query(q): Query<ApplyQuery>,
    Json(spec): Json<FleetSpec>,
) -> Result<Json<FleetStatus>, ApiError> {
    Ok(Json(fleets::apply(&st, spec, q.dry_run).await?))
}

async fn list(
    State(st): State<AppState>,
    _: Auth<Viewer>,
) -> Result<Json<Vec<FleetStatus>>, ApiError> {
    Ok(Json(fleets::list(&st).await?))
}

async fn show(
    State(st): State<AppState>,
    _: Auth<Viewer>,
    Path(name): Path<String>,
) -> Result<Json<FleetStatus>, ApiError> {
    Ok(Json(fleets::status(&st, &name).await?))
}

async fn delete(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Path(name): Path<String>,
) -> Result<Json<FleetStatus>, ApiError> {
    Ok(Json(fleets::delete(&st, &name).await?))
}
