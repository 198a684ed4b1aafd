//! Observability end to end with the real Debian Prometheus and Alertmanager on 127.0.0.1
//! (started by the test, see `edgecd_testkit::services`):
//! - rollout gates that query Prometheus (scraping the simulated devices' exporter) promote a
//!   healthy release and stop a regression; with Prometheus killed mid-analysis the rollout
//!   holds past the end of the analysis, never promotes, and resumes when it is back;
//! - an alert fed to Alertmanager's API is delivered to the server's receiver, which aborts the
//!   matching rollout and rolls its canary back;
//! - the simulator's exporter passes `promtool check metrics`.
use edgecd_cli::story::{Lab, census, settle};
use edgecd_rollout::Verdict;
use edgecd_server::util::Secret;
use edgecd_sim::Fleet;
use edgecd_testkit::services::Service;
use edgecd_testkit::{StopOnDrop, wait_for};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const APP: &str = "receipt-classifier";

const SCENARIO: &str = r#"
default: {latency_ms: {p50: 60, p95: 120}, error_rate: 0.004, confidence: {mean: 0.91, sd: 0.04}, requests_per_checkin: 40}
releases:
  "receipt-classifier@1.2.0": {latency_ms: {p50: 190, p95: 430}}
"#;

/// A local webhook receiver: records each POSTed JSON body, answers 200.
fn capture_webhooks(stop: Arc<AtomicBool>) -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    l.set_nonblocking(true).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(vec![]));
    let out = seen.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            c.set_nonblocking(false).unwrap();
            let mut r = BufReader::new(c);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice::<Value>(&body)
            {
                seen.lock().unwrap().push(v);
            }
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, out)
}

fn deploy_everywhere(lab: &Lab, fleet: &Fleet, version: &str) {
    lab.admin
        .deploy(&edgecd_api::protocol::DeployRequest {
            app: APP.into(),
            version: version.into(),
            selector: Default::default(),
        })
        .unwrap();
    settle(
        lab,
        fleet,
        &format!("{APP}@{version}"),
        Duration::from_secs(60),
    )
    .unwrap();
}

fn promql_spec(version: &str, analysis_secs: u64) -> String {
    format!(
        r#"
release: {APP}@{version}
selector: {{fleet: retail}}
steps:
  - canary: {{devices: 6}}
  - analyze: {{duration: {analysis_secs}s, interval: 2s}}
  - canary: {{percent: 100}}
gates:
  - name: canary p95 ms (Prometheus)
    provider: prometheus
    query: 'histogram_quantile(0.95, sum by (le) (rate(edgecd_infer_request_duration_seconds_bucket{{release="{{{{release}}}}", device=~"{{{{cohort}}}}"}}[15s]))) * 1000'
    max: 300
  - name: canary error ratio (Prometheus)
    provider: prometheus
    query: 'sum(rate(edgecd_infer_request_errors_total{{release="{{{{release}}}}", device=~"{{{{cohort}}}}"}}[15s])) / sum(rate(edgecd_infer_requests_total{{release="{{{{release}}}}", device=~"{{{{cohort}}}}"}}[15s]))'
    max: 0.03
error_limit: 1000
"#
    )
}

/// Waits until rollout `id` reaches `phase`; returns its status.
fn wait_phase(lab: &Lab, id: &str, phase_: &str, timeout: Duration) -> Value {
    wait_for(&format!("rollout {id} to be {phase_}"), timeout, || {
        let st = lab.status(id).ok()?;
        (phase(&st) == phase_).then_some(st)
    })
}

