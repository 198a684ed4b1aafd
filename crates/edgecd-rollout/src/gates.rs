//! Gate evaluation: a metric of the canary cohort (or a PromQL query's value) against an
//! absolute threshold or a ratio to the baseline cohort. Too little data is inconclusive,
//! a provider failure is an error; neither ever counts as a pass.
use crate::spec::{Gate, Metric, Provider};
use edgecd_api::metrics::MetricsAggregate;
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
}

/// What the server's metrics provider answered for one `provider: prometheus` gate: the
/// query it sent and its single value (`Ok(None)`: the query returned no data).
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalValue {
    pub query: String,
    pub result: Result<Option<f64>, String>,
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
        Metric::ConfidencePsi => m.confidence_psi(baseline),
        Metric::Query => None,
    }
}

fn uses_requests(metric: Metric) -> bool {
    !matches!(
        metric,
        Metric::CpuTempC | Metric::CpuTempMeanC | Metric::ThrottledRatio | Metric::Query
    )
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
    min_samples: u64,
    external: Option<&ExternalValue>,
) -> GateResult {
    let label = gate.label();
    let query = external.map(|e| e.query.clone());
    let result = |value, base, samples, verdict| GateResult {
        gate: label.clone(),
        value,
        baseline: base,
        samples,
        verdict,
        query: query.clone(),
    };
    if gate.provider == Provider::Prometheus {
        return match external.map(|e| &e.result) {
            None => result(
                None,
                None,
                0,
                Verdict::Error("the Prometheus query was not run".into()),
            ),
            Some(Err(e)) => result(
                None,
                None,
                0,
                Verdict::Error(format!("Prometheus query failed: {e}")),
            ),
            Some(Ok(None)) => result(
                None,
                None,
                0,
                Verdict::Inconclusive("the Prometheus query returned no data".into()),
            ),
            Some(Ok(Some(v))) if !v.is_finite() => result(
                Some(*v),
                None,
                0,
                Verdict::Inconclusive(format!("the Prometheus query returned {v}")),
            ),
            Some(Ok(Some(v))) => result(Some(*v), None, 0, compare(gate, *v, None)),
        };
    }
    let samples = if uses_requests(gate.metric) {
        canary.requests
    } else {
        canary.temp_samples
    };
    let value = metric_value(gate.metric, canary, baseline);
    let needs_baseline = gate.max_ratio.is_some();
    let base = needs_baseline
        .then(|| metric_value(gate.metric, baseline, baseline))
        .flatten();
    if uses_requests(gate.metric) && samples < min_samples {
        return result(
            value,
            base,
            samples,
            Verdict::Inconclusive(format!("{samples} samples < min_samples {min_samples}")),
        );
    }
    if (needs_baseline || gate.metric == Metric::ConfidencePsi)
        && uses_requests(gate.metric)
        && baseline.requests < min_samples
    {
        return result(
            value,
            base,
            samples,
            Verdict::Inconclusive(format!(
                "baseline has {} samples < min_samples {min_samples}",
                baseline.requests
            )),
        );
    }
    let Some(v) = value else {
        return result(None, base, samples, Verdict::Inconclusive("no data".into()));
    };
    result(Some(v), base, samples, compare(gate, v, base))
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
            evaluate(&p95, &traffic(500, 120.0, 0), &base, 200, None)
                .verdict
                .is_pass()
        );
        assert!(matches!(
            evaluate(&p95, &traffic(500, 450.0, 0), &base, 200, None).verdict,
            Verdict::Fail(_)
        ));
        assert!(matches!(
            evaluate(&p95, &traffic(50, 450.0, 0), &base, 200, None).verdict,
            Verdict::Inconclusive(_)
        ));
        let ratio = Gate {
            max_ratio: Some(1.2),
            against: Some(Against::Baseline),
            ..gate(Metric::LatencyP95Ms)
        };
        assert!(matches!(
            evaluate(&ratio, &traffic(500, 140.0, 0), &base, 200, None).verdict,
            Verdict::Fail(_)
        ));
        let err = Gate {
            max: Some(0.03),
            ..gate(Metric::ErrorRate)
        };
        assert!(matches!(
            evaluate(&err, &traffic(500, 10.0, 10), &base, 200, None).verdict,
            Verdict::Fail(_)
        ));
        assert!(
            evaluate(&err, &traffic(500, 10.0, 50), &base, 200, None)
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
        let r = evaluate(&g, &m, &m, 200, Some(&ext(Ok(Some(0.5)))));
        assert_eq!(
            r.query.as_deref(),
            Some("up"),
            "the query is kept for the audit log"
        );
        assert!(matches!(
            evaluate(&g, &m, &m, 200, Some(&ext(Err("refused".into())))).verdict,
            Verdict::Error(_)
        ));
        assert!(matches!(
            evaluate(&g, &m, &m, 200, Some(&ext(Ok(None)))).verdict,
            Verdict::Inconclusive(_)
        ));
        assert!(matches!(
            evaluate(&g, &m, &m, 200, None).verdict,
            Verdict::Error(_)
        ));
        assert!(
            evaluate(&g, &m, &m, 200, Some(&ext(Ok(Some(0.5)))))
                .verdict
                .is_pass()
        );
        assert!(matches!(
            evaluate(&g, &m, &m, 200, Some(&ext(Ok(Some(1.5))))).verdict,
            Verdict::Fail(_)
        ));
    }
}
