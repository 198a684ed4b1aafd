//! `edgecd release create|verify`: signed release manifests binding a bundle, its SBOM,
//! an optional container image digest and the runtime pin.
use crate::output::{byte_progress, print_json};
use anyhow::Context;
use edgecd_bundle::release::{ReleaseManifest, rfc3339_utc};
use edgecd_sign::SigstoreBundle;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum ReleaseCommand {
    /// Create and sign release.json for a bundle.
    Create(CreateArgs),
    /// Verify release.json's signature (and, with --bundle, that it names that bundle).
    Verify(VerifyArgs),
    /// Upload a release (bundle, signatures, release manifest, SBOM) to a server, which
    /// verifies it and refuses untrusted or broken releases.
    Publish(super::admin::remote::PublishArgs),
    /// List the releases published on a server.
    List(super::admin::remote::ListArgs),
    /// Show a published release's chain: git commit → training run → dataset hashes →
    /// bundle digest → signature (key id) → devices running it.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The release, APP@VERSION.
    pub release: String,
    /// The release manifest as published (release.json): its commit, training run and
    /// datasets are shown once its digest matches the one the server holds.
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: super::admin::Remote,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub bundle: PathBuf,
    /// Container image pinned by digest: registry/name@sha256:<hex> (the runtime image
    /// `edgecd image build` prints).
    #[arg(long)]
    pub image: Option<String>,
    /// Also sign the image by its digest with the release key (`imageSignature`): devices in
    /// podman mode then run it only if that signature verifies.
    #[arg(long, requires = "image")]
    pub sign_image: bool,
    /// Leave the bundle's provenance (commit, training run, datasets) out of release.json:
    /// agents older than the `provenance` field refuse release manifests that carry it. The
    /// bundle's signed manifest and SBOM still record it.
    #[arg(long)]
    pub no_provenance: bool,
    /// Private signing key (PKCS#8 PEM or cosign encrypted key with COSIGN_PASSWORD).
    #[arg(long)]
    pub key: PathBuf,
    /// Output path; the signature goes to OUT.sigstore.json.
    #[arg(long, default_value = "release.json")]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The release manifest.
    pub file: PathBuf,
    #[arg(long)]
    pub key: PathBuf,
    /// Signature (default FILE.sigstore.json).
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// Also check that this bundle is the one the release names (and its signature, if present).
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(c: ReleaseCommand) -> anyhow::Result<ExitCode> {
    match c {
        ReleaseCommand::Create(a) => create(a),
        ReleaseCommand::Verify(a) => verify(a),
        ReleaseCommand::Publish(a) => {
            super::admin::remote::run(super::admin::remote::RemoteReleaseCommand::Publish(a))
        }
        ReleaseCommand::List(a) => {
            super::admin::remote::run(super::admin::remote::RemoteReleaseCommand::List(a))
        }
        ReleaseCommand::Show(a) => show(a),
    }
}

/// `edgecd release show APP@VERSION`: what the server knows (bundle, signing key, devices)
/// joined with the provenance of the published release manifest.
fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let (app, version) = a
        .release
        .split_once('@')
        .filter(|(a, v)| !a.is_empty() && !v.is_empty())
        .with_context(|| format!("{:?} is not APP@VERSION", a.release))?;
    let client = a.remote.client()?;
    let releases = client.list_releases()?;
    let info = releases
        .iter()
        .find(|r| r.release.app == app && r.release.version == version)
        .with_context(|| {
            format!(
                "{app}@{version} is not published on {} (see `edgecd release list`)",
                a.remote.server
            )
        })?;
    let r = &info.release;
    let provenance = match &a.manifest {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let digest = edgecd_bundle::digest::sha256_digest(&bytes);
            anyhow::ensure!(
                digest == r.manifest.digest,
                "{} (digest {digest}) is not the release manifest the server published for {app}@{version} ({})",
                path.display(),
                r.manifest.digest
            );
            ReleaseManifest::from_json(&bytes)?.provenance
        }
        None => None,
    };
    let devices = client.list_devices_where(&Default::default(), None)?;
    let name = format!("{app}@{version}");
    let devices: Vec<serde_json::Value> = devices
        .iter()
        .filter_map(|d| {
            let status = d.status.as_ref();
            let running = status
                .and_then(|s| s.running_app(app))
                .is_some_and(|x| x.version == version);
            let assigned = d.assigned_all().contains(&name);
            (running || assigned).then(|| {
                serde_json::json!({
                    "id": d.id,
                    "running": running,
                    "assigned": assigned,
                    "phase": status.map(|s| s.phase),
                })
            })
        })
        .collect();
    if a.json {
        print_json(&serde_json::json!({
            "release": name,
            "git": provenance.as_ref().and_then(|p| p.git.as_ref()),
            "trainingRun": provenance.as_ref().and_then(|p| p.training_run.as_ref()),
            "datasets": provenance.as_ref().map_or(&[][..], |p| &p.datasets[..]),
            "modelHashes": provenance.as_ref().map_or(&[][..], |p| &p.models[..]),
            "provenanceKnown": a.manifest.is_some(),
            "bundle": {"digest": r.bundle_digest, "archive": r.bundle},
            "sbom": info.sbom,
            "manifest": r.manifest,
            "signature": {"keyId": info.signed_by},
            "published": info.published,
            "devices": devices,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!("{name}");
    match (&provenance, &a.manifest) {
        (Some(p), _) => {
            if p.git.is_none() {
                crate::outln!("  git commit   unknown");
            }
            for l in super::bundle::provenance_lines(p) {
                crate::outln!("  {l}");
            }
        }
        (None, Some(_)) => crate::outln!("  provenance   none recorded (built from plain files)"),
        (None, None) => crate::outln!(
            "  provenance   pass --manifest release.json (as published) to show the commit, training run and datasets"
        ),
    }
    crate::outln!("  bundle       {}", r.bundle_digest);
    crate::outln!(
        "  archive      {} ({} bytes)",
        r.bundle.digest,
        r.bundle.size
    );
    crate::outln!("  signature    key {}", info.signed_by);
    let running = devices.iter().filter(|d| d["running"] == true).count();
    crate::outln!(
        "  devices      {running} running, {} assigned",
        devices.iter().filter(|d| d["assigned"] == true).count()
    );
    for d in &devices {
        crate::outln!(
            "    {} {}{}",
            d["id"].as_str().unwrap_or_default(),
            if d["running"] == true {
                "running"
            } else {
                "assigned"
            },
            d["phase"]
                .as_str()
                .map_or(String::new(), |p| format!(" ({p})"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn now_rfc3339() -> String {
    // SOURCE_DATE_EPOCH makes release manifests reproducible too.
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    rfc3339_utc(secs)
}

/// Reads a bundle, verifying its signature with `key` when FILE.sigstore.json exists.
fn read_bundle_checked(
    path: &Path,
    key: &edgecd_sign::VerifyingKey,
) -> anyhow::Result<(edgecd_bundle::BundleSummary, bool)> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let pb = byte_progress(size, "verifying bundle");
    let sig_path = edgecd_bundle::signature_path(path);
    let r = if sig_path.exists() {
        let sig = SigstoreBundle::from_json(&std::fs::read(&sig_path)?)
            .with_context(|| format!("parsing {}", sig_path.display()))?;
        edgecd_bundle::verify_bundle(path, key, &sig, &mut |n| pb.inc(n))
            .map(|v| (v.into_inner(), true))
    } else {
        edgecd_bundle::read_bundle(path, &mut |n| pb.inc(n)).map(|s| (s, false))
    };
    pb.finish_and_clear();
    r.with_context(|| format!("checking bundle {}", path.display()))
}

fn create(a: CreateArgs) -> anyhow::Result<ExitCode> {
    let key = super::keys::load_signing_key(&a.key)?;
    let (summary, signed) = read_bundle_checked(&a.bundle, &key.verifying_key())?;
    if !signed {
        eprintln!(
            "note: {} has no signature file; sign it with `edgecd bundle sign` so devices can check it",
            a.bundle.display()
        );
    }
    let mut release = ReleaseManifest::for_bundle(&summary, a.image, now_rfc3339())?;
    if a.no_provenance {
        release.provenance = None;
    }
    if a.sign_image {
        release.sign_image(&key)?;
    }
    let bytes = release.to_json();
    let sig = edgecd_sign::sign_artifact(&key, &bytes);
    edgecd_bundle::write_atomic(&a.out, &bytes)?;
    let sig_path = edgecd_bundle::signature_path(&a.out);
    edgecd_bundle::write_atomic(&sig_path, sig.to_json_pretty().as_bytes())?;
    if a.json {
        print_json(&serde_json::json!({
            "release": release,
            "manifest": a.out,
            "signature": sig_path,
        }))?;
    } else {
        crate::outln!(
            "release {}@{} → bundle {}",
            release.app,
            release.version,
            release.bundle.digest
        );
        crate::outln!("wrote {} and {}", a.out.display(), sig_path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let key = super::keys::load_public_key(&a.key)?;
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let sig_path = a
        .signature
        .unwrap_or_else(|| edgecd_bundle::signature_path(&a.file));
    let sig = SigstoreBundle::from_json(
        &std::fs::read(&sig_path)
            .with_context(|| format!("reading signature {}", sig_path.display()))?,
    )
    .with_context(|| format!("parsing signature {}", sig_path.display()))?;
    edgecd_sign::verify_artifact(&sig, &bytes, &key)
        .with_context(|| format!("verifying {} with key {}", a.file.display(), key.hint()))?;
    let release = ReleaseManifest::from_json(&bytes)?;
    let image_signed = release.verify_image_signature(&key)?;
    let mut bundle_checked = None;
    if let Some(b) = &a.bundle {
        let (summary, signed) = read_bundle_checked(b, &key)?;
        release
            .check_bundle(&summary)
            .with_context(|| format!("checking {} against {}", b.display(), a.file.display()))?;
        bundle_checked = Some(signed);
    }
    if a.json {
        print_json(
            &serde_json::json!({"release": release, "keyId": key.hint(), "bundleChecked": bundle_checked.is_some(), "bundleSignatureChecked": bundle_checked == Some(true), "imageSignatureChecked": image_signed}),
        )?;
    } else {
        crate::outln!(
            "OK release {}@{} signed by key {}",
            release.app,
            release.version,
            key.hint()
        );
        crate::outln!(
            "  bundle {} ({} bytes)",
            release.bundle.digest,
            release.bundle.archive_size
        );
        if let Some(i) = &release.image {
            crate::outln!(
                "  image  {i}{}",
                if image_signed {
                    " (image signature verified)"
                } else {
                    ""
                }
            );
        }
        match bundle_checked {
            Some(true) => crate::outln!("  bundle file matches, and its own signature verified"),
            Some(false) => crate::outln!("  bundle file matches (it has no signature file)"),
            None => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}
