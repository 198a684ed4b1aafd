//! Crash safety (design §5): SIGKILL the agent right after each state transition and at
//! random moments (so at random byte offsets of downloads and of unpacking), restart it,
//! and check after every kill that `current` holds a complete release (the old or the new
//! one) and that the state file is intact; finally the agent converges and the server
//! knows what it runs.
#![cfg(target_arch = "x86_64")]

mod common;
use common::*;
use edgecd_api::protocol::Phase;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const APP: &str = "receipt-parser";
const MIN_KILLS: usize = 200;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn local_state(dir: &std::path::Path) -> edgecd_agent::machine::State {
    let bytes = std::fs::read(dir.join("state.json")).expect("state.json exists");
    serde_json::from_slice(&bytes).expect("state.json is never torn")
}

#[test]
fn sigkill_at_every_transition_and_random_offsets() {
    let env = Env::new();
    let releases = [
        env.release(APP, "1.0.0", 1 << 20),
        env.release(APP, "2.0.0", 1 << 20),
    ];
    for r in &releases {
        env.publish(r).expect("publish");
    }
    let digests = [
        releases[0].bundle_digest.clone(),
        releases[1].bundle_digest.clone(),
    ];
    let token = env.token(1, &[]);
    let dir = env.path("crashy");
    let extra = [
        "--max-download-kbps",
        "6000",
        "--activate-cmd",
        "sleep 0.05",
        "--health-cmd",
        "sleep 0.05; test -f \"$EDGECD_CURRENT/manifest.json\"",
        "--max-trial-starts",
        "100000",
    ];
    // Enroll and install 1.0.0 without interference.
    {
        let mut first = agent_cmd(&env.url, &dir, Some(&token), &extra)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        wait_for(Duration::from_secs(30), "enrollment", || device_id(&dir));
        env.deploy(APP, "1.0.0", &[]);
        env.wait_running(&dir, "receipt-parser@1.0.0", Duration::from_secs(60));
        let _ = first.kill();
        let _ = first.wait();
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("crash harness seed {seed}");
    let mut rng = Rng(seed);
    let mut deployed = 0usize; // index into releases
    let mut kills = 0usize;
    let mut transition_kills = 0usize;
    let mut installs = 0usize;
    let mut k = 1usize;
    let mut dead = 0usize;
    let start = Instant::now();
    while kills < MIN_KILLS {
        assert!(
            start.elapsed() < Duration::from_secs(170),
            "crash harness too slow: {kills} kills"
        );
        // Converged on the deployed release? Then deploy the other one.
        let s = local_state(&dir);
        if s.phase == Phase::Committed
            && s.active.as_ref().map(|a| a.bundle_digest.as_str())
                == Some(digests[deployed].as_str())
        {
            deployed = 1 - deployed;
            installs += 1;
            env.deploy(APP, &releases[deployed].version, &[]);
            k = 1;
        }
        let by_transition = kills.is_multiple_of(2);
        let runlog = env.path("run.log");
        let stderr = if by_transition {
            Stdio::piped()
        } else {
            Stdio::from(std::fs::File::create(&runlog).expect("log"))
        };
        let mut child = agent_cmd(&env.url, &dir, None, &extra)
            .stderr(stderr)
            .spawn()
            .expect("spawn");
        if by_transition {
            // Kill right after the k-th state transition of this run.
            let (tx, rx) = mpsc::channel();
            let err = child.stderr.take().expect("stderr");
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if (line.contains("state change") || line.contains("switched current"))
                        && tx.send(()).is_err()
                    {
                        break;
                    }
                }
            });
            let mut seen = 0;
            while seen < k {
                match rx.recv_timeout(Duration::from_millis(1500)) {
                    Ok(()) => seen += 1,
                    Err(_) => break,
                }
            }
            if seen == k {
                transition_kills += 1;
                k += 1;
            } else {
                k = 1;
            }
        } else {
            std::thread::sleep(Duration::from_millis(rng.next() % 400));
        }
        if matches!(child.try_wait(), Ok(None)) {
            kills += 1;
        } else {
            dead += 1;
            let text = std::fs::read_to_string(&runlog).unwrap_or_default();
            assert!(dead < 20, "the agent keeps exiting on its own: {text}");
        }
        let _ = child.kill();
        let _ = child.wait();
        // The invariant: `current` is a complete release, old or new; the state file is whole.
        let (digest, name) =
            check_current(&dir).unwrap_or_else(|e| panic!("after kill {kills}: {e}"));
        assert!(
            digests.contains(&digest),
            "after kill {kills}: current is {name} {digest}"
        );
        let _ = local_state(&dir);
    }
    // Converge: no more kills.
    let mut last = agent_cmd(&env.url, &dir, None, &extra)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let want = format!("{APP}@{}", releases[deployed].version);
    let d = env.wait_running(&dir, &want, Duration::from_secs(60));
    let _ = last.kill();
    let _ = last.wait();
    let (digest, _) = check_current(&dir).expect("current");
    assert_eq!(digest, digests[deployed]);
    let s = local_state(&dir);
    assert_eq!(s.phase, Phase::Committed);
    let r = d.status.and_then(|s| s.running).expect("running");
    assert_eq!(
        r.bundle_digest, digest,
        "the server knows what the device runs"
    );
    assert_eq!(
        Some(r.slot.as_str()),
        s.active.as_ref().map(|a| a.slot.name())
    );
    eprintln!(
        "{kills} kills ({transition_kills} right after a transition), {installs} installs completed between kills, {:?}",
        start.elapsed()
    );
    assert!(
        installs >= 2,
        "installs must make progress despite the kills"
    );
}
