//! Blobs in an OCI registry (`--blob-registry URL/REPOSITORY`), so that several replicas share
//! them and devices download from the registry or a mirror near them instead of from the
//! server. Uploads still land in the local blob store first (resumable, verified); a complete
//! blob is then pushed to the registry (OCI distribution API: one `POST` + monolithic `PUT`),
//! and a published release becomes an OCI artifact there: an image manifest of artifact type
//! [`RELEASE_ARTIFACT`] (layers: release manifest, bundle) tagged `APP-VERSION`, with the
//! signatures and the SBOM as referrers (manifests whose `subject` is the release; registries
//! without the referrers API find them through the fallback tag `sha256-<hex>`, an index).
//!
//! A device asking the server for a blob is redirected (307) to the registry, or to the
//! mirror of its `site` label; the agent follows without its credential and verifies the
//! digest and signed size as for any download. A replica missing a blob locally fetches it
//! from the registry (publishing on one replica what was uploaded to another).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// `artifactType` of a release in the registry.
pub const RELEASE_ARTIFACT: &str = "application/vnd.edgecd.release.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The empty JSON config `{}` every artifact manifest points at.
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// Where blobs live and where devices fetch them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Base URL the server pushes to, e.g. `http://127.0.0.1:5000`.
    pub url: String,
    /// Repository for all blobs, e.g. `edgecd/blobs`.
    pub repository: String,
    /// Base URL devices fetch from (default: `url`).
    pub public_url: Option<String>,
    /// Mirror base URL per value of the device label `site`.
    pub mirrors: BTreeMap<String, String>,
}

impl RegistryConfig {
    /// Parses `URL/REPOSITORY` (`http(s)://host[:port]/name[/name…]`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .filter(|(scheme, _)| *scheme == "http" || *scheme == "https")
            .ok_or_else(|| {
                format!("--blob-registry {s:?}: expected http(s)://HOST[:PORT]/REPOSITORY")
            })?;
        let (host, repo) = rest
            .split_once('/')
            .filter(|(h, r)| !h.is_empty() && !r.is_empty())
            .ok_or_else(|| format!("--blob-registry {s:?}: name a repository after the host, e.g. {scheme}://{rest}/edgecd/blobs"))?;
        let repo = repo.trim_end_matches('/');
        if !repo.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        }) {
            return Err(format!(
                "--blob-registry {s:?}: repository {repo:?} must be lowercase letters, digits, '.', '_', '-' and '/'"
            ));
        }
        Ok(Self {
            url: format!("{scheme}://{host}"),
            repository: repo.to_string(),
            public_url: None,
            mirrors: BTreeMap::new(),
        })
    }

    /// Where a device with `site` (its `site` label) downloads `digest`.
    pub fn blob_url(&self, digest: &str, site: Option<&str>) -> String {
        let base = site
            .and_then(|s| self.mirrors.get(s))
            .or(self.public_url.as_ref())
            .unwrap_or(&self.url);
        format!(
            "{}/v2/{}/blobs/{digest}",
            base.trim_end_matches('/'),
            self.repository
        )
    }
}

/// Why the registry could not be used.
#[derive(Debug, thiserror::Error)]
#[error("OCI registry {url}: {what}")]
pub struct RegistryError {
    pub url: String,
    pub what: String,
}

/// A blocking client of the registry (run it on the blocking pool).
#[derive(Debug, Clone)]
pub struct Registry {
    pub config: RegistryConfig,
    agent: ureq::Agent,
}

