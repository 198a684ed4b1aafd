//! People and access: named API tokens with roles, the table of what every route needs
//! ([`ROUTES`]), the access layer that authenticates people's requests and audits the
//! mutating ones, the [`Auth`] extractor handlers declare their role with, and the token
//! admin API (`/api/v1/admin/tokens`).
//!
//! Roles are ordered: `admin` ⊇ `approver` ⊇ `deployer` ⊇ `viewer`. Reads need `viewer`;
//! changing what devices run (publish, deploy, rollouts, fleets, labels, enrollment tokens) needs
//! `deployer`; approving a rollout step needs `approver`; trust, people (tokens, the audit
//! log), device revocation/deletion and blob GC need `admin`. The first start's admin token
//! (`DATA/admin-token`) is the API token named `admin`.
//!
//! People authenticate with a bearer API token, or in a browser with the web console's
//! session cookie (made by logging in with a token, see [`crate::console`]); a mutating request
//! made with the cookie also needs the session's CSRF token.
//!
//! A route missing from [`ROUTES`] answers 500 naming itself, so a new route cannot ship
//! unclassified (the access tests walk the table).

use crate::error::ApiError;
use crate::store::ApiTokenRow;
use crate::{AppState, util};
use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Deployer,
    Approver,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Deployer, Role::Approver, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, metrics, enrollment with its one-time token).
    Public,
    /// A device with its own credential (not audited: devices are not people).
    Device,
    /// The hook's own credential: the alert hook's token/HMAC (`alerts`), Slack's request
    /// signature and the Teams HMAC (`chatops`, which checks the chat user's role itself).
    Hook,
    /// An API token with at least this role.
    Role(Role),
}

/// One route of the router and who may call it.
#[derive(Debug, Clone, Copy)]
pub struct RouteAccess {
    pub method: &'static str,
    /// The route as registered (axum's `MatchedPath`).
    pub path: &'static str,
    pub access: Access,
}

const fn r(method: &'static str, path: &'static str, access: Access) -> RouteAccess {
    RouteAccess {
        method,
        path,
        access,
    }
}

use Access::{Device, Hook, Public};
const VIEWER: Access = Access::Role(Role::Viewer);
const DEPLOYER: Access = Access::Role(Role::Deployer);
const APPROVER: Access = Access::Role(Role::Approver);
const ADMIN: Access = Access::Role(Role::Admin);

