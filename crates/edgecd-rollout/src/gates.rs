//! Gate evaluation: a metric of the canary cohort (or a PromQL query's value) against an
//! absolute threshold or a ratio to the baseline cohort, judged on confidence bounds rather
//! than point values (design: issue 18). Each builtin gate's estimate gets an interval:
//! error and throttling rates are binomial proportions (Wilson), latency quantiles come from
//! the merged histograms with an order-statistic interval, ratios to the baseline are
//! two-sample intervals, PSI is compared with a threshold raised by the noise PSI shows
//! between two samples of the same distribution of these sizes. A gate fails only when its
//! bound at the look's confidence (see [`Judgement`]) is past the threshold; it passes when it
//! has `min_samples` and the interval rules out a regression of `resolution` beyond the
//! threshold; otherwise it is inconclusive and says how many more samples would decide it.
//! A provider failure is an error; neither inconclusive nor error ever counts as a pass.
use crate::spec::{Gate, Metric, Provider};
use crate::stats;
use edgecd_api::metrics::{CONFIDENCE_BUCKETS, MetricsAggregate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "why", rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail(String),
    Inconclusive(String),
    Error(String),
}

impl Verdict {
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }
}

/// One gate's outcome with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateResult {
    pub gate: String,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    pub samples: u64,
    pub verdict: Verdict,
    /// The PromQL query as sent (placeholders filled in), for `provider: prometheus` gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Two-sided interval of `value` at the rollout's confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
    /// For `max_ratio` gates: the canary/baseline ratio and its interval `[estimate, low, high]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<[f64; 3]>,
    /// About how many more samples would decide an inconclusive gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<u64>,
    /// The group (`group_by` values) this result is for; `None`: the whole cohort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl GateResult {
    /// `label` (or `label [group]`).
    pub fn name(&self) -> String {
        match &self.group {
            Some(g) => format!("{} [{g}]", self.gate),
            None => self.gate.clone(),
        }
    }

    /// The builtin metric the gate's label names (its first word), for units.
    pub fn metric(&self) -> Option<Metric> {
        let word = self.gate.split_whitespace().next()?;
        serde_json::from_value(serde_json::Value::String(word.into())).ok()
    }

    /// [`shown`](Self::shown) with the metric read from the label.
    pub fn shown_value(&self) -> String {
        self.shown(self.metric())
    }

    /// The value with its interval as people read it, e.g. `2.95% [2.41%, 3.58%]`.
    pub fn shown(&self, metric: Option<Metric>) -> String {
        let Some(v) = self.value else {
            return "-".into();
        };
        let mut s = fmt_value(metric, v);
        if let Some([lo, hi]) = self.interval
            && hi > lo
        {
            s = format!("{s} [{}, {}]", fmt_value(metric, lo), fmt_value(metric, hi));
        }
        if let Some([r, lo, hi]) = self.ratio {
            s = if hi > lo {
                format!("{s}, {r:.2}x [{lo:.2}, {hi:.2}] baseline")
            } else {
                format!("{s}, {r:.2}x baseline")
            };
        }
        s
    }
}

/// What the server's metrics provider answered for one `provider: prometheus` gate: the
/// query it sent and its single value (`Ok(None)`: the query returned no data).
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalValue {
    pub query: String,
    pub result: Result<Option<f64>, String>,
}

/// How one evaluation judges its gates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    /// Confidence of the intervals shown and of a pass (e.g. 0.95).
    pub confidence: f64,
    /// The one-sided error probability this look may spend on a fail verdict (the look's
    /// share of `1 − confidence`, see `stats::alpha_for_look`).
    pub fail_alpha: f64,
    /// The one-sided error probability this look may spend on a pass (a pass needs the
    /// interval to rule out `resolution` past the threshold at it); spread over the looks
    /// too, so that looking again and again does not let a regression through.
    pub pass_alpha: f64,
    /// Fewer samples than this never pass.
    pub min_samples: u64,
    /// A pass needs the interval to rule out values beyond `threshold · (1 + resolution)`.
    pub resolution: f64,
}

