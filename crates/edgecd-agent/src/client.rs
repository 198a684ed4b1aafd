//! The agent's HTTP client (blocking ureq + rustls, no async runtime): enroll, check in,
//! and capped, resumable, bandwidth-limited blob downloads.
//!
//! Downloads have no total time budget (a large model on a slow link may take hours): a
//! download fails only when no byte arrives for the stall timeout, and is then resumed
//! with `Range` from what is on disk. Every request names the agent's protocol version.
//!
//! Credentials go only over HTTPS, or over plain HTTP to a loopback address. With
//! `--ca-cert` the server must present a certificate chaining to that CA (pinned).

use edgecd_api::protocol::{
    BlobRef, CheckinRequest, CheckinResponse, DeviceReport, EnrollRequest, EnrollResponse,
    ErrorBody, NEXT_CHECKIN_HEADER, PROTOCOL_HEADER, PROTOCOL_VERSION, TIMESTAMP_HEADER,
    TIMESTAMP_SIGNATURE_HEADER,
};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("server unreachable or connection failed: {0}")]
    Transport(String),
    #[error("server answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("invalid response from server: {0}")]
    Protocol(String),
    #[error("configuration error: {0}")]
    Config(String),
}

/// Errors downloading a blob.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server offered or sent bytes that contradict the signed size: permanent.
    #[error("{0}")]
    Refused(String),
    /// Writing the staging file failed (e.g. the disk is full).
    #[error("writing {path}: {source}")]
    Storage {
        path: String,
        source: std::io::Error,
    },
    /// Network trouble (including a stall: no byte for the stall timeout): resume later.
    /// `progressed` says whether any byte arrived before it.
    #[error("{reason}")]
    Transient { reason: String, progressed: bool },
    /// The caller asked to stop (a newer assignment supersedes this download). What was
    /// downloaded stays on disk.
    #[error("download interrupted: {0}")]
    Interrupted(String),
}

fn transient(reason: String) -> DownloadError {
    DownloadError::Transient {
        reason,
        progressed: false,
    }
}

/// How a download runs.
#[derive(Debug, Clone, Copy)]
pub struct DownloadOptions {
    /// Bandwidth cap in KiB/s.
    pub max_kbps: Option<u64>,
    /// Give up (to resume later) when no byte arrives for this long.
    pub stall_timeout: Duration,
}

/// Opens the staging file a download appends to. Tests inject faults (a disk that fills up).
pub trait Storage: Send + Sync {
    fn open_append(&self, path: &std::path::Path) -> std::io::Result<Box<dyn Write + Send>>;

    /// Bytes free for an unprivileged writer on the file system holding `dir` (`None`:
    /// unknown).
    fn free_bytes(&self, dir: &std::path::Path) -> Option<u64> {
        free_bytes(dir)
    }
}

/// `statvfs(2)`: blocks available to unprivileged users × fragment size.
#[cfg(unix)]
pub fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(not(unix))]
pub fn free_bytes(_dir: &std::path::Path) -> Option<u64> {
    None
}

/// Plain files.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileStorage;

impl Storage for FileStorage {
    fn open_append(&self, path: &std::path::Path) -> std::io::Result<Box<dyn Write + Send>> {
        Ok(Box::new(SyncOnDrop(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        )))
    }
}

/// A file that is fsynced when the writer is flushed.
struct SyncOnDrop(std::fs::File);

impl Write for SyncOnDrop {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.sync_data()
    }
}

/// Whether `url`'s host is a loopback address (plain HTTP is allowed only there).
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or("");
    let host = if let Some(h) = hostport.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A client for one server.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

/// The signed timestamp of a check-in answer: `(text, base64 signature)` as sent.
pub type StampHeaders = (String, String);

/// The answer to a check-in.
#[derive(Debug)]
pub enum Checkin {
    /// `304`: the assignment with this ETag is still current.
    NotModified { next_secs: u64 },
    New {
        response: CheckinResponse,
        etag: Option<String>,
    },
}

