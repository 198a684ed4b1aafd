//! Refusals (design §3): each is reported to the server with a clear reason, and nothing is
//! installed. Also: a disk that fills up mid-download, and an unreachable server.
#![cfg(target_arch = "x86_64")]

mod common;
use common::*;
use edgecd_api::protocol::{OutcomeKind, Phase};
use edgecd_testkit::release::{self as fixtures, ReleaseFiles};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const APP: &str = "receipt-parser";

/// No slot holds `release` (`name@version`).
fn not_installed(data_dir: &Path, release: &str) {
    for s in ["a", "b"] {
        if let Ok((_, name)) = check_slot(&data_dir.join("slots").join(s)) {
            assert_ne!(name, release, "slot {s} must not hold the refused release");
        }
    }
}

/// An agent (optionally through `server_url`) running 1.0.0.
fn running_v1(env: &Env, name: &str, server_url: Option<&str>) -> (AgentProc, ReleaseFiles) {
    let r1 = env.release(APP, "1.0.0", 32 * 1024);
    env.publish(&r1).expect("publish");
    let token = env.token(1, &[("fleet", name)]);
    let a = match server_url {
        None => spawn_agent(env, name, Some(&token), &[]),
        Some(url) => {
            let dir = env.path(name);
            let log = env.path(&format!("{name}.log"));
            let child = agent_cmd(url, &dir, Some(&token), &[])
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("spawn");
            AgentProc {
                child,
                data_dir: dir,
                log,
            }
        }
    };
    wait_for(T, "enrollment", || device_id(&a.data_dir));
    env.deploy(APP, "1.0.0", &[("fleet", name)]);
    env.wait_running(&a.data_dir, "receipt-parser@1.0.0", T);
    (a, r1)
}

fn expect_refusal(env: &Env, a: &AgentProc, release: &str, needle: &str) {
    let o = env.wait_outcome(&a.data_dir, OutcomeKind::Refused, T);
    assert!(
        o.reason.contains(needle),
        "reason {:?} should mention {needle:?}",
        o.reason
    );
    let d = env.device_of(&a.data_dir).expect("device");
    let s = d.status.expect("status");
    assert!(
        matches!(s.phase, Phase::Committed | Phase::Idle),
        "{:?}",
        s.phase
    );
    not_installed(&a.data_dir, release);
}

#[test]
fn untrusted_release_key_on_device_is_refused() {
    let env = Env::new();
    let other = edgecd_sign::SigningKey::generate();
    let pubp = env.path("other.pub");
    std::fs::write(&pubp, other.verifying_key().to_spki_pem()).expect("pub");
    let r1 = env.release(APP, "1.0.0", 16 * 1024);
    env.publish(&r1).expect("publish");
    let token = env.token(1, &[]);
    let a = spawn_agent(
        &env,
        "a",
        Some(&token),
        &["--release-key", pubp.to_str().expect("utf8")],
    );
    wait_for(T, "enrollment", || device_id(&a.data_dir));
    env.deploy(APP, "1.0.0", &[]);
    expect_refusal(
        &env,
        &a,
        "receipt-parser@1.0.0",
        "not a trusted release key",
    );
    assert!(
        std::fs::symlink_metadata(a.data_dir.join("current")).is_err(),
        "nothing may be installed"
    );
}

fn faulty_proxy_case(fault: Fault, needle: &str) {
    let env = Env::new();
    let r2 = env.release(APP, "2.0.0", 256 * 1024);
    let bundle_digest = fixtures::blob_ref(&r2.bundle).expect("digest").digest;
    let p = proxy(env.server.addr, bundle_digest, fault);
    let (a, r1) = running_v1(&env, "a", Some(&p.url));
    env.publish(&r2).expect("publish 2.0.0");
    env.deploy(APP, "2.0.0", &[]);
    expect_refusal(&env, &a, "receipt-parser@2.0.0", needle);
    let (digest, _) = check_current(&a.data_dir).expect("current intact");
    assert_eq!(digest, r1.bundle_digest, "still on 1.0.0");
    let staging: Vec<_> = std::fs::read_dir(a.data_dir.join("staging"))
        .expect("staging")
        .flatten()
        .collect();
    assert!(
        staging.iter().all(|e| !e
            .file_name()
            .to_string_lossy()
            .contains(&fixtures::blob_ref(&r2.bundle).expect("d").digest[7..])),
        "bad download removed"
    );
}

