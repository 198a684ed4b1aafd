//! What devices call: enroll, check in, fetch their assignment, download their blobs.
//! Devices authenticate with their credential (`Authorization: Bearer edc_…`) through the
//! [`Device`] and [`OwnDevice`] extractors.

use super::hv;
use crate::AppState;
use crate::blobs::Download;
use crate::error::ApiError;
use crate::store::{AssignmentRow, DeviceRow};
use crate::util::{self, json_col};
use crate::validate::check_digest;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use edgecd_api::protocol::*;
use std::collections::BTreeMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/devices/enroll", post(enroll))
        .route("/api/v1/devices/{id}/checkin", post(checkin))
        .route("/api/v1/devices/{id}/assignment", get(get_assignment))
        .route("/api/v1/blobs/{digest}", get(get_blob))
}

/// A device authenticated by its credential: 401 without a valid one, 403 when revoked.
pub struct Device(pub DeviceRow);

impl FromRequestParts<AppState> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        authenticate(st, &parts.headers).await.map(Device)
    }
}

/// A device calling about itself: authenticated as [`Device`], and the `{id}` of the path
/// is its own (403 otherwise).
pub struct OwnDevice(pub DeviceRow);

impl FromRequestParts<AppState> for OwnDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, st)
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let dev = authenticate(st, &parts.headers).await?;
        if dev.id != id {
            return Err(ApiError::forbidden(format!(
                "device {} may not access device {id}",
                dev.id
            )));
        }
        Ok(OwnDevice(dev))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<DeviceRow, ApiError> {
    let t = bearer(headers).ok_or_else(|| {
        ApiError::unauthorized("missing device credential (Authorization: Bearer …)")
    })?;
    let (id, _) = t
        .strip_prefix("edc_")
        .and_then(|rest| rest.split_once('.'))
        .ok_or_else(|| ApiError::unauthorized("malformed device credential"))?;
    let dev = st
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

/// Refuses a peer whose protocol this server does not serve (426, naming both versions).
fn check_peer_protocol(body_version: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let v = headers
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(body_version);
    check_protocol(v).map_err(|e| ApiError::new(StatusCode::UPGRADE_REQUIRED, e))
}

/// `POST /api/v1/devices/enroll`: a new device with an enrollment token.
async fn enroll(
    State(st): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    check_peer_protocol(&req.protocol, &headers)?;
    Ok(Json(crate::devices::enroll(&st, &req).await?))
}

/// `POST /api/v1/devices/{id}/checkin`: the device reports; the answer carries a signed
/// timestamp and its assignment (or 304 when its `If-None-Match` shows it has it).
async fn checkin(
    State(st): State<AppState>,
    OwnDevice(dev): OwnDevice,
    headers: HeaderMap,
    Json(req): Json<CheckinRequest>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let r = async {
        check_peer_protocol(&req.protocol, &headers)?;
        let id = dev.id.clone();
        let c = crate::checkin::record(&st, dev, &req).await?;
        let request = crate::device_logs::pending_request(&st, &id).await?;
        Ok(checkin_answer(&st, &id, &headers, c, request))
    }
    .await;
    st.checkins.observe(started.elapsed().as_secs_f64());
    r
}

fn etag(version: i64) -> String {
    format!("\"a{version}\"")
}

fn next_header(secs: u64) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(NEXT_CHECKIN_HEADER),
        HeaderValue::from(secs),
    )
}

/// The signed timestamp headers of a check-in answer: `device_id`'s assignment is at
/// `version` (0: none) now, for the next `timestamp_ttl_secs`.
fn timestamp_headers(
    st: &AppState,
    device_id: &str,
    version: i64,
) -> [(HeaderName, HeaderValue); 2] {
    let now = st.now();
    let t = Timestamp {
        device_id: device_id.to_string(),
        issued: now,
        expires: now + st.config.timestamp_ttl_secs,
        assignment_version: version.max(0) as u64,
    };
    let sig = st.signing_key.sign(&t.signed_bytes());
    [
        (HeaderName::from_static(TIMESTAMP_HEADER), hv(&t.to_text())),
        (
            HeaderName::from_static(TIMESTAMP_SIGNATURE_HEADER),
            hv(&base64::engine::general_purpose::STANDARD.encode(sig)),
        ),
    ]
}

