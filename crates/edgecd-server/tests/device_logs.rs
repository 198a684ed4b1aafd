//! Device logs and diagnoses on the server, over real HTTP (and on PostgreSQL under
//! `scripts/with-postgres`): a request reaches the device in its check-in answer even when
//! the assignment's ETag would make it a 304, until the device answers it; the answer is
//! stored only for the device's latest request and only from that device, re-redacted and
//! bounded; the logs read back in the console's shape; viewers are refused; a diagnosis joins
//! the device's report with its install attempts and temperature history.

use edgecd_server::{Config, EmbeddedServer};
use edgecd_sign::SigningKey;
use edgecd_testkit::release as fixtures;
use serde_json::{Value, json};

struct H {
    _dir: tempfile::TempDir,
    srv: EmbeddedServer,
    url: String,
    http: ureq::Agent,
}

fn inventory() -> Value {
    json!({"board": "rpi5", "ramMb": 4096, "runtimes": {"edgecd-infer": "0.1.0"}, "agentVersion": "test"})
}

impl H {
    fn start() -> Self {
        let d = tempfile::tempdir().expect("tmp");
        let mut cfg = Config::new(d.path().join("data"));
        cfg.database = edgecd_testkit::postgres::database_for(&cfg.data_dir);
        cfg.listen = "127.0.0.1:0".parse().expect("addr");
        let srv = EmbeddedServer::start(cfg).expect("start");
        let url = format!("http://{}", srv.addr);
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            _dir: d,
            srv,
            url,
            http,
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        auth: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value, Option<String>) {
        let mut r = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {auth}"))
            .header("content-type", "application/json");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default().into_bytes();
        let mut resp = self.http.run(r.body(body).expect("request")).expect("http");
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            etag,
        )
    }

    fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (s, v, _) = self.call(method, path, &self.srv.admin_token.clone(), &[], body);
        (s, v)
    }

    fn enroll(&self) -> (String, String) {
        let (s, t) = self.admin("POST", "/api/v1/admin/enrollment-tokens", Some(&json!({})));
        assert_eq!(s, 200, "{t}");
        let (s, e) = self.admin(
            "POST",
            "/api/v1/devices/enroll",
            Some(&json!({"token": t["token"], "inventory": inventory()})),
        );
        assert_eq!(s, 200, "{e}");
        (
            e["deviceId"].as_str().expect("id").into(),
            e["credential"].as_str().expect("cred").into(),
        )
    }

    /// A check-in; `(status, answer, etag)`.
    fn checkin(
        &self,
        dev: &(String, String),
        etag: Option<&str>,
        status: Value,
        metrics: Option<Value>,
    ) -> (u16, Value, Option<String>) {
        let mut body = json!({"inventory": inventory(), "status": status});
        if let Some(m) = metrics {
            body["metrics"] = m;
        }
        let headers: Vec<(&str, &str)> = etag.map(|e| ("if-none-match", e)).into_iter().collect();
        self.call(
            "POST",
            &format!("/api/v1/devices/{}/checkin", dev.0),
            &dev.1,
            &headers,
            Some(&body),
        )
    }

    fn publish_and_deploy(&self) {
        let ci = SigningKey::generate();
        let (s, t) = self.admin(
            "POST",
            "/api/v1/admin/keys",
            Some(&json!({"publicKeyPem": ci.verifying_key().to_spki_pem()})),
        );
        assert_eq!(s, 200, "{t}");
        let rel = fixtures::make_release(
            &self._dir.path().join("rel"),
            &ci,
            "app",
            "1.0.0",
            fixtures::rpi5(),
            fixtures::infer_pin(),
            1024,
        )
        .expect("release");
        for (b, p) in rel.blobs().expect("blobs") {
            let req = ureq::http::Request::builder()
                .method("PUT")
                .uri(format!("{}/api/v1/admin/blobs/{}", self.url, b.digest))
                .header("authorization", format!("Bearer {}", self.srv.admin_token))
                .header("content-type", "application/octet-stream")
                .body(std::fs::read(p).expect("read"))
                .expect("request");
            let s = self.http.run(req).expect("upload").status().as_u16();
            assert!(s == 200 || s == 201, "upload: {s}");
        }
        let (s, t) = self.admin(
            "POST",
            "/api/v1/admin/releases",
            Some(&serde_json::to_value(rel.publish_request().expect("req")).expect("json")),
        );
        assert!(s == 200 || s == 201, "{s} {t}");
        let (s, t) = self.admin(
            "POST",
            "/api/v1/admin/deployments",
            Some(&json!({"app": "app", "version": "1.0.0", "selector": {}})),
        );
        assert_eq!(s, 200, "{t}");
    }
}

