//! Delivery correctness (issue #17, items 1–4 and 7): the agent acts on the newest
//! assignment even when it arrives during an install, reports download progress, survives
//! slow and stalling links, remembers refusals by signature and retries them when the device
//! changes, checks the release before the bundle moves, notices stale (replayed) answers,
//! lets a restored server resync, and ignores fields a newer peer adds.
#![cfg(target_arch = "x86_64")]

mod common;
use common::*;
use edgecd_api::protocol::{DownloadProgress, Inventory, OutcomeKind, Phase};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);
const APP: &str = "receipt-parser";

fn label(v: &str) -> String {
    format!("{APP}@{v}")
}

/// No slot holds `release`.
fn not_installed(data_dir: &std::path::Path, release: &str) {
    for s in ["a", "b"] {
        if let Ok((_, name)) = check_slot(&data_dir.join("slots").join(s)) {
            assert_ne!(name, release, "slot {s} must not hold {release}");
        }
    }
}

/// The releases the agent's JSON log reports as committed.
fn committed(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"] == "reporting outcome" && v["fields"]["kind"] == "Committed"
        })
        .filter_map(|v| v["fields"]["release"].as_str().map(str::to_string))
        .collect()
}

/// Waits until the server shows the device downloading `release` part-way.
fn wait_progress(env: &Env, a: &AgentProc, release: &str) -> DownloadProgress {
    wait_for(
        T,
        &format!("{release} download progress on the server"),
        || {
            let s = env.device_of(&a.data_dir)?.status?;
            let p = s.download?;
            (s.phase == Phase::Downloading
                && p.release == release
                && p.done_bytes > 0
                && p.done_bytes < p.total_bytes)
                .then_some(p)
        },
    )
}

/// An agent running 1.0.0 with `extra` flags (and the given server URL).
fn running_v1(env: &Env, name: &str, url: &str, extra: &[&str]) -> AgentProc {
    let r1 = env.release(APP, "1.0.0", 32 * 1024);
    env.publish(&r1).expect("publish 1.0.0");
    let token = env.token(1, &[("fleet", name)]);
    let dir = env.path(name);
    let log = env.path(&format!("{name}.log"));
    let child = agent_cmd(url, &dir, Some(&token), extra)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn agent");
    let a = AgentProc {
        child,
        data_dir: dir,
        log,
    };
    wait_for(T, "enrollment", || device_id(&a.data_dir));
    env.deploy(APP, "1.0.0", &[("fleet", name)]);
    env.wait_running(&a.data_dir, &label("1.0.0"), T);
    a
}

#[test]
fn a_deploy_during_a_slow_download_supersedes_it() {
    let env = Env::new();
    let a = running_v1(&env, "dev", &env.url, &["--max-download-kbps", "1024"]);
    let r2 = env.release(APP, "2.0.0", 16 << 20);
    env.publish(&r2).expect("publish 2.0.0");
    let r3 = env.release(APP, "3.0.0", 32 * 1024);
    env.publish(&r3).expect("publish 3.0.0");
    env.deploy(APP, "2.0.0", &[]);
    wait_progress(&env, &a, &label("2.0.0"));
    // Mid-download, `current` still holds the intact 1.0.0.
    assert_eq!(
        check_current(&a.data_dir).expect("current").1,
        label("1.0.0")
    );
    env.deploy(APP, "3.0.0", &[]);
    env.wait_running(&a.data_dir, &label("3.0.0"), T);
    not_installed(&a.data_dir, &label("2.0.0"));
    assert!(
        staged_files(&a.data_dir).is_empty(),
        "{:?}",
        staged_files(&a.data_dir)
    );
    let log = a.log_text();
    assert!(log.contains("supersedes this download"), "{log}");
    assert!(
        !committed(&log).contains(&label("2.0.0")),
        "2.0.0 must never be committed: {:?}",
        committed(&log)
    );
}

