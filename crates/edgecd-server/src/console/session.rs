//! Console sessions: a login with an API token makes a random session id, kept by the browser
//! in an `HttpOnly; SameSite=Strict` cookie and stored only as its SHA-256 (`console_sessions`),
//! bound to the token's secret hash (rotating or revoking the token ends it) and expiring
//! after [`TTL_SECS`]. Each session has a CSRF token derived from its id, which the pages carry
//! and every mutating request made with the cookie must present.

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::store::ConsoleSessionRow;
use crate::{AppState, util};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};

/// The cookie's name.
pub const COOKIE: &str = "edgecd_session";
/// The header a mutating request made with the cookie carries the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field a form post carries it in.
pub const CSRF_FIELD: &str = "csrf";
/// How long a session lasts after the login (seconds).
pub const TTL_SECS: i64 = 8 * 3600;
/// Largest form body read for its CSRF field.
const FORM_MAX: usize = 64 * 1024;

/// A request's valid console session.
#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 (hex) of the session id (the store's key).
    pub id_hash: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// Unix seconds.
    pub expires: i64,
}

/// The CSRF token of session id `id`: only someone who holds the id (the browser's
/// `HttpOnly` cookie) or the page the server rendered for it knows it; the stored hash of
/// the id does not give it away.
fn csrf_for(id: &str) -> String {
    util::hash_secret(&format!("edgecd-console-csrf\0{id}"))
}

/// The session id of the request's cookie.
pub fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The caller and session of the request's session cookie: `Ok(None)` without a cookie, 401
/// when it names no session, an expired one, or one whose token was rotated or revoked.
pub async fn from_headers(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Caller, Session)>, ApiError> {
    let Some(id) = cookie_id(headers) else {
        return Ok(None);
    };
    let id_hash = util::hash_secret(&id);
    let row = st.store.console_session(&id_hash).await?.ok_or_else(|| {
        ApiError::unauthorized("unknown console session (logged out?): log in again")
    })?;
    if row.expires <= st.now() as i64 {
        return Err(ApiError::unauthorized(
            "the console session expired: log in again",
        ));
    }
    let token = st
        .store
        .api_token_by_hash(&row.token_hash)
        .await?
        .filter(|t| t.name == row.token_name && t.revoked.is_none())
        .ok_or_else(|| {
            ApiError::unauthorized(format!(
                "API token {:?} of this console session was rotated or revoked: log in again",
                row.token_name
            ))
        })?;
    let role = Role::parse(&token.role).ok_or_else(|| {
        ApiError::internal(format!("token {:?} has role {:?}", token.name, token.role))
    })?;
    Ok(Some((
        Caller {
            name: token.name,
            role,
        },
        Session {
            id_hash,
            csrf: csrf_for(&id),
            expires: row.expires,
        },
    )))
}

/// Creates a session for the token whose secret is `secret`: the new session id (for the
/// cookie) and the caller. 401 when the token is unknown or revoked.
pub async fn login(st: &AppState, secret: &str) -> Result<(String, Caller), ApiError> {
    let hash = util::hash_secret(secret);
    let token = st
        .store
        .api_token_by_hash(&hash)
        .await?
        .filter(|t| t.revoked.is_none())
        .ok_or_else(|| {
            ApiError::unauthorized(
                "that API token is not valid (unknown, rotated or revoked): check it with `edgecd token list`",
            )
        })?;
    let role = Role::parse(&token.role).ok_or_else(|| {
        ApiError::internal(format!("token {:?} has role {:?}", token.name, token.role))
    })?;
    let now = st.now() as i64;
    // Expired sessions go as new ones come: the table stays as small as the live sessions.
    st.store.console_sessions_purge(now).await?;
    let id = util::random_token("eds");
    st.store
        .console_session_create(&ConsoleSessionRow {
            id_hash: util::hash_secret(&id),
            token_name: token.name.clone(),
            token_hash: hash,
            created: now,
            expires: now + TTL_SECS,
        })
        .await?;
    Ok((
        id,
        Caller {
            name: token.name,
            role,
        },
    ))
}

