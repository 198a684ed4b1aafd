//! Mergeable inference metric aggregates that devices send with check-ins and the server
//! merges per cohort (design §4): fixed log-scale latency buckets, request/error counters, a
//! confidence histogram, temperature and throttling. Pure data and arithmetic.
use serde::{Deserialize, Serialize};

/// Latency buckets are log-scale with 8 per doubling (≈9% wide, like Prometheus native
/// histograms at schema 3): bucket `i` holds (`bound(i-1)`, `bound(i)`] with
/// `bound(i) = 0.5 ms · 2^(i/8)`; bucket 0 holds everything up to 0.5 ms and the last bucket
/// everything above ~33 s.
pub const LATENCY_BUCKETS: usize = 130;

/// Upper bound (ms) of latency bucket `i`.
pub fn latency_bound_ms(i: usize) -> f64 {
    0.5 * 2f64.powf(i as f64 / 8.0)
}

/// The bucket a latency falls into.
pub fn latency_bucket(ms: f64) -> usize {
    if ms.is_nan() || ms <= 0.5 {
        return 0;
    }
    let i = (8.0 * (ms / 0.5).log2()).ceil();
    // Guard against rounding right at a boundary.
    let mut i = (i.max(0.0) as usize).min(LATENCY_BUCKETS - 1);
    if i > 0 && ms <= latency_bound_ms(i - 1) {
        i -= 1;
    }
    i
}

/// The latency (ms) at fractional rank `rank` (clamped to 1 ≤ rank ≤ total) of a
/// log-bucket latency histogram, interpolated geometrically inside its bucket; `None`
/// without data.
pub fn latency_at_rank(h: &[u64], rank: f64) -> Option<f64> {
    let total: u64 = h.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = rank.clamp(1.0, total as f64);
    let mut seen = 0.0;
    for (i, &c) in h.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let next = seen + c as f64;
        if next >= rank {
            let hi = latency_bound_ms(i);
            let lo = if i == 0 {
                hi / 2f64.powf(1.0 / 8.0)
            } else {
                latency_bound_ms(i - 1)
            };
            let frac = ((rank - seen) / c as f64).clamp(0.0, 1.0);
            return Some(lo * (hi / lo).powf(frac));
        }
        seen = next;
    }
    Some(latency_bound_ms(LATENCY_BUCKETS - 1))
}

/// Number of confidence buckets over [0, 1].
pub const CONFIDENCE_BUCKETS: usize = 10;

/// Aggregates over some period; two of them merge by adding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsAggregate {
    pub requests: u64,
    pub errors: u64,
    /// Counts per latency bucket (`LATENCY_BUCKETS` entries, or empty).
    #[serde(default)]
    pub latency_ms: Vec<u64>,
    /// Counts per confidence bucket (`CONFIDENCE_BUCKETS` entries, or empty).
    #[serde(default)]
    pub confidence: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_c_max: Option<f64>,
    #[serde(default)]
    pub temp_c_sum: f64,
    #[serde(default)]
    pub temp_samples: u64,
    /// Samples during which the SoC reported throttling.
    #[serde(default)]
    pub throttled_samples: u64,
}

fn add(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a = a.saturating_add(*b);
    }
}

impl MetricsAggregate {
    /// Records one request of `latency_ms`, whether it failed, and its top-1 confidence.
    pub fn record(&mut self, latency_ms: f64, error: bool, confidence: Option<f64>) {
        self.requests += 1;
        if error {
            self.errors += 1;
        }
        if self.latency_ms.is_empty() {
            self.latency_ms = vec![0; LATENCY_BUCKETS];
        }
        self.latency_ms[latency_bucket(latency_ms)] += 1;
        if let Some(c) = confidence {
            if self.confidence.is_empty() {
                self.confidence = vec![0; CONFIDENCE_BUCKETS];
            }
            let i = ((c.clamp(0.0, 1.0) * CONFIDENCE_BUCKETS as f64) as usize)
                .min(CONFIDENCE_BUCKETS - 1);
            self.confidence[i] += 1;
        }
    }

    /// Records a temperature reading and whether the SoC was throttling.
    pub fn record_temperature(&mut self, celsius: f64, throttled: bool) {
        self.temp_c_max = Some(self.temp_c_max.map_or(celsius, |m| m.max(celsius)));
        self.temp_c_sum += celsius;
        self.temp_samples += 1;
        if throttled {
            self.throttled_samples += 1;
        }
    }

    pub fn merge(&mut self, other: &MetricsAggregate) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        add(&mut self.latency_ms, &other.latency_ms);
        add(&mut self.confidence, &other.confidence);
        self.temp_c_max = match (self.temp_c_max, other.temp_c_max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.temp_c_sum += other.temp_c_sum;
        self.temp_samples = self.temp_samples.saturating_add(other.temp_samples);
        self.throttled_samples = self
            .throttled_samples
            .saturating_add(other.throttled_samples);
    }

