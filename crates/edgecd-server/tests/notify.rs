//! Rollout notifications end to end, against local HTTP receivers on 127.0.0.1: the Slack,
//! Teams and signed generic webhook payloads of a real rollout (every number, the link, the
//! runbook, the reason, the gates; the HMAC recomputed here independently), retries with
//! backoff and Retry-After, no retry on 4xx, a hanging receiver that delays neither the API
//! nor the controller, deferred notifications, unknown channels refused, and `/metrics`; the
//! outbox: pending notifications delivered after a restart (once, same delivery id), delivered
//! ones not sent again, and a notification saved only with the state it announces.

use edgecd_server::notify::NotifyConfig;
use edgecd_server::{Config, EmbeddedServer};
use edgecd_sign::SigningKey;
use edgecd_testkit::release as fixtures;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HOOK_SECRET: &str = "test-hook-secret-0123456789";

// ---------------------------------------------------------------------------------------
// A local HTTP receiver that records every request and answers from a script.

#[derive(Clone, Copy)]
enum Reply {
    Status(u16),
    /// 429 with `Retry-After: N`.
    TooMany(u64),
    /// Read the request, never answer, keep the connection open.
    Hang,
}

#[derive(Debug, Clone)]
struct Req {
    at: Instant,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Req>>>,
}

impl Receiver {
    /// Answers the n-th request with `script[n]`, later ones with `then`.
    fn start(script: Vec<Reply>, then: Reply) -> Self {
        Self::start_on(
            TcpListener::bind("127.0.0.1:0").expect("bind"),
            script,
            then,
        )
    }

    fn start_on(l: TcpListener, script: Vec<Reply>, then: Reply) -> Self {
        let url = format!("http://{}", l.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(vec![]));
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut held = vec![];
            let mut n = 0;
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                let Some(req) = read_request(&mut c) else {
                    continue;
                };
                s.lock().expect("lock").push(req);
                let reply = script.get(n).copied().unwrap_or(then);
                n += 1;
                let head = match reply {
                    Reply::Hang => {
                        held.push(c);
                        continue;
                    }
                    Reply::Status(code) => format!("HTTP/1.1 {code} X\r\n"),
                    Reply::TooMany(secs) => {
                        format!("HTTP/1.1 429 X\r\nretry-after: {secs}\r\n")
                    }
                };
                let _ = write!(
                    c,
                    "{head}content-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
            }
        });
        Self { url, seen }
    }

    fn requests(&self) -> Vec<Req> {
        self.seen.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests arrived.
    fn wait(&self, n: usize, within: Duration) -> Vec<Req> {
        let until = Instant::now() + within;
        loop {
            let r = self.requests();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < until,
                "{} requests after {within:?}, wanted {n}: {:?}",
                r.len(),
                r.iter()
                    .map(|r| String::from_utf8_lossy(&r.body).to_string())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_request(c: &mut TcpStream) -> Option<Req> {
    let mut buf = vec![];
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let k = c.read(&mut chunk).ok()?;
        if k == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..k]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let path = lines.next()?.split(' ').nth(1)?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let k = c.read(&mut chunk).ok()?;
        if k == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..k]);
    }
    Some(Req {
        at: Instant::now(),
        path,
        headers,
        body,
    })
}

/// HMAC-SHA256 written out from RFC 2104, independent of the server's `hmac` crate.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    hex::encode(
        Sha256::new()
            .chain_update(&opad)
            .chain_update(inner)
            .finalize(),
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Checks a generic webhook request's headers and signature; returns its JSON body.
fn verify_webhook(r: &Req) -> Value {
    assert_eq!(r.header("content-type"), Some("application/json"));
    let ts: u64 = r
        .header("x-edgecd-timestamp")
        .expect("timestamp header")
        .parse()
        .expect("unix seconds");
    assert!(ts.abs_diff(unix_now()) <= 60, "timestamp {ts} is not now");
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&r.body);
    assert_eq!(
        r.header("x-edgecd-signature-256"),
        Some(format!("sha256={}", hmac_sha256(HOOK_SECRET.as_bytes(), &signed)).as_str()),
        "signature over \"{{timestamp}}.{{body}}\""
    );
    let body = r.json();
    assert_eq!(r.header("x-edgecd-event"), body["event"].as_str());
    let id = r.header("x-edgecd-delivery").expect("delivery id");
    assert_eq!(id.len(), 36, "{id}");
    body
}

// ---------------------------------------------------------------------------------------
// The server side.

struct H {
    _dir: tempfile::TempDir,
    srv: EmbeddedServer,
    url: String,
    http: ureq::Agent,
}

