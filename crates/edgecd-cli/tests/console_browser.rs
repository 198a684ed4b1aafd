//! The web console in a real browser: a real server (SQLite, HTTP on 127.0.0.1) with 12
//! simulated devices (and a 13th the releases cannot run, silent after its first check-in),
//! and headless Chromium (Debian's `chromium`, driven by npm
//! `playwright-core`; `@axe-core/playwright` for accessibility) running
//! `tests/console/browser.cjs`: log in through a notification's link, watch a canary, a viewer
//! without the approver's button and refused by the API, approve, see a failing gate, abort,
//! roll back, log out. Then the server's own view is checked here: the rollouts' phases, the
//! rollback's assignments and the audit log (who approved, the viewer's refusal).
//!
//! Screenshots of every page (and the axe results, `axe.json`) are written to
//! `<target dir>/test-artifacts/console/` (`$CARGO_TARGET_DIR`, default `target/`).
//! Chromium comes from `scripts/setup/browser.sh`, the npm modules from
//! `scripts/setup/20-npm.sh`; missing, the test skips, or fails under
//! `EDGECD_REQUIRE_EXTERNAL=1`.

use edgecd_api::protocol::{CreateTokenRequest, DeployRequest};
use edgecd_cli::story::{Lab, settle};
use edgecd_sim::{Fleet, SimConfig};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SCENARIO: &str = r#"
default: {latency_ms: {p50: 60, p95: 120}, error_rate: 0.004, confidence: {mean: 0.91, sd: 0.04}, requests_per_checkin: 40}
releases:
  "receipt-classifier@1.2.0": {error_rate: 0.3}
"#;

/// A healthy canary, an approval step, then everyone.
const SPEC_A: &str = r#"
release: receipt-classifier@1.1.0
selector: {fleet: retail}
steps:
  - canary: {devices: 3}
  - analyze: {duration: 4s, interval: 1s}
  - approve: {}
  - canary: {percent: 100}
gates:
  - {metric: error_rate, max: 0.05}
  - {metric: latency_p95_ms, max: 300}
  - {metric: latency_p95_ms, max_ratio: 1.5, against: baseline}
min_samples: 60
"#;

/// A bad release whose failing gate holds (a high failure limit) until someone aborts.
const SPEC_B: &str = r#"
release: receipt-classifier@1.2.0
selector: {fleet: retail}
steps:
  - canary: {devices: 3}
  - analyze: {duration: 10m, interval: 1s}
  - canary: {percent: 100}
gates:
  - {metric: error_rate, max: 0.05}
min_samples: 60
failure_limit: 100000
"#;

/// `<target dir>/test-artifacts/console`: the test binary is `<target dir>/<profile>/deps/…`.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target dir above <profile>/deps")
        .to_path_buf();
    target.join("test-artifacts/console")
}

fn token(lab: &Lab, name: &str, role: &str) -> String {
    let v: serde_json::Value = lab
        .admin
        .send(
            "POST",
            "/api/v1/admin/tokens",
            &serde_json::json!({"name": name, "role": role}),
        )
        .expect("create token");
    v["token"].as_str().expect("secret").to_string()
}

/// A device running two apps side by side (protocol 1.2 reports each app), enrolled and
/// checked in once over the device protocol: the console must show both. Returns its id.
fn two_app_device(lab: &Lab) -> String {
    use edgecd_api::protocol::{CheckinRequest, EnrollRequest, PROTOCOL_VERSION};
    let token = lab
        .admin
        .create_token(&CreateTokenRequest {
            labels: [("site".to_string(), "store-2apps".to_string())].into(),
            expires_in_secs: Some(600),
            max_uses: Some(1),
        })
        .expect("enrollment token")
        .token;
    let inventory: edgecd_api::protocol::Inventory = serde_json::from_value(serde_json::json!({
        "board": "rpi5", "ramMb": 8192, "runtimes": {"edgecd-infer": "0.1.0"},
        "agentVersion": "0.1.0", "maxApps": 4,
    }))
    .expect("inventory");
    let client = edgecd_agent::client::Client::new(&lab.url(), None).expect("client");
    let e = client
        .enroll(&EnrollRequest {
            token,
            inventory: inventory.clone(),
            labels: Default::default(),
            protocol: PROTOCOL_VERSION.into(),
        })
        .expect("enroll");
    let app = |app: &str, version: &str| {
        serde_json::json!({
            "app": app, "phase": "committed", "assignmentVersion": 1,
            "running": {"app": app, "version": version,
                "bundleDigest": format!("sha256:{}", "0".repeat(64)), "slot": "a"},
        })
    };
    let status = serde_json::from_value(serde_json::json!({
        "phase": "committed", "assignmentVersion": 1,
        "running": app("receipt-classifier", "1.0.0")["running"],
        "apps": [app("receipt-classifier", "1.0.0"), app("receipt-detector", "2.0.0")],
    }))
    .expect("status");
    client
        .checkin(
            &e.device_id,
            &e.credential,
            &CheckinRequest {
                inventory,
                status,
                labels: Default::default(),
                metrics: None,
                protocol: PROTOCOL_VERSION.into(),
                app_metrics: Default::default(),
            },
            None,
        )
        .expect("check-in");
    e.device_id
}

