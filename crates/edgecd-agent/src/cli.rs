//! Flags of the `edgecd-agent` binary and their translation into a [`Config`].

use crate::agent::Config;
use crate::hooks::HealthCheck;
use edgecd_api::profile::RuntimePin;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `edgecd-agent`: the edgecd device agent.
#[derive(Debug, clap::Parser)]
#[command(
    name = "edgecd-agent",
    version,
    about = "edgecd device agent: pulls, verifies, installs and health-checks model releases"
)]
pub struct Args {
    /// Server URL (https://…; plain http:// only to loopback addresses).
    #[arg(long, env = "EDGECD_SERVER")]
    pub server: String,
    /// Where the agent keeps its credential, state, slots and downloads.
    #[arg(
        long,
        env = "EDGECD_AGENT_DATA_DIR",
        default_value = "/var/lib/edgecd-agent"
    )]
    pub data_dir: PathBuf,
    /// One-time enrollment token (only needed until the device is enrolled).
    #[arg(long, env = "EDGECD_ENROLL_TOKEN")]
    pub enroll_token: Option<String>,
    /// Labels sent at enrollment, `k=v` (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Command run after `current` is switched (gets EDGECD_CURRENT, EDGECD_SLOT_DIR, EDGECD_RELEASE).
    #[arg(long, env = "EDGECD_ACTIVATE_CMD")]
    pub activate_cmd: Option<String>,
    /// Command run when the server removes an app from this device (`on_unmatch: remove`),
    /// to stop its runtime before its slots are deleted; it gets the same `EDGECD_*`
    /// variables as the activation command.
    #[arg(long)]
    pub deactivate_cmd: Option<String>,
    /// Health check command (exit 0 = healthy).
    #[arg(long, env = "EDGECD_HEALTH_CMD", conflicts_with = "health_url")]
    pub health_cmd: Option<String>,
    /// Health check URL (2xx = healthy).
    #[arg(long, env = "EDGECD_HEALTH_URL")]
    pub health_url: Option<String>,
    /// Deadline for the health check to pass, in seconds.
    #[arg(long, default_value_t = 60)]
    pub health_timeout_secs: u64,
    /// Deadline for the activation command, in seconds.
    #[arg(long, default_value_t = 120)]
    pub activate_timeout_secs: u64,
    /// Download bandwidth cap in KiB/s.
    #[arg(long)]
    pub max_download_kbps: Option<u64>,
    /// Drop and resume (HTTP Range) a download that receives no byte for this long. There
    /// is no total time limit: a large model on a slow link may take hours.
    #[arg(long, default_value_t = 60)]
    pub download_stall_timeout_secs: u64,
    /// Most MiB a release's files may take in staging (default: as much as is free).
    #[arg(long)]
    pub staging_budget_mb: Option<u64>,
    /// PEM CA certificate the server's certificate must chain to (pinned).
    #[arg(long, env = "EDGECD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Release public key (PEM) to pin instead of those received at enrollment (repeatable).
    #[arg(long = "release-key")]
    pub release_keys: Vec<PathBuf>,
    /// Board id (default: from /proc/device-tree/model).
    #[arg(long)]
    pub board: Option<String>,
    /// Host name to report (default: /proc/sys/kernel/hostname).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Serial number to report (default: /proc/device-tree/serial-number).
    #[arg(long)]
    pub serial: Option<String>,
    /// Accelerator id, e.g. hailo-10h.
    #[arg(long)]
    pub accelerator: Option<String>,
    /// Installed runtime `NAME@VERSION` (repeatable).
    #[arg(long = "runtime", value_parser = RuntimePin::parse)]
    pub runtimes: Vec<RuntimePin>,
    /// Unconfirmed starts of a new release before falling back to the previous one.
    #[arg(long, default_value_t = 3)]
    pub max_trial_starts: u32,
    /// Apps this device holds side by side, each with its own A/B slots (the first in the
    /// data directory, the others under `apps/APP`); the server checks it, and the RAM and
    /// storage they need together, before placing one more.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub max_apps: u32,
    /// Override the server's check-in delay, in milliseconds (testing).
    #[arg(long, hide = true)]
    pub checkin_interval_ms: Option<u64>,
    /// Exit after this many check-ins (testing).
    #[arg(long, hide = true)]
    pub max_checkins: Option<u64>,
    /// The local inference runtime's Prometheus metrics (latency, errors, confidence), sent
    /// as deltas with each check-in for rollout gates, e.g. http://127.0.0.1:9500/metrics.
    /// With several apps, `{app}` in it is replaced by each app's name (one runtime per
    /// app) and each app's metrics feed the gates of that app's rollouts; in podman mode
    /// `{port}` is replaced by the port of the app's runtime container
    /// (http://127.0.0.1:{port}/metrics).
    #[arg(long, env = "EDGECD_METRICS_URL")]
    pub metrics_url: Option<String>,
    /// SoC temperature file in millidegrees (default: /sys/class/thermal/thermal_zone0/temp).
    #[arg(long)]
    pub thermal_path: Option<PathBuf>,
    /// The firmware's throttling bits (default on a Pi:
    /// /sys/devices/platform/soc/soc:firmware/get_throttled).
    #[arg(long)]
    pub throttle_path: Option<PathBuf>,
    /// Serve the agent's own Prometheus metrics (release, phase, installs, downloads,
    /// check-ins, temperature, throttling) at http://ADDR/metrics. Off by default;
    /// `--metrics-listen` alone listens on 127.0.0.1:9101.
    #[arg(
        long,
        env = "EDGECD_METRICS_LISTEN",
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = crate::exporter::DEFAULT_LISTEN
    )]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Allow `--metrics-listen` on a non-loopback address (the endpoint has no authentication).
    #[arg(long, requires = "metrics_listen")]
    pub metrics_listen_any: bool,
    /// Podman mode: run a release that pins a runtime image in that image under podman
    /// (pulled by digest, signature and digest checked first; image and model roll back
    /// together). Without podman on the device, releases run in native mode.
    #[arg(long, env = "EDGECD_PODMAN")]
    pub podman: bool,
    /// The podman binary.
    #[arg(long, default_value = "podman", requires = "podman")]
    pub podman_bin: PathBuf,
    /// Arguments put before every podman command, whitespace-separated
    /// (e.g. "--runtime runc --storage-driver vfs --cgroup-manager cgroupfs").
    #[arg(long, allow_hyphen_values = true, requires = "podman")]
    pub podman_global_args: Option<String>,
    /// Extra `podman run` arguments, whitespace-separated (e.g. "--ulimit nofile=1024:1024").
    #[arg(long, allow_hyphen_values = true, requires = "podman")]
    pub podman_run_args: Option<String>,
    /// Pull runtime images from this site mirror (HOST[:PORT][/PREFIX]) instead of the
    /// registry in the image reference; the pinned digest still decides what runs.
    #[arg(long, env = "EDGECD_IMAGE_MIRROR", requires = "podman")]
    pub image_mirror: Option<String>,
    /// Pull over plain HTTP / without TLS verification (a registry on loopback, a lab mirror).
    #[arg(long, requires = "podman")]
    pub registry_insecure: bool,
    /// Where the runtime container's HTTP API is published on the device: the first app's.
    /// Each further app's container (edgecd-infer-APP) gets the lowest free port above it,
    /// chosen once and kept in DATA/apps/APP/runtime-port.
    #[arg(long, default_value = "127.0.0.1:9500", requires = "podman")]
    pub runtime_listen: std::net::SocketAddr,
    /// Device node passed to the runtime container when a release needs an accelerator
    /// (repeatable; default /dev/hailo0 for hailo accelerators).
    #[arg(long = "accelerator-device", requires = "podman")]
    pub accelerator_devices: Vec<String>,
    /// CPU limit of the runtime container (podman --cpus, e.g. 2 or 1.5). Its memory limit is
    /// the release's hardware profile `minRamMb`.
    #[arg(long, requires = "podman")]
    pub runtime_cpus: Option<String>,
    /// Production: write the runtime's podman quadlet (edgecd-infer.container, and
    /// edgecd-infer-APP.container for each further app) into this directory (e.g.
    /// /etc/containers/systemd) and restart its service through systemd, instead of
    /// running the container with podman directly.
    #[arg(long, requires = "podman")]
    pub quadlet_dir: Option<PathBuf>,
    /// Restarts of the committed runtime's container that count as a crash loop (then the
    /// previous image and model come back).
    #[arg(long, default_value_t = 3, requires = "podman")]
    pub runtime_max_restarts: u32,
    /// A file the native runtime writes its log to (e.g. edgecd-infer's stderr redirected):
    /// its last lines are sent with `edgecd device logs` (podman mode reads `podman logs`).
    #[arg(long, env = "EDGECD_RUNTIME_LOG")]
    pub runtime_log: Option<PathBuf>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if edgecd_api::protocol::valid_label(k, v) && !v.is_empty() => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!(
            "label {s:?} must be k=v with [A-Za-z0-9._-] characters"
        )),
    }
}

