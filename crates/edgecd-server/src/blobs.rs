//! Content-addressed blob store: `DATA/blobs/sha256/<hex>`, written via a temp file in
//! `DATA/blobs/tmp`, fsynced and renamed into place once its digest is checked.

use crate::error::ServerError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("blob digest mismatch: the body hashes to {actual}, not {expected}")]
    Digest { expected: String, actual: String },
    #[error("blob is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("upload interrupted: {0}")]
    Body(String),
    #[error(transparent)]
    Store(#[from] ServerError),
}

impl BlobStore {
    pub fn open(data_dir: &Path) -> Result<Self, ServerError> {
        let root = data_dir.join("blobs");
        for d in [root.join("sha256"), root.join("tmp")] {
            std::fs::create_dir_all(&d).map_err(|e| ServerError::io(&d, e))?;
        }
        // Leftovers of interrupted uploads.
        if let Ok(rd) = std::fs::read_dir(root.join("tmp")) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Self { root })
    }

    /// The path of a stored blob (`digest` must be valid: `sha256:<64 hex>`).
    pub fn path(&self, digest: &str) -> PathBuf {
        self.root
            .join("sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// The size of a stored blob, if present.
    pub fn size(&self, digest: &str) -> Option<u64> {
        std::fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// Streams `body` into the store, checking it hashes to `digest` and stays within `max`.
    pub async fn put_stream<S, E>(
        &self,
        digest: &str,
        mut body: S,
        max: u64,
    ) -> Result<u64, PutError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        let tmp = self.root.join("tmp").join(crate::util::random_token("up"));
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| ServerError::io(&tmp, e))?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        let res: Result<(), PutError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| PutError::Body(e.to_string()))?;
                n += chunk.len() as u64;
                if n > max {
                    return Err(PutError::TooLarge(max));
                }
                h.update(&chunk);
                f.write_all(&chunk)
                    .await
                    .map_err(|e| ServerError::io(&tmp, e))?;
            }
            f.sync_all().await.map_err(|e| ServerError::io(&tmp, e))?;
            let actual = format!("sha256:{}", hex::encode(h.finalize_reset()));
            if actual != digest {
                return Err(PutError::Digest {
                    expected: digest.to_string(),
                    actual,
                });
            }
            let dest = self.path(digest);
            tokio::fs::rename(&tmp, &dest)
                .await
                .map_err(|e| ServerError::io(&dest, e))?;
            Ok(())
        }
        .await;
        if res.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        res.map(|()| n)
    }
}