struct StopFleet<'a>(&'a AtomicBool);

impl Drop for StopFleet<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn the_console_in_headless_chromium() {
    let Some(chromium) = edgecd_testkit::tool("chromium") else {
        return;
    };
    let Some(node) = edgecd_testkit::tool("node") else {
        return;
    };
    let modules = edgecd_testkit::test_cache().join("npm/node_modules");
    for m in ["playwright-core", "@axe-core/playwright"] {
        if edgecd_testkit::external(&format!("npm {m}"), modules.join(m)).is_none() {
            return;
        }
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tmp");
    let lab = Lab::start(tmp.path(), 1, 200).expect("server");
    for (v, seed) in [("1.0.0", 1), ("1.1.0", 2), ("1.2.0", 3)] {
        lab.release(v, seed).expect("release");
    }
    let fleet = lab
        .fleet(12, 3, serde_yaml::from_str(SCENARIO).expect("scenario"), 11)
        .expect("fleet");
    lab.admin
        .deploy(&DeployRequest {
            app: "receipt-classifier".into(),
            version: "1.0.0".into(),
            selector: Default::default(),
        })
        .expect("deploy 1.0.0");
    settle(
        &lab,
        &fleet,
        "receipt-classifier@1.0.0",
        Duration::from_secs(120),
    )
    .expect("fleet on 1.0.0");
    // One more device, a Pi 4 the releases cannot run: it checks in once and then falls
    // silent, so the fleet overview has an incompatible and an offline device to call out.
    let pi4_token = lab
        .admin
        .create_token(&CreateTokenRequest {
            labels: [("fleet".to_string(), "retail".to_string())].into(),
            expires_in_secs: Some(600),
            max_uses: Some(1),
        })
        .expect("enrollment token")
        .token;
    let pi4 = Fleet::enroll(SimConfig {
        server: lab.url(),
        enroll_token: pi4_token,
        devices: 1,
        labels: vec![("site".into(), vec!["store-9".into()])],
        scenario: serde_yaml::from_str(SCENARIO).expect("scenario"),
        runtimes: [("edgecd-infer".to_string(), "0.1.0".to_string())].into(),
        board: "rpi4".into(),
        ram_mb: 2048,
        threads: 1,
        time_scale: 1.0,
        seed: 99,
    })
    .expect("pi4");
    let pi4_stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| pi4.run(&pi4_stop));
        let _stop = StopFleet(&pi4_stop);
        edgecd_testkit::wait_for("the Pi 4 checked in", Duration::from_secs(60), || {
            let ds = lab.admin.list_devices().ok()?;
            ds.iter()
                .any(|d| d.inventory.as_ref().is_some_and(|i| i.board == "rpi4"))
                .then_some(())
        });
    });
    let two_apps = two_app_device(&lab);
    let approver = token(&lab, "alice", "approver");
    let viewer = token(&lab, "victor", "viewer");
    let a = lab.start_rollout(SPEC_A).expect("rollout A");
    let a = a["rollout"]["id"].as_str().expect("id").to_string();
    let spec_b: edgecd_rollout::RolloutSpec = serde_yaml::from_str(SPEC_B).expect("spec B");
    let art = artifacts_dir();
    let _ = std::fs::remove_dir_all(&art);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser.cjs");

    let stop = AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| fleet.run(&stop));
        // The fleet stops however this ends (a failed check panics inside the scope).
        let _stop = StopFleet(&stop);
        let out = Command::new(&node)
            .arg(&script)
            .env("NODE_PATH", &modules)
            .env("CHROMIUM", &chromium)
            .env("EDGECD_URL", lab.url())
            .env("ADMIN_TOKEN", &lab.server.admin_token)
            .env("APPROVER_TOKEN", &approver)
            .env("VIEWER_TOKEN", &viewer)
            .env("ROLLOUT_A", &a)
            .env("SPEC_B", serde_json::to_string(&spec_b).expect("json"))
            .env("ARTIFACTS", &art)
            .env("TWO_APPS", &two_apps)
            .output()
            .expect("run node");
        eprintln!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "the browser script failed");
        // Let the rollback reach the devices before they stop.
        let back = edgecd_testkit::wait_for(
            "every Pi 5 assigned and running 1.0.0 again",
            Duration::from_secs(60),
            || {
                let ds: Vec<_> = lab
                    .admin
                    .list_devices()
                    .ok()?
                    .into_iter()
                    .filter(|d| d.inventory.as_ref().is_some_and(|i| i.board == "rpi5"))
                    // The two-app device only reported once; it runs nothing it is told.
                    .filter(|d| d.id != two_apps)
                    .collect();
                ds.iter()
                    .all(|d| {
                        d.assigned.as_deref() == Some("receipt-classifier@1.0.0")
                            && d.status
                                .as_ref()
                                .and_then(|s| s.running.as_ref())
                                .is_some_and(|r| r.version == "1.0.0")
                    })
                    .then_some(ds.len())
            },
        );
        (out, back)
    });
    let (out, back) = out;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("DONE"),
        "the script ran to its end"
    );
    assert_eq!(back, 12, "the rollback assigned 1.0.0 to every Pi 5");

    // The server's view of what the browser did.
    let phase = |id: &str| {
        lab.status(id).expect("status")["rollout"]["state"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(phase(&a), "completed");
    let rollouts: Vec<serde_json::Value> = lab.admin.get("/api/v1/admin/rollouts").expect("list");
    let b = rollouts
        .iter()
        .find(|r| r["rollout"]["spec"]["release"] == "receipt-classifier@1.2.0")
        .expect("rollout B");
    assert_eq!(b["rollout"]["state"]["phase"], "aborted");
    assert_eq!(b["rollout"]["state"]["stopCause"], "operator");
    let audit: Vec<serde_json::Value> = lab.admin.get("/api/v1/admin/audit").expect("audit");
    let approve = format!("/api/v1/admin/rollouts/{a}/approve");
    assert!(
        audit
            .iter()
            .any(|r| r["token"] == "alice" && r["path"] == approve.as_str() && r["status"] == 200),
        "alice's approval through the console is audited: {audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|r| r["token"] == "victor" && r["path"] == approve.as_str() && r["status"] == 403),
        "the viewer's refused approval is audited"
    );
    assert!(
        audit
            .iter()
            .any(|r| r["token"] == "alice" && r["route"] == "/console/login"),
        "logins are audited"
    );
    // The two reads the console added to the API.
    let details: serde_json::Value = lab
        .admin
        .get("/api/v1/admin/releases/receipt-classifier@1.0.0/details")
        .expect("release details");
    assert_eq!(details["signature"]["keyName"], "ci", "{details:#}");
    assert_eq!(details["signature"]["trusted"], true);
    assert_eq!(
        details["signature"]["keyId"], details["release"]["signedBy"],
        "{details:#}"
    );
    assert_eq!(
        details["provenance"]["bundleDigest"],
        details["release"]["release"]["bundleDigest"]
    );
    assert_eq!(details["sbom"]["format"], "CycloneDX");
    assert!(
        details["sbom"]["components"].as_u64() >= Some(1),
        "{details:#}"
    );
    let pi5 = lab
        .admin
        .list_devices()
        .expect("devices")
        .into_iter()
        .find(|d| d.inventory.as_ref().is_some_and(|i| i.board == "rpi5"))
        .expect("a Pi 5");
    let m: serde_json::Value = lab
        .admin
        .get(&format!("/api/v1/admin/devices/{}/metrics", pi5.id))
        .expect("device metrics");
    assert!(m["release"].is_string(), "{m:#}");
    assert!(
        m["requests"].as_u64() > Some(0) && m["reports"].as_u64() > Some(0),
        "{m:#}"
    );
    assert!(m["latencyP95Ms"].as_f64() > Some(0.0), "{m:#}");
    let history: Vec<serde_json::Value> = lab
        .admin
        .get(&format!("/api/v1/admin/devices/{}/history", pi5.id))
        .expect("device history");
    assert_eq!(
        history.first().map(|e| &e["kind"]),
        Some(&serde_json::json!("outcome")),
        "newest first: the device reported its last install after the rollback's assignment: {history:#?}"
    );
    assert!(
        history.iter().any(|e| e["kind"] == "assigned"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("receipt-classifier@1.0.0 v"))),
        "{history:#?}"
    );
    for page in [
        "login",
        "rollout-awaiting-approval",
        "rollout-viewer-phone",
        "rollout-failing-gate",
        "rollout-aborted",
        "fleet",
        "fleet-during-rollout",
        "device",
        "release",
    ] {
        let p = art.join(format!("{page}.png"));
        assert!(
            std::fs::metadata(&p).is_ok_and(|m| m.len() > 1000),
            "screenshot {}",
            p.display()
        );
    }
    eprintln!(
        "console browser test: {:.1}s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        art.display()
    );
}
