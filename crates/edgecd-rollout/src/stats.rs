//! The statistics behind gate verdicts (pure arithmetic): normal quantiles, Wilson intervals
//! for proportions, order-statistic intervals for latency quantiles read from the merged
//! log-bucket histograms, log-ratio intervals for two proportions, a chi-square quantile for
//! the noise PSI shows between two samples of one distribution, and the alpha each look at
//! the data may spend so that repeated looks do not inflate false aborts.
use edgecd_api::metrics::{LATENCY_BUCKETS, latency_bound_ms};

/// The standard normal quantile Φ⁻¹(p) (Acklam's rational approximation, |error| < 1.2e-9
/// after one Newton step is not needed at our precision: < 5e-4 relative).
pub fn norm_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.02425;
    if p < LOW {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -norm_quantile(1.0 - p)
    }
}

/// The one-sided z for error probability `alpha` (e.g. 0.05 → 1.645).
pub fn z_one_sided(alpha: f64) -> f64 {
    norm_quantile(1.0 - alpha.clamp(1e-15, 0.5))
}

/// Wilson score interval for `k` successes in `n` trials at normal quantile `z`.
pub fn wilson(k: u64, n: u64, z: f64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let n = n as f64;
    let p = k as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// P(X ≤ k) for X ~ Binomial(n, p), summing the terms in log space (k small).
fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return if k >= n { 1.0 } else { 0.0 };
    }
    let (lp, lq) = (p.ln(), (-p).ln_1p());
    let mut log_t = n as f64 * lq;
    let mut sum = log_t.exp();
    for i in 0..k.min(n) {
        log_t += ((n - i) as f64).ln() - ((i + 1) as f64).ln() + lp - lq;
        sum += log_t.exp();
    }
    sum.min(1.0)
}

/// Counts up to this many are bounded exactly (Clopper–Pearson); above, Wilson is accurate.
const EXACT_UP_TO: u64 = 400;

/// One-sided exact (Clopper–Pearson) bounds for `k` successes in `n` trials, each with
/// error probability `alpha`: the `p` at which seeing `k` or more (fewer) becomes that
/// unlikely. Bisection on the binomial tail; `k` (or `n − k`) must be small.
fn clopper_pearson(k: u64, n: u64, alpha: f64) -> (f64, f64) {
    let solve = |f: &dyn Fn(f64) -> f64| {
        // f is increasing in p; find f(p) = alpha.
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..80 {
            let mid = 0.5 * (lo + hi);
            if f(mid) < alpha { lo = mid } else { hi = mid }
        }
        0.5 * (lo + hi)
    };
    let lower = if k == 0 {
        0.0
    } else {
        // P(X ≥ k | p) = 1 − P(X ≤ k−1 | p), increasing in p.
        solve(&|p| 1.0 - binomial_cdf(k - 1, n, p))
    };
    let upper = if k >= n {
        1.0
    } else {
        // P(X ≤ k | p) is decreasing in p: solve 1 − P(X ≤ k | p) = 1 − alpha.
        let a = 1.0 - alpha;
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..80 {
            let mid = 0.5 * (lo + hi);
            if 1.0 - binomial_cdf(k, n, mid) < a {
                lo = mid
            } else {
                hi = mid
            }
        }
        0.5 * (lo + hi)
    };
    (lower, upper)
}

/// An interval for a proportion `k` of `n` whose each side errs with probability `alpha`
/// (one-sided): exact (Clopper–Pearson) while the count or its complement is small — where
/// Wilson's bounds are too narrow at high confidence — else Wilson.
pub fn proportion_interval(k: u64, n: u64, alpha: f64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    if k <= EXACT_UP_TO {
        return Some(clopper_pearson(k, n, alpha));
    }
    if n - k <= EXACT_UP_TO {
        let (lo, hi) = clopper_pearson(n - k, n, alpha);
        return Some((1.0 - hi, 1.0 - lo));
    }
    wilson(k, n, z_one_sided(alpha))
}

/// Total samples in a latency histogram.
pub fn histogram_total(h: &[u64]) -> u64 {
    h.iter().sum()
}

/// The latency (ms) at fractional rank `rank` of a log-bucket histogram (the shared
/// interpolation of `latency_quantile_ms`).
pub use edgecd_api::metrics::latency_at_rank;