#[test]
fn a_rollback_during_a_slow_download_cancels_it() {
    let env = Env::new();
    let a = running_v1(&env, "dev", &env.url, &["--max-download-kbps", "1024"]);
    let r2 = env.release(APP, "2.0.0", 16 << 20);
    env.publish(&r2).expect("publish 2.0.0");
    env.deploy(APP, "2.0.0", &[]);
    wait_progress(&env, &a, &label("2.0.0"));
    let ids = env.deploy(APP, "1.0.0", &[]);
    let want = env.device(&ids[0]).assignment_version.expect("version");
    let d = wait_for(
        T,
        "the device to report the rollback's version on 1.0.0",
        || {
            let s = env.device_of(&a.data_dir)?.status?;
            let r = s.running.as_ref()?;
            (s.phase == Phase::Committed && r.version == "1.0.0" && s.assignment_version == want)
                .then_some(s)
        },
    );
    assert!(d.download.is_none());
    not_installed(&a.data_dir, &label("2.0.0"));
    assert_eq!(
        check_current(&a.data_dir).expect("current").1,
        label("1.0.0")
    );
    assert!(
        staged_files(&a.data_dir).is_empty(),
        "{:?}",
        staged_files(&a.data_dir)
    );
    assert!(a.log_text().contains("cancelling the install in flight"));
}

#[test]
fn an_assignment_during_a_slow_health_check_is_applied_right_after() {
    let env = Env::new();
    let a = running_v1(&env, "dev", &env.url, &["--health-cmd", "sleep 2"]);
    let r2 = env.release(APP, "2.0.0", 32 * 1024);
    env.publish(&r2).expect("publish");
    let r3 = env.release(APP, "3.0.0", 32 * 1024);
    env.publish(&r3).expect("publish");
    env.deploy(APP, "2.0.0", &[]);
    wait_for(T, "2.0.0 in trial", || {
        (local_phase(&a.data_dir) == Some(Phase::Trial)).then_some(())
    });
    env.deploy(APP, "3.0.0", &[]);
    // 2.0.0 finishes its health check and commits; 3.0.0 follows without a restart.
    env.wait_running(&a.data_dir, &label("3.0.0"), T);
}

#[test]
fn a_large_bundle_over_a_slow_link_downloads_for_minutes_and_reports_progress() {
    let env = Env::new();
    // ~2.4 MiB/s: 300 MiB take about 125 s, twice the old 60 s total budget.
    let link = slow_link(
        env.server.addr,
        Link {
            bytes_per_sec: 2_500_000,
            stall_after: None,
        },
    );
    let a = running_v1(&env, "dev", &link.url, &[]);
    let r2 = env.release(APP, "2.0.0", 300 << 20);
    env.publish(&r2).expect("publish");
    let started = Instant::now();
    env.deploy(APP, "2.0.0", &[]);
    let mut seen = vec![];
    let d = wait_for(Duration::from_secs(400), "2.0.0 running", || {
        let d = env.device_of(&a.data_dir)?;
        let s = d.status.as_ref()?;
        if let Some(p) = &s.download {
            assert_eq!(s.phase, Phase::Downloading);
            assert!(p.total_bytes > 300 << 20 && p.done_bytes <= p.total_bytes);
            if seen.last() != Some(&p.done_bytes) {
                seen.push(p.done_bytes);
            }
        }
        let r = s.running.as_ref()?;
        (r.version == "2.0.0" && s.phase == Phase::Committed).then_some(d)
    });
    let took = started.elapsed();
    assert!(
        took > Duration::from_secs(120),
        "the link was not slow: {took:?}"
    );
    assert!(
        seen.len() >= 10 && seen.windows(2).all(|w| w[0] < w[1]),
        "progress reported while downloading: {seen:?}"
    );
    assert_eq!(
        check_current(&a.data_dir).expect("current").0,
        r2.bundle_digest
    );
    let log = a.log_text();
    assert!(!log.contains("download interrupted"), "{log}");
    assert!(
        d.status
            .and_then(|s| s.last_outcome)
            .is_some_and(|o| o.kind == OutcomeKind::Committed)
    );
}

