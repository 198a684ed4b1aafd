//! `edgecd bundle build|inspect|sign|verify`.
use crate::output::{byte_progress, print_json};
use anyhow::Context;
use edgecd_api::profile::{HardwareProfile, RuntimePin};
use edgecd_bundle::provenance::Provenance;
use edgecd_bundle::{BuildSpec, BundleMeta, BundleSummary};
use edgecd_sign::SigstoreBundle;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    /// Package model files into a reproducible NAME-VERSION.edgecd bundle and its SBOM.
    Build(Box<BuildArgs>),
    /// Show what a bundle holds (structure and digests are checked; signatures are not).
    Inspect(InspectArgs),
    /// Sign a bundle's manifest: writes FILE.sigstore.json (Sigstore bundle v0.3).
    Sign(SignArgs),
    /// Verify a bundle's signature, every blob digest and size, and its structure.
    Verify(VerifyArgs),
    /// Run an installed bundle's self-test vectors (e.g. the agent's `current`) with the
    /// reference runtime; exits non-zero when a case fails. Fits `edgecd-agent --health-cmd`.
    Selftest(SelftestArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// A model file (ONNX, TFLite, or an accelerator's compiled file); repeat for several.
    /// A DVC-tracked model (MODEL.dvc, or a dvc.lock stage that outputs it) records its DVC
    /// hashes, its stage's data dependencies and the git commit as provenance.
    #[arg(
        long = "model",
        value_name = "PATH",
        required_unless_present = "from_mlflow"
    )]
    pub models: Vec<PathBuf>,
    /// Pull the model from an MLflow tracking server instead: models:/NAME/VERSION,
    /// models:/NAME@ALIAS or runs:/RUN_ID/PATH. The run id, params, metrics and datasets
    /// are recorded as provenance.
    #[arg(long, value_name = "URI", conflicts_with = "models")]
    pub from_mlflow: Option<String>,
    /// The MLflow tracking server for --from-mlflow (credentials: MLFLOW_TRACKING_TOKEN or
    /// MLFLOW_TRACKING_USERNAME/PASSWORD).
    #[arg(long, env = "MLFLOW_TRACKING_URI", value_name = "URL")]
    pub mlflow_uri: Option<String>,
    #[arg(long)]
    pub name: String,
    /// Semantic version, e.g. 1.4.0.
    #[arg(long)]
    pub version: String,
    /// Target board, e.g. rpi5.
    #[arg(long)]
    pub board: String,
    /// Accelerator the model needs, e.g. hailo-10h.
    #[arg(long)]
    pub accelerator: Option<String>,
    /// Runtime pin NAME@VERSION, e.g. edgecd-infer@0.1.0.
    #[arg(long)]
    pub runtime: String,
    #[arg(long, value_name = "N")]
    pub min_ram_mb: Option<u64>,
    /// Self-test vectors: a selftest.json file, a directory holding one, or `auto` to run
    /// each ONNX/TFLite model here on deterministic inputs and record its outputs.
    #[arg(long, value_name = "DIR|auto")]
    pub selftest: Option<PathBuf>,
    /// A label k=v recorded in the profile; repeat for several.
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    pub file: PathBuf,
    /// Private key (PKCS#8 PEM, or a cosign encrypted key with COSIGN_PASSWORD set).
    #[arg(long)]
    pub key: PathBuf,
    /// Where to write the signature (default FILE.sigstore.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    pub file: PathBuf,
    /// Public key (SPKI PEM) the bundle must be signed with.
    #[arg(long)]
    pub key: PathBuf,
    /// Signature file (default FILE.sigstore.json).
    #[arg(long)]
    pub signature: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SelftestArgs {
    /// An unpacked bundle directory (profile.json, models/), e.g. the agent's `current`.
    pub dir: PathBuf,
    /// Threads per inference (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(c: BundleCommand) -> anyhow::Result<ExitCode> {
    match c {
        BundleCommand::Build(a) => build(*a),
        BundleCommand::Inspect(a) => inspect(a),
        BundleCommand::Sign(a) => sign(a),
        BundleCommand::Verify(a) => verify(a),
        BundleCommand::Selftest(a) => selftest(a),
    }
}

/// Parses repeated `k=v` arguments.
pub fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("label {l:?} must look like key=value"))?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            anyhow::bail!("label {k:?} is given twice");
        }
    }
    Ok(out)
}

