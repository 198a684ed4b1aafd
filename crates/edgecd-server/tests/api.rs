//! The server's HTTP API over real HTTP on 127.0.0.1: authentication (401 without a
//! credential, 403 across devices, for unassigned blobs and for revoked devices), publish
//! verification (untrusted key, tampered bundle, wrong digest), input validation, body
//! limits, Range downloads, ETags and signed assignments; deployment scope (compatibility,
//! dry runs, rollbacks kept to the app's devices), rollouts refused with an empty cohort;
//! blob uploads (body read before answering, resume, garbage collection) and the release
//! pre-flight check; private keys refused as release keys.

use edgecd_api::protocol::*;
use edgecd_server::{Config, EmbeddedServer};
use edgecd_sign::SigningKey;
use edgecd_testkit::release::{self as fixtures, ReleaseFiles};
use std::collections::BTreeMap;

struct H {
    _dir: tempfile::TempDir,
    srv: EmbeddedServer,
    url: String,
    http: ureq::Agent,
    ci: SigningKey,
    dir: std::path::PathBuf,
}

type Resp = (u16, String, Vec<(String, String)>);

impl H {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        let d = tempfile::tempdir().expect("tmp");
        let mut cfg = Config::new(d.path().join("data"));
        cfg.database = edgecd_testkit::postgres::database_for(&cfg.data_dir);
        cfg.listen = "127.0.0.1:0".parse().expect("addr");
        cfg.max_blob_bytes = 8 << 20;
        tweak(&mut cfg);
        let srv = EmbeddedServer::start(cfg).expect("start");
        let url = format!("http://{}", srv.addr);
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let dir = d.path().to_path_buf();
        Self {
            _dir: d,
            srv,
            url,
            http,
            ci: SigningKey::generate(),
            dir,
        }
    }

    fn req(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let url = format!("{}{path}", self.url);
        let mut r = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(a) = auth {
            r = r.header("authorization", format!("Bearer {a}"));
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if body.is_some() && !headers.iter().any(|(k, _)| *k == "content-type") {
            r = r.header("content-type", "application/json");
        }
        let req = r
            .body(body.map(<[u8]>::to_vec).unwrap_or_default())
            .expect("request");
        let mut resp = self.http.run(req).expect("http");
        let status = resp.status().as_u16();
        let hs = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_default();
        (status, text, hs)
    }

    fn admin(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Resp {
        let b = body.map(|v| serde_json::to_vec(&v).expect("json"));
        self.req(method, path, Some(&self.srv.admin_token), b.as_deref(), &[])
    }

    fn trust_ci(&self) {
        let (s, t, _) = self.admin(
            "POST",
            "/api/v1/admin/keys",
            Some(serde_json::json!({"publicKeyPem": self.ci.verifying_key().to_spki_pem()})),
        );
        assert_eq!(s, 200, "{t}");
    }

    fn upload(&self, p: &std::path::Path) -> BlobRef {
        let b = fixtures::blob_ref(p).expect("ref");
        let bytes = std::fs::read(p).expect("read");
        let (s, t, _) = self.req(
            "PUT",
            &format!("/api/v1/admin/blobs/{}", b.digest),
            Some(&self.srv.admin_token),
            Some(&bytes),
            &[("content-type", "application/octet-stream")],
        );
        assert!(s == 200 || s == 201, "{s} {t}");
        b
    }

    fn publish(&self, r: &ReleaseFiles) -> Resp {
        for (_, p) in r.blobs().expect("blobs") {
            self.upload(&p);
        }
        let req = r.publish_request().expect("req");
        self.admin(
            "POST",
            "/api/v1/admin/releases",
            Some(serde_json::to_value(&req).expect("json")),
        )
    }

    fn release(&self, version: &str, key: &SigningKey) -> ReleaseFiles {
        fixtures::make_release(
            &self.dir.join("rel"),
            key,
            "app",
            version,
            fixtures::rpi5(),
            fixtures::infer_pin(),
            4096,
        )
        .expect("release")
    }

    fn enroll(&self, labels: &[(&str, &str)]) -> EnrollResponse {
        self.enroll_inv(labels, inv())
    }

    fn enroll_inv(&self, labels: &[(&str, &str)], inventory: Inventory) -> EnrollResponse {
        let (s, t, _) = self.admin(
            "POST",
            "/api/v1/admin/enrollment-tokens",
            Some(serde_json::json!({})),
        );
        assert_eq!(s, 200, "{t}");
        let tok: CreateTokenResponse = serde_json::from_str(&t).expect("token");
        let req = EnrollRequest {
            token: tok.token,
            inventory,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            protocol: edgecd_api::protocol::PROTOCOL_VERSION.into(),
        };
        let (s, t, _) = self.req(
            "POST",
            "/api/v1/devices/enroll",
            None,
            Some(&serde_json::to_vec(&req).expect("json")),
            &[],
        );
        assert_eq!(s, 200, "{t}");
        serde_json::from_str(&t).expect("enroll response")
    }

    fn checkin(&self, d: &EnrollResponse, etag: Option<&str>) -> Resp {
        self.checkin_inv(d, inv(), etag)
    }

    fn checkin_inv(&self, d: &EnrollResponse, inventory: Inventory, etag: Option<&str>) -> Resp {
        let req = CheckinRequest {
            app_metrics: Default::default(),
            inventory,
            status: DeviceStatus {
                apps: Default::default(),
                phase: Phase::Idle,
                running: None,
                assignment_version: 0,
                last_outcome: None,
                download: None,
                stale_since: None,
                assignment_proof: None,
            },
            labels: BTreeMap::new(),
            metrics: None,
            protocol: edgecd_api::protocol::PROTOCOL_VERSION.into(),
        };
        let mut hs = vec![];
        if let Some(e) = etag {
            hs.push(("if-none-match", e));
        }
        self.req(
            "POST",
            &format!("/api/v1/devices/{}/checkin", d.device_id),
            Some(&d.credential),
            Some(&serde_json::to_vec(&req).expect("json")),
            &hs,
        )
    }
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

#[test]
fn first_start_creates_key_and_private_admin_token() {
    let h = H::new();
    use std::os::unix::fs::PermissionsExt;
    let data = h.dir.join("data");
    for f in ["admin-token", "keys/assignment.key"] {
        let mode = std::fs::metadata(data.join(f))
            .expect(f)
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} must be private");
    }
    assert_eq!(
        std::fs::read_to_string(data.join("admin-token"))
            .expect("token")
            .trim(),
        h.srv.admin_token
    );
    let (s, _, _) = h.req("GET", "/api/v1/admin/devices", None, None, &[]);
    assert_eq!(s, 401);
    let (s, _, _) = h.req("GET", "/api/v1/admin/devices", Some("eda_wrong"), None, &[]);
    assert_eq!(s, 401);
    let (s, t, _) = h.admin("GET", "/api/v1/admin/devices", None);
    assert_eq!((s, t.as_str()), (200, "[]"));
}

#[test]
fn publish_verifies_releases() {
    let h = H::new();
    let r = h.release("1.0.0", &h.ci);
    // Nobody trusted yet.
    let (s, t, _) = h.publish(&r);
    assert_eq!(s, 422, "{t}");
    assert!(t.contains("no release keys are trusted"), "{t}");
    h.trust_ci();
    // Signed by another key.
    let rogue = SigningKey::generate();
    let r_rogue = h.release("6.6.6", &rogue);
    let (s, t, _) = h.publish(&r_rogue);
    assert_eq!(s, 422, "{t}");
    assert!(t.contains("does not trust"), "{t}");
    // A tampered bundle (one byte flipped in a model blob), re-uploaded under its new digest.
    let r2 = h.release("2.0.0", &h.ci);
    let mut bytes = std::fs::read(&r2.bundle).expect("bundle");
    let n = bytes.len();
    bytes[n - 2048] ^= 1;
    let bad = h.dir.join("bad.edgecd");
    std::fs::write(&bad, &bytes).expect("write");
    let mut tampered = r2.clone();
    tampered.bundle = bad;
    let (s, t, _) = h.publish(&tampered);
    assert_eq!(s, 422, "{t}");
    assert!(t.contains("bundle"), "{t}");
    // An upload whose body does not hash to the digest in the URL.
    let fake = format!("sha256:{}", "0".repeat(64));
    let (s, t, _) = h.req(
        "PUT",
        &format!("/api/v1/admin/blobs/{fake}"),
        Some(&h.srv.admin_token),
        Some(b"hello"),
        &[("content-type", "application/octet-stream")],
    );
    assert_eq!(s, 400, "{t}");
    assert!(t.contains("digest mismatch"), "{t}");
    // The good one.
    let (s, t, _) = h.publish(&r);
    assert_eq!(s, 201, "{t}");
    let info: ReleaseInfo = serde_json::from_str(&t).expect("info");
    assert_eq!(info.release.bundle_digest, r.bundle_digest);
    assert_eq!(info.signed_by, h.ci.verifying_key().hint());
    // Idempotent re-publish; list.
    let (s, _, _) = h.publish(&r);
    assert_eq!(s, 200);
    let (s, t, _) = h.admin("GET", "/api/v1/admin/releases", None);
    assert_eq!(s, 200);
    let list: Vec<ReleaseInfo> = serde_json::from_str(&t).expect("list");
    assert_eq!(list.len(), 1);
}

#[test]
fn device_auth_assignments_and_blobs() {
    let h = H::new();
    h.trust_ci();
    let r = h.release("1.0.0", &h.ci);
    let (s, t, _) = h.publish(&r);
    assert_eq!(s, 201, "{t}");
    let a = h.enroll(&[("site", "a")]);
    let b = h.enroll(&[("site", "b")]);
    assert_eq!(a.trusted_release_keys.len(), 1);
    // Enrollment tokens are single-use by default and must be valid.
    let bad = EnrollRequest {
        token: "edt_nope".into(),
        inventory: inv(),
        labels: BTreeMap::new(),
        protocol: edgecd_api::protocol::PROTOCOL_VERSION.into(),
    };
    let (s, _, _) = h.req(
        "POST",
        "/api/v1/devices/enroll",
        None,
        Some(&serde_json::to_vec(&bad).expect("json")),
        &[],
    );
    assert_eq!(s, 401);

    // Deploy to site=a only.
    let (s, t, _) = h.admin(
        "POST",
        "/api/v1/admin/deployments",
        Some(serde_json::json!({"app": "app", "version": "1.0.0", "selector": {"site": "a"}})),
    );
    assert_eq!(s, 200, "{t}");
    let dep: DeployResponse = serde_json::from_str(&t).expect("deploy");
    assert_eq!(
        dep.assigned,
        vec![DeployedDevice {
            device_id: a.device_id.clone(),
            assignment_version: 1
        }]
    );

    // No credential → 401; another device's assignment → 403.
    let (s, _, _) = h.req(
        "GET",
        &format!("/api/v1/devices/{}/assignment", a.device_id),
        None,
        None,
        &[],
    );
    assert_eq!(s, 401);
    let (s, _, _) = h.req(
        "GET",
        &format!("/api/v1/devices/{}/assignment", a.device_id),
        Some("edc_x.y"),
        None,
        &[],
    );
    assert_eq!(s, 401);
    let (s, t, _) = h.req(
        "GET",
        &format!("/api/v1/devices/{}/assignment", a.device_id),
        Some(&b.credential),
        None,
        &[],
    );
    assert_eq!(s, 403, "{t}");
    let (s, _, _) = h.checkin(&b, None);
    assert_eq!(s, 200);

    // A's check-in carries the signed assignment and an ETag; a repeat with it is a 304.
    let (s, t, hs) = h.checkin(&a, None);
    assert_eq!(s, 200, "{t}");
    let resp: CheckinResponse = serde_json::from_str(&t).expect("checkin");
    let sa = resp.assignment.expect("assignment");
    let key = edgecd_sign::VerifyingKey::from_pem(&a.assignment_key_pem).expect("key");
    use base64::Engine as _;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&sa.signature)
        .expect("b64");
    key.verify(sa.payload.as_bytes(), &sig)
        .expect("assignment signature verifies");
    let asg: Assignment = serde_json::from_str(&sa.payload).expect("payload");
    assert_eq!(
        (asg.device_id.as_str(), asg.version),
        (a.device_id.as_str(), 1)
    );
    assert!(asg.expires > asg.issued);
    let etag = hs
        .iter()
        .find(|(k, _)| k == "etag")
        .map(|(_, v)| v.clone())
        .expect("etag");
    let (s, _, hs) = h.checkin(&a, Some(&etag));
    assert_eq!(s, 304);
    assert!(
        hs.iter()
            .any(|(k, v)| k == NEXT_CHECKIN_HEADER && v == "60")
    );

    // Blobs: A may read its assigned blobs (with Range); B may not; unassigned → 403.
    let blob = asg.release.bundle.clone();
    let path = format!("/api/v1/blobs/{}", blob.digest);
    let (s, body, _) = h.req("GET", &path, Some(&b.credential), None, &[]);
    assert_eq!(s, 403, "{body}");
    let (s, _, _) = h.req("GET", &path, None, None, &[]);
    assert_eq!(s, 401);
    let sbom = fixtures::blob_ref(&r.sbom).expect("sbom");
    let (s, _, _) = h.req(
        "GET",
        &format!("/api/v1/blobs/{}", sbom.digest),
        Some(&a.credential),
        None,
        &[],
    );
    assert_eq!(s, 403, "the SBOM is not part of the assignment");
    let full = std::fs::read(&r.bundle).expect("bundle");
    let url = format!("{}{path}", h.url);
    let mut resp = h
        .http
        .get(&url)
        .header("authorization", &format!("Bearer {}", a.credential))
        .header("range", "bytes=100-")
        .call()
        .expect("range");
    assert_eq!(resp.status().as_u16(), 206);
    let cr = resp
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(cr, format!("bytes 100-{}/{}", full.len() - 1, full.len()));
    let part = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .expect("body");
    assert_eq!(part, full[100..]);
    let (s, _, _) = h.req(
        "GET",
        &path,
        Some(&a.credential),
        None,
        &[("range", &format!("bytes={}-", full.len()))],
    );
    assert_eq!(s, 416);
    let (s, _, _) = h.req(
        "GET",
        "/api/v1/blobs/sha256:..%2F..%2Fetc",
        Some(&a.credential),
        None,
        &[],
    );
    assert_eq!(s, 400);

    // The device list shows what devices reported.
    let (s, t, _) = h.admin(
        "GET",
        &format!("/api/v1/admin/devices/{}", a.device_id),
        None,
    );
    assert_eq!(s, 200);
    let info: DeviceInfo = serde_json::from_str(&t).expect("device");
    assert_eq!(info.assigned.as_deref(), Some("app@1.0.0"));
    assert_eq!(info.inventory.expect("inventory").board, "rpi5");

    // Revoked devices are refused.
    let (s, _, _) = h.admin(
        "POST",
        &format!("/api/v1/admin/devices/{}/revoke", a.device_id),
        None,
    );
    assert_eq!(s, 200);
    let (s, t, _) = h.checkin(&a, None);
    assert_eq!(s, 403, "{t}");
    assert!(t.contains("revoked"));
    let (s, _, _) = h.req("GET", &path, Some(&a.credential), None, &[]);
    assert_eq!(s, 403);
}

