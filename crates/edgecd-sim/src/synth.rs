//! Synthesizes one check-in's worth of metric aggregates from a resolved behaviour.
use crate::scenario::Resolved;
use edgecd_api::metrics::MetricsAggregate;

/// A small deterministic PRNG (SplitMix64) so simulations replay exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// `requests` requests (default: the behaviour's count) and one temperature sample.
pub fn synthesize(b: &Resolved, rng: &mut Rng, requests: Option<u64>) -> MetricsAggregate {
    let mut m = MetricsAggregate::default();
    let n = requests.unwrap_or(b.requests_per_checkin);
    // Log-normal latency fitted to p50 and p95.
    let mu = b.latency_ms.p50.ln();
    let sigma = ((b.latency_ms.p95.ln() - mu) / 1.644_853_6).max(0.0);
    for _ in 0..n {
        let latency = (mu + sigma * rng.normal()).exp();
        let error = rng.chance(b.error_rate);
        let confidence =
            (!error).then(|| (b.confidence.mean + b.confidence.sd * rng.normal()).clamp(0.0, 1.0));
        m.record(latency, error, confidence);
    }
    let temp = b.temp_c.mean + b.temp_c.sd * rng.normal();
    m.record_temperature(temp, rng.chance(b.throttle_rate));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthesized_quantiles_match_the_scenario() {
        let mut b = Resolved::default();
        b.latency_ms.p50 = 100.0;
        b.latency_ms.p95 = 300.0;
        b.error_rate = 0.05;
        let mut rng = Rng::new(7);
        let m = synthesize(&b, &mut rng, Some(20_000));
        let p50 = m.latency_quantile_ms(0.5).unwrap();
        let p95 = m.latency_quantile_ms(0.95).unwrap();
        assert!((p50 / 100.0 - 1.0).abs() < 0.08, "p50 {p50}");
        assert!((p95 / 300.0 - 1.0).abs() < 0.08, "p95 {p95}");
        assert!((m.error_rate().unwrap() - 0.05).abs() < 0.01);
        assert!(m.validate().is_ok());
        assert_eq!(
            synthesize(&b, &mut Rng::new(1), Some(10)),
            synthesize(&b, &mut Rng::new(1), Some(10)),
            "deterministic"
        );
    }
}