#[test]
fn a_stalled_download_is_dropped_and_resumed_with_range() {
    let env = Env::new();
    // Every connection stops sending after 1 MiB and stays open.
    let link = slow_link(
        env.server.addr,
        Link {
            bytes_per_sec: 50_000_000,
            stall_after: Some(1 << 20),
        },
    );
    let a = running_v1(
        &env,
        "dev",
        &link.url,
        &["--download-stall-timeout-secs", "2"],
    );
    let r2 = env.release(APP, "2.0.0", 3 << 20);
    env.publish(&r2).expect("publish");
    env.deploy(APP, "2.0.0", &[]);
    env.wait_running(&a.data_dir, &label("2.0.0"), Duration::from_secs(50));
    let log = a.log_text();
    assert!(log.contains("stalled"), "{log}");
    assert_eq!(
        check_current(&a.data_dir).expect("current").0,
        r2.bundle_digest
    );
}

/// Replaces the signature of the first `n` assignments in check-in answers.
fn forge_first(n: usize) -> Rewrite {
    let left = Arc::new(AtomicUsize::new(n));
    Arc::new(move |first, _req, _status, _h, body| {
        if !first.contains("/checkin") {
            return;
        }
        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        if v["assignment"].is_object() && left.load(Ordering::SeqCst) > 0 {
            left.fetch_sub(1, Ordering::SeqCst);
            // A valid base64 DER-looking blob that is not a signature over the payload, on
            // the assignment and on every app's (protocol 1.2).
            let fake = "MEUCIQDfakefakefakefakefakefakefakefakefakefakefakeAiBmYWtlZmFrZWZha2VmYWtlZmFrZWZha2VmYWtlZmFr";
            v["assignment"]["signature"] = fake.into();
            if let Some(all) = v["assignments"].as_array_mut() {
                for a in all {
                    a["signature"] = fake.into();
                }
            }
            *body = serde_json::to_vec(&v).expect("json");
        }
    })
}

#[test]
fn a_wrongly_signed_copy_never_blocks_the_genuine_assignment() {
    let env = Env::new();
    let proxy = rewriting_proxy(env.server.addr, Arc::new(|_, _| {}), forge_first(3));
    let a = running_v1(&env, "dev", &env.url, &[]);
    drop(a);
    // A second device behind the forging proxy.
    let r = env.release(APP, "2.0.0", 32 * 1024);
    env.publish(&r).expect("publish");
    let token = env.token(1, &[("fleet", "forged")]);
    let b = spawn_agent_at(&env, &proxy.url, "forged", &token, &[]);
    wait_for(T, "enrollment", || device_id(&b.data_dir));
    env.deploy(APP, "2.0.0", &[("fleet", "forged")]);
    let o = env.wait_outcome(&b.data_dir, OutcomeKind::Refused, T);
    assert!(o.reason.contains("signature"), "{}", o.reason);
    // The same payload with the server's real signature follows and is installed.
    env.wait_running(&b.data_dir, &label("2.0.0"), T);
}

fn spawn_agent_at(env: &Env, url: &str, name: &str, token: &str, extra: &[&str]) -> AgentProc {
    let dir = env.path(name);
    let log = env.path(&format!("{name}.log"));
    let child = agent_cmd(url, &dir, Some(token), extra)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn agent");
    AgentProc {
        child,
        data_dir: dir,
        log,
    }
}

/// Real files, and a free-space figure the test sets.
struct Disk(Arc<AtomicU64>);

impl edgecd_agent::client::Storage for Disk {
    fn open_append(
        &self,
        path: &std::path::Path,
    ) -> std::io::Result<Box<dyn std::io::Write + Send>> {
        edgecd_agent::client::FileStorage.open_append(path)
    }
    fn free_bytes(&self, _dir: &std::path::Path) -> Option<u64> {
        Some(self.0.load(Ordering::SeqCst))
    }
}

