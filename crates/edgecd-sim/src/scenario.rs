//! Scenario files: how virtual devices behave per release and per label.
//!
//! ```yaml
//! default: {latency_ms: {p50: 80, p95: 150}, error_rate: 0.005, requests_per_checkin: 50}
//! releases:
//!   "clf@1.1.0": {latency_ms: {p50: 220, p95: 480}}
//!   "clf@1.2.0": {install_failure_rate: 0.5}
//!   "clf@1.3.0": {crash_on_activate: true, by_label: {"site=store-3": {error_rate: 0.2}}}
//! by_label:
//!   "site=store-7": {temp_c: {mean: 78, sd: 2}}
//! ```
//! Resolution: built-in defaults ← `default` ← its `by_label` matches ← the release's entry ←
//! that entry's `by_label` matches. Later layers override earlier ones field by field.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyDist {
    pub p50: f64,
    pub p95: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normal {
    pub mean: f64,
    #[serde(default)]
    pub sd: f64,
}

/// A layer of behaviour; unset fields fall through to earlier layers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behavior {
    pub latency_ms: Option<LatencyDist>,
    pub error_rate: Option<f64>,
    pub confidence: Option<Normal>,
    pub temp_c: Option<Normal>,
    pub throttle_rate: Option<f64>,
    pub requests_per_checkin: Option<u64>,
    pub install_failure_rate: Option<f64>,
    pub crash_on_activate: Option<bool>,
    #[serde(default)]
    pub by_label: BTreeMap<String, Behavior>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub default: Behavior,
    #[serde(default)]
    pub releases: BTreeMap<String, Behavior>,
    #[serde(default)]
    pub by_label: BTreeMap<String, Behavior>,
}

/// Fully resolved behaviour of one device running one release.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub latency_ms: LatencyDist,
    pub error_rate: f64,
    pub confidence: Normal,
    pub temp_c: Normal,
    pub throttle_rate: f64,
    pub requests_per_checkin: u64,
    pub install_failure_rate: f64,
    pub crash_on_activate: bool,
}

impl Default for Resolved {
    fn default() -> Self {
        Resolved {
            latency_ms: LatencyDist {
                p50: 80.0,
                p95: 140.0,
            },
            error_rate: 0.005,
            confidence: Normal {
                mean: 0.9,
                sd: 0.05,
            },
            temp_c: Normal {
                mean: 58.0,
                sd: 3.0,
            },
            throttle_rate: 0.0,
            requests_per_checkin: 50,
            install_failure_rate: 0.0,
            crash_on_activate: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid scenario: {0}")]
pub struct ScenarioError(pub String);

impl Resolved {
    fn apply(&mut self, b: &Behavior) {
        if let Some(v) = b.latency_ms {
            self.latency_ms = v;
        }
        if let Some(v) = b.error_rate {
            self.error_rate = v;
        }
        if let Some(v) = b.confidence {
            self.confidence = v;
        }
        if let Some(v) = b.temp_c {
            self.temp_c = v;
        }
        if let Some(v) = b.throttle_rate {
            self.throttle_rate = v;
        }
        if let Some(v) = b.requests_per_checkin {
            self.requests_per_checkin = v;
        }
        if let Some(v) = b.install_failure_rate {
            self.install_failure_rate = v;
        }
        if let Some(v) = b.crash_on_activate {
            self.crash_on_activate = v;
        }
    }
}

fn label_matches(key: &str, labels: &BTreeMap<String, String>) -> bool {
    key.split_once('=')
        .is_some_and(|(k, v)| labels.get(k).map(String::as_str) == Some(v))
}

impl Scenario {
    /// Behaviour of a device with `labels` running `release` (`app@version`, or `None`).
    pub fn resolve(&self, release: Option<&str>, labels: &BTreeMap<String, String>) -> Resolved {
        let mut r = Resolved::default();
        let mut layer = |b: &Behavior| {
            r.apply(b);
            for (k, lb) in &b.by_label {
                if label_matches(k, labels) {
                    r.apply(lb);
                }
            }
        };
        layer(&self.default);
        for (k, lb) in &self.by_label {
            if label_matches(k, labels) {
                layer(lb);
            }
        }
        if let Some(b) = release.and_then(|rel| self.releases.get(rel)) {
            layer(b);
        }
        r
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        fn check(b: &Behavior, at: &str) -> Result<(), ScenarioError> {
            if let Some(l) = b.latency_ms
                && !(l.p50 > 0.0 && l.p95 >= l.p50)
            {
                return Err(ScenarioError(format!(
                    "{at}: latency_ms needs 0 < p50 <= p95"
                )));
            }
            for (name, v) in [
                ("error_rate", b.error_rate),
                ("throttle_rate", b.throttle_rate),
                ("install_failure_rate", b.install_failure_rate),
            ] {
                if let Some(v) = v
                    && !(0.0..=1.0).contains(&v)
                {
                    return Err(ScenarioError(format!(
                        "{at}: {name} {v} must be within [0, 1]"
                    )));
                }
            }
            for k in b.by_label.keys() {
                if !k.contains('=') {
                    return Err(ScenarioError(format!(
                        "{at}: by_label key {k:?} must look like label=value"
                    )));
                }
            }
            for (k, lb) in &b.by_label {
                check(lb, &format!("{at}.by_label[{k}]"))?;
            }
            Ok(())
        }
        check(&self.default, "default")?;
        for (k, b) in &self.releases {
            if !k.contains('@') {
                return Err(ScenarioError(format!(
                    "releases: key {k:?} must be APP@VERSION"
                )));
            }
            check(b, &format!("releases[{k}]"))?;
        }
        for (k, b) in &self.by_label {
            if !k.contains('=') {
                return Err(ScenarioError(format!(
                    "by_label key {k:?} must look like label=value"
                )));
            }
            check(b, &format!("by_label[{k}]"))?;
        }
        Ok(())
    }
}
