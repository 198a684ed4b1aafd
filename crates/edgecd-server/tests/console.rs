//! The web console's sessions over real HTTP on 127.0.0.1 (SQLite, or PostgreSQL under
//! `scripts/with-postgres`): a login with an API token sets an `HttpOnly; SameSite=Strict`
//! cookie (`Secure` behind HTTPS) and leads to a validated local `next`; the store keeps only
//! the session id's hash; a change made with the cookie needs the session's CSRF token; a
//! viewer's cookie is refused on every mutating route; sessions expire, end at logout and
//! when their token is rotated; notification links and console pages lead through the login.

use edgecd_server::auth::{Access, ROUTES, Role};
use edgecd_server::console::session::TTL_SECS;
use edgecd_server::controller::FakeClock;
use edgecd_server::{Config, EmbeddedServer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

struct H {
    _dir: tempfile::TempDir,
    srv: EmbeddedServer,
    http: ureq::Agent,
    clock: Arc<FakeClock>,
}

struct Resp {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

fn config(data: &Path, clock: Arc<FakeClock>) -> Config {
    let mut cfg = Config::new(data);
    cfg.database = edgecd_testkit::postgres::database_for(&cfg.data_dir);
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    cfg.clock = clock;
    cfg
}

impl H {
    fn new() -> Self {
        let d = tempfile::tempdir().expect("tmp");
        let clock = Arc::new(FakeClock::at(1_900_000_000_000));
        let srv =
            EmbeddedServer::start(config(&d.path().join("data"), clock.clone())).expect("start");
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Self {
            _dir: d,
            srv,
            http,
            clock,
        }
    }

    fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut r = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.srv.addr));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let mut resp = self
            .http
            .run(r.body(body.as_bytes().to_vec()).expect("request"))
            .expect("http");
        Resp {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Resp {
        let c = cookie.map(|c| format!("edgecd_session={c}"));
        let h: Vec<(&str, &str)> = c.iter().map(|c| ("cookie", c.as_str())).collect();
        self.req("GET", path, &h, "")
    }

    fn token(&self, name: &str, role: Role) -> String {
        let r = self.req(
            "POST",
            "/api/v1/admin/tokens",
            &[
                ("authorization", &format!("Bearer {}", self.srv.admin_token)),
                ("content-type", "application/json"),
            ],
            &serde_json::json!({"name": name, "role": role}).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        v["token"].as_str().expect("secret").to_string()
    }

    fn login_with(&self, form: &str, headers: &[(&str, &str)]) -> Resp {
        let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
        h.extend_from_slice(headers);
        self.req("POST", "/console/login", &h, form)
    }

    /// Logs in with `token`; the session id (cookie value) and the page's CSRF token.
    fn login(&self, token: &str) -> (String, String) {
        let r = self.login_with(&format!("token={token}&next=%2Fconsole%2F"), &[]);
        assert_eq!(r.status, 303, "{}", r.body);
        let id = cookie_value(r.header("set-cookie")).expect("session cookie");
        let page = self.get("/console/", Some(&id));
        assert_eq!(page.status, 200, "{}", page.body);
        (id, csrf_of(&page.body))
    }
}

fn cookie_value(set_cookie: &str) -> Option<String> {
    set_cookie
        .split(';')
        .next()?
        .strip_prefix("edgecd_session=")
        .map(str::to_string)
        .filter(|v| !v.is_empty())
}

/// The CSRF token the page carries (`<meta name="csrf-token" content="…">`).
fn csrf_of(page: &str) -> String {
    const META: &str = "name=\"csrf-token\" content=\"";
    let at = page.find(META).expect("csrf meta") + META.len();
    page[at..at + 64].to_string()
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[test]
fn login_sets_a_strict_http_only_cookie_and_leads_to_next() {
    let h = H::new();
    let viewer = h.token("vera", Role::Viewer);
    // A page without a session goes to the login, remembering where it was going.
    let r = h.get("/console/rollouts/r-123?tab=gates", None);
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        "/console/login?next=/console/rollouts/r-123%3Ftab%3Dgates"
    );
    // So does a browser opening a notification's link (the rollout's API URL).
    let r = h.req(
        "GET",
        "/api/v1/admin/rollouts/r-123",
        &[("accept", "text/html,application/xhtml+xml")],
        "",
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), "/console/rollouts/r-123");
    // API clients still get their 401.
    let r = h.req("GET", "/api/v1/admin/rollouts/r-123", &[], "");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("console session"), "{}", r.body);

    let r = h.get("/console/login?next=/console/rollouts/r-123", None);
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("value=\"/console/rollouts/r-123\""),
        "{}",
        r.body
    );
    let csp = r.header("content-security-policy");
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("default-src 'none'")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(!r.body.contains("<script>"), "no inline script");

    // A wrong token: 401 with the form again, no cookie.
    let r = h.login_with("token=edt_wrong&next=/console/", &[]);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("not valid"), "{}", r.body);
    assert!(r.header("set-cookie").is_empty());

    let r = h.login_with(
        &format!("token={viewer}&next=%2Fconsole%2Frollouts%2Fr-123"),
        &[],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), "/console/rollouts/r-123");
    let sc = r.header("set-cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(sc.contains(flag), "{flag} in {sc}");
    }
    assert!(!sc.contains("Secure"), "plain HTTP: no Secure flag: {sc}");
    let id = cookie_value(sc).expect("cookie");
    assert!(!id.contains(&viewer), "the cookie is not the token");

    // The store keeps only the session id's hash.
    let st = &h.srv.state;
    assert!(
        h.srv
            .block_on(st.store.console_session(&sha256_hex(&id)))
            .expect("store")
            .is_some_and(|s| s.token_name == "vera")
    );
    assert!(
        h.srv
            .block_on(st.store.console_session(&id))
            .expect("store")
            .is_none()
    );

    // The cookie authenticates pages and the API.
    let r = h.get("/console/rollouts/r-123", Some(&id));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-security-policy")
            .contains("script-src 'self'")
    );
    assert!(r.body.contains("/console/assets/console.js"));
    let r = h.get("/api/v1/admin/whoami", Some(&id));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("\"vera\"") && r.body.contains("\"viewer\""),
        "{}",
        r.body
    );
    // The embedded assets are served.
    for (a, ty) in [("console.js", "javascript"), ("console.css", "text/css")] {
        let r = h.get(&format!("/console/assets/{a}"), None);
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").contains(ty));
        assert!(r.body.len() > 1000);
    }
    assert_eq!(h.get("/console/assets/../../etc/passwd", None).status, 404);
    assert_eq!(h.get("/console/assets/nope.js", None).status, 404);
    // The console's own reads answer clear errors.
    for what in ["metrics", "history"] {
        let r = h.get(&format!("/api/v1/admin/devices/nope/{what}"), Some(&id));
        assert_eq!(r.status, 404, "{what}: {}", r.body);
        assert!(r.body.contains("no device nope"), "{}", r.body);
    }
    let r = h.get("/api/v1/admin/releases/nope/details", Some(&id));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("APP@VERSION"), "{}", r.body);
    let r = h.get("/api/v1/admin/releases/app@1.0/details", Some(&id));
    assert_eq!(r.status, 404, "{}", r.body);

    // Behind an HTTPS proxy the cookie is Secure.
    let r = h.login_with(
        &format!("token={viewer}&next=/console/"),
        &[("x-forwarded-proto", "https")],
    );
    assert_eq!(r.status, 303);
    assert!(
        r.header("set-cookie").contains("; Secure"),
        "{}",
        r.header("set-cookie")
    );
}

