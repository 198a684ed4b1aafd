//! `edgecd sim`: a simulated fleet against a real server (see `edgecd-sim`).
use super::admin::Remote;
use anyhow::Context as _;
use edgecd_api::protocol::CreateTokenRequest;
use edgecd_sim::{Fleet, Scenario, SimConfig, parse_label_pattern};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Number of virtual devices.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Labels, `key=value` or `key=prefix-{1..N}` (devices take the values in turn); repeat.
    #[arg(long = "labels", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Scenario YAML: per-release and per-label latency, errors, confidence, temperature,
    /// install failures, crash on activate.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Enrollment token; without one, a token is created with the admin token.
    #[arg(long, env = "EDGECD_ENROLL_TOKEN")]
    pub enroll_token: Option<String>,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Stop after this long (e.g. 10m); default: run until interrupted.
    #[arg(long)]
    pub duration: Option<String>,
    #[arg(long, default_value_t = 16)]
    pub threads: usize,
    /// Runtime the devices report, NAME@VERSION.
    #[arg(long, default_value = "edgecd-infer@0.1.0")]
    pub runtime: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Serve the devices' inference metrics (edgecd-infer's families, labelled with
    /// `device` and `release`) for Prometheus at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Print the final summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: Remote,
}

pub fn run(a: SimArgs) -> anyhow::Result<ExitCode> {
    let scenario: Scenario = match &a.scenario {
        Some(p) => serde_yaml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing scenario {}", p.display()))?,
        None => Scenario::default(),
    };
    let labels = a
        .labels
        .iter()
        .map(|l| parse_label_pattern(l))
        .collect::<Result<Vec<_>, _>>()?;
    let token = match a.enroll_token {
        Some(t) => t,
        None => {
            a.remote
                .client()?
                .create_token(&CreateTokenRequest {
                    labels: BTreeMap::new(),
                    expires_in_secs: Some(3600),
                    max_uses: Some(u32::try_from(a.devices).unwrap_or(u32::MAX)),
                })?
                .token
        }
    };
    let rt = edgecd_api::profile::RuntimePin::parse(&a.runtime).map_err(anyhow::Error::msg)?;
    let duration = a
        .duration
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .context("--duration")?;
    let cfg = SimConfig {
        server: a.remote.server.clone(),
        enroll_token: token,
        devices: a.devices,
        labels,
        scenario,
        runtimes: [(rt.name, rt.version)].into(),
        board: "rpi5".into(),
        ram_mb: 8192,
        threads: a.threads,
        time_scale: a.time_scale,
        seed: a.seed,
    };
    let enroll_started = Instant::now();
    let fleet = Fleet::enroll(cfg)?;
    eprintln!(
        "enrolled {} virtual devices in {:.1}s",
        a.devices,
        enroll_started.elapsed().as_secs_f64()
    );
    let exporter_stop = std::sync::Arc::new(AtomicBool::new(false));
    let exporter = match a.metrics_listen {
        Some(addr) => {
            let (bound, h) =
                edgecd_sim::exporter::serve(addr, fleet.exposition.clone(), exporter_stop.clone())
                    .with_context(|| format!("--metrics-listen {addr}"))?;
            eprintln!("device metrics at http://{bound}/metrics");
            Some(h)
        }
        None => None,
    };
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| fleet.run(&stop));
        let t0 = Instant::now();
        loop {
            std::thread::sleep(Duration::from_secs(5));
            let c = &fleet.counters;
            let mut by_release: BTreeMap<String, usize> = BTreeMap::new();
            for r in fleet.running().into_values() {
                *by_release
                    .entry(r.unwrap_or_else(|| "nothing".into()))
                    .or_default() += 1;
            }
            eprintln!(
                "[{:>5.0}s] check-ins {} errors {} installs {} failures {} refusals {} running {:?}",
                t0.elapsed().as_secs_f64(),
                c.checkins.load(Ordering::Relaxed),
                c.errors.load(Ordering::Relaxed),
                c.installs.load(Ordering::Relaxed),
                c.failures.load(Ordering::Relaxed),
                c.refusals.load(Ordering::Relaxed),
                by_release
            );
            if duration.is_some_and(|d| t0.elapsed() >= d) {
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
    });
    exporter_stop.store(true, Ordering::Relaxed);
    if let Some(h) = exporter {
        let _ = h.join();
    }
    let c = &fleet.counters;
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat = c.latencies_us.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_unstable();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |v| *v as f64 / 1000.0)
    };
    let n = c.checkins.load(Ordering::Relaxed);
    let (errors, rate) = (
        c.errors.load(Ordering::Relaxed),
        n as f64 / elapsed.max(1e-9),
    );
    if a.json {
        crate::output::print_json(&serde_json::json!({
            "devices": a.devices,
            "checkins": n,
            "errors": errors,
            "checkinsPerSecond": rate,
            "latencyP50Ms": pct(0.50),
            "latencyP99Ms": pct(0.99),
        }))?;
    } else {
        crate::outln!(
            "summary: devices {} check-ins {n} errors {errors} rate {rate:.0}/s latency p50 {:.2} ms p99 {:.2} ms",
            a.devices,
            pct(0.50),
            pct(0.99)
        );
    }
    Ok(ExitCode::SUCCESS)
}