fn server(d: &std::path::Path, notify_yaml: &str, tick_ms: u64) -> EmbeddedServer {
    let mut cfg = Config::new(d.join("data"));
    cfg.database = edgecd_testkit::postgres::database_for(&cfg.data_dir);
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    cfg.controller_tick_ms = tick_ms;
    cfg.notifications = NotifyConfig::from_yaml(notify_yaml, d, &|k| {
        (k == "EDGECD_TEST_HOOK_SECRET").then(|| HOOK_SECRET.to_string())
    })
    .expect("notifications config");
    cfg.notifications.sweep_interval = Duration::from_millis(100);
    EmbeddedServer::start(cfg).expect("start")
}

impl H {
    fn start(notify_yaml: &str, tick_ms: u64) -> Self {
        let d = tempfile::tempdir().expect("tmp");
        let srv = server(d.path(), notify_yaml, tick_ms);
        let url = format!("http://{}", srv.addr);
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let h = Self {
            _dir: d,
            srv,
            url,
            http,
        };
        h.publish("1.0.0");
        h.device_running("app@1.0.0");
        h
    }

    /// Enrolls a device (compatible with the test releases) that reports running `release`,
    /// so a rollout of it has a cohort (one with none is refused) that is done at once.
    fn device_running(&self, release: &str) {
        let (s, t) = self.admin("POST", "/api/v1/admin/enrollment-tokens", Some(&json!({})));
        assert_eq!(s, 200, "{t}");
        let inventory = json!({"board": "rpi5", "ramMb": 4096, "runtimes": {"edgecd-infer": "0.1.0"}, "agentVersion": "test"});
        let (s, e) = self.admin(
            "POST",
            "/api/v1/devices/enroll",
            Some(&json!({"token": t["token"], "inventory": inventory})),
        );
        assert_eq!(s, 200, "{e}");
        let (app, version) = release.split_once('@').expect("APP@VERSION");
        let req = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}/api/v1/devices/{}/checkin", self.url, e["deviceId"].as_str().expect("id")))
            .header("authorization", format!("Bearer {}", e["credential"].as_str().expect("credential")))
            .header("content-type", "application/json")
            .body(
                json!({"inventory": inventory, "status": {"phase": "idle", "assignmentVersion": 0,
                    "running": {"app": app, "version": version, "bundleDigest": "sha256:x", "slot": "a"}}})
                .to_string()
                .into_bytes(),
            )
            .expect("request");
        let s = self.http.run(req).expect("checkin").status().as_u16();
        assert_eq!(s, 200, "checkin");
    }

    /// Stops the server (as a crash would: queued notifications are abandoned).
    fn stop(&mut self) {
        self.srv.stop();
    }

    /// Starts a new server on the same data directory.
    fn start_again(&mut self, notify_yaml: &str, tick_ms: u64) {
        self.srv = server(self._dir.path(), notify_yaml, tick_ms);
        self.url = format!("http://{}", self.srv.addr);
    }

    /// The outbox, oldest first: (event, delivery id, status, attempts, notification).
    fn outbox(&self) -> Vec<(String, String, String, i64, Value)> {
        let rows = self
            .srv
            .block_on(self.srv.state.store.outbox_rows())
            .expect("outbox");
        rows.into_iter()
            .map(|r| (r.delivery_id, r.status, r.attempts, r.notification))
            .map(|(d, s, a, n)| {
                let n: Value = serde_json::from_str(&n).expect("JSON");
                let event = n["event"]["event"].as_str().expect("event").to_string();
                (event, d, s, a, n)
            })
            .collect()
    }

    /// Waits until the outbox's (event, status, attempts) are `want`.
    fn wait_outbox(&self, want: &[(&str, &str, i64)], within: Duration) {
        let until = Instant::now() + within;
        loop {
            let got: Vec<(String, String, i64)> = self
                .outbox()
                .into_iter()
                .map(|(e, _, s, a, _)| (e, s, a))
                .collect();
            if got
                .iter()
                .map(|(e, s, a)| (e.as_str(), s.as_str(), *a))
                .eq(want.iter().copied())
            {
                return;
            }
            assert!(Instant::now() < until, "outbox {got:?}, wanted {want:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {}", self.srv.admin_token))
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string()).unwrap_or_default().into_bytes())
            .expect("request");
        let mut resp = self.http.run(req).expect("http");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .call()
            .expect("metrics")
            .body_mut()
            .read_to_string()
            .expect("text")
    }

    fn publish(&self, version: &str) {
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
            version,
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
    }

    /// Starts a rollout from a YAML spec; returns its id.
    fn start_rollout(&self, spec_yaml: &str) -> String {
        let spec: Value = serde_yaml::from_str(spec_yaml).expect("spec");
        let (s, v) = self.admin(
            "POST",
            "/api/v1/admin/rollouts",
            Some(&json!({ "spec": spec })),
        );
        assert_eq!(s, 200, "{v}");
        v["rollout"]["id"].as_str().expect("id").to_string()
    }

    fn command(&self, id: &str, cmd: &str) -> Value {
        let (s, v) = self.admin("POST", &format!("/api/v1/admin/rollouts/{id}/{cmd}"), None);
        assert_eq!(s, 200, "{cmd}: {v}");
        v
    }

    fn wait_phase(&self, id: &str, phase: &str, within: Duration) {
        let until = Instant::now() + within;
        loop {
            let (_, v) = self.admin("GET", &format!("/api/v1/admin/rollouts/{id}"), None);
            if v["rollout"]["state"]["phase"] == phase {
                return;
            }
            assert!(Instant::now() < until, "never reached {phase}: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

fn counter(m: &str, channel: &str, kind: &str, result: &str) -> f64 {
    value(
        m,
        &format!(
            "edgecd_server_notifications_total{{channel=\"{channel}\",type=\"{kind}\",result=\"{result}\"}}"
        ),
    )
    .unwrap_or_else(|| panic!("no {channel}/{result} counter in\n{m}"))
}

fn attempts(m: &str, channel: &str, kind: &str) -> f64 {
    value(
        m,
        &format!(
            "edgecd_server_notification_attempts_total{{channel=\"{channel}\",type=\"{kind}\"}}"
        ),
    )
    .unwrap_or_else(|| panic!("no {channel} attempts in\n{m}"))
}

fn events(reqs: &[Req], of: impl Fn(&Value) -> String) -> Vec<String> {
    reqs.iter().map(|r| of(&r.json())).collect()
}

// ---------------------------------------------------------------------------------------

#[test]
fn slack_teams_and_signed_webhook_messages_carry_the_numbers() {
    let slack = Receiver::start(vec![], Reply::Status(200));
    let teams = Receiver::start(vec![], Reply::Status(202));
    let hook = Receiver::start(vec![], Reply::Status(204));
    let h = H::start(
        &format!(
            r#"
public_url: https://edgecd.example.com/
channels:
  ops-slack: {{type: slack, url: "{}/services/T0/B0/slacksecret", runbook_url: "https://wiki.example/slack-runbook"}}
  ops-teams: {{type: teams, url: "{}/workflows/abc/triggers/manual?sig=teamssecret", runbook_url: "https://wiki.example/teams-runbook"}}
  audit-hook: {{type: webhook, url: "{}/hook", secret_env: EDGECD_TEST_HOOK_SECRET}}
retry: {{attempts: 2, initial_backoff_ms: 50, max_backoff_ms: 200, timeout_ms: 3000}}
"#,
            slack.url, teams.url, hook.url
        ),
        50,
    );

    // A rollout naming an unknown channel is refused, listing the configured ones.
    let (s, v) = h.admin(
        "POST",
        "/api/v1/admin/rollouts",
        Some(&json!({"spec": {"release": "app@1.0.0", "steps": [{"canary": {"devices": 1}}], "notify": ["ops-slack", "pager"]}})),
    );
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        v["error"],
        "notify names unknown channel(s) pager: configured channels are audit-hook, ops-slack, ops-teams"
    );

    let id = h.start_rollout(
        r#"
release: app@1.0.0
steps:
  - canary: {devices: 1}
  - analyze: {duration: 1s, interval: 1m}
  - approve: {}
  - canary: {percent: 100}
gates:
  - {metric: latency_p95_ms, max: 300}
  - {metric: error_rate, max: 0.03}
notify: [ops-slack, ops-teams, audit-hook]
runbook_url: https://wiki.example/rollout-runbook
"#,
    );
    let link = format!("https://edgecd.example.com/api/v1/admin/rollouts/{id}");
    // started; the canary's device runs the release → step 2; its window ends without samples → held.
    hook.wait(3, Duration::from_secs(10));
    h.command(&id, "promote");
    // → step 3 (approval); the controller asks for approval.
    hook.wait(5, Duration::from_secs(10));
    h.wait_phase(&id, "awaiting_approval", Duration::from_secs(5));
    h.command(&id, "approve");
    // → step 4; the canary (the one device) is done → completed.
    let hooks = hook.wait(7, Duration::from_secs(10));
    let slacks = slack.wait(7, Duration::from_secs(10));
    let cards = teams.wait(7, Duration::from_secs(10));
    let want = [
        "started",
        "step_promoted",
        "held",
        "step_promoted",
        "approval_needed",
        "step_promoted",
        "completed",
    ];

    // Generic webhook: signed, versioned, every number.
    let bodies: Vec<Value> = hooks.iter().map(verify_webhook).collect();
    assert_eq!(
        bodies
            .iter()
            .map(|b| b["event"].as_str().expect("event"))
            .collect::<Vec<_>>(),
        want
    );
    let ids: std::collections::BTreeSet<&str> = hooks
        .iter()
        .map(|r| r.header("x-edgecd-delivery").expect("id"))
        .collect();
    assert_eq!(ids.len(), 7, "one delivery id per notification");
    assert!(hooks.iter().all(|r| r.path == "/hook"));
    for b in &bodies {
        assert_eq!(b["version"], 1);
        assert_eq!(b["rollout"]["id"], id.as_str());
        assert_eq!(b["rollout"]["release"], "app@1.0.0");
        assert_eq!(b["rollout"]["baseline"], Value::Null);
        assert_eq!(b["rollout"]["steps"], 4);
        // The one device (running the release already) is the cohort from the first canary on.
        let cohort = if b["event"] == "started" { 0 } else { 1 };
        assert_eq!(b["rollout"]["cohort"], cohort, "{b}");
        assert_eq!(b["link"], link.as_str());
        assert_eq!(b["runbookUrl"], "https://wiki.example/rollout-runbook");
        assert!(b["at"].as_str().expect("at").ends_with('Z'), "{b}");
    }
    let started = &bodies[0];
    assert_eq!(started["rollout"]["step"], 1);
    assert_eq!(started["rollout"]["stepDescription"], "canary 1 devices");
    assert_eq!(started["rollout"]["phase"], "progressing");
    assert_eq!(started["detail"]["cohort_target"], "canary 1 devices");
    assert_eq!(started["gates"], json!([]));
    assert_eq!(bodies[1]["rollout"]["step"], 2);
    assert_eq!(
        bodies[1]["rollout"]["stepDescription"],
        "analyze 1s every 1m"
    );
    let held = &bodies[2];
    assert_eq!(held["rollout"]["step"], 2);
    let reason = held["rollout"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with(
            "analysis window over without a decision, too little traffic: latency_p95_ms <= 300: 0 requests < min_samples 200, ~200 more to decide"
        ),
        "{reason}"
    );
    assert_eq!(held["detail"]["reason"], reason);
    let gates = held["gates"].as_array().expect("gates");
    assert_eq!(gates.len(), 2, "{held}");
    assert_eq!(gates[0]["gate"], "latency_p95_ms <= 300");
    assert_eq!(gates[0]["max"], 300.0);
    assert_eq!(gates[0]["samples"], 0);
    assert_eq!(gates[0]["verdict"], "inconclusive");
    assert_eq!(
        gates[0]["why"],
        "0 requests < min_samples 200, ~200 more to decide"
    );
    assert_eq!(gates[1]["gate"], "error_rate <= 0.03");
    assert_eq!(gates[1]["max"], 0.03);
    // The operator's promotion still shows the latest evaluation's gates.
    assert_eq!(bodies[3]["rollout"]["step"], 3);
    assert_eq!(bodies[3]["rollout"]["stepDescription"], "manual approval");
    assert_eq!(bodies[3]["gates"].as_array().expect("gates").len(), 2);
    assert_eq!(bodies[4]["rollout"]["phase"], "awaiting_approval");
    assert_eq!(bodies[4]["detail"]["step"], 2);
    assert_eq!(bodies[5]["rollout"]["stepDescription"], "canary 100%");
    let done = &bodies[6];
    assert_eq!(done["rollout"]["phase"], "completed");
    assert_eq!(done["rollout"]["step"], 4);

    // Slack: Block Kit, same numbers, no signature headers.
    assert!(
        slacks
            .iter()
            .all(|r| r.path == "/services/T0/B0/slacksecret"
                && r.header("content-type") == Some("application/json")
                && r.header("x-edgecd-signature-256").is_none())
    );
    assert_eq!(
        events(&slacks, |b| b["blocks"][0]["text"]["text"]
            .as_str()
            .expect("header")
            .to_string()),
        [
            "Rollout started: app@1.0.0",
            "Rollout promoted to step 2/4: app@1.0.0",
            "Rollout held: app@1.0.0",
            "Rollout promoted to step 3/4: app@1.0.0",
            "Rollout needs approval: app@1.0.0",
            "Rollout promoted to step 4/4: app@1.0.0",
            "Rollout completed: app@1.0.0",
        ]
    );
    let m = slacks[2].json();
    assert_eq!(m["blocks"][0]["type"], "header");
    assert!(
        m["text"].as_str().expect("text").starts_with(&format!(
            "Rollout held: app@1.0.0 — rollout {id}, step 2/4: analyze 1s every 1m, phase progressing, cohort 1 devices, reason: analysis window over without a decision"
        )),
        "{m}"
    );
    assert_eq!(
        m["blocks"][1]["text"]["text"].as_str().expect("reason"),
        format!("*Reason:* {}", reason.replace('<', "&lt;"))
    );
    let fields: Vec<&str> = m["blocks"][2]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["text"].as_str().expect("field"))
        .collect();
    assert_eq!(
        fields,
        [
            format!("*Rollout*\n{id}").as_str(),
            "*Release*\napp@1.0.0",
            "*Baseline*\nnone",
            "*Step*\n2/4: analyze 1s every 1m",
            "*Phase*\nprogressing",
            "*Cohort*\n1 devices"
        ]
    );
    let gate_text = m["blocks"][3]["text"]["text"].as_str().expect("gates");
    assert!(
        gate_text.starts_with(
            "*Gates (latest evaluation)*\n:hourglass_flowing_sand: `latency_p95_ms &lt;= 300` "
        ),
        "{gate_text}"
    );
    assert!(
        gate_text.contains("(max 300; 0 samples): inconclusive (0 requests &lt; min_samples 200, ~200 more to decide)"),
        "{gate_text}"
    );
    assert!(gate_text.contains("`error_rate &lt;= 0.03`"), "{gate_text}");
    assert_eq!(
        m["blocks"][4]["text"]["text"],
        format!("<{link}|Open rollout {id}>  ·  <https://wiki.example/rollout-runbook|Runbook>")
    );

    // Teams: an Adaptive Card in the workflow envelope.
    assert!(
        cards
            .iter()
            .all(|r| r.path == "/workflows/abc/triggers/manual?sig=teamssecret")
    );
    let c = cards[2].json();
    assert_eq!(c["type"], "message");
    let a = &c["attachments"][0];
    assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &a["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert!(["1.4", "1.5"].contains(&card["version"].as_str().expect("version")));
    assert_eq!(card["body"][0]["text"], "Rollout held: app@1.0.0");
    let facts: Vec<(String, String)> = card["body"][1]["facts"]
        .as_array()
        .expect("facts")
        .iter()
        .map(|f| {
            (
                f["title"].as_str().expect("title").to_string(),
                f["value"].as_str().expect("value").to_string(),
            )
        })
        .collect();
    assert_eq!(
        facts,
        [
            ("Rollout", id.as_str()),
            ("Release", "app@1.0.0"),
            ("Baseline", "none"),
            ("Step", "2/4: analyze 1s every 1m"),
            ("Phase", "progressing"),
            ("Cohort", "1 devices"),
            ("Reason", reason),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(
        card["body"][3]["facts"][0]["title"],
        "latency_p95_ms <= 300"
    );
    assert!(
        card["body"][3]["facts"][0]["value"]
            .as_str()
            .expect("value")
            .ends_with("(max 300; 0 samples): inconclusive (0 requests < min_samples 200, ~200 more to decide)")
    );
    assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
    assert_eq!(card["actions"][0]["url"], link.as_str());
    assert_eq!(
        card["actions"][1]["url"],
        "https://wiki.example/rollout-runbook"
    );

    // A second rollout without its own runbook: the channel's runbook; abort → aborted.
    let id2 = h.start_rollout(
        "release: app@1.0.0\nsteps:\n  - canary: {devices: 1}\n  - approve: {}\nnotify: [ops-teams]\n",
    );
    teams.wait(10, Duration::from_secs(10));
    h.wait_phase(&id2, "awaiting_approval", Duration::from_secs(5));
    h.command(&id2, "abort");
    let cards = teams.wait(11, Duration::from_secs(10));
    let c = cards[10].json();
    let card = &c["attachments"][0]["content"];
    assert_eq!(card["body"][0]["text"], "Rollout aborted: app@1.0.0");
    assert_eq!(card["body"][0]["color"], "Attention");
    assert!(
        card["body"][1]["facts"]
            .as_array()
            .expect("facts")
            .contains(&json!({"title": "Reason", "value": "aborted by an operator"}))
    );
    assert_eq!(
        card["actions"][0]["url"],
        format!("https://edgecd.example.com/api/v1/admin/rollouts/{id2}")
    );
    assert_eq!(
        card["actions"][1]["url"],
        "https://wiki.example/teams-runbook"
    );

    // Counted; zeros present; promtool-clean.
    std::thread::sleep(Duration::from_millis(200));
    let m = h.metrics();
    assert_eq!(counter(&m, "ops-slack", "slack", "delivered"), 7.0);
    assert_eq!(counter(&m, "ops-teams", "teams", "delivered"), 11.0);
    assert_eq!(counter(&m, "audit-hook", "webhook", "delivered"), 7.0);
    assert_eq!(counter(&m, "audit-hook", "webhook", "failed"), 0.0);
    assert_eq!(counter(&m, "audit-hook", "webhook", "deferred"), 0.0);
    assert_eq!(attempts(&m, "ops-teams", "teams"), 11.0);
    assert!(
        m.contains("# TYPE edgecd_server_notifications_total counter"),
        "{m}"
    );
    edgecd_testkit::assert_promtool_clean(&m);
    // Nothing was sent twice.
    assert_eq!(slack.requests().len(), 7);
    assert_eq!(hook.requests().len(), 7);
}

#[test]
fn failed_deliveries_are_retried_with_backoff_but_not_4xx() {
    let flaky = Receiver::start(
        vec![Reply::Status(500), Reply::Status(502)],
        Reply::Status(200),
    );
    let limited = Receiver::start(vec![Reply::TooMany(1)], Reply::Status(200));
    let broken = Receiver::start(vec![], Reply::Status(400));
    // A controller tick per hour: only the API's own events are sent.
    let h = H::start(
        &format!(
            r#"
channels:
  flaky: {{type: webhook, url: "{}/h", secret_env: EDGECD_TEST_HOOK_SECRET}}
  limited: {{type: slack, url: "{}/s"}}
  broken: {{type: teams, url: "{}/t"}}
retry: {{attempts: 4, initial_backoff_ms: 150, max_backoff_ms: 3000, timeout_ms: 3000}}
"#,
            flaky.url, limited.url, broken.url
        ),
        3_600_000,
    );
    let m = h.metrics();
    for (c, k) in [
        ("flaky", "webhook"),
        ("limited", "slack"),
        ("broken", "teams"),
    ] {
        for r in ["delivered", "failed", "deferred"] {
            assert_eq!(counter(&m, c, k, r), 0.0);
        }
        assert_eq!(attempts(&m, c, k), 0.0);
    }
    edgecd_testkit::assert_promtool_clean(&m);

    h.start_rollout(
        "release: app@1.0.0\nsteps:\n  - canary: {devices: 1}\nnotify: [flaky, limited, broken]\n",
    );
    let tries = flaky.wait(3, Duration::from_secs(10));
    // Backoff 150 ms, then 300 ms; the same delivery, signed afresh each time.
    assert!(
        tries[1].at - tries[0].at >= Duration::from_millis(140),
        "{:?}",
        tries[1].at - tries[0].at
    );
    assert!(
        tries[2].at - tries[1].at >= Duration::from_millis(290),
        "{:?}",
        tries[2].at - tries[1].at
    );
    for r in &tries {
        assert_eq!(verify_webhook(r)["event"], "started");
        assert_eq!(
            r.header("x-edgecd-delivery"),
            tries[0].header("x-edgecd-delivery")
        );
    }
    // Retry-After: 1 beats the 150 ms backoff.
    let tries = limited.wait(2, Duration::from_secs(10));
    assert!(
        tries[1].at - tries[0].at >= Duration::from_millis(950),
        "{:?}",
        tries[1].at - tries[0].at
    );
    assert_eq!(tries[0].body, tries[1].body);

    let until = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = h.metrics();
        if counter(&m, "flaky", "webhook", "delivered") == 1.0
            && counter(&m, "limited", "slack", "delivered") == 1.0
            && counter(&m, "broken", "teams", "failed") == 1.0
        {
            break m;
        }
        assert!(Instant::now() < until, "{m}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(attempts(&m, "flaky", "webhook"), 3.0);
    assert_eq!(attempts(&m, "limited", "slack"), 2.0);
    assert_eq!(attempts(&m, "broken", "teams"), 1.0, "a 400 is not retried");
    assert_eq!(counter(&m, "flaky", "webhook", "failed"), 0.0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(broken.requests().len(), 1);
    edgecd_testkit::assert_promtool_clean(&h.metrics());
}

#[test]
fn a_hanging_receiver_delays_neither_the_api_nor_the_controller() {
    let hung = Receiver::start(vec![], Reply::Hang);
    let ok = Receiver::start(vec![], Reply::Status(200));
    let h = H::start(
        &format!(
            r#"
channels:
  hung: {{type: slack, url: "{}/s"}}
  ok: {{type: slack, url: "{}/s"}}
retry: {{attempts: 3, initial_backoff_ms: 50, max_backoff_ms: 100, timeout_ms: 800}}
queue_capacity: 2
"#,
            hung.url, ok.url
        ),
        50,
    );
    let t = Instant::now();
    let id = h.start_rollout(
        "release: app@1.0.0\nsteps:\n  - canary: {devices: 1}\n  - approve: {}\nnotify: [hung, ok]\n",
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "start took {:?}",
        t.elapsed()
    );
    // The controller goes on: promoted, then awaiting approval, while `hung` has not answered.
    h.wait_phase(&id, "awaiting_approval", Duration::from_secs(5));
    hung.wait(1, Duration::from_secs(5));
    for cmd in ["pause", "abort"] {
        let t = Instant::now();
        h.command(&id, cmd);
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{cmd} took {:?}",
            t.elapsed()
        );
    }
    let m = h.metrics();
    assert_eq!(
        counter(&m, "hung", "slack", "delivered") + counter(&m, "hung", "slack", "failed"),
        0.0,
        "the first delivery is still pending:\n{m}"
    );
    // The other channel got everything promptly.
    let got = ok.wait(4, Duration::from_secs(3));
    assert_eq!(
        events(&got, |b| b["blocks"][0]["text"]["text"]
            .as_str()
            .expect("h")
            .to_string()),
        [
            "Rollout started: app@1.0.0",
            "Rollout promoted to step 2/2: app@1.0.0",
            "Rollout needs approval: app@1.0.0",
            "Rollout aborted: app@1.0.0"
        ]
    );
    // Timed out attempts are retried (same message), then the notification fails.
    let tries = hung.wait(3, Duration::from_secs(10));
    assert!(
        tries[1].at - tries[0].at >= Duration::from_millis(800),
        "{:?}",
        tries[1].at - tries[0].at
    );
    assert_eq!(tries[0].body, tries[1].body);
    let until = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = h.metrics();
        if counter(&m, "hung", "slack", "failed") >= 1.0 {
            break m;
        }
        assert!(Instant::now() < until, "{m}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(attempts(&m, "hung", "slack") >= 3.0, "{m}");
    // Four events met a queue of two behind a stuck delivery: one at least was deferred, and
    // none is lost: each is in the outbox, pending until its turn.
    assert!(counter(&m, "hung", "slack", "deferred") >= 1.0, "{m}");
    assert_eq!(counter(&m, "ok", "slack", "delivered"), 4.0, "{m}");
    assert_eq!(counter(&m, "ok", "slack", "deferred"), 0.0, "{m}");
    // What has not failed for good waits in the outbox, and the gauge says so.
    assert_eq!(
        value(&m, "edgecd_server_notifications_pending{channel=\"hung\"}"),
        Some(4.0 - counter(&m, "hung", "slack", "failed")),
        "{m}"
    );
    assert_eq!(
        value(&m, "edgecd_server_notifications_pending{channel=\"ok\"}"),
        Some(0.0),
        "{m}"
    );
    let hung_rows: Vec<String> = h
        .outbox()
        .into_iter()
        .filter(|r| r.4["channel"] == "hung")
        .map(|r| r.0)
        .collect();
    assert_eq!(
        hung_rows,
        ["started", "step_promoted", "approval_needed", "aborted"],
        "{m}"
    );
}

#[test]
fn without_channels_a_rollout_naming_one_is_refused() {
    let h = H::start("{}", 3_600_000);
    let (s, v) = h.admin(
        "POST",
        "/api/v1/admin/rollouts",
        Some(&json!({"spec": {"release": "app@1.0.0", "steps": [{"canary": {"devices": 1}}], "notify": ["ops"]}})),
    );
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]
            .as_str()
            .expect("error")
            .contains("no channels are configured (start the server with --notifications FILE)"),
        "{v}"
    );
    let m = h.metrics();
    assert!(
        m.contains("# TYPE edgecd_server_notification_attempts_total counter"),
        "{m}"
    );
    edgecd_testkit::assert_promtool_clean(&m);
    // Without notify the same rollout starts.
    h.start_rollout("release: app@1.0.0\nsteps:\n  - canary: {devices: 1}\n");
}

/// A free address on 127.0.0.1 nobody listens on (yet).
fn free_addr() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

fn hook_yaml(addr: std::net::SocketAddr, backoff_ms: u64, extra: &str) -> String {
    format!(
        "channels:\n  hook: {{type: webhook, url: \"http://{addr}/hook\", secret_env: EDGECD_TEST_HOOK_SECRET}}\nretry: {{attempts: 5, initial_backoff_ms: {backoff_ms}, max_backoff_ms: {backoff_ms}, timeout_ms: 2000}}\n{extra}"
    )
}

const TWO_STEPS: &str =
    "release: app@1.0.0\nsteps:\n  - canary: {devices: 1}\n  - approve: {}\nnotify: [hook]\n";

#[test]
fn pending_notifications_are_delivered_once_after_a_restart() {
    // The receiver is down (connection refused) while the rollout starts and is aborted.
    let addr = free_addr();
    let mut h = H::start(&hook_yaml(addr, 60_000, ""), 3_600_000);
    let id = h.start_rollout(TWO_STEPS);
    h.command(&id, "abort");
    // The first attempt failed and is recorded; the retry is a minute away; the second waits.
    h.wait_outbox(
        &[("started", "pending", 1), ("aborted", "pending", 0)],
        Duration::from_secs(10),
    );
    let before = h.outbox();
    assert_eq!(before[1].4["rollout"]["phase"], "aborted");
    let m = h.metrics();
    assert_eq!(attempts(&m, "hook", "webhook"), 1.0, "{m}");
    assert_eq!(counter(&m, "hook", "webhook", "delivered"), 0.0, "{m}");
    assert_eq!(counter(&m, "hook", "webhook", "failed"), 0.0, "{m}");
    h.stop();

    // The receiver is up; a new server on the same data dir (a queue of one: not everything
    // fits at start, the controller's outbox sweep queues the rest; the stored retry time is
    // capped by the new max_backoff). The rollout is over, so its passes change nothing else.
    let hook = Receiver::start_on(
        TcpListener::bind(addr).expect("rebind"),
        vec![],
        Reply::Status(200),
    );
    h.start_again(&hook_yaml(addr, 300, "queue_capacity: 1\n"), 100);
    let got = hook.wait(2, Duration::from_secs(15));
    h.wait_outbox(
        &[("started", "delivered", 2), ("aborted", "delivered", 1)],
        Duration::from_secs(10),
    );
    // Several sweeps later: still exactly once each, in order, with the stored delivery ids.
    std::thread::sleep(Duration::from_millis(1000));
    let got_after = hook.requests();
    assert_eq!(got_after.len(), 2);
    assert_eq!(
        got.iter()
            .map(|r| verify_webhook(r)["event"]
                .as_str()
                .expect("event")
                .to_string())
            .collect::<Vec<_>>(),
        ["started", "aborted"]
    );
    for (r, row) in got.iter().zip(&before) {
        assert_eq!(r.header("x-edgecd-delivery"), Some(row.1.as_str()));
        assert_eq!(r.json()["rollout"]["id"], id.as_str());
    }
    let m = h.metrics();
    assert_eq!(counter(&m, "hook", "webhook", "delivered"), 2.0, "{m}");
    assert_eq!(attempts(&m, "hook", "webhook"), 2.0, "{m}");
    edgecd_testkit::assert_promtool_clean(&m);
}

#[test]
fn delivered_notifications_are_not_sent_again_after_a_restart() {
    let hook = Receiver::start(vec![], Reply::Status(200));
    let yaml = format!(
        "channels:\n  hook: {{type: webhook, url: \"{}/hook\", secret_env: EDGECD_TEST_HOOK_SECRET}}\n",
        hook.url
    );
    let mut h = H::start(&yaml, 3_600_000);
    // Finished before the restart, so the new server's controller has nothing to announce.
    let id = h.start_rollout(TWO_STEPS);
    h.command(&id, "abort");
    hook.wait(2, Duration::from_secs(10));
    let done = [("started", "delivered", 1), ("aborted", "delivered", 1)];
    h.wait_outbox(&done, Duration::from_secs(10));
    h.stop();
    h.start_again(&yaml, 3_600_000);
    // Ten sweeps (every 100 ms in these tests) later, nothing was sent again.
    std::thread::sleep(Duration::from_millis(1000));
    let got = hook.requests();
    assert_eq!(
        got.iter()
            .map(|r| r.json()["event"].as_str().expect("event").to_string())
            .collect::<Vec<_>>(),
        ["started", "aborted"]
    );
    h.wait_outbox(&done, Duration::ZERO);
    let m = h.metrics();
    assert_eq!(attempts(&m, "hook", "webhook"), 0.0, "{m}");
    assert_eq!(counter(&m, "hook", "webhook", "delivered"), 0.0, "{m}");
}

#[test]
fn a_notification_is_saved_only_with_the_state_it_announces() {
    let hook = Receiver::start(vec![], Reply::Status(200));
    let h = H::start(
        &format!(
            "channels:\n  hook: {{type: webhook, url: \"{}/hook\", secret_env: EDGECD_TEST_HOOK_SECRET}}\n",
            hook.url
        ),
        3_600_000,
    );
    let id = h.start_rollout(TWO_STEPS);
    // Saved with the state it announces.
    let rows = h.outbox();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "started");
    assert_eq!(rows[0].4["rollout"]["id"], id.as_str());
    let history = |h: &H| {
        let (s, v) = h.admin("GET", &format!("/api/v1/admin/rollouts/{id}/history"), None);
        assert_eq!(s, 200, "{v}");
        v.as_array().expect("records").len()
    };
    let records = history(&h);
    hook.wait(1, Duration::from_secs(10));

    // The outbox refuses writes: the abort's state is not saved either.
    let exec = |sql: &str| {
        h.srv
            .block_on(h.srv.state.store.execute_raw(sql))
            .expect(sql);
    };
    let postgres = h.srv.state.store.backend() == "postgres";
    if postgres {
        exec(
            "CREATE FUNCTION refuse_outbox() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'outbox refused'; END $$ LANGUAGE plpgsql",
        );
        exec(
            "CREATE TRIGGER refuse_outbox BEFORE INSERT ON notification_outbox FOR EACH ROW EXECUTE FUNCTION refuse_outbox()",
        );
    } else {
        exec(
            "CREATE TRIGGER refuse_outbox BEFORE INSERT ON notification_outbox BEGIN SELECT RAISE(ABORT, 'outbox refused'); END",
        );
    }
    let (s, v) = h.admin("POST", &format!("/api/v1/admin/rollouts/{id}/abort"), None);
    assert_eq!(s, 500, "{v}");
    let (_, v) = h.admin("GET", &format!("/api/v1/admin/rollouts/{id}"), None);
    assert_eq!(v["rollout"]["state"]["phase"], "progressing", "{v}");
    assert_eq!(history(&h), records, "no audit record of the abort");
    assert_eq!(h.outbox().len(), 1);

    // Once it accepts them again, the abort is saved with its notification.
    exec(if postgres {
        "DROP TRIGGER refuse_outbox ON notification_outbox"
    } else {
        "DROP TRIGGER refuse_outbox"
    });
    h.command(&id, "abort");
    let rows = h.outbox();
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["started", "aborted"]
    );
    assert_eq!(rows[1].4["rollout"]["phase"], "aborted");
    let got = hook.wait(2, Duration::from_secs(10));
    assert_eq!(verify_webhook(&got[1])["event"], "aborted");
}