impl Judgement {
    /// A single look at `confidence` (all the alpha on this look).
    pub fn single(confidence: f64, min_samples: u64) -> Self {
        Judgement {
            confidence,
            fail_alpha: 1.0 - confidence,
            pass_alpha: 1.0 - confidence,
            min_samples,
            resolution: 0.5,
        }
    }
}

/// The value of a builtin metric for one cohort.
pub fn metric_value(
    metric: Metric,
    m: &MetricsAggregate,
    baseline: &MetricsAggregate,
) -> Option<f64> {
    match metric {
        Metric::LatencyP50Ms => m.latency_quantile_ms(0.50),
        Metric::LatencyP95Ms => m.latency_quantile_ms(0.95),
        Metric::LatencyP99Ms => m.latency_quantile_ms(0.99),
        Metric::ErrorRate => m.error_rate(),
        Metric::CpuTempC => m.temp_c_max,
        Metric::CpuTempMeanC => m.temp_mean_c(),
        Metric::ThrottledRatio => m.throttled_ratio(),
        Metric::ConfidencePsi => psi(m, baseline),
        Metric::Query => None,
    }
}

/// PSI of the canary's confidence histogram against the baseline's, each bucket's count
/// given half a sample (Jeffreys) so that empty buckets in small samples do not explode it;
/// the same as `MetricsAggregate::confidence_psi` for large samples.
pub fn psi(c: &MetricsAggregate, b: &MetricsAggregate) -> Option<f64> {
    let (n1, n0): (u64, u64) = (c.confidence.iter().sum(), b.confidence.iter().sum());
    if n1 == 0 || n0 == 0 {
        return None;
    }
    let k = CONFIDENCE_BUCKETS as f64;
    let share = |h: &[u64], n: u64, i: usize| {
        (h.get(i).copied().unwrap_or(0) as f64 + 0.5) / (n as f64 + 0.5 * k)
    };
    Some(
        (0..CONFIDENCE_BUCKETS)
            .map(|i| {
                let (p, q) = (share(&c.confidence, n1, i), share(&b.confidence, n0, i));
                (p - q) * (p / q).ln()
            })
            .sum(),
    )
}

fn uses_requests(metric: Metric) -> bool {
    !matches!(
        metric,
        Metric::CpuTempC | Metric::CpuTempMeanC | Metric::ThrottledRatio | Metric::Query
    )
}

/// A value as people read it: rates in percent, latencies in ms.
pub fn fmt_value(metric: Option<Metric>, v: f64) -> String {
    match metric {
        Some(Metric::ErrorRate | Metric::ThrottledRatio) => {
            let p = v * 100.0;
            if p != 0.0 && p.abs() < 0.1 {
                format!("{p:.3}%")
            } else {
                format!("{p:.2}%")
            }
        }
        Some(Metric::LatencyP50Ms | Metric::LatencyP95Ms | Metric::LatencyP99Ms) => {
            format!("{v:.1} ms")
        }
        Some(Metric::CpuTempC | Metric::CpuTempMeanC) => format!("{v:.1} °C"),
        Some(Metric::ConfidencePsi) => format!("{v:.3}"),
        _ => format!("{v:.4}"),
    }
}

/// `12345` → `12,345`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An estimate with an interval.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    est: f64,
    lo: f64,
    hi: f64,
}

fn quantile_of(metric: Metric) -> Option<f64> {
    match metric {
        Metric::LatencyP50Ms => Some(0.50),
        Metric::LatencyP95Ms => Some(0.95),
        Metric::LatencyP99Ms => Some(0.99),
        _ => None,
    }
}

