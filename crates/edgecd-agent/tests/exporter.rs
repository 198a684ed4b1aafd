//! The agent's local `/metrics` (`--metrics-listen`) on a real agent process: after it installs
//! a release from the in-process server, the live scrape reports that release, one committed
//! install, exactly the bytes it downloaded, its check-ins and SoC readings, and passes
//! `promtool check metrics` without a word.
#![cfg(target_arch = "x86_64")]

mod common;
use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn scrape(url: &str) -> Result<(String, String), String> {
    let r = ureq::get(url).call().map_err(|e| e.to_string())?;
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = r.into_body().read_to_string().map_err(|e| e.to_string())?;
    Ok((ct, body))
}

/// The value of the series written exactly as `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn agent_serves_live_promtool_clean_metrics() {
    let env = Env::new();
    let r1 = env.release("receipt-parser", "1.0.0", 96 * 1024);
    env.publish(&r1).expect("publish");
    let downloaded: u64 = [&r1.manifest, &r1.manifest_sig, &r1.bundle, &r1.bundle_sig]
        .iter()
        .map(|p| std::fs::metadata(p).expect("release file").len())
        .sum();
    let (thermal, throttle) = (env.path("temp"), env.path("get_throttled"));
    std::fs::write(&thermal, "47500\n").expect("thermal");
    std::fs::write(&throttle, "0x0\n").expect("throttle");
    let port = edgecd_testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let token = env.token(1, &[]);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut agent = spawn_agent(
        &env,
        "agent",
        Some(&token),
        &[
            "--metrics-listen",
            &listen,
            "--thermal-path",
            thermal.to_str().expect("utf8"),
            "--throttle-path",
            throttle.to_str().expect("utf8"),
        ],
    );
    let url = format!("http://{listen}/metrics");
    // Before any install: no release, idle, all outcomes at zero.
    let (ct, early) = wait_for(T, "the exporter to answer", || scrape(&url).ok());
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!early.contains("edgecd_agent_release_info{"), "{early}");
    for o in ["committed", "failed", "rolled_back", "refused"] {
        assert_eq!(
            value(
                &early,
                &format!("edgecd_agent_installs_total{{outcome=\"{o}\"}}")
            ),
            Some(0.0),
            "{early}"
        );
    }

    wait_for(T, "the agent to enroll", || {
        (env.devices().len() == 1).then_some(())
    });
    env.deploy("receipt-parser", "1.0.0", &[]);
    env.wait_running(&agent.data_dir, "receipt-parser@1.0.0", T);
    // The exporter is live: it follows the agent without a restart.
    let text = wait_for(T, "the exporter to show the committed release", || {
        let (_, t) = scrape(&url).ok()?;
        (value(&t, "edgecd_agent_installs_total{outcome=\"committed\"}") == Some(1.0)).then_some(t)
    });
    assert!(agent.alive(), "{}", agent.log_text());
    assert_eq!(
        value(
            &text,
            "edgecd_agent_release_info{app=\"receipt-parser\",version=\"1.0.0\",slot=\"a\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("edgecd_agent_release_info{"))
            .count(),
        1
    );
    assert_eq!(
        value(&text, "edgecd_agent_phase{phase=\"committed\"}"),
        Some(1.0)
    );
    let phases_on: f64 = text
        .lines()
        .filter(|l| l.starts_with("edgecd_agent_phase{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(phases_on, 1.0, "{text}");
    for o in ["failed", "rolled_back", "refused"] {
        assert_eq!(
            value(
                &text,
                &format!("edgecd_agent_installs_total{{outcome=\"{o}\"}}")
            ),
            Some(0.0),
            "{text}"
        );
    }
    // Exactly the release manifest, its signature, the bundle and its signature.
    assert_eq!(
        value(&text, "edgecd_agent_download_bytes_total"),
        Some(downloaded as f64),
        "{text}"
    );
    let ok = value(&text, "edgecd_agent_checkins_total{result=\"ok\"}").expect("ok checkins");
    assert!(ok >= 2.0, "{text}");
    let last = value(&text, "edgecd_agent_last_checkin_success_timestamp_seconds").expect("last");
    let started = value(&text, "edgecd_agent_start_time_seconds").expect("start time");
    assert!(started >= before as f64 && last >= started, "{text}");
    assert_eq!(value(&text, "edgecd_agent_temperature_celsius"), Some(47.5));
    assert_eq!(value(&text, "edgecd_agent_throttled"), Some(0.0));

    // The SoC starts throttling: the next reading shows it and counts one episode.
    std::fs::write(&throttle, "0x4\n").expect("throttle");
    let hot = wait_for(T, "the exporter to report throttling", || {
        let (_, t) = scrape(&url).ok()?;
        (value(&t, "edgecd_agent_throttled") == Some(1.0)).then_some(t)
    });
    assert_eq!(
        value(&hot, "edgecd_agent_throttle_events_total"),
        Some(1.0),
        "{hot}"
    );
    // Other paths and methods.
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let r = http
        .get(&format!("http://{listen}/"))
        .call()
        .expect("GET /");
    assert_eq!(r.status().as_u16(), 404);
    let r = http.post(&url).send("x").expect("POST");
    assert_eq!(r.status().as_u16(), 405);

    // promtool has nothing to say about the live text.
    edgecd_testkit::assert_promtool_clean(&hot);
    agent.kill();
}

#[test]
fn network_address_needs_the_explicit_opt_in() {
    let env = Env::new();
    let o = agent_cmd(
        &env.url,
        &env.path("agent"),
        Some("unused"),
        &["--metrics-listen", "0.0.0.0:0"],
    )
    .output()
    .expect("agent");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--metrics-listen-any"), "{err}");
    assert!(env.devices().is_empty(), "refused before enrolling");
}