fn running() -> Value {
    json!({"phase": "committed", "assignmentVersion": 1,
        "running": {"app": "app", "version": "1.0.0", "bundleDigest": "sha256:x", "slot": "a"},
        "lastOutcome": {"kind": "rolledBack", "assignmentVersion": 1, "release": "app@1.1.0",
            "reason": "health check failed: DB_PASSWORD=hunter2 rejected", "at": 1_800_000_000u64}})
}

#[test]
fn logs_reach_the_device_and_come_back_bounded_and_redacted() {
    let h = H::start();
    let dev = h.enroll();
    let other = h.enroll();
    h.publish_and_deploy();
    let (s, first, etag) = h.checkin(&dev, None, running(), None);
    assert_eq!(s, 200, "{first}");
    assert!(first.get("deviceRequest").is_none(), "nothing asked yet");
    let etag = etag.expect("an assignment has an ETag");
    let (s, _, _) = h.checkin(&dev, Some(&etag), running(), None);
    assert_eq!(s, 304, "unchanged assignment: 304");

    // Viewers may not ask or read; unknown devices are 404.
    let (s, t) = h.admin(
        "POST",
        "/api/v1/admin/tokens",
        Some(&json!({"name": "v", "role": "viewer"})),
    );
    assert_eq!(s, 200, "{t}");
    let viewer = t["token"].as_str().expect("token").to_string();
    for m in ["GET", "POST"] {
        for what in ["logs", "diagnose"] {
            let (s, v, _) = h.call(
                m,
                &format!("/api/v1/admin/devices/{}/{what}", dev.0),
                &viewer,
                &[],
                None,
            );
            assert_eq!(s, 403, "{m} {what}: {v}");
            assert!(v["error"].as_str().unwrap().contains("deployer"), "{v}");
        }
    }
    let (s, _) = h.admin("GET", "/api/v1/admin/devices/dev-nosuch/logs", None);
    assert_eq!(s, 404);
    let (s, v) = h.admin(
        "POST",
        &format!("/api/v1/admin/devices/{}/logs", dev.0),
        Some(&json!({"lines": 0})),
    );
    assert_eq!(s, 400, "{v}");

    // A request: the next check-in carries it although the ETag matches (no 304).
    let (s, v) = h.admin(
        "POST",
        &format!("/api/v1/admin/devices/{}/logs", dev.0),
        Some(&json!({"lines": 50})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pending"], true);
    assert_eq!(v["received_at"], Value::Null);
    let (s, ans, _) = h.checkin(&dev, Some(&etag), running(), None);
    assert_eq!(s, 200, "a pending request is never hidden by a 304");
    let req = ans["deviceRequest"].clone();
    assert_eq!(req["lines"], 50);
    assert_eq!(req["diagnose"], false);
    let rid = req["id"].as_str().expect("id").to_string();
    let (_, other_ans, _) = h.checkin(
        &other,
        None,
        json!({"phase": "idle", "assignmentVersion": 0}),
        None,
    );
    assert!(
        other_ans.get("deviceRequest").is_none(),
        "only the device asked"
    );

    // Another device cannot answer for it; a stale request id is refused.
    let line = |src: &str, text: String| json!({"ts": "2026-12-03T12:00:00Z", "source": src, "line": text});
    let report = |id: &str, lines: Vec<Value>| json!({"requestId": id, "lines": lines});
    let (s, _, _) = h.call(
        "POST",
        &format!("/api/v1/devices/{}/logs", dev.0),
        &other.1,
        &[],
        Some(&report(&rid, vec![])),
    );
    assert_eq!(s, 403);
    let (s, v, _) = h.call(
        "POST",
        &format!("/api/v1/devices/{}/logs", dev.0),
        &dev.1,
        &[],
        Some(&report("req-old", vec![])),
    );
    assert_eq!(s, 409, "{v}");
    // The answer: 600 KiB of lines with secrets the device failed to redact.
    let mut lines: Vec<Value> = (0..600)
        .map(|i| line("runtime", format!("{i:04} {}", "x".repeat(1000))))
        .collect();
    lines.push(line(
        "agent",
        "auth header Authorization: Bearer edt_leaked0123456789".into(),
    ));
    lines.push(line("agent", "config password=hunter2 loaded".into()));
    let (s, v, _) = h.call(
        "POST",
        &format!("/api/v1/devices/{}/logs", dev.0),
        &dev.1,
        &[],
        Some(&report(&rid, lines)),
    );
    assert_eq!(s, 200, "{v}");
    let (s, logs) = h.admin(
        "GET",
        &format!("/api/v1/admin/devices/{}/logs", dev.0),
        None,
    );
    assert_eq!(s, 200);
    let keys: Vec<&str> = logs
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["device", "lines", "pending", "received_at", "requested_at"]
    );
    assert_eq!(logs["device"], dev.0.as_str());
    assert_eq!(logs["pending"], false);
    let got = logs["lines"].as_array().unwrap();
    let bytes: usize = got.iter().map(|l| l["line"].as_str().unwrap().len()).sum();
    assert!(bytes <= edgecd_api::protocol::MAX_LOG_BYTES, "{bytes}");
    assert!(got.len() < 602, "oldest dropped");
    let text = logs.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("edt_leaked"),
        "{text}"
    );
    assert!(text.contains("password=[REDACTED]"));
    assert_eq!(got.last().unwrap()["source"], "agent");
    // Answered: the next check-in asks nothing and a 304 comes back.
    let (s, _, _) = h.checkin(&dev, Some(&etag), running(), None);
    assert_eq!(s, 304);

    // A diagnosis: its request asks for diagnostics; the report joins the server's facts.
    let mut m = edgecd_api::metrics::MetricsAggregate::default();
    m.record_temperature(61.5, false);
    m.record_temperature(63.0, true);
    let (s, _, _) = h.checkin(
        &dev,
        Some(&etag),
        running(),
        Some(serde_json::to_value(&m).unwrap()),
    );
    assert_eq!(s, 304);
    let (s, d) = h.admin(
        "POST",
        &format!("/api/v1/admin/devices/{}/diagnose", dev.0),
        None,
    );
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["pending"], true);
    let (_, ans, _) = h.checkin(&dev, Some(&etag), running(), None);
    assert_eq!(ans["deviceRequest"]["diagnose"], true);
    let rid = ans["deviceRequest"]["id"].as_str().unwrap().to_string();
    let diag = json!({"collectedAt": "2026-12-03T12:00:00Z", "agentVersion": "9.9.9", "phase": "committed",
        "slots": [{"slot": "a", "release": "app@1.0.0", "current": true, "bytes": 1234}, {"slot": "b", "current": false, "bytes": 0}],
        "freeDiskBytes": 5_000_000_000u64, "totalDiskBytes": 30_000_000_000u64,
        "temperatures": [[1_800_000_000u64, 63.0]],
        "runtime": {"kind": "health-url", "healthy": true, "detail": "healthy"}});
    let (s, v, _) = h.call(
        "POST",
        &format!("/api/v1/devices/{}/logs", dev.0),
        &dev.1,
        &[],
        Some(&json!({"requestId": rid, "lines": [], "diagnostics": diag})),
    );
    assert_eq!(s, 200, "{v}");
    let (s, d) = h.admin(
        "GET",
        &format!("/api/v1/admin/devices/{}/diagnose", dev.0),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(d["pending"], false);
    assert_eq!(d["inventory"]["board"], "rpi5");
    assert_eq!(d["assigned"], "app@1.0.0");
    assert_eq!(d["agent"]["agentVersion"], "9.9.9");
    assert_eq!(d["agent"]["slots"][0]["current"], true);
    assert_eq!(d["agent"]["freeDiskBytes"], 5_000_000_000u64);
    assert_eq!(d["install_attempts"][0]["outcome"], "rolledBack");
    assert_eq!(d["install_attempts"][0]["release"], "app@1.1.0");
    assert_eq!(
        d["install_attempts"][0]["reason"],
        "health check failed: DB_PASSWORD=[REDACTED] rejected"
    );
    let t = &d["temperature_history"][0];
    assert_eq!(t["max_c"], 63.0);
    assert_eq!(t["mean_c"], 62.25);
    assert_eq!(t["throttled_fraction"], 0.5);

    // A deleted device's logs and diagnosis go with it.
    let logs = |id: &str| {
        h.srv
            .block_on(h.srv.state.store.device_logs(id))
            .expect("store")
    };
    assert!(logs(&dev.0).is_some());
    let (s, v) = h.admin("DELETE", &format!("/api/v1/admin/devices/{}", dev.0), None);
    assert_eq!(s, 200, "{v}");
    assert!(logs(&dev.0).is_none(), "the device's logs row is deleted");
}
