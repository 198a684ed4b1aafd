//! ChatOps: the Approve / Abort / Rollback buttons of rollout messages (`notify::payload`)
//! act on the server, as the person who pressed them.
//!
//! - **Slack** — `POST /api/v1/hooks/slack`, the Slack app's Interactivity Request URL: a
//!   form-encoded `payload=` of a `block_actions` interaction. Authenticated by Slack's
//!   request signature: `X-Slack-Signature: v0=hex(HMAC-SHA256(signing secret,
//!   "v0:{X-Slack-Request-Timestamp}:{raw body}"))`, the timestamp within 5 minutes of the
//!   server's clock, each signature accepted once (remembered in the store for the window,
//!   so replicas share it). The message is updated through the interaction's `response_url`
//!   (only URLs under `--slack-response-url-prefix`, default `https://hooks.slack.com/`).
//! - **Teams** — `POST /api/v1/hooks/teams`, authenticated like a Teams outgoing webhook:
//!   `Authorization: HMAC base64(HMAC-SHA256(base64-decoded shared secret, raw body))`, the
//!   activity's `timestamp` within 5 minutes, each signature accepted once. It takes an
//!   outgoing-webhook message (`@edgecd approve ROLLOUT`, answered with a message) or an
//!   `adaptiveCard/action` invoke of the card's `Action.Execute` buttons relayed by a bot
//!   with the same signature (answered with the updated card).
//!
//! The chat user (`slack:UID`, `teams:AAD-OBJECT-ID`) is mapped by `--chat-users FILE` to
//! a role or to an API token (whose current role counts; a revoked token acts no more).
//! An unmapped user, or one whose role is below what the action's JSON API route needs
//! (approve: approver; abort, rollback: deployer), is refused (403) and nothing changes.
//! Actions run through `rollouts::act`, the JSON API's own code, and every authenticated
//! attempt is written to the audit log naming the chat user.

use crate::auth::Role;
use crate::error::ApiError;
use crate::store::AuditRow;
use crate::util::Secret;
use crate::{AppState, rollouts};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// How far a request's timestamp may be from the server's clock.
pub const MAX_SKEW_SECS: i64 = 300;

/// Who a chat user acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatIdentity {
    Role(Role),
    /// The named API token's role (checked at each action).
    Token(String),
}

/// The ChatOps configuration (`edgecd server --slack-signing-secret-file,
/// --teams-hmac-secret-file, --chat-users`). Secrets are redacted in `Debug`.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub slack_signing_secret: Option<Secret>,
    /// The Teams shared secret, base64 as Teams shows it.
    pub teams_secret: Option<Secret>,
    /// `slack:UID` / `teams:AAD-OBJECT-ID` → who they act as.
    pub users: BTreeMap<String, ChatIdentity>,
    /// `response_url`s the server POSTs message updates to must start with one of these.
    pub slack_response_url_prefixes: Vec<String>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            slack_signing_secret: None,
            teams_secret: None,
            users: BTreeMap::new(),
            slack_response_url_prefixes: vec!["https://hooks.slack.com/".into()],
        }
    }
}

impl ChatConfig {
    /// Whether any chat endpoint is on (messages then carry buttons).
    pub fn enabled(&self) -> bool {
        self.slack_signing_secret.is_some() || self.teams_secret.is_some()
    }

    /// Parses a `--chat-users` file: one user a line, `slack:UID ROLE` or `teams:AADID
    /// token:NAME` (ROLE one of viewer, deployer, approver, admin); `#` comments.
    pub fn parse_users(text: &str) -> Result<BTreeMap<String, ChatIdentity>, String> {
        let mut out = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let n = i + 1;
            let mut words = line.split_whitespace();
            let (Some(user), Some(who), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!(
                    "line {n}: {line:?}: write `slack:UID ROLE`, `teams:AADID ROLE` or `… token:NAME`"
                ));
            };
            let valid_user = user
                .split_once(':')
                .is_some_and(|(k, id)| matches!(k, "slack" | "teams") && !id.is_empty());
            if !valid_user {
                return Err(format!(
                    "line {n}: user {user:?}: write slack:UID (e.g. slack:U012ABCDEF) or teams:AAD-OBJECT-ID"
                ));
            }
            let id = match who.strip_prefix("token:") {
                Some(t) if !t.is_empty() => ChatIdentity::Token(t.to_string()),
                _ => ChatIdentity::Role(Role::parse(who).ok_or_else(|| {
                    format!(
                        "line {n}: {who:?} is neither a role (viewer, deployer, approver, admin) nor token:NAME"
                    )
                })?),
            };
            if out.insert(user.to_string(), id).is_some() {
                return Err(format!("line {n}: {user} is listed twice"));
            }
        }
        Ok(out)
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/hooks/slack", post(slack))
        .route("/api/v1/hooks/teams", post(teams))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// An answer with a JSON error body (what every refusal here sends).