/// Every route of the router with who may call it (the README's roles table).
pub const ROUTES: &[RouteAccess] = &[
    r("GET", "/healthz", Public),
    r("GET", "/readyz", Public),
    r("GET", "/metrics", Public),
    r("POST", "/api/v1/devices/enroll", Public),
    r("POST", "/api/v1/devices/{id}/checkin", Device),
    r("GET", "/api/v1/devices/{id}/assignment", Device),
    r("GET", "/api/v1/blobs/{digest}", Device),
    r("POST", "/api/v1/devices/{id}/logs", Device),
    r("POST", "/api/v1/hooks/alertmanager", Hook),
    r("POST", "/api/v1/hooks/slack", Hook),
    r("POST", "/api/v1/hooks/teams", Hook),
    r("POST", "/api/v1/gitops/webhook", Hook),
    // reads
    r("GET", "/api/v1/admin/keys", VIEWER),
    r("GET", "/api/v1/admin/releases", VIEWER),
    r("GET", "/api/v1/admin/devices", VIEWER),
    r("GET", "/api/v1/admin/devices/{id}", VIEWER),
    r("GET", "/api/v1/admin/rollouts", VIEWER),
    r("GET", "/api/v1/admin/rollouts/{id}", VIEWER),
    r("GET", "/api/v1/admin/rollouts/{id}/history", VIEWER),
    r("HEAD", "/api/v1/admin/blobs/{digest}", VIEWER),
    r("GET", "/api/v1/admin/whoami", VIEWER),
    r("GET", "/api/v1/admin/fleets", VIEWER),
    r("GET", "/api/v1/admin/fleets/{name}", VIEWER),
    r("GET", "/api/v1/admin/gitops", VIEWER),
    // changing what devices run
    r("PUT", "/api/v1/admin/blobs/{digest}", DEPLOYER),
    r("POST", "/api/v1/admin/releases", DEPLOYER),
    r("POST", "/api/v1/admin/releases/check", DEPLOYER),
    r("POST", "/api/v1/admin/enrollment-tokens", DEPLOYER),
    r("PATCH", "/api/v1/admin/devices/{id}/labels", DEPLOYER),
    // device logs and diagnoses reveal a lot: not for viewers
    r("GET", "/api/v1/admin/devices/{id}/logs", DEPLOYER),
    r("POST", "/api/v1/admin/devices/{id}/logs", DEPLOYER),
    r("GET", "/api/v1/admin/devices/{id}/diagnose", DEPLOYER),
    r("POST", "/api/v1/admin/devices/{id}/diagnose", DEPLOYER),
    r("POST", "/api/v1/admin/deployments", DEPLOYER),
    r("POST", "/api/v1/admin/rollouts", DEPLOYER),
    r("POST", "/api/v1/admin/rollouts/{id}/{command}", DEPLOYER),
    r("POST", "/api/v1/admin/fleets", DEPLOYER),
    r("DELETE", "/api/v1/admin/fleets/{name}", DEPLOYER),
    r("POST", "/api/v1/admin/rollouts/{id}/approve", APPROVER),
    // trust, people, destructive operations
    r("POST", "/api/v1/admin/keys", ADMIN),
    r("POST", "/api/v1/admin/blobs/gc", ADMIN),
    r("POST", "/api/v1/admin/devices/{id}/revoke", ADMIN),
    r("DELETE", "/api/v1/admin/devices/{id}", ADMIN),
    r("GET", "/api/v1/admin/tokens", ADMIN),
    r("POST", "/api/v1/admin/tokens", ADMIN),
    r("POST", "/api/v1/admin/tokens/{name}/rotate", ADMIN),
    r("POST", "/api/v1/admin/tokens/{name}/revoke", ADMIN),
    r("GET", "/api/v1/admin/audit", ADMIN),
    // a GitOps source decides what every device runs
    r("POST", "/api/v1/admin/gitops", ADMIN),
    r("DELETE", "/api/v1/admin/gitops", ADMIN),
    // the web console (`crate::console`): login/logout and its assets are public (logout
    // checks the session and its CSRF token itself); its pages need a session (or token)
    // with role viewer, and an unauthenticated browser is sent through the login
    r("GET", "/console/login", Public),
    r("POST", "/console/login", Public),
    r("POST", "/console/logout", Public),
    r("GET", "/console/assets/{file}", Public),
    r("GET", "/console", VIEWER),
    r("GET", "/console/", VIEWER),
    r("GET", "/console/devices/{id}", VIEWER),
    r("GET", "/console/rollouts/{id}", VIEWER),
    r("GET", "/console/releases/{id}", VIEWER),
    r("GET", "/api/v1/admin/devices/{id}/metrics", VIEWER),
    r("GET", "/api/v1/admin/devices/{id}/history", VIEWER),
    r("GET", "/api/v1/admin/releases/{id}/details", VIEWER),
];

/// Who may call `method path` (a `MatchedPath`); a HEAD without its own entry is its GET.
pub fn access_for(method: &str, path: &str) -> Option<Access> {
    let find = |m: &str| {
        ROUTES
            .iter()
            .find(|e| e.method == m && e.path == path)
            .map(|e| e.access)
    };
    find(method).or_else(|| (method == "HEAD").then(|| find("GET")).flatten())
}

/// The authenticated token of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The caller of a request: its bearer API token ([`authenticate`]) or, without one, its
/// web console session cookie (then also the [`Session`], whose CSRF token mutating requests
/// must present: see [`layer`]). 401 without either, or when either is invalid.
pub async fn authenticate_request(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<(Caller, Option<Session>), ApiError> {
    if headers.contains_key(header::AUTHORIZATION) {
        return Ok((authenticate(st, headers).await?, None));
    }
    match crate::console::session::from_headers(st, headers).await? {
        Some((caller, session)) => Ok((caller, Some(session))),
        None => Err(ApiError::unauthorized(
            "missing API token (Authorization: Bearer …) or console session (log in at /console/login)",
        )),
    }
}

pub use crate::console::session::Session;

/// The token a request presents: 401 without one, unknown or revoked.
pub async fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let t = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("missing API token (Authorization: Bearer …)"))?;
    // Secrets are 256-bit random: looking one up by its SHA-256 reveals nothing by timing.
    let row = st
        .store
        .api_token_by_hash(&util::hash_secret(t))
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown API token"))?;
    if row.revoked.is_some() {
        return Err(ApiError::unauthorized(format!(
            "API token {:?} was revoked",
            row.name
        )));
    }
    let role = Role::parse(&row.role).ok_or_else(|| {
        ApiError::internal(format!("token {:?} has role {:?}", row.name, row.role))
    })?;
    Ok(Caller {
        name: row.name,
        role,
    })
}

