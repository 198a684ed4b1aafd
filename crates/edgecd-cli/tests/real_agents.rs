//! The good/bad release pair with real processes instead of the simulator: three
//! `edgecd-agent` processes, each activating a real `edgecd-infer` runtime that serves the
//! installed bundle, under real inference load. The agents read the runtime's Prometheus
//! metrics and send them with their check-ins; the rollout's gates catch the bad model's
//! errors at the canary, the server rolls it back, and a healthy release then reaches all.
mod common;
use common::sibling;
use edgecd_cli::demo_model::{classifier_onnx, classifier_onnx_custom};
use edgecd_cli::story::{Lab, Outcome, drive};
use edgecd_testkit::{StopOnDrop, free_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const AGENTS: usize = 3;

struct Procs(Vec<Child>, Vec<PathBuf>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The runtimes were started by the agents' activation hook.
        for pidfile in &self.1 {
            if let Ok(pid) = std::fs::read_to_string(pidfile) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

fn reported(lab: &Lab) -> Vec<Option<String>> {
    lab.admin
        .list_devices()
        .unwrap()
        .iter()
        .map(|d| {
            d.status
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .map(|r| r.version.clone())
        })
        .collect()
}

fn wait_all_on(lab: &Lab, version: &str, timeout: Duration, logs: &Path) {
    let t = Instant::now();
    loop {
        let r = reported(lab);
        if r.len() == AGENTS && r.iter().all(|v| v.as_deref() == Some(version)) {
            return;
        }
        if t.elapsed() > timeout {
            let mut msg = format!("devices did not all report {version}: {r:?}\n");
            for e in std::fs::read_dir(logs).unwrap().flatten() {
                if e.file_name().to_string_lossy().ends_with(".log") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(8).collect();
                    msg.push_str(&format!(
                        "--- {}\n{}\n",
                        e.path().display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ));
                }
            }
            panic!("{msg}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn spec(version: &str) -> String {
    format!(
        "release: receipt-classifier@{version}\nselector: {{fleet: retail}}\nsteps:\n  - canary: {{devices: 1}}\n  - analyze: {{duration: 6s, interval: 1s}}\n  - canary: {{percent: 100}}\ngates:\n  - {{metric: error_rate, max: 0.05}}\n  - {{metric: latency_p95_ms, max_ratio: 3.0, against: baseline}}\nmin_samples: 60\nfailure_limit: 2\n"
    )
}

#[test]
fn good_and_bad_releases_with_real_agents_and_runtimes() {
    let (agent, infer) = (sibling("edgecd-agent"), sibling("edgecd-infer"));
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let lab = Lab::start(d, 1, 250).unwrap();
    lab.release_model("1.0.0", &classifier_onnx(1)).unwrap();
    // 1.1.0: a retrained model whose input was renamed: every request the application sends
    // now fails in the real runtime (a bad release that passes the device's health check).
    lab.release_model("1.1.0", &classifier_onnx_custom(2, 8, 0, "pixels"))
        .unwrap();
    lab.release_model("1.2.0", &classifier_onnx(3)).unwrap();
    let token = lab
        .admin
        .create_token(&edgecd_api::protocol::CreateTokenRequest {
            labels: [("fleet".to_string(), "retail".to_string())].into(),
            expires_in_secs: Some(600),
            max_uses: Some(AGENTS as u32),
        })
        .unwrap()
        .token;

    let mut procs = Procs(vec![], vec![]);
    let mut ports = vec![];
    for i in 0..AGENTS {
        let port = free_port();
        ports.push(port);
        let data = d.join(format!("agent-{i}"));
        let pidfile = d.join(format!("infer-{i}.pid"));
        procs.1.push(pidfile.clone());
        // Activation: hot-reload the runtime, or start it on the first install.
        let activate = format!(
            "curl -fsS -m 10 -X POST http://127.0.0.1:{port}/v1/reload >/dev/null 2>&1 || {{ nohup {} --model-dir \"$EDGECD_CURRENT\" --listen 127.0.0.1:{port} --threads 1 >>{} 2>&1 & echo $! > {}; }}",
            infer.display(),
            d.join(format!("infer-{i}.log")).display(),
            pidfile.display()
        );
        let log = std::fs::File::create(d.join(format!("agent-{i}.log"))).unwrap();
        let child = Command::new(&agent)
            .args(["--server", &lab.url(), "--data-dir"])
            .arg(&data)
            .args([
                "--enroll-token",
                &token,
                "--label",
                &format!("site=store-{i}"),
                "--board",
                "rpi5",
                "--runtime",
                "edgecd-infer@0.1.0",
            ])
            .args([
                "--checkin-interval-ms",
                "500",
                "--health-timeout-secs",
                "20",
            ])
            .args([
                "--metrics-url",
                &format!("http://127.0.0.1:{port}/metrics"),
                "--health-url",
                &format!("http://127.0.0.1:{port}/readyz"),
            ])
            .args(["--activate-cmd", &activate])
            .env_remove("EDGECD_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        procs.0.push(child);
    }
    let t = Instant::now();
    while lab.admin.list_devices().unwrap().len() < AGENTS {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "agents did not enroll"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.admin
        .deploy(&edgecd_api::protocol::DeployRequest {
            app: "receipt-classifier".into(),
            version: "1.0.0".into(),
            selector: Default::default(),
        })
        .unwrap();
    wait_all_on(&lab, "1.0.0", Duration::from_secs(90), d);

    // Real inference traffic on every device.
    let stop = AtomicBool::new(false);
    let body = serde_json::json!({"inputs": [{"name": "features", "dtype": "float32", "shape": [1, 16], "data": (0..16).map(|i| i as f64 / 16.0).collect::<Vec<_>>()}]}).to_string();
    let (bad, good): (Outcome, Outcome) = std::thread::scope(|s| {
        for port in &ports {
            let (stop, body) = (&stop, &body);
            s.spawn(move || {
                let http = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .new_agent();
                while !stop.load(Ordering::Relaxed) {
                    let _ = http
                        .post(&format!("http://127.0.0.1:{port}/v1/infer"))
                        .header("content-type", "application/json")
                        .send(body.as_str());
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
        let _guard = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_secs(4)); // baseline traffic
        let fleet = edgecd_sim::Fleet::empty();
        let st = lab.start_rollout(&spec("1.1.0")).unwrap();
        let bad = drive(
            &lab,
            &fleet,
            st["rollout"]["id"].as_str().unwrap(),
            Duration::from_secs(120),
            &mut |_, _| {},
        )
        .unwrap();
        wait_all_on(&lab, "1.0.0", Duration::from_secs(60), d);
        let st = lab.start_rollout(&spec("1.2.0")).unwrap();
        let good = drive(
            &lab,
            &fleet,
            st["rollout"]["id"].as_str().unwrap(),
            Duration::from_secs(120),
            &mut |_, _| {},
        )
        .unwrap();
        wait_all_on(&lab, "1.2.0", Duration::from_secs(60), d);
        (bad, good)
    });
    assert_eq!(bad.phase(), "aborted", "{}", bad.status);
    assert_eq!(bad.cohort().len(), 1, "only the canary got the heavy model");
    let reason = bad.status["rollout"]["state"]["reason"].as_str().unwrap();
    assert!(reason.contains("error_rate"), "{reason}");
    assert_eq!(good.phase(), "completed", "{}", good.status);
}
