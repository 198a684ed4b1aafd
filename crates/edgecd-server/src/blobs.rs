//! Content-addressed blob store: `DATA/blobs/sha256/<hex>`. Uploads are resumable: bytes go
//! to `DATA/blobs/uploads/<hex>` (one upload per digest at a time, continued at its length),
//! and once complete the file is hashed, fsynced and renamed into place only if it matches
//! its digest. [`BlobStore::sweep`] removes blobs and stale partial uploads nothing refers to.
//!
//! Where blobs live beyond this disk is a [`BlobBackend`]: [`LocalDisk`] (the default: this
//! server keeps them and serves them to devices) or `registry::Registry` (an OCI registry the
//! replicas share; devices are redirected to it or their site's mirror, and the disk is the
//! working copy). The server holds one as `AppState::blob_backend` and never asks which.

use crate::AppState;
use crate::error::{ApiError, ServerError};
use crate::util::json_col;
use edgecd_api::protocol::ReleaseInfo;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    /// Digests with an upload in progress (their partial file is being written).
    busy: Arc<Mutex<BTreeSet<String>>>,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("blob digest mismatch: the body hashes to {actual}, not {expected}")]
    Digest { expected: String, actual: String },
    #[error("blob is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the body is longer than the blob's declared Upload-Length of {0} bytes")]
    TooLong(u64),
    #[error(
        "the server has {have} bytes of this upload, not {got}: resume with Upload-Offset: {have}"
    )]
    Offset { have: u64, got: u64 },
    #[error("upload interrupted: {0}")]
    Body(String),
    #[error(transparent)]
    Store(#[from] ServerError),
}

/// What a write left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The blob is complete, verified and stored (its size).
    Stored(u64),
    /// More bytes are expected; the server has this many.
    Partial(u64),
}

/// Holds a digest's upload slot; dropping it frees the slot.
#[derive(Debug)]
pub struct UploadSlot {
    busy: Arc<Mutex<BTreeSet<String>>>,
    digest: String,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        if let Ok(mut b) = self.busy.lock() {
            b.remove(&self.digest);
        }
    }
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Swept {
    pub blobs: Vec<String>,
    pub partial_uploads: Vec<String>,
    pub bytes: u64,
}

impl BlobStore {
    pub fn open(data_dir: &Path) -> Result<Self, ServerError> {
        let root = data_dir.join("blobs");
        for d in [root.join("sha256"), root.join("uploads")] {
            std::fs::create_dir_all(&d).map_err(|e| ServerError::io(&d, e))?;
        }
        // Temp files of servers before resumable uploads.
        let _ = std::fs::remove_dir_all(root.join("tmp"));
        Ok(Self {
            root,
            busy: Arc::default(),
        })
    }

    /// The path of a stored blob (`digest` must be valid: `sha256:<64 hex>`).
    pub fn path(&self, digest: &str) -> PathBuf {
        self.root
            .join("sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn partial_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("uploads")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// The size of a stored blob, if present.
    pub fn size(&self, digest: &str) -> Option<u64> {
        std::fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// Marks a stored blob as just used, so a sweep's grace period starts again (an upload
    /// skipped because the blob is present is followed by the publish that refers to it).
    pub fn touch(&self, digest: &str) {
        if let Ok(f) = std::fs::File::options().write(true).open(self.path(digest)) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Bytes the server holds of an unfinished upload (0 if none).
    pub fn partial_len(&self, digest: &str) -> u64 {
        std::fs::metadata(self.partial_path(digest)).map_or(0, |m| m.len())
    }

    /// Takes the upload slot of `digest`; `None` while another upload of it runs.
    pub fn begin(&self, digest: &str) -> Option<UploadSlot> {
        let mut b = self.busy.lock().ok()?;
        b.insert(digest.to_string()).then(|| UploadSlot {
            busy: self.busy.clone(),
            digest: digest.to_string(),
        })
    }

    /// Writes `body` at byte `offset` of the upload of `digest` (0 starts it again; any
    /// other offset must be what the server has). The blob is complete when it reaches
    /// `total` or, without `total`, when the body ends; it is then verified and stored.
    /// An interrupted body keeps what arrived, to be resumed.
    pub async fn write<S, E>(
        &self,
        slot: &UploadSlot,
        offset: u64,
        total: Option<u64>,
        mut body: S,
        max: u64,
    ) -> Result<Put, PutError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        let digest = slot.digest.as_str();
        let limit = total.unwrap_or(max);
        if limit > max {
            return Err(PutError::TooLarge(max));
        }
        let part = self.partial_path(digest);
        let have = self.partial_len(digest);
        if offset != 0 && offset != have {
            return Err(PutError::Offset { have, got: offset });
        }
        let mut f = tokio::fs::File::options()
            .create(true)
            .write(true)
            .truncate(offset == 0)
            .open(&part)
            .await
            .map_err(|e| ServerError::io(&part, e))?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| ServerError::io(&part, e))?;
        let mut n = offset;
        let written: Result<(), PutError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| PutError::Body(e.to_string()))?;
                n += chunk.len() as u64;
                if n > limit {
                    return Err(match total {
                        Some(t) if t <= max => PutError::TooLong(t),
                        _ => PutError::TooLarge(max),
                    });
                }
                f.write_all(&chunk)
                    .await
                    .map_err(|e| ServerError::io(&part, e))?;
            }
            Ok(())
        }
        .await;
        // What arrived is kept for a resume, even when the body broke off.
        f.flush().await.map_err(|e| ServerError::io(&part, e))?;
        f.sync_all().await.map_err(|e| ServerError::io(&part, e))?;
        drop(f);
        if let Err(e) = written {
            if !matches!(e, PutError::Body(_)) {
                let _ = tokio::fs::remove_file(&part).await;
            }
            return Err(e);
        }
        if total.is_some_and(|t| n < t) {
            return Ok(Put::Partial(n));
        }
        let actual = {
            let part = part.clone();
            tokio::task::spawn_blocking(move || hash_file(&part))
                .await
                .map_err(|e| ServerError::Corrupt(e.to_string()))?
                .map_err(|e| ServerError::io(self.partial_path(digest), e))?
        };
        if actual != digest {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(PutError::Digest {
                expected: digest.to_string(),
                actual,
            });
        }
        let dest = self.path(digest);
        tokio::fs::rename(&part, &dest)
            .await
            .map_err(|e| ServerError::io(&dest, e))?;
        Ok(Put::Stored(n))
    }

    /// Removes stored blobs not in `referenced` and partial uploads not in progress, both
    /// only when untouched for `grace` (a blob uploaded for a publish that has not happened
    /// yet is younger than that).
    pub fn sweep(&self, referenced: &BTreeSet<String>, grace: Duration) -> Swept {
        let mut out = Swept::default();
        let cutoff = SystemTime::now().checked_sub(grace);
        let stale =
            |m: &std::fs::Metadata| cutoff.is_some_and(|c| m.modified().is_ok_and(|t| t <= c));
        let busy = self.busy.lock().map(|b| b.clone()).unwrap_or_default();
        for (dir, partial) in [("sha256", false), ("uploads", true)] {
            let Ok(rd) = std::fs::read_dir(self.root.join(dir)) else {
                continue;
            };
            for e in rd.flatten() {
                let digest = format!("sha256:{}", e.file_name().to_string_lossy());
                let keep = if partial {
                    busy.contains(&digest)
                } else {
                    referenced.contains(&digest)
                };
                let Ok(m) = e.metadata() else { continue };
                if keep || !stale(&m) || std::fs::remove_file(e.path()).is_err() {
                    continue;
                }
                out.bytes += m.len();
                if partial {
                    out.partial_uploads.push(digest);
                } else {
                    out.blobs.push(digest);
                }
            }
        }
        out
    }
}