/// Order statistics (1-based ranks, possibly 0 or n+1 for "unbounded") that bound the `q`
/// quantile of `n` samples, each side with error probability `alpha`: the number of samples
/// above the true quantile is Binomial(n, 1−q), so X₍ᵣ₎ ≤ ξ_q unless more than n−r of them
/// lie above it. Exact while n·(1−q) is small, normal (continuity corrected) beyond.
pub fn quantile_ranks(n: u64, q: f64, alpha: f64) -> (f64, f64) {
    let tail = 1.0 - q;
    let nf = n as f64;
    if nf * tail.min(q) > 300.0 {
        let z = z_one_sided(alpha);
        let centre = q * nf;
        let half = z * (nf * q * tail).sqrt() + 0.5;
        return ((centre - half).max(0.0), (centre + half).min(nf + 1.0));
    }
    // m = samples above the quantile ~ Binomial(n, tail); P(m ≤ i) accumulated term by term.
    let (lp, lq) = (tail.ln(), (-tail).ln_1p());
    let mut log_t = nf * lq;
    let mut cdf = 0.0;
    // Upper: the largest i with P(m ≤ i) ≤ alpha gives s = n − i; none: unbounded (n+1).
    let mut upper_i: Option<u64> = None;
    // Lower: the smallest j with P(m ≥ j) ≤ alpha gives r = n − j + 1.
    let mut lower_j = n + 1;
    for i in 0..=n {
        if i > 0 {
            log_t += ((n - i + 1) as f64).ln() - (i as f64).ln() + lp - lq;
        }
        let before = cdf;
        cdf += log_t.exp();
        if cdf <= alpha {
            upper_i = Some(i);
        }
        // P(m ≥ i+1) = 1 − cdf.
        if 1.0 - cdf <= alpha && lower_j > n {
            lower_j = i + 1;
        }
        if 1.0 - before <= alpha || (lower_j <= n && cdf > alpha) {
            break;
        }
    }
    let hi = upper_i.map_or(nf + 1.0, |i| (n - i) as f64);
    let lo = (nf - lower_j as f64 + 1.0).max(0.0);
    (lo, hi)
}

/// An interval for the `q` quantile of a histogram, each side erring with probability
/// `alpha`: the latencies at the order statistics of [`quantile_ranks`] (the histogram's
/// lowest/highest bucket edge when a rank is unbounded). Returns (estimate, low, high).
pub fn quantile_interval(h: &[u64], q: f64, alpha: f64) -> Option<(f64, f64, f64)> {
    let n = histogram_total(h);
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let est = latency_at_rank(h, (q * nf).max(1.0))?;
    let (r, s) = quantile_ranks(n, q, alpha);
    let lo = if r < 1.0 {
        // Below the smallest sample: the lower edge of the lowest bucket in use.
        let first = h.iter().position(|&c| c > 0).unwrap_or(0);
        if first == 0 {
            0.0
        } else {
            latency_bound_ms(first - 1)
        }
    } else {
        latency_at_rank(h, r)?
    };
    let hi = if s > nf {
        let last = h.iter().rposition(|&c| c > 0).unwrap_or(0);
        if last + 1 >= LATENCY_BUCKETS {
            f64::INFINITY
        } else {
            latency_bound_ms(last)
        }
    } else {
        latency_at_rank(h, s)?
    };
    Some((est, lo.min(est), hi.max(est)))
}

/// An interval for the ratio p₁/p₀ of two proportions (k₁ of n₁ against k₀ of n₀), by the
/// delta method on the log ratio with ½ added to each count (so zero counts stay finite).
/// Returns (estimate, low, high).
pub fn ratio_of_proportions(k1: u64, n1: u64, k0: u64, n0: u64, z: f64) -> Option<(f64, f64, f64)> {
    if n1 == 0 || n0 == 0 {
        return None;
    }
    let (a, b) = (k1 as f64 + 0.5, n1 as f64 + 0.5);
    let (c, d) = (k0 as f64 + 0.5, n0 as f64 + 0.5);
    let est = (a / b) / (c / d);
    let se = (1.0 / a - 1.0 / b + 1.0 / c - 1.0 / d).max(0.0).sqrt();
    Some((est, est * (-z * se).exp(), est * (z * se).exp()))
}

/// The `p` quantile of χ² with `k` degrees of freedom (Wilson–Hilferty).
pub fn chi2_quantile(k: f64, p: f64) -> f64 {
    let z = norm_quantile(p);
    let a = 2.0 / (9.0 * k);
    (k * (1.0 - a + z * a.sqrt()).powi(3)).max(0.0)
}

