//! The web console: pages served by the server, their assets embedded in the binary (no CDN,
//! works offline), every action and read through the JSON API with the session cookie and
//! its CSRF token ([`session`]). Owns the login/logout forms, the page shell (one HTML
//! document per page whose script, `assets/console.js`, renders it from the API and polls it
//! every few seconds), the strict Content-Security-Policy of console responses, the way an
//! unauthenticated browser is sent through the login and back (`next`, a local path only),
//! and three reads only the console needs: a device's install history and recent metrics,
//! and a release's provenance and SBOM summary.
//!
//! Pages: `/console/` (fleet overview), `/console/devices/{id}`, `/console/rollouts/{id}`,
//! `/console/releases/{app@version}`. Who may do what is the API's `ROUTES` table; the
//! console only hides buttons the caller's role could not use.

pub mod session;

use crate::AppState;
use crate::auth::{Auth, Viewer};
use crate::error::ApiError;
use crate::store::AuditRow;
use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use edgecd_api::metrics::MetricsAggregate;
use edgecd_api::protocol::{DeviceStatus, ReleaseInfo};
use session::Session;
use std::net::SocketAddr;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const ICON: &str = include_str!("assets/icon.svg");

/// The Content-Security-Policy of every console response: scripts, styles and fetches only
/// from the server itself, no inline script or style, no framing, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(root))
        .route("/console/", get(page))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/assets/{file}", get(asset))
        .route("/console/devices/{id}", get(page))
        .route("/console/rollouts/{id}", get(page))
        .route("/console/releases/{id}", get(page))
        .route("/api/v1/admin/devices/{id}/metrics", get(device_metrics))
        .route("/api/v1/admin/devices/{id}/history", get(device_history))
        .route("/api/v1/admin/releases/{id}/details", get(release_details))
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Whether `method route` is a console page (an unauthenticated browser goes to the login).
pub fn is_page(method: &Method, route: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
        && (route == "/console" || route.starts_with("/console/"))
        && !route.starts_with("/console/assets/")
}

/// Where a page's `next` may lead: a console path on this server (never another host, a
/// scheme, a protocol-relative `//host` or a backslash a browser would read as `/`).
pub fn valid_next(next: &str) -> bool {
    (next == "/console" || next.starts_with("/console/"))
        && !next.contains('\\')
        && !next.contains("//")
        && !next.chars().any(|c| c.is_control() || c.is_whitespace())
        && next.len() <= 2048
}

fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Largest login or logout form read.
const FORM_MAX: usize = 16 * 1024;

/// Percent-encodes everything but unreserved characters and `/`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// 303 to the login page, coming back to `uri` afterwards.
pub fn to_login(uri: &Uri) -> Response {
    let next = uri.path_and_query().map_or("/console/", |p| p.as_str());
    let next = if valid_next(next) { next } else { "/console/" };
    see_other(&format!("/console/login?next={}", encode(next)))
}

/// A browser (asking for HTML, without an API token) opening a rollout's API URL — the link
/// notifications carry — is sent to the rollout's console page (through the login when it
/// has no session).
pub fn browser_redirect(
    method: &Method,
    route: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Response> {
    if *method != Method::GET
        || route != "/api/v1/admin/rollouts/{id}"
        || headers.contains_key(header::AUTHORIZATION)
    {
        return None;
    }
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if !wants_html {
        return None;
    }
    let id = uri.path().rsplit('/').next()?;
    Some(see_other(&format!("/console/rollouts/{}", encode(id))))
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn head(title: &str, extra: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{extra}\
<title>{}</title><link rel=\"icon\" href=\"/console/assets/icon.svg\">\
<link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head>",
        esc(title)
    )
}

async fn root() -> Response {
    see_other("/console/")
}

/// The shell of every page: landmarks, the navigation, a logout form, an empty `main` the
/// script fills, the confirmation dialog. The CSRF token is in a meta tag for the script.
async fn page(session: Option<Extension<Session>>, uri: Uri) -> Response {
    let csrf = session.map(|Extension(s)| s.csrf).unwrap_or_default();
    let csrf = esc(&csrf);
    let logout = if csrf.is_empty() {
        String::new()
    } else {
        format!(
            "<form method=\"post\" action=\"/console/logout\" class=\"logout\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\">Log out</button></form>"
        )
    };
    let body = format!(
        "{}<body data-path=\"{}\"><a class=\"skip\" href=\"#main\">Skip to content</a>\
<header><nav aria-label=\"Main\"><a class=\"brand\" href=\"/console/\">edgecd</a>\
<a href=\"/console/\">Fleet</a><span id=\"who\" class=\"who\"></span>{logout}</nav></header>\
<main id=\"main\" tabindex=\"-1\"><h1 id=\"title\">Loading…</h1>\
<p id=\"status\" role=\"status\" class=\"status\"></p><div id=\"content\"></div></main>\
<dialog id=\"confirm\" aria-labelledby=\"confirm-title\" aria-describedby=\"confirm-text\">\
<form method=\"dialog\"><h2 id=\"confirm-title\">Confirm</h2><p id=\"confirm-text\"></p>\
<div class=\"buttons\"><button value=\"cancel\" id=\"confirm-cancel\">Cancel</button>\
<button value=\"ok\" id=\"confirm-ok\" class=\"danger\">Confirm</button></div></form></dialog>\
<footer><p>edgecd {}</p></footer>\
<script src=\"/console/assets/console.js\"></script></body></html>",
        head(
            "edgecd console",
            &format!("<meta name=\"csrf-token\" content=\"{csrf}\">")
        ),
        esc(uri.path()),
        env!("CARGO_PKG_VERSION"),
    );
    html(StatusCode::OK, body)
}

#[derive(Debug, serde::Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

fn login_form(next: &str, error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!(
            "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>",
            esc(e)
        )
    });
    let described = if error.is_empty() {
        ""
    } else {
        " aria-describedby=\"login-error\""
    };
    format!(
        "{}<body class=\"login\"><main id=\"main\"><h1>edgecd console</h1>{error}\
<form method=\"post\" action=\"/console/login\" class=\"card\">\
<label for=\"token\">API token</label>\
<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus{described}>\
<input type=\"hidden\" name=\"next\" value=\"{}\">\
<p class=\"hint\">An API token made with <code>edgecd token create</code>; the console can do what its role allows.</p>\
<button type=\"submit\">Log in</button></form></main></body></html>",
        head("Log in · edgecd console", ""),
        esc(next)
    )
}

