//! Virtual devices speaking the real agent protocol over HTTP: enroll with a token, check in
//! with inventory, status and synthesized metrics, verify signed assignments (the agent's own
//! verification code), download the bundle and check its digest and size, then "install"
//! according to the scenario (success, install failure, crash on activation) and report.
use crate::exporter::Exposition;
use crate::scenario::Scenario;
use crate::synth::{Rng, synthesize};
use edgecd_agent::client::{Checkin, Client};
use edgecd_agent::verify::verify_assignment;
use edgecd_api::protocol::{
    Assignment, CheckinRequest, DeviceStatus, EnrollRequest, Inventory, Outcome, OutcomeKind,
    Phase, RunningRelease,
};
use edgecd_sign::VerifyingKey;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("enrolling virtual device {index}: {reason}")]
    Enroll { index: usize, reason: String },
    #[error("invalid simulator option: {0}")]
    Config(String),
}

/// How to run a simulated fleet.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub server: String,
    pub enroll_token: String,
    pub devices: usize,
    /// Label name → values; device `i` gets `values[i % len]`.
    pub labels: Vec<(String, Vec<String>)>,
    pub scenario: Scenario,
    /// Runtimes the virtual devices report (name → version).
    pub runtimes: BTreeMap<String, String>,
    pub board: String,
    pub ram_mb: u64,
    pub threads: usize,
    /// Simulated seconds per real second: check-ins come this much faster and each carries
    /// this much more traffic.
    pub time_scale: f64,
    pub seed: u64,
}

/// Expands `site=store-{1..50}` into (`site`, [store-1 … store-50]).
pub fn parse_label_pattern(s: &str) -> Result<(String, Vec<String>), SimError> {
    let (k, v) = s.split_once('=').ok_or_else(|| {
        SimError::Config(format!(
            "label {s:?} must look like key=value or key=prefix-{{1..N}}"
        ))
    })?;
    if let (Some(open), Some(close)) = (v.find('{'), v.find('}')) {
        let (pre, range, post) = (&v[..open], &v[open + 1..close], &v[close + 1..]);
        let (a, b) = range
            .split_once("..")
            .ok_or_else(|| SimError::Config(format!("range in {s:?} must look like {{1..N}}")))?;
        let (a, b): (u64, u64) = (
            a.parse()
                .map_err(|_| SimError::Config(format!("bad range start in {s:?}")))?,
            b.parse()
                .map_err(|_| SimError::Config(format!("bad range end in {s:?}")))?,
        );
        if a > b || b - a > 100_000 {
            return Err(SimError::Config(format!(
                "range in {s:?} must be ascending and at most 100000 values"
            )));
        }
        return Ok((
            k.to_string(),
            (a..=b).map(|i| format!("{pre}{i}{post}")).collect(),
        ));
    }
    Ok((k.to_string(), vec![v.to_string()]))
}

struct VirtualDevice {
    id: String,
    credential: String,
    labels: BTreeMap<String, String>,
    key: VerifyingKey,
    highest: u64,
    running: Option<RunningRelease>,
    outcome: Option<Outcome>,
    etag: Option<String>,
    rng: Rng,
    next_at: Instant,
    interval: Duration,
}

/// Counters the simulator keeps (all threads).
#[derive(Debug, Default)]
pub struct Counters {
    pub checkins: AtomicU64,
    pub errors: AtomicU64,
    pub installs: AtomicU64,
    pub failures: AtomicU64,
    pub refusals: AtomicU64,
    /// Check-in round-trip latencies in microseconds (sampled).
    pub latencies_us: Mutex<Vec<u64>>,
}

