//! `edgecd server`: runs the control plane (see `edgecd-server`): SQLite (or PostgreSQL with
//! `--database`) + blob store under `--data-dir`, HTTPS when given a certificate and key, rollout notifications from
//! `--notifications FILE`, graceful shutdown on SIGTERM; `edgecd server backup|restore`
//! (`edgecd_server::backup`).
use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    #[command(subcommand)]
    pub action: Option<ServerAction>,
    /// Data directory (database, blobs, keys, admin token).
    #[arg(long, env = "EDGECD_DATA_DIR", default_value = "./edgecd-data")]
    pub data_dir: PathBuf,
    /// The database: the embedded SQLite file DATA/edgecd.db by default, or
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB` (several servers may share one; every one of
    /// them needs the same DATA/keys/assignment.key).
    #[arg(long, env = "EDGECD_DATABASE")]
    pub database: Option<String>,
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
    /// Lifetime of signed assignments, in seconds (devices refuse expired ones). At least
    /// 60 and at least three check-in intervals (they are re-signed at half their lifetime
    /// when a device checks in).
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub assignment_ttl_secs: u64,
    /// Lifetime of the signed timestamp on every check-in answer, in seconds: a device that
    /// sees no fresh one for this long reports stale answers (a replaying proxy or cache).
    /// At least 60 and at least two check-in intervals.
    #[arg(long, default_value_t = 600)]
    pub timestamp_ttl_secs: u64,
    /// Largest blob an admin may upload, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub max_blob_mib: u64,
    /// Bandwidth cap of each blob download to a device, in KiB/s.
    #[arg(long)]
    pub device_max_kbps: Option<u64>,
    /// Prometheus that `provider: prometheus` rollout gates query (root URL, e.g.
    /// http://127.0.0.1:9090).
    #[arg(long, env = "EDGECD_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Timeout of each gate query, in seconds (a timeout is a provider error: the rollout holds).
    #[arg(long, default_value_t = 5)]
    pub prometheus_timeout_secs: u64,
    /// File holding the bearer token Alertmanager presents at /api/v1/hooks/alertmanager
    /// (its webhook_configs http_config.authorization.credentials_file).
    #[arg(long, env = "EDGECD_ALERT_HOOK_TOKEN_FILE")]
    pub alert_hook_token_file: Option<PathBuf>,
    /// File holding an HMAC-SHA256 key: requests signed with it (X-Edgecd-Signature-256:
    /// sha256=<hex of HMAC(body)>) are accepted at /api/v1/hooks/alertmanager.
    #[arg(long, env = "EDGECD_ALERT_HOOK_HMAC_KEY_FILE")]
    pub alert_hook_hmac_key_file: Option<PathBuf>,
    /// ChatOps, Slack: file holding the Slack app's signing secret. Turns on
    /// /api/v1/hooks/slack (the app's Interactivity Request URL) and buttons in messages.
    #[arg(long, env = "EDGECD_SLACK_SIGNING_SECRET_FILE")]
    pub slack_signing_secret_file: Option<PathBuf>,
    /// ChatOps, Teams: file holding the outgoing webhook's security token (base64, as Teams
    /// shows it). Turns on /api/v1/hooks/teams (Authorization: HMAC …).
    #[arg(long, env = "EDGECD_TEAMS_HMAC_SECRET_FILE")]
    pub teams_hmac_secret_file: Option<PathBuf>,
    /// ChatOps: who the chat users are, one a line: `slack:UID ROLE`, `teams:AAD-OBJECT-ID
    /// ROLE` or `… token:NAME` (act with that API token's role). Unlisted users are refused.
    #[arg(long, env = "EDGECD_CHAT_USERS")]
    pub chat_users: Option<PathBuf>,
    /// Slack `response_url`s the server may POST message updates to start with one of these
    /// (repeatable; default https://hooks.slack.com/).
    #[arg(long = "slack-response-url-prefix")]
    pub slack_response_url_prefixes: Vec<String>,
    /// Rollout notification channels (Slack, Teams, signed webhooks): a YAML file, see the
    /// README. Checked at start: the server refuses to start when it is wrong.
    #[arg(long, env = "EDGECD_NOTIFICATIONS")]
    pub notifications: Option<PathBuf>,
    /// Keep blobs in an OCI registry, `http(s)://HOST[:PORT]/REPOSITORY`: uploads are pushed
    /// there, published releases become OCI artifacts (signatures and SBOM as referrers), and
    /// devices download from it. Needed when several servers share a database.
    #[arg(long, env = "EDGECD_BLOB_REGISTRY")]
    pub blob_registry: Option<String>,
    /// The registry's base URL as devices reach it (default: the --blob-registry URL).
    #[arg(long, requires = "blob_registry")]
    pub blob_registry_public_url: Option<String>,
    /// A registry mirror for the devices labelled `site=SITE`: `SITE=http(s)://HOST[:PORT]`
    /// (repeatable). It must hold the same repository.
    #[arg(
        long = "blob-mirror",
        value_name = "SITE=URL",
        requires = "blob_registry"
    )]
    pub blob_mirrors: Vec<String>,
    /// A registry mirror for the runtime images of devices labelled `site=SITE`:
    /// `SITE=HOST[:PORT][/PREFIX]` (repeatable); named to those devices at check-in (their
    /// own `--image-mirror` wins). The image digest stays the one the release pins.
    #[arg(long = "image-mirror", value_name = "SITE=HOST[:PORT][/PREFIX]")]
    pub image_mirrors: Vec<String>,
    /// How often the controller drives active rollouts, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub controller_tick_ms: u64,
    /// How long the controller lease lasts unless renewed, in milliseconds: with several
    /// servers on one PostgreSQL database, another one takes over the controller this long
    /// after its holder died. At least 3 controller ticks.
    #[arg(long, default_value_t = 15_000)]
    pub controller_lease_ms: u64,
}

