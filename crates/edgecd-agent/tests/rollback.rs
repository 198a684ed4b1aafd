//! Health checks and local rollback (design §5): a failing health check (command or URL)
//! and a crash-looping activation both end on the old release, reported with the reason.
#![cfg(target_arch = "x86_64")]

mod common;
use common::*;
use edgecd_api::protocol::{OutcomeKind, Phase};
use std::io::{Read, Write};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const APP: &str = "receipt-parser";

fn after_rollback(env: &Env, a: &AgentProc, r1_digest: &str, needle: &str) {
    let o = env.wait_outcome(&a.data_dir, OutcomeKind::RolledBack, T);
    assert!(
        o.reason.contains(needle),
        "reason {:?} should mention {needle:?}",
        o.reason
    );
    assert_eq!(o.release.as_deref(), Some("receipt-parser@2.0.0"));
    let d = env.wait_running(&a.data_dir, "receipt-parser@1.0.0", T);
    assert_eq!(d.status.expect("status").phase, Phase::Committed);
    let (digest, _) = check_current(&a.data_dir).expect("current intact");
    assert_eq!(digest, r1_digest, "back on 1.0.0");
}

fn deploy_two(env: &Env, extra: &[&str]) -> (AgentProc, String) {
    let r1 = env.release(APP, "1.0.0", 16 * 1024);
    let r2 = env.release(APP, "2.0.0", 16 * 1024);
    env.publish(&r1).expect("publish");
    env.publish(&r2).expect("publish");
    let token = env.token(1, &[]);
    let a = spawn_agent(env, "a", Some(&token), extra);
    wait_for(T, "enrollment", || device_id(&a.data_dir));
    env.deploy(APP, "1.0.0", &[]);
    env.wait_running(&a.data_dir, "receipt-parser@1.0.0", T);
    env.deploy(APP, "2.0.0", &[]);
    (a, r1.bundle_digest)
}

#[test]
fn failing_health_command_rolls_back() {
    let env = Env::new();
    let marker = env.path("activated");
    let activate = format!("echo \"$EDGECD_RELEASE\" >> {}", marker.display());
    let (a, r1) = deploy_two(
        &env,
        &[
            "--health-cmd",
            "test \"$EDGECD_RELEASE\" != receipt-parser@2.0.0 && test -f \"$EDGECD_CURRENT/manifest.json\"",
            "--activate-cmd",
            &activate,
        ],
    );
    after_rollback(&env, &a, &r1, "health check failed");
    // 1.0.0 was activated, then 2.0.0, then 1.0.0 again on the way back.
    let log = std::fs::read_to_string(&marker).expect("marker");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            "receipt-parser@1.0.0",
            "receipt-parser@2.0.0",
            "receipt-parser@1.0.0"
        ]
    );
}

#[test]
fn failing_health_url_rolls_back() {
    let env = Env::new();
    // A health endpoint that is healthy only while 1.0.0 is current.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/healthz", l.local_addr().expect("addr"));
    let data_dir = env.path("a");
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let ok = check_current(&data_dir)
                .map(|(_, n)| n == "receipt-parser@1.0.0")
                .unwrap_or(false);
            let status = if ok {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = c.write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    let (a, r1) = deploy_two(&env, &["--health-url", &url]);
    after_rollback(&env, &a, &r1, "503");
}

#[test]
fn crash_looping_activation_falls_back() {
    let env = Env::new();
    // Activating 2.0.0 kills the agent (like a runtime that takes the device down).
    let activate =
        "if [ \"$EDGECD_RELEASE\" = receipt-parser@2.0.0 ]; then kill -9 $PPID; sleep 5; fi";
    let extra = ["--activate-cmd", activate, "--max-trial-starts", "2"];
    let (mut a, r1) = deploy_two(&env, &extra);
    // A supervisor (like systemd's Restart=always) restarts the agent whenever it dies.
    let mut restarts = 0;
    let o = wait_for(T, "rollback after the crash loop", || {
        if !a.alive() {
            restarts += 1;
            let log = a.log.clone();
            let dir = a.data_dir.clone();
            let child = agent_cmd(&env.url, &dir, None, &extra)
                .stderr(
                    std::fs::OpenOptions::new()
                        .append(true)
                        .open(&log)
                        .expect("log"),
                )
                .spawn()
                .expect("respawn");
            a = AgentProc {
                child,
                data_dir: dir,
                log,
            };
        }
        let o = env.device_of(&a.data_dir)?.status?.last_outcome?;
        (o.kind == OutcomeKind::RolledBack).then_some(o)
    });
    assert!(restarts >= 3, "the agent crashed {restarts} times");
    assert!(o.reason.contains("crash loop"), "{}", o.reason);
    after_rollback(&env, &a, &r1, "crash loop");
    assert!(a.alive());
}