impl Args {
    /// Reads key and CA files and detects the inventory.
    pub fn into_config(self) -> anyhow::Result<Config> {
        use anyhow::Context as _;
        if let Some(addr) = self.metrics_listen {
            crate::exporter::check_addr(addr, self.metrics_listen_any)?;
        }
        let ca_pem = match &self.ca_cert {
            Some(p) => Some(
                std::fs::read(p)
                    .with_context(|| format!("reading CA certificate {}", p.display()))?,
            ),
            None => None,
        };
        let release_keys = self
            .release_keys
            .iter()
            .map(|p| {
                edgecd_sign::VerifyingKey::load(p)
                    .with_context(|| format!("release key {}", p.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let runtimes: BTreeMap<String, String> = self
            .runtimes
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        let mut inventory = crate::inventory::detect(
            self.board.as_deref(),
            self.accelerator.as_deref(),
            &runtimes,
        );
        if self.hostname.is_some() {
            inventory.hostname = self.hostname;
        }
        if self.serial.is_some() {
            inventory.serial = self.serial;
        }
        let podman = self.podman.then(|| {
            let mut p = crate::runtime::PodmanConfig::new(self.runtime_listen);
            p.podman = self.podman_bin.clone();
            let split = |s: &Option<String>| {
                s.as_deref()
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            };
            p.global_args = split(&self.podman_global_args);
            p.run_args = split(&self.podman_run_args);
            p.mirror = self.image_mirror.clone();
            p.tls_verify = !self.registry_insecure;
            p.accelerator_devices = if self.accelerator_devices.is_empty() {
                match self.accelerator.as_deref() {
                    Some(a) if a.starts_with("hailo") => vec!["/dev/hailo0".to_string()],
                    _ => Vec::new(),
                }
            } else {
                self.accelerator_devices.clone()
            };
            p.cpus = self.runtime_cpus.clone();
            p.quadlet_dir = self.quadlet_dir.clone();
            p.max_restarts = self.runtime_max_restarts;
            p
        });
        let health = match (self.health_cmd, self.health_url) {
            (Some(c), _) => Some(HealthCheck::Cmd(c)),
            (None, Some(u)) => Some(HealthCheck::Url(u)),
            (None, None) => None,
        };
        Ok(Config {
            server: self.server,
            data_dir: self.data_dir,
            enroll_token: self.enroll_token,
            labels: self.labels.into_iter().collect(),
            activate_cmd: self.activate_cmd,
            deactivate_cmd: self.deactivate_cmd,
            health,
            activate_timeout: Duration::from_secs(self.activate_timeout_secs),
            health_timeout: Duration::from_secs(self.health_timeout_secs),
            health_interval: Duration::from_millis(500),
            max_download_kbps: self.max_download_kbps,
            download_stall_timeout: Duration::from_secs(self.download_stall_timeout_secs.max(1)),
            staging_budget_bytes: self.staging_budget_mb.map(|m| m.saturating_mul(1 << 20)),
            ca_pem,
            release_keys,
            inventory,
            max_trial_starts: self.max_trial_starts,
            max_apps: self.max_apps,
            checkin_interval: self.checkin_interval_ms.map(Duration::from_millis),
            max_checkins: self.max_checkins,
            metrics_url: self.metrics_url,
            throttle_path: self.throttle_path.or_else(|| {
                let p = PathBuf::from("/sys/devices/platform/soc/soc:firmware/get_throttled");
                p.exists().then_some(p)
            }),
            metrics_listen: self.metrics_listen,
            metrics_listen_any: self.metrics_listen_any,
            podman,
            thermal_path: self.thermal_path.or_else(|| {
                let p = PathBuf::from("/sys/class/thermal/thermal_zone0/temp");
                p.exists().then_some(p)
            }),
            runtime_log: self.runtime_log,
        })
    }
}

/// Structured JSON logs on stderr (`RUST_LOG`-style level via `EDGECD_LOG`, default info),
/// the recent ones also kept in memory for `edgecd device logs` ([`crate::logbuf`]).
pub fn init_tracing() {
    let level = std::env::var("EDGECD_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_writer(crate::logbuf::Tee)
        .with_ansi(false)
        .try_init();
}

/// The binary's body: parse flags, set up logs, run the agent.
pub fn main() -> anyhow::Result<()> {
    use clap::Parser as _;
    let args = Args::parse();
    init_tracing();
    let cfg = args.into_config()?;
    let mut agent = crate::Agent::new(
        cfg,
        std::sync::Arc::new(crate::install::EdgecdBundleInstaller),
        std::sync::Arc::new(crate::client::FileStorage),
    )?;
    agent.run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec!["edgecd-agent", "--server", "http://127.0.0.1:1"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_loopback_by_default() {
        assert_eq!(parse(&[]).expect("parse").metrics_listen, None);
        let a = parse(&["--metrics-listen"]).expect("parse");
        assert_eq!(
            a.metrics_listen.map(|a| a.to_string()).as_deref(),
            Some(crate::exporter::DEFAULT_LISTEN)
        );
        let a = parse(&["--metrics-listen", "127.0.0.1:9200"]).expect("parse");
        assert_eq!(a.metrics_listen.map(|a| a.port()), Some(9200));
        // A network address needs the explicit opt-in.
        let err = parse(&["--metrics-listen", "0.0.0.0:9101"])
            .expect("parse")
            .into_config()
            .err()
            .expect("refused");
        assert!(err.to_string().contains("--metrics-listen-any"), "{err}");
        let a =
            parse(&["--metrics-listen", "0.0.0.0:9101", "--metrics-listen-any"]).expect("parse");
        assert!(a.metrics_listen_any);
        assert!(
            parse(&["--metrics-listen-any"]).is_err(),
            "needs --metrics-listen"
        );
    }
}