impl Client {
    /// `ca_pem`: pin the server's CA (HTTPS). Plain `http://` is refused unless loopback.
    pub fn new(base: &str, ca_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            return Err(ClientError::Config(format!(
                "server URL {base:?} must start with https:// or http://"
            )));
        }
        if !https && !is_loopback_url(&base) {
            return Err(ClientError::Config(format!(
                "refusing to send credentials over plain HTTP to {base}: use https:// (plain HTTP is only allowed to loopback addresses)"
            )));
        }
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .timeout_recv_body(Some(Duration::from_secs(60)))
            .user_agent(format!("edgecd-agent/{}", env!("CARGO_PKG_VERSION")));
        // (Downloads replace the body budget by a per-read stall timeout, see `download`.)
        if let Some(pem) = ca_pem {
            let certs = ureq::tls::parse_pem(pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Config(format!("CA certificate: {e}")))?;
            if certs.is_empty() {
                return Err(ClientError::Config(
                    "CA certificate file holds no certificate".into(),
                ));
            }
            let tls = ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                .build();
            cfg = cfg.tls_config(tls);
        }
        Ok(Self {
            base,
            agent: cfg.build().into(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn error_of(resp: &mut ureq::http::Response<ureq::Body>) -> ClientError {
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|e| e.error)
            .unwrap_or(text);
        ClientError::Status { status, message }
    }

    fn json<T: serde::de::DeserializeOwned>(
        resp: &mut ureq::http::Response<ureq::Body>,
    ) -> Result<T, ClientError> {
        let text = resp
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_string()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        let body = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut resp = self
            .agent
            .post(&self.url("/api/v1/devices/enroll"))
            .header("content-type", "application/json")
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
            .send(body)
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(Self::error_of(&mut resp));
        }
        Self::json(&mut resp)
    }

    pub fn checkin(
        &self,
        device_id: &str,
        credential: &str,
        req: &CheckinRequest,
        etag: Option<&str>,
    ) -> Result<Checkin, ClientError> {
        self.checkin_stamped(device_id, credential, req, etag)
            .map(|(c, _)| c)
    }

    /// [`Client::checkin`], also returning the answer's signed timestamp headers (if any).
    pub fn checkin_stamped(
        &self,
        device_id: &str,
        credential: &str,
        req: &CheckinRequest,
        etag: Option<&str>,
    ) -> Result<(Checkin, Option<StampHeaders>), ClientError> {
        let body = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut r = self
            .agent
            .post(&self.url(&format!("/api/v1/devices/{device_id}/checkin")))
            .header("authorization", &format!("Bearer {credential}"))
            .header("content-type", "application/json")
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION);
        if let Some(t) = etag {
            r = r.header("if-none-match", t);
        }
        let mut resp = r
            .send(body)
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let stamp = header(TIMESTAMP_HEADER).zip(header(TIMESTAMP_SIGNATURE_HEADER));
        if resp.status().as_u16() == 304 {
            let next_secs = resp
                .headers()
                .get(NEXT_CHECKIN_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(60);
            return Ok((Checkin::NotModified { next_secs }, stamp));
        }
        if !resp.status().is_success() {
            return Err(Self::error_of(&mut resp));
        }
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((
            Checkin::New {
                response: Self::json(&mut resp)?,
                etag,
            },
            stamp,
        ))
    }

    /// `POST /api/v1/devices/{id}/logs`: the answer to an operator's logs request.
    pub fn upload_report(
        &self,
        device_id: &str,
        credential: &str,
        report: &DeviceReport,
    ) -> Result<(), ClientError> {
        let body =
            serde_json::to_string(report).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut resp = self
            .agent
            .post(&self.url(&format!("/api/v1/devices/{device_id}/logs")))
            .header("authorization", &format!("Bearer {credential}"))
            .header("content-type", "application/json")
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
            .send(body)
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(Self::error_of(&mut resp));
        }
        Ok(())
    }