fn hash_file(p: &Path) -> std::io::Result<String> {
    edgecd_bundle::digest::sha256_reader(std::fs::File::open(p)?).map(|(d, _)| d)
}

/// How a device gets a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Download {
    /// This server answers it from this file.
    Serve(PathBuf),
    /// The device fetches it at this URL (307).
    Redirect(String),
}

/// Where blobs live beyond the local working copy, and where devices fetch them. Calls that
/// fail answer as errors saying what to do; nothing local is lost.
#[async_trait::async_trait]
pub trait BlobBackend: Send + Sync + 'static {
    /// A short description for logs, e.g. `local disk` or the registry's URL.
    fn describe(&self) -> String;
    /// A complete, verified upload is now in `local`: make it available where blobs live.
    async fn stored(&self, local: &BlobStore, digest: &str) -> Result<(), ApiError>;
    /// The size of a blob `local` lacks, if the backend has it.
    async fn size(&self, digest: &str) -> Result<Option<u64>, ApiError>;
    /// Brings the blobs `digests` names into `local` when it lacks them (uploaded through
    /// another replica).
    async fn ensure_local(&self, local: &BlobStore, digests: &[&str]) -> Result<(), ApiError>;
    /// Where a device whose `site` label is `site` downloads `digest`.
    fn download(&self, local: &BlobStore, digest: &str, site: Option<&str>) -> Download;
    /// A release was verified and is about to be stored: record it where blobs live.
    async fn published(&self, local: &BlobStore, info: &ReleaseInfo) -> Result<(), ApiError>;
}

/// The default backend: blobs live on this server's disk only, and it serves them.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalDisk;

#[async_trait::async_trait]
impl BlobBackend for LocalDisk {
    fn describe(&self) -> String {
        "local disk".into()
    }
    async fn stored(&self, _: &BlobStore, _: &str) -> Result<(), ApiError> {
        Ok(())
    }
    async fn size(&self, _: &str) -> Result<Option<u64>, ApiError> {
        Ok(None)
    }
    async fn ensure_local(&self, _: &BlobStore, _: &[&str]) -> Result<(), ApiError> {
        Ok(())
    }
    fn download(&self, local: &BlobStore, digest: &str, _: Option<&str>) -> Download {
        Download::Serve(local.path(digest))
    }
    async fn published(&self, _: &BlobStore, _: &ReleaseInfo) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Every blob a published release refers to.
async fn referenced_blobs(st: &AppState) -> Result<std::collections::BTreeSet<String>, ApiError> {
    let mut out = std::collections::BTreeSet::new();
    for info in st.store.release_infos().await? {
        let i: ReleaseInfo = json_col(&info)?;
        let r = i.release;
        out.extend(
            [r.manifest, r.manifest_sig, r.bundle, r.bundle_sig]
                .into_iter()
                .chain(i.sbom)
                .map(|b| b.digest),
        );
    }
    Ok(out)
}

/// One garbage-collection pass over the blob store (the periodic sweep and the admin call).
pub async fn sweep_unreferenced(
    st: &AppState,
    grace: std::time::Duration,
) -> Result<crate::blobs::Swept, ApiError> {
    let referenced = referenced_blobs(st).await?;
    let blobs = st.blobs.clone();
    let swept = tokio::task::spawn_blocking(move || blobs.sweep(&referenced, grace))
        .await
        .map_err(ApiError::internal)?;
    if !swept.blobs.is_empty() || !swept.partial_uploads.is_empty() {
        tracing::info!(
            blobs = swept.blobs.len(),
            partial_uploads = swept.partial_uploads.len(),
            bytes = swept.bytes,
            "removed unreferenced blobs"
        );
    }
    Ok(swept)
}
