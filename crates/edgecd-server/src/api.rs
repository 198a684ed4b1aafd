//! HTTP routes: device endpoints (enroll, check-in, assignment, blobs with Range) and the
//! admin API. Every handler authenticates first, validates its input, and answers errors as
//! `{"error": …}` JSON.

use crate::auth::{Admin, Auth, Deployer, Viewer};
use crate::error::ApiError;
use crate::store::{AssignmentRow, DeviceRow, NewDevice, TokenRefusal, TrustedKeyRow};
use crate::{AppState, util};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use edgecd_api::protocol::*;
use std::collections::BTreeMap;

pub fn router(state: AppState) -> Router {
    let max_blob = usize::try_from(state.config.max_blob_bytes).unwrap_or(usize::MAX);
    let json_routes = Router::new()
        .route("/api/v1/devices/enroll", post(enroll))
        .route("/api/v1/devices/{id}/checkin", post(checkin))
        .route("/api/v1/devices/{id}/assignment", get(get_assignment))
        .route("/api/v1/blobs/{digest}", get(get_blob))
        .route("/api/v1/admin/keys", post(trust_key).get(list_keys))
        .route("/api/v1/admin/releases", post(publish).get(list_releases))
        .route("/api/v1/admin/releases/check", post(check_release))
        .route("/api/v1/admin/blobs/gc", post(gc_blobs))
        .route("/api/v1/admin/enrollment-tokens", post(create_token))
        .route("/api/v1/admin/devices", get(list_devices))
        .route(
            "/api/v1/admin/devices/{id}",
            get(show_device).delete(crate::devices::delete_device),
        )
        .route("/api/v1/admin/devices/{id}/labels", patch(label_device))
        .route("/api/v1/admin/devices/{id}/revoke", post(revoke_device))
        .route("/api/v1/admin/deployments", post(deploy))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/api/v1/hooks/alertmanager", post(crate::alerts::receive))
        .merge(crate::rollouts::routes())
        .merge(crate::auth::routes())
        .merge(crate::console::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY));
    let upload = Router::new()
        .route(
            "/api/v1/admin/blobs/{digest}",
            put(put_blob).head(head_blob),
        )
        .layer(DefaultBodyLimit::max(max_blob));
    json_routes
        .merge(upload)
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

/// Refuses a peer whose protocol this server does not serve (426, naming both versions).
fn check_peer_protocol(body_version: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let v = headers
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(body_version);
    check_protocol(v).map_err(|e| ApiError::new(StatusCode::UPGRADE_REQUIRED, e))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Authenticates a device by its credential (`edc_…`); 401 without a valid one, 403 when revoked.
async fn device(state: &AppState, headers: &HeaderMap) -> Result<DeviceRow, ApiError> {
    let t = bearer(headers).ok_or_else(|| {
        ApiError::unauthorized("missing device credential (Authorization: Bearer …)")
    })?;
    let (id, _) = t
        .strip_prefix("edc_")
        .and_then(|rest| rest.split_once('.'))
        .ok_or_else(|| ApiError::unauthorized("malformed device credential"))?;
    let dev = state
        .store
        .device(id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown device credential"))?;
    if !util::ct_eq(&util::hash_secret(t), &dev.cred_hash) {
        return Err(ApiError::unauthorized("invalid device credential"));
    }
    if dev.revoked {
        return Err(ApiError::forbidden(format!("device {} is revoked", dev.id)));
    }
    Ok(dev)
}

async fn device_for_path(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<DeviceRow, ApiError> {
    let dev = device(state, headers).await?;
    if dev.id != id {
        return Err(ApiError::forbidden(format!(
            "device {} may not access device {id}",
            dev.id
        )));
    }
    Ok(dev)
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if labels.len() > 64 {
        return Err(ApiError::bad_request("too many labels (max 64)"));
    }
    for (k, v) in labels {
        if !valid_label(k, v) {
            return Err(ApiError::bad_request(format!(
                "invalid label {k:?}={v:?}: use 1-63 characters of [A-Za-z0-9._-] (keys may contain /)"
            )));
        }
    }
    Ok(())
}

fn check_text(what: &str, s: &str, max: usize) -> Result<(), ApiError> {
    if s.len() > max || s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{what} is too long or contains control characters"
        )));
    }
    Ok(())
}

