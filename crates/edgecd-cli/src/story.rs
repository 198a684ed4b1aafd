//! An embedded control plane with a simulated fleet: what `edgecd demo` runs and what the
//! end-to-end rollout tests drive. Starts a real server in-process (SQLite, HTTP on
//! 127.0.0.1), builds and publishes signed releases of the generated ONNX classifier, enrolls
//! virtual devices that speak the agent protocol, and runs rollouts through the admin API.
use crate::demo_model::classifier_onnx;
use anyhow::{Context, bail};
use edgecd_agent::admin::AdminClient;
use edgecd_api::profile::{HardwareProfile, RuntimePin};
use edgecd_api::protocol::CreateTokenRequest;
use edgecd_bundle::package::ReleaseFiles;
use edgecd_rollout::engine::AuditRecord;
use edgecd_server::{Config, EmbeddedServer};
use edgecd_sign::SigningKey;
use edgecd_sim::{Fleet, Scenario, SimConfig};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const APP: &str = "receipt-classifier";

/// A running server plus the keys and client to drive it.
pub struct Lab {
    pub dir: PathBuf,
    pub server: EmbeddedServer,
    config: Config,
    pub admin: AdminClient,
    pub key: SigningKey,
}

impl Lab {
    /// Starts a server with data under `dir/server`, check-ins every `checkin_secs`.
    pub fn start(dir: &Path, checkin_secs: u64, tick_ms: u64) -> anyhow::Result<Lab> {
        Self::start_with(dir, checkin_secs, tick_ms, |_| {})
    }

