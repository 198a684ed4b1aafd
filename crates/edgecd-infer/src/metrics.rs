//! Prometheus metrics, written by hand in the classic text exposition format 0.0.4 from atomics
//! (clean under `promtool check metrics`). Bucket bounds are fixed so the server can merge
//! histograms from many devices.

use crate::plan_cache::PlanCacheStats;
use edgecd_api::exposition::{escape_label_value, sample_value};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Content type of `GET /metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets in seconds (log-scale, 1 ms … 10 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];
/// Top-1 probability buckets.
pub const CONFIDENCE_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99];

/// Error kinds counted in `edgecd_infer_request_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request could not be understood or does not fit the model (4xx).
    MalformedInput,
    /// The model failed while running (5xx).
    ModelFailure,
    /// Load shed by the thermal governor (429).
    Overloaded,
}

impl ErrorKind {
    const ALL: [ErrorKind; 3] = [
        ErrorKind::MalformedInput,
        ErrorKind::ModelFailure,
        ErrorKind::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::MalformedInput => "malformed_input",
            ErrorKind::ModelFailure => "model_failure",
            ErrorKind::Overloaded => "overloaded",
        }
    }
}

/// A histogram with fixed bounds, updated lock-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_bits: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        if !v.is_finite() {
            return;
        }
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + v).to_bits())
            });
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                sample_value(*b)
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            sample_value(f64::from_bits(self.sum_bits.load(Ordering::Relaxed)))
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// A float gauge in an atomic.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Every metric of the runtime.
#[derive(Debug)]
pub struct Metrics {
    pub latency: Histogram,
    pub confidence: Histogram,
    pub requests: AtomicU64,
    errors: [AtomicU64; 3],
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    pub model_load_seconds: Gauge,
    pub threads: Gauge,
    pub temperature_c: Gauge,
    pub governor_state: AtomicU64,
    pub governor_transitions: AtomicU64,
    /// (release, model, runtime) of the active model.
    pub info: Mutex<(String, String, String)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let temperature_c = Gauge::default();
        temperature_c.set(f64::NAN);
        Metrics {
            latency: Histogram::new(LATENCY_BUCKETS),
            confidence: Histogram::new(CONFIDENCE_BUCKETS),
            requests: AtomicU64::new(0),
            errors: Default::default(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            model_load_seconds: Gauge::default(),
            threads: Gauge::default(),
            temperature_c,
            governor_state: AtomicU64::new(0),
            governor_transitions: AtomicU64::new(0),
            info: Mutex::new((String::new(), String::new(), String::new())),
        }
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }

    pub fn set_model(&self, release: &str, model: &str, runtime: &str, load_seconds: f64) {
        *self.info.lock().unwrap_or_else(|e| e.into_inner()) =
            (release.to_string(), model.to_string(), runtime.to_string());
        self.model_load_seconds.set(load_seconds);
    }