/// `GET /console/login?next=…`.
async fn login_page(Query(q): Query<LoginQuery>) -> Response {
    let next = q
        .next
        .filter(|n| valid_next(n))
        .unwrap_or("/console/".into());
    html(StatusCode::OK, login_form(&next, None))
}

/// Whether a form post came from this server's own pages: without an `Origin` header (not a
/// browser's cross-site post: browsers send it with every POST), or with one naming the host
/// the request was sent to (`Host`, a proxy's `X-Forwarded-Host`) or the server's public URL
/// (`public_url` of `--notifications`).
fn same_origin(st: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some((_, origin_host)) = origin.split_once("://") else {
        return false;
    };
    let named = |h: header::HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').next().unwrap_or("").trim() == origin_host)
    };
    let public = st
        .notifier
        .public_url()
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""));
    named(header::HOST)
        || named(header::HeaderName::from_static("x-forwarded-host"))
        || public == Some(origin_host)
}

fn cross_site(what: &str) -> ApiError {
    ApiError::forbidden(format!(
        "a {what} posted from another site's page is refused (its Origin names neither this \
         server's Host nor its public_url; behind a proxy, pass the Host header on)"
    ))
}

/// The audit record of a console login (a failure to write it is logged, not fatal).
async fn audit_login(
    st: &AppState,
    caller: &crate::auth::Caller,
    peer: Option<String>,
    headers: &HeaderMap,
) {
    let row = AuditRow {
        id: 0,
        at_ms: st.clock.now_ms(),
        token: caller.name.clone(),
        role: caller.role.as_str().into(),
        method: "POST".into(),
        route: "/console/login".into(),
        path: "/console/login".into(),
        status: 303,
        peer,
        forwarded_for: headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect()),
        summary: None,
    };
    if let Err(e) = st.store.audit_insert(&row).await {
        tracing::error!(error = %e, "could not write the audit record of a console login");
    }
}

/// `POST /console/login` (form: `token`, `next`): a session cookie and 303 to `next`.
async fn login(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let headers = req.headers().clone();
    // The body is read before any answer, so the client is never cut off mid-send.
    let body: Bytes = axum::body::to_bytes(req.into_body(), FORM_MAX)
        .await
        .map_err(|_| ApiError::bad_request("login form over 16 KiB"))?;
    if !same_origin(&st, &headers) {
        return Err(cross_site("login"));
    }
    let next = session::form_field(&body, "next")
        .filter(|n| valid_next(n))
        .unwrap_or("/console/".into());
    let token = session::form_field(&body, "token").unwrap_or_default();
    let token = token.trim();
    if token.is_empty() {
        return Ok(html(
            StatusCode::BAD_REQUEST,
            login_form(&next, Some("Enter an API token.")),
        ));
    }
    let (id, caller) = match session::login(&st, token).await {
        Ok(x) => x,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            tracing::info!(peer = ?peer, "console login refused: invalid API token");
            return Ok(html(
                StatusCode::UNAUTHORIZED,
                login_form(&next, Some(&e.message)),
            ));
        }
        Err(e) => return Err(e),
    };
    tracing::info!(token = %caller.name, role = %caller.role, "console login");
    audit_login(&st, &caller, peer, &headers).await;
    let mut r = see_other(&next);
    r.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie(&id, session::is_https(&st, &headers)),
    );
    Ok(r)
}