fn sync_until(
    agent: &mut edgecd_agent::Agent,
    what: &str,
    mut f: impl FnMut(&edgecd_agent::Agent) -> bool,
) {
    let start = Instant::now();
    while !f(agent) {
        assert!(
            start.elapsed() < T,
            "timed out waiting for {what}: {:?}",
            agent.state()
        );
        agent.sync_once().expect("sync");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn runs(agent: &edgecd_agent::Agent, version: &str) -> bool {
    agent
        .state()
        .active
        .as_ref()
        .is_some_and(|x| x.version == version)
        && agent.state().phase == Phase::Committed
}

fn refused_with(agent: &edgecd_agent::Agent, needle: &str) -> bool {
    agent
        .state()
        .last_outcome
        .as_ref()
        .is_some_and(|o| o.kind == OutcomeKind::Refused && o.reason.contains(needle))
}

#[test]
fn a_refusal_is_retried_when_the_inventory_changes() {
    let env = Env::new();
    let mut pin = edgecd_testkit::release::infer_pin();
    pin.version = "0.2.0".into();
    let r = env.release_for(
        APP,
        "1.0.0",
        edgecd_testkit::release::rpi5(),
        pin,
        32 * 1024,
        &env.ci_key,
    );
    let info = env.publish(&r).expect("publish");
    let token = env.token(1, &[]);
    let free = Arc::new(AtomicU64::new(u64::MAX / 4));
    let mut agent = inproc_agent(&env, "inv", Some(&token), &[], Arc::new(Disk(free)));
    agent.sync_once().expect("enroll");
    // The server would not assign it (deploy skips incompatible devices): sign it directly,
    // as a server that knew of the upgrade before the device reports it would.
    let st = &env.server.state;
    let id = agent.device_id().expect("id").to_string();
    let row = edgecd_server::assign::sign_assignment(st, &id, 1, info.release).expect("sign");
    env.server
        .block_on(st.store.put_assignment(&row))
        .expect("store");
    sync_until(&mut agent, "the refusal", |a| {
        refused_with(a, "edgecd-infer@0.2.0")
    });
    // Nothing changes: it stays refused, without being re-reported.
    for _ in 0..3 {
        agent.sync_once().expect("sync");
    }
    assert!(agent.state().active.is_none());
    let mut inv: Inventory = env
        .device(agent.device_id().expect("id"))
        .inventory
        .expect("inventory");
    inv.runtimes.insert("edgecd-infer".into(), "0.2.0".into());
    agent.set_inventory(inv);
    sync_until(&mut agent, "the install after the runtime upgrade", |a| {
        runs(a, "1.0.0")
    });
}

#[test]
fn a_refusal_for_free_space_is_retried_once_there_is_room() {
    let env = Env::new();
    let r = env.release(APP, "1.0.0", 2 << 20);
    env.publish(&r).expect("publish");
    let token = env.token(1, &[]);
    let free = Arc::new(AtomicU64::new(1 << 20));
    let mut agent = inproc_agent(
        &env,
        "space",
        Some(&token),
        &[],
        Arc::new(Disk(free.clone())),
    );
    agent.sync_once().expect("enroll");
    env.deploy(APP, "1.0.0", &[]);
    sync_until(&mut agent, "the refusal", |a| {
        refused_with(a, "not enough free space")
    });
    assert!(staged_files(&env.path("space")).is_empty());
    free.store(1 << 30, Ordering::SeqCst);
    sync_until(&mut agent, "the install once there is room", |a| {
        runs(a, "1.0.0")
    });
}

/// A proxy that logs each request line.
fn logging_proxy(env: &Env) -> (Proxy, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(vec![]));
    let l2 = log.clone();
    let p = rewriting_proxy(
        env.server.addr,
        Arc::new(move |first, _| l2.lock().expect("log").push(first.to_string())),
        Arc::new(|_, _, _, _, _| {}),
    );
    (p, log)
}

#[test]
fn an_untrusted_release_is_refused_before_the_bundle_moves_and_leaves_no_staging() {
    let env = Env::new();
    let (proxy, requests) = logging_proxy(&env);
    let other = edgecd_sign::SigningKey::generate();
    let pub_path = env.path("other.pub");
    std::fs::write(&pub_path, other.verifying_key().to_spki_pem()).expect("key");
    let r = env.release(APP, "1.0.0", 1 << 20);
    env.publish(&r).expect("publish");
    let token = env.token(1, &[]);
    let a = spawn_agent_at(
        &env,
        &proxy.url,
        "dev",
        &token,
        &["--release-key", &pub_path.display().to_string()],
    );
    wait_for(T, "enrollment", || device_id(&a.data_dir));
    env.deploy(APP, "1.0.0", &[]);
    let o = env.wait_outcome(&a.data_dir, OutcomeKind::Refused, T);
    assert!(
        o.reason.contains("not a trusted release key"),
        "{}",
        o.reason
    );
    let bundle = format!(
        "/api/v1/blobs/{}",
        edgecd_testkit::release::blob_ref(&r.bundle)
            .expect("bundle ref")
            .digest
    );
    let seen = requests.lock().expect("log").clone();
    assert!(
        seen.iter().any(|l| l.contains("/api/v1/blobs/")),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains(&bundle)),
        "the bundle was requested: {seen:?}"
    );
    assert!(
        staged_files(&a.data_dir).is_empty(),
        "{:?}",
        staged_files(&a.data_dir)
    );
}