fn phase(st: &Value) -> String {
    st["rollout"]["state"]["phase"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

#[test]
fn promql_gates_on_a_real_prometheus_promote_stop_and_hold_through_an_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let prom_port = edgecd_testkit::free_port();
    let lab = Lab::start_with(tmp.path(), 1, 500, |c| {
        c.prometheus_url = Some(format!("http://127.0.0.1:{prom_port}"));
        c.prometheus_timeout_ms = 2000;
    })
    .unwrap();
    for (v, seed) in [("1.0.0", 1), ("1.1.0", 2), ("1.2.0", 3)] {
        lab.release(v, seed).unwrap();
    }
    let fleet = lab
        .fleet(40, 4, serde_yaml::from_str(SCENARIO).unwrap(), 11)
        .unwrap();
    let exporter_stop = Arc::new(AtomicBool::new(false));
    let _stop_exporter = StopOnDrop(&exporter_stop);
    let (exporter, _h) = edgecd_sim::exporter::serve(
        "127.0.0.1:0".parse().unwrap(),
        fleet.exposition.clone(),
        exporter_stop.clone(),
    )
    .unwrap();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         scrape_configs:\n  - job_name: edgecd-sim\n    static_configs: [{{targets: ['{exporter}']}}]\n"
    );
    let Some(mut prometheus) =
        Service::prometheus(&tmp.path().join("prometheus"), &config, prom_port)
    else {
        return;
    };
    deploy_everywhere(&lab, &fleet, "1.0.0");

    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| fleet.run(&stop));
        let _stop = StopOnDrop(&stop);

        // 1.1.0 is healthy: wait for a passing evaluation in the analysis, then kill Prometheus.
        let st = lab.start_rollout(&promql_spec("1.1.0", 20)).unwrap();
        let id = st["rollout"]["id"].as_str().unwrap().to_string();
        wait_for(
            "a passing Prometheus evaluation",
            Duration::from_secs(60),
            || {
                let h = lab.history(&id).ok()?;
                h.iter()
                    .any(|r| r.kind == "evaluation" && r.message == "all gates pass")
                    .then_some(Value::Null)
            },
        );
        let st = lab.status(&id).unwrap();
        assert_eq!(st["rollout"]["state"]["step"], 1, "{st}");
        let analysis_ends = st["rollout"]["state"]["stepStartedAt"].as_i64().unwrap() + 20;
        prometheus.stop();
        // Hold through the end of the analysis and beyond: never promoted.
        while (edgecd_server::util::now() as i64) < analysis_ends + 6 {
            let st = lab.status(&id).unwrap();
            assert_eq!(st["rollout"]["state"]["step"], 1, "never promoted: {st}");
            assert_eq!(phase(&st), "progressing", "{st}");
            std::thread::sleep(Duration::from_millis(300));
        }
        let st = lab.status(&id).unwrap();
        let reason = st["rollout"]["state"]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(
            reason.contains("Prometheus query failed") && reason.contains("unreachable"),
            "held, saying why: {reason}"
        );
        let history = lab.history(&id).unwrap();
        let failed = history
            .iter()
            .filter(|r| r.kind == "evaluation")
            .flat_map(|r| &r.gates)
            .find(|g| matches!(g.verdict, Verdict::Error(_)))
            .expect("an evaluation with a provider error in the audit log");
        let q = failed.query.as_deref().unwrap_or_default();
        assert!(
            q.contains("release=\"receipt-classifier@1.1.0\"") && q.contains("device=~\""),
            "the audit log has the query as sent: {q}"
        );
        assert!(!q.contains("{{"), "placeholders filled in: {q}");

        // Prometheus comes back on the same port and data: the rollout resumes and completes.
        prometheus.start();
        let done = wait_phase(&lab, &id, "completed", Duration::from_secs(90));
        let passed = lab
            .history(&id)
            .unwrap()
            .into_iter()
            .rev()
            .find(|r| r.kind == "evaluation" && r.message == "all gates pass")
            .expect("a passing evaluation after the outage");
        let p95 = passed.gates[0].value.expect("a p95 value");
        assert!(
            (60.0..300.0).contains(&p95),
            "p95 from Prometheus is plausible for a 120 ms release: {p95}"
        );
        assert_eq!(
            done["rollout"]["state"]["cohort"].as_array().unwrap().len(),
            40
        );

        // 1.2.0 regresses p95 (430 ms): Prometheus sees it and the canary is rolled back.
        let st = lab.start_rollout(&promql_spec("1.2.0", 20)).unwrap();
        let id = st["rollout"]["id"].as_str().unwrap().to_string();
        let st = wait_phase(&lab, &id, "aborted", Duration::from_secs(90));
        let reason = st["rollout"]["state"]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(reason.contains("canary p95 ms (Prometheus)"), "{reason}");
        let failing = lab
            .history(&id)
            .unwrap()
            .into_iter()
            .flat_map(|r| r.gates)
            .find(|g| matches!(g.verdict, Verdict::Fail(_)))
            .expect("the failing numbers are in the audit log");
        assert!(failing.value.unwrap() > 300.0, "{failing:?}");
        assert_eq!(
            st["rollout"]["state"]["cohort"].as_array().unwrap().len(),
            6
        );
        wait_for("the canary back on 1.1.0", Duration::from_secs(60), || {
            let c = census(&fleet);
            (c.len() == 1 && c.contains_key("receipt-classifier@1.1.0")).then_some(Value::Null)
        });
    });
}

