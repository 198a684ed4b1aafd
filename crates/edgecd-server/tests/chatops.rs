//! ChatOps over real HTTP on 127.0.0.1: the Slack message of a rollout waiting for approval
//! carries the buttons; correctly and wrongly signed Slack interactions and Teams requests
//! are posted to a real server — bad signature, stale timestamp, replay, unmapped user, a
//! role too low — and each refusal leaves the rollout as it was, while the accepted ones
//! approve, roll back and abort it through the JSON API's code, update the Slack message
//! through its `response_url` (a local receiver) and land in the audit log naming the chat
//! user.

use base64::Engine as _;
use edgecd_server::chatops::{ChatConfig, ChatIdentity};
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

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5-test";
/// 32 bytes, base64 (what Teams shows when an outgoing webhook is created).
const TEAMS_SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM=";

// ---- a local HTTP receiver (Slack's incoming webhook and response_url) ----

struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(vec![]));
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                if let Some(r) = read_request(&mut c) {
                    s.lock().expect("lock").push(r);
                }
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
            }
        });
        Self { url, seen }
    }

    fn requests(&self) -> Vec<(String, Value)> {
        self.seen.lock().expect("lock").clone()
    }

    /// Waits for a request to `path_prefix` matching `f`.
    fn wait_for(&self, path_prefix: &str, f: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((_, v)) = self
                .requests()
                .into_iter()
                .find(|(p, v)| p.starts_with(path_prefix) && f(v))
            {
                return v;
            }
            assert!(
                Instant::now() < until,
                "no matching request to {path_prefix}: {:?}",
                self.requests()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_request(c: &mut TcpStream) -> Option<(String, Value)> {
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
    let path = head.lines().next()?.split(' ').nth(1)?.to_string();
    let len: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let k = c.read(&mut chunk).ok()?;
        if k == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..k]);
    }
    Some((path, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// HMAC-SHA256 written out from RFC 2104, independent of the server's `hmac` crate.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
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
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Form-encodes `s` (application/x-www-form-urlencoded).
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn rfc3339(secs: i64) -> String {
    edgecd_bundle::release::rfc3339_utc(secs as u64)
}

// ---- the server ----

struct H {
    _dir: tempfile::TempDir,
    srv: EmbeddedServer,
    url: String,
    http: ureq::Agent,
    device: (String, String),
}

impl H {
    fn start(receiver: &Receiver) -> Self {
        let d = tempfile::tempdir().expect("tmp");
        let mut cfg = Config::new(d.path().join("data"));
        cfg.database = edgecd_testkit::postgres::database_for(&cfg.data_dir);
        cfg.listen = "127.0.0.1:0".parse().expect("addr");
        cfg.controller_tick_ms = 50;
        cfg.notifications = NotifyConfig::from_yaml(
            &format!(
                "channels:\n  ops: {{type: slack, url: \"{}/services/T0/B0/x\"}}\n",
                receiver.url
            ),
            d.path(),
            &|_| None,
        )
        .expect("notifications");
        cfg.notifications.sweep_interval = Duration::from_millis(100);
        cfg.chat = ChatConfig {
            slack_signing_secret: Some(edgecd_server::util::Secret::new(SLACK_SECRET)),
            teams_secret: Some(edgecd_server::util::Secret::new(TEAMS_SECRET)),
            users: ChatConfig::parse_users(
                "slack:UAPPROVER approver\nslack:UVIEWER viewer\nslack:UALICE token:alice\nteams:aad-lead approver\nteams:aad-intern viewer\n",
            )
            .expect("users"),
            slack_response_url_prefixes: vec![format!("{}/actions/", receiver.url)],
        };
        assert_eq!(
            cfg.chat.users["slack:UALICE"],
            ChatIdentity::Token("alice".into())
        );
        let srv = EmbeddedServer::start(cfg).expect("start");
        let url = format!("http://{}", srv.addr);
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let mut h = Self {
            _dir: d,
            srv,
            url,
            http,
            device: (String::new(), String::new()),
        };
        let ci = SigningKey::generate();
        let (s, t) = h.admin(
            "POST",
            "/api/v1/admin/keys",
            Some(&json!({"publicKeyPem": ci.verifying_key().to_spki_pem()})),
        );
        assert_eq!(s, 200, "{t}");
        for v in ["1.0.0", "1.1.0"] {
            h.publish(&ci, v);
        }
        let (s, t) = h.admin("POST", "/api/v1/admin/enrollment-tokens", Some(&json!({})));
        assert_eq!(s, 200, "{t}");
        let (s, e) = h.admin(
            "POST",
            "/api/v1/devices/enroll",
            Some(&json!({"token": t["token"], "inventory": inventory()})),
        );
        assert_eq!(s, 200, "{e}");
        h.device = (
            e["deviceId"].as_str().expect("id").into(),
            e["credential"].as_str().expect("cred").into(),
        );
        h.report_running("1.0.0");
        h
    }

    /// The device checks in saying it runs `version`.
    fn report_running(&self, version: &str) {
        let req = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}/api/v1/devices/{}/checkin", self.url, self.device.0))
            .header("authorization", format!("Bearer {}", self.device.1))
            .header("content-type", "application/json")
            .body(
                json!({"inventory": inventory(), "status": {"phase": "committed", "assignmentVersion": 0,
                    "running": {"app": "app", "version": version, "bundleDigest": "sha256:x", "slot": "a"}}})
                .to_string()
                .into_bytes(),
            )
            .expect("request");
        assert_eq!(self.http.run(req).expect("checkin").status().as_u16(), 200);
    }

    fn publish(&self, ci: &SigningKey, version: &str) {
        let rel = fixtures::make_release(
            &self._dir.path().join(format!("rel-{version}")),
            ci,
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

    fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut r = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url));
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        let mut resp = self.http.run(r.body(body).expect("request")).expect("http");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call(
            method,
            path,
            &[
                ("authorization", format!("Bearer {}", self.srv.admin_token)),
                ("content-type", "application/json".into()),
            ],
            body.map(|b| b.to_string()).unwrap_or_default().into_bytes(),
        )
    }

    fn rollout(&self, id: &str) -> Value {
        let (s, v) = self.admin("GET", &format!("/api/v1/admin/rollouts/{id}"), None);
        assert_eq!(s, 200, "{v}");
        v["rollout"]["state"].clone()
    }

    fn wait_phase(&self, id: &str, phase: &str) {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.rollout(id);
            if st["phase"] == phase {
                return;
            }
            assert!(Instant::now() < until, "never reached {phase}: {st}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a rollout of app@1.1.0 that waits for approval once the canary runs it.
    fn rollout_awaiting_approval(&self) -> String {
        let (s, v) = self.admin(
            "POST",
            "/api/v1/admin/rollouts",
            Some(&json!({"spec": {"release": "app@1.1.0", "steps": [{"canary": {"devices": 1}}, {"approve": {}}, {"canary": {"percent": 100}}], "notify": ["ops"]}})),
        );
        assert_eq!(s, 200, "{v}");
        let id = v["rollout"]["id"].as_str().expect("id").to_string();
        self.report_running("1.1.0");
        self.wait_phase(&id, "awaiting_approval");
        id
    }

    /// Posts a Slack interaction pressing `value` as `user`, signed at `ts` with `secret`.
    fn slack(
        &self,
        user: &str,
        value: &str,
        ts: i64,
        secret: &str,
        response_url: &str,
    ) -> (u16, Value, Vec<u8>, Vec<(&'static str, String)>) {
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user, "username": user.to_lowercase()},
            "actions": [{"action_id": "edgecd_x", "value": value, "type": "button"}],
            "response_url": response_url,
            "message": {"blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "Rollout needs approval"}},
                {"type": "actions", "block_id": "edgecd_actions", "elements": []}
            ]}
        });
        let body = format!("payload={}", form_encode(&payload.to_string())).into_bytes();
        let mut signed = format!("v0:{ts}:").into_bytes();
        signed.extend_from_slice(&body);
        let sig = format!(
            "v0={}",
            hex::encode(hmac_sha256(secret.as_bytes(), &signed))
        );
        let headers = vec![
            (
                "content-type",
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("x-slack-request-timestamp", ts.to_string()),
            ("x-slack-signature", sig),
        ];
        let (s, v) = self.call("POST", "/api/v1/hooks/slack", &headers, body.clone());
        (s, v, body, headers)
    }

    /// Posts a Teams activity signed with `secret` (base64).
    fn teams(&self, activity: &Value, secret_b64: &str) -> (u16, Value, Vec<u8>, String) {
        let body = activity.to_string().into_bytes();
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret_b64)
            .expect("base64");
        let auth = format!(
            "HMAC {}",
            base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, &body))
        );
        let (s, v) = self.call(
            "POST",
            "/api/v1/hooks/teams",
            &[
                ("authorization", auth.clone()),
                ("content-type", "application/json".into()),
            ],
            body.clone(),
        );
        (s, v, body, auth)
    }

    fn audit(&self) -> Vec<Value> {
        let (s, v) = self.admin("GET", "/api/v1/admin/audit?limit=1000", None);
        assert_eq!(s, 200, "{v}");
        v.as_array().expect("records").clone()
    }

    fn assigned(&self) -> String {
        let (_, v) = self.admin(
            "GET",
            &format!("/api/v1/admin/devices/{}", self.device.0),
            None,
        );
        v["assigned"].as_str().unwrap_or_default().to_string()
    }
}

