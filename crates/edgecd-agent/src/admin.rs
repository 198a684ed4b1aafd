//! A small blocking client for the server's admin API, shared by the `edgecd` CLI
//! (`keys`, `device`, `deploy`, `rollback`, `release publish|list`) and the tests. Blob
//! uploads skip what the server has and resume what it has part of; a private key is
//! refused before it is sent anywhere.

use crate::client::ClientError;
use edgecd_api::protocol::*;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// An admin session: server URL and admin token.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl AdminClient {
    /// `ca_pem`: pin the server's CA for HTTPS. Plain HTTP is refused except to loopback.
    pub fn new(base: &str, token: &str, ca_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("https://") && !crate::client::is_loopback_url(&base) {
            return Err(ClientError::Config(format!(
                "refusing to send the admin token over plain HTTP to {base}: use https:// (plain HTTP only to loopback)"
            )));
        }
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(600)));
        if let Some(pem) = ca_pem {
            let certs = ureq::tls::parse_pem(pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if certs.is_empty() {
                return Err(ClientError::Config(
                    "CA certificate file holds no certificate".into(),
                ));
            }
            cfg = cfg.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                    .build(),
            );
        }
        Ok(Self {
            base,
            token: token.to_string(),
            agent: cfg.build().into(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn finish<T: serde::de::DeserializeOwned>(
        resp: ureq::http::Response<ureq::Body>,
    ) -> Result<T, ClientError> {
        Self::finish_status(resp).map(|(_, t)| t)
    }

    /// The decoded body of a 2xx answer, with its status; the server's message otherwise.
    fn finish_status<T: serde::de::DeserializeOwned>(
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<(u16, T), ClientError> {
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|e| e.error)
                .unwrap_or(text);
            return Err(ClientError::Status { status, message });
        }
        serde_json::from_str(&text)
            .map(|t| (status, t))
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends a request without a body (GET, DELETE) with the admin token.
    fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
    ) -> Result<T, ClientError> {
        let resp = req
            .header("authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Self::finish(resp)
    }

    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(self.agent.get(&self.url(path)))
    }

    pub fn delete<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(self.agent.delete(&self.url(path)))
    }

    pub fn send<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send_status(method, path, body).map(|(_, t)| t)
    }

    /// [`Self::send`], also returning the (2xx) status.
    pub fn send_status<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<(u16, T), ClientError> {
        let json = serde_json::to_string(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let url = self.url(path);
        let auth = format!("Bearer {}", self.token);
        let resp = match method {
            "PATCH" => self
                .agent
                .patch(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(json),
            _ => self
                .agent
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(json),
        }
        .map_err(|e| ClientError::Transport(e.to_string()))?;
        Self::finish_status(resp)
    }

    /// Trusts a release public key; a private key is refused here, before any request.
    pub fn trust_key(&self, pem: &str, name: Option<&str>) -> Result<TrustedKey, ClientError> {
        if let Some(label) = edgecd_sign::private_key_label(pem) {
            return Err(ClientError::Config(format!(
                "this is a private key (`{label}`), not sent: pass the public key file (KEY.pub, `-----BEGIN PUBLIC KEY-----`)"
            )));
        }
        self.send(
            "POST",
            "/api/v1/admin/keys",
            &TrustKeyRequest {
                public_key_pem: pem.to_string(),
                name: name.map(str::to_string),
            },
        )
    }

    pub fn list_keys(&self) -> Result<Vec<TrustedKey>, ClientError> {
        self.get("/api/v1/admin/keys")
    }

    /// What the server has of a blob: `(stored, bytes)` (`bytes` of an unfinished upload
    /// when not stored).
    pub fn blob_state(&self, digest: &str) -> Result<(bool, u64), ClientError> {
        let resp = self
            .agent
            .head(&self.url(&format!("/api/v1/admin/blobs/{digest}")))
            .header("authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let have = resp
            .headers()
            .get(UPLOAD_OFFSET)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        match status {
            200 => Ok((true, have)),
            404 => Ok((false, have)),
            // A HEAD answer has no body to carry the server's message.
            401 => Err(ClientError::Status {
                status,
                message: "invalid or missing admin token".into(),
            }),
            _ => Err(ClientError::Status {
                status,
                message: format!("unexpected answer to HEAD of blob {digest}"),
            }),
        }
    }

    /// Uploads a file as a blob, unless the server has it; an upload the server has part of
    /// continues from there, and a broken-off one is resumed (3 attempts).
    /// `progress(bytes_of_the_file_done)` is called as it streams.
    pub fn upload_blob(
        &self,
        blob: &BlobRef,
        path: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Uploaded, ClientError> {
        let mut sent = 0u64;
        let mut last = None;
        for _ in 0..3 {
            let (stored, have) = self.blob_state(&blob.digest)?;
            if stored {
                if have != blob.size {
                    return Err(ClientError::Protocol(format!(
                        "the server's blob {} has {have} bytes, not {}",
                        blob.digest, blob.size
                    )));
                }
                progress(blob.size);
                return Ok(Uploaded {
                    blob: blob.clone(),
                    sent,
                    skipped: sent == 0,
                });
            }
            let offset = if have < blob.size { have } else { 0 };
            match self.put_blob_from(blob, path, offset, progress, &mut sent) {
                Ok(()) => {
                    return Ok(Uploaded {
                        blob: blob.clone(),
                        sent,
                        skipped: false,
                    });
                }
                Err(e @ (ClientError::Transport(_) | ClientError::Status { status: 409, .. })) => {
                    // Broken off, or another upload of it was still winding up: look again.
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            ClientError::Protocol(format!("blob {} is still incomplete", blob.digest))
        }))
    }

    /// One PUT of `path` from byte `offset`; `sent` counts the bytes of the body sent.
    fn put_blob_from(
        &self,
        blob: &BlobRef,
        path: &Path,
        offset: u64,
        progress: &mut dyn FnMut(u64),
        sent: &mut u64,
    ) -> Result<(), ClientError> {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(path)
            .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
        let mut reader = Progress {
            inner: f.take(blob.size - offset),
            sent: offset,
            counted: sent,
            cb: progress,
        };
        let resp = self
            .agent
            .put(&self.url(&format!("/api/v1/admin/blobs/{}", blob.digest)))
            .header("authorization", &format!("Bearer {}", self.token))
            .header("content-type", "application/octet-stream")
            .header("content-length", &(blob.size - offset).to_string())
            .header(UPLOAD_OFFSET, &offset.to_string())
            .header("upload-length", &blob.size.to_string())
            .send(ureq::SendBody::from_reader(&mut reader))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Self::finish::<serde_json::Value>(resp).map(|_| ())
    }

    /// Asks the server whether it would accept a release, from its small files (which must
    /// be uploaded): signatures, trusted keys, version not taken by another release.
    pub fn check_release(&self, req: &PublishRequest) -> Result<ReleaseCheck, ClientError> {
        self.send("POST", "/api/v1/admin/releases/check", req)
    }

    /// Publishes a release: the info, and `true` if it is new (`false`: this very release
    /// was already published).
    pub fn publish_release(
        &self,
        req: &PublishRequest,
    ) -> Result<(ReleaseInfo, bool), ClientError> {
        self.send_status("POST", "/api/v1/admin/releases", req)
            .map(|(status, info)| (info, status == 201))
    }

    pub fn publish(&self, req: &PublishRequest) -> Result<ReleaseInfo, ClientError> {
        self.send("POST", "/api/v1/admin/releases", req)
    }

    pub fn list_releases(&self) -> Result<Vec<ReleaseInfo>, ClientError> {
        self.get("/api/v1/admin/releases")
    }

    pub fn create_token(
        &self,
        req: &CreateTokenRequest,
    ) -> Result<CreateTokenResponse, ClientError> {
        self.send("POST", "/api/v1/admin/enrollment-tokens", req)
    }

    pub fn list_devices(&self) -> Result<Vec<DeviceInfo>, ClientError> {
        self.get("/api/v1/admin/devices")
    }

    /// Devices whose labels match all of `selector` and, with `state`, in that state (a phase
    /// such as `committed`, or `online`, `offline`, `revoked`); the server filters.
    pub fn list_devices_where(
        &self,
        selector: &std::collections::BTreeMap<String, String>,
        state: Option<&str>,
    ) -> Result<Vec<DeviceInfo>, ClientError> {
        let mut query = Vec::new();
        if !selector.is_empty() {
            let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            query.push(format!("selector={}", urlencode(&sel.join(","))));
        }
        if let Some(s) = state {
            query.push(format!("state={}", urlencode(s)));
        }
        if query.is_empty() {
            return self.list_devices();
        }
        self.get(&format!("/api/v1/admin/devices?{}", query.join("&")))
    }

    /// Deletes a device: its credential stops working and its assignment is dropped.
    pub fn delete_device(&self, id: &str) -> Result<DeviceInfo, ClientError> {
        self.delete(&format!("/api/v1/admin/devices/{id}"))
    }

    pub fn show_device(&self, id: &str) -> Result<DeviceInfo, ClientError> {
        self.get(&format!("/api/v1/admin/devices/{id}"))
    }

    pub fn label_device(
        &self,
        id: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<DeviceInfo, ClientError> {
        self.send(
            "PATCH",
            &format!("/api/v1/admin/devices/{id}/labels"),
            &LabelRequest { labels },
        )
    }

    pub fn revoke_device(&self, id: &str) -> Result<DeviceInfo, ClientError> {
        self.send(
            "POST",
            &format!("/api/v1/admin/devices/{id}/revoke"),
            &serde_json::json!({}),
        )
    }

    pub fn deploy(&self, req: &DeployRequest) -> Result<DeployResponse, ClientError> {
        self.deploy_with(req, false, false)
    }

    /// A deployment: `dry_run` computes without assigning; `app_scope` keeps to devices of
    /// `req.app` (assigned it or running it), as a rollback does.
    pub fn deploy_with(
        &self,
        req: &DeployRequest,
        dry_run: bool,
        app_scope: bool,
    ) -> Result<DeployResponse, ClientError> {
        let scope = if app_scope { "app" } else { "selector" };
        self.send(
            "POST",
            &format!("/api/v1/admin/deployments?dryRun={dry_run}&scope={scope}"),
            req,
        )
    }

    /// Removes blobs no release refers to, untouched for `grace_secs` (default: the server's).
    pub fn gc_blobs(&self, grace_secs: Option<u64>) -> Result<serde_json::Value, ClientError> {
        let q = grace_secs.map_or(String::new(), |g| format!("?graceSecs={g}"));
        self.send(
            "POST",
            &format!("/api/v1/admin/blobs/gc{q}"),
            &serde_json::json!({}),
        )
    }
}

/// The upload protocol's header: bytes the server has / the byte a body starts at.
const UPLOAD_OFFSET: &str = "upload-offset";

/// What [`AdminClient::upload_blob`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub blob: BlobRef,
    /// Body bytes sent (0 when the server had the blob).
    pub sent: u64,
    /// The server had the blob already.
    pub skipped: bool,
}

/// The server's pre-flight answer for a release.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseCheck {
    pub app: String,
    pub version: String,
    pub signed_by: String,
    pub already_published: bool,
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Progress<'a, R> {
    inner: R,
    /// Position in the file.
    sent: u64,
    /// Bytes read for sending, over all attempts.
    counted: &'a mut u64,
    cb: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        *self.counted += n as u64;
        (self.cb)(self.sent);
        Ok(n)
    }
}
