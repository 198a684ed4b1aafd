//! `edgecd release publish DIR/NAME-VERSION.edgecd` and `edgecd release list`: upload a
//! release (bundle, its signature, the signed release manifest and the SBOM) to a server,
//! which verifies it against its trusted keys; list what is published. Publishing uploads
//! the small files first and has the server check them (signature, trusted key, version
//! free) before any byte of the bundle goes; blobs the server has are skipped and partial
//! uploads resumed, so publishing again is cheap and answers "already published".
//!
//! Declared from `admin.rs` (`cmd::admin::remote`); route `edgecd release publish|list`
//! to [`run_publish`] / [`run_list`] (or [`run`] with [`RemoteReleaseCommand`]).
use super::Remote;
use anyhow::Context as _;
use edgecd_api::protocol::{BlobRef, PublishRequest};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum RemoteReleaseCommand {
    /// Upload a release to the server (it verifies signatures and digests and refuses
    /// untrusted or broken releases).
    Publish(PublishArgs),
    /// List the releases published on the server.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The bundle, DIR/NAME-VERSION.edgecd; its signature, release manifest and SBOM are
    /// found next to it.
    pub bundle: PathBuf,
    /// The release manifest (default: DIR/release.json, else DIR/NAME-VERSION.release.json).
    #[arg(long)]
    pub release_manifest: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: Remote,
}

pub fn run(c: RemoteReleaseCommand) -> anyhow::Result<ExitCode> {
    match c {
        RemoteReleaseCommand::Publish(a) => run_publish(a),
        RemoteReleaseCommand::List(a) => run_list(a),
    }
}

fn blob_ref(path: &Path) -> anyhow::Result<BlobRef> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (digest, size) = edgecd_bundle::digest::sha256_reader(f)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(BlobRef { digest, size })
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The files of a release next to its bundle.
fn release_files(
    a: &PublishArgs,
) -> anyhow::Result<(PathBuf, PathBuf, PathBuf, PathBuf, Option<PathBuf>)> {
    let bundle = a.bundle.clone();
    let dir = bundle.parent().unwrap_or(Path::new("."));
    let stem = bundle
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".edgecd"))
        .ok_or_else(|| {
            anyhow::anyhow!("{} is not a NAME-VERSION.edgecd bundle", bundle.display())
        })?;
    let bundle_sig = with_suffix(&bundle, ".sigstore.json");
    let manifest = match &a.release_manifest {
        Some(m) => m.clone(),
        None => [
            dir.join("release.json"),
            dir.join(format!("{stem}.release.json")),
        ]
        .into_iter()
        .find(|p| p.exists())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no release.json next to {} (create it with `edgecd release create`)",
                bundle.display()
            )
        })?,
    };
    let manifest_sig = with_suffix(&manifest, ".sigstore.json");
    let sbom = dir.join(format!("{stem}.cdx.json"));
    for p in [&bundle, &bundle_sig, &manifest, &manifest_sig] {
        anyhow::ensure!(p.exists(), "{} is missing", p.display());
    }
    Ok((
        bundle,
        bundle_sig,
        manifest,
        manifest_sig,
        sbom.exists().then_some(sbom),
    ))
}

/// What a publish did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    #[serde(flatten)]
    pub info: edgecd_api::protocol::ReleaseInfo,
    /// The same release was published before: nothing changed.
    pub already_published: bool,
    /// Bytes sent in upload bodies, and files sent / skipped because the server had them.
    pub uploaded_bytes: u64,
    pub uploaded_blobs: usize,
    pub skipped_blobs: usize,
}