/// The model files to pack and their provenance: pulled from MLflow, or the local files
/// with their DVC provenance. The temporary directory holds pulled files until the build ends.
fn gather_models(
    a: &BuildArgs,
) -> anyhow::Result<(Vec<PathBuf>, Option<Provenance>, Option<tempfile::TempDir>)> {
    if let Some(uri) = &a.from_mlflow {
        let tracking = a.mlflow_uri.as_deref().filter(|u| !u.is_empty()).context(
            "--from-mlflow needs the tracking server: --mlflow-uri URL or MLFLOW_TRACKING_URI",
        )?;
        let tmp = tempfile::tempdir().context("creating a directory for the pulled model")?;
        let pulled = crate::provenance::mlflow::pull(tracking, uri, tmp.path())?;
        return Ok((pulled.models, Some(pulled.provenance), Some(tmp)));
    }
    let named: Vec<(PathBuf, String)> = a
        .models
        .iter()
        .map(|m| {
            let name = m
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (m.clone(), name)
        })
        .collect();
    let provenance = crate::provenance::dvc::provenance(&named)?;
    Ok((a.models.clone(), provenance, None))
}

/// Human lines describing a provenance (for `bundle build` and `bundle inspect`).
pub fn provenance_lines(p: &Provenance) -> Vec<String> {
    let mut out = vec![];
    if let Some(g) = &p.git {
        out.push(format!(
            "git commit   {}{}",
            g.commit,
            if g.dirty { " (dirty)" } else { "" }
        ));
    }
    if let Some(r) = &p.training_run {
        out.push(format!(
            "training run {} {}{}",
            r.system,
            r.id,
            r.model_uri
                .as_deref()
                .map_or(String::new(), |u| format!(" ({u})"))
        ));
        if !r.params.is_empty() {
            let ps: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push(format!("  params     {}", ps.join(", ")));
        }
        if !r.metrics.is_empty() {
            let ms: Vec<String> = r.metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push(format!("  metrics    {}", ms.join(", ")));
        }
    }
    for d in &p.datasets {
        out.push(format!("dataset      {} {} ({})", d.path, d.hash, d.origin));
    }
    out
}