#[test]
fn next_must_be_a_local_console_path() {
    let h = H::new();
    let t = h.token("vera", Role::Viewer);
    for bad in [
        "https%3A%2F%2Fevil.example%2Fconsole%2F",
        "%2F%2Fevil.example%2Fconsole",
        "%2Fconsole%2F%2F%2Fevil.example",
        "%2F%5Cevil.example",
        "%2Fapi%2Fv1%2Fadmin%2Ftokens",
        "javascript%3Aalert(1)",
        "%2Fconsole%2F%0D%0ASet-Cookie%3A%20x%3Dy",
    ] {
        let r = h.login_with(&format!("token={t}&next={bad}"), &[]);
        assert_eq!(r.status, 303, "{bad}: {}", r.body);
        assert_eq!(r.header("location"), "/console/", "next={bad}");
        let page = h.get(&format!("/console/login?next={bad}"), None);
        assert!(
            page.body.contains("name=\"next\" value=\"/console/\""),
            "{bad}"
        );
    }
    // A login posted from another site's page is refused.
    let r = h.login_with(
        &format!("token={t}&next=/console/"),
        &[("origin", "https://evil.example")],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("another site"), "{}", r.body);
    assert!(r.header("set-cookie").is_empty());
    // Its own origin is fine, directly or through a proxy that names the host it was asked for.
    let own = format!("http://{}", h.srv.addr);
    let r = h.login_with(&format!("token={t}&next=/console/"), &[("origin", &own)]);
    assert_eq!(r.status, 303, "{}", r.body);
    let r = h.login_with(
        &format!("token={t}&next=/console/"),
        &[
            ("origin", "https://edgecd.example.com"),
            ("x-forwarded-host", "edgecd.example.com"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
}

#[test]
fn changes_made_with_the_cookie_need_the_sessions_csrf_token() {
    let h = H::new();
    let deployer = h.token("dora", Role::Deployer);
    let (id, csrf) = h.login(&deployer);
    let (_, other_csrf) = h.login(&deployer);
    assert_ne!(csrf, other_csrf, "each session has its own CSRF token");
    let cookie = format!("edgecd_session={id}");
    let body = r#"{"labels":{"site":"s1"},"maxUses":1}"#;
    let post = |extra: &[(&str, &str)]| {
        let mut hs = vec![
            ("cookie", cookie.as_str()),
            ("content-type", "application/json"),
        ];
        hs.extend_from_slice(extra);
        h.req("POST", "/api/v1/admin/enrollment-tokens", &hs, body)
    };
    let r = post(&[]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("missing CSRF token"), "{}", r.body);
    let r = post(&[("x-csrf-token", &other_csrf)]);
    assert_eq!(r.status, 403, "another session's token: {}", r.body);
    assert!(r.body.contains("wrong CSRF token"), "{}", r.body);
    let r = post(&[("x-csrf-token", "0000")]);
    assert_eq!(r.status, 403);
    let r = post(&[("x-csrf-token", &csrf)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("token"), "{}", r.body);
    // The refused attempts are audited under the token's name.
    let audit = h.req(
        "GET",
        "/api/v1/admin/audit",
        &[("authorization", &format!("Bearer {}", h.srv.admin_token))],
        "",
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&audit.body).expect("audit");
    let mine: Vec<_> = rows
        .iter()
        .filter(|r| r["token"] == "dora" && r["route"] == "/api/v1/admin/enrollment-tokens")
        .map(|r| r["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(mine, [200, 403, 403, 403], "{rows:#?}");
    // A bearer token needs no CSRF token (no cookie, no cross-site risk).
    let r = h.req(
        "POST",
        "/api/v1/admin/enrollment-tokens",
        &[
            ("authorization", &format!("Bearer {deployer}")),
            ("content-type", "application/json"),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Logout wants the CSRF token too (form field): a wrong one changes nothing.
    let form = |c: &str| {
        h.req(
            "POST",
            "/console/logout",
            &[
                ("cookie", cookie.as_str()),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            &format!("csrf={c}"),
        )
    };
    let r = form(&other_csrf);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(h.get("/api/v1/admin/whoami", Some(&id)).status, 200);
    let r = form(&csrf);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), "/console/login");
    assert!(r.header("set-cookie").contains("Max-Age=0"));
    let r = h.get("/api/v1/admin/whoami", Some(&id));
    assert_eq!(r.status, 401, "logged out: {}", r.body);
    assert!(
        h.srv
            .block_on(h.srv.state.store.console_session(&sha256_hex(&id)))
            .expect("store")
            .is_none(),
        "logout deletes the session"
    );
}

#[test]
fn a_viewer_cannot_act_through_the_cookie() {
    let h = H::new();
    let viewer = h.token("vera", Role::Viewer);
    let (id, csrf) = h.login(&viewer);
    let cookie = format!("edgecd_session={id}");
    let mutating: Vec<_> = ROUTES
        .iter()
        .filter(|r| matches!(r.access, Access::Role(_)))
        .filter(|r| !matches!(r.method, "GET" | "HEAD"))
        .collect();
    assert!(mutating.len() >= 16, "{mutating:?}");
    for r in &mutating {
        let path = r
            .path
            .replace("{id}", "nosuchthing")
            .replace("{digest}", &format!("sha256:{}", "0".repeat(64)))
            .replace("{command}", "abort")
            .replace("{name}", "nosuchtoken");
        let resp = h.req(
            r.method,
            &path,
            &[
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("content-type", "application/json"),
            ],
            "{}",
        );
        assert_eq!(
            resp.status, 403,
            "{} {} answered a viewer's cookie with {}: {}",
            r.method, r.path, resp.status, resp.body
        );
        assert!(
            resp.body.contains("needs role") && resp.body.contains("vera"),
            "{}",
            resp.body
        );
    }
    // Reads work.
    assert_eq!(h.get("/api/v1/admin/rollouts", Some(&id)).status, 200);
    assert_eq!(h.get("/api/v1/admin/devices", Some(&id)).status, 200);
    assert_eq!(h.get("/api/v1/admin/audit", Some(&id)).status, 403);
}

#[test]
fn sessions_expire_and_end_with_their_token() {
    let h = H::new();
    let t = h.token("vera", Role::Approver);
    let (id, _) = h.login(&t);
    h.clock.advance(Duration::from_secs(TTL_SECS as u64 - 10));
    assert_eq!(h.get("/api/v1/admin/whoami", Some(&id)).status, 200);
    h.clock.advance(Duration::from_secs(11));
    let r = h.get("/api/v1/admin/whoami", Some(&id));
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("expired"), "{}", r.body);
    let r = h.get("/console/", Some(&id));
    assert_eq!(r.status, 303, "an expired session's page goes to the login");
    assert_eq!(r.header("location"), "/console/login?next=/console/");
    // A later login purges expired sessions from the store.
    let (id2, _) = h.login(&t);
    assert!(
        h.srv
            .block_on(h.srv.state.store.console_session(&sha256_hex(&id)))
            .expect("store")
            .is_none()
    );
    // Rotating the token ends its sessions; so does revoking it.
    let admin = format!("Bearer {}", h.srv.admin_token);
    let r = h.req(
        "POST",
        "/api/v1/admin/tokens/vera/rotate",
        &[
            ("authorization", &admin),
            ("content-type", "application/json"),
        ],
        "{}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = h.get("/api/v1/admin/whoami", Some(&id2));
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("rotated or revoked"), "{}", r.body);
    let new: serde_json::Value = serde_json::from_str(&r_body_token(&h, &admin)).expect("json");
    let (id3, _) = h.login(new["token"].as_str().expect("secret"));
    let r = h.req(
        "POST",
        "/api/v1/admin/tokens/vera/revoke",
        &[
            ("authorization", &admin),
            ("content-type", "application/json"),
        ],
        "{}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(h.get("/api/v1/admin/whoami", Some(&id3)).status, 401);
    // An unknown cookie is a 401 too, never a crash.
    assert_eq!(
        h.get("/api/v1/admin/whoami", Some("eds_forged")).status,
        401
    );
}

/// Rotates `vera` again and returns the answer (with the new secret).
fn r_body_token(h: &H, admin: &str) -> String {
    let r = h.req(
        "POST",
        "/api/v1/admin/tokens/vera/rotate",
        &[
            ("authorization", admin),
            ("content-type", "application/json"),
        ],
        "{}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}