/// Uploads and publishes a release (see the module doc for the order).
pub fn publish(a: &PublishArgs) -> anyhow::Result<Published> {
    let (bundle, bundle_sig, manifest, manifest_sig, sbom) = release_files(a)?;
    let client = a.remote.client()?;
    let (mut bytes, mut sent, mut skipped) = (0u64, 0usize, 0usize);
    let mut upload = |p: &Path| -> anyhow::Result<BlobRef> {
        let b = blob_ref(p)?;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pb = crate::output::byte_progress(b.size, &name);
        let up = client
            .upload_blob(&b, p, &mut |n| pb.set_position(n))
            .with_context(|| format!("uploading {}", p.display()))?;
        pb.finish_and_clear();
        bytes += up.sent;
        if up.skipped {
            skipped += 1;
        } else {
            sent += 1;
        }
        Ok(b)
    };
    let mut req = PublishRequest {
        manifest: upload(&manifest)?,
        manifest_sig: upload(&manifest_sig)?,
        bundle_sig: upload(&bundle_sig)?,
        bundle: blob_ref(&bundle)?,
        sbom: sbom.as_deref().map(blob_ref).transpose()?,
    };
    client
        .check_release(&req)
        .context("the server refused the release (nothing of the bundle was uploaded)")?;
    upload(&bundle)?;
    if let Some(s) = &sbom {
        req.sbom = Some(upload(s)?);
    }
    let (info, created) = client
        .publish_release(&req)
        .context("the server refused the release")?;
    Ok(Published {
        info,
        already_published: !created,
        uploaded_bytes: bytes,
        uploaded_blobs: sent,
        skipped_blobs: skipped,
    })
}

pub fn run_publish(a: PublishArgs) -> anyhow::Result<ExitCode> {
    let p = publish(&a)?;
    if a.json {
        crate::output::print_json(&p)?;
    } else {
        let r = &p.info.release;
        crate::outln!(
            "{} {}@{} (bundle {}, signed by {}); uploaded {} bytes in {} files, {} already on the server",
            if p.already_published {
                "already published"
            } else {
                "published"
            },
            r.app,
            r.version,
            r.bundle_digest,
            p.info.signed_by,
            p.uploaded_bytes,
            p.uploaded_blobs,
            p.skipped_blobs
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let list = a.remote.client()?.list_releases()?;
    if a.json {
        crate::output::print_json(&list)?;
    } else {
        crate::outln!("{:<32} {:<16} {:<12} BUNDLE", "RELEASE", "BOARD", "RUNTIME");
        for r in &list {
            let x = &r.release;
            crate::outln!(
                "{:<32} {:<16} {:<12} {}",
                format!("{}@{}", x.app, x.version),
                x.hardware.board,
                x.runtime.to_string(),
                x.bundle_digest
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_list_against_a_real_server() {
        let d = tempfile::tempdir().expect("tmp");
        let mut cfg = edgecd_server::Config::new(d.path().join("data"));
        cfg.listen = "127.0.0.1:0".parse().expect("addr");
        let srv = edgecd_server::EmbeddedServer::start(cfg).expect("server");
        let remote = Remote {
            server: format!("http://{}", srv.addr),
            token: srv.admin_token.clone(),
            ca_cert: None,
        };
        let key = edgecd_sign::SigningKey::generate();
        let files = edgecd_testkit::release::make_release(
            &d.path().join("rel"),
            &key,
            "shop-model",
            "1.2.0",
            edgecd_testkit::release::rpi5(),
            edgecd_testkit::release::infer_pin(),
            10_000,
        )
        .expect("release");
        let args = || PublishArgs {
            bundle: files.bundle.clone(),
            release_manifest: None,
            json: true,
            remote: remote.clone(),
        };
        // Refused while the key is not trusted.
        let err = run_publish(args()).expect_err("untrusted");
        assert!(format!("{err:#}").contains("trust"), "{err:#}");
        remote
            .client()
            .expect("client")
            .trust_key(&key.verifying_key().to_spki_pem(), None)
            .expect("trust");
        assert_eq!(run_publish(args()).expect("publish"), ExitCode::SUCCESS);
        let list = remote
            .client()
            .expect("client")
            .list_releases()
            .expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].release.bundle_digest, files.bundle_digest);
        assert!(list[0].sbom.is_some());
        assert_eq!(
            run_list(ListArgs {
                json: false,
                remote
            })
            .expect("list"),
            ExitCode::SUCCESS
        );
    }
}
