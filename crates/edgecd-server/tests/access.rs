//! People and access over real HTTP on 127.0.0.1: every route of the router is classified
//! (`auth::ROUTES`), a viewer token is refused on every mutating route, each role's boundary
//! is exact, rotation and revocation cut old secrets off, mutating requests (and only those,
//! never device check-ins) land in the audit log with the token's name, and a backup of a
//! running server restores into a fresh one that devices keep working with.

use edgecd_api::protocol::*;
use edgecd_server::auth::{Access, ROUTES, Role};
use edgecd_server::{Config, EmbeddedServer};
use edgecd_sign::SigningKey;
use edgecd_testkit::release as fixtures;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

struct H {
    _dir: tempfile::TempDir,
    srv: EmbeddedServer,
    http: ureq::Agent,
    dir: PathBuf,
}

type Resp = (u16, String);

fn config(data: &Path) -> Config {
    let mut cfg = Config::new(data);
    cfg.database = edgecd_testkit::postgres::database_for(&cfg.data_dir);
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    cfg.max_blob_bytes = 8 << 20;
    cfg
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn request(
    http: &ureq::Agent,
    srv: &EmbeddedServer,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut r = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", srv.addr));
    if let Some(a) = auth {
        r = r.header("authorization", format!("Bearer {a}"));
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if body.is_some() && !headers.iter().any(|(k, _)| *k == "content-type") {
        r = r.header("content-type", "application/json");
    }
    let mut resp = http
        .run(r.body(body.unwrap_or_default()).expect("request"))
        .expect("http");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, text)
}

impl H {
    fn new() -> Self {
        let d = tempfile::tempdir().expect("tmp");
        let dir = d.path().to_path_buf();
        let srv = EmbeddedServer::start(config(&dir.join("data"))).expect("start");
        Self {
            _dir: d,
            srv,
            http: agent(),
            dir,
        }
    }

    fn req(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Resp {
        let b = body.map(|v| serde_json::to_vec(&v).expect("json"));
        request(&self.http, &self.srv, method, path, auth, b, &[])
    }

    fn admin(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Resp {
        self.req(method, path, Some(&self.srv.admin_token.clone()), body)
    }

    /// Creates an API token; its secret.
    fn token(&self, name: &str, role: Role) -> String {
        let (s, t) = self.admin(
            "POST",
            "/api/v1/admin/tokens",
            Some(serde_json::json!({"name": name, "role": role})),
        );
        assert_eq!(s, 200, "{t}");
        let v: serde_json::Value = serde_json::from_str(&t).expect("json");
        assert_eq!(v["name"], name);
        v["token"].as_str().expect("secret").to_string()
    }

    fn audit(&self, query: &str) -> Vec<serde_json::Value> {
        let (s, t) = self.admin("GET", &format!("/api/v1/admin/audit{query}"), None);
        assert_eq!(s, 200, "{t}");
        serde_json::from_str(&t).expect("audit json")
    }
}

fn is_mutating(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// A concrete path for a route template.
fn concrete(path: &str) -> String {
    path.replace("{id}", "nosuchthing")
        .replace("{digest}", &format!("sha256:{}", "0".repeat(64)))
        .replace("{command}", "promote")
        .replace("{name}", "nosuchtoken")
}

fn role_routes() -> impl Iterator<Item = (&'static str, &'static str, Role)> {
    ROUTES.iter().filter_map(|r| match r.access {
        Access::Role(role) => Some((r.method, r.path, role)),
        _ => None,
    })
}

/// Every `.route(PATH, METHODS…)` registered in the server's sources (all modules, nested
/// ones too), as (method, path):
/// the table must list each, so a route cannot be added without deciding who may call it.
fn registered_routes() -> Vec<(String, String)> {
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let mut files = vec![];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut out = vec![];
    for p in files {
        let text = std::fs::read_to_string(&p).expect("read");
        for chunk in text.split(".route(").skip(1) {
            let path = chunk
                .split('"')
                .nth(1)
                .expect("route path literal")
                .to_string();
            // The methods chained on this route, up to the next builder call or the end of
            // the function.
            let end = [".route(", ".merge(", ".layer(", ".with_state(", "\n}"]
                .iter()
                .filter_map(|m| chunk.find(m))
                .min()
                .unwrap_or(chunk.len());
            let body = &chunk[..end];
            for (m, word) in [
                ("GET", "get("),
                ("POST", "post("),
                ("PUT", "put("),
                ("PATCH", "patch("),
                ("DELETE", "delete("),
                ("HEAD", "head("),
            ] {
                let hits = body.match_indices(word).any(|(i, _)| {
                    i == 0
                        || !body.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && body.as_bytes()[i - 1] != b'_'
                });
                if hits {
                    out.push((m.to_string(), path.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn every_route_of_the_router_is_classified() {
    let registered = registered_routes();
    assert!(registered.len() >= 30, "found only {registered:?}");
    for (m, p) in &registered {
        assert!(
            ROUTES.iter().any(|r| r.method == m && r.path == p),
            "{m} {p} is registered but not classified in edgecd_server::auth::ROUTES"
        );
    }
    // And the table names no route that does not exist.
    for r in ROUTES {
        assert!(
            registered.iter().any(|(m, p)| m == r.method && p == r.path),
            "{} {} is classified but not registered",
            r.method,
            r.path
        );
    }
    // Every classified route answers (no 500 "not classified") to the admin token.
    let h = H::new();
    for (m, p, _) in role_routes() {
        let body = is_mutating(m).then(|| serde_json::json!({}));
        let (s, t) = h.admin(m, &concrete(p), body);
        assert!(!matches!(s, 401 | 403 | 500), "{m} {p}: {s} {t}");
    }
}

#[test]
fn a_viewer_token_cannot_use_any_mutating_route() {
    let h = H::new();
    let viewer = h.token("watcher", Role::Viewer);
    let mutating: Vec<_> = role_routes().filter(|(m, _, _)| is_mutating(m)).collect();
    assert!(mutating.len() >= 16, "{mutating:?}");
    for (m, p, _) in &mutating {
        let (s, t) = h.req(m, &concrete(p), Some(&viewer), Some(serde_json::json!({})));
        assert_eq!(s, 403, "{m} {p} answered {s} to a viewer: {t}");
        assert!(
            t.contains("needs role") && t.contains("watcher") && t.contains("has role viewer"),
            "{m} {p}: {t}"
        );
    }
    // Nothing happened: no enrollment token, no key, no tokens beyond the two.
    let (s, t) = h.admin("GET", "/api/v1/admin/keys", None);
    assert_eq!((s, t.as_str()), (200, "[]"));
    let (_, t) = h.admin("GET", "/api/v1/admin/tokens", None);
    let tokens: Vec<serde_json::Value> = serde_json::from_str(&t).expect("tokens");
    assert_eq!(tokens.len(), 2, "{t}");
    // Reads work.
    for (m, p, role) in role_routes().filter(|(m, _, _)| !is_mutating(m)) {
        let (s, t) = h.req(m, &concrete(p), Some(&viewer), None);
        if role == Role::Viewer {
            assert!(s != 401 && s != 403, "{m} {p}: {s} {t}");
        } else {
            assert_eq!(s, 403, "{m} {p}: {t}");
        }
    }
}

#[test]
fn each_role_gets_exactly_its_routes() {
    let h = H::new();
    let secrets: BTreeMap<Role, String> = Role::ALL
        .into_iter()
        .map(|r| {
            let s = if r == Role::Admin {
                h.srv.admin_token.clone()
            } else {
                h.token(&format!("t-{r}"), r)
            };
            (r, s)
        })
        .collect();
    for (m, p, need) in role_routes() {
        let body = is_mutating(m).then(|| serde_json::json!({}));
        for (role, secret) in &secrets {
            let (s, t) = h.req(m, &concrete(p), Some(secret), body.clone());
            if *role >= need {
                assert!(s != 401 && s != 403, "{role} on {m} {p}: {s} {t}");
            } else {
                assert_eq!(s, 403, "{role} on {m} {p}: {t}");
                assert!(t.contains(&format!("needs role {need}")), "{t}");
            }
        }
    }
    // The headline boundaries, spelled out.
    let route = |m, p| role_routes().find(|r| r.0 == m && r.1 == p).expect(p).2;
    assert_eq!(route("POST", "/api/v1/admin/deployments"), Role::Deployer);
    assert_eq!(
        route("POST", "/api/v1/admin/rollouts/{id}/approve"),
        Role::Approver
    );
    assert_eq!(
        route("POST", "/api/v1/admin/rollouts/{id}/{command}"),
        Role::Deployer
    );
    assert_eq!(route("POST", "/api/v1/admin/keys"), Role::Admin);
    assert_eq!(route("DELETE", "/api/v1/admin/devices/{id}"), Role::Admin);
}

#[test]
fn rotation_and_revocation_cut_old_secrets_off() {
    let h = H::new();
    // The first start's admin token is the API token `admin`.
    let (s, t) = h.admin("GET", "/api/v1/admin/whoami", None);
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&t).expect("json"),
        serde_json::json!({"name": "admin", "role": "admin"})
    );
    let old = h.token("ci", Role::Deployer);
    let (s, t) = h.req("GET", "/api/v1/admin/whoami", Some(&old), None);
    assert_eq!(s, 200, "{t}");
    assert!(t.contains("\"deployer\""), "{t}");
    // A second token of an active name is refused.
    let (s, t) = h.admin(
        "POST",
        "/api/v1/admin/tokens",
        Some(serde_json::json!({"name": "ci", "role": "admin"})),
    );
    assert_eq!(s, 409, "{t}");
    // Bad names and roles are clear errors.
    let (s, t) = h.admin(
        "POST",
        "/api/v1/admin/tokens",
        Some(serde_json::json!({"name": "a b", "role": "viewer"})),
    );
    assert_eq!(s, 400, "{t}");
    let (s, _) = h.admin(
        "POST",
        "/api/v1/admin/tokens",
        Some(serde_json::json!({"name": "x", "role": "root"})),
    );
    assert_eq!(s, 422);

    let (s, t) = h.admin(
        "POST",
        "/api/v1/admin/tokens/ci/rotate",
        Some(serde_json::json!({})),
    );
    assert_eq!(s, 200, "{t}");
    let new: serde_json::Value = serde_json::from_str(&t).expect("json");
    let new = new["token"].as_str().expect("secret").to_string();
    assert_ne!(new, old);
    let (s, t) = h.req("GET", "/api/v1/admin/whoami", Some(&old), None);
    assert_eq!(s, 401, "the old secret still works after rotation: {t}");
    let (s, _) = h.req("GET", "/api/v1/admin/whoami", Some(&new), None);
    assert_eq!(s, 200);

    let (s, t) = h.admin(
        "POST",
        "/api/v1/admin/tokens/ci/revoke",
        Some(serde_json::json!({})),
    );
    assert_eq!(s, 200, "{t}");
    assert!(t.contains("\"revoked\""), "{t}");
    let (s, t) = h.req("GET", "/api/v1/admin/devices", Some(&new), None);
    assert_eq!(s, 401, "{t}");
    assert!(t.contains("revoked"), "{t}");
    let (s, _) = h.admin(
        "POST",
        "/api/v1/admin/tokens/ci/rotate",
        Some(serde_json::json!({})),
    );
    assert_eq!(s, 409, "a revoked token cannot be brought back by rotation");
    // The last admin token cannot be revoked (nobody could manage tokens any more).
    let (s, t) = h.admin(
        "POST",
        "/api/v1/admin/tokens/admin/revoke",
        Some(serde_json::json!({})),
    );
    assert_eq!(s, 409, "{t}");
    assert!(t.contains("last admin token"), "{t}");
    // With a second admin, `admin` itself can go.
    let boss = h.token("boss", Role::Admin);
    let (s, t) = h.req(
        "POST",
        "/api/v1/admin/tokens/admin/revoke",
        Some(&boss),
        Some(serde_json::json!({})),
    );
    assert_eq!(s, 200, "{t}");
    let (s, _) = h.admin("GET", "/api/v1/admin/devices", None);
    assert_eq!(s, 401);
    // A revoked name can be reused for a new token.
    let (s, t) = h.req(
        "POST",
        "/api/v1/admin/tokens",
        Some(&boss),
        Some(serde_json::json!({"name": "ci", "role": "viewer"})),
    );
    assert_eq!(s, 200, "{t}");
    let (s, t) = h.req("GET", "/api/v1/admin/tokens", Some(&boss), None);
    assert_eq!(s, 200);
    let list: Vec<serde_json::Value> = serde_json::from_str(&t).expect("json");
    let names: Vec<_> = list
        .iter()
        .map(|t| t["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["admin", "boss", "ci"]);
    assert!(
        list[0]["revoked"].is_i64() && list[2]["revoked"].is_null(),
        "{t}"
    );
    assert!(!t.contains("edt_"), "secrets are never listed: {t}");
}

fn inv() -> Inventory {
    Inventory {
        board: "rpi5".into(),
        board_model: None,
        ram_mb: 4096,
        accelerator: None,
        runtimes: BTreeMap::from([("edgecd-infer".into(), "0.1.0".into())]),
        agent_version: "test".into(),
        ..Default::default()
    }
}

fn enroll(h: &H, secret: &str) -> EnrollResponse {
    let (s, t) = h.req(
        "POST",
        "/api/v1/admin/enrollment-tokens",
        Some(secret),
        Some(serde_json::json!({"labels": {"site": "a"}})),
    );
    assert_eq!(s, 200, "{t}");
    let tok: CreateTokenResponse = serde_json::from_str(&t).expect("token");
    let req = EnrollRequest {
        token: tok.token,
        inventory: inv(),
        labels: BTreeMap::new(),
        protocol: PROTOCOL_VERSION.into(),
    };
    let (s, t) = h.req(
        "POST",
        "/api/v1/devices/enroll",
        None,
        Some(serde_json::to_value(&req).expect("json")),
    );
    assert_eq!(s, 200, "{t}");
    serde_json::from_str(&t).expect("enroll")
}

fn checkin(
    http: &ureq::Agent,
    srv: &EmbeddedServer,
    d: &EnrollResponse,
    holding: Option<&SignedAssignment>,
) -> Resp {
    let version = holding.map_or(0, |a| {
        serde_json::from_str::<Assignment>(&a.payload)
            .expect("payload")
            .version
    });
    let req = CheckinRequest {
        app_metrics: Default::default(),
        inventory: inv(),
        status: DeviceStatus {
            apps: Default::default(),
            phase: Phase::Idle,
            running: None,
            assignment_version: version,
            last_outcome: None,
            download: None,
            stale_since: None,
            assignment_proof: holding.cloned(),
        },
        labels: BTreeMap::new(),
        metrics: None,
        protocol: PROTOCOL_VERSION.into(),
    };
    request(
        http,
        srv,
        "POST",
        &format!("/api/v1/devices/{}/checkin", d.device_id),
        Some(&d.credential),
        Some(serde_json::to_vec(&req).expect("json")),
        &[],
    )
}

fn assignment(t: &str) -> (SignedAssignment, Assignment) {
    let r: CheckinResponse = serde_json::from_str(t).expect("checkin response");
    let a = r.assignment.expect("an assignment");
    let p = serde_json::from_str(&a.payload).expect("payload");
    (a, p)
}

#[test]
fn mutating_requests_are_audited_with_the_token_name_and_reads_are_not() {
    let h = H::new();
    let deployer = h.token("ci", Role::Deployer);
    let viewer = h.token("watcher", Role::Viewer);
    let before = h.audit("");
    assert_eq!(before.len(), 2, "the two token creations: {before:?}");
    assert!(
        before
            .iter()
            .all(|r| r["token"] == "admin" && r["route"] == "/api/v1/admin/tokens")
    );
    assert!(
        before.iter().all(|r| r["summary"]["name"].is_string()),
        "{before:?}"
    );

    // Reads and device traffic leave no record.
    h.req("GET", "/api/v1/admin/devices", Some(&deployer), None);
    h.req("GET", "/api/v1/admin/releases", Some(&viewer), None);
    let dev = enroll(&h, &deployer);
    let (s, t) = checkin(&h.http, &h.srv, &dev, None);
    assert_eq!(s, 200, "{t}");

    // A mutation, with a claimed X-Forwarded-For, and a refused one.
    let (s, t) = request(
        &h.http,
        &h.srv,
        "PATCH",
        &format!("/api/v1/admin/devices/{}/labels", dev.device_id),
        Some(&deployer),
        Some(br#"{"labels":{"ring":"canary"}}"#.to_vec()),
        &[("x-forwarded-for", "203.0.113.9")],
    );
    assert_eq!(s, 200, "{t}");
    let (s, _) = h.req(
        "POST",
        &format!("/api/v1/admin/devices/{}/revoke", dev.device_id),
        Some(&viewer),
        Some(serde_json::json!({})),
    );
    assert_eq!(s, 403);
    // Key material never reaches the log.
    let ci = SigningKey::generate();
    let (s, t) = h.admin(
        "POST",
        "/api/v1/admin/keys",
        Some(
            serde_json::json!({"publicKeyPem": ci.verifying_key().to_spki_pem(), "name": "ci-key"}),
        ),
    );
    assert_eq!(s, 200, "{t}");

    let all = h.audit("");
    let new: Vec<_> = all[..all.len() - before.len()].to_vec();
    let what: Vec<_> = new
        .iter()
        .map(|r| {
            (
                r["token"].as_str().unwrap_or("").to_string(),
                r["method"].as_str().unwrap_or("").to_string(),
                r["route"].as_str().unwrap_or("").to_string(),
                r["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let own = |t: &str, m: &str, r: &str, s| (t.to_string(), m.to_string(), r.to_string(), s);
    // Newest first: no GET, no enroll, no check-in.
    assert_eq!(
        what,
        vec![
            own("admin", "POST", "/api/v1/admin/keys", 200),
            own("watcher", "POST", "/api/v1/admin/devices/{id}/revoke", 403),
            own("ci", "PATCH", "/api/v1/admin/devices/{id}/labels", 200),
            own("ci", "POST", "/api/v1/admin/enrollment-tokens", 200),
        ]
    );
    let labels = &new[2];
    assert_eq!(
        labels["path"],
        format!("/api/v1/admin/devices/{}/labels", dev.device_id)
    );
    assert_eq!(labels["peer"], "127.0.0.1");
    assert_eq!(labels["forwardedFor"], "203.0.113.9");
    assert_eq!(
        labels["summary"],
        serde_json::json!({"labels": {"ring": "canary"}})
    );
    assert_eq!(new[0]["summary"]["publicKeyPem"], "(left out)");
    assert_eq!(new[0]["summary"]["name"], "ci-key");
    let raw = serde_json::to_string(&all).expect("json");
    assert!(
        !raw.contains("BEGIN PUBLIC KEY") && !raw.contains("edt_"),
        "{raw}"
    );
    assert!(new.iter().all(|r| r["atMs"].as_i64().unwrap_or(0) > 0));

    // Filters: token, since, limit.
    let ci_only = h.audit("?token=ci");
    assert_eq!(ci_only.len(), 2);
    let since = new[1]["atMs"].as_i64().expect("at");
    assert!(h.audit(&format!("?since={since}")).len() >= 2);
    assert_eq!(h.audit(&format!("?since={}", since + 3_600_000)).len(), 0);
    assert_eq!(h.audit("?limit=1").len(), 1);
    let (s, t) = h.admin("GET", "/api/v1/admin/audit?limit=0", None);
    assert_eq!(s, 400, "{t}");
    // Reading the audit log is an admin's.
    let (s, _) = h.req("GET", "/api/v1/admin/audit", Some(&deployer), None);
    assert_eq!(s, 403);
}

#[test]
fn a_backup_of_a_running_server_restores_and_devices_keep_working() {
    let h = H::new();
    let ci = SigningKey::generate();
    h.admin(
        "POST",
        "/api/v1/admin/keys",
        Some(serde_json::json!({"publicKeyPem": ci.verifying_key().to_spki_pem()})),
    );
    let publish = |version: &str| {
        let r = fixtures::make_release(
            &h.dir.join("rel"),
            &ci,
            "app",
            version,
            fixtures::rpi5(),
            fixtures::infer_pin(),
            4096,
        )
        .expect("release");
        for (_, p) in r.blobs().expect("blobs") {
            let b = fixtures::blob_ref(&p).expect("ref");
            let (s, t) = request(
                &h.http,
                &h.srv,
                "PUT",
                &format!("/api/v1/admin/blobs/{}", b.digest),
                Some(&h.srv.admin_token),
                Some(std::fs::read(&p).expect("read")),
                &[("content-type", "application/octet-stream")],
            );
            assert!(s == 200 || s == 201, "{s} {t}");
        }
        let (s, t) = h.admin(
            "POST",
            "/api/v1/admin/releases",
            Some(serde_json::to_value(r.publish_request().expect("req")).expect("json")),
        );
        assert_eq!(s, 201, "{t}");
        let (s, t) = h.admin(
            "POST",
            "/api/v1/admin/deployments",
            Some(serde_json::json!({"app": "app", "version": version, "selector": {}})),
        );
        assert_eq!(s, 200, "{t}");
    };
    let dev = enroll(&h, &h.srv.admin_token);
    publish("1.0.0");
    let ops = h.token("ops", Role::Deployer);
    let (s, t) = checkin(&h.http, &h.srv, &dev, None);
    assert_eq!(s, 200, "{t}");
    let (_, v1) = assignment(&t);
    assert_eq!(v1.release.version, "1.0.0");

    // The backup, taken while the server serves.
    let backup = h.dir.join("backup");
    let m = h
        .srv
        .block_on(edgecd_server::backup::backup(
            &h.dir.join("data"),
            h.srv.state.config.database.as_deref(),
            &backup,
        ))
        .expect("backup");
    assert!(m.blobs >= 4, "{m:?}");
    assert_eq!(m.backend, h.srv.state.store.backend(), "{m:?}");
    // A second backup into the same place is refused, not merged.
    let again = h.srv.block_on(edgecd_server::backup::backup(
        &h.dir.join("data"),
        h.srv.state.config.database.as_deref(),
        &backup,
    ));
    assert!(again.is_err());

    // Life goes on after the backup: the device moves to 1.0.1 (a newer assignment).
    publish("1.0.1");
    let (s, t) = checkin(&h.http, &h.srv, &dev, None);
    assert_eq!(s, 200, "{t}");
    let (held, v2) = assignment(&t);
    assert_eq!(v2.release.version, "1.0.1");
    assert!(v2.version > v1.version);

    // Restore into a fresh data directory (and database) and start a server on it.
    let fresh = h.dir.join("restored");
    let cfg = config(&fresh);
    let r = h
        .srv
        .block_on(edgecd_server::backup::restore(
            &backup,
            &fresh,
            cfg.database.as_deref(),
        ))
        .expect("restore");
    assert_eq!(r, m);
    // Restoring over it again is refused (it is not fresh any more).
    assert!(
        h.srv
            .block_on(edgecd_server::backup::restore(
                &backup,
                &fresh,
                cfg.database.as_deref()
            ))
            .is_err()
    );
    let srv2 = EmbeddedServer::start(cfg).expect("restored server starts");
    assert_eq!(
        srv2.admin_token, h.srv.admin_token,
        "the admin token comes back"
    );
    let http = agent();
    // API tokens came back too.
    let (s, t) = request(
        &http,
        &srv2,
        "GET",
        "/api/v1/admin/whoami",
        Some(&ops),
        None,
        &[],
    );
    assert_eq!(s, 200, "{t}");

    // The device, holding v2 the backup never saw, checks in: the server resyncs above it
    // instead of answering with versions the device would refuse.
    let (s, t) = checkin(&http, &srv2, &dev, Some(&held));
    assert_eq!(s, 200, "{t}");
    let (_, after) = assignment(&t);
    assert_eq!(after.release.version, "1.0.0", "the backup's assignment");
    assert!(
        after.version > v2.version,
        "restored server answered v{} to a device holding v{}",
        after.version,
        v2.version
    );
    // It can download what it is assigned.
    let (s, _) = request(
        &http,
        &srv2,
        "GET",
        &format!("/api/v1/blobs/{}", after.release.bundle.digest),
        Some(&dev.credential),
        None,
        &[],
    );
    assert_eq!(s, 200);
    // And keeps checking in: the resynced assignment is now the server's own.
    let (s, t) = checkin(&http, &srv2, &dev, None);
    assert_eq!(s, 200, "{t}");
    assert_eq!(assignment(&t).1.version, after.version);
}
