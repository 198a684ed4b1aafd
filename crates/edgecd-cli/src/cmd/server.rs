//! `edgecd server`: runs the control plane (see `edgecd-server`): SQLite + blob store under
//! `--data-dir`, HTTPS when given a certificate and key, rollout notifications from
//! `--notifications FILE`, graceful shutdown on SIGTERM.
use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Data directory (database, blobs, keys, admin token).
    #[arg(long, env = "EDGECD_DATA_DIR", default_value = "./edgecd-data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "EDGECD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// PEM certificate chain: serve HTTPS (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds devices wait between check-ins.
    #[arg(long, default_value_t = 60)]
    pub checkin_interval_secs: u64,
    /// Lifetime of signed assignments, in seconds (devices refuse expired ones).
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub assignment_ttl_secs: u64,
    /// Largest blob an admin may upload, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub max_blob_mib: u64,
    /// Bandwidth cap of each blob download to a device, in KiB/s.
    #[arg(long)]
    pub device_max_kbps: Option<u64>,
    /// Rollout notification channels (Slack, Teams, signed webhooks): a YAML file, see the
    /// README. Checked at start: the server refuses to start when it is wrong.
    #[arg(long, env = "EDGECD_NOTIFICATIONS")]
    pub notifications: Option<PathBuf>,
}

pub fn run(a: ServerArgs) -> anyhow::Result<ExitCode> {
    edgecd_server::init_tracing();
    let mut cfg = edgecd_server::Config::new(a.data_dir);
    cfg.listen = a.listen;
    cfg.tls = a.tls_cert.zip(a.tls_key);
    cfg.checkin_interval_secs = a.checkin_interval_secs.max(1);
    cfg.assignment_ttl_secs = a.assignment_ttl_secs.max(60);
    cfg.max_blob_bytes = a.max_blob_mib.saturating_mul(1 << 20);
    cfg.blob_rate_kbps = a.device_max_kbps.filter(|k| *k > 0);
    if let Some(path) = &a.notifications {
        cfg.notifications = edgecd_server::notify::NotifyConfig::load(path)
            .with_context(|| format!("--notifications {}", path.display()))?;
    }
    edgecd_server::run_blocking(cfg).context("control-plane server")?;
    Ok(ExitCode::SUCCESS)
}
