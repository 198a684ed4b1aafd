//! HTTP routes: device endpoints (enroll, check-in, assignment, blobs with Range) and the
//! admin API. Every handler authenticates first, validates its input, and answers errors as
//! `{"error": …}` JSON.

use crate::error::ApiError;
use crate::store::{AssignmentRow, DeviceRow};
use crate::{AppState, util};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
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
        .route("/api/v1/admin/enrollment-tokens", post(create_token))
        .route("/api/v1/admin/devices", get(list_devices))
        .route("/api/v1/admin/devices/{id}", get(show_device))
        .route("/api/v1/admin/devices/{id}/labels", patch(label_device))
        .route("/api/v1/admin/devices/{id}/revoke", post(revoke_device))
        .route("/api/v1/admin/deployments", post(deploy))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/api/v1/hooks/alertmanager", post(crate::alerts::receive))
        .merge(crate::rollouts::routes())
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY));
    let upload = Router::new()
        .route("/api/v1/admin/blobs/{digest}", put(put_blob))
        .layer(DefaultBodyLimit::max(max_blob));
    json_routes
        .merge(upload)
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

async fn log_request(req: Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::info!(%method, %path, status = resp.status().as_u16(), ms = start.elapsed().as_millis() as u64, "request");
    resp
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

pub(crate) fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let t = bearer(headers)
        .ok_or_else(|| ApiError::unauthorized("missing admin token (Authorization: Bearer …)"))?;
    if util::ct_eq(&util::hash_secret(t), &state.admin_token_hash) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid admin token"))
    }
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
    Json(req): Json<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    check_inventory(&req.inventory)?;
    check_labels(&req.labels)?;
    let now = util::now() as i64;
    let hash = util::hash_secret(&req.token);
    let mut tx = st.store.pool.begin().await?;
    // Take one use of the token with a single write, so concurrent enrollments queue on
    // SQLite's write lock instead of failing a read-then-write upgrade.
    let taken: Option<(String,)> = sqlx::query_as(
        "UPDATE enroll_tokens SET uses_left = uses_left - 1 \
         WHERE hash = ? AND expires > ? AND uses_left > 0 RETURNING labels",
    )
    .bind(&hash)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((token_labels,)) = taken else {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT expires, uses_left FROM enroll_tokens WHERE hash = ?")
                .bind(&hash)
                .fetch_optional(&mut *tx)
                .await?;
        return Err(match row {
            None => ApiError::unauthorized("unknown enrollment token"),
            Some((expires, _)) if expires <= now => {
                ApiError::unauthorized("enrollment token expired")
            }
            Some(_) => ApiError::unauthorized("enrollment token already used"),
        });
    };
    let mut labels = req.labels.clone();
    labels.extend(json_col::<BTreeMap<String, String>>(&token_labels)?);
    let id = util::random_id();
    let credential = format!("edc_{id}.{}", util::random_token("s"));
    sqlx::query(
        "INSERT INTO devices(id, cred_hash, labels, enrolled, inventory) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(util::hash_secret(&credential))
    .bind(serde_json::to_string(&labels).map_err(ApiError::internal)?)
    .bind(now)
    .bind(serde_json::to_string(&req.inventory).map_err(ApiError::internal)?)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    st.store
        .event(
            Some(&id),
            "enrolled",
            &serde_json::to_string(&labels).unwrap_or_default(),
        )
        .await?;
    tracing::info!(device = %id, "device enrolled");
    let keys: Vec<(String,)> = sqlx::query_as("SELECT pem FROM trusted_keys ORDER BY added")
        .fetch_all(&st.store.pool)
        .await?;
    Ok(Json(EnrollResponse {
        device_id: id,
        credential,
        assignment_key_pem: st.signing_key.verifying_key().to_spki_pem(),
        trusted_release_keys: keys.into_iter().map(|k| k.0).collect(),
        next_checkin_secs: st.config.checkin_interval_secs,
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
    let r = checkin_inner(state, path, headers, req).await;
    crate::metrics::observe_checkin(started.elapsed().as_secs_f64());
    r
}

async fn checkin_inner(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<CheckinRequest>,
) -> Result<Response, ApiError> {
    let dev = device_for_path(&st, &headers, &id).await?;
    check_inventory(&req.inventory)?;
    if let Some(o) = &req.status.last_outcome {
        check_text("lastOutcome.reason", &o.reason.replace('\n', " "), 4096)?;
    }
    let prev: Option<DeviceStatus> = dev
        .status
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok());
    let now = util::now();
    sqlx::query("UPDATE devices SET last_seen = ?, inventory = ?, status = ? WHERE id = ?")
        .bind(now as i64)
        .bind(serde_json::to_string(&req.inventory).map_err(ApiError::internal)?)
        .bind(serde_json::to_string(&req.status).map_err(ApiError::internal)?)
        .bind(&id)
        .execute(&st.store.pool)
        .await?;
    if let Some(m) = &req.metrics {
        crate::rollouts::record_metrics(&st, &id, &req.status, m, dev.last_seen).await?;
    }
    let new_outcome = req.status.last_outcome.as_ref();
    if new_outcome.is_some() && new_outcome != prev.as_ref().and_then(|p| p.last_outcome.as_ref()) {
        let o = new_outcome.cloned();
        let detail = serde_json::to_string(&o).unwrap_or_default();
        tracing::info!(device = %id, outcome = %detail, "device reported an outcome");
        st.store.event(Some(&id), "outcome", &detail).await?;
    }
    let next = st.config.checkin_interval_secs;
    let mut row = st.store.assignment(&id).await?;
    if let Some(a) = &row
        && st.config.refresh_assignments
    {
        let ttl = st.config.assignment_ttl_secs as i64;
        if a.expires - (now as i64) < ttl / 2 {
            let p: Assignment = json_col(&a.payload)?;
            let fresh = sign_assignment(&st, &id, (a.version + 1) as u64, p.release)?;
            st.store.put_assignment(&fresh).await?;
            row = Some(fresh);
        }
    }
    let Some(a) = row else {
        return Ok((
            [next_header(next)],
            Json(CheckinResponse {
                assignment: None,
                next_checkin_secs: next,
            }),
        )
            .into_response());
    };
    let tag = etag(a.version);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    if matches {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [next_header(next), (header::ETAG, hv(&tag))],
        )
            .into_response());
    }
    Ok((
        [next_header(next), (header::ETAG, hv(&tag))],
        Json(CheckinResponse {
            assignment: Some(signed(&a, &st)),
            next_checkin_secs: next,
        }),
    )
        .into_response())
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
    if !valid_digest(&digest) {
        return Err(ApiError::bad_request(
            "blob digest must be sha256:<64 lowercase hex>",
        ));
    }
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
    headers: HeaderMap,
    Json(req): Json<TrustKeyRequest>,
) -> Result<Json<TrustedKey>, ApiError> {
    admin(&st, &headers)?;
    if let Some(n) = &req.name {
        check_text("name", n, 128)?;
    }
    let key = edgecd_sign::VerifyingKey::from_pem(&req.public_key_pem)
        .map_err(|e| ApiError::bad_request(format!("not a P-256 SPKI PEM public key: {e}")))?;
    let k = TrustedKey {
        hint: key.hint(),
        name: req.name,
        public_key_pem: key.to_spki_pem(),
        added: util::now(),
    };
    sqlx::query("INSERT INTO trusted_keys(hint, name, pem, added) VALUES (?, ?, ?, ?) ON CONFLICT(hint) DO UPDATE SET name = excluded.name")
        .bind(&k.hint)
        .bind(&k.name)
        .bind(&k.public_key_pem)
        .bind(k.added as i64)
        .execute(&st.store.pool)
        .await?;
    st.store.event(None, "key-trusted", &k.hint).await?;
    Ok(Json(k))
}

