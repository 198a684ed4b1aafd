//! The simulated fleet's Prometheus exporter: what Prometheus would scrape from each device's
//! `edgecd-infer`, for every virtual device at one address, so PromQL gates, alert rules and
//! dashboards can be rehearsed against a real Prometheus before they meet a real fleet.
//!
//! Families and buckets are edgecd-infer's (`edgecd_infer_request_duration_seconds`,
//! `edgecd_infer_requests_total`, `edgecd_infer_request_errors_total{kind}`,
//! `edgecd_infer_confidence`, `edgecd_infer_temperature_celsius`, `edgecd_infer_model_info`);
//! every series carries `device` and `release` (the release that served the requests), which a
//! real deployment adds with target labels (see deploy/prometheus). Counters are cumulative per
//! (device, release) from the start of the simulation. Rendering is pure ([`Exposition::render`]);
//! [`serve`] answers `GET /metrics` on a small std-only HTTP thread.
use edgecd_api::exposition::{escape_label_value, sample_value};
use edgecd_api::metrics::{CONFIDENCE_BUCKETS, MetricsAggregate, latency_bound_ms};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latency bucket bounds (seconds) of the exported histogram: 1-1.5-2-3-5-7.5 steps, fine
/// enough for `histogram_quantile` to place a p95 within ~25%.
pub const LATENCY_BOUNDS_SECONDS: &[f64] = &[
    0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
    0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Series {
    requests: u64,
    errors: u64,
    /// Non-cumulative counts per `LATENCY_BOUNDS_SECONDS` bucket, plus one for +Inf.
    latency: Vec<u64>,
    latency_sum: f64,
    /// Non-cumulative counts per 0.1-wide confidence bucket.
    confidence: Vec<u64>,
    confidence_sum: f64,
    confidence_count: u64,
}

/// Cumulative per-device series, fed with each synthesized aggregate.
#[derive(Debug, Default)]
pub struct Exposition {
    series: BTreeMap<(String, String), Series>,
    /// device → (release it runs now, last temperature).
    devices: BTreeMap<String, (String, Option<f64>)>,
}

impl Exposition {
    /// Adds the requests `device` served on `release` since its last report.
    pub fn record(&mut self, device: &str, release: &str, m: &MetricsAggregate) {
        let s = self
            .series
            .entry((device.to_string(), release.to_string()))
            .or_default();
        if s.latency.is_empty() {
            s.latency = vec![0; LATENCY_BOUNDS_SECONDS.len() + 1];
            s.confidence = vec![0; CONFIDENCE_BUCKETS];
        }
        s.requests += m.requests;
        s.errors += m.errors;
        for (i, &n) in m.latency_ms.iter().enumerate() {
            if n == 0 {
                continue;
            }
            // The aggregate's bucket i is (bound(i-1), bound(i)] ms: count it under the first
            // exported bound at or above its upper end; its geometric middle goes to _sum.
            let hi = latency_bound_ms(i) / 1000.0;
            let mid = if i == 0 {
                hi / 2.0
            } else {
                (latency_bound_ms(i - 1) / 1000.0 * hi).sqrt()
            };
            let b = LATENCY_BOUNDS_SECONDS
                .iter()
                .position(|&le| hi <= le * (1.0 + 1e-9))
                .unwrap_or(LATENCY_BOUNDS_SECONDS.len());
            s.latency[b] += n;
            s.latency_sum += mid * n as f64;
        }
        for (i, &n) in m.confidence.iter().enumerate().take(CONFIDENCE_BUCKETS) {
            s.confidence[i] += n;
            s.confidence_sum += (i as f64 + 0.5) / CONFIDENCE_BUCKETS as f64 * n as f64;
            s.confidence_count += n;
        }
        let temp = m.temp_c_max.or(self.devices.get(device).and_then(|d| d.1));
        self.devices
            .insert(device.to_string(), (release.to_string(), temp));
    }

    /// The exposition text (format 0.0.4).
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(256 + self.series.len() * 2048);
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut o,
            "edgecd_infer_model_info",
            "gauge",
            "The active release of each simulated device (value is always 1).",
        );
        for (dev, (rel, _)) in &self.devices {
            let _ = writeln!(
                o,
                "edgecd_infer_model_info{{device=\"{}\",release=\"{}\",model=\"simulated\",runtime=\"edgecd-sim\"}} 1",
                escape_label_value(dev),
                escape_label_value(rel)
            );
        }
        head(
            &mut o,
            "edgecd_infer_request_duration_seconds",
            "histogram",
            "Latency of inference requests that ran the model.",
        );
        for ((dev, rel), s) in &self.series {
            let l = format!(
                "device=\"{}\",release=\"{}\"",
                escape_label_value(dev),
                escape_label_value(rel)
            );
            let mut cum = 0;
            for (le, n) in LATENCY_BOUNDS_SECONDS.iter().zip(&s.latency) {
                cum += n;
                let _ = writeln!(
                    o,
                    "edgecd_infer_request_duration_seconds_bucket{{{l},le=\"{}\"}} {cum}",
                    sample_value(*le)
                );
            }
            cum += s.latency.last().copied().unwrap_or(0);
            let _ = writeln!(
                o,
                "edgecd_infer_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {cum}\n\
                 edgecd_infer_request_duration_seconds_sum{{{l}}} {}\n\
                 edgecd_infer_request_duration_seconds_count{{{l}}} {cum}",
                sample_value(s.latency_sum)
            );
        }
        head(
            &mut o,
            "edgecd_infer_confidence",
            "histogram",
            "Top-1 probability of classifier outputs.",
        );
        for ((dev, rel), s) in &self.series {
            let l = format!(
                "device=\"{}\",release=\"{}\"",
                escape_label_value(dev),
                escape_label_value(rel)
            );
            let mut cum = 0;
            for (i, n) in s.confidence.iter().enumerate() {
                cum += n;
                let le = (i + 1) as f64 / CONFIDENCE_BUCKETS as f64;
                if i + 1 < CONFIDENCE_BUCKETS {
                    let _ = writeln!(
                        o,
                        "edgecd_infer_confidence_bucket{{{l},le=\"{}\"}} {cum}",
                        sample_value((le * 10.0).round() / 10.0)
                    );
                }
            }
            let _ = writeln!(
                o,
                "edgecd_infer_confidence_bucket{{{l},le=\"+Inf\"}} {}\n\
                 edgecd_infer_confidence_sum{{{l}}} {}\n\
                 edgecd_infer_confidence_count{{{l}}} {}",
                s.confidence_count,
                sample_value(s.confidence_sum),
                s.confidence_count
            );
        }
        head(
            &mut o,
            "edgecd_infer_requests_total",
            "counter",
            "Inference requests received.",
        );
        for ((dev, rel), s) in &self.series {
            let _ = writeln!(
                o,
                "edgecd_infer_requests_total{{device=\"{}\",release=\"{}\"}} {}",
                escape_label_value(dev),
                escape_label_value(rel),
                s.requests
            );
        }
        head(
            &mut o,
            "edgecd_infer_request_errors_total",
            "counter",
            "Inference requests that failed, by kind.",
        );
        for ((dev, rel), s) in &self.series {
            let _ = writeln!(
                o,
                "edgecd_infer_request_errors_total{{device=\"{}\",release=\"{}\",kind=\"model_failure\"}} {}",
                escape_label_value(dev),
                escape_label_value(rel),
                s.errors
            );
        }
        head(
            &mut o,
            "edgecd_infer_temperature_celsius",
            "gauge",
            "SoC temperature of each simulated device.",
        );
        for (dev, (rel, t)) in &self.devices {
            if let Some(t) = t {
                let _ = writeln!(
                    o,
                    "edgecd_infer_temperature_celsius{{device=\"{}\",release=\"{}\"}} {}",
                    escape_label_value(dev),
                    escape_label_value(rel),
                    sample_value(*t)
                );
            }
        }
        o
    }
}

