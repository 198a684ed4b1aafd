//! Scenario files resolve per release and per label, and bad ones are refused clearly.
use edgecd_sim::Scenario;
use std::collections::BTreeMap;

#[test]
fn layers_resolve_in_order() {
    let s: Scenario = serde_yaml::from_str(
        r#"
default: {latency_ms: {p50: 80, p95: 150}, error_rate: 0.01}
by_label:
  "site=store-7": {temp_c: {mean: 78, sd: 2}}
releases:
  "clf@2.0.0":
    latency_ms: {p50: 220, p95: 480}
    by_label: {"site=store-3": {error_rate: 0.2}}
  "clf@3.0.0": {install_failure_rate: 1.0, crash_on_activate: true}
"#,
    )
    .unwrap();
    s.validate().unwrap();
    let labels = |site: &str| BTreeMap::from([("site".to_string(), site.to_string())]);
    let base = s.resolve(Some("clf@1.0.0"), &labels("store-1"));
    assert_eq!(
        (base.latency_ms.p95, base.error_rate, base.temp_c.mean),
        (150.0, 0.01, 58.0)
    );
    let hot = s.resolve(Some("clf@1.0.0"), &labels("store-7"));
    assert_eq!(hot.temp_c.mean, 78.0);
    let slow = s.resolve(Some("clf@2.0.0"), &labels("store-1"));
    assert_eq!((slow.latency_ms.p95, slow.error_rate), (480.0, 0.01));
    let bad = s.resolve(Some("clf@2.0.0"), &labels("store-3"));
    assert_eq!((bad.latency_ms.p95, bad.error_rate), (480.0, 0.2));
    assert!(s.resolve(Some("clf@3.0.0"), &labels("x")).crash_on_activate);
}

#[test]
fn invalid_scenarios_are_refused() {
    for (yaml, want) in [
        ("default: {error_rate: 1.5}", "error_rate"),
        ("default: {latency_ms: {p50: 100, p95: 50}}", "p50 <= p95"),
        ("releases: {clf: {}}", "APP@VERSION"),
        ("by_label: {store7: {}}", "label=value"),
    ] {
        let s: Scenario = serde_yaml::from_str(yaml).unwrap();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains(want), "{yaml}: {e}");
    }
    assert!(
        serde_yaml::from_str::<Scenario>("default: {latency: 5}").is_err(),
        "unknown fields are refused"
    );
}