pub async fn trusted_keys(st: &AppState) -> Result<Vec<TrustedKey>, ApiError> {
    let rows: Vec<(String, Option<String>, String, i64)> =
        sqlx::query_as("SELECT hint, name, pem, added FROM trusted_keys ORDER BY added")
            .fetch_all(&st.store.pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(hint, name, public_key_pem, added)| TrustedKey {
            hint,
            name,
            public_key_pem,
            added: added as u64,
        })
        .collect())
}

async fn list_keys(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<TrustedKey>>, ApiError> {
    admin(&st, &headers)?;
    Ok(Json(trusted_keys(&st).await?))
}

async fn put_blob(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    admin(&st, &headers)?;
    if !valid_digest(&digest) {
        return Err(ApiError::bad_request(
            "blob digest must be sha256:<64 lowercase hex>",
        ));
    }
    // A response sent before the whole body was read must close the connection, or the
    // client could reuse it mid-body.
    let close = |r: Response| {
        ([(header::CONNECTION, HeaderValue::from_static("close"))], r).into_response()
    };
    if let Some(size) = st.blobs.size(&digest) {
        return Ok(close(
            (StatusCode::OK, Json(BlobRef { digest, size })).into_response(),
        ));
    }
    let stream = body.into_data_stream();
    match st
        .blobs
        .put_stream(&digest, stream, st.config.max_blob_bytes)
        .await
    {
        Ok(size) => Ok((StatusCode::CREATED, Json(BlobRef { digest, size })).into_response()),
        Err(crate::blobs::PutError::Store(e)) => Err(ApiError::internal(e)),
        Err(crate::blobs::PutError::TooLarge(n)) => Ok(close(
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("blob larger than {n} bytes"),
            )
            .into_response(),
        )),
        Err(e) => Ok(close(ApiError::bad_request(e.to_string()).into_response())),
    }
}

