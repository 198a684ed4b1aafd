//! Shared harness of the agent's integration tests: an in-process server on 127.0.0.1, a CI
//! key, release fixtures, agents as separate processes (the real `edgecd-agent` binary),
//! a fault-injecting HTTP proxy, and checks of an installed slot.
#![allow(dead_code)]

use edgecd_agent::admin::AdminClient;
use edgecd_api::profile::{HardwareProfile, RuntimePin};
use edgecd_api::protocol::{CreateTokenRequest, DeployRequest, DeviceInfo, OutcomeKind, Phase};
use edgecd_server::{Config, EmbeddedServer};
use edgecd_sign::SigningKey;
use edgecd_testkit::release::{self as fixtures, ReleaseFiles};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_edgecd-agent");

pub struct Env {
    pub dir: tempfile::TempDir,
    pub server: EmbeddedServer,
    pub url: String,
    pub admin: AdminClient,
    pub ci_key: SigningKey,
    pub ca_pem: Option<Vec<u8>>,
}

/// A CA and a server certificate for 127.0.0.1/localhost signed by it (PEM).
pub struct TestPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn make_pki() -> TestPki {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "edgecd test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    TestPki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl Env {
    pub fn new() -> Self {
        Self::with(None, |_| {})
    }

    pub fn tls(pki: &TestPki) -> Self {
        Self::with(Some(pki), |_| {})
    }

