//! The edgecd control plane (design §3–4, §7): enrollment, check-in, signed assignments,
//! releases verified on publish, a content-addressed blob store served with HTTP Range, and
//! the admin API. Embedded SQLite (WAL) and blobs live under one data directory.
//!
//! Owns: [`Config`], [`Server`] (open the store and data dir, start the notifier, build the
//! axum router, run the controller, serve HTTP or HTTPS with graceful shutdown). Layers:
//! [`http`] (the router and thin handlers) → domain modules ([`checkin`], [`devices`],
//! [`deploy`], [`assign`] — the one path that changes what a device runs —, [`release`],
//! [`keys`], [`rollouts`], [`fleets`] — desired state the controller reconciles —, [`notify`], [`chatops`] — Slack/Teams actions —, [`device_logs`] — logs and diagnosis on demand —, …); [`console`] is the web console (session-cookie login, CSRF, embedded assets) → [`store`] (all SQL, one module per backend);
//! [`controller`] is the supervised service that changes state on its own, elected among
//! replicas by a lease; people and access are [`auth`] (API tokens, roles, the access layer)
//! and [`audit`]; [`blobs`] and [`registry`] hold content-addressed storage; [`backup`] is
//! online backup and restore; [`EmbeddedServer`] runs it all in-process.
//!
//! Data directory layout:
//! ```text
//! DATA/edgecd.db (+ -wal, -shm)    SQLite store
//! DATA/blobs/sha256/<hex>          content-addressed blobs
//! DATA/blobs/uploads/<hex>         unfinished (resumable) uploads
//! DATA/keys/assignment.key|.pub    the online key that signs assignments (0600 private key)
//! DATA/admin-token                 the admin token, written once (0600)
//! ```

pub mod alerts;
pub mod assign;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod blobs;
pub mod chatops;
pub mod checkin;
pub mod console;
pub mod controller;
pub mod deploy;
pub mod device_logs;
pub mod devices;
pub mod embedded;
pub mod error;
pub mod fleets;
pub mod gitops;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod notify;
pub mod placement;
pub mod promql;
pub mod registry;
pub mod release;
pub mod rollouts;
pub mod store;
pub mod util;
pub mod validate;

pub use embedded::EmbeddedServer;
pub use error::{ApiError, ServerError};

use edgecd_sign::SigningKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// The database: `None` is the embedded SQLite file `DATA/edgecd.db`; `postgres://…`
    /// a PostgreSQL database several replicas may share (see [`store::open`]).
    pub database: Option<String>,
    pub listen: SocketAddr,
    /// PEM certificate chain and private key: serve HTTPS when set.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Delay the server asks devices to wait between check-ins.
    pub checkin_interval_secs: u64,
    /// Lifetime of a signed assignment.
    pub assignment_ttl_secs: u64,
    /// Lifetime of the signed timestamp on every check-in answer (freeze-attack detection:
    /// an agent that sees none valid for this long reports stale answers).
    pub timestamp_ttl_secs: u64,
    /// Re-sign (with a higher version) assignments past half their lifetime on check-in.
    pub refresh_assignments: bool,
    /// Blobs pushed to (and devices sent to) an OCI registry; `None`: the server serves
    /// blobs from its data directory.
    pub blob_registry: Option<registry::RegistryConfig>,
    /// Registry mirror (`HOST[:PORT][/PREFIX]`) per value of the device label `site`, named
    /// to devices for pulling runtime images.
    pub image_mirrors: std::collections::BTreeMap<String, String>,
    /// Largest blob an admin may upload.
    pub max_blob_bytes: u64,
    /// Bandwidth cap of each blob download to a device, in KiB/s.
    pub blob_rate_kbps: Option<u64>,
    /// Blobs no release refers to (and stale partial uploads) are removed once untouched
    /// this long, by a sweep every `blob_gc_every_secs` and by `POST /api/v1/admin/blobs/gc`.
    pub blob_gc_grace_secs: u64,
    pub blob_gc_every_secs: u64,
    /// How often the rollout controller drives active rollouts.
    pub controller_tick_ms: u64,
    /// How long the controller lease lasts unless renewed: with several replicas on one
    /// database, another replica takes over the controller this long after its holder died.
    pub controller_lease_ms: u64,
    /// Where the controller and the API read the time (tests inject a fake clock).
    pub clock: Arc<dyn controller::Clock>,
    /// A notifier to use instead of starting one from `notifications` (tests inject one
    /// that records what the controller sends).
    pub notifier: Option<Arc<dyn notify::Notify>>,
    /// Root URL of the Prometheus that `provider: prometheus` gates query, and the timeout
    /// of each query.
    pub prometheus_url: Option<String>,
    pub prometheus_timeout_ms: u64,
    /// Credentials an alert source (Alertmanager) presents at
    /// `POST /api/v1/hooks/alertmanager`: a bearer token and/or an HMAC-SHA256 key signing
    /// the body. With neither set the receiver answers 404.
    pub alert_hook_token: Option<util::Secret>,
    pub alert_hook_hmac_key: Option<util::Secret>,

    // --- Rollout notifications ---
    /// Notification channels (Slack, Teams, signed webhooks), the public URL of rollout
    /// links and the delivery policy, from `edgecd server --notifications FILE`
    /// ([`notify::NotifyConfig::load`] validates it). Default: no channels, links derived
    /// from `listen`. Webhook URLs and keys inside are redacted in `Debug`.
    pub notifications: notify::NotifyConfig,

    // --- ChatOps ---
    /// Slack / Teams buttons that act on rollouts ([`chatops`]): secrets, who is who.
    pub chat: chatops::ChatConfig,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            database: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            checkin_interval_secs: 60,
            assignment_ttl_secs: 7 * 24 * 3600,
            timestamp_ttl_secs: 600,
            refresh_assignments: true,
            blob_registry: None,
            image_mirrors: Default::default(),
            max_blob_bytes: 4 << 30,
            blob_rate_kbps: None,
            blob_gc_grace_secs: 24 * 3600,
            blob_gc_every_secs: 3600,
            controller_tick_ms: 1000,
            controller_lease_ms: 15_000,
            clock: Arc::new(controller::SystemClock),
            notifier: None,
            prometheus_url: None,
            prometheus_timeout_ms: 5000,
            alert_hook_token: None,
            alert_hook_hmac_key: None,
            notifications: notify::NotifyConfig::default(),
            chat: chatops::ChatConfig::default(),
        }
    }
}

