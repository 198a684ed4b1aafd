//! The HTTP API (axum): `POST /v1/infer`, `GET /healthz`, `GET /readyz`, `POST /v1/selftest`,
//! `POST /v1/reload`, `GET /metrics`; and starting/stopping the server with its thermal loop.
//! The model is reached only through `crate::backend` (`ServeConfig::backend`), so every
//! runtime gets the same API, metrics, governor and self-test; the contract is written down in
//! `docs/runtime-contract.md`.
//!
//! `POST /v1/infer` takes JSON tensors, a `.npy` body (`application/x-npy`) or a raw tensor
//! (`application/octet-stream` with `X-Tensor-Shape`/`X-Tensor-Dtype`, `crate::raw`), and
//! answers JSON, `.npy` or raw bytes after `Accept`.
//!
//! The active model is an `Arc<Engine>` behind a lock held only to clone or replace the `Arc`:
//! a reload builds the new engine off to the side and swaps it in, while requests already running
//! finish on the engine they started with.
//!
//! Ready means the loaded model passed a real inference (`selftest::check_readiness`: its
//! self-test vectors, or a generated input), checked at start and on every reload before the
//! new engine is swapped in. A model that fails it is never ready: at start the server still
//! listens (`/healthz`, `/metrics`, the reason in `/readyz`); a reload that fails to load or
//! to pass it keeps the previous engine serving but leaves `/readyz` at 503 until a reload
//! succeeds, so an agent health-checking the new release never commits it.

use crate::backend::{Backend, BackendModel, TractBackend};
use crate::error::InferError;
use crate::governor::{Governor, GovernorConfig};
use crate::metrics::{self, ErrorKind, Metrics};
use crate::model::{Engine, tensor_to_data};
use crate::selftest::{Readiness, check_readiness, run_selftest};
use crate::thermal::{self, GovernorOutput};
use crate::{npy, raw};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use edgecd_api::profile::TensorData;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tract_onnx::prelude::Tensor;

/// Everything `serve`/`start` need.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The installed bundle (usually the agent's `current` symlink; re-resolved on reload).
    pub model_dir: PathBuf,
    /// Which model of the profile to serve (filepath, file name or stem); default the first
    /// ONNX/TFLite one.
    pub model: Option<String>,
    pub listen: SocketAddr,
    /// Threads per inference at full speed.
    pub threads: usize,
    /// Inference requests running at once (more wait).
    pub max_concurrency: usize,
    pub thermal_path: PathBuf,
    pub thermal_interval: Duration,
    pub governor: GovernorConfig,
    /// The classifier output whose top-1 probability feeds the confidence histogram; default:
    /// the first output shaped like class scores ([N, C] or [N, C, 1, 1]).
    pub confidence_output: Option<String>,
    /// `Retry-After` seconds on a 429.
    pub retry_after_secs: u64,
    pub max_body_bytes: usize,
    /// The runtime that loads and runs the model (default: tract, with a plan cache of
    /// `plan_cache::DEFAULT_BUDGET_BYTES`).
    pub backend: Arc<dyn Backend>,
}

impl ServeConfig {
    /// Defaults for serving `model_dir` on 127.0.0.1:9500 with `threads` threads.
    pub fn new(model_dir: impl Into<PathBuf>, threads: usize) -> Self {
        let threads = threads.max(1);
        ServeConfig {
            model_dir: model_dir.into(),
            model: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 9500)),
            threads,
            max_concurrency: 2,
            thermal_path: PathBuf::from(thermal::DEFAULT_THERMAL_PATH),
            thermal_interval: Duration::from_secs(2),
            governor: GovernorConfig::for_threads(threads),
            confidence_output: None,
            retry_after_secs: 10,
            max_body_bytes: 256 << 20,
            backend: Arc::new(TractBackend::default()),
        }
    }
}

