//! `edgecd-infer`: parse flags, set up JSON logs and the tokio runtime, call the library.

use anyhow::Context as _;
use clap::Parser;
use edgecd_infer::{GovernorConfig, ServeConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Serve the active model of an installed edgecd bundle over HTTP.
#[derive(Debug, Parser)]
#[command(name = "edgecd-infer", version)]
struct Args {
    /// Installed bundle directory (e.g. the agent's `current` symlink).
    #[arg(
        long,
        env = "EDGECD_INFER_MODEL_DIR",
        required_unless_present = "bench_model"
    )]
    model_dir: Option<PathBuf>,
    /// Model of the profile to serve (filepath, file name or stem); default the first ONNX/TFLite one.
    #[arg(long)]
    model: Option<String>,
    #[arg(long, default_value = "127.0.0.1:9500")]
    listen: SocketAddr,
    /// Threads per inference (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Inference requests running at once.
    #[arg(long, default_value_t = 2)]
    max_concurrency: usize,
    /// SoC temperature file (millidegrees Celsius).
    #[arg(long, default_value = edgecd_infer::thermal::DEFAULT_THERMAL_PATH)]
    thermal_path: PathBuf,
    /// Seconds between temperature readings.
    #[arg(long, default_value_t = 2.0)]
    thermal_interval: f64,
    /// Above this temperature (°C) run fewer threads.
    #[arg(long, default_value_t = 75.0)]
    soft_limit: f64,
    /// Above this temperature (°C) refuse inference requests (429).
    #[arg(long, default_value_t = 85.0)]
    hard_limit: f64,
    /// Degrees below a limit before the governor steps back.
    #[arg(long, default_value_t = 5.0)]
    hysteresis: f64,
    /// Threads when throttled (default: half).
    #[arg(long)]
    throttled_threads: Option<usize>,
    /// Classifier output whose top-1 probability feeds the confidence histogram.
    #[arg(long)]
    confidence_output: Option<String>,
    /// Memory for compiled plans of a model with symbolic input dimensions (one per input
    /// shape seen), e.g. 256M or 1G: past it the least recently used plans are dropped.
    #[arg(long, env = "EDGECD_INFER_PLAN_CACHE_BYTES", default_value = "256M", value_parser = edgecd_infer::plan_cache::parse_bytes)]
    plan_cache_bytes: u64,
    /// Benchmark this model file in process instead of serving; prints JSON stats.
    #[arg(long, hide = true)]
    bench_model: Option<PathBuf>,
    /// .npy input for --bench-model (single-input models; default zeros).
    #[arg(long, hide = true)]
    bench_input: Option<PathBuf>,
    #[arg(long, hide = true, default_value_t = 100)]
    bench_iterations: usize,
    #[arg(long, hide = true, default_value_t = 10)]
    bench_warmup: usize,
    /// With --bench-model: print where the time goes, per operator kind and per node.
    #[arg(long, hide = true)]
    bench_profile: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "edgecd-infer failed");
            eprintln!("edgecd-infer: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    if let Some(model) = &args.bench_model {
        let inputs = match &args.bench_input {
            Some(p) => {
                let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                Some(vec![
                    edgecd_infer::npy::read_npy(&bytes)
                        .map_err(anyhow::Error::msg)
                        .with_context(|| format!("parsing {}", p.display()))?,
                ])
            }
            None => None,
        };
        if args.bench_profile {
            let p = edgecd_infer::bench::profile(
                model,
                inputs,
                threads,
                args.bench_warmup,
                args.bench_iterations,
            )
            .with_context(|| format!("profiling {}", model.display()))?;
            println!("{}", serde_json::to_string(&p)?);
            return Ok(());
        }
        let stats = edgecd_infer::bench::bench(
            model,
            inputs,
            threads,
            args.bench_warmup,
            args.bench_iterations,
        )
        .with_context(|| format!("benchmarking {}", model.display()))?;
        println!("{}", serde_json::to_string(&stats)?);
        return Ok(());
    }
    let model_dir = args.model_dir.clone().context("--model-dir is required")?;
    let mut cfg = ServeConfig::new(&model_dir, threads);
    cfg.model = args.model;
    cfg.listen = args.listen;
    cfg.max_concurrency = args.max_concurrency;
    cfg.thermal_path = args.thermal_path;
    cfg.thermal_interval = Duration::from_secs_f64(args.thermal_interval.max(0.01));
    cfg.confidence_output = args.confidence_output;
    cfg.backend = std::sync::Arc::new(edgecd_infer::TractBackend::new(args.plan_cache_bytes));
    cfg.governor = GovernorConfig {
        soft_limit_c: args.soft_limit,
        hard_limit_c: args.hard_limit,
        hysteresis_c: args.hysteresis,
        max_threads: threads,
        throttled_threads: args.throttled_threads.unwrap_or((threads / 2).max(1)),
    };
    anyhow::ensure!(
        args.soft_limit < args.hard_limit,
        "--soft-limit must be below --hard-limit"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime
        .block_on(edgecd_infer::serve(cfg))
        .with_context(|| format!("edgecd-infer failed serving {}", model_dir.display()))
}