fn signed(a: &AssignmentRow, st: &AppState) -> SignedAssignment {
    SignedAssignment {
        payload: a.payload.clone(),
        signature: a.signature.clone(),
        key_hint: st.signing_key.verifying_key().hint(),
    }
}

/// The answer to a check-in: the signed timestamp, and the device's assignment unless its
/// `If-None-Match` shows it has it (304) and no report is asked of it; the registry mirror
/// of its site; `device_request`: logs or a diagnosis an operator asked for.
fn checkin_answer(
    st: &AppState,
    id: &str,
    headers: &HeaderMap,
    c: crate::checkin::Checkin,
    device_request: Option<DeviceRequest>,
) -> Response {
    let next = st.config.checkin_interval_secs;
    let image_mirror = c.image_mirror;
    let pending = device_request.is_some();
    let body = |assignment, assignments| {
        Json(CheckinResponse {
            assignments,
            assignment,
            next_checkin_secs: next,
            protocol: PROTOCOL_VERSION.into(),
            image_mirror: image_mirror.clone(),
            device_request: device_request.clone(),
        })
    };
    // The newest assignment goes to agents of protocol 1.1 (which hold one app); every
    // app's to newer ones. Versions come from one per-device counter, so the newest
    // version (and, for a removed app, the count) tells every change.
    let Some(a) = c.assignments.iter().max_by_key(|a| a.version) else {
        let stamp = timestamp_headers(st, id, 0);
        return ([next_header(next)], stamp, body(None, vec![])).into_response();
    };
    // Never a removal for an agent that reads only `assignment` (it would install it).
    let legacy = c
        .assignments
        .iter()
        .filter(|x| !x.removed)
        .max_by_key(|x| x.version);
    let mut tag = etag(a.version);
    if c.assignments.len() > 1 {
        tag = format!("\"a{}.n{}\"", a.version, c.assignments.len());
    }
    // The mirror is part of the tag: a device learns a new one at its next check-in.
    if let Some(m) = &image_mirror {
        tag = format!(
            "{}.m{}\"",
            tag.trim_end_matches('"'),
            &util::hash_secret(m)[..8]
        );
    }
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let head = [next_header(next), (header::ETAG, hv(&tag))];
    let stamp = timestamp_headers(st, id, a.version);
    if matches && !pending {
        return (StatusCode::NOT_MODIFIED, head, stamp).into_response();
    }
    let all = c.assignments.iter().map(|x| signed(x, st)).collect();
    (head, stamp, body(legacy.map(|x| signed(x, st)), all)).into_response()
}

/// `GET /api/v1/devices/{id}/assignment`: the device's newest signed assignment, or 404.
async fn get_assignment(
    State(st): State<AppState>,
    OwnDevice(dev): OwnDevice,
) -> Result<Json<SignedAssignment>, ApiError> {
    let a = st
        .store
        .assignment(&dev.id)
        .await?
        .ok_or_else(|| ApiError::not_found("no assignment for this device"))?;
    Ok(Json(signed(&a, &st)))
}

/// `GET /api/v1/blobs/{digest}`: a blob of one of the device's assignments (Range supported), or a
/// redirect to the registry or its site's mirror when blobs live there.
async fn get_blob(
    State(st): State<AppState>,
    Device(dev): Device,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_digest(&digest)?;
    let mut allowed = false;
    for a in st.store.device_assignments(&dev.id).await? {
        allowed |= json_col::<Vec<String>>(&a.blobs)?.contains(&digest);
    }
    if !allowed {
        return Err(ApiError::forbidden(format!(
            "blob {digest} is not assigned to device {}",
            dev.id
        )));
    }
    let labels: BTreeMap<String, String> = json_col(&dev.labels)?;
    let site = labels.get("site").map(String::as_str);
    match st.blob_backend.download(&st.blobs, &digest, site) {
        Download::Redirect(to) => Ok((
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, hv(&to))],
        )
            .into_response()),
        Download::Serve(path) => {
            let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
            let rate = st.config.blob_rate_kbps.filter(|k| *k > 0);
            super::blobs::serve_file(&path, range, rate).await
        }
    }
}
