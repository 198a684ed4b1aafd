//! Troubleshooting a device without SSH, end to end: a real `edgecd-agent` process against
//! a real server, driven through the `edgecd` binary. `edgecd device logs` reaches the
//! device over its check-in channel (while its check-ins are 304s), the answer arrives in
//! bounded time, is bounded in size, has the planted secrets redacted and carries both the
//! agent's and the runtime's lines; `--follow` prints new lines as they appear; a viewer is
//! refused. `edgecd device diagnose` reports inventory, slots, the install attempts with a
//! rollback's reason, free disk, temperatures and the runtime's health with the device's
//! real values.
mod common;
use common::{edgecd, sibling};
use edgecd_cli::story::Lab;
use edgecd_testkit::wait_for;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn cli(lab: &Lab, token: &str, args: &[&str]) -> std::process::Output {
    edgecd()
        .args(args)
        .args(["--server", &lab.url(), "--token", token])
        .env_remove("EDGECD_SERVER")
        .env_remove("EDGECD_TOKEN")
        .output()
        .expect("run edgecd")
}

fn ok_json(lab: &Lab, token: &str, args: &[&str]) -> serde_json::Value {
    let out = cli(lab, token, args);
    assert!(
        out.status.success(),
        "edgecd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn running(lab: &Lab) -> Option<String> {
    lab.admin.list_devices().ok()?.first().and_then(|d| {
        d.status
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .map(|r| r.version.clone())
    })
}

fn agent_log_tail(d: &Path) -> String {
    std::fs::read_to_string(d.join("agent.log"))
        .unwrap_or_default()
        .lines()
        .rev()
        .take(15)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn logs_and_diagnosis_of_a_real_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let lab = Lab::start(d, 1, 250).unwrap();
    lab.release("1.0.0", 1).unwrap();
    lab.release("1.1.0", 2).unwrap();
    let enroll = lab
        .admin
        .create_token(&edgecd_api::protocol::CreateTokenRequest {
            labels: [("fleet".to_string(), "retail".to_string())].into(),
            expires_in_secs: Some(600),
            max_uses: Some(1),
        })
        .unwrap()
        .token;
    // The runtime's log: 2 MiB of lines (far above the bound) with a planted secret near the end.
    let runtime_log = d.join("runtime.log");
    {
        let mut f = std::fs::File::create(&runtime_log).unwrap();
        for i in 0..7000 {
            writeln!(f, "runtime line {i:05} {}", "r".repeat(280)).unwrap();
        }
        writeln!(
            f,
            "loaded model; Authorization: Bearer rt-planted-bearer-0123456789"
        )
        .unwrap();
        writeln!(f, "runtime ready").unwrap();
    }
    let thermal = d.join("temp");
    std::fs::write(&thermal, "48250\n").unwrap();
    // 1.1.0 fails its health check and says a secret while doing so: the agent rolls back
    // and logs the reason.
    let health = r#"case "$EDGECD_RELEASE" in *1.1.0*) echo "db password=agent-planted-secret" >&2; exit 1;; esac"#;
    let log = std::fs::File::create(d.join("agent.log")).unwrap();
    let agent = Command::new(sibling("edgecd-agent"))
        .args(["--server", &lab.url(), "--data-dir"])
        .arg(d.join("agent"))
        .args(["--enroll-token", &enroll, "--board", "rpi5"])
        .args(["--runtime", "edgecd-infer@0.1.0", "--hostname", "till-7"])
        .args(["--checkin-interval-ms", "300", "--health-timeout-secs", "2"])
        .args(["--health-cmd", health])
        .arg("--thermal-path")
        .arg(&thermal)
        .arg("--runtime-log")
        .arg(&runtime_log)
        .env_remove("EDGECD_SERVER")
        .env("EDGECD_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut procs = Kill(vec![agent]);
    let id = wait_for("the agent to enroll", Duration::from_secs(30), || {
        lab.admin.list_devices().ok()?.first().map(|d| d.id.clone())
    });
    let deploy = |v: &str| {
        lab.admin
            .deploy(&edgecd_api::protocol::DeployRequest {
                app: "receipt-classifier".into(),
                version: v.into(),
                selector: Default::default(),
            })
            .unwrap();
    };
    deploy("1.0.0");
    wait_for("1.0.0 to run", Duration::from_secs(60), || {
        (running(&lab).as_deref() == Some("1.0.0")).then_some(())
    });
    deploy("1.1.0");
    wait_for("1.1.0 to be rolled back", Duration::from_secs(60), || {
        let d = lab.admin.show_device(&id).ok()?;
        let o = d.status?.last_outcome?;
        (o.kind == edgecd_api::protocol::OutcomeKind::RolledBack).then_some(())
    });
    // From here on the device's check-ins are 304s (nothing new assigned): a request must
    // still reach it.
    let admin = lab.server.admin_token.clone();
    let viewer = lab
        .admin
        .send::<_, serde_json::Value>(
            "POST",
            "/api/v1/admin/tokens",
            &serde_json::json!({"name": "watcher", "role": "viewer"}),
        )
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    // A viewer may not read or request logs; nothing is requested.
    for args in [
        vec!["device", "logs", &id, "--wait", "5"],
        vec!["device", "diagnose", &id, "--wait", "5"],
    ] {
        let out = cli(&lab, &viewer, &args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("403") && err.contains("deployer"), "{err}");
    }
    let r = ureq::get(&format!("{}/api/v1/admin/devices/{id}/logs", lab.url()))
        .header("authorization", &format!("Bearer {viewer}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(r.status(), 403);
    let untouched: serde_json::Value = lab
        .admin
        .get(&format!("/api/v1/admin/devices/{id}/logs"))
        .unwrap();
    assert_eq!(untouched["requested_at"], serde_json::Value::Null);
    // An unknown device: 404.
    let out = cli(
        &lab,
        &admin,
        &["device", "logs", "dev-nosuch", "--wait", "2"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));

    // The logs, as JSON exactly as the console reads them.
    let started = std::time::Instant::now();
    let logs = ok_json(
        &lab,
        &admin,
        &[
            "device", "logs", &id, "--lines", "5000", "--json", "--wait", "60",
        ],
    );
    let took = started.elapsed();
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
    assert_eq!(logs["device"], id.as_str());
    assert_eq!(logs["pending"], false);
    assert!(logs["requested_at"].as_str().unwrap().ends_with('Z'));
    assert!(logs["received_at"].as_str().unwrap().ends_with('Z'));
    let lines = logs["lines"].as_array().unwrap();
    let text: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["source"].as_str().unwrap(), l["line"].as_str().unwrap()))
        .collect();
    let bytes: usize = text.iter().map(|(_, l)| l.len()).sum();
    assert!(
        bytes <= edgecd_api::protocol::MAX_LOG_BYTES,
        "{bytes} bytes of lines"
    );
    assert!(bytes > 100_000, "the bound is used, not tiny: {bytes}");
    assert!(text.iter().any(|(s, _)| *s == "agent"));
    assert!(
        text.iter()
            .any(|(s, l)| *s == "runtime" && *l == "runtime ready")
    );
    // The oldest runtime lines were dropped to fit.
    assert!(!text.iter().any(|(_, l)| l.contains("runtime line 00000")));
    let all = serde_json::to_string(&logs).unwrap();
    for secret in ["agent-planted-secret", "rt-planted-bearer-0123456789"] {
        assert!(!all.contains(secret), "{secret} leaked");
    }
    assert!(all.contains("Authorization: Bearer [REDACTED]"));
    assert!(
        text.iter()
            .any(|(s, l)| *s == "agent" && l.contains("password=[REDACTED]")),
        "the agent's rollback line, redacted"
    );
    for l in lines {
        assert!(l["ts"].as_str().unwrap().ends_with('Z'), "{l}");
    }
    eprintln!("logs answered in {took:?}");

    // --follow prints new lines as the runtime writes them.
    let mut follow = edgecd()
        .args(["device", "logs", &id, "--lines", "20", "--follow"])
        .args(["--server", &lab.url(), "--token", &admin])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    procs.0.push(follow);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("first lines");
    assert!(!first.is_empty());
    std::fs::OpenOptions::new()
        .append(true)
        .open(&runtime_log)
        .unwrap()
        .write_all(b"fresh line after follow started token=follow-secret\n")
        .unwrap();
    let seen = wait_for("the new line in --follow", Duration::from_secs(60), || {
        rx.recv_timeout(Duration::from_millis(200))
            .ok()
            .filter(|l| l.contains("fresh line after follow started"))
    });
    assert!(seen.contains("runtime"), "{seen}");
    assert!(seen.contains("token=[REDACTED]"), "{seen}");

    // The diagnosis.
    let diag = ok_json(
        &lab,
        &admin,
        &["device", "diagnose", &id, "--json", "--wait", "60"],
    );
    assert_eq!(diag["pending"], false, "{diag}");
    assert_eq!(diag["inventory"]["board"], "rpi5");
    assert_eq!(diag["inventory"]["hostname"], "till-7");
    assert_eq!(diag["labels"]["fleet"], "retail");
    assert_eq!(diag["assigned"], "receipt-classifier@1.1.0");
    assert_eq!(diag["status"]["running"]["version"], "1.0.0");
    let agent = &diag["agent"];
    assert_eq!(agent["phase"], "committed", "{agent}");
    let slots = agent["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2);
    let current: Vec<&serde_json::Value> = slots.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{slots:?}");
    assert_eq!(current[0]["release"], "receipt-classifier@1.0.0");
    assert!(current[0]["bytes"].as_u64().unwrap() > 0);
    assert!(agent["freeDiskBytes"].as_u64().unwrap() > 0);
    assert!(agent["totalDiskBytes"].as_u64().unwrap() >= agent["freeDiskBytes"].as_u64().unwrap());
    let temps = agent["temperatures"].as_array().unwrap();
    assert!(!temps.is_empty());
    assert_eq!(temps.last().unwrap()[1], 48.25);
    assert_eq!(agent["runtime"]["kind"], "health-cmd");
    assert_eq!(agent["runtime"]["healthy"], true, "{agent}");
    let history = diag["temperature_history"].as_array().unwrap();
    assert!(!history.is_empty(), "{diag}");
    assert_eq!(history.last().unwrap()["max_c"], 48.25);
    let attempts = diag["install_attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["outcome"], "rolledBack", "{attempts:?}");
    assert_eq!(attempts[0]["release"], "receipt-classifier@1.1.0");
    let reason = attempts[0]["reason"].as_str().unwrap();
    assert!(reason.contains("password=[REDACTED]"), "{reason}");
    assert!(attempts.iter().any(|a| a["outcome"] == "committed"));
    // The human report names every section.
    let out = cli(&lab, &admin, &["device", "diagnose", &id, "--wait", "60"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", agent_log_tail(d));
    for section in [
        "inventory",
        "slots",
        "disk",
        "temperature",
        "runtime",
        "install attempts",
        "48.2 °C",
        "<- current",
        "rolledBack",
    ] {
        assert!(text.contains(section), "{section} missing:\n{text}");
    }
}