fn check_inventory(inv: &Inventory) -> Result<(), ApiError> {
    check_text("inventory.board", &inv.board, 64)?;
    check_text(
        "inventory.boardModel",
        inv.board_model.as_deref().unwrap_or(""),
        256,
    )?;
    check_text(
        "inventory.accelerator",
        inv.accelerator.as_deref().unwrap_or(""),
        64,
    )?;
    check_text("inventory.agentVersion", &inv.agent_version, 64)?;
    check_text(
        "inventory.hostname",
        inv.hostname.as_deref().unwrap_or(""),
        253,
    )?;
    check_text("inventory.serial", inv.serial.as_deref().unwrap_or(""), 128)?;
    if inv.runtimes.len() > 32 {
        return Err(ApiError::bad_request("too many runtimes"));
    }
    for (k, v) in &inv.runtimes {
        check_text("runtime name", k, 64)?;
        check_text("runtime version", v, 64)?;
    }
    Ok(())
}

pub(crate) fn json_col<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, ApiError> {
    serde_json::from_str(s).map_err(ApiError::internal)
}

// ---- device endpoints ----

async fn enroll(
    State(st): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    check_peer_protocol(&req.protocol, &headers)?;
    check_inventory(&req.inventory)?;
    check_labels(&req.labels)?;
    let now = st.now() as i64;
    let hash = util::hash_secret(&req.token);
    let id = util::random_id();
    let credential = format!("edc_{id}.{}", util::random_token("s"));
    let new = NewDevice {
        id: id.clone(),
        cred_hash: util::hash_secret(&credential),
        labels: req.labels.clone(),
        enrolled: now,
        inventory: serde_json::to_string(&req.inventory).map_err(ApiError::internal)?,
    };
    let labels = st.store.enroll(&hash, now, &new).await?.map_err(|r| {
        ApiError::unauthorized(match r {
            TokenRefusal::Unknown => "unknown enrollment token",
            TokenRefusal::Expired => "enrollment token expired",
            TokenRefusal::UsedUp => "enrollment token already used",
        })
    })?;
    st.store
        .event(
            Some(&id),
            st.now() as i64,
            "enrolled",
            &serde_json::to_string(&labels).unwrap_or_default(),
        )
        .await?;
    tracing::info!(device = %id, "device enrolled");
    let keys = st.store.trusted_keys().await?;
    Ok(Json(EnrollResponse {
        device_id: id,
        credential,
        assignment_key_pem: st.signing_key.verifying_key().to_spki_pem(),
        trusted_release_keys: keys.into_iter().map(|k| k.pem).collect(),
        next_checkin_secs: st.config.checkin_interval_secs,
        protocol: PROTOCOL_VERSION.into(),
    }))
}

fn etag(version: i64) -> String {
    format!("\"a{version}\"")
}

fn next_header(secs: u64) -> (axum::http::HeaderName, HeaderValue) {
    (
        axum::http::HeaderName::from_static(NEXT_CHECKIN_HEADER),
        HeaderValue::from(secs),
    )
}

/// The signed timestamp headers of a check-in answer: `device_id`'s assignment is at
/// `version` (0: none) now, for the next `timestamp_ttl_secs`.
fn timestamp_headers(
    st: &AppState,
    device_id: &str,
    version: i64,
) -> [(axum::http::HeaderName, HeaderValue); 2] {
    let now = st.now();
    let t = Timestamp {
        device_id: device_id.to_string(),
        issued: now,
        expires: now + st.config.timestamp_ttl_secs,
        assignment_version: version.max(0) as u64,
    };
    let sig = st.signing_key.sign(&t.signed_bytes());
    [
        (
            axum::http::HeaderName::from_static(TIMESTAMP_HEADER),
            hv(&t.to_text()),
        ),
        (
            axum::http::HeaderName::from_static(TIMESTAMP_SIGNATURE_HEADER),
            hv(&base64::engine::general_purpose::STANDARD.encode(sig)),
        ),
    ]
}