#[test]
fn tampered_blob_is_refused() {
    faulty_proxy_case(Fault::FlipByte, "digest mismatch");
}

#[test]
fn truncated_download_is_refused() {
    faulty_proxy_case(Fault::Truncate, "signed size");
}

#[test]
fn oversize_blob_is_refused() {
    faulty_proxy_case(Fault::Oversize, "signed size");
}

#[test]
fn wrong_board_is_refused() {
    let env = Env::new();
    let (a, r1) = running_v1(&env, "a", None);
    let hw = edgecd_api::profile::HardwareProfile {
        board: "jetson-orin".into(),
        accelerator: None,
        min_ram_mb: None,
    };
    let r2 = env.release_for(
        APP,
        "2.0.0",
        hw,
        fixtures::infer_pin(),
        16 * 1024,
        &env.ci_key,
    );
    let info = env.publish(&r2).expect("publish");
    force_incompatible(&env, &a, info, "board");
    expect_refusal(&env, &a, "receipt-parser@2.0.0", "board");
    assert_eq!(
        check_current(&a.data_dir).expect("current").0,
        r1.bundle_digest
    );
}

#[test]
fn wrong_runtime_is_refused() {
    let env = Env::new();
    let (a, r1) = running_v1(&env, "a", None);
    let rt = edgecd_api::profile::RuntimePin {
        name: "edgecd-infer".into(),
        version: "9.9.9".into(),
    };
    let r2 = env.release_for(APP, "2.0.0", fixtures::rpi5(), rt, 16 * 1024, &env.ci_key);
    let info = env.publish(&r2).expect("publish");
    force_incompatible(&env, &a, info, "runtime");
    expect_refusal(&env, &a, "receipt-parser@2.0.0", "runtime");
    assert_eq!(
        check_current(&a.data_dir).expect("current").0,
        r1.bundle_digest
    );
}

/// The server does not assign a release a device cannot run (deploy skips it, naming
/// `needle`), so a validly signed assignment of it is forced, to check the agent's own check.
fn force_incompatible(
    env: &Env,
    a: &AgentProc,
    info: edgecd_api::protocol::ReleaseInfo,
    needle: &str,
) {
    let err = env
        .admin
        .deploy(&edgecd_api::protocol::DeployRequest {
            app: APP.into(),
            version: info.release.version.clone(),
            selector: Default::default(),
        })
        .expect_err("the server refuses to assign an incompatible release");
    assert!(err.to_string().contains(needle), "{err}");
    let id = device_id(&a.data_dir).expect("id");
    let version = env.device(&id).assignment_version.expect("assigned") + 1;
    force(
        env,
        &id,
        version,
        info.release,
        edgecd_server::util::now() + 3600,
    );
}

fn force(
    env: &Env,
    id: &str,
    version: u64,
    release: edgecd_api::protocol::ReleaseRef,
    expires: u64,
) {
    let st = &env.server.state;
    let now = edgecd_server::util::now();
    let row = edgecd_server::assign::sign_assignment_at(st, id, version, release, now, expires)
        .expect("sign");
    env.server
        .block_on(st.store.force_assignment(&row))
        .expect("store");
}

#[test]
fn lower_assignment_version_is_refused() {
    // A man in the middle keeps the first signed assignment (1.0.0, v1) and later serves it
    // again in place of the server's answers: a rollback attack with a validly signed,
    // older assignment. (A server whose own counter is behind resyncs instead: see
    // delivery.rs.)
    let env = Env::new();
    let replay = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kept = std::sync::Arc::new(std::sync::Mutex::new(None::<serde_json::Value>));
    let (r2, k2) = (replay.clone(), kept.clone());
    let proxy = rewriting_proxy(
        env.server.addr,
        std::sync::Arc::new(|_, _| {}),
        std::sync::Arc::new(move |first, _req, status, headers, body| {
            if !first.contains("/checkin") {
                return;
            }
            let mut kept = k2.lock().expect("kept");
            if r2.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(a) = kept.clone() {
                    *status = "HTTP/1.1 200 OK".into();
                    headers.retain(|(k, _)| k != "etag");
                    *body = serde_json::to_vec(&serde_json::json!({
                        "assignment": a, "nextCheckinSecs": 1
                    }))
                    .expect("json");
                }
            } else if kept.is_none()
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
                && v["assignment"].is_object()
            {
                *kept = Some(v["assignment"].clone());
            }
        }),
    );
    let (a, _r1) = running_v1(&env, "a", Some(&proxy.url));
    let r2 = env.release(APP, "2.0.0", 16 * 1024);
    env.publish(&r2).expect("publish");
    env.deploy(APP, "2.0.0", &[]);
    env.wait_running(&a.data_dir, "receipt-parser@2.0.0", T);
    replay.store(true, std::sync::atomic::Ordering::SeqCst);
    let o = env.wait_outcome(&a.data_dir, OutcomeKind::Refused, T);
    assert!(
        o.reason.contains("lower than the highest accepted version"),
        "{}",
        o.reason
    );
    assert_eq!(
        check_current(&a.data_dir).expect("current").0,
        r2.bundle_digest
    );
    assert_eq!(
        check_current(&a.data_dir).expect("current").1,
        "receipt-parser@2.0.0"
    );
}