#[test]
fn a_release_over_the_staging_budget_is_refused_before_any_download() {
    let env = Env::new();
    let (proxy, requests) = logging_proxy(&env);
    let r = env.release(APP, "1.0.0", 2 << 20);
    env.publish(&r).expect("publish");
    let token = env.token(1, &[]);
    let a = spawn_agent_at(
        &env,
        &proxy.url,
        "dev",
        &token,
        &["--staging-budget-mb", "1"],
    );
    wait_for(T, "enrollment", || device_id(&a.data_dir));
    env.deploy(APP, "1.0.0", &[]);
    let o = env.wait_outcome(&a.data_dir, OutcomeKind::Refused, T);
    assert!(o.reason.contains("staging budget"), "{}", o.reason);
    let seen = requests.lock().expect("log").clone();
    assert!(
        !seen.iter().any(|l| l.contains("/api/v1/blobs/")),
        "{seen:?}"
    );
}

/// A recorded answer: status line, headers, body.
type Recorded = (String, Vec<(String, String)>, Vec<u8>);

#[test]
fn replayed_answers_are_noticed_and_reported_as_stale() {
    let env = Env::with(None, |c| c.timestamp_ttl_secs = 2);
    let replay = Arc::new(AtomicBool::new(false));
    let recorded: Arc<Mutex<Option<Recorded>>> = Arc::new(Mutex::new(None));
    let (r2, rec2) = (replay.clone(), recorded.clone());
    let proxy = rewriting_proxy(
        env.server.addr,
        Arc::new(|_, _| {}),
        Arc::new(move |first, _req, status, headers, body| {
            if !first.contains("/checkin") {
                return;
            }
            let mut rec = rec2.lock().expect("rec");
            if r2.load(Ordering::SeqCst) {
                if let Some((s, h, b)) = rec.clone() {
                    // The request reached the server; the device gets the old answer.
                    (*status, *headers, *body) = (s, h, b);
                }
            } else {
                *rec = Some((status.clone(), headers.clone(), body.clone()));
            }
        }),
    );
    let token = env.token(1, &[]);
    let a = spawn_agent_at(&env, &proxy.url, "dev", &token, &[]);
    wait_for(T, "enrollment and a check-in", || {
        env.device_of(&a.data_dir)?.status.map(|_| ())
    });
    replay.store(true, Ordering::SeqCst);
    let since = wait_for(T, "the device to report stale answers", || {
        env.device_of(&a.data_dir)?.status?.stale_since
    });
    assert!(since > 0);
    assert!(a.log_text().contains("freeze attack"));
    replay.store(false, Ordering::SeqCst);
    wait_for(T, "fresh answers again", || {
        let s = env.device_of(&a.data_dir)?.status?;
        s.stale_since.is_none().then_some(())
    });
}