fn refuse(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError::new(status, msg)
}

fn unauthorized(msg: impl Into<String>) -> ApiError {
    refuse(StatusCode::UNAUTHORIZED, msg)
}

/// Checks a Slack request's signature and freshness; the signature (for replay checks).
pub fn verify_slack(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<String, ApiError> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ts = h("x-slack-request-timestamp")
        .ok_or_else(|| unauthorized("missing X-Slack-Request-Timestamp"))?;
    let sig = h("x-slack-signature").ok_or_else(|| unauthorized("missing X-Slack-Signature"))?;
    let t: i64 = ts
        .parse()
        .map_err(|_| unauthorized("X-Slack-Request-Timestamp is not unix seconds"))?;
    if (now - t).abs() > MAX_SKEW_SECS {
        return Err(unauthorized(format!(
            "stale request: timestamp {t} is more than {MAX_SKEW_SECS}s from the server's clock ({now})"
        )));
    }
    let given = sig
        .strip_prefix("v0=")
        .and_then(|x| hex::decode(x).ok())
        .ok_or_else(|| unauthorized("malformed X-Slack-Signature: expected v0=<hex>"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(ApiError::internal)?;
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| unauthorized("X-Slack-Signature does not match the request"))?;
    Ok(sig.to_string())
}

/// `v0=<hex>`: what Slack sends (tests sign with it).
pub fn slack_signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// `HMAC <base64>`: what Teams sends for an outgoing webhook (tests sign with it).
pub fn teams_signature(secret_b64: &str, body: &[u8]) -> Result<String, String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret_b64.trim())
        .map_err(|e| {
            format!(
                "the Teams secret is not base64 ({e}): use the security token Teams showed when the outgoing webhook was created"
            )
        })?;
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(body);
    Ok(format!(
        "HMAC {}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Checks a Teams request's `Authorization: HMAC …`; the signature.
fn verify_teams(secret_b64: &str, headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("HMAC "))
        .ok_or_else(|| unauthorized("missing Authorization: HMAC <base64 signature>"))?
        .trim();
    let given_bytes = base64::engine::general_purpose::STANDARD
        .decode(given)
        .map_err(|_| unauthorized("malformed Authorization: HMAC signature is not base64"))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret_b64.trim())
        .map_err(|_| ApiError::internal("the configured Teams secret is not base64"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(ApiError::internal)?;
    mac.update(body);
    mac.verify_slice(&given_bytes)
        .map_err(|_| unauthorized("the HMAC signature does not match the request"))?;
    Ok(given.to_string())
}

/// Refuses a signature seen before within the window (shared by replicas through the store).
async fn first_use(st: &AppState, key: &str, ts: i64) -> Result<(), ApiError> {
    let expires_ms = (ts + MAX_SKEW_SECS + 1) * 1000;
    if st
        .store
        .chat_replay_first(key, expires_ms, st.clock.now_ms())
        .await?
    {
        Ok(())
    } else {
        Err(unauthorized(
            "replayed request: this signature was already accepted",
        ))
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` and `%XX`).
pub fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses an RFC 3339 time (`2026-12-03T12:00:00.123Z`, `…+01:00`) to unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// The person behind a chat action, as the audit log and the messages name them.
struct ChatUser {
    /// `slack:UID` / `teams:AADID`.
    key: String,
    /// The display name the chat sent.
    name: String,
}

/// The role `user` acts with, or why they may not act.
async fn role_of(st: &AppState, user: &ChatUser) -> Result<(Role, String), ApiError> {
    let id = st.config.chat.users.get(&user.key).ok_or_else(|| {
        refuse(
            StatusCode::FORBIDDEN,
            format!(
                "chat user {} ({}) is not mapped to an edgecd role: add `{} ROLE` to the --chat-users file",
                user.key, user.name, user.key
            ),
        )
    })?;
    match id {
        ChatIdentity::Role(r) => Ok((*r, user.key.clone())),
        ChatIdentity::Token(name) => {
            let row = st
                .store
                .api_tokens()
                .await?
                .into_iter()
                .find(|t| t.name == *name)
                .ok_or_else(|| {
                    refuse(
                        StatusCode::FORBIDDEN,
                        format!(
                            "chat user {} is mapped to API token {name:?}, which does not exist",
                            user.key
                        ),
                    )
                })?;
            if row.revoked.is_some() {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    format!(
                        "chat user {} is mapped to API token {name:?}, which is revoked",
                        user.key
                    ),
                ));
            }
            let role = Role::parse(&row.role).ok_or_else(|| {
                ApiError::internal(format!("token {name:?} has role {:?}", row.role))
            })?;
            Ok((role, format!("{} (token {name})", user.key)))
        }
    }
}

/// What happened to one action: the new phase, or the refusal.
struct Outcome {
    status: StatusCode,
    /// `Ok(phase)` or `Err(message)`.
    result: Result<String, String>,
}

/// Maps the user, checks the role, runs the action, audits the attempt.
async fn perform(
    st: &AppState,
    via: &str,
    user: &ChatUser,
    action: &str,
    rollout: &str,
    peer: Option<String>,
) -> Outcome {
    let route = format!("/api/v1/hooks/{via}");
    let run = async {
        let need = rollouts::action_role(action).ok_or_else(|| {
            (
                None,
                ApiError::bad_request(format!(
                    "unknown action {action:?}: use approve, abort or rollback"
                )),
            )
        })?;
        let (role, who) = role_of(st, user).await.map_err(|e| (None, e))?;
        if role < need {
            return Err((
                Some((role, who.clone())),
                refuse(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{action} needs role {need} (or higher); chat user {who} has role {role}"
                    ),
                ),
            ));
        }
        match rollouts::act(st, rollout, action).await {
            Ok(s) => Ok((role, who, s)),
            Err(e) => Err((Some((role, who)), e)),
        }
    };
    let res: Result<_, (Option<(Role, String)>, ApiError)> = run.await;
    let (status, role, who, result) = match res {
        Ok((role, who, s)) => {
            let phase = serde_json::to_value(s.rollout.state.phase)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            (StatusCode::OK, Some(role), who, Ok(phase))
        }
        Err((rw, e)) => {
            let (role, who) = match rw {
                Some((r, w)) => (Some(r), w),
                None => (None, user.key.clone()),
            };
            (e.status, role, who, Err(e.message.clone()))
        }
    };
    let row = AuditRow {
        id: 0,
        at_ms: st.clock.now_ms(),
        token: who,
        role: role.map_or("none", Role::as_str).into(),
        method: "POST".into(),
        route,
        path: format!("/api/v1/admin/rollouts/{rollout}/{action}")
            .chars()
            .take(1024)
            .collect(),
        status: i64::from(status.as_u16()),
        peer,
        forwarded_for: None,
        summary: Some(
            json!({"via": via, "user": user.key, "userName": user.name, "action": action, "rollout": rollout})
                .to_string(),
        ),
    };
    if let Err(e) = st.store.audit_insert(&row).await {
        tracing::error!(error = %e, user = %user.key, "could not write the audit record of a chat action");
    }
    match &result {
        Ok(phase) => tracing::info!(via, user = %user.key, action, rollout, phase, "chat action"),
        Err(why) => {
            tracing::warn!(via, user = %user.key, action, rollout, reason = %why, "chat action refused")
        }
    }
    Outcome { status, result }
}

fn past(action: &str) -> &'static str {
    match action {
        "approve" => "Approved",
        "abort" => "Aborted",
        "rollback" => "Rolled back",
        _ => "Done",
    }
}

/// Largest request body taken (Slack's and Teams' are a few KiB).
const MAX_BODY: usize = 256 * 1024;

/// The peer address, headers and raw body (the signatures cover its exact bytes).
async fn read(req: Request) -> Result<(Option<String>, HeaderMap, Bytes), ApiError> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    Ok((peer, parts.headers, body))
}

/// POSTs `body` to a Slack `response_url` in the background (logged, never blocking the
/// answer Slack waits for).
fn respond(st: &AppState, url: &str, body: Value) {
    if !st
        .config
        .chat
        .slack_response_url_prefixes
        .iter()
        .any(|p| url.starts_with(p.as_str()))
    {
        tracing::warn!("Slack response_url outside the allowed prefixes: message not updated");
        return;
    }
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        match agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body.to_string())
        {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(status = %r.status(), "Slack response_url refused the message update")
            }
            Err(e) => tracing::warn!(error = %e, "could not update the Slack message"),
        }
    });
}

/// `POST /api/v1/hooks/slack`: a button pressed in a Slack message (form-encoded
/// `payload=`), signed with the app's signing secret.
async fn slack(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (peer, headers, body) = read(req).await?;
    let secret = st
        .config
        .chat
        .slack_signing_secret
        .as_ref()
        .ok_or_else(|| {
            ApiError::not_found(
                "Slack actions are off: start the server with --slack-signing-secret-file",
            )
        })?;
    let now = st.now() as i64;
    let sig = verify_slack(secret.expose().as_bytes(), &headers, &body, now)?;
    let ts: i64 = headers
        .get("x-slack-request-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(now);
    first_use(&st, &format!("slack:{sig}"), ts).await?;
    let payload = slack_payload(&body)?;
    let user = slack_user(&payload);
    let value = payload["actions"][0]["value"].as_str().unwrap_or_default();
    let (action, rollout) = value.split_once(':').ok_or_else(|| {
        ApiError::bad_request(format!("button value {value:?}: expected ACTION:ROLLOUT"))
    })?;
    let o = perform(&st, "slack", &user, action, rollout, peer.clone()).await;
    if let Some(url) = payload["response_url"].as_str() {
        respond(&st, url, slack_update(&payload, action, rollout, &o));
    }
    Ok(answer(o, action, rollout))
}

/// The interaction in a Slack request body: `payload=` JSON of type `block_actions`.
fn slack_payload(body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
    let payload: Value = form_value(text, "payload")
        .ok_or_else(|| {
            ApiError::bad_request("expected a form-encoded payload=… (a Slack interaction)")
        })
        .and_then(|p| {
            serde_json::from_str(&p)
                .map_err(|e| ApiError::bad_request(format!("payload is not JSON: {e}")))
        })?;
    if payload["type"] != "block_actions" {
        return Err(ApiError::bad_request(format!(
            "interaction type {}: only block_actions (message buttons) are handled",
            payload["type"]
        )));
    }
    Ok(payload)
}

/// Who pressed the button in a Slack interaction.
fn slack_user(payload: &Value) -> ChatUser {
    ChatUser {
        key: format!(
            "slack:{}",
            payload["user"]["id"].as_str().unwrap_or_default()
        ),
        name: payload["user"]["username"]
            .as_str()
            .or(payload["user"]["name"].as_str())
            .unwrap_or_default()
            .to_string(),
    }
}

/// The message update sent to Slack's `response_url`: the original message without its
/// buttons and a line saying who did what, or a reply only the presser sees saying why not.
fn slack_update(payload: &Value, action: &str, rollout: &str, o: &Outcome) -> Value {
    let uid = payload["user"]["id"].as_str().unwrap_or_default();
    match &o.result {
        Ok(phase) => {
            let line = format!(
                "{} by <@{uid}>: rollout {rollout} is now {phase}",
                past(action)
            );
            let mut blocks: Vec<Value> = payload["message"]["blocks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|b| b["type"] != "actions")
                .collect();
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}));
            json!({"replace_original": true, "text": line, "blocks": blocks})
        }
        Err(why) => json!({
            "response_type": "ephemeral",
            "replace_original": false,
            "text": format!("edgecd refused to {action} rollout {rollout}: {why}")
        }),
    }
}

fn answer(o: Outcome, action: &str, rollout: &str) -> Response {
    match o.result {
        Ok(phase) => (
            StatusCode::OK,
            Json(json!({"action": action, "rollout": rollout, "phase": phase})),
        )
            .into_response(),
        Err(why) => ApiError::new(o.status, why).into_response(),
    }
}

/// `POST /api/v1/hooks/teams`: a Teams message (`@edgecd approve ROLLOUT`) or an
/// Adaptive Card's `Action.Execute`, signed like an outgoing webhook.
async fn teams(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (peer, headers, body) = read(req).await?;
    let secret = st.config.chat.teams_secret.as_ref().ok_or_else(|| {
        ApiError::not_found("Teams actions are off: start the server with --teams-hmac-secret-file")
    })?;
    let sig = verify_teams(secret.expose(), &headers, &body)?;
    let activity: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("not a Teams activity: {e}")))?;
    let ts = teams_timestamp(&activity, st.now() as i64)?;
    first_use(&st, &format!("teams:{sig}"), ts).await?;
    let user = ChatUser {
        key: format!(
            "teams:{}",
            activity["from"]["aadObjectId"].as_str().unwrap_or_default()
        ),
        name: activity["from"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    let invoke = activity["type"] == "invoke";
    let (action, rollout) = teams_command(&activity)?;
    let o = perform(&st, "teams", &user, &action, &rollout, peer.clone()).await;
    let text = match &o.result {
        Ok(phase) => {
            let who = if user.name.is_empty() {
                &user.key
            } else {
                &user.name
            };
            format!(
                "{} by {who}: rollout {rollout} is now {phase}",
                past(&action)
            )
        }
        Err(why) => format!("edgecd refused to {action} rollout {rollout}: {why}"),
    };
    if o.result.is_err() {
        return Ok(ApiError::new(o.status, text).into_response());
    }
    Ok((StatusCode::OK, Json(teams_reply(invoke, &text))).into_response())
}

/// The activity's time (unix seconds); refused without one or more than
/// [`MAX_SKEW_SECS`] from `now`.
fn teams_timestamp(activity: &Value, now: i64) -> Result<i64, ApiError> {
    let ts = activity["timestamp"]
        .as_str()
        .and_then(parse_rfc3339)
        .ok_or_else(|| unauthorized("the activity has no RFC 3339 timestamp"))?;
    if (now - ts).abs() > MAX_SKEW_SECS {
        return Err(unauthorized(format!(
            "stale request: activity timestamp {} is more than {MAX_SKEW_SECS}s from the server's clock",
            activity["timestamp"].as_str().unwrap_or_default()
        )));
    }
    Ok(ts)
}

/// (action, rollout) of a card's `Action.Execute` or of a message `@edgecd ACTION ROLLOUT`.
fn teams_command(activity: &Value) -> Result<(String, String), ApiError> {
    if activity["type"] == "invoke" {
        let a = &activity["value"]["action"];
        let verb = a["verb"].as_str().unwrap_or_default().to_string();
        let rollout = a["data"]["rollout"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        return Ok((verb, rollout));
    }
    // "<at>edgecd</at> approve app-1234": the mention removed.
    let text = activity["text"].as_str().unwrap_or_default();
    let mut plain = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("<at>") {
        plain.push_str(&rest[..i]);
        rest = rest[i..].find("</at>").map_or("", |j| &rest[i + j + 5..]);
    }
    plain.push_str(rest);
    let words: Vec<&str> = plain.split_whitespace().collect();
    match words.as_slice() {
        [a, r] => Ok((a.to_ascii_lowercase(), r.to_string())),
        _ => Err(ApiError::bad_request(format!(
            "{plain:?}: write `@edgecd approve|abort|rollback ROLLOUT`"
        ))),
    }
}

/// The answer Teams shows: a card replacing the pressed one, or a message.
fn teams_reply(invoke: bool, text: &str) -> Value {
    if invoke {
        json!({
            "statusCode": 200,
            "type": "application/vnd.microsoft.card.adaptive",
            "value": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [{"type": "TextBlock", "text": text, "wrap": true}]
            }
        })
    } else {
        json!({"type": "message", "text": text})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_is_validated() {
        let u = ChatConfig::parse_users(
            "# who may press buttons\nslack:U01 approver\nteams:9f1c-aa token:alice  # ops\n\n",
        )
        .expect("parses");
        assert_eq!(u["slack:U01"], ChatIdentity::Role(Role::Approver));
        assert_eq!(u["teams:9f1c-aa"], ChatIdentity::Token("alice".into()));
        for (bad, says) in [
            ("slack:U01", "write `slack:UID ROLE`"),
            ("irc:x admin", "write slack:UID"),
            ("slack:U01 boss", "neither a role"),
            (
                "slack:U01 admin\nslack:U01 viewer",
                "line 2: slack:U01 is listed twice",
            ),
        ] {
            let e = ChatConfig::parse_users(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn slack_signature_matches_slacks_documented_example() {
        // https://api.slack.com/authentication/verifying-requests-from-slack (their example).
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            slack_signature(secret, 1_531_420_618, body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    #[test]
    fn forms_and_times_parse() {
        assert_eq!(
            form_value("a=1&payload=%7B%22x%22%3A+1%7D", "payload").as_deref(),
            Some("{\"x\": 1}")
        );
        assert_eq!(
            form_value("payload=100%", "payload").as_deref(),
            Some("100%")
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-12-03T12:00:00.123Z"),
            Some(1_796_299_200)
        );
        assert_eq!(
            parse_rfc3339("2026-12-03T13:00:00+01:00"),
            Some(1_796_299_200)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