/// `edgecd server backup|restore`.
#[derive(Debug, clap::Subcommand)]
pub enum ServerAction {
    /// Back up a server while it runs: a consistent database snapshot (SQLite `VACUUM INTO`,
    /// PostgreSQL `pg_dump`), the assignment key, the admin token and the blobs, into the
    /// new directory OUT.
    Backup {
        /// The server's data directory.
        #[arg(long, env = "EDGECD_DATA_DIR", default_value = "./edgecd-data")]
        data_dir: PathBuf,
        /// The server's database, as given to `edgecd server --database` (default: the
        /// SQLite file in the data directory).
        #[arg(long, env = "EDGECD_DATABASE")]
        database: Option<String>,
        /// A new (or empty) directory for the backup.
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a fresh data directory (and, for a PostgreSQL backup, an empty
    /// database); then start `edgecd server` on it.
    Restore {
        /// A new (or empty) data directory.
        #[arg(long, env = "EDGECD_DATA_DIR", default_value = "./edgecd-data")]
        data_dir: PathBuf,
        /// An empty PostgreSQL database for a PostgreSQL backup (create it with createdb).
        #[arg(long, env = "EDGECD_DATABASE")]
        database: Option<String>,
        /// The backup directory `edgecd server backup` wrote.
        backup: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn run_action(a: ServerAction) -> anyhow::Result<ExitCode> {
    let (m, json, what) = match a {
        ServerAction::Backup {
            data_dir,
            database,
            out,
            json,
        } => {
            let m = edgecd_server::backup::block_on(edgecd_server::backup::backup(
                &data_dir,
                database.as_deref(),
                &out,
            ))
            .with_context(|| format!("backing up {} into {}", data_dir.display(), out.display()))?;
            (m, json, format!("backed up into {}", out.display()))
        }
        ServerAction::Restore {
            data_dir,
            database,
            backup,
            json,
        } => {
            let m = edgecd_server::backup::block_on(edgecd_server::backup::restore(
                &backup,
                &data_dir,
                database.as_deref(),
            ))
            .with_context(|| {
                format!("restoring {} into {}", backup.display(), data_dir.display())
            })?;
            (m, json, format!("restored into {}", data_dir.display()))
        }
    };
    if json {
        crate::output::print_json(&m)?;
    } else {
        crate::outln!(
            "{what}: {} database, {} blobs ({} bytes), edgecd {}",
            m.backend,
            m.blobs,
            m.blob_bytes,
            m.edgecd_version
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a one-line secret from `path` (surrounding whitespace dropped).
fn read_secret(path: &std::path::Path, what: &str) -> anyhow::Result<edgecd_server::util::Secret> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} from {}", path.display()))?;
    let s = s.trim();
    if s.len() < 16 {
        anyhow::bail!(
            "the {what} in {} is {} characters: use at least 16 random characters (e.g. `openssl rand -hex 32 > {}`)",
            path.display(),
            s.len(),
            path.display()
        );
    }
    Ok(edgecd_server::util::Secret::new(s))
}

/// `value` of `flag`, or an error naming its floor (never silently raised).
fn at_least(flag: &str, value: u64, floor: u64, why: &str) -> anyhow::Result<u64> {
    if value < floor {
        anyhow::bail!(
            "{flag} {value} is below its floor of {floor} seconds (60, and {why} of --checkin-interval-secs): devices would be left with expired metadata between check-ins; pass {flag} {floor} or more"
        );
    }
    Ok(value)
}

pub fn run(mut a: ServerArgs) -> anyhow::Result<ExitCode> {
    if let Some(action) = a.action.take() {
        return run_action(action);
    }
    edgecd_server::init_tracing();
    let mut cfg = edgecd_server::Config::new(a.data_dir);
    cfg.database = a.database;
    cfg.listen = a.listen;
    cfg.tls = a.tls_cert.zip(a.tls_key);
    if a.checkin_interval_secs == 0 {
        anyhow::bail!("--checkin-interval-secs must be at least 1");
    }
    cfg.checkin_interval_secs = a.checkin_interval_secs;
    cfg.assignment_ttl_secs = at_least(
        "--assignment-ttl-secs",
        a.assignment_ttl_secs,
        60.max(3 * a.checkin_interval_secs),
        "three check-in intervals",
    )?;
    cfg.timestamp_ttl_secs = at_least(
        "--timestamp-ttl-secs",
        a.timestamp_ttl_secs,
        60.max(2 * a.checkin_interval_secs),
        "two check-in intervals",
    )?;
    cfg.max_blob_bytes = a.max_blob_mib.saturating_mul(1 << 20);
    cfg.blob_rate_kbps = a.device_max_kbps.filter(|k| *k > 0);
    if let Some(u) = &a.prometheus_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            anyhow::bail!("--prometheus-url {u:?} must be an http:// or https:// URL");
        }
        cfg.prometheus_url = Some(u.clone());
    }
    cfg.prometheus_timeout_ms = a.prometheus_timeout_secs.max(1) * 1000;
    cfg.alert_hook_token = a
        .alert_hook_token_file
        .as_deref()
        .map(|p| read_secret(p, "alert hook token"))
        .transpose()?;
    cfg.alert_hook_hmac_key = a
        .alert_hook_hmac_key_file
        .as_deref()
        .map(|p| read_secret(p, "alert hook HMAC key"))
        .transpose()?;
    if let Some(r) = &a.blob_registry {
        let mut reg =
            edgecd_server::registry::RegistryConfig::parse(r).map_err(anyhow::Error::msg)?;
        reg.public_url = a.blob_registry_public_url.clone();
        for m in &a.blob_mirrors {
            let (site, url) = m
                .split_once('=')
                .filter(|(s, u)| {
                    !s.is_empty() && (u.starts_with("http://") || u.starts_with("https://"))
                })
                .ok_or_else(|| {
                    anyhow::anyhow!("--blob-mirror {m:?}: expected SITE=http(s)://HOST[:PORT]")
                })?;
            reg.mirrors.insert(site.to_string(), url.to_string());
        }
        cfg.blob_registry = Some(reg);
    }
    for m in &a.image_mirrors {
        let (site, host) = m
            .split_once('=')
            .filter(|(s, h)| !s.is_empty() && !h.is_empty() && !h.contains("://"))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--image-mirror {m:?}: expected SITE=HOST[:PORT][/PREFIX] (no scheme)"
                )
            })?;
        cfg.image_mirrors.insert(site.to_string(), host.to_string());
    }
    cfg.controller_tick_ms = a.controller_tick_ms.max(10);
    if a.controller_lease_ms < 3 * cfg.controller_tick_ms {
        anyhow::bail!(
            "--controller-lease-ms {} is below three controller ticks ({} ms): the controller would lose its lease between passes; pass {} or more",
            a.controller_lease_ms,
            3 * cfg.controller_tick_ms,
            3 * cfg.controller_tick_ms
        );
    }
    cfg.controller_lease_ms = a.controller_lease_ms;
    if let Some(path) = &a.notifications {
        cfg.notifications = edgecd_server::notify::NotifyConfig::load(path)
            .with_context(|| format!("--notifications {}", path.display()))?;
    }
    cfg.chat.slack_signing_secret = a
        .slack_signing_secret_file
        .as_deref()
        .map(|p| read_secret(p, "Slack signing secret"))
        .transpose()?;
    cfg.chat.teams_secret = a
        .teams_hmac_secret_file
        .as_deref()
        .map(|p| read_secret(p, "Teams outgoing-webhook secret"))
        .transpose()?;
    if let Some(t) = &cfg.chat.teams_secret {
        edgecd_server::chatops::teams_signature(t.expose(), b"")
            .map_err(|e| anyhow::anyhow!("--teams-hmac-secret-file: {e}"))?;
    }
    if let Some(path) = &a.chat_users {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --chat-users {}", path.display()))?;
        cfg.chat.users = edgecd_server::chatops::ChatConfig::parse_users(&text)
            .map_err(|e| anyhow::anyhow!("--chat-users {}: {e}", path.display()))?;
    } else if cfg.chat.enabled() {
        anyhow::bail!(
            "--slack-signing-secret-file/--teams-hmac-secret-file need --chat-users FILE: who may act, e.g. `slack:U012ABCDEF approver`"
        );
    }
    if !a.slack_response_url_prefixes.is_empty() {
        cfg.chat.slack_response_url_prefixes = a.slack_response_url_prefixes.clone();
    }
    edgecd_server::run_blocking(cfg).context("control-plane server")?;
    Ok(ExitCode::SUCCESS)
}