/// A device holding a validly signed assignment above the server's counter (the database
/// was restored from an older backup): raise the counter above it and re-sign the current
/// assignment there, instead of issuing versions the device refuses as a rollback attack.
async fn resync(
    st: &AppState,
    id: &str,
    proof: &SignedAssignment,
    row: Option<AssignmentRow>,
) -> Result<Option<AssignmentRow>, ApiError> {
    let key = st.signing_key.verifying_key();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(proof.signature.as_bytes())
        .map_err(|_| ApiError::bad_request("assignmentProof.signature is not base64"))?;
    if proof.key_hint != key.hint() || key.verify(proof.payload.as_bytes(), &sig).is_err() {
        tracing::warn!(device = %id, "assignment proof does not verify with this server's key; ignored");
        return Ok(row);
    }
    let p: Assignment = json_col(&proof.payload)?;
    let current = row.as_ref().map_or(0, |a| a.version);
    if p.device_id != id || p.version as i64 <= current {
        return Ok(row);
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
    let Some(a) = row else { return Ok(None) };
    let release: Assignment = json_col(&a.payload)?;
    Ok(Some(crate::assign::resign(st, id, &release.release).await?))
}

fn signed(a: &AssignmentRow, st: &AppState) -> SignedAssignment {
    SignedAssignment {
        payload: a.payload.clone(),
        signature: a.signature.clone(),
        key_hint: st.signing_key.verifying_key().hint(),
    }
}

async fn checkin(
    state: State<AppState>,
    path: Path<String>,
    headers: HeaderMap,
    req: Json<CheckinRequest>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let checkins = state.checkins.clone();
    let r = checkin_inner(state, path, headers, req).await;
    checkins.observe(started.elapsed().as_secs_f64());
    r
}

async fn checkin_inner(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<CheckinRequest>,
) -> Result<Response, ApiError> {
    let dev = device_for_path(&st, &headers, &id).await?;
    check_peer_protocol(&req.protocol, &headers)?;
    check_inventory(&req.inventory)?;
    if let Some(o) = &req.status.last_outcome {
        check_text("lastOutcome.reason", &o.reason.replace('\n', " "), 4096)?;
    }
    let prev: Option<DeviceStatus> = dev
        .status
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok());
    let now = st.now();
    st.store
        .record_checkin(
            &id,
            now as i64,
            &serde_json::to_string(&req.inventory).map_err(ApiError::internal)?,
            &serde_json::to_string(&req.status).map_err(ApiError::internal)?,
        )
        .await?;
    if let Some(m) = &req.metrics {
        crate::rollouts::record_metrics(&st, &id, &req.status, m, dev.last_seen).await?;
    }
    let new_outcome = req.status.last_outcome.as_ref();
    if new_outcome.is_some() && new_outcome != prev.as_ref().and_then(|p| p.last_outcome.as_ref()) {
        let o = new_outcome.cloned();
        let detail = serde_json::to_string(&o).unwrap_or_default();
        tracing::info!(device = %id, outcome = %detail, "device reported an outcome");
        st.store
            .event(Some(&id), st.now() as i64, "outcome", &detail)
            .await?;
    }
    if let Some(stale) = req.status.stale_since
        && prev.as_ref().and_then(|p| p.stale_since) != Some(stale)
    {
        tracing::warn!(device = %id, since = stale, "device reports stale answers (no fresh signed timestamp): a proxy or cache may be replaying old responses");
        st.store
            .event(
                Some(&id),
                st.now() as i64,
                "stale-answers",
                &stale.to_string(),
            )
            .await?;
    }
    let mut row = st.store.assignment(&id).await?;
    if let Some(proof) = &req.status.assignment_proof
        && req.status.assignment_version as i64 > row.as_ref().map_or(0, |a| a.version)
    {
        row = resync(&st, &id, proof, row).await?;
    }
    if let Some(a) = &row
        && st.config.refresh_assignments
    {
        let ttl = st.config.assignment_ttl_secs as i64;
        if a.expires - (now as i64) < ttl / 2 {
            let p: Assignment = json_col(&a.payload)?;
            row = Some(crate::assign::resign(&st, &id, &p.release).await?);
        }
    }
    let labels: BTreeMap<String, String> = json_col(&dev.labels)?;
    let mirror = labels
        .get("site")
        .and_then(|site| st.config.image_mirrors.get(site))
        .cloned();
    Ok(checkin_answer(&st, &id, &headers, row, mirror))
}