    pub fn with(pki: Option<&TestPki>, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config::new(dir.path().join("server"));
        cfg.listen = "127.0.0.1:0".parse().expect("addr");
        cfg.checkin_interval_secs = 1;
        if let Some(p) = pki {
            let cert = dir.path().join("server.crt");
            let key = dir.path().join("server.key");
            std::fs::write(&cert, &p.cert_pem).expect("cert");
            std::fs::write(&key, &p.key_pem).expect("key");
            cfg.tls = Some((cert, key));
        }
        tweak(&mut cfg);
        let server = EmbeddedServer::start(cfg).expect("server starts");
        let scheme = if pki.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{}", server.addr.port());
        let ca_pem = pki.map(|p| p.ca_pem.clone().into_bytes());
        let admin =
            AdminClient::new(&url, &server.admin_token, ca_pem.as_deref()).expect("admin client");
        let ci_key = SigningKey::generate();
        admin
            .trust_key(&ci_key.verifying_key().to_spki_pem(), Some("ci"))
            .expect("trust CI key");
        Self {
            dir,
            server,
            url,
            admin,
            ci_key,
            ca_pem,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Builds a release (rpi5, edgecd-infer@0.1.0 unless given) signed by the CI key.
    pub fn release(&self, app: &str, version: &str, model_len: usize) -> ReleaseFiles {
        self.release_for(
            app,
            version,
            fixtures::rpi5(),
            fixtures::infer_pin(),
            model_len,
            &self.ci_key,
        )
    }

    pub fn release_for(
        &self,
        app: &str,
        version: &str,
        hw: HardwareProfile,
        rt: RuntimePin,
        model_len: usize,
        key: &SigningKey,
    ) -> ReleaseFiles {
        fixtures::make_release(&self.path("releases"), key, app, version, hw, rt, model_len)
            .expect("release builds")
    }

    /// Uploads and publishes a release.
    pub fn publish(&self, r: &ReleaseFiles) -> Result<edgecd_api::protocol::ReleaseInfo, String> {
        for (b, p) in r.blobs().map_err(|e| e.to_string())? {
            self.admin
                .upload_blob(&b, &p, &mut |_| {})
                .map_err(|e| e.to_string())?;
        }
        self.admin
            .publish(&r.publish_request().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    }

    pub fn token(&self, uses: u32, labels: &[(&str, &str)]) -> String {
        self.admin
            .create_token(&CreateTokenRequest {
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                expires_in_secs: Some(3600),
                max_uses: Some(uses),
            })
            .expect("token")
            .token
    }

    pub fn deploy(&self, app: &str, version: &str, selector: &[(&str, &str)]) -> Vec<String> {
        self.admin
            .deploy(&DeployRequest {
                app: app.into(),
                version: version.into(),
                selector: selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .expect("deploy")
            .assigned
            .into_iter()
            .map(|d| d.device_id)
            .collect()
    }

    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.admin.list_devices().expect("device list")
    }

    pub fn device(&self, id: &str) -> DeviceInfo {
        self.admin.show_device(id).expect("device")
    }

    /// The device enrolled with `data_dir`.
    pub fn device_of(&self, data_dir: &Path) -> Option<DeviceInfo> {
        let id = device_id(data_dir)?;
        self.admin.show_device(&id).ok()
    }

    /// Waits until the device of `data_dir` reports `app@version` committed.
    pub fn wait_running(&self, data_dir: &Path, release: &str, timeout: Duration) -> DeviceInfo {
        wait_for(
            timeout,
            &format!("{} to run {release}", data_dir.display()),
            || {
                let d = self.device_of(data_dir)?;
                let s = d.status.as_ref()?;
                let r = s.running.as_ref()?;
                (format!("{}@{}", r.app, r.version) == release && s.phase == Phase::Committed)
                    .then_some(d)
            },
        )
    }

    /// Waits until the device of `data_dir` reports an outcome of `kind`.
    pub fn wait_outcome(
        &self,
        data_dir: &Path,
        kind: OutcomeKind,
        timeout: Duration,
    ) -> edgecd_api::protocol::Outcome {
        wait_for(
            timeout,
            &format!("{} to report {kind:?}", data_dir.display()),
            || {
                let o = self.device_of(data_dir)?.status?.last_outcome?;
                (o.kind == kind).then_some(o)
            },
        )
    }
}

pub fn device_id(data_dir: &Path) -> Option<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("device.json")).ok()?).ok()?;
    v["deviceId"].as_str().map(str::to_string)
}

pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An agent process.
pub struct AgentProc {
    pub child: Child,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl AgentProc {
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The standard flags of a test agent (rpi5, edgecd-infer@0.1.0, fast check-ins).
pub fn agent_cmd(env_url: &str, data_dir: &Path, token: Option<&str>, extra: &[&str]) -> Command {
    let mut c = Command::new(AGENT);
    c.args(["--server", env_url, "--data-dir"])
        .arg(data_dir)
        .args([
            "--board",
            "rpi5",
            "--runtime",
            "edgecd-infer@0.1.0",
            "--checkin-interval-ms",
            "200",
            "--health-timeout-secs",
            "3",
        ])
        .args(extra)
        .env_remove("EDGECD_SERVER")
        .stdin(Stdio::null());
    if let Some(t) = token {
        c.args(["--enroll-token", t]);
    }
    c
}

pub fn spawn_agent(env: &Env, name: &str, token: Option<&str>, extra: &[&str]) -> AgentProc {
    let data_dir = env.path(name);
    let log = env.path(&format!("{name}.log"));
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log");
    let mut cmd = agent_cmd(&env.url, &data_dir, token, extra);
    if let Some(ca) = &env.ca_pem {
        let p = env.path("ca.pem");
        std::fs::write(&p, ca).expect("ca");
        cmd.arg("--ca-cert").arg(p);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .expect("spawn agent");
    AgentProc {
        child,
        data_dir,
        log,
    }
}

/// Checks that `data_dir/current` points to a complete, intact release and returns the
/// SHA-256 of its manifest (the bundle digest) and its `name@version`.
pub fn check_current(data_dir: &Path) -> Result<(String, String), String> {
    let cur = data_dir.join("current");
    let target = std::fs::read_link(&cur).map_err(|e| format!("current: {e}"))?;
    let dir = data_dir.join(&target);
    check_slot(&dir)
}

pub fn check_slot(dir: &Path) -> Result<(String, String), String> {
    let manifest = std::fs::read(dir.join("manifest.json"))
        .map_err(|e| format!("{}: manifest: {e}", dir.display()))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
    let profile: edgecd_api::profile::Profile = serde_json::from_slice(
        &std::fs::read(dir.join("profile.json")).map_err(|e| format!("profile: {e}"))?,
    )
    .map_err(|e| format!("profile: {e}"))?;
    for m in &profile.models {
        let bytes = std::fs::read(dir.join("models").join(&m.filepath))
            .map_err(|e| format!("model {}: {e}", m.filepath))?;
        let d = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if d != m.digest || bytes.len() as u64 != m.size {
            return Err(format!("model {} is damaged", m.filepath));
        }
    }
    Ok((digest, format!("{}@{}", profile.name, profile.version)))
}

/// How a proxied response is altered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Flip one byte of the body.
    FlipByte,
    /// Cut the body in half and say so in Content-Length.
    Truncate,
    /// Append 1 MiB and say so in Content-Length.
    Oversize,
}

/// A one-request-per-connection HTTP proxy that alters responses to `GET` requests whose
/// path contains `needle`.
pub struct Proxy {
    pub url: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

pub fn proxy(upstream: std::net::SocketAddr, needle: String, fault: Fault) -> Proxy {
    proxy_logged(upstream, needle, Some(fault), Default::default())
}

/// Requests seen by a proxy: `(request line, Range header, response body bytes)`.
pub type ProxyLog = Arc<std::sync::Mutex<Vec<(String, Option<String>, usize)>>>;

/// A proxy that alters responses with `fault` (if any) and records every request in `log`.
pub fn proxy_logged(
    upstream: std::net::SocketAddr,
    needle: String,
    fault: Option<Fault>,
    log: ProxyLog,
) -> Proxy {
    listen(move |c, _| {
        let needle = needle.clone();
        let log = log.clone();
        std::thread::spawn(move || {
            let _ = proxy_one(c, upstream, &needle, fault, &log);
        });
    })
}

/// Listens on a loopback port and hands each connection to `on_conn` (with the proxy's stop
/// flag) until the returned [`Proxy`] is dropped.
fn listen(on_conn: impl Fn(TcpStream, &Arc<AtomicBool>) + Send + 'static) -> Proxy {
    let l = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            if s2.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(c) = conn {
                on_conn(c, &s2);
            }
        }
    });
    Proxy { url, stop }
}

fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    r.read_line(&mut first)?;
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l)?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((first.trim_end().to_string(), headers))
}

