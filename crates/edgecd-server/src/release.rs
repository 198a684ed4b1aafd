//! Verification of a release on publish: every blob present with its declared size, the
//! release manifest signed by a trusted CI key, the bundle's signature and digest matching
//! the release manifest, and the SBOM matching its recorded digest. Untrusted or broken
//! releases are refused with the reason. [`preflight`] runs the checks that need only the
//! small files, also on their own (`POST /api/v1/admin/releases/check`) before a client
//! uploads the bundle; [`publish`] verifies and stores a release.

use crate::AppState;
use crate::error::ApiError;
use edgecd_api::protocol::{BlobRef, PublishRequest, ReleaseInfo, ReleaseRef, valid_digest};
use edgecd_sign::{SigstoreBundle, VerifyingKey, verify_artifact};

/// Largest accepted release manifest, signature or SBOM file.
const MAX_METADATA_BYTES: u64 = 16 << 20;

fn read_blob(st: &AppState, r: &BlobRef, what: &str, max: u64) -> Result<Vec<u8>, ApiError> {
    if !valid_digest(&r.digest) {
        return Err(ApiError::bad_request(format!(
            "{what}: invalid digest {:?}",
            r.digest
        )));
    }
    let size = st.blobs.size(&r.digest).ok_or_else(|| {
        ApiError::unprocessable(format!("{what}: blob {} was not uploaded", r.digest))
    })?;
    if size != r.size {
        return Err(ApiError::unprocessable(format!(
            "{what}: blob {} has {size} bytes, not {}",
            r.digest, r.size
        )));
    }
    if size > max {
        return Err(ApiError::unprocessable(format!(
            "{what}: {size} bytes is more than the limit of {max}"
        )));
    }
    std::fs::read(st.blobs.path(&r.digest)).map_err(ApiError::internal)
}

/// Finds the trusted key a Sigstore bundle names (by hint) and verifies `artifact` with it.
fn verify_with_trusted(
    keys: &[VerifyingKey],
    sig: &SigstoreBundle,
    artifact: &[u8],
    what: &str,
) -> Result<VerifyingKey, ApiError> {
    let hint = sig.key_hint();
    let candidates: Vec<&VerifyingKey> = if hint.is_empty() {
        keys.iter().collect()
    } else {
        keys.iter().filter(|k| k.hint() == hint).collect()
    };
    if candidates.is_empty() {
        return Err(ApiError::unprocessable(format!(
            "{what} is signed by key {hint:?}, which the server does not trust (edgecd keys trust KEY.pub)"
        )));
    }
    let mut last = String::new();
    for k in candidates {
        match verify_artifact(sig, artifact, k) {
            Ok(()) => return Ok(k.clone()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(ApiError::unprocessable(format!(
        "{what}: signature does not verify: {last}"
    )))
}

/// What the pre-flight check established from the small files of a release.
pub struct Preflight {
    pub manifest: edgecd_bundle::release::ReleaseManifest,
    pub key: VerifyingKey,
    bundle_sig: SigstoreBundle,
    /// The same release (same files) is already published.
    pub already_published: Option<ReleaseInfo>,
}

/// The checks that need only the release manifest, its signature and the bundle signature
/// (all small), so a client learns a release will be refused before it uploads the bundle:
/// the manifest is signed by a trusted key and names this bundle and SBOM, the bundle
/// signature parses and names a trusted key, and `app@version` is free or is this release.
pub async fn preflight(st: &AppState, req: &PublishRequest) -> Result<Preflight, ApiError> {
    let mut refs = vec![
        &req.manifest,
        &req.manifest_sig,
        &req.bundle_sig,
        &req.bundle,
    ];
    refs.extend(req.sbom.as_ref());
    let digests: Vec<&str> = refs.iter().map(|b| b.digest.as_str()).collect();
    st.blob_backend.ensure_local(&st.blobs, &digests).await?;
    let keys: Vec<VerifyingKey> = crate::keys::trusted(st)
        .await?
        .iter()
        .filter_map(|k| VerifyingKey::from_pem(&k.public_key_pem).ok())
        .collect();
    if keys.is_empty() {
        return Err(ApiError::unprocessable(
            "no release keys are trusted yet (edgecd keys trust KEY.pub)",
        ));
    }
    let manifest = read_blob(st, &req.manifest, "release manifest", MAX_METADATA_BYTES)?;
    let manifest_sig = read_blob(
        st,
        &req.manifest_sig,
        "release manifest signature",
        MAX_METADATA_BYTES,
    )?;
    let bundle_sig_bytes = read_blob(st, &req.bundle_sig, "bundle signature", MAX_METADATA_BYTES)?;
    let manifest_sig = SigstoreBundle::from_json(&manifest_sig)
        .map_err(|e| ApiError::unprocessable(format!("release manifest signature: {e}")))?;
    let key = verify_with_trusted(&keys, &manifest_sig, &manifest, "release manifest")?;
    let m = edgecd_bundle::release::ReleaseManifest::from_json(&manifest)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    if m.bundle.archive_digest != req.bundle.digest || m.bundle.archive_size != req.bundle.size {
        return Err(ApiError::unprocessable(format!(
            "the release manifest names bundle file {} ({} bytes), but {} ({} bytes) was uploaded",
            m.bundle.archive_digest, m.bundle.archive_size, req.bundle.digest, req.bundle.size
        )));
    }
    if !valid_digest(&req.bundle.digest) {
        return Err(ApiError::bad_request("bundle: invalid digest"));
    }
    let bundle_sig = SigstoreBundle::from_json(&bundle_sig_bytes)
        .map_err(|e| ApiError::unprocessable(format!("bundle signature: {e}")))?;
    let hint = bundle_sig.key_hint();
    if !hint.is_empty() && !keys.iter().any(|k| k.hint() == hint) {
        return Err(ApiError::unprocessable(format!(
            "the bundle is signed by key {hint:?}, which the server does not trust (edgecd keys trust KEY.pub)"
        )));
    }
    if let (Some(up), Some(signed)) = (&req.sbom, &m.sbom)
        && (up.digest != signed.digest || up.size != signed.size)
    {
        return Err(ApiError::unprocessable(format!(
            "SBOM {} ({} bytes) is not the one the release manifest names: {} ({} bytes)",
            up.digest, up.size, signed.digest, signed.size
        )));
    }
    let already_published = match st.store.release(&m.app, &m.version).await? {
        None => None,
        Some(old) => {
            let old: ReleaseInfo = crate::util::json_col(&old)?;
            let o = &old.release;
            if o.manifest != req.manifest
                || o.manifest_sig != req.manifest_sig
                || o.bundle != req.bundle
                || o.bundle_sig != req.bundle_sig
            {
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    format!(
                        "{}@{} is already published with different content; publish a new version",
                        m.app, m.version
                    ),
                ));
            }
            Some(old)
        }
    };
    Ok(Preflight {
        manifest: m,
        key,
        bundle_sig,
        already_published,
    })
}

/// Verifies an uploaded release and returns what will be stored.
pub async fn verify_publish(
    st: &AppState,
    req: &PublishRequest,
    pre: Preflight,
) -> Result<ReleaseInfo, ApiError> {
    let Preflight {
        manifest: m,
        key,
        bundle_sig,
        ..
    } = pre;
    let bundle_size = st.blobs.size(&req.bundle.digest).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "bundle: blob {} was not uploaded",
            req.bundle.digest
        ))
    })?;
    if bundle_size != req.bundle.size {
        return Err(ApiError::unprocessable(format!(
            "bundle: blob has {bundle_size} bytes, not {}",
            req.bundle.size
        )));
    }
    let bundle_path = st.blobs.path(&req.bundle.digest);
    let summary = {
        let key = key.clone();
        let sig = bundle_sig.clone();
        tokio::task::spawn_blocking(move || check_bundle(&bundle_path, &key, &sig))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::unprocessable(format!("bundle: {e}")))?
    };
    m.check_bundle(&summary)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    if let Some(up) = &req.sbom {
        read_blob(st, up, "SBOM", MAX_METADATA_BYTES)?;
    }
    Ok(ReleaseInfo {
        release: ReleaseRef {
            app: m.app,
            version: m.version,
            bundle_digest: summary.digest.clone(),
            manifest: req.manifest.clone(),
            manifest_sig: req.manifest_sig.clone(),
            bundle: req.bundle.clone(),
            bundle_sig: req.bundle_sig.clone(),
            hardware: m.hardware,
            runtime: m.runtime,
        },
        sbom: req.sbom.clone(),
        signed_by: key.hint(),
        published: st.now(),
    })
}