fn need(caller: &Caller, role: Role, what: &str) -> Result<(), ApiError> {
    if caller.role >= role {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{what} needs role {role} (or higher); token {:?} has role {}",
        caller.name, caller.role
    )))
}

/// What the access layer does with a request, from its route's entry in [`ROUTES`].
enum Gate {
    /// No route (404/405 as usual) or a public one: pass it on.
    Open,
    /// Answer this (an unclassified route: 500).
    Refuse(Response),
    /// The matched route and the role it needs.
    Role(String, Role),
}

fn gate(req: &Request) -> Gate {
    let Some(route) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        return Gate::Open;
    };
    let method = req.method();
    match access_for(method.as_str(), &route) {
        None => {
            tracing::error!(%method, %route, "route has no access classification");
            Gate::Refuse(
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "route {method} {route} is not classified in edgecd_server::auth::ROUTES"
                    ),
                )
                .into_response(),
            )
        }
        Some(Access::Role(role)) => Gate::Role(route, role),
        Some(_) => Gate::Open,
    }
}

/// The access layer (outermost on every route): refuses unclassified routes, authenticates
/// API tokens and checks the route's role from [`ROUTES`], and records every mutating
/// request of an authenticated token in the audit log ([`crate::audit`]), refused ones too.
pub async fn layer(
    State(st): State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let method = req.method().clone();
    let (route, role) = match gate(&req) {
        Gate::Open => return next.run(req).await,
        Gate::Refuse(r) => return r,
        Gate::Role(route, role) => (route, role),
    };
    // A browser following a notification's link to the API lands on the console's page.
    if let Some(to) = crate::console::browser_redirect(&method, &route, req.uri(), req.headers()) {
        return to;
    }
    let (caller, session) = match authenticate_request(&st, req.headers()).await {
        Ok(c) => c,
        // A console page without a (valid) session goes through the login and back.
        Err(_) if crate::console::is_page(&method, &route) => {
            return crate::console::to_login(req.uri());
        }
        Err(e) => return e.into_response(),
    };
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let (req, pending) = if mutating {
        crate::audit::begin(req, &caller, &route).await
    } else {
        (req, None)
    };
    // A request authenticated by the session cookie changes nothing without the session's
    // CSRF token (`X-CSRF-Token` header or `csrf` form field).
    let (mut req, csrf) = match &session {
        Some(s) if mutating => crate::console::session::check_csrf(req, s).await,
        _ => (req, Ok(())),
    };
    let allowed = csrf.and_then(|()| need(&caller, role, &format!("{method} {route}")));
    let resp = match allowed {
        Ok(()) => {
            req.extensions_mut().insert(caller);
            if let Some(s) = session {
                req.extensions_mut().insert(s);
            }
            next.run(req).await
        }
        Err(e) => e.into_response(),
    };
    if let Some(p) = pending {
        p.finish(&st, resp.status()).await;
    }
    resp
}

/// A role a handler requires (see [`Auth`]).
pub trait RequiredRole: Send + Sync + 'static {
    const ROLE: Role;
}

macro_rules! roles {
    ($($name:ident => $role:expr),*) => {$(
        #[doc = concat!("Requires role `", stringify!($name), "` or higher.")]
        pub struct $name;
        impl RequiredRole for $name {
            const ROLE: Role = $role;
        }
    )*};
}
roles!(Viewer => Role::Viewer, Deployer => Role::Deployer, Approver => Role::Approver, Admin => Role::Admin);

/// Extractor: the request's token holds at least role `R` (else 401/403). Handlers declare
/// `_: Auth<Deployer>`; the access layer has normally authenticated already.
pub struct Auth<R: RequiredRole>(pub Caller, PhantomData<R>);

impl<R: RequiredRole> FromRequestParts<AppState> for Auth<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let caller = match parts.extensions.get::<Caller>() {
            Some(c) => c.clone(),
            None => {
                let (caller, session) = authenticate_request(st, &parts.headers).await?;
                if let Some(s) = session
                    && !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
                {
                    crate::console::session::check_csrf_header(&parts.headers, &s)?;
                }
                caller
            }
        };
        let what = format!(
            "{} {}",
            parts.method,
            parts
                .extensions
                .get::<MatchedPath>()
                .map_or(parts.uri.path(), |m| m.as_str())
        );
        need(&caller, R::ROLE, &what)?;
        Ok(Auth(caller, PhantomData))
    }
}