struct AppState {
    cfg: ServeConfig,
    engine: RwLock<Arc<Engine>>,
    /// The outcome of the last load: the readiness check of the engine serving, or why the
    /// last reload was refused.
    readiness: RwLock<Readiness>,
    metrics: Arc<Metrics>,
    governor: Arc<GovernorOutput>,
    permits: tokio::sync::Semaphore,
    reload_lock: tokio::sync::Mutex<()>,
}

impl AppState {
    fn engine(&self) -> Arc<Engine> {
        self.engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn readiness(&self) -> Readiness {
        self.readiness
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_readiness(&self, r: Readiness) {
        *self.readiness.write().unwrap_or_else(|e| e.into_inner()) = r;
    }
}

/// A running server (tests and `serve`).
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    thermal: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, and returns.
    pub async fn shutdown(mut self) -> Result<(), InferError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.thermal.abort();
        match (&mut self.task).await {
            Ok(r) => r.map_err(|e| InferError::io("HTTP server", e)),
            Err(e) => Err(InferError::io("HTTP server", std::io::Error::other(e))),
        }
    }
}

/// Loads the model and checks it answers (see [`check_readiness`]) off the async workers.
async fn load_checked(cfg: &ServeConfig) -> Result<(Engine, Readiness), InferError> {
    let (dir, want, threads) = (cfg.model_dir.clone(), cfg.model.clone(), cfg.threads);
    let backend = cfg.backend.clone();
    tokio::task::spawn_blocking(move || {
        let engine = Engine::load_with(backend, &dir, want.as_deref())?;
        let readiness = check_readiness(&engine, threads);
        Ok((engine, readiness))
    })
    .await
    .map_err(|e| InferError::Load {
        model: "?".into(),
        message: format!("load task failed: {e}"),
    })?
}

/// Loads the model, checks that it answers, binds, and serves in the background. A model that
/// loads but fails its readiness check is served with `/readyz` at 503 and the reason.
pub async fn start(cfg: ServeConfig) -> Result<RunningServer, InferError> {
    let (engine, readiness) = load_checked(&cfg).await?;
    tracing::info!(release = %engine.release, model = engine.model.name(), runtime = engine.backend.runtime(), dir = %engine.dir.display(), load_seconds = engine.load_seconds, threads = cfg.threads, "model loaded");
    match &readiness.error {
        None => {
            tracing::info!(release = %engine.release, check = readiness.check, "model passed its readiness check")
        }
        Some(e) => {
            tracing::error!(release = %engine.release, check = readiness.check, error = %e, "model failed its readiness check: not ready")
        }
    }
    let metrics = Arc::new(Metrics::new());
    metrics.set_model(
        &engine.release,
        engine.model.name(),
        engine.backend.runtime(),
        engine.load_seconds,
    );
    let mut gov = Governor::new(cfg.governor);
    let out = Arc::new(GovernorOutput {
        threads: cfg.threads.into(),
        shedding: false.into(),
    });
    thermal::apply_reading(
        &mut gov,
        thermal::read_temperature(&cfg.thermal_path),
        &out,
        &metrics,
    );
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| InferError::io(format!("listen address {}", cfg.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| InferError::io("listen address", e))?;
    let thermal = tokio::spawn(thermal::run_thermal_loop(
        gov,
        cfg.thermal_path.clone(),
        cfg.thermal_interval,
        out.clone(),
        metrics.clone(),
    ));
    let state = Arc::new(AppState {
        permits: tokio::sync::Semaphore::new(cfg.max_concurrency.max(1)),
        engine: RwLock::new(Arc::new(engine)),
        readiness: RwLock::new(readiness),
        metrics,
        governor: out,
        reload_lock: tokio::sync::Mutex::new(()),
        cfg,
    });
    let app = router(state);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%addr, "listening");
    Ok(RunningServer {
        addr,
        shutdown: Some(tx),
        task,
        thermal,
    })
}

