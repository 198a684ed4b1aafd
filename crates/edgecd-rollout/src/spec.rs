//! The rollout strategy as users write it (YAML/JSON), and its validation.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("invalid rollout spec: {0}")]
    Invalid(String),
}

fn bad(s: impl Into<String>) -> SpecError {
    SpecError::Invalid(s.into())
}

/// Durations as humans write them (`90s`, `5m`, `6h`).
pub mod human_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("duration {s:?}: {e} (write e.g. 30s, 5m, 6h)"))
        })
    }

    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| {
                    humantime::parse_duration(&s)
                        .map_err(|e| serde::de::Error::custom(format!("duration {s:?}: {e}")))
                })
                .transpose()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// `app@version` to roll out.
    pub release: String,
    /// Only devices whose labels match all of these take part.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<crate::window::Window>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub gates: Vec<Gate>,
    /// Fewer requests than this in a cohort make its gates inconclusive (hold, never promote).
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// More failed installs in the cohort than this abort the rollout.
    #[serde(default)]
    pub max_failed_installs: u32,
    /// Consecutive failing evaluations that abort the rollout.
    #[serde(default = "one")]
    pub failure_limit: u32,
    /// Consecutive evaluations with a provider error that abort the rollout.
    #[serde(default = "default_error_limit")]
    pub error_limit: u32,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Notification channels (names from the server's `--notifications` file) that hear
    /// about this rollout's events.
    #[serde(default)]
    pub notify: Vec<String>,
    /// The runbook linked from this rollout's notifications (overrides the channel's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
    /// Confidence of every gate verdict (a fail needs the bound at this confidence, spread
    /// over the analysis's looks, past the threshold).
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// A pass needs the interval to rule out values beyond `threshold · (1 + resolution)`.
    #[serde(default = "default_resolution")]
    pub resolution: f64,
    /// Device attributes whose value combinations are the groups every gate is also
    /// evaluated for: `board`, `accelerator`, `runtime` (inventory) or any label name.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// Groups with at least this many eligible devices get one in the first canary step.
    #[serde(default = "default_min_group_size")]
    pub min_group_size: u32,
    /// What a gate failing for one group (and not the whole cohort) does.
    #[serde(default)]
    pub on_group_failure: OnGroupFailure,
    /// How long a step may hold (too little traffic to decide, devices not installing)
    /// before `on_max_hold` escalates.
    #[serde(default = "default_max_hold", with = "human_duration")]
    pub max_hold: Duration,
    #[serde(default)]
    pub on_max_hold: OnMaxHold,
}

