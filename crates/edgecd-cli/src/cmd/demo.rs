//! `edgecd demo`: the end-to-end story on this machine with nothing installed.
//!
//! Part 1, supply chain: a release key, two versions of a real (generated) ONNX classifier
//! packaged into reproducible signed bundles with SBOMs, signed release manifests,
//! verification, and the refusals a device relies on (a tampered byte, a wrong key).
//! Part 2, fleet: an embedded server in the same directory, 50 simulated devices in 10
//! stores, release 1.0.0 rolled out canary → analysis → 25% → 100%, then 1.1.0 with a latency
//! regression that the canary catches and the server rolls back. The exit code says whether
//! every step came out as expected.
use crate::demo_model::classifier_onnx;
use anyhow::{Context, bail};
use edgecd_api::profile::{HardwareProfile, RuntimePin};
use edgecd_bundle::release::{ReleaseManifest, rfc3339_utc};
use edgecd_bundle::{BuildSpec, BundleError, BundleMeta};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the demo's files in DIR instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Only write the demo's generated ONNX classifier (input `features` [1,16] float32,
    /// output `probs` [1,4]) to FILE and exit: an example model to bundle, nothing downloaded.
    #[arg(long, value_name = "FILE", conflicts_with = "keep")]
    pub write_model: Option<PathBuf>,
    /// With --write-model: the seed of its weights (another seed, another model version).
    #[arg(long, default_value_t = 1, requires = "write_model")]
    pub seed: u64,
}