#[test]
fn an_alert_through_a_real_alertmanager_aborts_the_matching_rollout() {
    let tmp = tempfile::tempdir().unwrap();
    let token = "am-token-0123456789abcdef";
    let hmac_key = "hmac-key-0123456789abcdef";
    let hooks_stop = Arc::new(AtomicBool::new(false));
    let _stop_hooks = StopOnDrop(&hooks_stop);
    let (hook_url, delivered) = capture_webhooks(hooks_stop.clone());
    let notify = edgecd_server::notify::NotifyConfig::from_yaml(
        &format!(
            "channels:\n  audit: {{type: webhook, url: \"{hook_url}\", secret_env: HOOK_KEY, runbook_url: \"https://runbooks.example/edgecd\"}}\n"
        ),
        tmp.path(),
        &|k| (k == "HOOK_KEY").then(|| "hook-key-0123456789abcdef".to_string()),
    )
    .unwrap();
    let lab = Lab::start_with(tmp.path(), 1, 500, |c| {
        c.alert_hook_token = Some(Secret::new(token));
        c.alert_hook_hmac_key = Some(Secret::new(hmac_key));
        c.notifications = notify;
    })
    .unwrap();
    for (v, seed) in [("1.0.0", 1), ("1.1.0", 2)] {
        lab.release(v, seed).unwrap();
    }
    let fleet = lab
        .fleet(20, 4, serde_yaml::from_str(SCENARIO).unwrap(), 5)
        .unwrap();
    deploy_everywhere(&lab, &fleet, "1.0.0");

    let token_file = tmp.path().join("am-token");
    std::fs::write(&token_file, token).unwrap();
    let am_config = format!(
        r#"
route:
  receiver: edgecd
  group_by: [alertname, edgecd_rollout]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: edgecd
    webhook_configs:
      - url: {}/api/v1/hooks/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials_file: {}
"#,
        lab.url(),
        token_file.display()
    );
    let Some(am) = Service::alertmanager(&tmp.path().join("alertmanager"), &am_config) else {
        return;
    };

    // The receiver refuses callers without the token or a valid signature.
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let hook = format!("{}/api/v1/hooks/alertmanager", lab.url());
    let body = r#"{"version":"4","status":"firing","alerts":[]}"#;
    let post = |auth: Option<(&str, String)>| {
        let mut r = http.post(&hook).header("Content-Type", "application/json");
        if let Some((h, v)) = auth {
            r = r.header(h, v);
        }
        r.send(body).unwrap().status().as_u16()
    };
    assert_eq!(post(None), 401);
    assert_eq!(post(Some(("Authorization", "Bearer wrong".into()))), 401);
    assert_eq!(
        post(Some(("X-Edgecd-Signature-256", "sha256=00".into()))),
        401
    );
    assert_eq!(
        post(Some(("Authorization", format!("Bearer {token}")))),
        200
    );
    let sig = {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(hmac_key.as_bytes()).unwrap();
        m.update(body.as_bytes());
        hex::encode(m.finalize().into_bytes())
    };
    assert_eq!(
        post(Some(("X-Edgecd-Signature-256", format!("sha256={sig}")))),
        200
    );

    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| fleet.run(&stop));
        let _stop = StopOnDrop(&stop);
        let st = lab
            .start_rollout(&format!(
                r#"
release: {APP}@1.1.0
selector: {{fleet: retail}}
steps:
  - canary: {{devices: 4}}
  - analyze: {{duration: 10m, interval: 2s}}
  - canary: {{percent: 100}}
gates:
  - {{metric: latency_p95_ms, max: 300}}
min_samples: 50
notify: [audit]
"#
            ))
            .unwrap();
        let id = st["rollout"]["id"].as_str().unwrap().to_string();
        wait_for("the canary to run 1.1.0", Duration::from_secs(60), || {
            (census(&fleet).get("receipt-classifier@1.1.0") == Some(&4)).then_some(Value::Null)
        });
        // An alert about another rollout changes nothing; the one naming ours stops it.
        let alert = |rollout: &str| {
            json!({
                "labels": {"alertname": "EdgeInferenceErrorsHigh", "severity": "critical", "edgecd_rollout": rollout},
                "annotations": {"summary": "error ratio 9% on the canary"},
                "generatorURL": "http://prometheus.example/graph"
            })
        };
        let r = http
            .post(format!("{}/api/v2/alerts", am.url()))
            .header("Content-Type", "application/json")
            .send(json!([alert("other-rollout"), alert(&id)]).to_string())
            .unwrap();
        assert_eq!(r.status(), 200, "Alertmanager accepted the alerts");
        let st = wait_phase(&lab, &id, "aborted", Duration::from_secs(60));
        let reason = st["rollout"]["state"]["reason"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(
            reason,
            "alert EdgeInferenceErrorsHigh firing (severity critical): error ratio 9% on the canary [http://prometheus.example/graph]"
        );
        assert_eq!(
            st["rollout"]["state"]["rolledBack"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        wait_for("the canary back on 1.0.0", Duration::from_secs(60), || {
            let c = census(&fleet);
            (c.len() == 1 && c.contains_key("receipt-classifier@1.0.0")).then_some(Value::Null)
        });
        let history = lab.history(&id).unwrap();
        assert!(
            history
                .iter()
                .any(|r| r.kind == "abort" && r.message == reason)
        );
        assert!(history.iter().any(|r| r.kind == "rollback"));
        // The channel heard the whole story, with the alert as the reason.
        let events = wait_for(
            "started, aborted and rolled_back notifications",
            Duration::from_secs(30),
            || {
                let got = delivered.lock().unwrap().clone();
                let names: Vec<&str> = got.iter().filter_map(|v| v["event"].as_str()).collect();
                ["started", "aborted", "rolled_back"]
                    .iter()
                    .all(|e| names.contains(e))
                    .then(|| Value::Array(got.clone()))
            },
        );
        let aborted = events
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["event"] == "aborted")
            .unwrap();
        assert_eq!(aborted["rollout"]["id"], id.as_str());
        assert_eq!(aborted["rollout"]["reason"], reason);
        assert_eq!(aborted["runbookUrl"], "https://runbooks.example/edgecd");
        let rolled = events
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["event"] == "rolled_back")
            .unwrap();
        assert_eq!(
            rolled["rollout"]["baseline"], "receipt-classifier@1.0.0",
            "{rolled}"
        );
    });
    drop(am);
}