fn default_confidence() -> f64 {
    0.95
}
fn default_resolution() -> f64 {
    0.5
}
fn default_group_by() -> Vec<String> {
    vec!["board".into(), "accelerator".into(), "runtime".into()]
}
fn default_min_group_size() -> u32 {
    3
}
fn default_max_hold() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnGroupFailure {
    /// Like any failing gate: `on_failure` for the whole rollout.
    #[default]
    Rollback,
    /// Send the group's devices back to the baseline, leave it out of later steps, continue.
    Exclude,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMaxHold {
    /// Notify again, as an incident, and keep holding.
    #[default]
    Incident,
    /// Abort and roll the cohort back.
    Rollback,
}

fn default_min_samples() -> u64 {
    200
}
fn one() -> u32 {
    1
}
fn default_error_limit() -> u32 {
    5
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Assign the baseline release to every device that got the new one.
    #[default]
    Rollback,
    /// Stop where it is and wait for a person.
    Pause,
}

/// One step; written as a single-key map (`- canary: {devices: 4}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StepRepr", into = "StepRepr")]
pub enum Step {
    Canary(CanaryStep),
    Analyze(AnalyzeStep),
    Approve(EmptyStep),
    Pause(PauseStep),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyStep {}

/// The YAML/JSON shape of a step: exactly one of these keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    canary: Option<CanaryStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    analyze: Option<AnalyzeStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    approve: Option<EmptyStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pause: Option<PauseStep>,
}

impl TryFrom<StepRepr> for Step {
    type Error = String;
    fn try_from(r: StepRepr) -> Result<Self, String> {
        match (r.canary, r.analyze, r.approve, r.pause) {
            (Some(c), None, None, None) => Ok(Step::Canary(c)),
            (None, Some(a), None, None) => Ok(Step::Analyze(a)),
            (None, None, Some(a), None) => Ok(Step::Approve(a)),
            (None, None, None, Some(p)) => Ok(Step::Pause(p)),
            _ => Err("a step has exactly one of: canary, analyze, approve, pause".into()),
        }
    }
}

impl From<Step> for StepRepr {
    fn from(s: Step) -> Self {
        match s {
            Step::Canary(c) => StepRepr {
                canary: Some(c),
                ..Default::default()
            },
            Step::Analyze(a) => StepRepr {
                analyze: Some(a),
                ..Default::default()
            },
            Step::Approve(a) => StepRepr {
                approve: Some(a),
                ..Default::default()
            },
            Step::Pause(p) => StepRepr {
                pause: Some(p),
                ..Default::default()
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Every compatible device of this many distinct `spread_by` values (e.g. 2 stores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<u32>,
    /// A label whose distinct values the cohort is spread across.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeStep {
    #[serde(with = "human_duration")]
    pub duration: Duration,
    #[serde(default = "default_interval", with = "human_duration")]
    pub interval: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseStep {
    /// Resume by itself after this long; without it, wait for `resume`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "human_duration::option"
    )]
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    LatencyP50Ms,
    LatencyP95Ms,
    LatencyP99Ms,
    ErrorRate,
    CpuTempC,
    CpuTempMeanC,
    ThrottledRatio,
    ConfidencePsi,
    /// A PromQL query's value (`provider: prometheus`).
    Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Aggregates the devices send with their check-ins.
    #[default]
    Builtin,
    /// A PromQL query against the server's `--prometheus-url`.
    Prometheus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Against {
    Baseline,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// A builtin metric; `query` (the default) for `provider: prometheus` gates.
    #[serde(default = "query_metric")]
    pub metric: Metric,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub against: Option<Against>,
    #[serde(default)]
    pub provider: Provider,
    /// PromQL with `{{cohort}}`, `{{baseline}}`, `{{release}}` placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

fn query_metric() -> Metric {
    Metric::Query
}

impl Gate {
    /// A short label, e.g. `latency_p95_ms <= 300` or `latency_p95_ms <= 1.2x baseline`.
    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let m = serde_json::to_value(self.metric)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut parts = vec![];
        if let Some(v) = self.max {
            parts.push(format!("{m} <= {v}"));
        }
        if let Some(v) = self.min {
            parts.push(format!("{m} >= {v}"));
        }
        if let Some(v) = self.max_ratio {
            parts.push(format!("{m} <= {v}x baseline"));
        }
        parts.join(", ")
    }
}

impl RolloutSpec {
    /// Splits `release` into (app, version).
    pub fn app_and_version(&self) -> Result<(&str, &str), SpecError> {
        self.release
            .split_once('@')
            .filter(|(a, v)| !a.is_empty() && !v.is_empty())
            .ok_or_else(|| bad(format!("release {:?} must be APP@VERSION", self.release)))
    }

    /// Checks everything a user could get wrong, with messages that say how to fix it.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.app_and_version()?;
        if self.steps.is_empty() {
            return Err(bad("steps is empty: add at least one canary step"));
        }
        for (i, s) in self.steps.iter().enumerate() {
            match s {
                Step::Canary(c) => {
                    let set = [c.devices.is_some(), c.percent.is_some(), c.groups.is_some()]
                        .iter()
                        .filter(|b| **b)
                        .count();
                    if set != 1 {
                        return Err(bad(format!(
                            "step {}: canary needs exactly one of devices, percent, groups",
                            i + 1
                        )));
                    }
                    if let Some(p) = c.percent
                        && !(p > 0.0 && p <= 100.0)
                    {
                        return Err(bad(format!(
                            "step {}: percent {p} must be in (0, 100]",
                            i + 1
                        )));
                    }
                    if c.devices == Some(0) || c.groups == Some(0) {
                        return Err(bad(format!(
                            "step {}: a canary of zero devices does nothing",
                            i + 1
                        )));
                    }
                    if c.groups.is_some() && c.spread_by.is_none() {
                        return Err(bad(format!(
                            "step {}: groups needs spread_by (the label whose values are the groups)",
                            i + 1
                        )));
                    }
                }
                Step::Analyze(a) => {
                    if a.duration.is_zero() || a.interval.is_zero() {
                        return Err(bad(format!(
                            "step {}: analyze duration and interval must be positive",
                            i + 1
                        )));
                    }
                    if self.gates.is_empty() {
                        return Err(bad(format!(
                            "step {}: analyze without gates would promote blindly; add gates",
                            i + 1
                        )));
                    }
                }
                Step::Approve(_) | Step::Pause(_) => {}
            }
        }
        if !matches!(self.steps[0], Step::Canary(_)) {
            return Err(bad("the first step must be a canary step"));
        }
        for g in &self.gates {
            let l = g.label();
            if g.max.is_none() && g.min.is_none() && g.max_ratio.is_none() {
                return Err(bad(format!(
                    "gate on {:?} has no max, min or max_ratio",
                    g.metric
                )));
            }
            if g.max_ratio.is_some() && g.against != Some(Against::Baseline) {
                return Err(bad(format!(
                    "gate {l}: max_ratio needs `against: baseline`"
                )));
            }
            match g.provider {
                Provider::Prometheus => {
                    if g.query.as_deref().is_none_or(str::is_empty) {
                        return Err(bad(format!("gate {l}: provider prometheus needs a query")));
                    }
                    if g.metric != Metric::Query {
                        return Err(bad(format!(
                            "gate {l}: a prometheus gate's value is its query's; drop `metric` (builtin metrics come from check-ins)"
                        )));
                    }
                    if g.max_ratio.is_some() {
                        return Err(bad(format!(
                            "gate {l}: a prometheus gate compares its query's value with max/min; express ratios in PromQL"
                        )));
                    }
                }
                Provider::Builtin => {
                    if g.metric == Metric::Query && g.query.is_none() {
                        return Err(bad(format!(
                            "gate {l}: name a metric (latency_p95_ms, error_rate, cpu_temp_c, confidence_psi, …) or use `provider: prometheus` with a query"
                        )));
                    }
                    if g.metric == Metric::Query || g.query.is_some() {
                        return Err(bad(format!(
                            "gate {l}: queries need `provider: prometheus`"
                        )));
                    }
                    if g.metric == Metric::ConfidencePsi && g.against != Some(Against::Baseline) {
                        return Err(bad(format!(
                            "gate {l}: confidence_psi compares with the baseline: add `against: baseline`"
                        )));
                    }
                }
            }
        }
        if let Some(w) = &self.window {
            w.validate()?;
        }
        if !(self.confidence >= 0.5 && self.confidence < 1.0) {
            return Err(bad(format!(
                "confidence {} must be in [0.5, 1), e.g. 0.95",
                self.confidence
            )));
        }
        if !(self.resolution > 0.0 && self.resolution.is_finite()) {
            return Err(bad(format!(
                "resolution {} must be positive, e.g. 0.5 (a pass rules out values 50% past a threshold)",
                self.resolution
            )));
        }
        if self.max_hold.is_zero() {
            return Err(bad("max_hold must be positive, e.g. 1h"));
        }
        if self.group_by.iter().any(|g| g.trim().is_empty()) {
            return Err(bad("group_by lists an empty attribute name"));
        }
        if self.failure_limit == 0 || self.error_limit == 0 {
            return Err(bad("failure_limit and error_limit must be at least 1"));
        }
        let mut channels = std::collections::BTreeSet::new();
        for c in &self.notify {
            if c.trim().is_empty() {
                return Err(bad("notify lists an empty channel name"));
            }
            if !channels.insert(c) {
                return Err(bad(format!("notify lists channel {c:?} twice")));
            }
        }
        if let Some(u) = &self.runbook_url {
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/'))
                || u.chars().any(char::is_whitespace)
            {
                return Err(bad(format!(
                    "runbook_url {u:?} must be an absolute http(s) URL, e.g. https://wiki.example/runbooks/app"
                )));
            }
        }
        Ok(())
    }
}
