//! Several `edgecd server` processes on one PostgreSQL database: any replica serves devices and
//! the API; exactly one runs the controller (the lease holder). `kill -9` of the controller
//! replica in the middle of a rollout hands the controller to another within the lease TTL; the
//! rollout finishes with no effect applied twice and every device reporting the new release.
mod common;

use edgecd_agent::admin::AdminClient;
use edgecd_api::profile::{HardwareProfile, RuntimePin};
use edgecd_api::protocol::{CreateTokenRequest, DeployRequest};
use edgecd_sim::{Fleet, Scenario, SimConfig};
use edgecd_testkit::postgres::Cluster;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const APP: &str = edgecd_cli::story::APP;
const LEASE_MS: u64 = 2000;

struct Replica {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Replica {
    fn start(dir: &Path, database: &str) -> Replica {
        std::fs::create_dir_all(dir).expect("dir");
        let port = edgecd_testkit::free_port();
        let log = std::fs::File::create(dir.with_extension("log")).expect("log");
        let child = common::edgecd()
            .arg("server")
            .arg("--data-dir")
            .arg(dir)
            .args(["--database", database])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--checkin-interval-secs", "1"])
            .args(["--controller-tick-ms", "100"])
            .args(["--controller-lease-ms", &LEASE_MS.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("edgecd server");
        Replica {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `/readyz`, once the replica answers.
    fn ready(&self) -> Option<Value> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let mut r = agent.get(format!("{}/readyz", self.url())).call().ok()?;
        serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
    }

    fn wait_role(&self, role: &str, timeout: Duration) -> Value {
        edgecd_testkit::wait_for(&format!("{} as {role}", self.url()), timeout, || {
            self.ready()
                .filter(|v| v["ready"] == true && v["controller"] == role)
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds, signs, uploads and publishes `APP@version` of the generated classifier.
fn publish(admin: &AdminClient, key: &edgecd_sign::SigningKey, dir: &Path, version: &str) {
    let src = dir.join(format!("models/{version}"));
    std::fs::create_dir_all(&src).expect("dir");
    let model = src.join("receipt-classifier.onnx");
    std::fs::write(&model, edgecd_cli::demo_model::classifier_onnx(7)).expect("model");
    let spec = edgecd_bundle::BuildSpec {
        meta: edgecd_bundle::BundleMeta {
            name: APP.into(),
            version: version.into(),
            hardware: HardwareProfile {
                board: "rpi5".into(),
                accelerator: None,
                min_ram_mb: Some(1024),
            },
            runtime: RuntimePin {
                name: "edgecd-infer".into(),
                version: "0.1.0".into(),
            },
            selftest: None,
            labels: [("fleet".to_string(), "retail".to_string())].into(),
            provenance: None,
        },
        models: vec![model],
    };
    let files = edgecd_testkit::release::package_release(
        &dir.join("dist"),
        key,
        &spec,
        &edgecd_bundle::release::rfc3339_utc(0),
    )
    .expect("package");
    for (blob, path) in files.blobs().expect("blobs") {
        admin
            .upload_blob(&blob, &path, &mut |_| {})
            .expect("upload");
    }
    admin
        .publish(&files.publish_request().expect("request"))
        .expect("publish");
}

/// What every device reports it runs, as the server saw it.
fn reported(admin: &AdminClient) -> Vec<Option<String>> {
    admin
        .list_devices()
        .expect("devices")
        .into_iter()
        .map(|d| {
            d.status
                .and_then(|s| s.running)
                .map(|r| format!("{}@{}", r.app, r.version))
        })
        .collect()
}

#[test]
fn the_controller_moves_to_another_replica_when_its_replica_is_killed() {
    let pg = Cluster::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let a = Replica::start(&tmp.path().join("a"), &pg.url);
    a.wait_role("leader", Duration::from_secs(60));
    // The second replica shares the first one's assignment key and admin token.
    let b_dir = tmp.path().join("b");
    std::fs::create_dir_all(b_dir.join("keys")).expect("dir");
    for f in ["keys/assignment.key", "keys/assignment.pub", "admin-token"] {
        std::fs::copy(a.dir.join(f), b_dir.join(f)).expect("copy");
    }
    let b = Replica::start(&b_dir, &pg.url);
    b.wait_role("standby", Duration::from_secs(60));
    assert_eq!(a.ready().expect("a")["controller"], "leader");

    // Everything below talks to replica b: the API and the devices.
    let token = std::fs::read_to_string(b_dir.join("admin-token")).expect("token");
    let admin = AdminClient::new(&b.url(), token.trim(), None).expect("client");
    let key = edgecd_sign::write_key_pair(&tmp.path().join("release")).expect("key");
    admin
        .trust_key(&key.verifying_key().to_spki_pem(), Some("ci"))
        .expect("trust");
    publish(&admin, &key, tmp.path(), "1.0.0");
    publish(&admin, &key, tmp.path(), "2.0.0");
    let devices = 12;
    let enroll = admin
        .create_token(&CreateTokenRequest {
            labels: [("fleet".to_string(), "retail".to_string())].into(),
            expires_in_secs: Some(3600),
            max_uses: Some(devices as u32),
        })
        .expect("token")
        .token;
    let fleet = Fleet::enroll(SimConfig {
        server: b.url(),
        enroll_token: enroll,
        devices,
        labels: vec![],
        scenario: Scenario::default(),
        runtimes: [("edgecd-infer".to_string(), "0.1.0".to_string())].into(),
        board: "rpi5".into(),
        ram_mb: 8192,
        threads: 4,
        time_scale: 1.0,
        seed: 3,
    })
    .expect("fleet");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| fleet.run(&stop));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            admin
                .deploy(&DeployRequest {
                    app: APP.into(),
                    version: "1.0.0".into(),
                    selector: Default::default(),
                })
                .expect("deploy");
            let baseline = format!("{APP}@1.0.0");
            edgecd_testkit::wait_for("the fleet on 1.0.0", Duration::from_secs(120), || {
                reported(&admin)
                    .iter()
                    .all(|r| r.as_deref() == Some(baseline.as_str()))
                    .then_some(())
            });

            let spec: edgecd_rollout::RolloutSpec = serde_yaml::from_str(&format!(
                "release: {APP}@2.0.0\nselector: {{fleet: retail}}\nsteps:\n  - canary: {{percent: 25}}\n  - analyze: {{duration: 4s, interval: 1s}}\n  - canary: {{percent: 50}}\n  - analyze: {{duration: 4s, interval: 1s}}\n  - canary: {{percent: 100}}\ngates:\n  - {{metric: error_rate, max: 0.5}}\nmin_samples: 20\n"
            ))
            .expect("spec");
            let started: Value = admin
                .send(
                    "POST",
                    "/api/v1/admin/rollouts",
                    &serde_json::json!({ "spec": spec }),
                )
                .expect("start");
            let id = started["rollout"]["id"].as_str().expect("id").to_string();
            let status = |admin: &AdminClient| -> Value {
                admin
                    .get(&format!("/api/v1/admin/rollouts/{id}"))
                    .expect("status")
            };
            // Mid-rollout: the first canary runs 2.0.0, the next step has not begun.
            let release = format!("{APP}@2.0.0");
            edgecd_testkit::wait_for(
                "the first canary on 2.0.0",
                Duration::from_secs(120),
                || {
                    let on_new = reported(&admin)
                        .iter()
                        .filter(|r| r.as_deref() == Some(release.as_str()))
                        .count();
                    (on_new > 0).then_some(())
                },
            );
            assert_ne!(
                status(&admin)["rollout"]["state"]["phase"],
                "completed",
                "the kill comes mid-rollout"
            );

            // kill -9 the controller replica.
            let mut a = a;
            a.child.kill().expect("kill -9");
            a.child.wait().expect("reaped");
            let killed = Instant::now();
            let took_over = b.wait_role("leader", Duration::from_millis(LEASE_MS) * 10);
            let takeover = killed.elapsed();
            eprintln!(
                "controller takeover {takeover:?} after kill -9 (lease {LEASE_MS} ms): {took_over}"
            );
            assert!(
                takeover <= Duration::from_millis(LEASE_MS) + Duration::from_secs(3),
                "another replica took over within the lease TTL: {takeover:?}"
            );
            assert!(
                took_over["controllerEpoch"].as_i64() > Some(1),
                "{took_over}"
            );

            edgecd_testkit::wait_for("the rollout to complete", Duration::from_secs(180), || {
                (status(&admin)["rollout"]["state"]["phase"] == "completed").then_some(())
            });
            edgecd_testkit::wait_for("every device on 2.0.0", Duration::from_secs(120), || {
                reported(&admin)
                    .iter()
                    .all(|r| r.as_deref() == Some(release.as_str()))
                    .then_some(())
            });

            // No effect applied twice: each device was assigned 2.0.0 by the rollout once,
            // and each step's assignment was recorded once.
            let per_device = pg.psql(&format!(
                "SELECT COUNT(*) FROM events WHERE kind = 'assigned' AND detail LIKE '{APP}@2.0.0 %by rollout {id}' GROUP BY device_id HAVING COUNT(*) > 1"
            ));
            assert_eq!(per_device, "", "devices assigned twice");
            let assigned = pg.psql(&format!(
                "SELECT COUNT(DISTINCT device_id) FROM events WHERE kind = 'assigned' AND detail LIKE '{APP}@2.0.0 %by rollout {id}'"
            ));
            assert_eq!(assigned, devices.to_string());
            let repeated = pg.psql(&format!(
                "SELECT record FROM rollout_audit WHERE rollout_id = '{id}' AND kind = 'assign' GROUP BY record HAVING COUNT(*) > 1"
            ));
            assert_eq!(repeated, "", "an assignment step recorded twice");
            let steps = pg.psql(&format!(
                "SELECT COUNT(*) FROM rollout_audit WHERE rollout_id = '{id}' AND kind = 'assign'"
            ));
            assert_eq!(steps, "3", "three canary steps, each assigned once");
            // No report lost: every device's install of 2.0.0 reached the server.
            let outcomes = pg.psql(
                "SELECT COUNT(DISTINCT device_id) FROM events WHERE kind = 'outcome' AND detail LIKE '%2.0.0%'",
            );
            assert_eq!(outcomes, devices.to_string());
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(e) = result {
            eprintln!("replica b log:\n{}", b.log());
            std::panic::resume_unwind(e);
        }
    });
}