#[test]
fn expired_assignment_is_refused() {
    let env = Env::with(None, |c| c.refresh_assignments = false);
    let (a, r1) = running_v1(&env, "a", None);
    let r2 = env.release(APP, "2.0.0", 16 * 1024);
    let info = env.publish(&r2).expect("publish");
    let id = device_id(&a.data_dir).expect("id");
    force(&env, &id, 5, info.release, edgecd_server::util::now() - 10);
    expect_refusal(&env, &a, "receipt-parser@2.0.0", "expired");
    assert_eq!(
        check_current(&a.data_dir).expect("current").0,
        r1.bundle_digest
    );
}

#[test]
fn unreachable_server_keeps_the_current_release() {
    let mut env = Env::new();
    let (mut a, r1) = running_v1(&env, "a", None);
    env.server.stop();
    std::thread::sleep(Duration::from_secs(3));
    assert!(a.alive(), "the agent keeps running");
    assert_eq!(
        check_current(&a.data_dir).expect("current").0,
        r1.bundle_digest
    );
    assert!(a.log_text().contains("check-in failed"));
}

/// A writer that fails with ENOSPC once `limit` bytes were written in total.
struct FullDisk {
    written: std::sync::Arc<std::sync::atomic::AtomicU64>,
    limit: u64,
}

struct FullWriter {
    f: std::fs::File,
    written: std::sync::Arc<std::sync::atomic::AtomicU64>,
    limit: u64,
}

impl std::io::Write for FullWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        let done = self.written.load(Ordering::SeqCst);
        if done >= self.limit {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        let n = buf.len().min((self.limit - done) as usize);
        let n = self.f.write(&buf[..n])?;
        self.written.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.f.flush()
    }
}

impl edgecd_agent::client::Storage for FullDisk {
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn std::io::Write + Send>> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Box::new(FullWriter {
            f,
            written: self.written.clone(),
            limit: self.limit,
        }))
    }
}

#[test]
fn disk_full_mid_download_is_reported_and_nothing_installed() {
    let env = Env::new();
    let r1 = env.release(APP, "1.0.0", 512 * 1024);
    env.publish(&r1).expect("publish");
    let token = env.token(1, &[]);
    let data_dir = env.path("inproc");
    let storage = FullDisk {
        written: Default::default(),
        limit: 100 * 1024,
    };
    let mut agent = inproc_agent(
        &env,
        "inproc",
        Some(&token),
        &[],
        std::sync::Arc::new(storage),
    );
    agent.sync_once().expect("enroll + check in");
    env.deploy(APP, "1.0.0", &[]);
    agent.sync_once().expect("sync");
    let o = agent.state().last_outcome.clone().expect("outcome");
    assert_eq!(o.kind, OutcomeKind::Failed);
    assert!(o.reason.contains("disk full"), "{}", o.reason);
    let d = env.device_of(&data_dir).expect("device");
    let reported = d.status.and_then(|s| s.last_outcome).expect("reported");
    assert!(reported.reason.contains("disk full"), "{}", reported.reason);
    assert!(
        std::fs::symlink_metadata(data_dir.join("current")).is_err(),
        "nothing installed"
    );
    not_installed(&data_dir, "receipt-parser@1.0.0");
    let parts = std::fs::read_dir(data_dir.join("staging"))
        .expect("staging")
        .count();
    assert_eq!(parts, 0, "the partial download is removed to free the disk");
}