/// The canary's value of `metric` with an interval at normal quantile `z` (one side).
fn value_bounds(
    metric: Metric,
    c: &MetricsAggregate,
    b: &MetricsAggregate,
    alpha: f64,
) -> Option<Bounds> {
    let z = stats::z_one_sided(alpha);
    if let Some(q) = quantile_of(metric) {
        let (est, lo, hi) = stats::quantile_interval(&c.latency_ms, q, alpha)?;
        return Some(Bounds { est, lo, hi });
    }
    match metric {
        Metric::ErrorRate => {
            let est = c.error_rate()?;
            let (lo, hi) = stats::proportion_interval(c.errors, c.requests, alpha)?;
            Some(Bounds {
                est,
                lo: lo.min(est),
                hi: hi.max(est),
            })
        }
        Metric::ThrottledRatio => {
            let est = c.throttled_ratio()?;
            let (lo, hi) = stats::proportion_interval(c.throttled_samples, c.temp_samples, alpha)?;
            Some(Bounds {
                est,
                lo: lo.min(est),
                hi: hi.max(est),
            })
        }
        Metric::ConfidencePsi => {
            let est = psi(c, b)?;
            let (n1, n0): (u64, u64) = (c.confidence.iter().sum(), b.confidence.iter().sum());
            // n·PSI (n the effective size 1/(1/n₁ + 1/n₀)) is about non-central χ² with
            // k−1 degrees of freedom and non-centrality n·PSI: biased up by (k−1)/n, with
            // variance (2(k−1) + 4·n·PSI)/n². Two samples of one distribution thus show a
            // PSI of about (k−1)/n, which the threshold allows for.
            let used = (0..CONFIDENCE_BUCKETS)
                .filter(|&i| {
                    c.confidence.get(i).copied().unwrap_or(0)
                        + b.confidence.get(i).copied().unwrap_or(0)
                        > 0
                })
                .count()
                .max(2);
            let n = 1.0 / (1.0 / n1 as f64 + 1.0 / n0 as f64);
            let k = (used - 1) as f64;
            let centre = (est - k / n).max(0.0);
            let half = z * (2.0 * k + 4.0 * n * centre).sqrt() / n;
            Some(Bounds {
                est,
                lo: (centre - half).max(0.0).min(est),
                hi: (centre + half).max(est),
            })
        }
        _ => {
            let est = metric_value(metric, c, b)?;
            Some(Bounds {
                est,
                lo: est,
                hi: est,
            })
        }
    }
}

/// The canary/baseline ratio of `metric` with an interval at normal quantile `z` (one side).
fn ratio_bounds(
    metric: Metric,
    c: &MetricsAggregate,
    b: &MetricsAggregate,
    alpha: f64,
) -> Option<Bounds> {
    let z = stats::z_one_sided(alpha);
    if metric == Metric::ErrorRate {
        let (est, lo, hi) =
            stats::ratio_of_proportions(c.errors, c.requests, b.errors, b.requests, z)?;
        return Some(Bounds { est, lo, hi });
    }
    if let Some(q) = quantile_of(metric) {
        // Each side at half the error probability (Bonferroni), so the ratio of the
        // bounds bounds the ratio.
        let a2 = alpha / 2.0;
        let (ce, cl, ch) = stats::quantile_interval(&c.latency_ms, q, a2)?;
        let (be, bl, bh) = stats::quantile_interval(&b.latency_ms, q, a2)?;
        if be <= 0.0 || bl <= 0.0 || bh <= 0.0 {
            return None;
        }
        return Some(Bounds {
            est: ce / be,
            lo: cl / bh,
            hi: ch / bl,
        });
    }
    let v = metric_value(metric, c, b)?;
    let base = metric_value(metric, b, b)?;
    let r = if base == 0.0 {
        if v == 0.0 { 1.0 } else { f64::INFINITY }
    } else {
        v / base
    };
    Some(Bounds {
        est: r,
        lo: r,
        hi: r,
    })
}

/// One comparison of an interval with a limit.
struct Check {
    what: String,
    /// At the fail confidence, pass confidence.
    fail: Bounds,
    pass: Bounds,
    /// `true`: the value must stay at or below `limit`; `false`: at or above.
    upper: bool,
    limit: f64,
    /// The value beyond which a regression must be ruled out for a pass.
    margin: f64,
}

impl Check {
    fn fails(&self) -> bool {
        if self.upper {
            self.fail.lo > self.limit
        } else {
            self.fail.hi < self.limit
        }
    }

    fn decided(&self) -> bool {
        if self.upper {
            self.pass.hi <= self.margin
        } else {
            self.pass.lo >= self.margin
        }
    }