impl Registry {
    pub fn new(config: RegistryConfig) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self { config, agent }
    }

    fn err(&self, what: impl Into<String>) -> RegistryError {
        RegistryError {
            url: self.config.url.clone(),
            what: what.into(),
        }
    }

    fn repo_url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.config.url, self.config.repository)
    }

    /// Whether the registry holds `digest`.
    pub fn has_blob(&self, digest: &str) -> Result<bool, RegistryError> {
        self.blob_size(digest).map(|s| s.is_some())
    }

    /// The size of blob `digest` in the registry, if it holds it.
    pub fn blob_size(&self, digest: &str) -> Result<Option<u64>, RegistryError> {
        let r = self
            .agent
            .head(self.repo_url(&format!("blobs/{digest}")))
            .call()
            .map_err(|e| {
                self.err(format!(
                    "HEAD blob {digest}: {e} (is the registry running?)"
                ))
            })?;
        match r.status().as_u16() {
            200 => Ok(r
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .or(Some(0))),
            404 => Ok(None),
            s => Err(self.err(format!("HEAD blob {digest}: HTTP {s}"))),
        }
    }

    /// Pushes the file `path` as blob `digest` unless the registry has it.
    pub fn push_blob(&self, digest: &str, path: &Path) -> Result<(), RegistryError> {
        if self.has_blob(digest)? {
            return Ok(());
        }
        // Streamed from the file: a bundle of several GiB never sits in memory.
        let file = std::fs::File::open(path)
            .map_err(|e| self.err(format!("reading {}: {e}", path.display())))?;
        self.push_body(digest, ureq::SendBody::from_owned_reader(file))
    }

    fn push_bytes(&self, digest: &str, bytes: Vec<u8>) -> Result<(), RegistryError> {
        self.push_body(
            digest,
            ureq::SendBody::from_owned_reader(std::io::Cursor::new(bytes)),
        )
    }

    fn push_body(&self, digest: &str, body: ureq::SendBody<'_>) -> Result<(), RegistryError> {
        let r = self
            .agent
            .post(self.repo_url("blobs/uploads/"))
            .send_empty()
            .map_err(|e| self.err(format!("starting the upload of {digest}: {e}")))?;
        if r.status().as_u16() != 202 {
            return Err(self.err(format!(
                "starting the upload of {digest}: HTTP {}",
                r.status()
            )));
        }
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.err("upload answered without a Location"))?;
        let location = if location.starts_with('/') {
            format!("{}{location}", self.config.url)
        } else {
            location.to_string()
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self
            .agent
            .put(format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .send(body)
            .map_err(|e| self.err(format!("uploading {digest}: {e}")))?;
        match r.status().as_u16() {
            201 => Ok(()),
            s => Err(self.err(format!("uploading {digest}: HTTP {s}"))),
        }
    }

    /// Downloads blob `digest` into `dest` (a new file), checking its digest.
    pub fn fetch_blob(&self, digest: &str, dest: &Path) -> Result<u64, RegistryError> {
        let r = self
            .agent
            .get(self.repo_url(&format!("blobs/{digest}")))
            .call()
            .map_err(|e| self.err(format!("GET blob {digest}: {e}")))?;
        if r.status().as_u16() != 200 {
            return Err(self.err(format!("GET blob {digest}: HTTP {}", r.status())));
        }
        // Streamed to `dest` while hashed: nothing of the blob is kept in memory.
        let mut out = std::fs::File::create(dest)
            .map_err(|e| self.err(format!("writing {}: {e}", dest.display())))?;
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut reader = r.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| self.err(format!("GET blob {digest}: {e}")))?;
            if n == 0 {
                break;
            }
            sha2::Digest::update(&mut hasher, &buf[..n]);
            std::io::Write::write_all(&mut out, &buf[..n])
                .map_err(|e| self.err(format!("writing {}: {e}", dest.display())))?;
            total += n as u64;
        }
        out.sync_all()
            .map_err(|e| self.err(format!("writing {}: {e}", dest.display())))?;
        let got = format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher)));
        if got != digest {
            let _ = std::fs::remove_file(dest);
            return Err(self.err(format!("blob {digest} arrived as {got}: refused")));
        }
        Ok(total)
    }

    /// Pushes a manifest (`media_type`) under `reference` (a tag or its digest); its digest.
    fn push_manifest(
        &self,
        reference: Option<&str>,
        media_type: &str,
        body: &serde_json::Value,
    ) -> Result<(String, u64), RegistryError> {
        let bytes = serde_json::to_vec(body).map_err(|e| self.err(e.to_string()))?;
        let digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
        );
        let r = self
            .agent
            .put(self.repo_url(&format!("manifests/{}", reference.unwrap_or(&digest))))
            .header("content-type", media_type)
            .send(&bytes[..])
            .map_err(|e| self.err(format!("PUT manifest: {e}")))?;
        match r.status().as_u16() {
            201 => Ok((digest, bytes.len() as u64)),
            s => Err(self.err(format!(
                "PUT manifest {}: HTTP {s}",
                reference.unwrap_or(&digest)
            ))),
        }
    }

    /// Makes a published release an OCI artifact: the release manifest and bundle as one
    /// artifact tagged `tag`, the signatures and the SBOM as its referrers.
    pub fn push_release(
        &self,
        tag: &str,
        release: (&str, u64),
        bundle: (&str, u64),
        signatures: &[(&str, u64)],
        sbom: Option<(&str, u64)>,
    ) -> Result<String, RegistryError> {
        if !self.has_blob(EMPTY_DIGEST)? {
            self.push_bytes(EMPTY_DIGEST, b"{}".to_vec())?;
        }
        let desc = |media: &str, (digest, size): (&str, u64)| serde_json::json!({"mediaType": media, "digest": digest, "size": size});
        let empty = desc(EMPTY, (EMPTY_DIGEST, 2));
        let (subject_digest, subject_size) = self.push_manifest(
            Some(tag),
            MANIFEST,
            &serde_json::json!({
                "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": RELEASE_ARTIFACT,
                "config": empty,
                "layers": [desc("application/vnd.edgecd.release-manifest.v1+json", release),
                           desc("application/vnd.edgecd.bundle.v1.tar", bundle)],
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }),
        )?;
        let subject = desc(MANIFEST, (&subject_digest, subject_size));
        let mut referrers = vec![];
        let mut refer = |artifact: &str,
                         layers: Vec<serde_json::Value>|
         -> Result<(), RegistryError> {
            let (d, n) = self.push_manifest(
                None,
                MANIFEST,
                &serde_json::json!({
                    "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": artifact,
                    "config": empty, "layers": layers, "subject": subject,
                }),
            )?;
            referrers.push(serde_json::json!({"mediaType": MANIFEST, "digest": d, "size": n, "artifactType": artifact}));
            Ok(())
        };
        refer(
            "application/vnd.dev.sigstore.bundle.v0.3+json",
            signatures
                .iter()
                .map(|s| desc("application/vnd.dev.sigstore.bundle.v0.3+json", *s))
                .collect(),
        )?;
        if let Some(s) = sbom {
            refer(
                "application/vnd.cyclonedx+json",
                vec![desc("application/vnd.cyclonedx+json", s)],
            )?;
        }
        // The referrers tag schema (registries without the referrers API).
        let fallback = subject_digest.replace(':', "-");
        self.push_manifest(
            Some(&fallback),
            INDEX,
            &serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": referrers}),
        )?;
        Ok(subject_digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_url_and_repository_and_picks_the_mirror() {
        let mut c = RegistryConfig::parse("http://127.0.0.1:5000/edgecd/blobs").expect("ok");
        assert_eq!(c.url, "http://127.0.0.1:5000");
        assert_eq!(c.repository, "edgecd/blobs");
        assert_eq!(
            c.blob_url("sha256:ab", None),
            "http://127.0.0.1:5000/v2/edgecd/blobs/blobs/sha256:ab"
        );
        c.mirrors
            .insert("berlin".into(), "http://mirror.berlin:5000/".into());
        assert_eq!(
            c.blob_url("sha256:ab", Some("berlin")),
            "http://mirror.berlin:5000/v2/edgecd/blobs/blobs/sha256:ab"
        );
        assert_eq!(
            c.blob_url("sha256:ab", Some("paris")),
            "http://127.0.0.1:5000/v2/edgecd/blobs/blobs/sha256:ab"
        );
        for bad in [
            "127.0.0.1:5000/x",
            "http://127.0.0.1:5000",
            "http://h/Upper",
            "ftp://h/x",
        ] {
            assert!(RegistryConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_empty_config_digest_is_that_of_braces() {
        let d = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"{}"))
        );
        assert_eq!(d, EMPTY_DIGEST);
    }
}

/// The registry as the server's [`BlobBackend`]: its calls run on the blocking pool, and
/// their errors answer 502 saying what to do.
mod backend {
    use super::Registry;
    use crate::ApiError;
    use crate::blobs::{BlobBackend, BlobStore, Download};
    use edgecd_api::protocol::{BlobRef, ReleaseInfo};

    fn unavailable(e: impl std::fmt::Display) -> ApiError {
        tracing::warn!(error = %e, "blob registry unavailable");
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            format!(
                "{e}: nothing was lost (the blob stays on this server); retry once the registry answers"
            ),
        )
    }

    async fn blocking<T: Send + 'static>(
        r: &Registry,
        f: impl FnOnce(&Registry) -> Result<T, super::RegistryError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let r = r.clone();
        tokio::task::spawn_blocking(move || f(&r))
            .await
            .map_err(ApiError::internal)?
            .map_err(unavailable)
    }

    #[async_trait::async_trait]
    impl BlobBackend for Registry {
        fn describe(&self) -> String {
            format!(
                "OCI registry {}/{}",
                self.config.url, self.config.repository
            )
        }

        /// Pushes a blob this server holds to the registry (after an upload completes).
        async fn stored(&self, local: &BlobStore, digest: &str) -> Result<(), ApiError> {
            let (d, path) = (digest.to_string(), local.path(digest));
            blocking(self, move |r| r.push_blob(&d, &path)).await
        }

        async fn size(&self, digest: &str) -> Result<Option<u64>, ApiError> {
            let d = digest.to_string();
            blocking(self, move |r| r.blob_size(&d)).await
        }

        async fn ensure_local(&self, local: &BlobStore, digests: &[&str]) -> Result<(), ApiError> {
            for digest in digests {
                if local.size(digest).is_some() || !edgecd_api::protocol::valid_digest(digest) {
                    continue;
                }
                let (d, dest) = (digest.to_string(), local.path(digest));
                let tmp = dest.with_extension("fetch");
                let got = blocking(self, move |r| {
                    if !r.has_blob(&d)? {
                        return Ok(false);
                    }
                    r.fetch_blob(&d, &tmp)?;
                    std::fs::rename(&tmp, &dest).map_err(|e| r.err(format!("storing {d}: {e}")))?;
                    Ok(true)
                })
                .await?;
                if got {
                    tracing::info!(%digest, "fetched a blob from the registry");
                }
            }
            Ok(())
        }

        fn download(&self, _: &BlobStore, digest: &str, site: Option<&str>) -> Download {
            Download::Redirect(self.config.blob_url(digest, site))
        }

        /// Pushes a release's blobs and makes it an OCI artifact with its referrers.
        async fn published(&self, local: &BlobStore, info: &ReleaseInfo) -> Result<(), ApiError> {
            let rel = &info.release;
            let mut blobs = vec![
                &rel.manifest,
                &rel.manifest_sig,
                &rel.bundle,
                &rel.bundle_sig,
            ];
            blobs.extend(info.sbom.as_ref());
            let files: Vec<(String, std::path::PathBuf)> = blobs
                .iter()
                .map(|b| (b.digest.clone(), local.path(&b.digest)))
                .collect();
            let d = |b: &BlobRef| (b.digest.clone(), b.size);
            let (m, b, s1, s2) = (
                d(&rel.manifest),
                d(&rel.bundle),
                d(&rel.bundle_sig),
                d(&rel.manifest_sig),
            );
            let sbom = info.sbom.as_ref().map(d);
            let tag = format!("{}-{}", rel.app, rel.version).replace(
                |c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'),
                "_",
            );
            let subject = blocking(self, move |r| {
                for (digest, path) in &files {
                    r.push_blob(digest, path)?;
                }
                r.push_release(
                    &tag,
                    (&m.0, m.1),
                    (&b.0, b.1),
                    &[(&s1.0, s1.1), (&s2.0, s2.1)],
                    sbom.as_ref().map(|s| (s.0.as_str(), s.1)),
                )
            })
            .await?;
            tracing::info!(app = %rel.app, version = %rel.version, %subject, "release pushed to the blob registry");
            Ok(())
        }
    }
}