/// Serves `GET /metrics` from `exposition` on `addr` until `stop` is set (checked between
/// connections, at least every 200 ms). Returns the bound address (port 0 picks one).
pub fn serve(
    addr: SocketAddr,
    exposition: Arc<Mutex<Exposition>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let h = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((conn, _)) => {
                    let _ = answer(conn, &exposition);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    Ok((bound, h))
}

fn answer(mut conn: TcpStream, exposition: &Mutex<Exposition>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || req.len() > 16 * 1024 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            exposition
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .render(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics\n".into(),
        ),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(latencies_ms: &[f64], errors: usize) -> MetricsAggregate {
        let mut m = MetricsAggregate::default();
        for (i, l) in latencies_ms.iter().enumerate() {
            m.record(*l, i < errors, Some(0.93));
        }
        m.record_temperature(61.5, false);
        m
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn accumulates_per_device_and_release() {
        let mut e = Exposition::default();
        e.record(
            "pi-1",
            "clf@1.0.0",
            &traffic(&[40.0, 80.0, 120.0, 900.0], 1),
        );
        e.record("pi-1", "clf@1.0.0", &traffic(&[40.0], 0));
        e.record("pi-1", "clf@2.0.0", &traffic(&[250.0, 260.0], 2));
        let t = e.render();
        let l1 = r#"{device="pi-1",release="clf@1.0.0"}"#;
        assert_eq!(value(&t, &format!("edgecd_infer_requests_total{l1}")), 5.0);
        assert_eq!(
            value(
                &t,
                &format!("edgecd_infer_request_duration_seconds_count{l1}")
            ),
            5.0
        );
        // 40, 40, 80 ms are ≤ 0.1 s; 120 ms is not; 900 ms lands under 1 s.
        let b = |le: &str| {
            value(
                &t,
                &format!(
                    "edgecd_infer_request_duration_seconds_bucket{{device=\"pi-1\",release=\"clf@1.0.0\",le=\"{le}\"}}"
                ),
            )
        };
        assert_eq!(b("0.1"), 3.0);
        assert_eq!(b("0.15"), 4.0);
        assert_eq!(b("0.75"), 4.0);
        assert_eq!(b("1"), 5.0);
        assert_eq!(b("+Inf"), 5.0);
        let sum = value(
            &t,
            &format!("edgecd_infer_request_duration_seconds_sum{l1}"),
        );
        assert!((sum - 1.18).abs() < 0.1, "sum {sum}");
        assert_eq!(
            value(
                &t,
                r#"edgecd_infer_request_errors_total{device="pi-1",release="clf@2.0.0",kind="model_failure"}"#
            ),
            2.0
        );
        // The device now runs 2.0.0; its temperature is the last reported.
        assert!(t.contains(r#"edgecd_infer_model_info{device="pi-1",release="clf@2.0.0","#));
        assert!(!t.contains(r#"edgecd_infer_model_info{device="pi-1",release="clf@1.0.0""#));
        assert_eq!(
            value(
                &t,
                r#"edgecd_infer_temperature_celsius{device="pi-1",release="clf@2.0.0"}"#
            ),
            61.5
        );
        assert_eq!(
            value(
                &t,
                r#"edgecd_infer_confidence_bucket{device="pi-1",release="clf@2.0.0",le="0.9"}"#
            ),
            0.0
        );
        assert_eq!(
            value(
                &t,
                r#"edgecd_infer_confidence_bucket{device="pi-1",release="clf@2.0.0",le="+Inf"}"#
            ),
            2.0
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::default();
        e.record("a\"b\\c", "x@1", &traffic(&[1.0], 0));
        assert!(e.render().contains(r#"device="a\"b\\c""#));
    }

    #[test]
    fn serves_get_metrics_only() {
        let e = Arc::new(Mutex::new(Exposition::default()));
        e.lock()
            .unwrap()
            .record("pi-1", "clf@1", &traffic(&[5.0], 0));
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, h) = serve("127.0.0.1:0".parse().unwrap(), e, stop.clone()).unwrap();
        let get = |req: &str| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(req.as_bytes()).unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).unwrap();
            s
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("edgecd_infer_requests_total{device=\"pi-1\""));
        assert!(get("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    }
}