    /// About how many samples in all (now `n`) would decide it, scaling the interval's
    /// width as 1/√n.
    fn samples_to_decide(&self, n: u64) -> u64 {
        let (est, width, gap) = if self.upper {
            if self.pass.est > self.limit {
                (
                    self.fail.est,
                    self.fail.est - self.fail.lo,
                    self.fail.est - self.limit,
                )
            } else {
                (
                    self.pass.est,
                    self.pass.hi - self.pass.est,
                    self.margin - self.pass.est,
                )
            }
        } else if self.pass.est < self.limit {
            (
                self.fail.est,
                self.fail.hi - self.fail.est,
                self.limit - self.fail.est,
            )
        } else {
            (
                self.pass.est,
                self.pass.est - self.pass.lo,
                self.pass.est - self.margin,
            )
        };
        let _ = est;
        if gap <= 0.0 || !gap.is_finite() || !width.is_finite() {
            return u64::MAX;
        }
        let f = (width / gap).powi(2) * n.max(1) as f64;
        if f > 1e12 { u64::MAX } else { f.ceil() as u64 }
    }
}

fn compare(gate: &Gate, value: f64, baseline: Option<f64>) -> Verdict {
    if let Some(max) = gate.max
        && value > max
    {
        return Verdict::Fail(format!("{value:.4} > max {max}"));
    }
    if let Some(min) = gate.min
        && value < min
    {
        return Verdict::Fail(format!("{value:.4} < min {min}"));
    }
    if let Some(ratio) = gate.max_ratio {
        let Some(b) = baseline else {
            return Verdict::Inconclusive("no baseline value to compare with".into());
        };
        let r = if b == 0.0 {
            if value == 0.0 { 1.0 } else { f64::INFINITY }
        } else {
            value / b
        };
        if r > ratio {
            return Verdict::Fail(format!("{value:.4} is {r:.2}x baseline {b:.4} > {ratio}x"));
        }
    }
    Verdict::Pass
}

