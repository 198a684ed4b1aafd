//! Inference metrics for rollout gates: reads the local runtime's Prometheus text exposition
//! (`--metrics-url`, edgecd-infer's metric names, which other runtimes can imitate) and the SoC
//! temperature, and turns cumulative counters into the mergeable deltas sent with check-ins.
//! Parsing and delta computation are pure; `collect` does the I/O.
use edgecd_api::metrics::{CONFIDENCE_BUCKETS, LATENCY_BUCKETS, MetricsAggregate, latency_bucket};

pub const LATENCY_METRIC: &str = "edgecd_infer_request_duration_seconds";
pub const REQUESTS_METRIC: &str = "edgecd_infer_requests_total";
pub const ERRORS_METRIC: &str = "edgecd_infer_request_errors_total";
pub const CONFIDENCE_METRIC: &str = "edgecd_infer_confidence";

/// Cumulative values read from one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub requests: f64,
    pub errors: f64,
    /// Non-cumulative counts per our latency bucket.
    pub latency: Vec<f64>,
    /// Non-cumulative counts per our confidence bucket.
    pub confidence: Vec<f64>,
}

fn label_value<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// Parses the Prometheus text format (0.0.4) for the metrics above.
pub fn parse(text: &str) -> Snapshot {
    let mut s = Snapshot {
        latency: vec![0.0; LATENCY_BUCKETS],
        confidence: vec![0.0; CONFIDENCE_BUCKETS],
        ..Default::default()
    };
    let mut lat: Vec<(f64, f64)> = vec![];
    let mut conf: Vec<(f64, f64)> = vec![];
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (head, value) = match line.rsplit_once(' ') {
            Some((h, v)) => (h.trim(), v.trim()),
            None => continue,
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (head, ""),
        };
        let le = || {
            label_value(labels, "le").and_then(|x| {
                if x == "+Inf" {
                    Some(f64::INFINITY)
                } else {
                    x.parse().ok()
                }
            })
        };
        match name {
            REQUESTS_METRIC => s.requests += v,
            ERRORS_METRIC => s.errors += v,
            n if n == format!("{LATENCY_METRIC}_bucket") => lat.extend(le().map(|b| (b, v))),
            n if n == format!("{CONFIDENCE_METRIC}_bucket") => conf.extend(le().map(|b| (b, v))),
            _ => {}
        }
    }
    // Cumulative Prometheus buckets → counts placed at each bucket's geometric middle.
    lat.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut prev = (0.0, 0.0);
    for (le, cum) in lat {
        let n = (cum - prev.1).max(0.0);
        let hi_ms = if le.is_finite() {
            le * 1000.0
        } else {
            prev.0 * 2000.0
        };
        let lo_ms = prev.0 * 1000.0;
        let mid = if lo_ms > 0.0 {
            (lo_ms * hi_ms).sqrt()
        } else {
            hi_ms / 2.0
        };
        s.latency[latency_bucket(mid)] += n;
        prev = (if le.is_finite() { le } else { prev.0 }, cum);
    }
    conf.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut prev = (0.0, 0.0);
    for (le, cum) in conf {
        let n = (cum - prev.1).max(0.0);
        let hi = if le.is_finite() { le.min(1.0) } else { 1.0 };
        let mid = (prev.0 + hi) / 2.0;
        let i = ((mid * CONFIDENCE_BUCKETS as f64) as usize).min(CONFIDENCE_BUCKETS - 1);
        s.confidence[i] += n;
        prev = (hi, cum);
    }
    s
}