fn proxy_one(
    client: TcpStream,
    upstream: std::net::SocketAddr,
    needle: &str,
    fault: Option<Fault>,
    log: &ProxyLog,
) -> std::io::Result<()> {
    let mut cr = BufReader::new(client.try_clone()?);
    let (first, headers) = read_head(&mut cr)?;
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    cr.read_exact(&mut body)?;
    let mut up = TcpStream::connect(upstream)?;
    let mut req = format!("{first}\r\n");
    for (k, v) in headers.iter().filter(|(k, _)| k != "connection") {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    up.write_all(&body)?;
    let mut ur = BufReader::new(up);
    let (status, rh) = read_head(&mut ur)?;
    let mut rbody = Vec::new();
    ur.read_to_end(&mut rbody)?;
    let range = headers
        .iter()
        .find(|(k, _)| k == "range")
        .map(|(_, v)| v.clone());
    if let Ok(mut l) = log.lock() {
        l.push((first.clone(), range, rbody.len()));
    }
    let alter = fault.is_some()
        && first.starts_with("GET ")
        && first.contains(needle)
        && (status.contains(" 200") || status.contains(" 206"));
    if let Some(fault) = fault.filter(|_| alter) {
        match fault {
            Fault::FlipByte => {
                let mid = rbody.len() / 2;
                if let Some(b) = rbody.get_mut(mid) {
                    *b ^= 0xff;
                }
            }
            Fault::Truncate => rbody.truncate(rbody.len() / 2),
            Fault::Oversize => rbody.extend(std::iter::repeat_n(0u8, 1 << 20)),
        }
    }
    let mut out = client;
    let mut resp = format!("{status}\r\n");
    for (k, v) in rh
        .iter()
        .filter(|(k, _)| k != "connection" && k != "content-length" && k != "content-range")
    {
        resp.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some((_, cr)) = rh.iter().find(|(k, _)| k == "content-range") {
        // Keep the range start; report the altered total when the body was altered.
        let fixed = if alter && fault != Some(Fault::FlipByte) {
            let start: u64 = cr
                .trim_start_matches("bytes ")
                .split('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let end = start + rbody.len() as u64 - 1;
            format!("bytes {start}-{end}/{}", end + 1)
        } else {
            cr.clone()
        };
        resp.push_str(&format!("content-range: {fixed}\r\n"));
    }
    resp.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        rbody.len()
    ));
    out.write_all(resp.as_bytes())?;
    out.write_all(&rbody)?;
    out.flush()
}

/// Labels as a map.
pub fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
    l.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An agent in this process (its storage injectable), configured from `edgecd-agent` flags:
/// rpi5, edgecd-infer@0.1.0, fast check-ins, plus `extra`.
pub fn inproc_agent(
    env: &Env,
    name: &str,
    token: Option<&str>,
    extra: &[&str],
    storage: Arc<dyn edgecd_agent::client::Storage>,
) -> edgecd_agent::Agent {
    use clap::Parser as _;
    let data_dir = env.path(name);
    let mut args: Vec<String> = [
        "edgecd-agent",
        "--server",
        &env.url,
        "--data-dir",
        &data_dir.display().to_string(),
        "--board",
        "rpi5",
        "--runtime",
        "edgecd-infer@0.1.0",
        "--checkin-interval-ms",
        "100",
        "--health-timeout-secs",
        "3",
        "--activate-timeout-secs",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(t) = token {
        args.extend(["--enroll-token".to_string(), t.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let cfg = edgecd_agent::cli::Args::try_parse_from(args)
        .expect("agent flags")
        .into_config()
        .expect("config");
    let mut agent = edgecd_agent::Agent::new(
        cfg,
        Arc::new(edgecd_agent::install::EdgecdBundleInstaller),
        storage,
    )
    .expect("agent");
    agent.start().expect("start");
    agent
}

/// Rewrites a proxied exchange: `(request line, request body, response status line,
/// response headers, response body)`; headers are lower-case `(name, value)` pairs.
pub type Rewrite = Arc<RewriteFn>;
pub type RewriteFn =
    dyn Fn(&str, &mut Vec<u8>, &mut String, &mut Vec<(String, String)>, &mut Vec<u8>) + Send + Sync;
/// Rewrites a request body before it goes upstream (sees the request line).
pub type RequestRewrite = Arc<RequestRewriteFn>;
pub type RequestRewriteFn = dyn Fn(&str, &mut Vec<u8>) + Send + Sync;

/// A one-request-per-connection HTTP proxy that lets `rewrite` change each exchange
/// (request body before it goes upstream is passed as read; the rewrite sees it after the
/// response came back, and may change the response).
pub fn rewriting_proxy(
    upstream: std::net::SocketAddr,
    request_rewrite: RequestRewrite,
    rewrite: Rewrite,
) -> Proxy {
    listen(move |c, _| {
        let (rq, rw) = (request_rewrite.clone(), rewrite.clone());
        std::thread::spawn(move || {
            let _ = rewrite_one(c, upstream, &*rq, &*rw);
        });
    })
}

fn rewrite_one(
    client: TcpStream,
    upstream: std::net::SocketAddr,
    request_rewrite: &RequestRewriteFn,
    rewrite: &RewriteFn,
) -> std::io::Result<()> {
    let mut cr = BufReader::new(client.try_clone()?);
    let (first, headers) = read_head(&mut cr)?;
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    cr.read_exact(&mut body)?;
    request_rewrite(&first, &mut body);
    let mut up = TcpStream::connect(upstream)?;
    let mut req = format!("{first}\r\n");
    for (k, v) in headers
        .iter()
        .filter(|(k, _)| k != "connection" && k != "content-length")
    {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    up.write_all(req.as_bytes())?;
    up.write_all(&body)?;
    let mut ur = BufReader::new(up);
    let (mut status, mut rh) = read_head(&mut ur)?;
    let mut rbody = Vec::new();
    ur.read_to_end(&mut rbody)?;
    rewrite(&first, &mut body, &mut status, &mut rh, &mut rbody);
    let mut out = client;
    let mut resp = format!("{status}\r\n");
    for (k, v) in rh
        .iter()
        .filter(|(k, _)| k != "connection" && k != "content-length")
    {
        resp.push_str(&format!("{k}: {v}\r\n"));
    }
    resp.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        rbody.len()
    ));
    out.write_all(resp.as_bytes())?;
    out.write_all(&rbody)?;
    out.flush()
}

/// How a [`slow_link`] behaves.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Bytes per second from the server to the device.
    pub bytes_per_sec: u64,
    /// After this many bytes on one connection, stop sending (keep it open) — a stall.
    pub stall_after: Option<u64>,
}

/// A TCP relay to `upstream` whose server → device direction is throttled (and may stall):
/// a slow or flaky link. Connections are independent (each gets the full rate).
pub fn slow_link(upstream: std::net::SocketAddr, link: Link) -> Proxy {
    listen(move |down, s2| {
        let Ok(up) = TcpStream::connect(upstream) else {
            return;
        };
        let (Ok(mut down_r), Ok(mut up_w)) = (down.try_clone(), up.try_clone()) else {
            return;
        };
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut down_r, &mut up_w);
            let _ = up_w.shutdown(std::net::Shutdown::Write);
        });
        let stop = s2.clone();
        std::thread::spawn(move || {
            let (mut up_r, mut down_w) = (up, down);
            let mut buf = vec![0u8; 16 * 1024];
            let mut sent = 0u64;
            loop {
                if link.stall_after.is_some_and(|s| sent >= s) {
                    // Stalled: hold the connection open, send nothing.
                    while !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    return;
                }
                let cap = link
                    .stall_after
                    .map_or(buf.len(), |s| buf.len().min((s - sent) as usize));
                let n = match up_r.read(&mut buf[..cap]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if down_w.write_all(&buf[..n]).is_err() {
                    break;
                }
                sent += n as u64;
                // Each chunk takes its time on the wire (no credit saved up while idle).
                std::thread::sleep(Duration::from_secs_f64(
                    n as f64 / link.bytes_per_sec as f64,
                ));
            }
            let _ = down_w.shutdown(std::net::Shutdown::Write);
        });
    })
}

/// The agent's persisted phase (from `state.json`).
pub fn local_phase(data_dir: &Path) -> Option<Phase> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("state.json")).ok()?).ok()?;
    serde_json::from_value(v["phase"].clone()).ok()
}

/// Files in the agent's staging directory.
pub fn staged_files(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("staging"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
