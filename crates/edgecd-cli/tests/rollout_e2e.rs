//! Progressive rollouts end to end: a real server (SQLite, HTTP on 127.0.0.1) and 500
//! simulated devices speaking the agent protocol. One fleet lives through a sequence of
//! releases: healthy, p95 regression, error-rate regression, confidence drift, just under
//! every threshold (p95 at 1.06x the baseline with 1.2x allowed, 1.2% errors with 3% allowed, a
//! slight confidence shift), too little traffic, and a server restart in the middle of a rollout.
use edgecd_cli::story::{Lab, Outcome, census, drive};
use std::collections::BTreeSet;
use std::time::Duration;

const DEVICES: usize = 500;

const SCENARIO: &str = r#"
default: {latency_ms: {p50: 60, p95: 120}, error_rate: 0.004, confidence: {mean: 0.91, sd: 0.04}, requests_per_checkin: 40}
releases:
  "receipt-classifier@1.2.0": {latency_ms: {p50: 190, p95: 430}}
  "receipt-classifier@1.3.0": {error_rate: 0.08}
  "receipt-classifier@1.4.0": {confidence: {mean: 0.55, sd: 0.12}}
  "receipt-classifier@1.5.0": {latency_ms: {p50: 64, p95: 127}, error_rate: 0.012, confidence: {mean: 0.905, sd: 0.04}, requests_per_checkin: 250}
  "receipt-classifier@1.6.0": {requests_per_checkin: 1}
"#;

fn spec(version: &str, first: &str) -> String {
    format!(
        r#"
release: receipt-classifier@{version}
selector: {{fleet: retail}}
steps:
  - canary: {first}
  - analyze: {{duration: 5s, interval: 1s}}
  - canary: {{percent: 25}}
  - analyze: {{duration: 3s, interval: 1s}}
  - canary: {{percent: 100}}
gates:
  - {{metric: latency_p95_ms, max: 300}}
  - {{metric: error_rate, max: 0.03}}
  - {{metric: latency_p95_ms, max_ratio: 1.2, against: baseline}}
  - {{metric: confidence_psi, max: 0.2, against: baseline}}
min_samples: 150
failure_limit: 2
"#
    )
}

fn run(lab: &Lab, fleet: &edgecd_sim::Fleet, version: &str, first: &str) -> Outcome {
    let st = lab
        .start_rollout(&spec(version, first))
        .expect("rollout starts");
    let id = st["rollout"]["id"].as_str().unwrap().to_string();
    drive(lab, fleet, &id, Duration::from_secs(120), &mut |_, _| {}).expect("rollout settles")
}

fn assert_stopped_at_canary(o: &Outcome, fleet: &edgecd_sim::Fleet, gate: &str, canary: usize) {
    assert_eq!(o.phase(), "aborted", "{}", o.status);
    let reason = o.status["rollout"]["state"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains(gate), "aborted for {gate}: {reason}");
    let cohort = o.cohort();
    assert_eq!(cohort.len(), canary, "only the canary was assigned");
    assert!(
        o.ever_ran.is_subset(&cohort),
        "no device outside the canary ever ran it: {:?}",
        o.ever_ran.difference(&cohort).collect::<Vec<_>>()
    );
    assert!(!o.ever_ran.is_empty(), "the canary did run it");
    let c = census(fleet);
    assert_eq!(c.len(), 1, "everyone is back on the baseline: {c:?}");
    let rolled: BTreeSet<String> = o.status["rollout"]["state"]["rolledBack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        rolled, cohort,
        "every device that got the release was assigned the baseline"
    );
    assert!(
        o.history.iter().any(|r| r.kind == "evaluation"
            && r.gates
                .iter()
                .any(|g| g.gate.contains(gate)
                    && matches!(g.verdict, edgecd_rollout::Verdict::Fail(_)))),
        "the audit log has the failing numbers"
    );
}