/// The change from `prev` to `now` as an aggregate; a counter that went down (runtime
/// restart) counts from zero.
pub fn delta(prev: Option<&Snapshot>, now: &Snapshot) -> MetricsAggregate {
    let reset = prev.is_some_and(|p| now.requests < p.requests);
    let base = if reset { None } else { prev };
    let d = |a: f64, b: Option<f64>| (a - b.unwrap_or(0.0)).max(0.0).round() as u64;
    let mut m = MetricsAggregate {
        requests: d(now.requests, base.map(|p| p.requests)),
        errors: d(now.errors, base.map(|p| p.errors)),
        ..Default::default()
    };
    m.errors = m.errors.min(m.requests);
    m.latency_ms = now
        .latency
        .iter()
        .enumerate()
        .map(|(i, v)| d(*v, base.map(|p| p.latency[i])))
        .collect();
    m.confidence = now
        .confidence
        .iter()
        .enumerate()
        .map(|(i, v)| d(*v, base.map(|p| p.confidence[i])))
        .collect();
    // Keep the histogram within the request count (scrapes are not atomic).
    let total: u64 = m.latency_ms.iter().sum();
    if total > m.requests {
        m.requests = total;
    }
    m
}

/// Whether the SoC reports throttling now: the Raspberry Pi firmware's `get_throttled` bits
/// (1: ARM frequency capped, 2: throttled, 3: soft temperature limit active), hex or decimal.
pub fn parse_throttled(text: &str) -> Option<bool> {
    let t = text.trim();
    let v = match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => t.parse::<u64>().ok()?,
    };
    Some(v & 0b1110 != 0)
}

/// Reads a thermal zone file (millidegrees Celsius).
pub fn read_temperature(path: &std::path::Path) -> Option<f64> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .map(|m| m / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "# TYPE edgecd_infer_request_duration_seconds histogram
edgecd_infer_request_duration_seconds_bucket{le=\"0.01\"} 10
edgecd_infer_request_duration_seconds_bucket{le=\"0.1\"} 90
edgecd_infer_request_duration_seconds_bucket{le=\"1\"} 100
edgecd_infer_request_duration_seconds_bucket{le=\"+Inf\"} 100
edgecd_infer_request_duration_seconds_sum 4.2
edgecd_infer_request_duration_seconds_count 100
edgecd_infer_requests_total 102
edgecd_infer_request_errors_total{kind=\"malformed\"} 1
edgecd_infer_request_errors_total{kind=\"model\"} 1
edgecd_infer_confidence_bucket{le=\"0.5\"} 5
edgecd_infer_confidence_bucket{le=\"0.9\"} 20
edgecd_infer_confidence_bucket{le=\"+Inf\"} 98
";

    #[test]
    fn throttling_bits() {
        assert_eq!(parse_throttled("0x0\n"), Some(false));
        assert_eq!(parse_throttled("0x50005"), Some(true)); // under-voltage + throttled now
        assert_eq!(parse_throttled("0x50000"), Some(false)); // only "has occurred" bits
        assert_eq!(parse_throttled("0x1"), Some(false)); // under-voltage alone is not throttling
        assert_eq!(parse_throttled("8"), Some(true));
        assert_eq!(parse_throttled("nope"), None);
    }

    #[test]
    fn parses_and_diffs_cumulative_counters() {
        let a = parse(SCRAPE);
        assert_eq!((a.requests, a.errors), (102.0, 2.0));
        assert_eq!(a.latency.iter().sum::<f64>(), 100.0);
        assert_eq!(a.confidence.iter().sum::<f64>(), 98.0);
        let first = delta(None, &a);
        assert_eq!(first.requests, 102);
        let p50 = first.latency_quantile_ms(0.5).unwrap();
        assert!((10.0..100.0).contains(&p50), "{p50}");
        // Ten more requests, all slow: the delta holds only those.
        let later = SCRAPE
            .replace("_bucket{le=\"1\"} 100", "_bucket{le=\"1\"} 110")
            .replace("{le=\"+Inf\"} 100", "{le=\"+Inf\"} 110")
            .replace("requests_total 102", "requests_total 112");
        let b = parse(&later);
        let d = delta(Some(&a), &b);
        assert_eq!(d.requests, 10);
        assert_eq!(d.latency_ms.iter().sum::<u64>(), 10);
        assert!(d.latency_quantile_ms(0.5).unwrap() > 100.0);
        assert!(d.validate().is_ok());
        // A runtime restart (counters went down) counts from zero.
        assert_eq!(delta(Some(&b), &a).requests, 102);
    }
}