/// Serves until SIGINT/SIGTERM, then shuts down gracefully.
pub async fn serve(cfg: ServeConfig) -> Result<(), InferError> {
    let server = start(cfg).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn router(state: Arc<AppState>) -> Router {
    let limit = state.cfg.max_body_bytes;
    Router::new()
        .route("/v1/infer", post(infer))
        .route("/v1/selftest", post(selftest))
        .route("/v1/reload", post(reload))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// `POST /v1/infer` JSON body.
#[derive(Debug, Serialize, Deserialize)]
pub struct InferRequest {
    pub inputs: Vec<TensorData>,
}

/// `POST /v1/infer` JSON answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct InferResponse {
    pub outputs: Vec<TensorData>,
    /// The release that answered (`name@version`).
    #[serde(default)]
    pub release: String,
}

#[derive(Debug, Deserialize)]
struct InferQuery {
    /// With `Accept: application/x-npy`: which output to return (default the first).
    output: Option<String>,
}

fn error_response(status: StatusCode, kind: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        axum::Json(json!({"error": message.to_string(), "kind": kind})),
    )
        .into_response()
}

fn infer_error(state: &AppState, e: InferError) -> Response {
    if e.is_client_error() {
        state.metrics.error(ErrorKind::MalformedInput);
        error_response(
            StatusCode::BAD_REQUEST,
            ErrorKind::MalformedInput.as_str(),
            e,
        )
    } else {
        state.metrics.error(ErrorKind::ModelFailure);
        tracing::error!(error = %e, "inference failed");
        error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::ModelFailure.as_str(),
            e,
        )
    }
}

async fn infer(
    State(s): State<Arc<AppState>>,
    Query(q): Query<InferQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    s.metrics.requests.fetch_add(1, Ordering::Relaxed);
    if s.governor.shedding.load(Ordering::Relaxed) {
        s.metrics.error(ErrorKind::Overloaded);
        let mut r = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Overloaded.as_str(),
            "shedding load: the SoC is above its hard temperature limit",
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(s.cfg.retry_after_secs),
        );
        return r;
    }
    let engine = s.engine();
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let header_has =
        |name: header::HeaderName, what: &str| header(name).is_some_and(|v| v.contains(what));
    let body_kind = if header_has(header::CONTENT_TYPE, "application/x-npy") {
        Body::Npy
    } else if header_has(header::CONTENT_TYPE, raw::CONTENT_TYPE) {
        Body::Raw {
            shape: header(header::HeaderName::from_static(raw::SHAPE_HEADER)).map(str::to_string),
            dtype: header(header::HeaderName::from_static(raw::DTYPE_HEADER)).map(str::to_string),
        }
    } else {
        Body::Json
    };
    let answer = if header_has(header::ACCEPT, "application/x-npy") {
        Answer::Npy
    } else if header_has(header::ACCEPT, raw::CONTENT_TYPE) {
        Answer::Raw
    } else {
        Answer::Json
    };
    let names = engine.model.output_names();
    let output_ix = match &q.output {
        Some(n) => match names.iter().position(|x| x == n) {
            Some(i) => i,
            None => {
                let e = format!("no output {n:?} (outputs: {names:?})");
                return infer_error(&s, InferError::InvalidInput(e));
            }
        },
        None => 0,
    };
    // Decoding, running and encoding are CPU work: keep them off the async workers.
    let parse_engine = engine.clone();
    let inputs = tokio::task::spawn_blocking(move || {
        parse_inputs(parse_engine.model.as_ref(), body_kind, &body)
    })
    .await;
    let inputs = match inputs {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => return infer_error(&s, e),
        Err(e) => return infer_error(&s, InferError::Execution(format!("decoding task: {e}"))),
    };
    let Ok(_permit) = s.permits.acquire().await else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "server is shutting down",
        );
    };
    let threads = s.governor.threads.load(Ordering::Relaxed);
    let state = s.clone();
    let ran = tokio::task::spawn_blocking(move || {
        let outputs = engine.model.run(inputs, threads)?;
        record_confidence(&state, &engine, &outputs);
        let one = |ix: usize| {
            outputs
                .get(ix)
                .ok_or_else(|| InferError::Execution("model produced no output".into()))
        };
        match answer {
            Answer::Npy => {
                let bytes = npy::write_npy(one(output_ix)?).map_err(InferError::Execution)?;
                Ok((
                    vec![(header::CONTENT_TYPE, "application/x-npy".to_string())],
                    bytes,
                ))
            }
            Answer::Raw => {
                let (bytes, shape, dtype) =
                    raw::write_raw(one(output_ix)?).map_err(InferError::Execution)?;
                let name = engine.model.output_names()[output_ix].clone();
                let headers = vec![
                    (header::CONTENT_TYPE, raw::CONTENT_TYPE.to_string()),
                    (header::HeaderName::from_static(raw::SHAPE_HEADER), shape),
                    (
                        header::HeaderName::from_static(raw::DTYPE_HEADER),
                        dtype.to_string(),
                    ),
                    (header::HeaderName::from_static(raw::NAME_HEADER), name),
                ];
                Ok((headers, bytes))
            }
            Answer::Json => {
                let outputs = engine.model.tensors_to_data(&outputs)?;
                let body = InferResponse {
                    outputs,
                    release: engine.release.clone(),
                };
                let bytes =
                    serde_json::to_vec(&body).map_err(|e| InferError::Execution(e.to_string()))?;
                Ok((
                    vec![(header::CONTENT_TYPE, "application/json".to_string())],
                    bytes,
                ))
            }
        }
    })
    .await;
    match ran {
        Ok(Ok((answer_headers, bytes))) => {
            s.metrics.latency.observe(started.elapsed().as_secs_f64());
            let mut r = bytes.into_response();
            for (name, value) in answer_headers {
                match HeaderValue::from_str(&value) {
                    Ok(v) => {
                        r.headers_mut().insert(name, v);
                    }
                    Err(e) => {
                        return infer_error(
                            &s,
                            InferError::Execution(format!("answer header {name}: {e}")),
                        );
                    }
                }
            }
            r
        }
        Ok(Err(e)) => infer_error(&s, e),
        Err(e) => infer_error(&s, InferError::Execution(format!("inference task: {e}"))),
    }
}

