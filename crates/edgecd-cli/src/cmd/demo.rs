//! `edgecd demo`: the end-to-end story on this machine with nothing installed.
//!
//! Today it shows the supply-chain half: a release key, two versions of a real (generated)
//! ONNX classifier packaged into reproducible signed bundles with SBOMs, signed release
//! manifests, verification, and the refusals a device relies on (a tampered byte, a wrong
//! key). The exit code says whether every step came out as expected.
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
}

struct Timeline {
    start: Instant,
}

impl Timeline {
    fn step(&self, what: &str) {
        println!("[{:>7.3}s] {what}", self.start.elapsed().as_secs_f64());
    }
}

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
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
    println!("edgecd demo — working in {}", dir.display());

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
    t.step("demo complete: every step behaved as expected");
    if a.keep.is_some() {
        println!("files kept in {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