    /// Checks shape and plausibility (for input from devices).
    pub fn validate(&self) -> Result<(), String> {
        if !self.latency_ms.is_empty() && self.latency_ms.len() != LATENCY_BUCKETS {
            return Err(format!("latencyMs must have {LATENCY_BUCKETS} buckets"));
        }
        if !self.confidence.is_empty() && self.confidence.len() != CONFIDENCE_BUCKETS {
            return Err(format!("confidence must have {CONFIDENCE_BUCKETS} buckets"));
        }
        if self.errors > self.requests {
            return Err("errors exceed requests".into());
        }
        let lat: u64 = self.latency_ms.iter().sum();
        if lat > self.requests {
            return Err("latency histogram holds more samples than requests".into());
        }
        if !self.temp_c_sum.is_finite()
            || self.temp_c_max.is_some_and(|t| !t.is_finite())
            || self.throttled_samples > self.temp_samples
        {
            return Err("temperature fields are not plausible".into());
        }
        Ok(())
    }

    /// Latency quantile `q` in ms, interpolated geometrically inside its bucket; `None`
    /// without data.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency_ms.iter().sum();
        latency_at_rank(&self.latency_ms, q.clamp(0.0, 1.0) * total as f64)
    }

    /// errors / requests; `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    pub fn temp_mean_c(&self) -> Option<f64> {
        (self.temp_samples > 0).then(|| self.temp_c_sum / self.temp_samples as f64)
    }

    pub fn throttled_ratio(&self) -> Option<f64> {
        (self.temp_samples > 0).then(|| self.throttled_samples as f64 / self.temp_samples as f64)
    }

    /// Population stability index of this confidence histogram against `baseline`
    /// (Σ (p−q)·ln(p/q), empty buckets smoothed); `None` if either side has no data.
    pub fn confidence_psi(&self, baseline: &MetricsAggregate) -> Option<f64> {
        let (a, b): (u64, u64) = (
            self.confidence.iter().sum(),
            baseline.confidence.iter().sum(),
        );
        if a == 0 || b == 0 {
            return None;
        }
        const EPS: f64 = 1e-4;
        let psi = (0..CONFIDENCE_BUCKETS)
            .map(|i| {
                let p = (self.confidence.get(i).copied().unwrap_or(0) as f64 / a as f64).max(EPS);
                let q =
                    (baseline.confidence.get(i).copied().unwrap_or(0) as f64 / b as f64).max(EPS);
                (p - q) * (p / q).ln()
            })
            .sum();
        Some(psi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_right_bucket() {
        let mut m = MetricsAggregate::default();
        for i in 0..100 {
            m.record(if i < 90 { 12.0 } else { 350.0 }, i % 50 == 0, Some(0.9));
        }
        let p50 = m.latency_quantile_ms(0.5).unwrap();
        assert!((11.0..=13.2).contains(&p50), "{p50}");
        let p95 = m.latency_quantile_ms(0.95).unwrap();
        assert!((320.0..=385.0).contains(&p95), "{p95}");
        assert_eq!(m.error_rate(), Some(0.02));
        assert!(m.validate().is_ok());
    }

    #[test]
    fn buckets_are_about_nine_percent_wide() {
        for ms in [
            0.1, 0.5, 0.51, 1.0, 7.3, 100.0, 105.0, 299.9, 300.0, 10_000.0, 1e9,
        ] {
            let i = latency_bucket(ms);
            assert!(
                ms <= latency_bound_ms(i) || i == LATENCY_BUCKETS - 1,
                "{ms} in {i}"
            );
            assert!(i == 0 || ms > latency_bound_ms(i - 1), "{ms} in {i}");
        }
        let mut m = MetricsAggregate::default();
        for i in 0..1000 {
            m.record(80.0 + 40.0 * (i as f64 / 1000.0), false, None);
        }
        let p95 = m.latency_quantile_ms(0.95).unwrap();
        assert!((p95 - 118.0).abs() < 118.0 * 0.06, "{p95}");
    }

    #[test]
    fn merge_adds_and_psi_detects_shift() {
        let mut a = MetricsAggregate::default();
        let mut b = MetricsAggregate::default();
        for i in 0..1000 {
            a.record(10.0, false, Some(0.85 + (i % 10) as f64 * 0.01));
            b.record(10.0, false, Some(0.35 + (i % 10) as f64 * 0.01));
        }
        assert!(a.confidence_psi(&a).unwrap() < 1e-9);
        assert!(a.confidence_psi(&b).unwrap() > 1.0);
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m.requests, 2000);
        assert_eq!(m.latency_ms.iter().sum::<u64>(), 2000);
        m.record_temperature(70.0, false);
        m.record_temperature(82.0, true);
        assert_eq!(m.temp_c_max, Some(82.0));
        assert_eq!(m.throttled_ratio(), Some(0.5));
        assert!(
            MetricsAggregate {
                errors: 5,
                requests: 1,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