/// A running simulated fleet.
pub struct Fleet {
    devices: Vec<Mutex<VirtualDevice>>,
    client: Client,
    http: ureq::Agent,
    cfg: SimConfig,
    pub counters: Arc<Counters>,
    /// What the devices' runtimes would export to Prometheus (see [`crate::exporter`]).
    pub exposition: Arc<Mutex<Exposition>>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Fleet {
    /// Enrolls `cfg.devices` virtual devices.
    pub fn enroll(cfg: SimConfig) -> Result<Self, SimError> {
        if cfg.devices == 0 || cfg.threads == 0 || cfg.time_scale <= 0.0 {
            return Err(SimError::Config(
                "devices, threads and time scale must be positive".into(),
            ));
        }
        cfg.scenario
            .validate()
            .map_err(|e| SimError::Config(e.to_string()))?;
        let client = Client::new(&cfg.server, None).map_err(|e| SimError::Config(e.to_string()))?;
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        // Enroll on `threads` threads; device i keeps index i.
        let slots: Vec<Mutex<Option<Result<VirtualDevice, SimError>>>> =
            (0..cfg.devices).map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for t in 0..cfg.threads.min(cfg.devices) {
                let (cfg, client, slots) = (&cfg, &client, &slots);
                s.spawn(move || {
                    for i in (t..cfg.devices).step_by(cfg.threads) {
                        let r = enroll_one(cfg, client, i);
                        *slots[i].lock().expect("not poisoned") = Some(r);
                    }
                });
            }
        });
        let devices = slots
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .expect("not poisoned")
                    .expect("every slot enrolled")
                    .map(Mutex::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Fleet {
            devices,
            client,
            http,
            cfg,
            counters: Arc::new(Counters::default()),
            exposition: Arc::default(),
        })
    }

    /// A fleet without virtual devices (for runs where real agents do the work).
    pub fn empty() -> Fleet {
        let cfg = SimConfig {
            server: "http://127.0.0.1:9".into(),
            enroll_token: String::new(),
            devices: 0,
            labels: vec![],
            scenario: Scenario::default(),
            runtimes: BTreeMap::new(),
            board: "rpi5".into(),
            ram_mb: 0,
            threads: 1,
            time_scale: 1.0,
            seed: 0,
        };
        Fleet {
            devices: vec![],
            client: Client::new(&cfg.server, None).expect("a loopback URL is valid"),
            http: ureq::Agent::new_with_defaults(),
            cfg,
            counters: Arc::new(Counters::default()),
            exposition: Arc::default(),
        }
    }

    pub fn device_ids(&self) -> Vec<String> {
        self.devices
            .iter()
            .map(|d| d.lock().expect("not poisoned").id.clone())
            .collect()
    }

    /// What each device runs (`app@version`), by id.
    pub fn running(&self) -> BTreeMap<String, Option<String>> {
        self.devices
            .iter()
            .map(|d| {
                let d = d.lock().expect("not poisoned");
                (
                    d.id.clone(),
                    d.running
                        .as_ref()
                        .map(|r| format!("{}@{}", r.app, r.version)),
                )
            })
            .collect()
    }

    /// Runs check-ins on `cfg.threads` threads until `stop` is set.
    pub fn run(&self, stop: &AtomicBool) {
        std::thread::scope(|s| {
            for t in 0..self.cfg.threads {
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let mut earliest = Instant::now() + Duration::from_millis(200);
                        for i in (t..self.devices.len()).step_by(self.cfg.threads) {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            let mut d = self.devices[i].lock().expect("not poisoned");
                            if d.next_at <= Instant::now() {
                                self.checkin(&mut d);
                            }
                            earliest = earliest.min(d.next_at);
                        }
                        let wait = earliest.saturating_duration_since(Instant::now());
                        std::thread::sleep(wait.min(Duration::from_millis(200)));
                    }
                });
            }
        });
    }

    fn checkin(&self, d: &mut VirtualDevice) {
        let release = d
            .running
            .as_ref()
            .map(|r| format!("{}@{}", r.app, r.version));
        let metrics = release.as_ref().map(|rel| {
            let b = self.cfg.scenario.resolve(Some(rel), &d.labels);
            let n = (b.requests_per_checkin as f64 * self.cfg.time_scale.clamp(1.0, 20.0)).round()
                as u64;
            let m = synthesize(&b, &mut d.rng, Some(n));
            self.exposition
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(&d.id, rel, &m);
            m
        });
        let req = CheckinRequest {
            app_metrics: Default::default(),
            inventory: inventory(&self.cfg),
            status: DeviceStatus {
                apps: Default::default(),
                phase: if d.running.is_some() {
                    Phase::Committed
                } else {
                    Phase::Idle
                },
                running: d.running.clone(),
                assignment_version: d.highest,
                last_outcome: d.outcome.clone(),
                download: None,
                stale_since: None,
                assignment_proof: None,
            },
            labels: d.labels.clone(),
            metrics,
            protocol: edgecd_api::protocol::PROTOCOL_VERSION.into(),
        };
        let started = Instant::now();
        let res = self
            .client
            .checkin(&d.id, &d.credential, &req, d.etag.as_deref());
        let took = started.elapsed();
        self.counters.checkins.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.counters.latencies_us.lock()
            && l.len() < 1_000_000
        {
            l.push(took.as_micros() as u64);
        }
        let mut next = d.interval;
        match res {
            Err(_) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Checkin::NotModified { next_secs }) => {
                next = Duration::from_secs_f64(next_secs.max(1) as f64 / self.cfg.time_scale)
            }
            Ok(Checkin::New { response, etag }) => {
                next = Duration::from_secs_f64(
                    response.next_checkin_secs.max(1) as f64 / self.cfg.time_scale,
                );
                if let Some(signed) = response.assignment {
                    match verify_assignment(&signed, &d.key, &d.id, d.highest, now_secs()) {
                        Err(refusal) => {
                            self.counters.refusals.fetch_add(1, Ordering::Relaxed);
                            d.outcome = Some(Outcome {
                                kind: OutcomeKind::Refused,
                                assignment_version: 0,
                                release: None,
                                reason: refusal.0,
                                at: now_secs(),
                            });
                        }
                        Ok(a) => {
                            d.etag = etag;
                            self.install(d, a);
                        }
                    }
                }
            }
        }
        d.next_at = Instant::now() + next;
    }

    fn install(&self, d: &mut VirtualDevice, a: Assignment) {
        d.highest = d.highest.max(a.version);
        let name = format!("{}@{}", a.release.app, a.release.version);
        if d.running
            .as_ref()
            .is_some_and(|r| r.bundle_digest == a.release.bundle_digest)
        {
            return;
        }
        if d.outcome
            .as_ref()
            .is_some_and(|o| o.assignment_version == a.version)
        {
            return; // already tried this assignment version
        }
        let fail = |d: &mut VirtualDevice, kind: OutcomeKind, reason: String| {
            d.outcome = Some(Outcome {
                kind,
                assignment_version: a.version,
                release: Some(name.clone()),
                reason,
                at: now_secs(),
            });
        };
        // Download the bundle and check it against the signed digest and size.
        if let Err(e) = self.fetch_and_check(
            &d.credential,
            &a.release.bundle.digest,
            a.release.bundle.size,
        ) {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            return fail(d, OutcomeKind::Failed, e);
        }
        let b = self.cfg.scenario.resolve(Some(&name), &d.labels);
        if d.rng.chance(b.install_failure_rate) {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            return fail(d, OutcomeKind::Failed, "simulated install failure".into());
        }
        if b.crash_on_activate {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            return fail(
                d,
                OutcomeKind::RolledBack,
                "runtime crashed on activation (simulated); rolled back to the previous slot"
                    .into(),
            );
        }
        self.counters.installs.fetch_add(1, Ordering::Relaxed);
        let slot = if d.running.as_ref().is_some_and(|r| r.slot == "a") {
            "b"
        } else {
            "a"
        };
        d.running = Some(RunningRelease {
            app: a.release.app.clone(),
            version: a.release.version.clone(),
            bundle_digest: a.release.bundle_digest.clone(),
            slot: slot.into(),
            image: None,
        });
        fail(d, OutcomeKind::Committed, String::new());
    }

    fn fetch_and_check(&self, credential: &str, digest: &str, size: u64) -> Result<(), String> {
        let url = format!(
            "{}/api/v1/blobs/{digest}",
            self.cfg.server.trim_end_matches('/')
        );
        let resp = self
            .http
            .get(&url)
            .header("authorization", &format!("Bearer {credential}"))
            .call()
            .map_err(|e| format!("download {digest}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("download {digest}: HTTP {}", resp.status()));
        }
        let mut body = resp.into_body().into_reader().take(size + 1);
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0u64;
        loop {
            let n = body
                .read(&mut buf)
                .map_err(|e| format!("download {digest}: {e}"))?;
            if n == 0 {
                break;
            }
            got += n as u64;
            h.update(&buf[..n]);
        }
        if got != size {
            return Err(format!(
                "bundle is {got} bytes, the signed assignment says {size}"
            ));
        }
        let actual = format!("sha256:{}", hex::encode(h.finalize()));
        if actual != digest {
            return Err(format!(
                "bundle digest {actual} differs from the signed {digest}"
            ));
        }
        Ok(())
    }
}