async fn publish(
    State(st): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<PublishRequest>,
) -> Result<Response, ApiError> {
    admin(&st, &headers)?;
    let info = crate::release::verify_publish(&st, &req).await?;
    let r = &info.release;
    let existing: Option<(String,)> =
        sqlx::query_as("SELECT info FROM releases WHERE app = ? AND version = ?")
            .bind(&r.app)
            .bind(&r.version)
            .fetch_optional(&st.store.pool)
            .await?;
    if let Some((old,)) = existing {
        let old: ReleaseInfo = json_col(&old)?;
        if old.release == info.release {
            return Ok((StatusCode::OK, Json(old)).into_response());
        }
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{}@{} is already published with different content; publish a new version",
                r.app, r.version
            ),
        ));
    }
    sqlx::query("INSERT INTO releases(app, version, info, published) VALUES (?, ?, ?, ?)")
        .bind(&r.app)
        .bind(&r.version)
        .bind(serde_json::to_string(&info).map_err(ApiError::internal)?)
        .bind(info.published as i64)
        .execute(&st.store.pool)
        .await?;
    st.store
        .event(
            None,
            "release-published",
            &format!("{}@{}", r.app, r.version),
        )
        .await?;
    tracing::info!(app = %r.app, version = %r.version, "release published");
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn list_releases(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<ReleaseInfo>>, ApiError> {
    admin(&st, &headers)?;
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT info FROM releases ORDER BY published, app, version")
            .fetch_all(&st.store.pool)
            .await?;
    rows.iter()
        .map(|r| json_col(&r.0))
        .collect::<Result<Vec<_>, _>>()
        .map(Json)
}

async fn create_token(
    State(st): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<CreateTokenRequest>,
) -> Result<Json<CreateTokenResponse>, ApiError> {
    admin(&st, &headers)?;
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
    let expires = util::now() + secs;
    sqlx::query("INSERT INTO enroll_tokens(hash, labels, expires, uses_left) VALUES (?, ?, ?, ?)")
        .bind(util::hash_secret(&token))
        .bind(serde_json::to_string(&req.labels).map_err(ApiError::internal)?)
        .bind(expires as i64)
        .bind(i64::from(max_uses))
        .execute(&st.store.pool)
        .await?;
    Ok(Json(CreateTokenResponse {
        token,
        expires,
        max_uses,
    }))
}

async fn device_info(st: &AppState, d: DeviceRow) -> Result<DeviceInfo, ApiError> {
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
    headers: HeaderMap,
) -> Result<Json<Vec<DeviceInfo>>, ApiError> {
    admin(&st, &headers)?;
    let mut out = Vec::new();
    for d in st.store.devices().await? {
        out.push(device_info(&st, d).await?);
    }
    Ok(Json(out))
}

async fn device_or_404(st: &AppState, id: &str) -> Result<DeviceRow, ApiError> {
    st.store
        .device(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))
}

async fn show_device(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<DeviceInfo>, ApiError> {
    admin(&st, &headers)?;
    let d = device_or_404(&st, &id).await?;
    Ok(Json(device_info(&st, d).await?))
}

async fn label_device(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<LabelRequest>,
) -> Result<Json<DeviceInfo>, ApiError> {
    admin(&st, &headers)?;
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
    sqlx::query("UPDATE devices SET labels = ? WHERE id = ?")
        .bind(serde_json::to_string(&labels).map_err(ApiError::internal)?)
        .bind(&id)
        .execute(&st.store.pool)
        .await?;
    let d = device_or_404(&st, &id).await?;
    Ok(Json(device_info(&st, d).await?))
}

async fn revoke_device(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<DeviceInfo>, ApiError> {
    admin(&st, &headers)?;
    let r = sqlx::query("UPDATE devices SET revoked = 1 WHERE id = ?")
        .bind(&id)
        .execute(&st.store.pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(ApiError::not_found(format!("no device {id}")));
    }
    st.store.event(Some(&id), "revoked", "").await?;
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
    let now = util::now();
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

async fn deploy(
    State(st): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<DeployRequest>,
) -> Result<Json<DeployResponse>, ApiError> {
    admin(&st, &headers)?;
    check_labels(&req.selector)?;
    let row: Option<(String,)> =
        sqlx::query_as("SELECT info FROM releases WHERE app = ? AND version = ?")
            .bind(&req.app)
            .bind(&req.version)
            .fetch_optional(&st.store.pool)
            .await?;
    let info: ReleaseInfo = json_col(
        &row.ok_or_else(|| ApiError::not_found(format!("no release {}@{}", req.app, req.version)))?
            .0,
    )?;
    let mut assigned = Vec::new();
    for d in st.store.devices().await? {
        if d.revoked {
            continue;
        }
        let labels: BTreeMap<String, String> = json_col(&d.labels)?;
        if !req.selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let version = st
            .store
            .assignment(&d.id)
            .await?
            .map_or(1, |a| a.version as u64 + 1);
        let a = sign_assignment(&st, &d.id, version, info.release.clone())?;
        st.store.put_assignment(&a).await?;
        st.store
            .event(
                Some(&d.id),
                "assigned",
                &format!("{}@{} v{version}", req.app, req.version),
            )
            .await?;
        assigned.push(DeployedDevice {
            device_id: d.id,
            assignment_version: version,
        });
    }
    tracing::info!(app = %req.app, version = %req.version, devices = assigned.len(), "deployed");
    Ok(Json(DeployResponse { assigned }))
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