/// `edgecd demo --write-model FILE`: writes the generated classifier (0644).
fn write_model(path: &std::path::Path, seed: u64) -> anyhow::Result<ExitCode> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    edgecd_bundle::write_atomic(path, &classifier_onnx(seed))
        .with_context(|| format!("writing the demo model to {}", path.display()))?;
    crate::outln!(
        "wrote {} (ONNX classifier: features [1,16] float32 → probs [1,4], seed {seed})",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

struct Timeline {
    start: Instant,
}

impl Timeline {
    fn step(&self, what: &str) {
        crate::outln!("[{:>7.3}s] {what}", self.start.elapsed().as_secs_f64());
    }
}

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &a.write_model {
        return write_model(path, a.seed);
    }
    let tmp;
    let dir = match &a.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let t = Timeline {
        start: Instant::now(),
    };
    crate::outln!("edgecd demo — working in {}", dir.display());

    let key = edgecd_sign::write_key_pair(&dir.join("keys/release"))?;
    let public = key.verifying_key();
    t.step(&format!(
        "generated release key {} (keys/release.key, keys/release.pub)",
        public.hint()
    ));

    let mut releases = vec![];
    for (version, seed) in [("1.0.0", 1u64), ("1.1.0", 2)] {
        let model = dir.join(format!("models/{version}/receipt-classifier.onnx"));
        std::fs::create_dir_all(model.parent().expect("has parent"))?;
        std::fs::write(&model, classifier_onnx(seed))?;
        let spec = BuildSpec {
            meta: BundleMeta {
                name: "receipt-classifier".into(),
                version: version.into(),
                hardware: HardwareProfile {
                    board: "rpi5".into(),
                    accelerator: None,
                    min_ram_mb: Some(1024),
                },
                runtime: RuntimePin {
                    name: "edgecd-infer".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                },
                selftest: None,
                labels: [("fleet".to_string(), "retail".to_string())].into(),
                provenance: None,
            },
            models: vec![model],
        };
        let out = dir.join("dist");
        let built = edgecd_bundle::build_bundle(&spec, &out, &mut |_| {})?;
        let again = edgecd_bundle::build_bundle(&spec, &dir.join("rebuild"), &mut |_| {})?;
        if std::fs::read(&built.path)? != std::fs::read(&again.path)? {
            bail!("rebuilding {version} gave different bytes: the build is not reproducible");
        }
        let m = &built.profile.models[0];
        t.step(&format!(
            "built {} ({} bytes, {} {:?}, inputs {}, outputs {}) — rebuilt bit-for-bit identical",
            built
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("?"),
            built.archive_size,
            m.filepath,
            m.info.precision,
            m.info
                .inputs
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            m.info
                .outputs
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ));
        let summary = edgecd_bundle::read_bundle(&built.path, &mut |_| {})?;
        let sig = edgecd_sign::sign_artifact(&key, &summary.manifest_bytes);
        let sig_path = edgecd_bundle::signature_path(&built.path);
        edgecd_bundle::write_atomic(&sig_path, sig.to_json_pretty().as_bytes())?;
        let verified = edgecd_bundle::verify_bundle(&built.path, &public, &sig, &mut |_| {})?;
        let release = ReleaseManifest::for_bundle(&verified, None, rfc3339_utc(0))?;
        let release_path = out.join(format!("release-{version}.json"));
        let release_bytes = release.to_json();
        edgecd_bundle::write_atomic(&release_path, &release_bytes)?;
        let release_sig = edgecd_sign::sign_artifact(&key, &release_bytes);
        edgecd_sign::verify_artifact(&release_sig, &release_bytes, &public)?;
        release.check_bundle(&verified)?;
        t.step(&format!(
            "signed {} and its release manifest; verified signature, every blob digest, SBOM {}",
            verified.digest,
            verified.sbom_digest.as_deref().unwrap_or("-")
        ));
        releases.push((built, sig));
    }

    // What a device refuses.
    let (good, sig) = &releases[1];
    let tampered = dir.join("dist/tampered.edgecd");
    let mut bytes = std::fs::read(&good.path)?;
    let at = bytes.len() - 1024 - 512 - 100; // inside the model blob
    bytes[at] ^= 0x40;
    std::fs::write(&tampered, &bytes)?;
    match edgecd_bundle::verify_bundle(&tampered, &public, sig, &mut |_| {}) {
        Err(e @ BundleError::BlobDigestMismatch { .. }) => t.step(&format!(
            "refused a bundle with one flipped model byte: {e}"
        )),
        Err(e) => bail!("tampered bundle refused for the wrong reason: {e}"),
        Ok(_) => bail!("a tampered bundle verified"),
    }
    let stranger = edgecd_sign::SigningKey::generate();
    match edgecd_bundle::verify_bundle(&good.path, &stranger.verifying_key(), sig, &mut |_| {}) {
        Err(e @ BundleError::Signature(_)) => t.step(&format!(
            "refused a bundle checked against an untrusted key: {e}"
        )),
        Err(e) => bail!("wrong-key check failed for the wrong reason: {e}"),
        Ok(_) => bail!("a bundle verified with the wrong key"),
    }
    fleet_story(&dir, &t)?;
    t.step("demo complete: every step behaved as expected");
    if a.keep.is_some() {
        crate::outln!("files kept in {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

const SCENARIO: &str = r#"
default: {latency_ms: {p50: 60, p95: 120}, error_rate: 0.004, confidence: {mean: 0.91, sd: 0.04}, temp_c: {mean: 61, sd: 2}, requests_per_checkin: 60}
releases:
  "receipt-classifier@1.1.0": {latency_ms: {p50: 190, p95: 430}}
"#;

fn spec(version: &str, with_baseline_gates: bool) -> String {
    let mut s = format!(
        "release: {}@{version}\nselector: {{fleet: retail}}\nsteps:\n  - canary: {{devices: 4, spread_by: site}}\n  - analyze: {{duration: 6s, interval: 2s}}\n  - canary: {{percent: 25}}\n  - analyze: {{duration: 4s, interval: 2s}}\n  - canary: {{percent: 100}}\ngates:\n  - {{metric: latency_p95_ms, max: 300}}\n  - {{metric: error_rate, max: 0.03}}\n",
        crate::story::APP
    );
    if with_baseline_gates {
        s.push_str("  - {metric: latency_p95_ms, max_ratio: 1.2, against: baseline}\n  - {metric: confidence_psi, max: 0.2, against: baseline}\n");
    }
    s.push_str("min_samples: 200\non_failure: rollback\n");
    s
}

fn print_record(t: &Timeline, rec: &edgecd_rollout::engine::AuditRecord) {
    t.step(&format!(
        "  step {} {:<10} {}",
        rec.step + 1,
        rec.kind,
        rec.message
    ));
    for g in &rec.gates {
        // The value with its interval at the rollout's confidence (and the ratio to the
        // baseline with its interval for ratio gates).
        let v = g.shown_value();
        let b = match (g.ratio, g.baseline) {
            (None, Some(b)) => format!(" (baseline {b:.3})"),
            _ => String::new(),
        };
        let verdict = match &g.verdict {
            edgecd_rollout::Verdict::Pass => "pass".to_string(),
            edgecd_rollout::Verdict::Fail(w) => format!("FAIL: {w}"),
            edgecd_rollout::Verdict::Inconclusive(w) => format!("hold: {w}"),
            edgecd_rollout::Verdict::Error(w) => format!("error: {w}"),
        };
        crate::outln!(
            "{:>12}      {:<44} = {v}{b} ({} samples) {verdict}",
            "",
            g.name(),
            g.samples
        );
    }
}

fn fleet_story(dir: &std::path::Path, t: &Timeline) -> anyhow::Result<()> {
    use crate::story::{Lab, census, drive};
    let lab = Lab::start(&dir.join("fleet"), 1, 250)?;
    t.step(&format!(
        "embedded control plane on {} (SQLite in {})",
        lab.url(),
        dir.join("fleet/server").display()
    ));
    lab.release("1.0.0", 1)?;
    lab.release("1.1.0", 2)?;
    t.step("published receipt-classifier 1.0.0 and 1.1.0 (server verified signatures, release manifests, SBOMs)");
    let scenario: edgecd_sim::Scenario = serde_yaml::from_str(SCENARIO)?;
    let fleet = lab.fleet(50, 10, scenario, 42)?;
    t.step(
        "enrolled 50 simulated Raspberry Pi 5 devices in 10 stores (real agent protocol over HTTP)",
    );

    let r1 = lab.start_rollout(&spec("1.0.0", false))?;
    let id1 = r1["rollout"]["id"].as_str().unwrap_or_default().to_string();
    t.step(&format!("rollout {id1}: receipt-classifier@1.0.0 — canary 4 devices in 4 stores → analyze → 25% → analyze → 100%"));
    let o1 = drive(
        &lab,
        &fleet,
        &id1,
        std::time::Duration::from_secs(90),
        &mut |rec, _| print_record(t, rec),
    )?;
    let c1 = census(&fleet);
    t.step(&format!(
        "rollout {id1} {} in {:.1}s; fleet: {c1:?}",
        o1.phase(),
        o1.elapsed.as_secs_f64()
    ));
    if o1.phase() != "completed" || c1.get("receipt-classifier@1.0.0") != Some(&50) {
        bail!("release 1.0.0 should have reached all 50 devices");
    }

    let r2 = lab.start_rollout(&spec("1.1.0", true))?;
    let id2 = r2["rollout"]["id"].as_str().unwrap_or_default().to_string();
    t.step(&format!(
        "rollout {id2}: receipt-classifier@1.1.0 (a latency regression) against baseline 1.0.0"
    ));
    let mut abort_at = None;
    let o2 = drive(
        &lab,
        &fleet,
        &id2,
        std::time::Duration::from_secs(90),
        &mut |rec, _| {
            if rec.kind == "abort" {
                abort_at = Some(std::time::Instant::now());
            }
            print_record(t, rec)
        },
    )?;
    let c2 = census(&fleet);
    let cohort = o2.cohort();
    let leaked: Vec<&String> = o2
        .ever_ran
        .iter()
        .filter(|d| !cohort.contains(*d))
        .collect();
    let to_rollback = abort_at.map_or(0.0, |a| a.elapsed().as_secs_f64());
    t.step(&format!(
        "rollout {id2} {}: {} canary devices ran 1.1.0, none outside the canary; all back on 1.0.0 {to_rollback:.1}s after the abort; fleet: {c2:?}",
        o2.phase(),
        o2.ever_ran.len()
    ));
    if o2.phase() != "aborted"
        || !leaked.is_empty()
        || c2.get("receipt-classifier@1.0.0") != Some(&50)
    {
        bail!(
            "the canary should have caught 1.1.0 and rolled it back (leaked to {leaked:?}, fleet {c2:?})"
        );
    }
    Ok(())
}
