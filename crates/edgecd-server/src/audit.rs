//! The audit log of people's requests: every mutating admin request by an authenticated API
//! token (refused ones too) is recorded by the access layer ([`crate::auth::layer`]) — who
//! (token name and role), what (method, route, path with the target ids, a summary of a JSON
//! body without secrets), when (ms), the outcome (status) and from where. `GET
//! /api/v1/admin/audit` reads it.
//!
//! "From where" is the TCP peer address. `X-Forwarded-For` is recorded beside it as the
//! client *claims* it, never trusted in its place (a proxy in front is not known to the
//! server). Device check-ins, enrollment and the alert hook are not people and not recorded
//! here (rollout changes by alerts are in the rollout's own history). Requests without a
//! valid token are not recorded (the request log has them), so unauthenticated clients
//! cannot fill the table.

use crate::AppState;
use crate::auth::{Admin, Auth, Caller};
use crate::error::ApiError;
use crate::store::AuditRow;
use axum::Json;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Largest JSON body summarized (bigger ones are recorded without a summary).
const SUMMARY_BODY_MAX: usize = 64 * 1024;
/// Longest string kept in a summary.
const SUMMARY_STRING_MAX: usize = 200;

/// An audit record as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub id: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub token: String,
    pub role: String,
    pub method: String,
    /// The route as registered, e.g. `/api/v1/admin/devices/{id}/revoke`.
    pub route: String,
    /// The path as requested (with the target ids).
    pub path: String,
    pub status: u16,
    /// The TCP peer's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// `X-Forwarded-For` as the client sent it (not verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_for: Option<String>,
    /// The JSON body's top-level fields, secrets and key material left out, long values cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<serde_json::Value>,
}

/// A request being audited, written once its status is known.
pub struct Pending(AuditRow);

/// Captures who, what and from where of `req` (reading a small JSON body to summarize it,
/// then putting it back).
pub async fn begin(req: Request, caller: &Caller, route: &str) -> (Request, Option<Pending>) {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let forwarded_for = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(256).collect());
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let small = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= SUMMARY_BODY_MAX);
    let mut row = AuditRow {
        id: 0,
        at_ms: 0,
        token: caller.name.clone(),
        role: caller.role.as_str().into(),
        method: req.method().to_string(),
        route: route.to_string(),
        path: req.uri().path().chars().take(1024).collect(),
        status: 0,
        peer,
        forwarded_for,
        summary: None,
    };
    let req = if is_json && small {
        let (parts, body) = req.into_parts();
        match axum::body::to_bytes(body, SUMMARY_BODY_MAX).await {
            Ok(bytes) => {
                row.summary = summarize(&bytes).map(|v| v.to_string());
                Request::from_parts(parts, axum::body::Body::from(bytes))
            }
            // The body did not arrive whole: the handler sees the same failure.
            Err(_) => Request::from_parts(parts, axum::body::Body::empty()),
        }
    } else {
        req
    };
    (req, Some(Pending(row)))
}

impl Pending {
    /// Writes the record with the answer's status. A failure to write is logged, not
    /// answered: the change it records has happened.
    pub async fn finish(mut self, st: &AppState, status: StatusCode) {
        self.0.status = i64::from(status.as_u16());
        self.0.at_ms = st.clock.now_ms();
        if let Err(e) = st.store.audit_insert(&self.0).await {
            tracing::error!(error = %e, token = %self.0.token, method = %self.0.method, path = %self.0.path, "could not write the audit record");
        }
    }
}

/// The top-level fields of a JSON object body, without secrets or key material.
pub fn summarize(body: &[u8]) -> Option<serde_json::Value> {
    let serde_json::Value::Object(map) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let secret = |k: &str| {
        let k = k.to_ascii_lowercase();
        ["pem", "secret", "password", "token", "credential"]
            .iter()
            .any(|s| k.contains(s))
    };
    let out = map
        .into_iter()
        .map(|(k, v)| {
            let v = if secret(&k) {
                serde_json::Value::String("(left out)".into())
            } else {
                cut(v)
            };
            (k, v)
        })
        .collect();
    Some(serde_json::Value::Object(out))
}

fn cut(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) if s.len() > SUMMARY_STRING_MAX => {
            let mut end = SUMMARY_STRING_MAX;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(format!("{}… ({} bytes)", &s[..end], s.len()))
        }
        Value::Object(_) | Value::Array(_) => {
            let n = v.to_string().len();
            if n > 2 * SUMMARY_STRING_MAX {
                Value::String(format!("({n} bytes)"))
            } else {
                v
            }
        }
        v => v,
    }
}

/// `GET /api/v1/admin/audit` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Unix milliseconds: records at or after.
    pub since: Option<i64>,
    /// Only this token's records.
    pub token: Option<String>,
    /// At most this many, newest first (default 100, at most 10000).
    pub limit: Option<i64>,
}

/// `GET /api/v1/admin/audit`: newest first.
pub async fn list(
    State(st): State<AppState>,
    _: Auth<Admin>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit}: use 1 to 10000"
        )));
    }
    let rows = st
        .store
        .audit(q.since.unwrap_or(0), q.token.as_deref(), limit)
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditRecord {
                id: r.id,
                at_ms: r.at_ms,
                token: r.token,
                role: r.role,
                method: r.method,
                route: r.route,
                path: r.path,
                status: u16::try_from(r.status).unwrap_or(0),
                peer: r.peer,
                forwarded_for: r.forwarded_for,
                summary: r.summary.and_then(|s| serde_json::from_str(&s).ok()),
            })
            .collect(),
    ))
}