#[test]
fn a_server_behind_the_device_resyncs_instead_of_being_refused() {
    let env = Env::with(None, |c| c.refresh_assignments = false);
    let a = running_v1(&env, "dev", &env.url, &[]);
    let r2 = env.release(APP, "2.0.0", 16 * 1024);
    env.publish(&r2).expect("publish");
    env.deploy(APP, "2.0.0", &[]);
    env.wait_running(&a.data_dir, &label("2.0.0"), T);
    let id = device_id(&a.data_dir).expect("id");
    let held = env.device(&id).assignment_version.expect("version");
    // The database comes back from an older backup: the device's assignment is at v1 again.
    let st = env.server.state.clone();
    let row = env
        .server
        .block_on(st.store.assignment(&id))
        .expect("store")
        .expect("row");
    let p: edgecd_api::protocol::Assignment = serde_json::from_str(&row.payload).expect("payload");
    let old = edgecd_server::assign::sign_assignment(&st, &id, 1, p.release).expect("sign");
    env.server
        .block_on(st.store.force_assignment(&old))
        .expect("store");
    // The device proves it holds v{held}; the server raises its counter and re-signs above it.
    let d = wait_for(T, "the resync", || {
        let d = env.device(&id);
        (d.assignment_version? > held).then_some(d)
    });
    let s = d.status.expect("status");
    assert_eq!(s.running.expect("running").version, "2.0.0");
    // The next deployment gets a version the device accepts.
    let r3 = env.release(APP, "3.0.0", 16 * 1024);
    env.publish(&r3).expect("publish");
    env.deploy(APP, "3.0.0", &[]);
    env.wait_running(&a.data_dir, &label("3.0.0"), T);
}

/// Adds `"futureField"` to every JSON object that stands for a struct (not to maps of data
/// such as labels or runtimes).
fn add_future_fields(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k != "labels" && k != "runtimes" {
                    add_future_fields(x);
                }
            }
            m.insert(
                "futureField".into(),
                serde_json::json!({"from": "a newer peer"}),
            );
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(add_future_fields),
        _ => {}
    }
}

fn with_future_fields(body: &mut Vec<u8>) {
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) {
        add_future_fields(&mut v);
        *body = serde_json::to_vec(&v).expect("json");
    }
}

#[test]
fn peers_that_add_fields_still_work_both_ways() {
    let env = Env::new();
    // Server → agent answers and agent → server requests both carry fields the other side
    // does not know (as a newer server or agent would send).
    let proxy = rewriting_proxy(
        env.server.addr,
        Arc::new(|first, body| {
            if first.starts_with("POST ") {
                with_future_fields(body);
            }
        }),
        Arc::new(|first, _req, _status, _h, body| {
            if first.contains("/api/v1/devices/") {
                with_future_fields(body);
            }
        }),
    );
    let r = env.release(APP, "1.0.0", 32 * 1024);
    env.publish(&r).expect("publish");
    let token = env.token(1, &[]);
    let a = spawn_agent_at(&env, &proxy.url, "dev", &token, &[]);
    wait_for(T, "enrollment", || device_id(&a.data_dir));
    env.deploy(APP, "1.0.0", &[]);
    env.wait_running(&a.data_dir, &label("1.0.0"), T);
}

#[test]
fn a_peer_of_another_major_protocol_is_refused_with_both_versions_named() {
    let env = Env::new();
    let token = env.token(1, &[]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = serde_json::json!({
        "token": token,
        "inventory": {"board": "rpi5", "ramMb": 1, "agentVersion": "9.0.0"},
        "protocol": "2.0"
    });
    let mut r = agent
        .post(&format!("{}/api/v1/devices/enroll", env.url))
        .header("content-type", "application/json")
        .send(body.to_string())
        .expect("answer");
    assert_eq!(r.status().as_u16(), 426);
    assert_eq!(
        r.headers()
            .get(edgecd_api::protocol::PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(edgecd_api::protocol::PROTOCOL_VERSION)
    );
    let text = r.body_mut().read_to_string().expect("body");
    assert!(
        text.contains("2.0") && text.contains(edgecd_api::protocol::PROTOCOL_VERSION),
        "{text}"
    );
    // The token was not used up by the refused request.
    let a = spawn_agent(&env, "dev", Some(&token), &[]);
    wait_for(T, "enrollment", || device_id(&a.data_dir));
}