    /// Downloads `blob` into `part` (appending, resuming from its current length) until it
    /// holds exactly `blob.size` bytes. Never accepts more bytes than the signed size; a
    /// server that offers a different length is refused. `opts.max_kbps` caps the rate; no
    /// byte for `opts.stall_timeout` is a transient error (resume later). `received` is told
    /// the size of every chunk written to `part`; when it returns `false` the download stops
    /// with [`DownloadError::Interrupted`] (what was written stays).
    pub fn download(
        &self,
        credential: &str,
        blob: &BlobRef,
        part: &std::path::Path,
        storage: &dyn Storage,
        opts: DownloadOptions,
        received: &mut dyn FnMut(u64) -> bool,
    ) -> Result<(), DownloadError> {
        let max_kbps = opts.max_kbps;
        let size = blob.size;
        let mut have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if have > size {
            std::fs::remove_file(part).map_err(|e| DownloadError::Storage {
                path: part.display().to_string(),
                source: e,
            })?;
            have = 0;
        }
        if have == size {
            return Ok(());
        }
        // One GET of the blob at `url` from byte `have` on, with the device credential only
        // for the server itself.
        let get = |url: &str, credential: Option<&str>| {
            let mut req = self.agent.get(url);
            if let Some(c) = credential {
                req = req
                    .header("authorization", &format!("Bearer {c}"))
                    .header(PROTOCOL_HEADER, PROTOCOL_VERSION);
            }
            if have > 0 {
                req = req.header("range", &format!("bytes={have}-"));
            }
            req.config()
                .timeout_recv_body(None)
                .timeout_per_read(Some(opts.stall_timeout))
                .build()
                .call()
                .map_err(|e| transient(format!("downloading {} from {url}: {e}", blob.digest)))
        };
        let mut resp = get(
            &self.url(&format!("/api/v1/blobs/{}", blob.digest)),
            Some(credential),
        )?;
        // A server whose blobs live in an OCI registry (or a site mirror) answers with its
        // location: follow one redirect, without the device credential (the digest and the
        // signed size are checked as for any download).
        if matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(|l| {
                    if l.starts_with('/') {
                        format!("{}{l}", self.base)
                    } else {
                        l.to_string()
                    }
                })
                .ok_or_else(|| {
                    transient(format!("redirect without a location for {}", blob.digest))
                })?;
            resp = get(&location, None)?;
        }
        let status = resp.status().as_u16();
        let content_length = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match status {
            206 => {
                let cr = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let (start, total) = parse_content_range(&cr).ok_or_else(|| {
                    transient(format!("bad Content-Range {cr:?} for {}", blob.digest))
                })?;
                if total != size {
                    return Err(DownloadError::Refused(format!(
                        "blob {} is {total} bytes on the server, but the signed size is {size}",
                        blob.digest
                    )));
                }
                if start != have {
                    return Err(transient(format!(
                        "server resumed at {start}, expected {have}"
                    )));
                }
            }
            200 => {
                if let Some(n) = content_length
                    && n != size
                {
                    return Err(DownloadError::Refused(format!(
                        "blob {} is {n} bytes on the server, but the signed size is {size}",
                        blob.digest
                    )));
                }
                if have > 0 {
                    std::fs::remove_file(part).map_err(|e| DownloadError::Storage {
                        path: part.display().to_string(),
                        source: e,
                    })?;
                    have = 0;
                }
            }
            416 => {
                return Err(DownloadError::Refused(format!(
                    "blob {} ends before its signed size {size} (server has fewer than {} bytes)",
                    blob.digest,
                    have + 1
                )));
            }
            _ => return Err(transient(Self::error_of(&mut resp).to_string())),
        }
        let storage_err = |e: std::io::Error| DownloadError::Storage {
            path: part.display().to_string(),
            source: e,
        };
        let mut out = storage.open_append(part).map_err(storage_err)?;
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 64 * 1024];
        let started = Instant::now();
        let mut got = 0u64;
        let mut want = size - have;
        let res = (|| {
            while want > 0 {
                let cap = buf.len().min(usize::try_from(want).unwrap_or(usize::MAX));
                let n = match body.read(&mut buf[..cap]) {
                    Ok(0) => {
                        return Err(DownloadError::Transient {
                            reason: format!(
                                "connection ended after {} of {size} bytes of {}",
                                size - want,
                                blob.digest
                            ),
                            progressed: got > 0,
                        });
                    }
                    Ok(n) => n,
                    Err(e) => {
                        let stalled = e.kind() == std::io::ErrorKind::TimedOut
                            || e.to_string().to_ascii_lowercase().contains("timeout");
                        let reason = if stalled {
                            format!(
                                "no data for {}s after {} of {size} bytes of {} (stalled): {e}",
                                opts.stall_timeout.as_secs(),
                                size - want,
                                blob.digest
                            )
                        } else {
                            format!("reading {}: {e}", blob.digest)
                        };
                        return Err(DownloadError::Transient {
                            reason,
                            progressed: got > 0,
                        });
                    }
                };
                out.write_all(&buf[..n]).map_err(storage_err)?;
                want -= n as u64;
                got += n as u64;
                if !received(n as u64) {
                    return Err(DownloadError::Interrupted(format!(
                        "after {} of {size} bytes of {}",
                        size - want,
                        blob.digest
                    )));
                }
                if let Some(kbps) = max_kbps.filter(|k| *k > 0) {
                    let due = Duration::from_secs_f64(got as f64 / (kbps as f64 * 1024.0));
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        // Flush before sleeping so progress survives a kill.
                        out.flush().map_err(storage_err)?;
                        std::thread::sleep(wait);
                    }
                }
            }
            Ok(())
        })();
        out.flush().map_err(storage_err)?;
        res?;
        // Endless data: anything past the signed size is refused.
        let mut one = [0u8; 1];
        match body.read(&mut one) {
            Ok(0) | Err(_) => Ok(()),
            Ok(_) => Err(DownloadError::Refused(format!(
                "blob {} is longer than its signed size {size} (endless data?)",
                blob.digest
            ))),
        }
    }
}

/// Parses `bytes START-END/TOTAL` into `(START, TOTAL)`.
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.parse().ok()?, total.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_url("http://127.0.0.1:8080"));
        assert!(is_loopback_url("http://localhost:1/x"));
        assert!(is_loopback_url("http://[::1]:80/"));
        assert!(!is_loopback_url("http://10.0.0.1:8080"));
        assert!(!is_loopback_url("http://example.com"));
        assert!(Client::new("http://192.168.1.10:8080", None).is_err());
        assert!(Client::new("http://127.0.0.1:8080", None).is_ok());
        assert!(Client::new("ftp://127.0.0.1", None).is_err());
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 10-99/100"), Some((10, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
    }
}
