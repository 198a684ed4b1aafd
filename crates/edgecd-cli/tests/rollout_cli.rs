//! The rollout verbs through the real `edgecd` binary against a running server with a small
//! simulated fleet: start, status (--json), pause/resume, approve, abort, history, rollback.
mod common;
use common::{lab_cli as cli, lab_json as json, lab_ok as ok};

use edgecd_cli::story::{Lab, census, settle};
use edgecd_testkit::StopOnDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn wait_for(
    lab: &Lab,
    id: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let st = json(lab, &["rollout", "status", id, "--json"]);
        if pred(&st) {
            return st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "waiting for {what}: {st}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn rollout_verbs_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab::start(tmp.path(), 1, 250).unwrap();
    lab.release("1.0.0", 1).unwrap();
    lab.release("1.1.0", 2).unwrap();
    let fleet = lab
        .fleet(20, 5, edgecd_sim::Scenario::default(), 3)
        .unwrap();
    ok(
        &lab,
        &[
            "deploy",
            "receipt-classifier@1.0.0",
            "--selector",
            "fleet=retail",
        ],
    );
    settle(
        &lab,
        &fleet,
        "receipt-classifier@1.0.0",
        Duration::from_secs(60),
    )
    .unwrap();

    let spec = tmp.path().join("rollout.yaml");
    std::fs::write(
        &spec,
        "release: receipt-classifier@1.1.0\nselector: {fleet: retail}\nsteps:\n  - canary: {devices: 2, spread_by: site}\n  - approve: {}\n  - canary: {percent: 50}\n  - pause: {}\n  - canary: {percent: 100}\ngates:\n  - {metric: error_rate, max: 0.5}\n",
    )
    .unwrap();
    // A malformed spec is refused before anything is sent.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "release: receipt-classifier@1.1.0\nsteps: []\n").unwrap();
    let o = cli(&lab, &["rollout", "start", "-f", bad.to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("steps is empty"));

    let started = json(
        &lab,
        &["rollout", "start", "-f", spec.to_str().unwrap(), "--json"],
    );
    assert_eq!(started["rollout"]["baseline"], "receipt-classifier@1.0.0");
    let id = started["rollout"]["id"].as_str().unwrap().to_string();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| fleet.run(&stop));
        let _guard = StopOnDrop(&stop);
        let st = wait_for(&lab, &id, "approval", |st| {
            st["rollout"]["state"]["phase"] == "awaiting_approval"
        });
        assert_eq!(
            st["rollout"]["state"]["cohort"].as_array().unwrap().len(),
            2
        );
        let human = ok(&lab, &["rollout", "status", &id]);
        assert!(
            human.contains("awaiting_approval") && human.contains("step    2/5"),
            "{human}"
        );
        ok(&lab, &["rollout", "approve", &id]);
        wait_for(&lab, &id, "the pause step", |st| {
            st["rollout"]["state"]["phase"] == "paused" && st["rollout"]["state"]["step"] == 3
        });
        assert_eq!(
            json(&lab, &["rollout", "status", &id, "--json"])["rollout"]["state"]["cohort"]
                .as_array()
                .unwrap()
                .len(),
            10
        );
        let o = cli(&lab, &["rollout", "approve", &id]);
        assert!(
            !o.status.success(),
            "approve is refused outside an approval step"
        );
        ok(&lab, &["rollout", "resume", &id]);
        wait_for(&lab, &id, "a hold on 100%", |st| {
            st["rollout"]["state"]["step"] == 4
        });
        ok(&lab, &["rollout", "abort", &id]);
        let st = wait_for(&lab, &id, "the abort", |st| {
            st["rollout"]["state"]["phase"] == "aborted"
        });
        assert!(
            st["rollout"]["state"]["reason"]
                .as_str()
                .unwrap()
                .contains("operator")
        );
        assert!(
            ok(&lab, &["rollout", "status", &id]).contains("phase   aborted (stopped by operator)"),
            "status names what stopped the rollout"
        );
        // The manual abort rolls every device that got 1.1.0 back.
        let t = Instant::now();
        while census(&fleet).get("receipt-classifier@1.0.0") != Some(&20) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{:?}\n{}",
                census(&fleet),
                ok(&lab, &["rollout", "history", &id])
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let history = ok(&lab, &["rollout", "history", &id]);
    assert!(
        history.contains("approved by an operator") && history.contains("resumed by an operator"),
        "{history}"
    );
    for kind in [
        "started", "assign", "approval", "promote", "pause", "abort", "rollback",
    ] {
        assert!(history.contains(kind), "history has {kind}: {history}");
    }
    // Its devices went back with the abort: a rollback now is refused, saying so.
    let o = cli(&lab, &["rollout", "rollback", &id]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("409") && err.contains("already aborted"),
        "{err}"
    );
    let list = json(&lab, &["rollout", "status", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Manual fleet rollback to an explicit version.
    let out = ok(
        &lab,
        &["rollback", "receipt-classifier", "--to", "1.0.0", "--yes"],
    );
    assert!(out.contains("20 devices"), "{out}");
}
