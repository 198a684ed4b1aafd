//! The server's `/metrics` during a live rollout: promtool-clean, and the numbers agree with
//! the fleet (devices by release, rollouts by phase, gate values and thresholds, check-ins
//! counted, devices gone silent).
use edgecd_cli::story::{Lab, settle};
use std::time::Duration;

fn scrape(lab: &Lab) -> String {
    ureq::get(&format!("{}/metrics", lab.url()))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap()
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn server_metrics_are_promtool_clean_and_true() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab::start(tmp.path(), 1, 250).unwrap();
    lab.release("1.0.0", 1).unwrap();
    lab.release("1.1.0", 2).unwrap();
    let fleet = lab
        .fleet(12, 3, edgecd_sim::Scenario::default(), 5)
        .unwrap();
    lab.admin
        .deploy(&edgecd_api::protocol::DeployRequest {
            app: "receipt-classifier".into(),
            version: "1.0.0".into(),
            selector: Default::default(),
        })
        .unwrap();
    settle(
        &lab,
        &fleet,
        "receipt-classifier@1.0.0",
        Duration::from_secs(60),
    )
    .unwrap();
    let st = lab
        .start_rollout("release: receipt-classifier@1.1.0\nsteps:\n  - canary: {devices: 2}\n  - analyze: {duration: 1h, interval: 1s}\ngates:\n  - {metric: error_rate, max: 0.5}\nmin_samples: 10\n")
        .unwrap();
    let id = st["rollout"]["id"].as_str().unwrap().to_string();
    // Let the canary install and a few evaluations happen.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| fleet.run(&stop));
        for _ in 0..100 {
            if lab.status(&id).unwrap()["rollout"]["state"]["lastGates"]
                .as_array()
                .is_some_and(|g| !g.is_empty())
                && lab.status(&id).unwrap()["rollout"]["state"]["step"] == 1
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let text = scrape(&lab);
    let devices: f64 = text
        .lines()
        .filter(|l| l.starts_with("edgecd_server_devices{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(devices, 12.0, "{text}");
    assert!(
        text.contains("release=\"receipt-classifier@1.1.0\""),
        "{text}"
    );
    assert_eq!(
        value(&text, "edgecd_server_rollouts{phase=\"progressing\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "edgecd_server_rollout_step{{rollout=\"{id}\",release=\"receipt-classifier@1.1.0\"}}"
            )
        ),
        Some(2.0),
        "{text}"
    );
    assert!(text.contains("edgecd_server_rollout_gate_value{"), "{text}");
    assert_eq!(
        value(
            &text,
            &format!(
                "edgecd_server_rollout_gate_threshold{{rollout=\"{id}\",gate=\"error_rate <= 0.5\",bound=\"max\"}}"
            )
        ),
        Some(0.5),
        "{text}"
    );
    // The deploy's fleet: its 12 devices by standing, most still converged (the canary's
    // two run the rollout's release).
    let fleet_state = |state: &str| {
        value(
            &text,
            &format!(
                "edgecd_server_fleet_devices{{fleet=\"deploy:receipt-classifier\",state=\"{state}\"}}"
            ),
        )
    };
    let standings: Vec<f64> = ["converged", "converging", "blocked", "left"]
        .iter()
        .map(|s| fleet_state(s).unwrap_or_else(|| panic!("{s} missing: {text}")))
        .collect();
    assert_eq!(standings.iter().sum::<f64>(), 12.0, "{text}");
    assert!(standings[0] >= 10.0, "{text}");
    // The fleet checked in every second until just now: nobody is silent yet.
    assert_eq!(
        value(&text, "edgecd_server_devices_silent"),
        Some(0.0),
        "{text}"
    );
    assert!(
        value(&text, "edgecd_server_checkin_duration_seconds_count").unwrap() > 12.0,
        "{text}"
    );

    edgecd_testkit::assert_promtool_clean(&text);

    // The fleet stopped: past 3 check-in intervals (1 s here) every device is silent, except
    // a revoked one, which is not expected to check in.
    std::thread::sleep(Duration::from_millis(4500));
    let first = lab.admin.list_devices().unwrap()[0].id.clone();
    lab.admin.revoke_device(&first).unwrap();
    let text = scrape(&lab);
    assert_eq!(
        value(&text, "edgecd_server_devices_silent"),
        Some(11.0),
        "{text}"
    );
    edgecd_testkit::assert_promtool_clean(&text);

    // An operator's abort is counted by cause, with the devices sent back.
    assert_eq!(
        value(
            &text,
            "edgecd_server_rollout_aborts_total{cause=\"operator\"}"
        ),
        Some(0.0),
        "{text}"
    );
    lab.admin
        .send::<_, serde_json::Value>(
            "POST",
            &format!("/api/v1/admin/rollouts/{id}/abort"),
            &serde_json::json!({}),
        )
        .unwrap();
    let text = scrape(&lab);
    assert_eq!(
        value(
            &text,
            "edgecd_server_rollout_aborts_total{cause=\"operator\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "edgecd_server_rollout_aborts_total{cause=\"gates\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "edgecd_server_rollback_devices_total"),
        Some(2.0),
        "{text}"
    );
}