/// Evaluates `gate` on the canary and baseline aggregates; `external` is the provider's
/// answer for a `provider: prometheus` gate.
pub fn evaluate(
    gate: &Gate,
    canary: &MetricsAggregate,
    baseline: &MetricsAggregate,
    j: &Judgement,
    external: Option<&ExternalValue>,
) -> GateResult {
    let label = gate.label();
    let query = external.map(|e| e.query.clone());
    let mut out = GateResult {
        gate: label.clone(),
        value: None,
        baseline: None,
        samples: 0,
        verdict: Verdict::Pass,
        query,
        interval: None,
        ratio: None,
        needed: None,
        group: None,
    };
    if gate.provider == Provider::Prometheus {
        out.verdict = match external.map(|e| &e.result) {
            None => Verdict::Error("the Prometheus query was not run".into()),
            Some(Err(e)) => Verdict::Error(format!("Prometheus query failed: {e}")),
            Some(Ok(None)) => Verdict::Inconclusive("the Prometheus query returned no data".into()),
            Some(Ok(Some(v))) if !v.is_finite() => {
                out.value = Some(*v);
                Verdict::Inconclusive(format!("the Prometheus query returned {v}"))
            }
            Some(Ok(Some(v))) => {
                out.value = Some(*v);
                compare(gate, *v, None)
            }
        };
        return out;
    }
    let m = gate.metric;
    let samples = if uses_requests(m) {
        canary.requests
    } else {
        canary.temp_samples
    };
    out.samples = samples;
    out.value = metric_value(m, canary, baseline);
    let needs_baseline = gate.max_ratio.is_some();
    out.baseline = needs_baseline
        .then(|| metric_value(m, baseline, baseline))
        .flatten();
    let conf = j.confidence.clamp(0.5, 0.999_999);
    // One-sided error probabilities: of each side of the interval shown, of a pass, of a fail.
    let a_show = (1.0 - conf) / 2.0;
    let a_pass = j.pass_alpha.clamp(1e-15, 1.0 - conf);
    let a_fail = j.fail_alpha.clamp(1e-15, 1.0 - conf);
    if let Some(b) = value_bounds(m, canary, baseline, a_show) {
        out.interval = Some([b.lo, b.hi]);
    }
    let mut checks = vec![];
    if let (Some(f), Some(p)) = (
        value_bounds(m, canary, baseline, a_fail),
        value_bounds(m, canary, baseline, a_pass),
    ) {
        if let Some(max) = gate.max {
            checks.push(Check {
                what: format!("max {}", fmt_value(Some(m), max)),
                fail: f,
                pass: p,
                upper: true,
                limit: max,
                margin: max * (1.0 + j.resolution),
            });
        }
        if let Some(min) = gate.min {
            checks.push(Check {
                what: format!("min {}", fmt_value(Some(m), min)),
                fail: f,
                pass: p,
                upper: false,
                limit: min,
                margin: min * (1.0 - j.resolution),
            });
        }
    }
    if let Some(r) = gate.max_ratio {
        if let Some(b) = ratio_bounds(m, canary, baseline, a_show) {
            out.ratio = Some([b.est, b.lo, b.hi]);
        }
        if let (Some(f), Some(p)) = (
            ratio_bounds(m, canary, baseline, a_fail),
            ratio_bounds(m, canary, baseline, a_pass),
        ) {
            checks.push(Check {
                what: format!("max {r}x baseline"),
                fail: f,
                pass: p,
                upper: true,
                limit: r,
                margin: r * (1.0 + j.resolution),
            });
        }
    }
    let shown = out.shown(Some(m));
    let pct = format!("{}%", (conf * 100.0 * 100.0).round() / 100.0);
    let failing: Vec<String> = checks
        .iter()
        .filter(|c| c.fails())
        .map(|c| c.what.clone())
        .collect();
    if !failing.is_empty() {
        out.verdict = Verdict::Fail(format!(
            "{shown} exceeds {} at {pct} confidence",
            failing.join(" and ")
        ));
        return out;
    }
    let unit = if uses_requests(m) {
        "requests"
    } else {
        "samples"
    };
    if uses_requests(m) && samples < j.min_samples {
        out.needed = Some(j.min_samples - samples);
        let shown = if out.value.is_some() {
            format!(" ({shown})")
        } else {
            String::new()
        };
        out.verdict = Verdict::Inconclusive(format!(
            "{samples} {unit} < min_samples {}, ~{} more to decide{shown}",
            j.min_samples,
            thousands(j.min_samples - samples)
        ));
        return out;
    }
    if (needs_baseline || m == Metric::ConfidencePsi)
        && uses_requests(m)
        && baseline.requests < j.min_samples
    {
        out.verdict = Verdict::Inconclusive(format!(
            "baseline has {} samples < min_samples {}",
            baseline.requests, j.min_samples
        ));
        return out;
    }
    if out.value.is_none() || (needs_baseline && out.ratio.is_none()) {
        out.verdict = Verdict::Inconclusive(if needs_baseline && out.baseline.is_none() {
            "no baseline value to compare with".into()
        } else {
            "no data".into()
        });
        return out;
    }
    let undecided: Vec<&Check> = checks.iter().filter(|c| !c.decided()).collect();
    if !undecided.is_empty() {
        let total = undecided
            .iter()
            .map(|c| c.samples_to_decide(samples))
            .max()
            .unwrap_or(u64::MAX);
        let more = total.saturating_sub(samples).max(1);
        out.needed = Some(more);
        let whats: Vec<&str> = undecided.iter().map(|c| c.what.as_str()).collect();
        out.verdict = Verdict::Inconclusive(if more == u64::MAX {
            format!("{shown} vs {}: undecided", whats.join(", "))
        } else {
            format!(
                "{shown} vs {}, ~{} more {unit} to decide",
                whats.join(", "),
                thousands(more)
            )
        });
        return out;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Against;

    fn gate(metric: Metric) -> Gate {
        Gate {
            metric,
            name: None,
            max: None,
            min: None,
            max_ratio: None,
            against: None,
            provider: Provider::Builtin,
            query: None,
        }
    }

    fn traffic(n: u64, latency: f64, errors_every: u64) -> MetricsAggregate {
        let mut m = MetricsAggregate::default();
        for i in 0..n {
            m.record(
                latency,
                errors_every > 0 && i % errors_every == 0,
                Some(0.9),
            );
        }
        m
    }

    #[test]
    fn thresholds_ratios_and_sample_counts() {
        let base = traffic(1000, 100.0, 0);
        let p95 = Gate {
            max: Some(300.0),
            ..gate(Metric::LatencyP95Ms)
        };
        assert!(
            evaluate(
                &p95,
                &traffic(500, 120.0, 0),
                &base,
                &Judgement::single(0.95, 200),
                None
            )
            .verdict
            .is_pass()
        );
        assert!(matches!(
            evaluate(
                &p95,
                &traffic(500, 450.0, 0),
                &base,
                &Judgement::single(0.95, 200),
                None
            )
            .verdict,
            Verdict::Fail(_)
        ));
        // Too few samples to pass, but enough to be sure of a failure.
        assert!(matches!(
            evaluate(
                &p95,
                &traffic(50, 450.0, 0),
                &base,
                &Judgement::single(0.95, 200),
                None
            )
            .verdict,
            Verdict::Fail(_)
        ));
        assert!(matches!(
            evaluate(
                &p95,
                &traffic(50, 250.0, 0),
                &base,
                &Judgement::single(0.95, 200),
                None
            )
            .verdict,
            Verdict::Inconclusive(_)
        ));
        let ratio = Gate {
            max_ratio: Some(1.2),
            against: Some(Against::Baseline),
            ..gate(Metric::LatencyP95Ms)
        };
        assert!(matches!(
            evaluate(
                &ratio,
                &traffic(500, 140.0, 0),
                &base,
                &Judgement::single(0.95, 200),
                None
            )
            .verdict,
            Verdict::Fail(_)
        ));
        let err = Gate {
            max: Some(0.03),
            ..gate(Metric::ErrorRate)
        };
        assert!(matches!(
            evaluate(
                &err,
                &traffic(500, 10.0, 10),
                &base,
                &Judgement::single(0.95, 200),
                None
            )
            .verdict,
            Verdict::Fail(_)
        ));
        assert!(
            evaluate(
                &err,
                &traffic(500, 10.0, 50),
                &base,
                &Judgement::single(0.95, 200),
                None
            )
            .verdict
            .is_pass()
        );
    }

    #[test]
    fn provider_errors_and_empty_results_never_pass() {
        let g = Gate {
            provider: Provider::Prometheus,
            query: Some("x".into()),
            max: Some(1.0),
            ..gate(Metric::Query)
        };
        let m = MetricsAggregate::default();
        let ext = |result: Result<Option<f64>, String>| ExternalValue {
            query: "up".into(),
            result,
        };
        let r = evaluate(
            &g,
            &m,
            &m,
            &Judgement::single(0.95, 200),
            Some(&ext(Ok(Some(0.5)))),
        );
        assert_eq!(
            r.query.as_deref(),
            Some("up"),
            "the query is kept for the audit log"
        );
        assert!(matches!(
            evaluate(
                &g,
                &m,
                &m,
                &Judgement::single(0.95, 200),
                Some(&ext(Err("refused".into())))
            )
            .verdict,
            Verdict::Error(_)
        ));
        assert!(matches!(
            evaluate(
                &g,
                &m,
                &m,
                &Judgement::single(0.95, 200),
                Some(&ext(Ok(None)))
            )
            .verdict,
            Verdict::Inconclusive(_)
        ));
        assert!(matches!(
            evaluate(&g, &m, &m, &Judgement::single(0.95, 200), None).verdict,
            Verdict::Error(_)
        ));
        assert!(
            evaluate(
                &g,
                &m,
                &m,
                &Judgement::single(0.95, 200),
                Some(&ext(Ok(Some(0.5))))
            )
            .verdict
            .is_pass()
        );
        assert!(matches!(
            evaluate(
                &g,
                &m,
                &m,
                &Judgement::single(0.95, 200),
                Some(&ext(Ok(Some(1.5))))
            )
            .verdict,
            Verdict::Fail(_)
        ));
    }
}