/// The answer to a check-in: the signed timestamp, and the device's assignment unless its
/// `If-None-Match` shows it has it (304); `image_mirror`: the registry mirror of its site.
fn checkin_answer(
    st: &AppState,
    id: &str,
    headers: &HeaderMap,
    row: Option<AssignmentRow>,
    image_mirror: Option<String>,
) -> Response {
    let next = st.config.checkin_interval_secs;
    let Some(a) = row else {
        return (
            [next_header(next)],
            timestamp_headers(st, id, 0),
            Json(CheckinResponse {
                assignment: None,
                next_checkin_secs: next,
                protocol: PROTOCOL_VERSION.into(),
                image_mirror,
            }),
        )
            .into_response();
    };
    // The mirror is part of the tag: a device learns a new one at its next check-in.
    let tag = match &image_mirror {
        None => etag(a.version),
        Some(m) => format!("\"a{}.m{}\"", a.version, &util::hash_secret(m)[..8]),
    };
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    if matches {
        return (
            StatusCode::NOT_MODIFIED,
            [next_header(next), (header::ETAG, hv(&tag))],
            timestamp_headers(st, id, a.version),
        )
            .into_response();
    }
    (
        [next_header(next), (header::ETAG, hv(&tag))],
        timestamp_headers(st, id, a.version),
        Json(CheckinResponse {
            assignment: Some(signed(&a, st)),
            next_checkin_secs: next,
            protocol: PROTOCOL_VERSION.into(),
            image_mirror,
        }),
    )
        .into_response()
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn get_assignment(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<SignedAssignment>, ApiError> {
    device_for_path(&st, &headers, &id).await?;
    let a = st
        .store
        .assignment(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no assignment for this device"))?;
    Ok(Json(signed(&a, &st)))
}

/// Parses a single `bytes=` range against `len`: `Ok(None)` = whole body, `Err` = unsatisfiable.
fn parse_range(v: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let spec = v.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len.checked_sub(1).ok_or(())?)
    } else {
        let s: u64 = a.parse().map_err(|_| ())?;
        let e = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        (s, e)
    };
    if start >= len || end < start {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn get_blob(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let dev = device(&st, &headers).await?;
    check_digest(&digest)?;
    let allowed = match st.store.assignment(&dev.id).await? {
        Some(a) => json_col::<Vec<String>>(&a.blobs)?.contains(&digest),
        None => false,
    };
    if !allowed {
        return Err(ApiError::forbidden(format!(
            "blob {digest} is not assigned to device {}",
            dev.id
        )));
    }
    if let Some(r) = &st.registry {
        let labels: BTreeMap<String, String> = json_col(&dev.labels)?;
        let to = r
            .config
            .blob_url(&digest, labels.get("site").map(String::as_str));
        return Ok((
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, hv(&to))],
        )
            .into_response());
    }
    serve_file(
        &st.blobs.path(&digest),
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        st.config.blob_rate_kbps.filter(|k| *k > 0),
    )
    .await
}

async fn serve_file(
    path: &std::path::Path,
    range: Option<&str>,
    rate_kbps: Option<u64>,
) -> Result<Response, ApiError> {
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|_| ApiError::not_found("blob not found"))?;
    let len = f.metadata().await.map_err(ApiError::internal)?.len();
    let range = match range {
        None => None,
        Some(r) => match parse_range(r, len) {
            Ok(r) => r,
            Err(()) => {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, hv(&format!("bytes */{len}")))],
                )
                    .into_response());
            }
        },
    };
    let (status, start, n) = match range {
        Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        None => (StatusCode::OK, 0, len),
    };
    f.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(ApiError::internal)?;
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(n), 16 * 1024);
    let body = match rate_kbps {
        None => Body::from_stream(stream),
        Some(kbps) => {
            // Each chunk leaves no earlier than the cap allows.
            let start = tokio::time::Instant::now();
            let mut sent = 0u64;
            Body::from_stream(stream.then(move |chunk| {
                if let Ok(c) = &chunk {
                    sent += c.len() as u64;
                }
                let due = start
                    + std::time::Duration::from_secs_f64(sent as f64 / (kbps as f64 * 1024.0));
                async move {
                    tokio::time::sleep_until(due).await;
                    chunk
                }
            }))
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            hv(&format!("bytes {start}-{}/{len}", start + n - 1)),
        );
    }
    Ok(resp)
}

// ---- admin endpoints ----

async fn trust_key(
    State(st): State<AppState>,
    _: Auth<Admin>,
    Json(req): Json<TrustKeyRequest>,
) -> Result<Json<TrustedKey>, ApiError> {
    if let Some(n) = &req.name {
        check_text("name", n, 128)?;
    }
    if let Some(label) = edgecd_sign::private_key_label(&req.public_key_pem) {
        tracing::warn!("refused a private key sent as a release key to trust");
        return Err(ApiError::bad_request(format!(
            "this is a private key (`{label}`), not a public one: nothing was stored; pass the public key file (KEY.pub, `-----BEGIN PUBLIC KEY-----`) and keep the private key secret (consider it exposed and rotate it)"
        )));
    }
    let key = edgecd_sign::VerifyingKey::from_pem(&req.public_key_pem)
        .map_err(|e| ApiError::bad_request(format!("not a P-256 SPKI PEM public key: {e}")))?;
    let k = TrustedKey {
        hint: key.hint(),
        name: req.name,
        public_key_pem: key.to_spki_pem(),
        added: st.now(),
    };
    st.store
        .put_trusted_key(&TrustedKeyRow {
            hint: k.hint.clone(),
            name: k.name.clone(),
            pem: k.public_key_pem.clone(),
            added: k.added as i64,
        })
        .await?;
    st.store
        .event(None, st.now() as i64, "key-trusted", &k.hint)
        .await?;
    Ok(Json(k))
}