fn inventory() -> Value {
    json!({"board": "rpi5", "ramMb": 4096, "runtimes": {"edgecd-infer": "0.1.0"}, "agentVersion": "test"})
}

fn message(from: &str, text: &str, at: i64) -> Value {
    json!({
        "type": "message",
        "id": format!("{at}{from}"),
        "timestamp": rfc3339(at),
        "text": text,
        "from": {"id": "29:x", "name": format!("Person {from}"), "aadObjectId": from}
    })
}

#[test]
fn slack_and_teams_actions_are_verified_mapped_and_audited() {
    let rx = Receiver::start();
    let h = H::start(&rx);
    let response_url = format!("{}/actions/T0/1234/abcd", rx.url);
    let id = h.rollout_awaiting_approval();

    // The message asking for approval carries the buttons, each naming rollout and action.
    let msg = rx.wait_for("/services/", |v| {
        v["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Rollout needs approval")
    });
    let blocks = msg["blocks"].as_array().expect("blocks");
    let actions = blocks
        .iter()
        .find(|b| b["type"] == "actions")
        .expect("buttons");
    let values: Vec<&str> = actions["elements"]
        .as_array()
        .expect("elements")
        .iter()
        .map(|e| e["value"].as_str().expect("value"))
        .collect();
    assert_eq!(values, [format!("approve:{id}"), format!("abort:{id}")]);

    let approve = format!("approve:{id}");
    let now = unix_now();
    let unchanged = |why: &str| {
        let st = h.rollout(&id);
        assert_eq!(
            st["phase"], "awaiting_approval",
            "{why} changed the rollout: {st}"
        );
    };
    // Wrong signing secret.
    let (s, v, _, _) = h.slack(
        "UAPPROVER",
        &approve,
        now,
        "not-the-secret-0123456789",
        &response_url,
    );
    assert_eq!(s, 401, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("does not match"),
        "{v}"
    );
    unchanged("a bad signature");
    // Correctly signed, but 10 minutes old.
    let (s, v, _, _) = h.slack(
        "UAPPROVER",
        &approve,
        now - 600,
        SLACK_SECRET,
        &response_url,
    );
    assert_eq!(s, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("stale"), "{v}");
    unchanged("a stale request");
    // A body changed after signing.
    let (_, _, body, headers) = h.slack("UNOBODY", &approve, now, SLACK_SECRET, &response_url);
    let mut tampered = body.clone();
    let at = tampered
        .windows(7)
        .position(|w| w == b"UNOBODY")
        .expect("user in body");
    tampered[at..at + 7].copy_from_slice(b"UAPPROV");
    let (s, _) = h.call("POST", "/api/v1/hooks/slack", &headers, tampered);
    assert_eq!(s, 401);
    unchanged("a tampered body");
    // Correctly signed by an unmapped user (the request above): refused, told privately.
    let note = rx.wait_for("/actions/", |v| v["response_type"] == "ephemeral");
    assert!(
        note["text"].as_str().unwrap().contains("slack:UNOBODY"),
        "{note}"
    );
    unchanged("an unmapped user");
    // A viewer, and a deployer (through token alice): approving needs approver.
    let (s, v) = h.admin(
        "POST",
        "/api/v1/admin/tokens",
        Some(&json!({"name": "alice", "role": "deployer"})),
    );
    assert_eq!(s, 200, "{v}");
    for (user, role) in [("UVIEWER", "viewer"), ("UALICE", "deployer")] {
        let (s, v, _, _) = h.slack(user, &approve, now, SLACK_SECRET, &response_url);
        assert_eq!(s, 403, "{v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("needs role approver") && e.contains(role), "{e}");
        unchanged("a role too low");
    }
    // The approver: approved through the JSON API's code; the message loses its buttons and
    // says who did it.
    let (s, v, body, headers) = h.slack("UAPPROVER", &approve, now, SLACK_SECRET, &response_url);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["action"], "approve");
    h.wait_phase(&id, "completed");
    let update = rx.wait_for("/actions/", |v| v["replace_original"] == true);
    assert!(
        update["text"]
            .as_str()
            .unwrap()
            .starts_with("Approved by <@UAPPROVER>"),
        "{update}"
    );
    let kinds: Vec<&str> = update["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["header", "context"], "buttons removed");
    // The same request again: a replay, refused before anything runs.
    let (s, v) = h.call("POST", "/api/v1/hooks/slack", &headers, body);
    assert_eq!(s, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("replayed"), "{v}");

    // Teams: the completed rollout rolled back from an outgoing-webhook message.
    let rollback = format!("<at>edgecd</at> rollback {id}");
    let now = unix_now();
    let (s, _, _, _) = h.teams(
        &message("aad-lead", &rollback, now),
        "d3JvbmctdGVhbXMtc2VjcmV0LTAxMjM0NTY3ODk=",
    );
    assert_eq!(s, 401, "a wrong secret");
    let (s, v, _, _) = h.teams(&message("aad-lead", &rollback, now - 900), TEAMS_SECRET);
    assert_eq!(s, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("stale"), "{v}");
    let (s, v, _, _) = h.teams(&message("aad-stranger", &rollback, now), TEAMS_SECRET);
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not mapped"), "{v}");
    let (s, v, _, _) = h.teams(&message("aad-intern", &rollback, now), TEAMS_SECRET);
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("needs role deployer"),
        "{v}"
    );
    assert_eq!(
        h.rollout(&id)["phase"],
        "completed",
        "refusals changed nothing"
    );
    assert_eq!(h.assigned(), "app@1.1.0");
    let lead = message("aad-lead", &rollback, now);
    let (s, v, body, auth) = h.teams(&lead, TEAMS_SECRET);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["type"], "message");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .starts_with("Rolled back by Person aad-lead"),
        "{v}"
    );
    let st = h.rollout(&id);
    assert_eq!(st["phase"], "aborted", "{st}");
    assert_eq!(
        h.assigned(),
        "app@1.0.0",
        "the device is sent back to the baseline"
    );
    let (s, _) = h.call(
        "POST",
        "/api/v1/hooks/teams",
        &[
            ("authorization", auth),
            ("content-type", "application/json".into()),
        ],
        body,
    );
    assert_eq!(s, 401, "a replayed Teams request");

    // A card button (Action.Execute) relayed with the same signature, then Slack's Abort
    // by a deployer (token alice) — and once alice's token is revoked, nothing more.
    h.report_running("1.0.0");
    let id2 = h.rollout_awaiting_approval();
    let invoke = json!({
        "type": "invoke", "name": "adaptiveCard/action", "timestamp": rfc3339(unix_now()),
        "from": {"id": "29:y", "name": "Lead", "aadObjectId": "aad-lead"},
        "value": {"action": {"type": "Action.Execute", "verb": "approve", "data": {"rollout": id2, "action": "approve"}}}
    });
    let (s, v, _, _) = h.teams(&invoke, TEAMS_SECRET);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["type"], "application/vnd.microsoft.card.adaptive");
    assert!(
        v["value"]["body"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Approved by Lead")
    );
    h.wait_phase(&id2, "completed");
    h.report_running("1.0.0");
    let id3 = h.rollout_awaiting_approval();
    let (s, v) = h.admin("POST", "/api/v1/admin/tokens/alice/revoke", None);
    assert_eq!(s, 200, "{v}");
    let (s, v, _, _) = h.slack(
        "UALICE",
        &format!("abort:{id3}"),
        unix_now(),
        SLACK_SECRET,
        &response_url,
    );
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("revoked"), "{v}");
    assert_eq!(h.rollout(&id3)["phase"], "awaiting_approval");
    let (s, v, _, _) = h.slack(
        "UAPPROVER",
        &format!("abort:{id3}"),
        unix_now(),
        SLACK_SECRET,
        &response_url,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.rollout(&id3)["phase"], "aborted");

    // The audit log names every chat user who acted or tried, with the outcome.
    let audit = h.audit();
    let find = |token: &str, status: u64, action: &str, rollout: &str| {
        audit.iter().any(|r| {
            r["token"] == token
                && r["status"] == status
                && r["summary"]["action"] == action
                && r["summary"]["rollout"] == rollout
                && r["path"] == format!("/api/v1/admin/rollouts/{rollout}/{action}")
        })
    };
    assert!(find("slack:UAPPROVER", 200, "approve", &id), "{audit:#?}");
    assert!(find("slack:UVIEWER", 403, "approve", &id));
    assert!(find("slack:UALICE (token alice)", 403, "approve", &id));
    assert!(find("slack:UNOBODY", 403, "approve", &id));
    assert!(find("teams:aad-lead", 200, "rollback", &id));
    assert!(find("teams:aad-intern", 403, "rollback", &id));
    assert!(find("teams:aad-lead", 200, "approve", &id2));
    assert!(find("slack:UAPPROVER", 200, "abort", &id3));
    let approved = audit
        .iter()
        .find(|r| r["token"] == "slack:UAPPROVER" && r["status"] == 200)
        .unwrap();
    assert_eq!(approved["role"], "approver");
    assert_eq!(approved["summary"]["via"], "slack");
    assert_eq!(approved["route"], "/api/v1/hooks/slack");
    // Signature failures and replays are not people: nothing recorded for them.
    assert_eq!(
        audit
            .iter()
            .filter(|r| r["summary"]["via"] == "slack")
            .count(),
        6,
        "{audit:#?}"
    );
}
