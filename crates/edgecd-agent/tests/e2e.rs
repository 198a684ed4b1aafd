//! End to end over real HTTP(S) on 127.0.0.1: an in-process server, two agent processes
//! with separate data dirs, two releases; and TLS with a pinned CA.
#![cfg(target_arch = "x86_64")]

mod common;
use common::*;
use edgecd_api::protocol::Phase;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn two_agents_follow_two_releases(env: &Env) {
    let r1 = env.release("receipt-parser", "1.0.0", 64 * 1024);
    env.publish(&r1).expect("publish 1.0.0");
    let token = env.token(2, &[("fleet", "shop")]);
    let a = spawn_agent(env, "agent-a", Some(&token), &["--label", "site=berlin"]);
    let b = spawn_agent(env, "agent-b", Some(&token), &["--label", "site=paris"]);
    wait_for(T, "both agents to enroll", || {
        (env.devices().len() == 2).then_some(())
    });
    let assigned = env.deploy("receipt-parser", "1.0.0", &[("fleet", "shop")]);
    assert_eq!(assigned.len(), 2);
    for p in [&a, &b] {
        let d = env.wait_running(&p.data_dir, "receipt-parser@1.0.0", T);
        assert_eq!(d.labels.get("fleet").map(String::as_str), Some("shop"));
        let (digest, name) = check_current(&p.data_dir).expect("current is complete");
        assert_eq!(
            (digest.as_str(), name.as_str()),
            (r1.bundle_digest.as_str(), "receipt-parser@1.0.0")
        );
    }
    let r2 = env.release("receipt-parser", "1.1.0", 80 * 1024);
    env.publish(&r2).expect("publish 1.1.0");
    env.deploy("receipt-parser", "1.1.0", &[("fleet", "shop")]);
    for p in [&a, &b] {
        env.wait_running(&p.data_dir, "receipt-parser@1.1.0", T);
        let (digest, _) = check_current(&p.data_dir).expect("current is complete");
        assert_eq!(digest, r2.bundle_digest);
    }
    // The device list shows each device's real state.
    let devices = env.devices();
    assert_eq!(devices.len(), 2);
    for d in &devices {
        let s = d.status.as_ref().expect("status");
        assert_eq!(s.phase, Phase::Committed);
        let r = s.running.as_ref().expect("running");
        assert_eq!(
            (r.app.as_str(), r.version.as_str()),
            ("receipt-parser", "1.1.0")
        );
        assert_eq!(r.bundle_digest, r2.bundle_digest);
        assert_eq!(d.assigned.as_deref(), Some("receipt-parser@1.1.0"));
        assert_eq!(
            s.last_outcome.as_ref().map(|o| o.kind),
            Some(edgecd_api::protocol::OutcomeKind::Committed)
        );
        let inv = d.inventory.as_ref().expect("inventory");
        assert_eq!(inv.board, "rpi5");
        assert!(inv.ram_mb > 0);
        assert_eq!(
            inv.runtimes.get("edgecd-infer").map(String::as_str),
            Some("0.1.0")
        );
    }
    // Credentials and state are private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(a.data_dir.join("device.json"))
        .expect("device.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "device.json must be 0600");
}

#[test]
fn e2e_http_two_agents_two_releases() {
    let env = Env::new();
    two_agents_follow_two_releases(&env);
}

#[test]
fn e2e_https_with_pinned_ca_and_other_ca_refused() {
    let pki = make_pki();
    let env = Env::tls(&pki);
    two_agents_follow_two_releases(&env);

    // An agent pinned to another CA refuses the server: it never enrolls.
    let other = make_pki();
    let token = env.token(1, &[]);
    let dir = env.path("agent-wrong-ca");
    let ca = env.path("other-ca.pem");
    std::fs::write(&ca, &other.ca_pem).expect("ca");
    let log = env.path("agent-wrong-ca.log");
    let mut child = agent_cmd(
        &env.url,
        &dir,
        Some(&token),
        &["--ca-cert", ca.to_str().expect("utf8")],
    )
    .stderr(std::fs::File::create(&log).expect("log"))
    .spawn()
    .expect("spawn");
    std::thread::sleep(Duration::from_secs(3));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        env.devices().len(),
        2,
        "the agent with the wrong CA must not enroll"
    );
    assert!(!dir.join("device.json").exists());
    let text = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("issuer") || text.contains("tls"),
        "log: {text}"
    );
}

#[test]
fn plain_http_to_a_remote_address_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(AGENT)
        .args(["--server", "http://192.0.2.10:8080", "--data-dir"])
        .arg(dir.path())
        .args(["--enroll-token", "x"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain HTTP"), "{err}");
}

#[test]
fn interrupted_download_resumes_with_range() {
    let env = Env::new();
    let r1 = env.release("receipt-parser", "1.0.0", 1 << 20);
    env.publish(&r1).expect("publish");
    let bundle = edgecd_testkit::release::blob_ref(&r1.bundle).expect("ref");
    let log = ProxyLog::default();
    let p = proxy_logged(env.server.addr, String::new(), None, log.clone());
    let token = env.token(1, &[]);
    let dir = env.path("slow");
    let spawn = |token: Option<&str>| {
        agent_cmd(&p.url, &dir, token, &["--max-download-kbps", "400"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn")
    };
    let mut child = spawn(Some(&token));
    wait_for(T, "enrollment", || device_id(&dir));
    env.deploy("receipt-parser", "1.0.0", &[]);
    let part = dir
        .join("staging")
        .join(format!("{}.part", &bundle.digest[7..]));
    wait_for(T, "a partial download", || {
        (std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) > 200 * 1024).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    let have = std::fs::metadata(&part)
        .expect("part survives the kill")
        .len();
    assert!(have < bundle.size);
    let mut child = spawn(None);
    env.wait_running(&dir, "receipt-parser@1.0.0", T);
    let _ = child.kill();
    let _ = child.wait();
    let needle = format!("GET /api/v1/blobs/{} ", bundle.digest);
    let gets: Vec<_> = log
        .lock()
        .expect("log")
        .iter()
        .filter(|(l, _, _)| l.starts_with(&needle))
        .cloned()
        .collect();
    let resumed = gets
        .iter()
        .find_map(|(_, r, n)| r.as_ref().map(|r| (r.clone(), *n)))
        .expect("a Range request");
    let start: u64 = resumed
        .0
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .expect("range start");
    assert!(
        start > 0 && start <= have,
        "resumed at {start}, {have} bytes were on disk"
    );
    assert_eq!(
        start + resumed.1 as u64,
        bundle.size,
        "the resumed request fetched only the rest"
    );
    assert_eq!(check_current(&dir).expect("current").0, r1.bundle_digest);
}