#[test]
fn simulator_exporter_passes_promtool() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab::start(tmp.path(), 1, 500).unwrap();
    lab.release("1.0.0", 1).unwrap();
    let fleet = lab
        .fleet(5, 2, serde_yaml::from_str(SCENARIO).unwrap(), 3)
        .unwrap();
    deploy_everywhere(&lab, &fleet, "1.0.0");
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(&stop);
    let (addr, _h) = edgecd_sim::exporter::serve(
        "127.0.0.1:0".parse().unwrap(),
        fleet.exposition.clone(),
        stop.clone(),
    )
    .unwrap();
    let text = ureq::get(format!("http://{addr}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        text.contains("edgecd_infer_request_duration_seconds_bucket{device=\""),
        "{text}"
    );
    edgecd_testkit::assert_promtool_clean(&text);
}

/// A Prometheus that accepts connections and never answers: gate queries time out (held,
/// with the reason), and an operator's command is not held up behind the hung query.
#[test]
fn a_hung_prometheus_holds_the_rollout_without_blocking_operators() {
    let tmp = tempfile::tempdir().unwrap();
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_addr = hung.local_addr().unwrap();
    let lab = Lab::start_with(tmp.path(), 1, 300, |c| {
        c.prometheus_url = Some(format!("http://{hung_addr}"));
        c.prometheus_timeout_ms = 8000;
    })
    .unwrap();
    for (v, seed) in [("1.0.0", 1), ("1.1.0", 2)] {
        lab.release(v, seed).unwrap();
    }
    let fleet = lab
        .fleet(8, 2, serde_yaml::from_str(SCENARIO).unwrap(), 9)
        .unwrap();
    deploy_everywhere(&lab, &fleet, "1.0.0");
    let stop = AtomicBool::new(false);
    // Keep accepted connections open and silent.
    let held = std::sync::Mutex::new(vec![]);
    hung.set_nonblocking(true).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| fleet.run(&stop));
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if let Ok((c, _)) = hung.accept() {
                    held.lock().unwrap().push(c);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let st = lab.start_rollout(&promql_spec("1.1.0", 5)).unwrap();
        let id = st["rollout"]["id"].as_str().unwrap().to_string();
        wait_for("a query to hang", Duration::from_secs(60), || {
            let st = lab.status(&id).ok()?;
            (st["rollout"]["state"]["step"] == 1 && !held.lock().unwrap().is_empty())
                .then_some(Value::Null)
        });
        let t = Instant::now();
        let paused: Value = lab
            .admin
            .send(
                "POST",
                &format!("/api/v1/admin/rollouts/{id}/pause"),
                &json!({}),
            )
            .unwrap();
        let took = t.elapsed();
        assert_eq!(phase(&paused), "paused");
        assert!(
            took < Duration::from_secs(4),
            "pause waited {took:?} behind an 8 s query"
        );
        lab.admin
            .send::<_, Value>(
                "POST",
                &format!("/api/v1/admin/rollouts/{id}/resume"),
                &json!({}),
            )
            .unwrap();
        let st = wait_for(
            "the timeout to be recorded",
            Duration::from_secs(60),
            || {
                let st = lab.status(&id).ok()?;
                let why = st["rollout"]["state"]["reason"].as_str()?.to_string();
                why.contains("Prometheus query failed").then_some(st)
            },
        );
        assert_eq!(
            st["rollout"]["state"]["step"], 1,
            "held, not promoted: {st}"
        );
    });
}