/// Shared state of the request handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: store::SharedStore,
    pub blobs: blobs::BlobStore,
    pub signing_key: Arc<SigningKey>,
    pub config: Arc<Config>,
    /// The gate provider for `provider: prometheus` gates, when `prometheus_url` is set.
    pub prometheus: Option<promql::Prometheus>,
    /// Sends rollout notifications without blocking (see [`notify`]).
    pub notifier: Arc<dyn notify::Notify>,
    /// Where time comes from (`Config::clock`).
    pub clock: Arc<dyn controller::Clock>,
    /// This server among replicas sharing a database (host, process, random suffix).
    pub replica_id: String,
    /// The controller's health (`/readyz`, `/metrics`).
    pub controller: Arc<controller::Health>,
    /// Check-in latencies (`/metrics`).
    pub checkins: Arc<metrics::Checkins>,
    /// Where blobs live beyond `blobs` and where devices fetch them: the local disk, or an
    /// OCI registry (`Config::blob_registry`).
    pub blob_backend: Arc<dyn blobs::BlobBackend>,
}

impl AppState {
    /// Unix seconds by the injected clock.
    pub fn now(&self) -> u64 {
        self.clock.now().max(0) as u64
    }
}

/// An opened server: data dir, store, keys.
pub struct Server {
    pub state: AppState,
    /// The admin token, only on the first start (it is stored hashed).
    pub new_admin_token: Option<String>,
}

const ADMIN_TOKEN_SETTING: &str = "admin_token_sha256";
/// The hint of the key that signs assignments: replicas sharing a database must share the key
/// too, or devices would refuse the assignments of all but one of them.
const ASSIGNMENT_KEY_SETTING: &str = "assignment_key_hint";