// ---- the token admin API ----

/// `POST /api/v1/admin/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateApiToken {
    pub name: String,
    pub role: Role,
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenInfo {
    pub name: String,
    pub role: Role,
    /// Unix seconds.
    pub created: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<i64>,
}

/// A token with its secret: the answer to create and rotate, the only time it is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenSecret {
    pub name: String,
    pub role: Role,
    pub token: String,
}

fn info(r: ApiTokenRow) -> Result<ApiTokenInfo, ApiError> {
    Ok(ApiTokenInfo {
        role: Role::parse(&r.role).ok_or_else(|| {
            ApiError::internal(format!("token {:?} has role {:?}", r.name, r.role))
        })?,
        name: r.name,
        created: r.created,
        rotated: r.rotated,
        revoked: r.revoked,
    })
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "token name {name:?}: use 1-64 characters of [A-Za-z0-9._@-]"
        )))
    }
}

/// A new secret: `edt_` and 256 random bits.
fn new_secret() -> String {
    util::random_token("edt")
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/tokens", post(create).get(list))
        .route("/api/v1/admin/tokens/{name}/rotate", post(rotate))
        .route("/api/v1/admin/tokens/{name}/revoke", post(revoke))
        .route("/api/v1/admin/whoami", get(whoami))
        .route("/api/v1/admin/audit", get(crate::audit::list))
}

/// `GET /api/v1/admin/whoami`: the calling token's name and role.
async fn whoami(Auth(caller, _): Auth<Viewer>) -> Json<Caller> {
    Json(caller)
}

async fn create(
    State(st): State<AppState>,
    _: Auth<Admin>,
    Json(req): Json<CreateApiToken>,
) -> Result<Json<ApiTokenSecret>, ApiError> {
    check_name(&req.name)?;
    let token = new_secret();
    let row = ApiTokenRow {
        name: req.name.clone(),
        role: req.role.as_str().into(),
        hash: util::hash_secret(&token),
        created: st.now() as i64,
        rotated: None,
        revoked: None,
    };
    if !st.store.api_token_create(&row).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "a token named {:?} exists: rotate it (`edgecd token rotate {0}`) or revoke it first",
                req.name
            ),
        ));
    }
    tracing::info!(token = %req.name, role = %req.role, "API token created");
    Ok(Json(ApiTokenSecret {
        name: req.name,
        role: req.role,
        token,
    }))
}

async fn list(
    State(st): State<AppState>,
    _: Auth<Admin>,
) -> Result<Json<Vec<ApiTokenInfo>>, ApiError> {
    let rows = st.store.api_tokens().await?;
    Ok(Json(rows.into_iter().map(info).collect::<Result<_, _>>()?))
}

async fn find(st: &AppState, name: &str) -> Result<ApiTokenInfo, ApiError> {
    let rows = st.store.api_tokens().await?;
    let row = rows
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no API token named {name:?}")))?;
    info(row)
}

async fn rotate(
    State(st): State<AppState>,
    _: Auth<Admin>,
    Path(name): Path<String>,
) -> Result<Json<ApiTokenSecret>, ApiError> {
    let t = find(&st, &name).await?;
    let token = new_secret();
    if !st
        .store
        .api_token_rotate(&name, &util::hash_secret(&token), st.now() as i64)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("API token {name:?} is revoked: create a new one"),
        ));
    }
    tracing::info!(token = %name, "API token rotated");
    Ok(Json(ApiTokenSecret {
        name,
        role: t.role,
        token,
    }))
}

async fn revoke(
    State(st): State<AppState>,
    _: Auth<Admin>,
    Path(name): Path<String>,
) -> Result<Json<ApiTokenInfo>, ApiError> {
    let t = find(&st, &name).await?;
    if t.revoked.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("API token {name:?} is already revoked"),
        ));
    }
    if !st.store.api_token_revoke(&name, st.now() as i64).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("API token {name:?} is the last admin token: create another admin token first"),
        ));
    }
    tracing::info!(token = %name, "API token revoked");
    Ok(Json(find(&st, &name).await?))
}