#[test]
fn input_validation_and_limits() {
    let h = H::new();
    // Bad labels.
    let (s, t, _) = h.admin(
        "POST",
        "/api/v1/admin/enrollment-tokens",
        Some(serde_json::json!({"labels": {"bad key": "x"}})),
    );
    assert_eq!(s, 400, "{t}");
    // Unknown fields are rejected.
    let (s, _, _) = h.admin(
        "POST",
        "/api/v1/admin/enrollment-tokens",
        Some(serde_json::json!({"labelz": {}})),
    );
    assert_eq!(s, 422);
    // Oversized JSON bodies.
    let big = serde_json::json!({"labels": {}, "pad": "x".repeat(MAX_JSON_BODY + 10)});
    let (s, _, _) = h.admin("POST", "/api/v1/admin/enrollment-tokens", Some(big));
    assert_eq!(s, 413);
    // Oversized blob uploads (limit 8 MiB in this test).
    let body = vec![0u8; (8 << 20) + 1];
    let d = format!("sha256:{}", "1".repeat(64));
    let (s, _, _) = h.req(
        "PUT",
        &format!("/api/v1/admin/blobs/{d}"),
        Some(&h.srv.admin_token),
        Some(&body),
        &[("content-type", "application/octet-stream")],
    );
    assert_eq!(s, 413);
    // Labels and devices.
    let dev = h.enroll(&[]);
    let (s, t, _) = h.admin(
        "PATCH",
        &format!("/api/v1/admin/devices/{}/labels", dev.device_id),
        Some(serde_json::json!({"labels": {"fleet": "retail"}})),
    );
    assert_eq!(s, 200, "{t}");
    let info: DeviceInfo = serde_json::from_str(&t).expect("info");
    assert_eq!(info.labels.get("fleet").map(String::as_str), Some("retail"));
    let (s, _, _) = h.admin("GET", "/api/v1/admin/devices/dev-nope", None);
    assert_eq!(s, 404);
    let (s, _, _) = h.admin(
        "POST",
        "/api/v1/admin/deployments",
        Some(serde_json::json!({"app": "x", "version": "1", "selector": {}})),
    );
    assert_eq!(s, 404);
}

/// The suite runs once on SQLite and once on PostgreSQL (`scripts/with-postgres`): each run
/// really uses the backend it names.
#[test]
fn the_suite_runs_on_the_backend_it_names() {
    let h = H::new();
    let want = if edgecd_testkit::postgres::cluster().is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(h.srv.state.store.backend(), want);
}

/// Servers sharing a database must share the assignment key, or devices would refuse the
/// assignments of all but one: a second server with another key refuses to start.
#[test]
fn a_server_with_another_assignment_key_refuses_the_database() {
    let d = tempfile::tempdir().expect("tmp");
    let first = d.path().join("a");
    let mut c = Config::new(&first);
    c.database = edgecd_testkit::postgres::database_for(&first);
    c.listen = "127.0.0.1:0".parse().expect("addr");
    let shared = c.database.clone();
    let s1 = EmbeddedServer::start(c).expect("start");
    drop(s1);
    // The second data directory has a key of its own but the same database.
    let second = d.path().join("b");
    let mut c = Config::new(&second);
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.database = match &shared {
        Some(url) => Some(url.clone()),
        None => Some(format!("sqlite://{}", first.join("edgecd.db").display())),
    };
    let err = EmbeddedServer::start(c.clone()).err().expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("same keys/assignment.key"),
        "the error says what to do: {msg}"
    );
    // With the first server's key it starts, and shares its admin token.
    std::fs::create_dir_all(second.join("keys")).expect("mkdir");
    for f in ["assignment.key", "assignment.pub"] {
        std::fs::copy(first.join("keys").join(f), second.join("keys").join(f)).expect("copy");
    }
    std::fs::copy(first.join("admin-token"), second.join("admin-token")).expect("copy");
    let s2 = EmbeddedServer::start(c).expect("starts with the shared key");
    assert!(s2.admin_token.starts_with("eda"));
}

/// A database URL that names no known backend, or a PostgreSQL that does not answer, is a
/// clear error at start.
#[test]
fn unusable_database_urls_are_clear_errors() {
    let d = tempfile::tempdir().expect("tmp");
    let mut c = Config::new(d.path());
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.database = Some("mysql://root:hunter2@db/edgecd".into());
    let msg = EmbeddedServer::start(c.clone())
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains("unknown database"), "{msg}");
    assert!(!msg.contains("hunter2"), "no password in errors: {msg}");
    let port = edgecd_testkit::free_port();
    c.database = Some(format!("postgres://edgecd:hunter2@127.0.0.1:{port}/edgecd"));
    let msg = EmbeddedServer::start(c).err().expect("refused").to_string();
    assert!(msg.contains("cannot connect to PostgreSQL"), "{msg}");
    assert!(!msg.contains("hunter2"), "no password in errors: {msg}");
}