impl Server {
    /// Opens the data directory: store (migrated), blob store, assignment-signing key and
    /// admin token, creating what is missing; starts the notifier, which queues the
    /// notifications still pending in the outbox.
    pub async fn open(config: Config) -> Result<Self, ServerError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| ServerError::io(dir, e))?;
        let store = store::open(config.database.as_deref(), dir).await?;
        let blobs = blobs::BlobStore::open(dir)?;
        let signing_key = Arc::new(load_or_create_key(dir)?);
        let hint = signing_key.verifying_key().hint();
        let stored_hint = store
            .setting_or_insert(ASSIGNMENT_KEY_SETTING, &hint)
            .await?;
        if stored_hint != hint {
            return Err(ServerError::Key(format!(
                "this database's assignments are signed with key {stored_hint}, but {} holds key {hint}: \
                 every server sharing a database needs the same keys/assignment.key (copy it from \
                 the first server's data directory)",
                dir.join("keys/assignment.key").display()
            )));
        }
        let (admin_hash, new_admin_token) = match store.setting(ADMIN_TOKEN_SETTING).await? {
            Some(h) => (h, None),
            None => {
                let token = util::random_token("eda");
                let h = util::hash_secret(&token);
                // Several replicas may start at once on one database: the first one's token wins.
                let stored = store.setting_or_insert(ADMIN_TOKEN_SETTING, &h).await?;
                if stored == h {
                    let path = dir.join("admin-token");
                    let _ = std::fs::remove_file(&path);
                    util::write_private_new(&path, format!("{token}\n").as_bytes())
                        .map_err(|e| ServerError::io(&path, e))?;
                    (h, Some(token))
                } else {
                    (stored, None)
                }
            }
        };
        // The first start's admin token is the API token named `admin` (once: after a
        // rotation or revocation of `admin`, its row is the truth).
        store
            .api_token_ensure(&store::ApiTokenRow {
                name: "admin".into(),
                role: auth::Role::Admin.as_str().into(),
                hash: admin_hash,
                created: config.clock.now(),
                rotated: None,
                revoked: None,
            })
            .await?;
        let controller = Arc::new(controller::Health::default());
        let prometheus = config.prometheus_url.as_deref().map(|u| {
            promql::Prometheus::new(u, Duration::from_millis(config.prometheus_timeout_ms))
        });
        let notifier: Arc<dyn notify::Notify> = match &config.notifier {
            Some(n) => n.clone(),
            None => {
                let mut notifications = config.notifications.clone();
                notifications.chat_actions = config.chat.enabled();
                Arc::new(
                    notify::Notifier::start(
                        &notifications,
                        &notify::default_public_url(config.listen, config.tls.is_some()),
                        store.clone(),
                        controller.clone(),
                    )
                    .await?,
                )
            }
        };
        let clock = config.clock.clone();
        let blob_backend: Arc<dyn blobs::BlobBackend> = match config.blob_registry.clone() {
            Some(c) => Arc::new(registry::Registry::new(c)),
            None => Arc::new(blobs::LocalDisk),
        };
        let state = AppState {
            store,
            blobs,
            signing_key,
            config: Arc::new(config),
            prometheus,
            notifier,
            clock,
            replica_id: replica_id(),
            controller,
            checkins: Arc::default(),
            blob_backend,
        };
        Ok(Self {
            state,
            new_admin_token,
        })
    }

    /// The axum router with all routes, limits and request logging.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Serves on `listener` until `handle.graceful_shutdown` is called, with the controller
    /// running; on the way out the controller stops and its lease is given up.
    pub async fn serve(
        self,
        listener: std::net::TcpListener,
        handle: axum_server::Handle<SocketAddr>,
    ) -> Result<(), ServerError> {
        let state = self.state.clone();
        let stop_controller = AbortOnDrop(controller::spawn(state.clone()));
        let served = self.serve_http(listener, handle).await;
        // Stopping: no more passes here, and the lease goes to another replica at once.
        drop(stop_controller);
        if let Err(e) = state
            .store
            .release_lease(controller::LEASE, &state.replica_id)
            .await
        {
            tracing::warn!(error = %e, "could not give up the controller lease; it expires by itself");
        }
        served
    }

    async fn serve_http(
        self,
        listener: std::net::TcpListener,
        handle: axum_server::Handle<SocketAddr>,
    ) -> Result<(), ServerError> {
        // The peer address is what the audit log records as "from where".
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let addr = listener
            .local_addr()
            .map_err(|e| ServerError::io("listener", e))?;
        match &self.state.config.tls {
            Some((cert, key)) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|e| ServerError::Tls(format!("{}: {e}", cert.display())))?;
                tracing::info!(%addr, "serving HTTPS");
                axum_server::from_tcp_rustls(listener, tls)
                    .map_err(|e| ServerError::io("listener", e))?
                    .handle(handle)
                    .serve(app)
                    .await
                    .map_err(|e| ServerError::io("server", e))
            }
            None => {
                tracing::info!(%addr, "serving HTTP");
                axum_server::from_tcp(listener)
                    .map_err(|e| ServerError::io("listener", e))?
                    .handle(handle)
                    .serve(app)
                    .await
                    .map_err(|e| ServerError::io("server", e))
            }
        }
    }
}

/// Stops the rollout controller when serving ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// This process among replicas: host name, process id and a random suffix.
fn replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "server".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &util::random_id()[4..10]
    )
}

fn load_or_create_key(dir: &Path) -> Result<SigningKey, ServerError> {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).map_err(|e| ServerError::io(&keys, e))?;
    let prefix = keys.join("assignment");
    let priv_path = keys.join("assignment.key");
    if priv_path.exists() {
        SigningKey::load(&priv_path, None).map_err(|e| ServerError::Key(e.to_string()))
    } else {
        let key =
            edgecd_sign::write_key_pair(&prefix).map_err(|e| ServerError::Key(e.to_string()))?;
        tracing::info!(path = %priv_path.display(), "created the assignment-signing key");
        Ok(key)
    }
}

/// Sets up structured JSON logs on stderr (`RUST_LOG` filters, default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the server until SIGTERM or Ctrl-C (graceful shutdown: in-flight requests finish,
/// up to 10 s). Prints a newly created admin token once on stdout.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let listen = config.listen;
    let server = Server::open(config).await?;
    if let Some(token) = &server.new_admin_token {
        println!(
            "admin token (shown once; also in {}): {token}",
            server.state.config.data_dir.join("admin-token").display()
        );
    }
    let listener =
        std::net::TcpListener::bind(listen).map_err(|e| ServerError::io(listen.to_string(), e))?;
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        h.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    server.serve(listener, handle).await
}

/// [`run`] on a new multi-threaded tokio runtime (for the `edgecd server` command).
pub fn run_blocking(config: Config) -> Result<(), ServerError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServerError::io("tokio runtime", e))?
        .block_on(run(config))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
