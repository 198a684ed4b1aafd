//! A small blocking client for the server's admin API, shared by the `edgecd` CLI
//! (`keys`, `device`, `deploy`, `release publish|list`) and the tests.

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
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<T, ClientError> {
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
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol(e.to_string()))
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
        Self::finish(resp)
    }

    pub fn trust_key(&self, pem: &str, name: Option<&str>) -> Result<TrustedKey, ClientError> {
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

    /// Uploads a file as a blob; `progress(bytes_sent)` is called as it streams.
    pub fn upload_blob(
        &self,
        blob: &BlobRef,
        path: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<BlobRef, ClientError> {
        let f = std::fs::File::open(path)
            .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
        let mut reader = Progress {
            inner: f,
            sent: 0,
            cb: progress,
        };
        let resp = self
            .agent
            .put(&self.url(&format!("/api/v1/admin/blobs/{}", blob.digest)))
            .header("authorization", &format!("Bearer {}", self.token))
            .header("content-type", "application/octet-stream")
            .header("content-length", &blob.size.to_string())
            .send(ureq::SendBody::from_reader(&mut reader))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Self::finish(resp)
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
        self.send("POST", "/api/v1/admin/deployments", req)
    }
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
    sent: u64,
    cb: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        (self.cb)(self.sent);
        Ok(n)
    }
}