/// The one-sided alpha look `look` (1-based) at an analysis may spend so that all looks
/// together spend at most `alpha`: half of it spread evenly over the `planned` looks of the
/// analysis window, a quarter evenly over the `holding` looks of `max_hold` after it, the
/// last quarter over any later looks, the j-th of them `6/(π² j²)` of it (a Bonferroni
/// bound over an unbounded number of looks that still lets a failure be found later).
pub fn alpha_for_look(alpha: f64, look: u32, planned: u32, holding: u32) -> f64 {
    let planned = planned.max(1);
    let holding = holding.max(1);
    if look <= planned {
        alpha / (2.0 * planned as f64)
    } else if look <= planned + holding {
        alpha / (4.0 * holding as f64)
    } else {
        let j = (look - planned - holding) as f64;
        alpha / 4.0 * 6.0 / (std::f64::consts::PI.powi(2) * j * j)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantiles_match_tables() {
        for (p, z) in [
            (0.5, 0.0),
            (0.95, 1.644_853_6),
            (0.975, 1.959_964),
            (0.99, 2.326_348),
            (0.999, 3.090_232),
            (0.01, -2.326_348),
        ] {
            assert!(
                (norm_quantile(p) - z).abs() < 1e-3,
                "{p}: {}",
                norm_quantile(p)
            );
        }
    }

    #[test]
    fn wilson_brackets_the_estimate() {
        let (lo, hi) = wilson(30, 1000, 1.96).unwrap();
        assert!(lo < 0.03 && hi > 0.03);
        assert!(
            (lo - 0.0211).abs() < 1e-3 && (hi - 0.0425).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(0, 10, 1.96).unwrap();
        assert_eq!(lo, 0.0);
        assert!(hi > 0.2 && hi < 0.35);
        assert!(wilson(0, 0, 1.96).is_none());
    }

    #[test]
    fn exact_bounds_for_small_counts() {
        // 1 of 2 at alpha 0.0005: the exact lower bound is 1 − √(1 − 0.0005) ≈ 0.00025
        // (Wilson's would be 0.04, above a 3% threshold).
        let (lo, hi) = proportion_interval(1, 2, 0.0005).unwrap();
        assert!((lo - 0.00025).abs() < 1e-5, "{lo}");
        assert!(hi > 0.99, "{hi}");
        let (lo, hi) = proportion_interval(0, 100, 0.05).unwrap();
        assert_eq!(lo, 0.0);
        assert!((hi - 0.0295).abs() < 5e-4, "{hi}");
        // Large counts: Wilson, close to the exact answer.
        let (lo, hi) = proportion_interval(3000, 100_000, 0.025).unwrap();
        assert!(lo < 0.03 && hi > 0.03 && hi - lo < 0.003, "{lo} {hi}");
        let (lo, hi) = proportion_interval(99, 100, 0.05).unwrap();
        assert!(lo > 0.94 && hi == 1.0 || hi > 0.999, "{lo} {hi}");
    }

    #[test]
    fn quantile_ranks_are_exact_for_few_samples() {
        // 20 samples, p95, alpha 0.05: P(m ≥ 3 | n=20, 0.05) = 0.075 > 0.05, P(m ≥ 4) = 0.016:
        // the lower bound is X(17); P(m = 0) = 0.358 > 0.05: the upper bound is unbounded.
        let (r, s) = quantile_ranks(20, 0.95, 0.05);
        assert_eq!((r, s), (17.0, 21.0));
        // Large n: normal ranks around n·q.
        let (r, s) = quantile_ranks(100_000, 0.95, 0.025);
        assert!(
            (r - 94_865.0).abs() < 3.0 && (s - 95_135.0).abs() < 3.0,
            "{r} {s}"
        );
        // Agreement at the switch-over.
        let (r1, s1) = quantile_ranks(6000, 0.95, 0.01);
        let (r2, s2) = quantile_ranks(6001, 0.95, 0.01);
        assert!(
            (r1 - r2).abs() < 3.0 && (s1 - s2).abs() < 3.0,
            "{r1} {r2} {s1} {s2}"
        );
    }

    #[test]
    fn chi2_quantiles_match_tables() {
        assert!((chi2_quantile(9.0, 0.95) - 16.919).abs() < 0.1);
        assert!((chi2_quantile(9.0, 0.99) - 21.666).abs() < 0.2);
    }

    #[test]
    fn alpha_spending_never_exceeds_the_budget() {
        let total: f64 = (1..=100_000).map(|k| alpha_for_look(0.05, k, 6, 12)).sum();
        assert!(total <= 0.05 + 1e-12, "{total}");
        assert!((alpha_for_look(0.05, 1, 6, 12) - 0.05 / 12.0).abs() < 1e-12);
        assert!((alpha_for_look(0.05, 7, 6, 12) - 0.05 / 48.0).abs() < 1e-12);
    }
}