/// How a request body is encoded (`Content-Type`).
enum Body {
    Json,
    Npy,
    /// `application/octet-stream` with the `X-Tensor-Shape` / `X-Tensor-Dtype` headers.
    Raw {
        shape: Option<String>,
        dtype: Option<String>,
    },
}

/// How the answer is encoded (`Accept`).
#[derive(Clone, Copy)]
enum Answer {
    Json,
    Npy,
    Raw,
}

/// Decodes a request body (JSON tensors, or .npy / raw bytes for a single-input model) into
/// model inputs.
fn parse_inputs(
    model: &dyn BackendModel,
    kind: Body,
    body: &[u8],
) -> Result<Vec<Tensor>, InferError> {
    let single = |what: &str| {
        if model.inputs().len() == 1 {
            Ok(())
        } else {
            Err(InferError::InvalidInput(format!(
                "{what} body carries one tensor, for a single-input model; this one takes {} \
                 ({}): send JSON tensors",
                model.inputs().len(),
                model
                    .inputs()
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let inputs = match kind {
        Body::Npy => {
            let t = npy::read_npy(body).map_err(InferError::InvalidInput)?;
            single("a .npy")?;
            vec![t]
        }
        Body::Raw { shape, dtype } => {
            single("an application/octet-stream")?;
            let t = raw::read_raw(
                body,
                shape.as_deref(),
                dtype.as_deref(),
                model.inputs()[0].dtype,
            )
            .map_err(InferError::InvalidInput)?;
            vec![t]
        }
        Body::Json => {
            let r: InferRequest = serde_json::from_slice(body).map_err(|e| {
                InferError::InvalidInput(format!("request body is not an inference request: {e}"))
            })?;
            model.tensors_from_data(&r.inputs)?
        }
    };
    model.check_inputs(&inputs)?;
    Ok(inputs)
}

/// Adds the top-1 probability of each row of the classifier output to the confidence histogram.
fn record_confidence(s: &AppState, engine: &Engine, outputs: &[Tensor]) {
    let names = engine.model.output_names();
    let ix = match &s.cfg.confidence_output {
        Some(n) => names.iter().position(|x| x == n),
        None => outputs.iter().position(|t| {
            let sh = t.shape();
            t.datum_type().is_float()
                && sh.len() >= 2
                && sh[1] > 1
                && sh[2..].iter().all(|d| *d == 1)
        }),
    };
    let Some(t) = ix.and_then(|i| outputs.get(i)) else {
        return;
    };
    let Ok(d) = tensor_to_data("", t) else { return };
    let classes: usize = d.shape.iter().skip(1).product();
    if classes < 2 {
        return;
    }
    for row in d.data.chunks(classes) {
        if let Some(p) = metrics::top1_probability(row) {
            s.metrics.confidence.observe(p);
        }
    }
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let engine = s.engine();
    let shedding = s.governor.shedding.load(Ordering::Relaxed);
    let checked = s.readiness();
    let ready = checked.ready && !shedding;
    let mut body = json!({"ready": ready, "release": engine.release, "model": engine.model.name(), "shedding": shedding, "check": checked.check});
    if let Some(e) = &checked.error {
        body["error"] = json!(e);
    }
    let status = if !ready {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_handler(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        s.metrics.render(s.engine().model.plan_cache()),
    )
        .into_response()
}

async fn selftest(State(s): State<Arc<AppState>>) -> Response {
    let engine = s.engine();
    let Some(st) = engine.profile.selftest.clone() else {
        return axum::Json(json!({"release": engine.release, "passed": true, "cases": [], "note": "the profile has no self-test vectors"})).into_response();
    };
    let _permit = s.permits.acquire().await;
    let threads = s.governor.threads.load(Ordering::Relaxed);
    let report =
        match tokio::task::spawn_blocking(move || run_selftest(&engine, &st, threads)).await {
            Ok(r) => r,
            Err(e) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, "model_failure", e),
        };
    tracing::info!(release = %report.release, passed = report.passed, cases = report.cases.len(), "self-test ran");
    let status = if report.passed {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, axum::Json(report)).into_response()
}

async fn reload(State(s): State<Arc<AppState>>) -> Response {
    let _guard = s.reload_lock.lock().await;
    let loaded = load_checked(&s.cfg).await;
    let previous = s.engine();
    match loaded {
        Ok((engine, readiness)) if !readiness.ready => {
            let why = format!(
                "release {} loaded but is not ready: {}",
                engine.release,
                readiness
                    .error
                    .as_deref()
                    .unwrap_or("readiness check failed")
            );
            reload_failed(&s, &previous, why)
        }
        Ok((engine, readiness)) => {
            let engine = Arc::new(engine);
            s.metrics.set_model(
                &engine.release,
                engine.model.name(),
                engine.backend.runtime(),
                engine.load_seconds,
            );
            s.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
            *s.engine.write().unwrap_or_else(|e| e.into_inner()) = engine.clone();
            s.set_readiness(readiness);
            tracing::info!(from = %previous.release, to = %engine.release, model = engine.model.name(), dir = %engine.dir.display(), load_seconds = engine.load_seconds, "model reloaded");
            axum::Json(json!({"release": engine.release, "model": engine.model.name(), "previous": previous.release, "loadSeconds": engine.load_seconds})).into_response()
        }
        Err(e) => reload_failed(&s, &previous, e.to_string()),
    }
}

/// A refused reload: the previous engine keeps serving, but the server is not ready (what is
/// installed is not what answers) until a reload succeeds.
fn reload_failed(s: &AppState, previous: &Engine, why: String) -> Response {
    s.metrics.reloads_failed.fetch_add(1, Ordering::Relaxed);
    tracing::error!(error = %why, still_serving = %previous.release, "reload failed; keeping the old model, not ready");
    s.set_readiness(Readiness {
        ready: false,
        check: "reload",
        error: Some(format!(
            "the last reload failed ({why}); still serving {}",
            previous.release
        )),
    });
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({"error": why, "kind": "reload_failed", "release": previous.release})),
    )
        .into_response()
}