fn enroll_one(cfg: &SimConfig, client: &Client, i: usize) -> Result<VirtualDevice, SimError> {
    let labels: BTreeMap<String, String> = cfg
        .labels
        .iter()
        .map(|(k, vs)| (k.clone(), vs[i % vs.len()].clone()))
        .collect();
    let req = EnrollRequest {
        token: cfg.enroll_token.clone(),
        inventory: inventory(cfg),
        labels: labels.clone(),
        protocol: edgecd_api::protocol::PROTOCOL_VERSION.into(),
    };
    let r = client.enroll(&req).map_err(|e| SimError::Enroll {
        index: i,
        reason: e.to_string(),
    })?;
    let key = VerifyingKey::from_pem(&r.assignment_key_pem).map_err(|e| SimError::Enroll {
        index: i,
        reason: e.to_string(),
    })?;
    let interval = Duration::from_secs_f64((r.next_checkin_secs.max(1) as f64) / cfg.time_scale);
    Ok(VirtualDevice {
        id: r.device_id,
        credential: r.credential,
        labels,
        key,
        highest: 0,
        running: None,
        outcome: None,
        etag: None,
        rng: Rng::new(cfg.seed.wrapping_add(i as u64)),
        // Spread first check-ins over one interval.
        next_at: Instant::now() + interval.mul_f64(i as f64 / cfg.devices as f64),
        interval,
    })
}

fn inventory(cfg: &SimConfig) -> Inventory {
    Inventory {
        board: cfg.board.clone(),
        board_model: Some("Raspberry Pi 5 Model B (simulated)".into()),
        ram_mb: cfg.ram_mb,
        accelerator: None,
        runtimes: cfg.runtimes.clone(),
        agent_version: format!("edgecd-sim/{}", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_patterns_expand() {
        assert_eq!(
            parse_label_pattern("site=store-{1..3}").unwrap(),
            (
                "site".into(),
                vec!["store-1".into(), "store-2".into(), "store-3".into()]
            )
        );
        assert_eq!(
            parse_label_pattern("fleet=retail").unwrap(),
            ("fleet".into(), vec!["retail".into()])
        );
        assert!(parse_label_pattern("site").is_err());
        assert!(parse_label_pattern("site=s{5..1}").is_err());
    }
}