    /// The exposition text; `plan_cache` is the active model's, when its backend keeps one.
    pub fn render(&self, plan_cache: Option<PlanCacheStats>) -> String {
        let mut o = String::with_capacity(4096);
        let (release, model, runtime) = self.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(
            o,
            "# HELP edgecd_infer_model_info The active release and model file (value is always 1).\n# TYPE edgecd_infer_model_info gauge"
        );
        let _ = writeln!(
            o,
            "edgecd_infer_model_info{{release=\"{}\",model=\"{}\",runtime=\"{}\"}} 1",
            escape_label_value(&release),
            escape_label_value(&model),
            escape_label_value(&runtime)
        );
        gauge(
            &mut o,
            "edgecd_infer_model_load_seconds",
            "Time it took to load the active model.",
            self.model_load_seconds.get(),
        );
        self.latency.write(
            &mut o,
            "edgecd_infer_request_duration_seconds",
            "Latency of inference requests that ran the model.",
        );
        self.confidence.write(
            &mut o,
            "edgecd_infer_confidence",
            "Top-1 probability of classifier outputs.",
        );
        counter(
            &mut o,
            "edgecd_infer_requests_total",
            "Inference requests received.",
            self.requests.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP edgecd_infer_request_errors_total Inference requests that failed, by kind.\n# TYPE edgecd_infer_request_errors_total counter"
        );
        for k in ErrorKind::ALL {
            let _ = writeln!(
                o,
                "edgecd_infer_request_errors_total{{kind=\"{}\"}} {}",
                k.as_str(),
                self.errors(k)
            );
        }
        let _ = writeln!(
            o,
            "# HELP edgecd_infer_reloads_total Model reloads, by result.\n# TYPE edgecd_infer_reloads_total counter"
        );
        let _ = writeln!(
            o,
            "edgecd_infer_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "edgecd_infer_reloads_total{{result=\"failed\"}} {}",
            self.reloads_failed.load(Ordering::Relaxed)
        );
        gauge(
            &mut o,
            "edgecd_infer_threads",
            "Threads the model runs with now (lowered by the thermal governor).",
            self.threads.get(),
        );
        gauge(
            &mut o,
            "edgecd_infer_temperature_celsius",
            "Last SoC temperature reading (NaN when unreadable).",
            self.temperature_c.get(),
        );
        gauge(
            &mut o,
            "edgecd_infer_governor_state",
            "Thermal governor state: 0 normal, 1 throttled, 2 shedding.",
            self.governor_state.load(Ordering::Relaxed) as f64,
        );
        counter(
            &mut o,
            "edgecd_infer_governor_transitions_total",
            "Thermal governor state changes.",
            self.governor_transitions.load(Ordering::Relaxed),
        );
        if let Some(c) = plan_cache {
            gauge(
                &mut o,
                "edgecd_infer_plan_cache_bytes",
                "Estimated bytes held by the active model's per-shape plans.",
                c.bytes as f64,
            );
            gauge(
                &mut o,
                "edgecd_infer_plan_cache_budget_bytes",
                "Byte budget of the per-shape plan cache (--plan-cache-bytes).",
                c.budget_bytes as f64,
            );
            gauge(
                &mut o,
                "edgecd_infer_plan_cache_plans",
                "Per-shape plans cached for the active model.",
                c.plans as f64,
            );
            counter(
                &mut o,
                "edgecd_infer_plans_built_total",
                "Per-shape plans built (a model compiled for new input shapes).",
                c.built_total,
            );
            counter(
                &mut o,
                "edgecd_infer_plan_cache_evictions_total",
                "Per-shape plans dropped to keep the cache within its byte budget.",
                c.evictions_total,
            );
        }
        o
    }
}

fn gauge(o: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(
        o,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
        sample_value(v)
    );
}

fn counter(o: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
}

/// Top-1 probability of a classifier row: the largest value if the row already is a distribution
/// (non-negative, sums to 1), else the largest softmax probability.
pub fn top1_probability(row: &[f64]) -> Option<f64> {
    if row.len() < 2 || row.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = row.iter().sum();
    if row.iter().all(|v| *v >= 0.0) && (sum - 1.0).abs() < 1e-3 {
        return Some(max);
    }
    let denom: f64 = row.iter().map(|v| (v - max).exp()).sum();
    Some(1.0 / denom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.5, 0.7, 3.0] {
            h.observe(v);
        }
        let mut s = String::new();
        h.write(&mut s, "x", "help");
        assert!(s.contains("x_bucket{le=\"0.1\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"1\"} 3\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 4\n"), "{s}");
        assert!(s.contains("x_sum 4.25\n"), "{s}");
    }

    #[test]
    fn top1() {
        assert_eq!(top1_probability(&[0.1, 0.7, 0.2]), Some(0.7));
        let p = top1_probability(&[0.0, 0.0]).unwrap();
        assert!((p - 0.5).abs() < 1e-12);
        let p = top1_probability(&[1.0, 3.0, -2.0]).unwrap();
        let want = 3f64.exp() / (1f64.exp() + 3f64.exp() + (-2f64).exp());
        assert!((p - want).abs() < 1e-12);
        assert_eq!(top1_probability(&[1.0]), None);
    }

    #[test]
    fn labels_are_escaped() {
        let m = Metrics::new();
        m.set_model("a\"b@1", "x\\y", "tract", 0.5);
        assert!(
            m.render(None)
                .contains("release=\"a\\\"b@1\",model=\"x\\\\y\",runtime=\"tract\"")
        );
    }
}