#[test]
fn restart_keeps_state_and_key() {
    let d = tempfile::tempdir().expect("tmp");
    let mk = || {
        let mut c = Config::new(d.path().join("data"));
        c.database = edgecd_testkit::postgres::database_for(&c.data_dir);
        c.listen = "127.0.0.1:0".parse().expect("addr");
        c
    };
    let s1 = EmbeddedServer::start(mk()).expect("start");
    let token = s1.admin_token.clone();
    let hint = s1.state.signing_key.verifying_key().hint();
    drop(s1);
    let s2 = EmbeddedServer::start(mk()).expect("restart");
    assert_eq!(s2.admin_token, token);
    assert_eq!(s2.state.signing_key.verifying_key().hint(), hint);
}

#[test]
fn blob_downloads_are_rate_limited_per_device() {
    let h = H::with(|c| c.blob_rate_kbps = Some(256));
    h.trust_ci();
    let r = fixtures::make_release(
        &h.dir.join("rel"),
        &h.ci,
        "app",
        "1.0.0",
        fixtures::rpi5(),
        fixtures::infer_pin(),
        200 * 1024,
    )
    .expect("release");
    let (s, t, _) = h.publish(&r);
    assert_eq!(s, 201, "{t}");
    let a = h.enroll(&[]);
    let (s, _, _) = h.admin(
        "POST",
        "/api/v1/admin/deployments",
        Some(serde_json::json!({"app": "app", "version": "1.0.0", "selector": {}})),
    );
    assert_eq!(s, 200);
    let bundle = fixtures::blob_ref(&r.bundle).expect("ref");
    let start = std::time::Instant::now();
    let (s, _, _) = h.req(
        "GET",
        &format!("/api/v1/blobs/{}", bundle.digest),
        Some(&a.credential),
        None,
        &[],
    );
    assert_eq!(s, 200);
    let secs = start.elapsed().as_secs_f64();
    let expected = bundle.size as f64 / (256.0 * 1024.0);
    assert!(
        secs >= expected * 0.9,
        "{} bytes took {secs:.2}s, the cap allows {expected:.2}s at the fastest",
        bundle.size
    );
}

impl H {
    fn release_of(
        &self,
        app: &str,
        version: &str,
        hw: edgecd_api::profile::HardwareProfile,
    ) -> ReleaseFiles {
        fixtures::make_release(
            &self.dir.join("rel"),
            &self.ci,
            app,
            version,
            hw,
            fixtures::infer_pin(),
            4096,
        )
        .expect("release")
    }

    fn deploy(&self, query: &str, app: &str, version: &str, selector: serde_json::Value) -> Resp {
        self.admin(
            "POST",
            &format!("/api/v1/admin/deployments{query}"),
            Some(serde_json::json!({"app": app, "version": version, "selector": selector})),
        )
    }

    fn assignment_of(&self, id: &str) -> Option<(String, i64)> {
        self.srv
            .block_on(self.srv.state.store.assignment(id))
            .expect("store")
            .map(|a| (format!("{}@{}", a.app, a.release_version), a.version))
    }

    /// The server's `Upload-Offset` for a blob, and whether it is stored.
    fn head_blob(&self, digest: &str) -> (u16, u64) {
        let (s, _, hs) = self.req(
            "HEAD",
            &format!("/api/v1/admin/blobs/{digest}"),
            Some(&self.srv.admin_token),
            None,
            &[],
        );
        let off = hs
            .iter()
            .find(|(k, _)| k == "upload-offset")
            .and_then(|(_, v)| v.parse().ok())
            .expect("upload-offset header");
        (s, off)
    }

