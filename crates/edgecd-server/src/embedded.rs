//! [`EmbeddedServer`]: a whole server in-process, on a tokio runtime of its own, for what runs
//! a control plane inside another program — `edgecd demo`, the simulator's scenarios and the
//! tests of this crate, the agent and the CLI.

use crate::{Config, Server, ServerError};
use std::net::SocketAddr;
use std::time::Duration;

/// An in-process server on its own runtime, bound to `config.listen` (port 0: a free one).
pub struct EmbeddedServer {
    pub addr: SocketAddr,
    pub admin_token: String,
    pub state: crate::AppState,
    rt: Option<tokio::runtime::Runtime>,
    handle: axum_server::Handle<SocketAddr>,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl EmbeddedServer {
    /// Opens `config.data_dir` and serves (HTTPS when `config.tls` is set); `config.listen`
    /// becomes the bound address (so a port 0 is replaced by the real one).
    pub fn start(mut config: Config) -> Result<Self, ServerError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ServerError::io("runtime", e))?;
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|e| ServerError::io("bind", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServerError::io("bind", e))?;
        config.listen = addr;
        let server = rt.block_on(Server::open(config))?;
        let admin_token = match &server.new_admin_token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(server.state.config.data_dir.join("admin-token"))
                .map_err(|e| ServerError::io("admin-token", e))?
                .trim()
                .to_string(),
        };
        let state = server.state.clone();
        let handle = axum_server::Handle::new();
        let h = handle.clone();
        let serving = rt.spawn(async move {
            if let Err(e) = server.serve(listener, h).await {
                tracing::error!(error = %e, "embedded server stopped");
            }
        });
        Ok(Self {
            addr,
            admin_token,
            state,
            rt: Some(rt),
            handle,
            serving: Some(serving),
        })
    }

    /// Runs a future on the server's runtime (e.g. store queries from a test).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt
            .as_ref()
            .map(|rt| rt.block_on(f))
            .unwrap_or_else(|| unreachable_runtime())
    }

    /// Stops serving (the port is closed; the data dir stays).
    pub fn stop(&mut self) {
        self.handle.shutdown();
        // Let `serve` finish its way out (the controller lease is given up).
        if let (Some(rt), Some(serving)) = (&self.rt, self.serving.take()) {
            let _ =
                rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), serving).await });
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn unreachable_runtime() -> ! {
    panic!("EmbeddedServer used after stop()")
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        self.stop();
    }
}