/// Verifies the bundle file's signature with `key` (and every digest and size inside it).
pub fn check_bundle(
    path: &std::path::Path,
    key: &VerifyingKey,
    sig: &SigstoreBundle,
) -> Result<edgecd_bundle::BundleSummary, String> {
    edgecd_bundle::verify_bundle(path, key, sig, &mut |_| {})
        .map(|v| v.into_inner())
        .map_err(|e| e.to_string())
}

/// What publishing a release did.
pub enum Published {
    /// Verified and stored now.
    New(ReleaseInfo),
    /// This very release was already published (published again: nothing changed).
    Existing(ReleaseInfo),
}

/// Verifies the release `req` describes, pushes it to the blob registry (when blobs live in
/// one) and stores it; a different release under the same app@version is refused.
pub async fn publish(st: &AppState, req: &PublishRequest) -> Result<Published, ApiError> {
    let mut pre = preflight(st, req).await?;
    if let Some(old) = pre.already_published.take() {
        return Ok(Published::Existing(old));
    }
    let info = verify_publish(st, req, pre).await?;
    st.blob_backend.published(&st.blobs, &info).await?;
    let r = &info.release;
    let text = serde_json::to_string(&info).map_err(ApiError::internal)?;
    let now = info.published as i64;
    if !st
        .store
        .insert_release(&r.app, &r.version, &text, now)
        .await?
    {
        // Published concurrently: the same release, or a conflict.
        return match preflight(st, req).await?.already_published {
            Some(old) => Ok(Published::Existing(old)),
            None => Err(ApiError::internal("release vanished while publishing")),
        };
    }
    let name = format!("{}@{}", r.app, r.version);
    st.store
        .event(None, st.now() as i64, "release-published", &name)
        .await?;
    tracing::info!(app = %r.app, version = %r.version, "release published");
    Ok(Published::New(info))
}

/// Every published release.
pub async fn list(st: &AppState) -> Result<Vec<ReleaseInfo>, ApiError> {
    st.store
        .release_infos()
        .await?
        .iter()
        .map(|r| crate::util::json_col(r))
        .collect()
}