pub async fn trusted_keys(st: &AppState) -> Result<Vec<TrustedKey>, ApiError> {
    Ok(st
        .store
        .trusted_keys()
        .await?
        .into_iter()
        .map(|k| TrustedKey {
            hint: k.hint,
            name: k.name,
            public_key_pem: k.pem,
            added: k.added as u64,
        })
        .collect())
}

async fn list_keys(
    State(st): State<AppState>,
    _: Auth<Viewer>,
) -> Result<Json<Vec<TrustedKey>>, ApiError> {
    Ok(Json(trusted_keys(&st).await?))
}

/// Upload protocol headers: the byte a PUT body starts at, and the blob's whole size.
const UPLOAD_OFFSET: &str = "upload-offset";
const UPLOAD_LENGTH: &str = "upload-length";

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ApiError::bad_request(format!("{name} must be a byte count")))
        })
        .transpose()
}

fn check_digest(digest: &str) -> Result<(), ApiError> {
    if valid_digest(digest) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "blob digest must be sha256:<64 lowercase hex>",
        ))
    }
}

/// Answers `r` once the request body is read (and discarded, up to `max` bytes), so the
/// answer reaches a client still sending it instead of a reset connection; a longer or
/// broken body is answered with `Connection: close`.
async fn answer_after_body(body: Body, max: u64, r: Response) -> Response {
    if drain(body, max).await {
        r
    } else {
        closing(r)
    }
}

/// 409 with the offset the upload of a blob continues at.
fn offset_conflict(e: &crate::blobs::PutError, have: u64) -> Response {
    (
        StatusCode::CONFLICT,
        offset_header(have),
        ApiError::new(StatusCode::CONFLICT, e.to_string()),
    )
        .into_response()
}

