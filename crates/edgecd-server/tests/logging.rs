//! The server's request log at its default level (INFO) is not flooded by a healthy fleet's
//! polling: successful check-ins log at DEBUG; enrollments and refused check-ins stay at INFO.
//! (Its own test binary: it installs the process-wide subscriber.)

use edgecd_server::{Config, EmbeddedServer};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

fn post(url: &str, auth: Option<&str>, body: &Value) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.post(url).header("content-type", "application/json");
    if let Some(a) = auth {
        r = r.header("authorization", &format!("Bearer {a}"));
    }
    let mut resp = r.send(body.to_string()).expect("POST");
    let text = resp.body_mut().read_to_string().expect("body");
    (resp.status().as_u16(), text)
}

#[test]
fn checkins_log_at_debug_and_the_rest_at_info() {
    let cap = Capture::default();
    // The server's own filter is `info`; capture DEBUG too, to see where check-ins went.
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,edgecd_server=debug",
        ))
        .with_writer(cap.clone())
        .init();

    let d = tempfile::tempdir().expect("tmp");
    let mut cfg = Config::new(d.path().join("data"));
    cfg.database = edgecd_testkit::postgres::database_for(&cfg.data_dir);
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    let srv = EmbeddedServer::start(cfg).expect("start");
    let url = format!("http://{}", srv.addr);

    let (s, t) = post(
        &format!("{url}/api/v1/admin/enrollment-tokens"),
        Some(&srv.admin_token),
        &json!({}),
    );
    assert_eq!(s, 200, "{t}");
    let token: Value = serde_json::from_str(&t).expect("token");
    let inventory = json!({"board": "rpi5", "ramMb": 4096, "agentVersion": "test"});
    let (s, t) = post(
        &format!("{url}/api/v1/devices/enroll"),
        None,
        &json!({"token": token["token"], "inventory": inventory}),
    );
    assert_eq!(s, 200, "{t}");
    let dev: Value = serde_json::from_str(&t).expect("enrollment");
    let checkin_url = format!(
        "{url}/api/v1/devices/{}/checkin",
        dev["deviceId"].as_str().expect("id")
    );
    let checkin =
        json!({"inventory": inventory, "status": {"phase": "idle", "assignmentVersion": 0}});
    for _ in 0..3 {
        let (s, t) = post(&checkin_url, dev["credential"].as_str(), &checkin);
        assert_eq!(s, 200, "{t}");
    }
    let (s, _) = post(&checkin_url, Some("edc_nobody.wrong"), &checkin);
    assert_eq!(s, 401);
    drop(srv);

    // Each request's log line: (level, path, status).
    let text = String::from_utf8(cap.0.lock().expect("capture").clone()).expect("utf8");
    let requests: Vec<(String, String, u64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "request")
        .map(|v| {
            (
                v["level"].as_str().unwrap_or("").to_string(),
                v["fields"]["path"].as_str().unwrap_or("").to_string(),
                v["fields"]["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let checkins: Vec<_> = requests
        .iter()
        .filter(|(_, p, _)| p.ends_with("/checkin"))
        .collect();
    assert_eq!(checkins.len(), 4, "{text}");
    for (level, _, status) in &checkins {
        let expected = if *status == 200 { "DEBUG" } else { "INFO" };
        assert_eq!(level, expected, "check-in answered {status}:\n{text}");
    }
    assert!(
        requests
            .iter()
            .any(|(l, p, s)| l == "INFO" && p == "/api/v1/devices/enroll" && *s == 200),
        "{text}"
    );
    assert!(text.contains("device enrolled"), "{text}");
}