    /// [`Lab::start`], with `tweak` applied to the server's configuration.
    pub fn start_with(
        dir: &Path,
        checkin_secs: u64,
        tick_ms: u64,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Lab> {
        std::fs::create_dir_all(dir)?;
        let mut cfg = Config::new(dir.join("server"));
        // A fixed free port, so a restarted server comes back at the same address.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        cfg.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        cfg.checkin_interval_secs = checkin_secs;
        cfg.controller_tick_ms = tick_ms;
        tweak(&mut cfg);
        let server = EmbeddedServer::start(cfg.clone()).context("starting the embedded server")?;
        let admin = AdminClient::new(
            &format!("http://{}", server.addr),
            &server.admin_token,
            None,
        )?;
        let key_prefix = dir.join("keys/release");
        let key = if key_prefix.with_extension("key").exists() {
            SigningKey::load(&key_prefix.with_extension("key"), None)?
        } else {
            edgecd_sign::write_key_pair(&key_prefix)?
        };
        admin.trust_key(&key.verifying_key().to_spki_pem(), Some("ci"))?;
        Ok(Lab {
            dir: dir.to_path_buf(),
            server,
            config: cfg,
            admin,
            key,
        })
    }

    /// Stops the server, waits `down`, and starts it again on the same data and port.
    pub fn restart(&mut self, down: Duration) -> anyhow::Result<()> {
        self.server.stop();
        std::thread::sleep(down);
        self.server =
            EmbeddedServer::start(self.config.clone()).context("restarting the embedded server")?;
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Builds, signs and publishes `APP@version` of the generated classifier.
    pub fn release(&self, version: &str, seed: u64) -> anyhow::Result<ReleaseFiles> {
        self.release_model(version, &classifier_onnx(seed))
    }

    /// Builds, signs and publishes `APP@version` with the given ONNX model bytes.
    pub fn release_model(&self, version: &str, onnx: &[u8]) -> anyhow::Result<ReleaseFiles> {
        let dist = self.dir.join("dist");
        let src = self.dir.join(format!("models/{version}"));
        std::fs::create_dir_all(&src)?;
        let model = src.join("receipt-classifier.onnx");
        std::fs::write(&model, onnx)?;
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
        let files = edgecd_bundle::package::package_release(
            &dist,
            &self.key,
            &spec,
            &edgecd_bundle::release::rfc3339_utc(0),
        )
        .map_err(anyhow::Error::msg)?;
        for (blob, path) in files.blobs()? {
            self.admin.upload_blob(&blob, &path, &mut |_| {})?;
        }
        self.admin.publish(&files.publish_request()?)?;
        Ok(files)
    }

    /// Enrolls `devices` virtual devices spread over `stores` stores.
    pub fn fleet(
        &self,
        devices: usize,
        stores: usize,
        scenario: Scenario,
        seed: u64,
    ) -> anyhow::Result<Fleet> {
        let token = self
            .admin
            .create_token(&CreateTokenRequest {
                labels: [("fleet".to_string(), "retail".to_string())].into(),
                expires_in_secs: Some(3600),
                max_uses: Some(devices as u32),
            })?
            .token;
        let cfg = SimConfig {
            server: self.url(),
            enroll_token: token,
            devices,
            labels: vec![(
                "site".into(),
                (1..=stores).map(|i| format!("store-{i}")).collect(),
            )],
            scenario,
            runtimes: [("edgecd-infer".to_string(), "0.1.0".to_string())].into(),
            board: "rpi5".into(),
            ram_mb: 8192,
            threads: 8,
            time_scale: 1.0,
            seed,
        };
        Ok(Fleet::enroll(cfg)?)
    }

    pub fn start_rollout(&self, spec_yaml: &str) -> anyhow::Result<Value> {
        let spec: edgecd_rollout::RolloutSpec =
            serde_yaml::from_str(spec_yaml).context("rollout spec")?;
        Ok(self.admin.send(
            "POST",
            "/api/v1/admin/rollouts",
            &serde_json::json!({ "spec": spec }),
        )?)
    }

    pub fn status(&self, id: &str) -> anyhow::Result<Value> {
        Ok(self.admin.get(&format!("/api/v1/admin/rollouts/{id}"))?)
    }

    pub fn history(&self, id: &str) -> anyhow::Result<Vec<AuditRecord>> {
        Ok(self
            .admin
            .get(&format!("/api/v1/admin/rollouts/{id}/history"))?)
    }
}

/// What happened during one rollout.
pub struct Outcome {
    pub status: Value,
    pub history: Vec<AuditRecord>,
    /// Devices seen running the rollout's release at any time.
    pub ever_ran: BTreeSet<String>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn phase(&self) -> &str {
        self.status["rollout"]["state"]["phase"]
            .as_str()
            .unwrap_or("?")
    }
    pub fn cohort(&self) -> BTreeSet<String> {
        self.status["rollout"]["state"]["cohort"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }
}

/// Runs `fleet` while rollout `id` progresses, until it finishes and (after an abort) every
/// rolled-back device reports the baseline again, or `timeout`. `on_record` sees each new
/// audit record as it appears.
pub fn drive(
    lab: &Lab,
    fleet: &Fleet,
    id: &str,
    timeout: Duration,
    on_record: &mut dyn FnMut(&AuditRecord, &Value),
) -> anyhow::Result<Outcome> {
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let release = lab.status(id)?["rollout"]["spec"]["release"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut seen = 0usize;
    let mut ever_ran = BTreeSet::new();
    std::thread::scope(|s| {
        s.spawn(|| fleet.run(&stop));
        let out = (|| loop {
            // What devices report to the server (simulated or real agents alike).
            let mut running = fleet.running();
            for d in lab.admin.list_devices()? {
                let r = d
                    .status
                    .as_ref()
                    .and_then(|s| s.running.as_ref())
                    .map(|r| format!("{}@{}", r.app, r.version));
                running.insert(d.id, r);
            }
            for (dev, r) in &running {
                if r.as_deref() == Some(release.as_str()) {
                    ever_ran.insert(dev.clone());
                }
            }
            let status = lab.status(id)?;
            let history = lab.history(id)?;
            for rec in &history[seen..] {
                on_record(rec, &status);
            }
            seen = history.len();
            let phase = status["rollout"]["state"]["phase"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            let settled = match phase.as_str() {
                "completed" => true,
                "aborted" => {
                    let baseline = status["rollout"]["baseline"].as_str().map(str::to_string);
                    let back: BTreeSet<String> = status["rollout"]["state"]["rolledBack"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect();
                    baseline.is_none()
                        || back
                            .iter()
                            .all(|d| running.get(d).cloned().flatten() == baseline)
                }
                _ => false,
            };
            if settled {
                return Ok::<_, anyhow::Error>(Outcome {
                    status,
                    history,
                    ever_ran: ever_ran.clone(),
                    elapsed: started.elapsed(),
                });
            }
            if started.elapsed() > timeout {
                bail!(
                    "rollout {id} did not settle within {timeout:?}: phase {phase}, reason {}",
                    status["rollout"]["state"]["reason"]
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        })();
        stop.store(true, Ordering::Relaxed);
        out
    })
}

/// Runs the fleet until every device reports `release` to the server (or `timeout`).
pub fn settle(lab: &Lab, fleet: &Fleet, release: &str, timeout: Duration) -> anyhow::Result<()> {
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| fleet.run(&stop));
        let r = loop {
            let reported = lab.admin.list_devices().is_ok_and(|ds| {
                ds.iter().all(|d| {
                    d.status
                        .as_ref()
                        .and_then(|s| s.running.as_ref())
                        .map(|r| format!("{}@{}", r.app, r.version))
                        .as_deref()
                        == Some(release)
                })
            });
            if reported
                && fleet
                    .running()
                    .values()
                    .all(|r| r.as_deref() == Some(release))
            {
                break Ok(());
            }
            if started.elapsed() > timeout {
                break Err(anyhow::anyhow!(
                    "fleet did not converge on {release} within {timeout:?}: {:?}",
                    census(fleet)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        stop.store(true, Ordering::Relaxed);
        r
    })
}

/// Releases per device, counted.
pub fn census(fleet: &Fleet) -> BTreeMap<String, usize> {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for r in fleet.running().into_values() {
        *by.entry(r.unwrap_or_else(|| "nothing".into())).or_default() += 1;
    }
    by
}