async fn drain(body: Body, max: u64) -> bool {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                n += c.len() as u64;
                if n > max {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// A response sent before the whole body was read must close the connection, or the
/// client could reuse it mid-body.
fn closing(r: Response) -> Response {
    ([(header::CONNECTION, HeaderValue::from_static("close"))], r).into_response()
}

/// `HEAD /api/v1/admin/blobs/{digest}`: 200 when stored, else 404; `Upload-Offset` says how
/// many bytes the server has (the size, or what an interrupted upload left).
async fn head_blob(
    State(st): State<AppState>,
    _: Auth<Viewer>,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    check_digest(&digest)?;
    let (status, have) = match st.blobs.size(&digest) {
        Some(size) => {
            st.blobs.touch(&digest);
            (StatusCode::OK, size)
        }
        None => match crate::registry::glue::size(&st, &digest).await? {
            Some(size) => (StatusCode::OK, size),
            None => (StatusCode::NOT_FOUND, st.blobs.partial_len(&digest)),
        },
    };
    Ok((status, offset_header(have)).into_response())
}

fn offset_header(n: u64) -> [(axum::http::HeaderName, HeaderValue); 1] {
    [(
        axum::http::HeaderName::from_static(UPLOAD_OFFSET),
        HeaderValue::from(n),
    )]
}

/// `PUT /api/v1/admin/blobs/{digest}`: the blob's bytes, or with `Upload-Offset: N` and
/// `Upload-Length: SIZE` the rest of an upload from byte N. 201 when stored, 202 (with
/// `Upload-Offset`) while incomplete, 200 if it was already there. The body is always read
/// before a success or offset answer.
async fn put_blob(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Path(digest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_digest(&digest)?;
    let max = st.config.max_blob_bytes;
    let offset = header_u64(&headers, UPLOAD_OFFSET)?.unwrap_or(0);
    let total = header_u64(&headers, UPLOAD_LENGTH)?;
    if let Some(size) = st.blobs.size(&digest) {
        let r = (StatusCode::OK, Json(BlobRef { digest, size })).into_response();
        return Ok(answer_after_body(body, max, r).await);
    }
    let Some(slot) = st.blobs.begin(&digest) else {
        let r = ApiError::new(
            StatusCode::CONFLICT,
            format!("an upload of {digest} is already in progress: retry when it ends"),
        )
        .into_response();
        return Ok(answer_after_body(body, max, r).await);
    };
    use crate::blobs::{Put, PutError};
    let have = st.blobs.partial_len(&digest);
    if offset != 0 && offset != have {
        let r = offset_conflict(&PutError::Offset { have, got: offset }, have);
        return Ok(answer_after_body(body, max, r).await);
    }
    match st
        .blobs
        .write(&slot, offset, total, body.into_data_stream(), max)
        .await
    {
        Ok(Put::Stored(size)) => {
            crate::registry::glue::push(&st, &digest).await?;
            Ok((StatusCode::CREATED, Json(BlobRef { digest, size })).into_response())
        }
        Ok(Put::Partial(n)) => Ok((
            StatusCode::ACCEPTED,
            offset_header(n),
            Json(serde_json::json!({"digest": digest, "offset": n})),
        )
            .into_response()),
        Err(PutError::Store(e)) => Err(ApiError::internal(e)),
        Err(e @ PutError::Offset { have, .. }) => Ok(closing(offset_conflict(&e, have))),
        Err(e @ (PutError::TooLarge(_) | PutError::TooLong(_))) => Ok(closing(
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response(),
        )),
        Err(e) => Ok(closing(
            ApiError::bad_request(e.to_string()).into_response(),
        )),
    }
}

/// `POST /api/v1/admin/blobs/gc`: removes blobs no release refers to and stale partial
/// uploads, untouched for `graceSecs` (default: the server's sweep grace).
async fn gc_blobs(
    State(st): State<AppState>,
    _: Auth<Admin>,
    axum::extract::Query(q): axum::extract::Query<GcQuery>,
) -> Result<Json<crate::blobs::Swept>, ApiError> {
    let grace = q.grace_secs.unwrap_or(st.config.blob_gc_grace_secs);
    Ok(Json(
        sweep_blobs(&st, std::time::Duration::from_secs(grace)).await?,
    ))
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GcQuery {
    grace_secs: Option<u64>,
}

/// Every blob a published release refers to.
async fn referenced_blobs(st: &AppState) -> Result<std::collections::BTreeSet<String>, ApiError> {
    let mut out = std::collections::BTreeSet::new();
    for info in st.store.release_infos().await? {
        let i: ReleaseInfo = json_col(&info)?;
        let r = i.release;
        out.extend(
            [r.manifest, r.manifest_sig, r.bundle, r.bundle_sig]
                .into_iter()
                .chain(i.sbom)
                .map(|b| b.digest),
        );
    }
    Ok(out)
}

/// One garbage-collection pass over the blob store (the periodic sweep and the admin call).
pub async fn sweep_blobs(
    st: &AppState,
    grace: std::time::Duration,
) -> Result<crate::blobs::Swept, ApiError> {
    let referenced = referenced_blobs(st).await?;
    let blobs = st.blobs.clone();
    let swept = tokio::task::spawn_blocking(move || blobs.sweep(&referenced, grace))
        .await
        .map_err(ApiError::internal)?;
    if !swept.blobs.is_empty() || !swept.partial_uploads.is_empty() {
        tracing::info!(
            blobs = swept.blobs.len(),
            partial_uploads = swept.partial_uploads.len(),
            bytes = swept.bytes,
            "removed unreferenced blobs"
        );
    }
    Ok(swept)
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
    let mut pre = crate::release::preflight(&st, &req).await?;
    if let Some(old) = pre.already_published.take() {
        return Ok((StatusCode::OK, Json(old)).into_response());
    }
    let info = crate::release::verify_publish(&st, &req, pre).await?;
    crate::registry::glue::publish(&st, &info).await?;
    let r = &info.release;
    let inserted = st
        .store
        .insert_release(
            &r.app,
            &r.version,
            &serde_json::to_string(&info).map_err(ApiError::internal)?,
            info.published as i64,
        )
        .await?;
    if !inserted {
        // Published concurrently: the same release, or a conflict.
        let pre = crate::release::preflight(&st, &req).await?;
        return match pre.already_published {
            Some(old) => Ok((StatusCode::OK, Json(old)).into_response()),
            None => Err(ApiError::internal("release vanished while publishing")),
        };
    }
    st.store
        .event(
            None,
            st.now() as i64,
            "release-published",
            &format!("{}@{}", r.app, r.version),
        )
        .await?;
    tracing::info!(app = %r.app, version = %r.version, "release published");
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn list_releases(
    State(st): State<AppState>,
    _: Auth<Viewer>,
) -> Result<Json<Vec<ReleaseInfo>>, ApiError> {
    st.store
        .release_infos()
        .await?
        .iter()
        .map(|r| json_col(r))
        .collect::<Result<Vec<_>, _>>()
        .map(Json)
}

async fn create_token(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Json(req): Json<CreateTokenRequest>,
) -> Result<Json<CreateTokenResponse>, ApiError> {
    check_labels(&req.labels)?;
    let secs = req.expires_in_secs.unwrap_or(24 * 3600);
    if secs == 0 || secs > 365 * 24 * 3600 {
        return Err(ApiError::bad_request(
            "expiry must be between 1 second and 365 days",
        ));
    }
    let max_uses = req.max_uses.unwrap_or(1);
    if max_uses == 0 || max_uses > 100_000 {
        return Err(ApiError::bad_request(
            "max uses must be between 1 and 100000",
        ));
    }
    let token = util::random_token("edt");
    let expires = st.now() + secs;
    st.store
        .create_enroll_token(
            &util::hash_secret(&token),
            &serde_json::to_string(&req.labels).map_err(ApiError::internal)?,
            expires as i64,
            i64::from(max_uses),
        )
        .await?;
    Ok(Json(CreateTokenResponse {
        token,
        expires,
        max_uses,
    }))
}

pub(crate) async fn device_info(st: &AppState, d: DeviceRow) -> Result<DeviceInfo, ApiError> {
    let a = st.store.assignment(&d.id).await?;
    Ok(DeviceInfo {
        labels: json_col(&d.labels)?,
        enrolled: d.enrolled as u64,
        last_seen: d.last_seen.map(|t| t as u64),
        revoked: d.revoked,
        inventory: d.inventory.as_deref().map(json_col).transpose()?,
        status: d.status.as_deref().map(json_col).transpose()?,
        assigned: a
            .as_ref()
            .map(|a| format!("{}@{}", a.app, a.release_version)),
        assignment_version: a.as_ref().map(|a| a.version as u64),
        id: d.id,
    })
}

async fn list_devices(
    State(st): State<AppState>,
    _: Auth<Viewer>,
    Query(q): Query<crate::devices::DeviceQuery>,
) -> Result<Json<Vec<DeviceInfo>>, ApiError> {
    Ok(Json(crate::devices::list(&st, &q).await?))
}

pub(crate) async fn device_or_404(st: &AppState, id: &str) -> Result<DeviceRow, ApiError> {
    st.store
        .device(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))
}

async fn show_device(
    State(st): State<AppState>,
    _: Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    let d = device_or_404(&st, &id).await?;
    Ok(Json(device_info(&st, d).await?))
}

async fn label_device(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    Path(id): Path<String>,
    Json(req): Json<LabelRequest>,
) -> Result<Json<DeviceInfo>, ApiError> {
    check_labels(&req.labels)?;
    let d = device_or_404(&st, &id).await?;
    let mut labels: BTreeMap<String, String> = json_col(&d.labels)?;
    for (k, v) in req.labels {
        if v.is_empty() {
            labels.remove(&k);
        } else {
            labels.insert(k, v);
        }
    }
    st.store
        .set_labels(
            &id,
            &serde_json::to_string(&labels).map_err(ApiError::internal)?,
        )
        .await?;
    let d = device_or_404(&st, &id).await?;
    Ok(Json(device_info(&st, d).await?))
}

async fn revoke_device(
    State(st): State<AppState>,
    _: Auth<Admin>,
    Path(id): Path<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    if !st.store.revoke(&id).await? {
        return Err(ApiError::not_found(format!("no device {id}")));
    }
    st.store
        .event(Some(&id), st.now() as i64, "revoked", "")
        .await?;
    let d = device_or_404(&st, &id).await?;
    Ok(Json(device_info(&st, d).await?))
}

/// Signs a new assignment of `release` to `device_id` at `version`.
pub fn sign_assignment(
    st: &AppState,
    device_id: &str,
    version: u64,
    release: ReleaseRef,
) -> Result<AssignmentRow, ApiError> {
    let now = st.now();
    sign_assignment_at(
        st,
        device_id,
        version,
        release,
        now,
        now + st.config.assignment_ttl_secs,
    )
}

/// Signs an assignment with explicit times (tests use it to make expired assignments).
pub fn sign_assignment_at(
    st: &AppState,
    device_id: &str,
    version: u64,
    release: ReleaseRef,
    issued: u64,
    expires: u64,
) -> Result<AssignmentRow, ApiError> {
    let blobs = vec![
        release.manifest.digest.clone(),
        release.manifest_sig.digest.clone(),
        release.bundle.digest.clone(),
        release.bundle_sig.digest.clone(),
    ];
    let (app, rv) = (release.app.clone(), release.version.clone());
    let a = Assignment {
        device_id: device_id.to_string(),
        version,
        issued,
        expires,
        release,
    };
    let payload = serde_json::to_string(&a).map_err(ApiError::internal)?;
    let sig = st.signing_key.sign(payload.as_bytes());
    Ok(AssignmentRow {
        device_id: device_id.to_string(),
        version: version as i64,
        app,
        release_version: rv,
        signature: base64::engine::general_purpose::STANDARD.encode(sig),
        payload,
        expires: expires as i64,
        blobs: serde_json::to_string(&blobs).map_err(ApiError::internal)?,
    })
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

/// Assigns a release to the devices its selector matches that can run it (the rollout
/// engine's compatibility check); incompatible ones are listed with the reason. 422 when
/// no device would get it.
async fn deploy(
    State(st): State<AppState>,
    _: Auth<Deployer>,
    axum::extract::Query(q): axum::extract::Query<DeployQuery>,
    Json(req): Json<DeployRequest>,
) -> Result<Json<DeployResponse>, ApiError> {
    check_labels(&req.selector)?;
    let only_app = match q.scope.as_deref() {
        None | Some("selector") => false,
        Some("app") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown deployment scope {other:?}: use selector or app"
            )));
        }
    };
    let info: ReleaseInfo = json_col(
        &st.store
            .release(&req.app, &req.version)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(format!("no release {}@{}", req.app, req.version))
            })?,
    )?;
    let requirements = edgecd_rollout::cohort::Requirements {
        hardware: info.release.hardware.clone(),
        runtime: info.release.runtime.clone(),
    };
    let app_prefix = format!("{}@", req.app);
    let mut assigned = Vec::new();
    let mut skipped = Vec::new();
    let mut matched = 0usize;
    for d in crate::rollouts::fleet(&st).await? {
        if !req.selector.iter().all(|(k, v)| d.labels.get(k) == Some(v)) {
            continue;
        }
        let current = st.store.assignment(&d.id).await?;
        if only_app
            && current.as_ref().is_none_or(|a| a.app != req.app)
            && !d
                .running
                .as_deref()
                .is_some_and(|r| r.starts_with(&app_prefix))
        {
            continue;
        }
        matched += 1;
        if let Err(reason) = requirements.check(&d) {
            skipped.push(SkippedDevice {
                device_id: d.id,
                reason,
            });
            continue;
        }
        let version = if q.dry_run {
            st.store.next_assignment_version(&d.id).await?
        } else {
            crate::assign::assign(&st, &d.id, &info.release, crate::assign::Why::Deploy)
                .await?
                .map_or(0, |a| a.version as u64)
        };
        assigned.push(DeployedDevice {
            device_id: d.id,
            assignment_version: version,
        });
    }
    if assigned.is_empty() {
        let devices = if only_app {
            format!("devices of {}", req.app)
        } else {
            "devices".to_string()
        };
        let bad: Vec<(String, String)> = skipped
            .into_iter()
            .map(|s| (s.device_id, s.reason))
            .collect();
        return Err(ApiError::unprocessable(crate::rollouts::no_device_reason(
            &devices,
            &req.selector,
            matched,
            &bad,
            &format!("{}@{}", req.app, req.version),
        )));
    }
    tracing::info!(app = %req.app, version = %req.version, devices = assigned.len(), skipped = skipped.len(), dry_run = q.dry_run, "deployed");
    Ok(Json(DeployResponse {
        assigned,
        skipped,
        dry_run: q.dry_run,
    }))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=5-100", 10), Ok(Some((5, 9))));
        assert_eq!(parse_range("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(parse_range("bytes=10-", 10), Err(()));
        assert_eq!(parse_range("bytes=0-1,3-4", 10), Err(()));
        assert_eq!(parse_range("items=0-1", 10), Err(()));
    }
}