/// Ends session `s`.
pub async fn logout(st: &AppState, s: &Session) -> Result<(), ApiError> {
    st.store.console_session_delete(&s.id_hash).await?;
    Ok(())
}

/// `Set-Cookie` for session id `id`; `Secure` when the browser reached the server over
/// HTTPS (the server's own TLS, or a proxy saying `X-Forwarded-Proto: https`).
pub fn set_cookie(id: &str, secure: bool) -> HeaderValue {
    let mut c = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={TTL_SECS}");
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Set-Cookie` removing the session cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    HeaderValue::from_static(if secure {
        "edgecd_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure"
    } else {
        "edgecd_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    })
}

/// Whether the browser reached the server over HTTPS.
pub fn is_https(st: &AppState, headers: &HeaderMap) -> bool {
    st.config.tls.is_some()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').next().unwrap_or("").trim() == "https")
}

fn refused(why: &str) -> ApiError {
    ApiError::forbidden(format!(
        "{why}: a request made with the console's session cookie needs the session's CSRF \
         token (header {CSRF_HEADER} or form field {CSRF_FIELD}); reload the console page"
    ))
}

/// Checks a CSRF token given for session `s` (403 when missing or wrong).
pub fn compare(given: Option<&str>, s: &Session) -> Result<(), ApiError> {
    match given {
        None => Err(refused("missing CSRF token")),
        Some(t) if util::ct_eq(t.trim(), &s.csrf) => Ok(()),
        Some(_) => Err(refused("wrong CSRF token")),
    }
}

/// Checks the CSRF header of a request made with session `s`.
pub fn check_csrf_header(headers: &HeaderMap, s: &Session) -> Result<(), ApiError> {
    compare(headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()), s)
}

/// Checks the CSRF token of a request made with session `s`: the header, or else the `csrf`
/// field of a (small) form body, which is read and put back for the handler.
pub async fn check_csrf(req: Request, s: &Session) -> (Request, Result<(), ApiError>) {
    if req.headers().contains_key(CSRF_HEADER) {
        let r = check_csrf_header(req.headers(), s);
        return (req, r);
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return (req, compare(None, s));
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, FORM_MAX).await {
        Ok(bytes) => {
            let r = compare(form_field(&bytes, CSRF_FIELD).as_deref(), s);
            (Request::from_parts(parts, axum::body::Body::from(bytes)), r)
        }
        Err(_) => (
            Request::from_parts(parts, axum::body::Body::empty()),
            Err(ApiError::bad_request(format!(
                "form body unreadable or over {FORM_MAX} bytes"
            ))),
        ),
    }
}

/// The first value of field `name` of an `application/x-www-form-urlencoded` body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    body.split(|b| *b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        (percent_decode(k)? == name)
            .then(|| percent_decode(v))
            .flatten()
    })
}

fn percent_decode(s: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        let body = b"token=edt_a%2Bb-c&next=%2Fconsole%2Frollouts%2Fx+y&csrf=ab";
        assert_eq!(form_field(body, "token").as_deref(), Some("edt_a+b-c"));
        assert_eq!(
            form_field(body, "next").as_deref(),
            Some("/console/rollouts/x y")
        );
        assert_eq!(form_field(body, "csrf").as_deref(), Some("ab"));
        assert_eq!(form_field(body, "nope"), None);
        assert_eq!(form_field(b"csrf=%zz", "csrf"), None);
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; edgecd_session=eds_x ; b=2"),
        );
        assert_eq!(cookie_id(&h).as_deref(), Some("eds_x"));
        h.insert(header::COOKIE, HeaderValue::from_static("edgecd_session="));
        assert_eq!(cookie_id(&h), None);
    }

    #[test]
    fn csrf_differs_from_the_stored_hash() {
        assert_ne!(csrf_for("eds_x"), util::hash_secret("eds_x"));
        assert_eq!(csrf_for("eds_x"), csrf_for("eds_x"));
        assert_ne!(csrf_for("eds_x"), csrf_for("eds_y"));
    }
}