/// `POST /console/logout` (form field `csrf` or `X-CSRF-Token`): deletes the session, clears
/// the cookie, 303 to the login page. Without a valid session only the cookie is cleared.
async fn logout(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let headers = req.headers().clone();
    let body: Bytes = axum::body::to_bytes(req.into_body(), FORM_MAX)
        .await
        .map_err(|_| ApiError::bad_request("logout form over 16 KiB"))?;
    let secure = session::is_https(&st, &headers);
    if !same_origin(&st, &headers) {
        return Err(cross_site("logout"));
    }
    if let Ok(Some((caller, s))) = session::from_headers(&st, &headers).await {
        let given = match headers.get(session::CSRF_HEADER) {
            Some(v) => v.to_str().ok().map(str::to_string),
            None => session::form_field(&body, session::CSRF_FIELD),
        };
        session::compare(given.as_deref(), &s)?;
        session::logout(&st, &s).await?;
        tracing::info!(token = %caller.name, "console logout");
    }
    let mut r = see_other("/console/login");
    r.headers_mut()
        .insert(header::SET_COOKIE, session::clear_cookie(secure));
    Ok(r)
}

async fn asset(Path(file): Path<String>) -> Response {
    let (ty, body) = match file.as_str() {
        "console.css" => ("text/css; charset=utf-8", CSS),
        "console.js" => ("text/javascript; charset=utf-8", JS),
        "icon.svg" => ("image/svg+xml", ICON),
        _ => {
            return ApiError::not_found(format!("no console asset {file:?}")).into_response();
        }
    };
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/v1/admin/devices/{id}/metrics` answer: what the device reported about the release
/// it runs over the last hour (from its check-ins' metric deltas).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceMetrics {
    pub device: String,
    pub release: Option<String>,
    /// Unix seconds: the window's start.
    pub since: i64,
    pub reports: usize,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub temp_c_max: Option<f64>,
    pub temp_c_mean: Option<f64>,
    pub throttled_ratio: Option<f64>,
}

/// The window of [`DeviceMetrics`].
const METRICS_WINDOW_SECS: i64 = 3600;

async fn device_metrics(
    State(st): State<AppState>,
    _: Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<DeviceMetrics>, ApiError> {
    let dev = st
        .store
        .device(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    let status: Option<DeviceStatus> = dev
        .status
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok());
    let release = status
        .and_then(|s| s.running)
        .map(|r| format!("{}@{}", r.app, r.version));
    let since = st.now() as i64 - METRICS_WINDOW_SECS;
    let (agg, reports) = match &release {
        Some(release) => recent_metrics(&st, &id, release, since).await?,
        None => (MetricsAggregate::default(), 0),
    };
    Ok(Json(DeviceMetrics {
        device: id,
        release,
        since,
        reports,
        requests: agg.requests,
        errors: agg.errors,
        error_rate: agg.error_rate(),
        latency_p50_ms: agg.latency_quantile_ms(0.5),
        latency_p95_ms: agg.latency_quantile_ms(0.95),
        temp_c_max: agg.temp_c_max,
        temp_c_mean: agg.temp_mean_c(),
        throttled_ratio: agg.throttled_ratio(),
    }))
}

/// Device `id`'s metrics for `release` reported since `since`, merged, and how many reports.
async fn recent_metrics(
    st: &AppState,
    id: &str,
    release: &str,
    since: i64,
) -> Result<(MetricsAggregate, usize), ApiError> {
    let mut agg = MetricsAggregate::default();
    let mut reports = 0;
    for (d, json) in st.store.device_metrics_since(since, release).await? {
        if d != id {
            continue;
        }
        if let Ok(a) = serde_json::from_str::<MetricsAggregate>(&json) {
            agg.merge(&a);
            reports += 1;
        }
    }
    Ok((agg, reports))
}

/// One entry of a device's install history: an assignment the server made or an outcome the
/// device reported (installed, refused with the reason, failed, rolled back).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Unix seconds.
    pub at: i64,
    /// `assigned`, `outcome`, `revoked`, …
    pub kind: String,
    /// The event's text (`APP@VERSION vN [by rollout ID]` for assignments).
    pub detail: String,
    /// The reported outcome (`kind` = `outcome`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<edgecd_api::protocol::Outcome>,
}

/// How many history entries the answer holds at most (the newest).
const HISTORY_MAX: usize = 200;

/// `GET /api/v1/admin/devices/{id}/history`: the device's assignments and reported install
/// outcomes, newest first (at most 200).
async fn device_history(
    State(st): State<AppState>,
    _: Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    if st.store.device(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no device {id}")));
    }
    let events = st.store.events(&id).await?;
    Ok(Json(
        events
            .into_iter()
            .rev()
            .take(HISTORY_MAX)
            .map(|(at, kind, detail)| HistoryEntry {
                outcome: (kind == "outcome")
                    .then(|| {
                        serde_json::from_str::<Option<edgecd_api::protocol::Outcome>>(&detail)
                            .ok()
                            .flatten()
                    })
                    .flatten(),
                at,
                kind,
                detail,
            })
            .collect(),
    ))
}

/// Largest SBOM or release manifest read for the summary.
const DOC_MAX: u64 = 16 << 20;

/// A small JSON document of the blob store; `None` when this server does not hold it (e.g.
/// it lives in the blob registry) or it is not JSON.
async fn blob_json(st: &AppState, digest: &str) -> Option<serde_json::Value> {
    let path = st.blobs.path(digest);
    let meta = tokio::fs::metadata(&path).await.ok()?;
    if meta.len() > DOC_MAX {
        return None;
    }
    serde_json::from_slice(&tokio::fs::read(&path).await.ok()?).ok()
}

/// The SBOM's summary: format, the described component, components counted by type, and the
/// first 200 components (name, version, type, purl).
fn sbom_summary(sbom: &serde_json::Value) -> serde_json::Value {
    let comps = sbom["components"].as_array().cloned().unwrap_or_default();
    let mut by_type = std::collections::BTreeMap::<String, usize>::new();
    for c in &comps {
        *by_type
            .entry(c["type"].as_str().unwrap_or("unknown").to_string())
            .or_default() += 1;
    }
    let list: Vec<serde_json::Value> = comps
        .iter()
        .take(200)
        .map(|c| {
            serde_json::json!({
                "name": c["name"], "version": c["version"], "type": c["type"], "purl": c["purl"],
            })
        })
        .collect();
    serde_json::json!({
        "format": sbom["bomFormat"],
        "specVersion": sbom["specVersion"],
        "serialNumber": sbom["serialNumber"],
        "component": {
            "name": sbom["metadata"]["component"]["name"],
            "version": sbom["metadata"]["component"]["version"],
        },
        "components": comps.len(),
        "byType": by_type,
        "list": list,
    })
}

/// `GET /api/v1/admin/releases/{app@version}/details`: the release as listed, the signing
/// key, the signed release manifest's provenance fields (created, pinned image, whether the
/// image is signed) and an SBOM summary.
async fn release_details(
    State(st): State<AppState>,
    _: Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (app, version) = id
        .split_once('@')
        .ok_or_else(|| ApiError::bad_request(format!("release {id:?}: name it APP@VERSION")))?;
    let raw = st
        .store
        .release(app, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no published release {id}")))?;
    let info: ReleaseInfo = serde_json::from_str(&raw).map_err(ApiError::internal)?;
    let keys = st.store.trusted_keys().await?;
    let key = keys.iter().find(|k| k.hint == info.signed_by);
    let manifest = blob_json(&st, &info.release.manifest.digest).await;
    let provenance = manifest.as_ref().map(|m| {
        serde_json::json!({
            "created": m["created"],
            "image": m["image"],
            "imageSigned": !m["imageSignature"].is_null(),
            "bundleDigest": m["bundle"]["digest"],
            "archiveDigest": m["bundle"]["archiveDigest"],
            "archiveSize": m["bundle"]["archiveSize"],
        })
    });
    let sbom = match &info.sbom {
        Some(b) => blob_json(&st, &b.digest).await.map(|s| sbom_summary(&s)),
        None => None,
    };
    Ok(Json(serde_json::json!({
        "release": info,
        "signature": {
            "keyId": info.signed_by,
            "keyName": key.and_then(|k| k.name.clone()),
            "trusted": key.is_some(),
        },
        "provenance": provenance,
        "sbom": sbom,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_a_console_path() {
        for ok in ["/console/", "/console", "/console/rollouts/r-1?x=1"] {
            assert!(valid_next(ok), "{ok}");
        }
        for bad in [
            "https://evil.example/console/",
            "//evil.example/console/",
            "/console//evil.example",
            "/\\evil.example",
            "/console/\\evil",
            "/api/v1/admin/tokens",
            "javascript:alert(1)",
            "/console/\nSet-Cookie:x",
            "",
        ] {
            assert!(!valid_next(bad), "{bad:?}");
        }
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert!(login_form("/console/\"><script>", None).contains("&quot;&gt;&lt;script&gt;"));
    }
}