#[test]
fn rollouts_with_500_simulated_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lab = Lab::start(tmp.path(), 1, 500).unwrap();
    for (v, seed) in [
        ("1.0.0", 1),
        ("1.1.0", 2),
        ("1.2.0", 3),
        ("1.3.0", 4),
        ("1.4.0", 5),
        ("1.5.0", 6),
        ("1.6.0", 7),
        ("1.7.0", 8),
    ] {
        lab.release(v, seed).unwrap();
    }
    let fleet = lab
        .fleet(DEVICES, 25, serde_yaml::from_str(SCENARIO).unwrap(), 7)
        .unwrap();

    // 1.0.0 to everyone directly (the starting point), then a healthy 1.1.0 rollout.
    let d: edgecd_api::protocol::DeployResponse = lab
        .admin
        .deploy(&edgecd_api::protocol::DeployRequest {
            app: "receipt-classifier".into(),
            version: "1.0.0".into(),
            selector: Default::default(),
        })
        .unwrap();
    assert_eq!(d.assigned.len(), DEVICES);
    edgecd_cli::story::settle(
        &lab,
        &fleet,
        "receipt-classifier@1.0.0",
        Duration::from_secs(60),
    )
    .unwrap();
    let healthy = run(&lab, &fleet, "1.1.0", "{devices: 4, spread_by: site}");
    assert_eq!(healthy.phase(), "completed", "{}", healthy.status);
    assert_eq!(
        census(&fleet).get("receipt-classifier@1.1.0"),
        Some(&DEVICES)
    );
    assert_eq!(healthy.cohort().len(), DEVICES);

    // Regressions are stopped at the canary and rolled back.
    let p95 = run(&lab, &fleet, "1.2.0", "{devices: 4, spread_by: site}");
    assert_stopped_at_canary(&p95, &fleet, "latency_p95_ms", 4);
    let devices: Vec<edgecd_api::protocol::DeviceInfo> = lab.admin.list_devices().unwrap();
    let stores: BTreeSet<String> = p95
        .cohort()
        .iter()
        .map(|id| devices.iter().find(|d| &d.id == id).unwrap().labels["site"].clone())
        .collect();
    assert_eq!(stores.len(), 4, "the canary is spread over 4 stores");
    let errors = run(&lab, &fleet, "1.3.0", "{devices: 4, spread_by: site}");
    assert_stopped_at_canary(&errors, &fleet, "error_rate", 4);
    // "Canary to two stores": every device of two stores (500 / 25 = 20 per store).
    let drift = run(&lab, &fleet, "1.4.0", "{groups: 2, spread_by: site}");
    assert_stopped_at_canary(&drift, &fleet, "confidence_psi", 40);

    // Just under every threshold: promoted to everyone.
    let under = run(&lab, &fleet, "1.5.0", "{devices: 4, spread_by: site}");
    assert_eq!(under.phase(), "completed", "{}", under.status);
    assert_eq!(
        census(&fleet).get("receipt-classifier@1.5.0"),
        Some(&DEVICES)
    );

    // Too little traffic: the analysis holds and never promotes.
    let st = lab
        .start_rollout(&spec("1.6.0", "{devices: 4, spread_by: site}"))
        .unwrap();
    let id = st["rollout"]["id"].as_str().unwrap().to_string();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| fleet.run(&stop));
        std::thread::sleep(Duration::from_secs(12));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let st = lab.status(&id).unwrap();
    assert_eq!(st["rollout"]["state"]["phase"], "progressing");
    assert_eq!(st["rollout"]["state"]["step"], 1, "still analyzing: {st}");
    assert!(
        st["rollout"]["state"]["reason"]
            .as_str()
            .unwrap()
            .contains("min_samples"),
        "{st}"
    );
    assert_eq!(
        st["rollout"]["state"]["cohort"].as_array().unwrap().len(),
        4
    );
    let _: serde_json::Value = lab
        .admin
        .send(
            "POST",
            &format!("/api/v1/admin/rollouts/{id}/abort"),
            &serde_json::json!({}),
        )
        .unwrap();
    let aborted = drive(&lab, &fleet, &id, Duration::from_secs(60), &mut |_, _| {}).unwrap();
    assert_eq!(aborted.phase(), "aborted");
    assert_eq!(
        census(&fleet).get("receipt-classifier@1.5.0"),
        Some(&DEVICES)
    );

    // A server restart in the middle of the analysis: the rollout resumes and completes,
    // and no effect is applied twice (each device's assignment version rises once per change).
    let st = lab
        .start_rollout(&spec("1.7.0", "{devices: 4, spread_by: site}"))
        .unwrap();
    let id = st["rollout"]["id"].as_str().unwrap().to_string();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| fleet.run(&stop));
        for _ in 0..100 {
            if lab.status(&id).unwrap()["rollout"]["state"]["step"] == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(
        lab.status(&id).unwrap()["rollout"]["state"]["step"],
        1,
        "analysis started before the restart"
    );
    let before: Vec<edgecd_api::protocol::DeviceInfo> = lab.admin.list_devices().unwrap();
    lab.restart(Duration::from_secs(2)).unwrap();
    let resumed = drive(&lab, &fleet, &id, Duration::from_secs(120), &mut |_, _| {}).unwrap();
    assert_eq!(resumed.phase(), "completed", "{}", resumed.status);
    assert_eq!(
        census(&fleet).get("receipt-classifier@1.7.0"),
        Some(&DEVICES)
    );
    let after: Vec<edgecd_api::protocol::DeviceInfo> = lab.admin.list_devices().unwrap();
    let version = |list: &[edgecd_api::protocol::DeviceInfo], id: &str| {
        list.iter()
            .find(|d| d.id == id)
            .and_then(|d| d.assignment_version)
            .unwrap_or(0)
    };
    for d in &after {
        let (b, a) = (version(&before, &d.id), version(&after, &d.id));
        assert!(
            a <= b + 1,
            "device {} got {} new assignments for one release change",
            d.id,
            a - b
        );
    }
    let starts = resumed
        .history
        .iter()
        .filter(|r| r.kind == "started")
        .count();
    assert_eq!(starts, 1);
}