pub fn build(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let runtime = RuntimePin::parse(&a.runtime).map_err(anyhow::Error::msg)?;
    let (models, provenance, _pulled) = gather_models(&a)?;
    let selftest = match a.selftest.as_deref() {
        Some(p) if p == std::path::Path::new("auto") => Some(record_selftests(&models)?),
        Some(p) => Some(edgecd_bundle::load_selftest(p)?),
        None => None,
    };
    let spec = BuildSpec {
        meta: BundleMeta {
            name: a.name,
            version: a.version,
            hardware: HardwareProfile {
                board: a.board,
                accelerator: a.accelerator,
                min_ram_mb: a.min_ram_mb,
            },
            runtime,
            selftest,
            labels: parse_labels(&a.labels)?,
            provenance: provenance.clone(),
        },
        models,
    };
    let pb = byte_progress(edgecd_bundle::build::total_model_bytes(&spec), "packing");
    let built = edgecd_bundle::build_bundle(&spec, &a.out, &mut |n| pb.inc(n))?;
    pb.finish_and_clear();
    if a.json {
        print_json(&json!({
            "bundle": built.path, "sbom": built.sbom_path, "digest": built.digest,
            "size": built.archive_size, "name": built.profile.name, "version": built.profile.version,
            "provenance": provenance,
        }))?;
    } else {
        crate::outln!(
            "built {} ({} bytes)",
            built.path.display(),
            built.archive_size
        );
        crate::outln!("digest {}", built.digest);
        crate::outln!("sbom   {}", built.sbom_path.display());
        for l in provenance.iter().flat_map(provenance_lines) {
            crate::outln!("{l}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs every ONNX/TFLite model on deterministic inputs with the reference runtime and records
/// the outputs as self-test vectors (2 cases per model).
fn record_selftests(models: &[PathBuf]) -> anyhow::Result<edgecd_api::profile::SelfTest> {
    let mut all = edgecd_api::profile::SelfTest {
        cases: vec![],
        tolerance: edgecd_api::profile::Tolerance { abs: 0.0, rel: 0.0 },
        latency_budget_ms: None,
    };
    for m in models {
        let ext = m
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if ext != "onnx" && ext != "tflite" {
            continue;
        }
        let st = edgecd_infer::record_selftest(m, 2, 7).with_context(|| {
            format!(
                "recording self-test vectors for {} (--selftest auto)",
                m.display()
            )
        })?;
        let file = m
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        for mut c in st.cases {
            c.name = format!("{file}#{}", c.name);
            c.model = file.clone();
            all.cases.push(c);
        }
        all.tolerance.abs = all.tolerance.abs.max(st.tolerance.abs);
        all.tolerance.rel = all.tolerance.rel.max(st.tolerance.rel);
        all.latency_budget_ms = match (all.latency_budget_ms, st.latency_budget_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    if all.cases.is_empty() {
        anyhow::bail!("--selftest auto found no ONNX or TFLite model to run");
    }
    Ok(all)
}

fn read_signature(path: &Path) -> anyhow::Result<SigstoreBundle> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading signature {}", path.display()))?;
    SigstoreBundle::from_json(&bytes)
        .with_context(|| format!("parsing signature {}", path.display()))
}

pub fn summary_json(s: &BundleSummary, signatures: &[String]) -> serde_json::Value {
    let p = &s.profile;
    json!({
        "name": p.name,
        "version": p.version,
        "digest": s.digest,
        "archive": {"size": s.archive_size, "digest": s.archive_digest},
        "format": s.config.config.format,
        "precision": s.config.config.precision,
        "quantization": s.config.config.quantization,
        "hardware": p.hardware,
        "runtime": p.runtime,
        "models": p.models.iter().map(|m| json!({
            "file": m.filepath, "size": m.size, "digest": m.digest,
            "format": m.info.format, "precision": m.info.precision,
            "quantization": edgecd_bundle::metadata::quantization_summary(&m.info),
            "quantizedTensors": m.info.quantization,
            "opset": m.info.opset, "producer": m.info.producer,
            "inputs": m.info.inputs, "outputs": m.info.outputs, "operators": m.info.operators,
        })).collect::<Vec<_>>(),
        "selftestCases": p.selftest.as_ref().map_or(0, |t| t.cases.len()),
        "labels": p.labels,
        "sbom": s.sbom_digest,
        "signatures": signatures,
        "provenance": Provenance::from_annotations(&s.manifest.annotations).ok().flatten(),
    })
}

fn tensors(ts: &[edgecd_api::model::TensorSignature]) -> String {
    ts.iter()
        .map(|t| {
            let dims: Vec<String> = t
                .shape
                .iter()
                .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                .collect();
            format!("{}:{}[{}]", t.name, t.dtype, dims.join(","))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn inspect(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let size = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    let pb = byte_progress(size, "reading");
    let s = edgecd_bundle::read_bundle(&a.file, &mut |n| pb.inc(n))
        .with_context(|| format!("reading bundle {}", a.file.display()))?;
    pb.finish_and_clear();
    let sig_path = edgecd_bundle::signature_path(&a.file);
    let signatures: Vec<String> = match read_signature(&sig_path) {
        Ok(sig) => vec![format!(
            "{} (key {}, not verified: use `edgecd bundle verify`)",
            sig_path.display(),
            sig.key_hint()
        )],
        Err(_) => vec![],
    };
    if a.json {
        print_json(&summary_json(&s, &signatures))?;
        return Ok(ExitCode::SUCCESS);
    }
    let p = &s.profile;
    crate::outln!("{} {}", p.name, p.version);
    crate::outln!("  digest       {}", s.digest);
    crate::outln!(
        "  archive      {} bytes, {}",
        s.archive_size,
        s.archive_digest
    );
    crate::outln!(
        "  format       {} / precision {}",
        s.config.config.format,
        s.config.config.precision
    );
    crate::outln!(
        "  hardware     board {}, accelerator {}, min RAM {}",
        p.hardware.board,
        p.hardware.accelerator.as_deref().unwrap_or("none"),
        p.hardware
            .min_ram_mb
            .map_or("-".into(), |m| format!("{m} MB"))
    );
    crate::outln!("  runtime      {}", p.runtime);
    for m in &p.models {
        crate::outln!(
            "  model        {} ({} bytes) {}",
            m.filepath,
            m.size,
            m.digest
        );
        crate::outln!(
            "    format     {:?}, precision {:?}, opset {}",
            m.info.format,
            m.info.precision,
            m.info.opset.map_or("-".into(), |o| o.to_string())
        );
        crate::outln!(
            "    quantized  {}",
            edgecd_bundle::metadata::quantization_summary(&m.info)
        );
        if !m.info.inputs.is_empty() {
            crate::outln!("    inputs     {}", tensors(&m.info.inputs));
            crate::outln!("    outputs    {}", tensors(&m.info.outputs));
        }
    }
    crate::outln!(
        "  self-test    {} cases",
        p.selftest.as_ref().map_or(0, |t| t.cases.len())
    );
    for (k, v) in &p.labels {
        crate::outln!("  label        {k}={v}");
    }
    crate::outln!(
        "  sbom         {}",
        s.sbom_digest.as_deref().unwrap_or("none")
    );
    match Provenance::from_annotations(&s.manifest.annotations) {
        Ok(Some(p)) => {
            for l in provenance_lines(&p) {
                crate::outln!("  {l}");
            }
        }
        Ok(None) => {}
        Err(e) => crate::outln!("  provenance   unreadable: {e}"),
    }
    if signatures.is_empty() {
        crate::outln!("  signatures   none found at {}", sig_path.display());
    }
    for sig in signatures {
        crate::outln!("  signature    {sig}");
    }
    Ok(ExitCode::SUCCESS)
}

fn sign(a: SignArgs) -> anyhow::Result<ExitCode> {
    let key = super::keys::load_signing_key(&a.key)?;
    let size = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    let pb = byte_progress(size, "checking");
    // Never sign something broken: read and check the whole bundle first.
    let s = edgecd_bundle::read_bundle(&a.file, &mut |n| pb.inc(n))
        .with_context(|| format!("checking bundle {} before signing", a.file.display()))?;
    pb.finish_and_clear();
    let sig = edgecd_sign::sign_artifact(&key, &s.manifest_bytes);
    let out = a
        .out
        .unwrap_or_else(|| edgecd_bundle::signature_path(&a.file));
    edgecd_bundle::write_atomic(&out, sig.to_json_pretty().as_bytes())?;
    let hint = key.verifying_key().hint();
    if a.json {
        print_json(&json!({
            "bundle": a.file,
            "digest": s.digest,
            "keyId": hint,
            "signature": out,
        }))?;
    } else {
        crate::outln!("signed {} ({}) with key {hint}", a.file.display(), s.digest);
        crate::outln!("wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let key = super::keys::load_public_key(&a.key)?;
    let sig_path = a
        .signature
        .unwrap_or_else(|| edgecd_bundle::signature_path(&a.file));
    let sig = read_signature(&sig_path)?;
    let size = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    let pb = byte_progress(size, "verifying");
    let s = edgecd_bundle::verify_bundle(&a.file, &key, &sig, &mut |n| pb.inc(n)).with_context(
        || {
            format!(
                "verifying {} with key {} ({})",
                a.file.display(),
                a.key.display(),
                key.hint()
            )
        },
    )?;
    pb.finish_and_clear();
    if a.json {
        print_json(&summary_json(&s, &[sig_path.display().to_string()]))?;
    } else {
        crate::outln!("OK {} {}@{}", s.digest, s.profile.name, s.profile.version);
        crate::outln!(
            "  signature by key {} verified; {} blobs match their digests and sizes",
            key.hint(),
            s.manifest.layers.len() + 1
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `edgecd bundle selftest DIR`: the bundle's own vectors through edgecd-infer's engine.
fn selftest(a: SelftestArgs) -> anyhow::Result<ExitCode> {
    let engine = edgecd_infer::Engine::load(&a.dir, None)
        .with_context(|| format!("loading the installed bundle in {}", a.dir.display()))?;
    let Some(st) = engine
        .profile
        .selftest
        .clone()
        .filter(|st| !st.cases.is_empty())
    else {
        anyhow::bail!(
            "{} ({}) has no self-test vectors: build it with `edgecd bundle build --selftest auto` or --selftest selftest.json",
            a.dir.display(),
            engine.release
        );
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let report = edgecd_infer::run_selftest(&engine, &st, threads);
    if a.json {
        print_json(&report)?;
    } else {
        for c in &report.cases {
            crate::outln!(
                "{} {} ({}): max error {:e}, {:.1} ms{}",
                if c.passed { "pass" } else { "FAIL" },
                c.name,
                c.model,
                c.max_abs_error,
                c.latency_ms,
                c.error
                    .as_deref()
                    .map_or(String::new(), |e| format!(": {e}"))
            );
        }
        crate::outln!(
            "self-test of {}: {} of {} cases passed",
            report.release,
            report.cases.iter().filter(|c| c.passed).count(),
            report.cases.len()
        );
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