    /// Waits (bounded) until the server kept `len` bytes of a broken-off upload of `digest`
    /// and wound the request up (its upload slot is free).
    fn wait_upload_ended(&self, digest: &str, len: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.srv.state.blobs.partial_len(digest) != len as u64
            || self.srv.state.blobs.begin(digest).is_none()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "upload of {digest} still running"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Sends a PUT of `digest` with a `Content-Length` of `declared` but only `body`, then
    /// closes: an upload broken off midway.
    fn broken_put(&self, digest: &str, declared: usize, body: &[u8]) {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(self.srv.addr).expect("connect");
        write!(
            c,
            "PUT /api/v1/admin/blobs/{digest} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}\r\nUpload-Length: {declared}\r\n\r\n",
            self.srv.admin_token
        )
        .expect("head");
        c.write_all(body).expect("body");
        c.flush().expect("flush");
        drop(c);
    }
}

fn inv_with(board: &str, ram_mb: u64) -> Inventory {
    Inventory {
        board: board.into(),
        ram_mb,
        ..inv()
    }
}

fn pseudo_random(len: usize) -> Vec<u8> {
    fixtures::model_bytes(7, len)
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Deploy assigns only devices that can run the release (the rollout engine's check),
/// lists the others with the reason, computes without assigning on a dry run, and refuses
/// (422, with the reason) when no device would get the release.
#[test]
fn deploy_skips_incompatible_devices_and_dry_runs() {
    let h = H::new();
    h.trust_ci();
    let (s, t, _) = h.publish(&h.release("1.0.0", &h.ci));
    assert_eq!(s, 201, "{t}");
    let a = h.enroll_inv(&[("fleet", "x")], inv());
    let b = h.enroll_inv(&[("fleet", "x"), ("only", "b")], inv_with("rpi4", 4096));

    let (s, t, _) = h.deploy(
        "?dryRun=true",
        "app",
        "1.0.0",
        serde_json::json!({"fleet": "x"}),
    );
    assert_eq!(s, 200, "{t}");
    let dry: DeployResponse = serde_json::from_str(&t).expect("deploy");
    assert!(dry.dry_run);
    assert_eq!(
        dry.assigned,
        vec![DeployedDevice {
            device_id: a.device_id.clone(),
            assignment_version: 1
        }]
    );
    assert_eq!(dry.skipped.len(), 1, "{t}");
    assert_eq!(dry.skipped[0].device_id, b.device_id);
    assert!(dry.skipped[0].reason.contains("board rpi4"), "{t}");
    assert_eq!(
        h.assignment_of(&a.device_id),
        None,
        "a dry run assigns nothing"
    );

    let (s, t, _) = h.deploy("", "app", "1.0.0", serde_json::json!({"fleet": "x"}));
    assert_eq!(s, 200, "{t}");
    let real: DeployResponse = serde_json::from_str(&t).expect("deploy");
    assert!(!real.dry_run);
    assert_eq!(real.assigned, dry.assigned);
    assert_eq!(real.skipped, dry.skipped);
    assert_eq!(h.assignment_of(&a.device_id), Some(("app@1.0.0".into(), 1)));
    assert_eq!(
        h.assignment_of(&b.device_id),
        None,
        "incompatible: not assigned"
    );

    // Every matching device incompatible, or none matching: 422 with the reason.
    let (s, t, _) = h.deploy("", "app", "1.0.0", serde_json::json!({"only": "b"}));
    assert_eq!(s, 422, "{t}");
    assert!(
        t.contains("compatibility") && t.contains("board rpi4"),
        "{t}"
    );
    let (s, t, _) = h.deploy(
        "?dryRun=true",
        "app",
        "1.0.0",
        serde_json::json!({"fleet": "nowhere"}),
    );
    assert_eq!(s, 422, "{t}");
    assert!(t.contains("no devices match selector fleet=nowhere"), "{t}");
    assert_eq!(h.assignment_of(&b.device_id), None);
}

/// A rollback (`scope=app`, what `edgecd rollback` sends) without a selector assigns the
/// version only to devices of that app: devices of other apps and unassigned ones keep
/// their assignment.
#[test]
fn rollback_touches_only_devices_of_the_app() {
    let h = H::new();
    h.trust_ci();
    for r in [
        h.release("1.0.0", &h.ci),
        h.release("2.0.0", &h.ci),
        h.release_of("other", "1.0.0", fixtures::rpi5()),
    ] {
        let (s, t, _) = h.publish(&r);
        assert_eq!(s, 201, "{t}");
    }
    let a = h.enroll(&[("app", "one")]);
    let b = h.enroll(&[("app", "two")]);
    let idle = h.enroll(&[]);
    for (sel, app, v) in [
        ("one", "app", "1.0.0"),
        ("one", "app", "2.0.0"),
        ("two", "other", "1.0.0"),
    ] {
        let (s, t, _) = h.deploy("", app, v, serde_json::json!({"app": sel}));
        assert_eq!(s, 200, "{t}");
    }
    let before_b = h.assignment_of(&b.device_id);
    assert_eq!(before_b, Some(("other@1.0.0".into(), 1)));

    let (s, t, _) = h.deploy("?scope=app", "app", "1.0.0", serde_json::json!({}));
    assert_eq!(s, 200, "{t}");
    let r: DeployResponse = serde_json::from_str(&t).expect("deploy");
    assert_eq!(
        r.assigned,
        vec![DeployedDevice {
            device_id: a.device_id.clone(),
            assignment_version: 3
        }]
    );
    assert_eq!(h.assignment_of(&a.device_id), Some(("app@1.0.0".into(), 3)));
    assert_eq!(
        h.assignment_of(&b.device_id),
        before_b,
        "another app's device untouched"
    );
    assert_eq!(
        h.assignment_of(&idle.device_id),
        None,
        "an unassigned device untouched"
    );
    // No device of an app: nothing to roll back.
    let (s, t, _) = h.deploy(
        "?scope=app",
        "other",
        "1.0.0",
        serde_json::json!({"app": "one"}),
    );
    assert_eq!(s, 422, "{t}");
    assert!(t.contains("no devices of other match"), "{t}");
}

/// A rollout whose cohort would be empty — no device matches its selector, or none that
/// does can run the release — is refused with the reason instead of "completing".
#[test]
fn rollout_with_an_empty_cohort_is_refused() {
    let h = H::new();
    h.trust_ci();
    let jetson = edgecd_api::profile::HardwareProfile {
        board: "jetson-orin".into(),
        accelerator: None,
        min_ram_mb: None,
    };
    for r in [
        h.release("1.0.0", &h.ci),
        h.release_of("app", "2.0.0", jetson),
    ] {
        let (s, t, _) = h.publish(&r);
        assert_eq!(s, 201, "{t}");
    }
    h.enroll(&[("site", "a")]);
    let start = |release: &str, site: &str| {
        h.admin(
            "POST",
            "/api/v1/admin/rollouts",
            Some(serde_json::json!({"spec": {
                "release": release,
                "selector": {"site": site},
                "steps": [{"canary": {"devices": 1}}],
                "gates": [{"metric": "error_rate", "max": 0.5}],
            }})),
        )
    };
    let (s, t, _) = start("app@1.0.0", "nowhere");
    assert_eq!(s, 422, "{t}");
    assert!(t.contains("no devices match selector site=nowhere"), "{t}");
    let (s, t, _) = start("app@2.0.0", "a");
    assert_eq!(s, 422, "{t}");
    assert!(
        t.contains("compatibility") && t.contains("jetson-orin"),
        "{t}"
    );
    let (s, t, _) = h.admin("GET", "/api/v1/admin/rollouts", None);
    assert_eq!((s, t.as_str()), (200, "[]"), "nothing was started");
    // With a device to go to, it starts.
    let (s, t, _) = start("app@1.0.0", "a");
    assert_eq!(s, 200, "{t}");
}

/// A PUT of a blob the server already has is answered only after its body was read: the
/// client sees the 200 instead of dying with a broken pipe / connection reset.
#[test]
fn blob_put_reads_the_body_before_answering() {
    use std::io::{Read, Write};
    let h = H::new();
    let bytes = pseudo_random(6 << 20);
    let digest = sha(&bytes);
    let put = |c: &mut std::net::TcpStream| -> std::io::Result<String> {
        write!(
            c,
            "PUT /api/v1/admin/blobs/{digest} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            h.srv.admin_token,
            bytes.len()
        )?;
        for chunk in bytes.chunks(64 << 10) {
            c.write_all(chunk)?;
        }
        c.flush()?;
        let mut resp = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the head and the JSON body (the server may keep the connection open).
        while !String::from_utf8_lossy(&resp).contains("\"size\"") {
            let n = c.read(&mut buf)?;
            if n == 0 {
                break;
            }
            resp.extend_from_slice(&buf[..n]);
        }
        Ok(String::from_utf8_lossy(&resp).into_owned())
    };
    let connect = || {
        let c = std::net::TcpStream::connect(h.srv.addr).expect("connect");
        c.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .expect("timeout");
        c
    };
    let first = put(&mut connect()).expect("first upload");
    assert!(first.starts_with("HTTP/1.1 201"), "{first}");
    let second = put(&mut connect()).expect("a re-upload of a stored blob must not break off");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}

/// An upload broken off midway keeps what arrived: HEAD says how much, a PUT with
/// `Upload-Offset` sends the rest, and the blob is stored only once whole and matching its
/// digest. A wrong offset is refused with the right one.
#[test]
fn interrupted_blob_upload_resumes() {
    let h = H::new();
    let bytes = pseudo_random(3 << 20);
    let digest = sha(&bytes);
    let half = bytes.len() / 2;
    assert_eq!(h.head_blob(&digest), (404, 0));
    h.broken_put(&digest, bytes.len(), &bytes[..half]);
    h.wait_upload_ended(&digest, half);
    assert_eq!(h.head_blob(&digest), (404, half as u64));
    assert_eq!(
        h.srv.state.blobs.size(&digest),
        None,
        "not stored while incomplete"
    );
    let len = bytes.len().to_string();
    let resume = |offset: usize| {
        h.req(
            "PUT",
            &format!("/api/v1/admin/blobs/{digest}"),
            Some(&h.srv.admin_token),
            Some(&bytes[offset..]),
            &[
                ("content-type", "application/octet-stream"),
                ("upload-offset", &offset.to_string()),
                ("upload-length", &len),
            ],
        )
    };
    let (s, t, hs) = resume(half - 1);
    assert_eq!(s, 409, "{t}");
    assert!(
        t.contains(&format!("resume with Upload-Offset: {half}")),
        "{t}"
    );
    assert!(
        hs.iter()
            .any(|(k, v)| k == "upload-offset" && *v == half.to_string())
    );
    let (s, t, _) = resume(half);
    assert_eq!(s, 201, "{t}");
    let stored: BlobRef = serde_json::from_str(&t).expect("blob ref");
    assert_eq!(
        stored,
        BlobRef {
            digest: digest.clone(),
            size: bytes.len() as u64
        }
    );
    assert_eq!(
        std::fs::read(h.srv.state.blobs.path(&digest)).expect("stored"),
        bytes
    );
    assert_eq!(h.head_blob(&digest), (200, bytes.len() as u64));
}

/// Blobs no release refers to are removed once older than the grace period (so are stale
/// partial uploads); blobs of published releases never are.
#[test]
fn unreferenced_blobs_are_garbage_collected() {
    let h = H::new();
    h.trust_ci();
    let r = h.release("1.0.0", &h.ci);
    let (s, t, _) = h.publish(&r);
    assert_eq!(s, 201, "{t}");
    let orphan_path = h.dir.join("orphan.bin");
    std::fs::write(&orphan_path, pseudo_random(10_000)).expect("write");
    let orphan = h.upload(&orphan_path);
    let partial = pseudo_random(20_000);
    let partial_digest = sha(&partial);
    h.broken_put(&partial_digest, partial.len(), &partial[..5_000]);
    h.wait_upload_ended(&partial_digest, 5_000);
    assert_eq!(h.head_blob(&partial_digest), (404, 5_000));
    // Within the grace period: nothing goes.
    let (s, t, _) = h.admin("POST", "/api/v1/admin/blobs/gc?graceSecs=3600", None);
    assert_eq!(s, 200, "{t}");
    let kept: serde_json::Value = serde_json::from_str(&t).expect("json");
    assert_eq!(kept["blobs"], serde_json::json!([]), "{t}");
    assert!(h.srv.state.blobs.size(&orphan.digest).is_some());
    // Past it: the orphan and the partial upload go, the release's blobs stay.
    let (s, t, _) = h.admin("POST", "/api/v1/admin/blobs/gc?graceSecs=0", None);
    assert_eq!(s, 200, "{t}");
    let swept: serde_json::Value = serde_json::from_str(&t).expect("json");
    assert_eq!(swept["blobs"], serde_json::json!([orphan.digest]), "{t}");
    assert_eq!(
        swept["partialUploads"],
        serde_json::json!([partial_digest]),
        "{t}"
    );
    assert_eq!(h.srv.state.blobs.size(&orphan.digest), None);
    assert_eq!(h.head_blob(&partial_digest), (404, 0));
    for (b, _) in r.blobs().expect("blobs") {
        assert_eq!(
            h.srv.state.blobs.size(&b.digest),
            Some(b.size),
            "release blob kept"
        );
    }
    // The release still publishes (idempotently) and deploys.
    let (s, t, _) = h.publish(&r);
    assert_eq!(s, 200, "{t}");
}

/// The pre-flight check refuses a release signed by an untrusted key, and one whose
/// version is taken by another release, from the small files alone.
#[test]
fn release_preflight_check_needs_only_the_small_files() {
    let h = H::new();
    h.trust_ci();
    let check = |r: &ReleaseFiles| {
        for p in [&r.manifest, &r.manifest_sig, &r.bundle_sig] {
            h.upload(p);
        }
        let req = r.publish_request().expect("req");
        h.admin(
            "POST",
            "/api/v1/admin/releases/check",
            Some(serde_json::to_value(&req).expect("json")),
        )
    };
    let rogue = SigningKey::generate();
    let bad = h.release("6.6.6", &rogue);
    let (s, t, _) = check(&bad);
    assert_eq!(s, 422, "{t}");
    assert!(t.contains("does not trust"), "{t}");
    assert_eq!(
        h.srv
            .state
            .blobs
            .size(&fixtures::blob_ref(&bad.bundle).expect("ref").digest),
        None
    );
    let good = h.release("1.0.0", &h.ci);
    let (s, t, _) = check(&good);
    assert_eq!(s, 200, "{t}");
    assert!(t.contains("\"alreadyPublished\":false"), "{t}");
    let (s, t, _) = h.publish(&good);
    assert_eq!(s, 201, "{t}");
    let (s, t, _) = check(&good);
    assert_eq!(s, 200, "{t}");
    assert!(t.contains("\"alreadyPublished\":true"), "{t}");
    // Same version, different content (another model): refused before the bundle is sent.
    let again = fixtures::make_release(
        &h.dir.join("rel-again"),
        &h.ci,
        "app",
        "1.0.0",
        fixtures::rpi5(),
        fixtures::infer_pin(),
        5000,
    )
    .expect("release");
    let (s, t, _) = check(&again);
    assert_eq!(s, 409, "{t}");
    assert!(
        t.contains("already published with different content"),
        "{t}"
    );
}

/// The server refuses a private key sent as a release key to trust (any private-key PEM
/// block, also after a public one), saying to pass the `.pub` file; nothing is stored.
#[test]
fn trusting_a_private_key_is_refused() {
    let h = H::new();
    let key = SigningKey::generate();
    let public = key.verifying_key().to_spki_pem();
    for pem in [
        key.to_pkcs8_pem(),
        format!("{public}{}", key.to_pkcs8_pem()),
        key.to_cosign_encrypted_pem(b"pw").expect("cosign"),
    ] {
        let (s, t, _) = h.admin(
            "POST",
            "/api/v1/admin/keys",
            Some(serde_json::json!({"publicKeyPem": pem})),
        );
        assert_eq!(s, 400, "{t}");
        assert!(t.contains("private key") && t.contains(".pub"), "{t}");
        assert!(
            !t.contains("BEGIN PRIVATE") && !t.contains(&pem[40..80]),
            "the key is not echoed: {t}"
        );
    }
    let (s, t, _) = h.admin("GET", "/api/v1/admin/keys", None);
    assert_eq!((s, t.as_str()), (200, "[]"));
}

/// Only samples taken inside an analysis step's window count for it: a check-in's metric
/// delta whose period began before the step (the device's previous check-in was earlier)
/// is left out, so a step without fresh traffic holds instead of promoting on samples from
/// before it; fresh samples then decide.
#[test]
fn analysis_counts_only_samples_taken_inside_its_window() {
    let h = H::with(|c| c.controller_tick_ms = 50);
    h.trust_ci();
    for v in ["1.0.0", "2.0.0"] {
        let (s, t, _) = h.publish(&h.release(v, &h.ci));
        assert_eq!(s, 201, "{t}");
    }
    let d = h.enroll(&[("fleet", "x")]);
    let spec = serde_json::json!({"spec": {
        "release": "app@2.0.0",
        "steps": [
            {"canary": {"devices": 1}},
            {"pause": {"duration": "2s"}},
            {"analyze": {"duration": "2s", "interval": "1s"}},
            {"canary": {"percent": 100}}
        ],
        "gates": [{"metric": "error_rate", "max": 0.03}],
        "min_samples": 100
    }});
    let (s, t, _) = h.admin("POST", "/api/v1/admin/rollouts", Some(spec));
    assert_eq!(s, 200, "{t}");
    let v: serde_json::Value = serde_json::from_str(&t).expect("status");
    let id = v["rollout"]["id"].as_str().expect("id").to_string();
    let state = || -> serde_json::Value {
        let (s, t, _) = h.admin("GET", &format!("/api/v1/admin/rollouts/{id}"), None);
        assert_eq!(s, 200, "{t}");
        serde_json::from_str::<serde_json::Value>(&t).expect("status")["rollout"]["state"].clone()
    };
    let wait = |what: &str, done: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let st = state();
            if done(&st) {
                return st;
            }
            assert!(
                std::time::Instant::now() < until,
                "waiting for {what}: {st}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let report = |requests: u64| {
        let metrics = (requests > 0).then(|| {
            let mut m = edgecd_api::metrics::MetricsAggregate::default();
            for _ in 0..requests {
                m.record(20.0, false, Some(0.9));
            }
            m
        });
        let req = CheckinRequest {
            app_metrics: Default::default(),
            inventory: inv(),
            status: DeviceStatus {
                apps: Default::default(),
                phase: Phase::Idle,
                running: Some(RunningRelease {
                    app: "app".into(),
                    version: "2.0.0".into(),
                    bundle_digest: format!("sha256:{}", "0".repeat(64)),
                    slot: "a".into(),
                    image: None,
                }),
                assignment_version: 1,
                last_outcome: None,
                download: None,
                stale_since: None,
                assignment_proof: None,
            },
            labels: BTreeMap::new(),
            metrics,
            protocol: edgecd_api::protocol::PROTOCOL_VERSION.into(),
        };
        let (s, t, _) = h.req(
            "POST",
            &format!("/api/v1/devices/{}/checkin", d.device_id),
            Some(&d.credential),
            Some(&serde_json::to_vec(&req).expect("json")),
            &[],
        );
        assert!(s == 200 || s == 304, "{s} {t}");
    };
    wait("the canary assignment", &|st| {
        st["cohort"].as_array().is_some_and(|c| c.len() == 1)
    });
    // The device runs the release: the canary step is done, the pause begins.
    report(0);
    wait("the analysis step", &|st| st["step"] == 2);
    // A thousand good requests, but counted since the device's previous check-in, which was
    // before the analysis began: none of them counts for it.
    report(1000);
    let st = wait("the window to end without a decision", &|st| {
        st["reason"]
            .as_str()
            .is_some_and(|r| r.contains("too little traffic"))
    });
    assert_eq!(
        st["step"], 2,
        "never promoted on samples from before the step: {st}"
    );
    let gates = st["lastGates"].as_array().expect("gates");
    assert_eq!(gates[0]["samples"], 0, "{st}");
    // Taken inside the window: they count, and decide it.
    report(1000);
    let st = wait("the analysis to pass", &|st| {
        st["step"].as_u64().is_some_and(|s| s >= 3)
    });
    assert_ne!(st["phase"], "aborted", "{st}");
}

/// The server names the runtime-image mirror of a device's site at check-in, and a device
/// learns a new one at its next check-in (the mirror is part of the ETag).
#[test]
fn checkins_name_the_image_mirror_of_the_devices_site() {
    let h = H::with(|c| {
        c.image_mirrors
            .insert("berlin".into(), "registry.berlin:5000".into());
    });
    h.trust_ci();
    let r = h.release("1.0.0", &h.ci);
    let (s, t, _) = h.publish(&r);
    assert_eq!(s, 201, "{t}");
    let berlin = h.enroll(&[("site", "berlin")]);
    let paris = h.enroll(&[("site", "paris")]);
    let (s, _, _) = h.admin(
        "POST",
        "/api/v1/admin/deployments",
        Some(serde_json::json!({"app": "app", "version": "1.0.0", "selector": {}})),
    );
    assert_eq!(s, 200);
    let answer = |d: &EnrollResponse, etag: Option<&str>| {
        let (s, body, headers) = h.checkin(d, etag);
        let tag = headers
            .iter()
            .find(|(k, _)| k == "etag")
            .map(|(_, v)| v.clone());
        let r: Option<CheckinResponse> = serde_json::from_str(&body).ok();
        (s, r, tag)
    };
    let (s, r, tag) = answer(&berlin, None);
    assert_eq!(s, 200);
    let r = r.expect("answer");
    assert_eq!(r.image_mirror.as_deref(), Some("registry.berlin:5000"));
    assert!(r.assignment.is_some());
    // The tag of an assignment without the mirror no longer matches: a device that checked
    // in before the mirror was configured gets the full answer once.
    let (s, _, _) = answer(&berlin, Some("\"a1\""));
    assert_eq!(s, 200);
    let (s, _, _) = answer(&berlin, tag.as_deref());
    assert_eq!(s, 304);
    let (s, r, _) = answer(&paris, None);
    assert_eq!(s, 200);
    assert_eq!(r.expect("answer").image_mirror, None, "no mirror for paris");
}

/// A notifier that records what the controller sends (injected through `Config::notifier`).
#[derive(Debug, Default)]
struct RecordingNotifier {
    sent: std::sync::Mutex<Vec<edgecd_server::notify::Notification>>,
}

impl edgecd_server::notify::Notify for RecordingNotifier {
    fn notification(
        &self,
        channel: &str,
        r: &edgecd_rollout::engine::Rollout,
        decision: &edgecd_rollout::engine::Decision,
        event: &edgecd_rollout::engine::RolloutEvent,
        at: i64,
    ) -> edgecd_server::notify::Notification {
        let link = format!("http://console.test/rollouts/{}", r.id);
        edgecd_server::notify::Notification::new(channel, r, decision, event, None, link, at)
    }
    fn send(&self, q: edgecd_server::notify::Queued) {
        self.sent.lock().expect("lock").push(q.notification);
    }
    fn check_channels(&self, names: &[String]) -> Result<(), String> {
        match names.iter().find(|n| *n != "ops") {
            Some(n) => Err(format!("unknown channel {n}")),
            None => Ok(()),
        }
    }
    fn channel_names(&self) -> Vec<String> {
        vec!["ops".into()]
    }
    fn counts(&self) -> Vec<edgecd_server::notify::ChannelCounts> {
        vec![]
    }
    fn public_url(&self) -> &str {
        "http://console.test"
    }
}

/// The controller reads time from the injected clock: a one-hour pause ends when the fake
/// clock says so, not after an hour — and not before, however many passes run meanwhile.
/// Its notifications go to the injected notifier, once each, stamped by that clock.
#[test]
fn the_controller_runs_on_the_injected_clock() {
    use edgecd_server::controller::FakeClock;
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as i64;
    let clock = std::sync::Arc::new(FakeClock::at(start_ms));
    let c = clock.clone();
    let notifier = std::sync::Arc::new(RecordingNotifier::default());
    let n = notifier.clone();
    let h = H::with(move |cfg| {
        cfg.clock = c;
        cfg.controller_tick_ms = 20;
        cfg.notifier = Some(n);
    });
    h.trust_ci();
    for v in ["1.0.0", "2.0.0"] {
        let (s, t, _) = h.publish(&h.release(v, &h.ci));
        assert_eq!(s, 201, "{t}");
    }
    let devices = [h.enroll(&[("fleet", "x")]), h.enroll(&[("fleet", "x")])];
    let (s, t, _) = h.admin(
        "POST",
        "/api/v1/admin/rollouts",
        Some(serde_json::json!({"spec": {
            "release": "app@2.0.0",
            "steps": [
                {"canary": {"devices": 1}},
                {"pause": {"duration": "1h"}},
                {"canary": {"percent": 100}}
            ],
            "notify": ["ops"],
        }})),
    );
    assert_eq!(s, 200, "{t}");
    let v: serde_json::Value = serde_json::from_str(&t).expect("status");
    let id = v["rollout"]["id"].as_str().expect("id").to_string();
    let rollout = || -> serde_json::Value {
        let (s, t, _) = h.admin("GET", &format!("/api/v1/admin/rollouts/{id}"), None);
        assert_eq!(s, 200, "{t}");
        serde_json::from_str::<serde_json::Value>(&t).expect("status")["rollout"].clone()
    };
    // Each device reports that it runs what it is assigned (as an agent would).
    let report = || {
        for d in &devices {
            let (_, body, _) = h.checkin(d, None);
            let Some(a) = serde_json::from_str::<CheckinResponse>(&body)
                .ok()
                .and_then(|r| r.assignment)
            else {
                continue;
            };
            let a: Assignment = serde_json::from_str(&a.payload).expect("assignment");
            let req = CheckinRequest {
                app_metrics: Default::default(),
                inventory: inv(),
                status: DeviceStatus {
                    apps: Default::default(),
                    phase: Phase::Committed,
                    running: Some(RunningRelease {
                        app: a.release.app.clone(),
                        version: a.release.version.clone(),
                        bundle_digest: a.release.bundle_digest.clone(),
                        slot: "a".into(),
                        image: None,
                    }),
                    assignment_version: a.version,
                    last_outcome: None,
                    download: None,
                    stale_since: None,
                    assignment_proof: None,
                },
                labels: BTreeMap::new(),
                metrics: None,
                protocol: edgecd_api::protocol::PROTOCOL_VERSION.into(),
            };
            let (s, t, _) = h.req(
                "POST",
                &format!("/api/v1/devices/{}/checkin", d.device_id),
                Some(&d.credential),
                Some(&serde_json::to_vec(&req).expect("json")),
                &[],
            );
            assert!(s == 200 || s == 304, "{s} {t}");
        }
    };
    let until = |what: &str, done: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            report();
            let r = rollout();
            if done(&r) {
                return r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "waiting for {what}: {r}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    until("the pause", &|r| r["state"]["step"] == 1);
    // Many passes (20 ms ticks) over a second of real time: the hour-long pause holds.
    for _ in 0..20 {
        report();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = rollout();
    assert_eq!(
        (r["state"]["step"].as_u64(), r["state"]["phase"].as_str()),
        (Some(1), Some("progressing")),
        "{r}"
    );
    // An hour later by the injected clock, the controller goes on and completes.
    clock.advance(std::time::Duration::from_secs(3601));
    let r = until("completion", &|r| r["state"]["phase"] == "completed");
    assert_eq!(
        r["state"]["cohort"].as_array().map(Vec::len),
        Some(2),
        "{r}"
    );
    let sent = notifier.sent.lock().expect("lock").clone();
    let events: Vec<&str> = sent
        .iter()
        .map(|n| edgecd_server::notify::event_name(&n.event))
        .collect();
    assert_eq!(events.first(), Some(&"started"), "{events:?}");
    assert_eq!(events.last(), Some(&"completed"), "{events:?}");
    assert_eq!(
        events.iter().filter(|e| **e == "completed").count(),
        1,
        "completion announced once: {events:?}"
    );
    let start_s = start_ms / 1000;
    assert!(sent[0].at < start_s + 60, "started at {}", sent[0].at);
    let done = sent.last().expect("completed");
    assert!(
        done.at >= start_s + 3600,
        "completion stamped by the fake clock, an hour on: {} vs start {start_s}",
        done.at
    );
    assert!(
        sent.iter()
            .all(|n| n.channel == "ops" && n.rollout.id == id)
    );
}

// ---- fleets (desired state) ----

/// Checks in as an agent that installed what it is assigned: reports it running.
fn run_assigned(h: &H, d: &EnrollResponse) {
    let (_, body, _) = h.checkin(d, None);
    let Some(a) = serde_json::from_str::<CheckinResponse>(&body)
        .ok()
        .and_then(|r| r.assignment)
    else {
        return;
    };
    let a: Assignment = serde_json::from_str(&a.payload).expect("assignment");
    let req = CheckinRequest {
        app_metrics: Default::default(),
        inventory: inv(),
        status: DeviceStatus {
            apps: Default::default(),
            phase: Phase::Committed,
            running: Some(RunningRelease {
                app: a.release.app.clone(),
                version: a.release.version.clone(),
                bundle_digest: a.release.bundle_digest.clone(),
                slot: "a".into(),
                image: None,
            }),
            assignment_version: a.version,
            last_outcome: None,
            download: None,
            stale_since: None,
            assignment_proof: None,
        },
        labels: BTreeMap::new(),
        metrics: None,
        protocol: edgecd_api::protocol::PROTOCOL_VERSION.into(),
    };
    let (s, t, _) = h.req(
        "POST",
        &format!("/api/v1/devices/{}/checkin", d.device_id),
        Some(&d.credential),
        Some(&serde_json::to_vec(&req).expect("json")),
        &[],
    );
    assert!(s == 200 || s == 304, "{s} {t}");
}

/// Waits (bounded, 30 s) until `done` holds, polling.
fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let v = probe();
        if done(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waiting for {what}: {v:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn fleet_status(h: &H, name: &str) -> serde_json::Value {
    let (s, t, _) = h.admin("GET", &format!("/api/v1/admin/fleets/{name}"), None);
    assert_eq!(s, 200, "{t}");
    serde_json::from_str(&t).expect("status")
}

/// `(state, why)` of `device` in a fleet's status.
fn standing(st: &serde_json::Value, device: &str) -> Option<(String, String)> {
    st["devices"]
        .as_array()?
        .iter()
        .find(|e| e["device"] == device)
        .map(|e| {
            (
                e["state"].as_str().unwrap_or_default().to_string(),
                e["why"].as_str().unwrap_or_default().to_string(),
            )
        })
}

fn relabel(h: &H, id: &str, labels: serde_json::Value) {
    let (s, t, _) = h.admin(
        "PATCH",
        &format!("/api/v1/admin/devices/{id}/labels"),
        Some(serde_json::json!({ "labels": labels })),
    );
    assert_eq!(s, 200, "{t}");
}

/// A fleet is desired state the controller keeps: devices that enroll after it is applied,
/// and devices relabelled into it, are assigned its release with no further command;
/// devices that stop matching are listed as left (keep: keeps the release, remove: no longer
/// managed) and get no new assignment; an incompatible device is listed with the reason.
#[test]
fn fleet_converges_devices_that_enroll_or_are_relabelled_later() {
    let h = H::with(|c| c.controller_tick_ms = 50);
    h.trust_ci();
    let (s, t, _) = h.publish(&h.release("1.0.0", &h.ci));
    assert_eq!(s, 201, "{t}");
    let spec = |on_unmatch: &str| serde_json::json!({"name": "cams", "selector": {"site": "lab"}, "apps": {"app": {"release": "1.0.0"}}, "on_unmatch": on_unmatch});
    let (s, t, _) = h.admin("POST", "/api/v1/admin/fleets", Some(spec("keep")));
    assert_eq!(s, 200, "{t}");

    // Enrolled after the fleet was applied: assigned with no command.
    let a = h.enroll(&[("site", "lab")]);
    let other = h.enroll(&[("site", "home")]);
    let old = h.enroll_inv(&[("site", "lab")], inv_with("rpi4", 4096));
    eventually(
        "a assigned by the fleet",
        || h.assignment_of(&a.device_id),
        |x| x.as_ref().is_some_and(|(r, _)| r == "app@1.0.0"),
    );
    run_assigned(&h, &a);
    let st = eventually(
        "a converged",
        || fleet_status(&h, "cams"),
        |st| standing(st, &a.device_id).is_some_and(|(s, _)| s == "converged"),
    );
    let (s, why) = standing(&st, &old.device_id).expect("incompatible device listed");
    assert_eq!(s, "blocked");
    assert!(
        why.contains("incompatible with app@1.0.0") && why.contains("board rpi4"),
        "{why}"
    );
    assert_eq!(h.assignment_of(&old.device_id), None);
    assert_eq!(standing(&st, &other.device_id), None, "not in the fleet");
    assert_eq!(h.assignment_of(&other.device_id), None);

    // Relabelled into the fleet: converges.
    relabel(&h, &other.device_id, serde_json::json!({"site": "lab"}));
    eventually(
        "relabelled device assigned",
        || h.assignment_of(&other.device_id),
        |x| x.as_ref().is_some_and(|(r, _)| r == "app@1.0.0"),
    );
    run_assigned(&h, &other);

    // Relabelled out (keep): listed as left, keeps its release, nothing new assigned.
    let before = h.assignment_of(&a.device_id);
    relabel(&h, &a.device_id, serde_json::json!({"site": "home"}));
    let st = eventually(
        "a left",
        || fleet_status(&h, "cams"),
        |st| standing(st, &a.device_id).is_some_and(|(s, _)| s == "left"),
    );
    let (_, why) = standing(&st, &a.device_id).expect("a");
    assert!(why.contains("on_unmatch keep: keeps app@1.0.0"), "{why}");
    // Remove: the fleet stops managing the device; it keeps what it runs.
    let (s, t, _) = h.admin("POST", "/api/v1/admin/fleets", Some(spec("remove")));
    assert_eq!(s, 200, "{t}");
    relabel(&h, &other.device_id, serde_json::json!({"site": "home"}));
    let st = eventually(
        "other left",
        || fleet_status(&h, "cams"),
        |st| standing(st, &other.device_id).is_some_and(|(s, _)| s == "left"),
    );
    let (_, why) = standing(&st, &other.device_id).expect("other");
    assert!(
        why.contains("on_unmatch remove: no longer managed"),
        "{why}"
    );
    // Passes go on; neither device that left is assigned again.
    let passes = h
        .srv
        .state
        .controller
        .passes_ok
        .load(std::sync::atomic::Ordering::SeqCst);
    eventually(
        "more passes",
        || {
            h.srv
                .state
                .controller
                .passes_ok
                .load(std::sync::atomic::Ordering::SeqCst)
        },
        |n| *n > passes + 3,
    );
    assert_eq!(h.assignment_of(&a.device_id), before);
    assert_eq!(
        h.assignment_of(&other.device_id).map(|x| x.0).as_deref(),
        Some("app@1.0.0")
    );
    // Deleted: the fleet is gone, devices keep their assignments.
    let (s, t, _) = h.admin("DELETE", "/api/v1/admin/fleets/cams", None);
    assert_eq!(s, 200, "{t}");
    let (s, _, _) = h.admin("GET", "/api/v1/admin/fleets/cams", None);
    assert_eq!(s, 404);
    assert_eq!(h.assignment_of(&a.device_id), before);
}

/// A bad fleet changes nothing (clear 4xx errors); a diff shows per device what would change
/// and changes nothing either.
#[test]
fn fleet_bad_spec_changes_nothing_and_diff_shows_the_change_first() {
    let h = H::with(|c| c.controller_tick_ms = 50);
    h.trust_ci();
    for v in ["1.0.0", "2.0.0"] {
        let (s, t, _) = h.publish(&h.release(v, &h.ci));
        assert_eq!(s, 201, "{t}");
    }
    let a = h.enroll(&[("site", "lab")]);
    for (body, want) in [
        (
            serde_json::json!({"name": "cams", "apps": {"app": {"release": "9.9.9"}}}),
            "app@9.9.9 is not published",
        ),
        (
            serde_json::json!({"name": "Cams!", "apps": {"app": {"release": "1.0.0"}}}),
            "fleet name",
        ),
        (
            serde_json::json!({"name": "cams", "apps": {}}),
            "apps is empty",
        ),
        (
            serde_json::json!({"name": "cams", "apps": {"app": {"release": "1.0.0", "rollout": {"steps": []}}}}),
            "steps is empty",
        ),
    ] {
        let (s, t, _) = h.admin("POST", "/api/v1/admin/fleets", Some(body));
        assert_eq!(s, 422, "{t}");
        assert!(t.contains(want), "{t}");
    }
    let (s, t, _) = h.admin("POST", "/api/v1/admin/fleets", Some(serde_json::json!({"name": "cams", "apps": {"app": {"release": "1.0.0"}}, "onUnmatch": "keep"})));
    assert!((400..500).contains(&s), "unknown field: {s} {t}");
    let (s, t, _) = h.admin("GET", "/api/v1/admin/fleets", None);
    assert_eq!((s, t.as_str()), (200, "[]"));

    let spec = |v: &str| serde_json::json!({"name": "cams", "selector": {"site": "lab"}, "apps": {"app": {"release": v}}});
    let (s, t, _) = h.admin(
        "POST",
        "/api/v1/admin/fleets?dryRun=true",
        Some(spec("1.0.0")),
    );
    assert_eq!(s, 200, "{t}");
    let d: serde_json::Value = serde_json::from_str(&t).expect("diff");
    assert_eq!(d["dryRun"], true);
    assert_eq!(d["devices"][0]["device"], a.device_id.as_str(), "{d}");
    assert_eq!(d["devices"][0]["change"], "nothing → app@1.0.0", "{d}");
    assert!(
        d["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("creates fleet cams")),
        "{d}"
    );
    let (_, t, _) = h.admin("GET", "/api/v1/admin/fleets", None);
    assert_eq!(t, "[]", "a diff stores nothing");

    let (s, t, _) = h.admin("POST", "/api/v1/admin/fleets", Some(spec("1.0.0")));
    assert_eq!(s, 200, "{t}");
    eventually(
        "assigned",
        || h.assignment_of(&a.device_id),
        |x| x.as_ref().is_some_and(|(r, _)| r == "app@1.0.0"),
    );
    let (s, t, _) = h.admin(
        "POST",
        "/api/v1/admin/fleets?dryRun=true",
        Some(spec("2.0.0")),
    );
    assert_eq!(s, 200, "{t}");
    let d: serde_json::Value = serde_json::from_str(&t).expect("diff");
    assert_eq!(d["devices"][0]["change"], "app@1.0.0 → app@2.0.0", "{d}");
    let passes = h
        .srv
        .state
        .controller
        .passes_ok
        .load(std::sync::atomic::Ordering::SeqCst);
    eventually(
        "more passes",
        || {
            h.srv
                .state
                .controller
                .passes_ok
                .load(std::sync::atomic::Ordering::SeqCst)
        },
        |n| *n > passes + 3,
    );
    assert_eq!(
        h.assignment_of(&a.device_id).map(|x| x.0).as_deref(),
        Some("app@1.0.0"),
        "the diff changed nothing"
    );
    assert_eq!(fleet_status(&h, "cams")["apps"][0]["placed"], "app@1.0.0");
}

/// A new release placed with a rollout policy starts a rollout over the fleet's devices; a
/// device that joins meanwhile gets the baseline, and everything moves to the release when
/// the rollout completes (driven by the fake clock). `deploy` writes desired state too.
#[test]
fn fleet_with_a_rollout_policy_starts_a_rollout_and_holds_joiners_at_the_baseline() {
    use edgecd_server::controller::FakeClock;
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as i64;
    let clock = std::sync::Arc::new(FakeClock::at(start_ms));
    let c = clock.clone();
    let h = H::with(move |cfg| {
        cfg.clock = c;
        cfg.controller_tick_ms = 50;
    });
    h.trust_ci();
    for v in ["1.0.0", "2.0.0"] {
        let (s, t, _) = h.publish(&h.release(v, &h.ci));
        assert_eq!(s, 201, "{t}");
    }
    let mut devs = vec![h.enroll(&[("site", "lab")]), h.enroll(&[("site", "lab")])];
    let spec = |v: &str, policy: bool| {
        let mut app = serde_json::json!({"release": v});
        if policy {
            app["rollout"] = serde_json::json!({"steps": [
                {"canary": {"devices": 1}}, {"pause": {"duration": "1h"}}, {"canary": {"percent": 100}}
            ]});
        }
        serde_json::json!({"name": "cams", "selector": {"site": "lab"}, "apps": {"app": app}})
    };
    let (s, t, _) = h.admin("POST", "/api/v1/admin/fleets", Some(spec("1.0.0", false)));
    assert_eq!(s, 200, "{t}");
    let on = |v: &str, devs: &[EnrollResponse]| {
        let want = format!("app@{v}");
        eventually(
            &format!("all on {want}"),
            || {
                devs.iter().for_each(|d| run_assigned(&h, d));
                devs.iter()
                    .map(|d| h.assignment_of(&d.device_id).map(|x| x.0))
                    .collect::<Vec<_>>()
            },
            |x| x.iter().all(|r| r.as_deref() == Some(want.as_str())),
        );
    };
    on("1.0.0", &devs);

    // Rollouts can target the fleet (its selector), but not with a selector of their own.
    let (s, t, _) = h.admin("POST", "/api/v1/admin/rollouts", Some(serde_json::json!({"fleet": "cams", "spec": {"release": "app@2.0.0", "selector": {"site": "x"}, "steps": [{"canary": {"percent": 100}}]}})));
    assert_eq!(s, 422, "{t}");
    assert!(t.contains("drop the spec's selector"), "{t}");
    let (s, t, _) = h.admin("POST", "/api/v1/admin/rollouts", Some(serde_json::json!({"fleet": "nope", "spec": {"release": "app@2.0.0", "steps": [{"canary": {"percent": 100}}]}})));
    assert_eq!(s, 404, "{t}");
    let (s, t, _) = h.admin(
        "POST",
        "/api/v1/admin/rollouts",
        Some(serde_json::json!({"fleet": "cams", "spec": {"release": "other@2.0.0", "steps": [{"canary": {"percent": 100}}]}})),
    );
    assert_eq!(s, 422, "{t}");
    assert!(t.contains("fleet cams places app, not other"), "{t}");

    let (s, t, _) = h.admin("POST", "/api/v1/admin/fleets", Some(spec("2.0.0", true)));
    assert_eq!(s, 200, "{t}");
    let st = eventually(
        "the fleet's rollout",
        || fleet_status(&h, "cams"),
        |st| st["apps"][0]["rollout"].is_string(),
    );
    let id = st["apps"][0]["rollout"].as_str().expect("id").to_string();
    let rollout = || -> serde_json::Value {
        let (s, t, _) = h.admin("GET", &format!("/api/v1/admin/rollouts/{id}"), None);
        assert_eq!(s, 200, "{t}");
        serde_json::from_str::<serde_json::Value>(&t).expect("rollout")["rollout"].clone()
    };
    let r = eventually(
        "the pause",
        || {
            devs.iter().for_each(|d| run_assigned(&h, d));
            rollout()
        },
        |r| r["state"]["step"] == 1,
    );
    assert_eq!(r["spec"]["selector"]["site"], "lab", "{r}");
    assert_eq!(r["baseline"], "app@1.0.0", "{r}");
    let canary: Vec<String> = r["state"]["cohort"]
        .as_array()
        .expect("cohort")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(canary.len(), 1);
    // A device joining while the rollout runs gets the baseline.
    let late = h.enroll(&[("site", "lab")]);
    eventually(
        "late device on the baseline",
        || h.assignment_of(&late.device_id),
        |x| x.as_ref().is_some_and(|(r, _)| r == "app@1.0.0"),
    );
    run_assigned(&h, &late);
    let st = fleet_status(&h, "cams");
    let (_, why) = standing(&st, &late.device_id).expect("late");
    assert!(why.contains("held at the baseline while rollout"), "{why}");
    let (s, why) = standing(&st, &canary[0]).expect("canary");
    assert_eq!(
        (s.as_str(), why.as_str()),
        ("converging", format!("in rollout {id}").as_str())
    );
    devs.push(late);
    // An hour later (fake clock) the rollout completes and the fleet moves on: all on 2.0.0.
    clock.advance(std::time::Duration::from_secs(3601));
    eventually(
        "completion",
        || {
            devs.iter().for_each(|d| run_assigned(&h, d));
            rollout()
        },
        |r| r["state"]["phase"] == "completed",
    );
    on("2.0.0", &devs);
    let st = eventually(
        "fleet current",
        || fleet_status(&h, "cams"),
        |st| st["apps"][0]["current"] == "app@2.0.0",
    );
    assert!(st["apps"][0]["rollout"].is_null(), "{st}");
}

/// `deploy` writes desired state: a device that enrolls (or is relabelled) after a deploy
/// also gets the release.
#[test]
fn fleet_written_by_deploy_reaches_devices_that_enroll_later() {
    let h = H::with(|c| c.controller_tick_ms = 50);
    h.trust_ci();
    let (s, t, _) = h.publish(&h.release("1.0.0", &h.ci));
    assert_eq!(s, 201, "{t}");
    let first = h.enroll(&[("site", "lab")]);
    let (s, t, _) = h.deploy("", "app", "1.0.0", serde_json::json!({"site": "lab"}));
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        h.assignment_of(&first.device_id),
        Some(("app@1.0.0".into(), 1))
    );
    let later = h.enroll(&[("site", "lab")]);
    eventually(
        "later device assigned",
        || h.assignment_of(&later.device_id),
        |x| x.as_ref().is_some_and(|(r, _)| r == "app@1.0.0"),
    );
    let st = fleet_status(&h, "deploy:app:site=lab");
    assert_eq!(st["origin"], "deploy");
    // The deployed device was not assigned twice.
    assert_eq!(
        h.assignment_of(&first.device_id),
        Some(("app@1.0.0".into(), 1))
    );
}

/// A fleet's rollout that aborts leaves the fleet on its release: devices go back to it (the
/// rollout's rollback), devices that join get it, and no new rollout of the aborted release
/// starts; the status says why.
#[test]
fn fleet_rollout_that_aborts_leaves_the_fleet_on_its_release() {
    let h = H::with(|c| c.controller_tick_ms = 50);
    h.trust_ci();
    for v in ["1.0.0", "2.0.0"] {
        let (s, t, _) = h.publish(&h.release(v, &h.ci));
        assert_eq!(s, 201, "{t}");
    }
    let devs = [h.enroll(&[("site", "lab")]), h.enroll(&[("site", "lab")])];
    let spec = |v: &str| {
        serde_json::json!({"name": "cams", "selector": {"site": "lab"}, "apps": {"app": {"release": v, "rollout": {"steps": [
            {"canary": {"devices": 1}}, {"pause": {}}, {"canary": {"percent": 100}}
        ]}}}})
    };
    // The first placement has no device running anything: there is nothing to roll out from,
    // so the rollout starts from no baseline.
    let (s, t, _) = h.admin("POST", "/api/v1/admin/fleets", Some(spec("1.0.0")));
    assert_eq!(s, 200, "{t}");
    let st = eventually(
        "first rollout",
        || fleet_status(&h, "cams"),
        |st| st["apps"][0]["rollout"].is_string(),
    );
    let first = st["apps"][0]["rollout"].as_str().expect("id").to_string();
    eventually(
        "the pause",
        || {
            devs.iter().for_each(|d| run_assigned(&h, d));
            let (_, t, _) = h.admin("GET", &format!("/api/v1/admin/rollouts/{first}"), None);
            serde_json::from_str::<serde_json::Value>(&t).expect("rollout")
        },
        |r| r["rollout"]["state"]["phase"] == "paused",
    );
    let (s, t, _) = h.admin(
        "POST",
        &format!("/api/v1/admin/rollouts/{first}/resume"),
        None,
    );
    assert_eq!(s, 200, "{t}");
    eventually(
        "all on 1.0.0",
        || {
            devs.iter().for_each(|d| run_assigned(&h, d));
            fleet_status(&h, "cams")
        },
        |st| st["apps"][0]["current"] == "app@1.0.0" && st["counts"]["converged"] == 2,
    );

    let (s, t, _) = h.admin("POST", "/api/v1/admin/fleets", Some(spec("2.0.0")));
    assert_eq!(s, 200, "{t}");
    let st = eventually(
        "second rollout",
        || fleet_status(&h, "cams"),
        |st| st["apps"][0]["rollout"].is_string(),
    );
    let id = st["apps"][0]["rollout"].as_str().expect("id").to_string();
    assert_ne!(id, first);
    let (s, t, _) = h.admin("POST", &format!("/api/v1/admin/rollouts/{id}/abort"), None);
    assert_eq!(s, 200, "{t}");
    let st = eventually(
        "the fleet noticed",
        || fleet_status(&h, "cams"),
        |st| st["apps"][0]["rollout"].is_null(),
    );
    let note = st["apps"][0]["note"].as_str().unwrap_or_default();
    assert!(note.contains("rollout of app@2.0.0 aborted"), "{st}");
    assert_eq!(st["apps"][0]["current"], "app@1.0.0", "{st}");
    let late = h.enroll(&[("site", "lab")]);
    eventually(
        "late device on 1.0.0",
        || h.assignment_of(&late.device_id),
        |x| x.as_ref().is_some_and(|(r, _)| r == "app@1.0.0"),
    );
    for d in &devs {
        assert_eq!(
            h.assignment_of(&d.device_id).map(|x| x.0).as_deref(),
            Some("app@1.0.0")
        );
    }
    let passes = h
        .srv
        .state
        .controller
        .passes_ok
        .load(std::sync::atomic::Ordering::SeqCst);
    eventually(
        "more passes",
        || {
            h.srv
                .state
                .controller
                .passes_ok
                .load(std::sync::atomic::Ordering::SeqCst)
        },
        |n| *n > passes + 3,
    );
    let (_, t, _) = h.admin("GET", "/api/v1/admin/rollouts", None);
    let all: Vec<serde_json::Value> = serde_json::from_str(&t).expect("rollouts");
    assert_eq!(all.len(), 2, "no new rollout of the aborted release: {t}");
}

/// Several apps on one device (protocol 1.2): one assignment per app in the check-in
/// answer (the newest also as `assignment`, for agents that hold one app); an agent that
/// holds one app is not given a second; a rollout of one app is judged on that app's
/// metrics, never on the other app's.
#[test]
fn several_apps_get_one_assignment_each_and_gates_judge_their_own_metrics() {
    let h = H::with(|c| c.controller_tick_ms = 50);
    h.trust_ci();
    let cls = |v: &str| {
        fixtures::make_release(
            &h.dir.join("rel-cls"),
            &h.ci,
            "cls",
            v,
            fixtures::rpi5(),
            fixtures::infer_pin(),
            4096,
        )
        .expect("release")
    };
    for r in [h.release("1.0.0", &h.ci), cls("1.0.0"), cls("2.0.0")] {
        let (s, t, _) = h.publish(&r);
        assert_eq!(s, 201, "{t}");
    }
    let two = Inventory {
        max_apps: Some(2),
        storage_mb: Some(16 * 1024),
        ..inv()
    };
    let d = h.enroll_inv(&[("fleet", "x")], two.clone());
    let old = h.enroll(&[("fleet", "old")]);
    let deploy = |app: &str, fleet: &str| {
        h.admin(
            "POST",
            "/api/v1/admin/deployments",
            Some(serde_json::json!({"app": app, "version": "1.0.0", "selector": {"fleet": fleet}})),
        )
    };
    for (app, fleet) in [("app", "x"), ("cls", "x"), ("app", "old")] {
        let (s, t, _) = deploy(app, fleet);
        assert_eq!(s, 200, "{app} on {fleet}: {t}");
    }
    // An agent of protocol 1.1 (no maxApps in its inventory) holds one app.
    let (s, t, _) = deploy("cls", "old");
    assert_eq!(s, 422, "{t}");
    assert!(
        t.contains("already holds app@1.0.0") && t.contains("holds one app"),
        "{t}"
    );
    let (s, body, _) = h.checkin(&old, None);
    assert_eq!(s, 200, "{body}");
    let r: CheckinResponse = serde_json::from_str(&body).expect("answer");
    let a: Assignment = serde_json::from_str(&r.assignment.expect("one").payload).expect("payload");
    assert_eq!((a.release.app.as_str(), r.assignments.len()), ("app", 1));

    let (s, body, headers) = h.checkin_inv(&d, two.clone(), None);
    assert_eq!(s, 200, "{body}");
    let r: CheckinResponse = serde_json::from_str(&body).expect("answer");
    let apps: Vec<Assignment> = r
        .assignments
        .iter()
        .map(|a| serde_json::from_str(&a.payload).expect("payload"))
        .collect();
    assert_eq!(
        apps.iter()
            .map(|a| a.release.app.as_str())
            .collect::<Vec<_>>(),
        ["app", "cls"]
    );
    assert!(apps[1].version > apps[0].version, "one counter per device");
    let newest: Assignment =
        serde_json::from_str(&r.assignment.expect("newest").payload).expect("payload");
    assert_eq!(newest, apps[1]);
    let etag = headers
        .iter()
        .find(|(k, _)| k == "etag")
        .map(|(_, v)| v.clone())
        .expect("etag");
    let (s, _, _) = h.checkin_inv(&d, two.clone(), Some(&etag));
    assert_eq!(s, 304);

    // A rollout of cls: the device reports app's (device-wide) metrics full of errors and
    // cls's own, clean; the gate judges cls's.
    let spec = serde_json::json!({"spec": {
        "release": "cls@2.0.0",
        "selector": {"fleet": "x"},
        "steps": [
            {"canary": {"devices": 1}},
            {"analyze": {"duration": "2s", "interval": "1s"}},
            {"canary": {"percent": 100}}
        ],
        "gates": [{"metric": "error_rate", "max": 0.03}],
        "min_samples": 100
    }});
    let (s, t, _) = h.admin("POST", "/api/v1/admin/rollouts", Some(spec));
    assert_eq!(s, 200, "{t}");
    let v: serde_json::Value = serde_json::from_str(&t).expect("status");
    let id = v["rollout"]["id"].as_str().expect("id").to_string();
    let state = || -> serde_json::Value {
        let (s, t, _) = h.admin("GET", &format!("/api/v1/admin/rollouts/{id}"), None);
        assert_eq!(s, 200, "{t}");
        serde_json::from_str::<serde_json::Value>(&t).expect("status")["rollout"].clone()
    };
    let running = |app: &str, version: &str| RunningRelease {
        app: app.into(),
        version: version.into(),
        bundle_digest: format!("sha256:{}", "0".repeat(64)),
        slot: "a".into(),
        image: None,
    };
    let report = |requests: u64| {
        let batch = |errors: bool| {
            let mut m = edgecd_api::metrics::MetricsAggregate::default();
            for _ in 0..requests {
                m.record(20.0, errors, Some(0.9));
            }
            m
        };
        let app_state = |app: &str, version: &str| AppStatus {
            app: app.into(),
            phase: Phase::Committed,
            running: Some(running(app, version)),
            assignment_version: 1,
            last_outcome: None,
            download: None,
        };
        let req = CheckinRequest {
            inventory: two.clone(),
            status: DeviceStatus {
                phase: Phase::Committed,
                running: Some(running("app", "1.0.0")),
                assignment_version: 1,
                last_outcome: None,
                download: None,
                stale_since: None,
                assignment_proof: None,
                apps: vec![app_state("app", "1.0.0"), app_state("cls", "2.0.0")],
            },
            labels: BTreeMap::new(),
            metrics: (requests > 0).then(|| batch(true)),
            protocol: edgecd_api::protocol::PROTOCOL_VERSION.into(),
            app_metrics: if requests > 0 {
                [("cls".to_string(), batch(false))].into()
            } else {
                BTreeMap::new()
            },
        };
        let (s, t, _) = h.req(
            "POST",
            &format!("/api/v1/devices/{}/checkin", d.device_id),
            Some(&d.credential),
            Some(&serde_json::to_vec(&req).expect("json")),
            &[],
        );
        assert!(s == 200 || s == 304, "{s} {t}");
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while state()["state"]["cohort"]
        .as_array()
        .is_none_or(|c| c.is_empty())
    {
        assert!(std::time::Instant::now() < until, "no canary: {}", state());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    report(0);
    let done = loop {
        let st = state();
        if st["state"]["phase"] == "completed" || st["state"]["phase"] == "aborted" {
            break st;
        }
        assert!(
            std::time::Instant::now() < until,
            "rollout still running: {st}"
        );
        report(1000);
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(done["state"]["phase"], "completed", "{done}");
}
