//! The agent's own Prometheus endpoint (`--metrics-listen`, off by default): what the agent
//! does on this device, for local scraping and fleet alerting (`deploy/prometheus`).
//!
//! [`Telemetry`] is the shared, process-lifetime state the agent updates as it works (phase
//! and running release on every state change, install outcomes, downloaded bytes, check-ins,
//! SoC readings); [`render`] turns a [`Sample`] of it into the classic text format 0.0.4
//! (promtool-clean: HELP and TYPE for every family, `_total` counters, escaped label values);
//! [`spawn`] answers `GET /metrics` on a plain `std::net::TcpListener` thread (404 for other
//! paths, 405 for other methods) so the agent keeps no HTTP server dependency.
//!
//! The endpoint is unauthenticated: [`bind`] refuses a non-loopback address unless the
//! operator opted in (`--metrics-listen-any`).
//!
//! Families (names are an interface: `deploy/prometheus/rules` alert on them):
//! `edgecd_agent_release_info{app,version,slot}`, `edgecd_agent_phase{phase}`,
//! `edgecd_agent_installs_total{outcome}`, `edgecd_agent_download_bytes_total`,
//! `edgecd_agent_checkins_total{result}`, `edgecd_agent_last_checkin_success_timestamp_seconds`,
//! `edgecd_agent_temperature_celsius`, `edgecd_agent_throttled`,
//! `edgecd_agent_throttle_events_total`, `edgecd_agent_start_time_seconds`.

use edgecd_api::exposition::{escape_label_value, sample_value};
use edgecd_api::protocol::{OutcomeKind, Phase, RunningRelease};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The documented address for `--metrics-listen` (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9101";

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections served at once; more are closed unanswered.
const MAX_IN_FLIGHT: usize = 8;
/// Deadline for reading a request and writing the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted.
const MAX_HEAD: u64 = 8 * 1024;

/// Errors setting up the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error(
        "metrics address {0} is not a loopback address: the endpoint has no authentication; \
         pass --metrics-listen-any to expose it on the network anyway"
    )]
    NotLoopback(SocketAddr),
    #[error("listening for metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Every phase of the install state machine with its label value (lower snake case), in
/// exposition order.
pub const PHASES: [(Phase, &str); 9] = [
    (Phase::Idle, "idle"),
    (Phase::Downloading, "downloading"),
    (Phase::Verifying, "verifying"),
    (Phase::Staged, "staged"),
    (Phase::SelfTest, "self_test"),
    (Phase::Activating, "activating"),
    (Phase::Trial, "trial"),
    (Phase::Committed, "committed"),
    (Phase::RollingBack, "rolling_back"),
];

/// Position of `p` in [`PHASES`] (exhaustive: a new phase does not compile until listed).
fn phase_index(p: Phase) -> usize {
    match p {
        Phase::Idle => 0,
        Phase::Downloading => 1,
        Phase::Verifying => 2,
        Phase::Staged => 3,
        Phase::SelfTest => 4,
        Phase::Activating => 5,
        Phase::Trial => 6,
        Phase::Committed => 7,
        Phase::RollingBack => 8,
    }
}

/// Install outcomes with their label values, in exposition order.
pub const OUTCOMES: [(OutcomeKind, &str); 4] = [
    (OutcomeKind::Committed, "committed"),
    (OutcomeKind::Failed, "failed"),
    (OutcomeKind::RolledBack, "rolled_back"),
    (OutcomeKind::Refused, "refused"),
];

fn outcome_index(k: OutcomeKind) -> usize {
    match k {
        OutcomeKind::Committed => 0,
        OutcomeKind::Failed => 1,
        OutcomeKind::RolledBack => 2,
        OutcomeKind::Refused => 3,
    }
}

/// A consistent copy of everything exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The release `current` points to (the one under trial while activating).
    pub release: Option<RunningRelease>,
    pub phase: Phase,
    /// Finished installs per [`OUTCOMES`] entry.
    pub installs: [u64; 4],
    pub download_bytes: u64,
    pub checkins_ok: u64,
    pub checkins_error: u64,
    /// Unix seconds of the last successful check-in (0: none yet).
    pub last_checkin_success: u64,
    pub temperature_celsius: Option<f64>,
    /// `None` when the device has no throttling report.
    pub throttled: Option<bool>,
    /// Times a reading found the SoC throttled after one that did not.
    pub throttle_events: u64,
    /// Unix seconds the agent started.
    pub start_time: u64,
}

impl Sample {
    fn new(start_time: u64) -> Self {
        Sample {
            release: None,
            phase: Phase::Idle,
            installs: [0; 4],
            download_bytes: 0,
            checkins_ok: 0,
            checkins_error: 0,
            last_checkin_success: 0,
            temperature_celsius: None,
            throttled: None,
            throttle_events: 0,
            start_time,
        }
    }
}

/// The agent's shared, process-lifetime metric state (cheap to update from the sync loop).
#[derive(Debug)]
pub struct Telemetry {
    thermal_path: Option<PathBuf>,
    throttle_path: Option<PathBuf>,
    sample: Mutex<Sample>,
}

impl Telemetry {
    /// Starts the clock now; `thermal_path`/`throttle_path` are the files [`Self::read_soc`]
    /// reads (the agent's `--thermal-path`/`--throttle-path`).
    pub fn new(thermal_path: Option<PathBuf>, throttle_path: Option<PathBuf>) -> Self {
        Telemetry {
            thermal_path,
            throttle_path,
            sample: Mutex::new(Sample::new(unix_now())),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Sample) -> T) -> T {
        f(&mut self.sample.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A copy of the current values.
    pub fn sample(&self) -> Sample {
        self.with(|s| s.clone())
    }

    /// The install phase and the release `current` points to.
    pub fn set_state(&self, phase: Phase, release: Option<RunningRelease>) {
        self.with(|s| {
            s.phase = phase;
            s.release = release;
        });
    }

    /// One finished install (or install attempt) with this outcome.
    pub fn record_outcome(&self, kind: OutcomeKind) {
        self.with(|s| s.installs[outcome_index(kind)] += 1);
    }

    /// Bytes received from the server for a download.
    pub fn add_download_bytes(&self, n: u64) {
        self.with(|s| s.download_bytes = s.download_bytes.saturating_add(n));
    }

    /// One check-in attempt; `at` (unix seconds) stamps a success.
    pub fn record_checkin(&self, ok: bool, at: u64) {
        self.with(|s| {
            if ok {
                s.checkins_ok += 1;
                s.last_checkin_success = at;
            } else {
                s.checkins_error += 1;
            }
        });
    }

    /// Records one SoC reading (counting a new throttling episode).
    pub fn record_soc(&self, temperature: Option<f64>, throttled: Option<bool>) {
        self.with(|s| {
            s.temperature_celsius = temperature.filter(|t| t.is_finite());
            if throttled == Some(true) && s.throttled != Some(true) {
                s.throttle_events += 1;
            }
            s.throttled = throttled;
        });
    }

    /// Reads the thermal and throttling files now, records and returns the readings.
    pub fn read_soc(&self) -> (Option<f64>, Option<bool>) {
        let t = self
            .thermal_path
            .as_deref()
            .and_then(crate::metrics::read_temperature);
        let th = self
            .throttle_path
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| crate::metrics::parse_throttled(&s));
        self.record_soc(t, th);
        (t, th)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The exposition text (format 0.0.4) of `s`.
pub fn render(s: &Sample) -> String {
    let mut o = String::with_capacity(2048);
    family(
        &mut o,
        "edgecd_agent_release_info",
        "gauge",
        "The release the device runs (value is always 1; absent when none is installed).",
    );
    if let Some(r) = &s.release {
        let _ = writeln!(
            o,
            "edgecd_agent_release_info{{app=\"{}\",version=\"{}\",slot=\"{}\"}} 1",
            escape_label_value(&r.app),
            escape_label_value(&r.version),
            escape_label_value(&r.slot)
        );
    }
    family(
        &mut o,
        "edgecd_agent_phase",
        "gauge",
        "Install state machine phase (1 for the current phase, 0 for the others).",
    );
    let current = phase_index(s.phase);
    for (i, (_, name)) in PHASES.iter().enumerate() {
        let v = u8::from(i == current);
        let _ = writeln!(o, "edgecd_agent_phase{{phase=\"{name}\"}} {v}");
    }
    family(
        &mut o,
        "edgecd_agent_installs_total",
        "counter",
        "Finished install attempts by outcome since the agent started.",
    );
    for (i, (_, name)) in OUTCOMES.iter().enumerate() {
        let _ = writeln!(
            o,
            "edgecd_agent_installs_total{{outcome=\"{name}\"}} {}",
            s.installs[i]
        );
    }
    family(
        &mut o,
        "edgecd_agent_download_bytes_total",
        "counter",
        "Release bytes downloaded from the server since the agent started.",
    );
    let _ = writeln!(o, "edgecd_agent_download_bytes_total {}", s.download_bytes);
    family(
        &mut o,
        "edgecd_agent_checkins_total",
        "counter",
        "Check-ins with the server by result since the agent started.",
    );
    let _ = writeln!(
        o,
        "edgecd_agent_checkins_total{{result=\"ok\"}} {}",
        s.checkins_ok
    );
    let _ = writeln!(
        o,
        "edgecd_agent_checkins_total{{result=\"error\"}} {}",
        s.checkins_error
    );
    family(
        &mut o,
        "edgecd_agent_last_checkin_success_timestamp_seconds",
        "gauge",
        "Unix time of the last successful check-in (0 before the first).",
    );
    let _ = writeln!(
        o,
        "edgecd_agent_last_checkin_success_timestamp_seconds {}",
        s.last_checkin_success
    );
    family(
        &mut o,
        "edgecd_agent_temperature_celsius",
        "gauge",
        "Last SoC temperature reading (absent when unknown).",
    );
    if let Some(t) = s.temperature_celsius.filter(|t| t.is_finite()) {
        let _ = writeln!(o, "edgecd_agent_temperature_celsius {}", sample_value(t));
    }
    family(
        &mut o,
        "edgecd_agent_throttled",
        "gauge",
        "Whether the firmware reported the SoC throttled at the last reading (absent when unknown).",
    );
    if let Some(th) = s.throttled {
        let _ = writeln!(o, "edgecd_agent_throttled {}", u8::from(th));
    }
    family(
        &mut o,
        "edgecd_agent_throttle_events_total",
        "counter",
        "Readings that found the SoC throttled after one that did not, since the agent started.",
    );
    let _ = writeln!(
        o,
        "edgecd_agent_throttle_events_total {}",
        s.throttle_events
    );
    family(
        &mut o,
        "edgecd_agent_start_time_seconds",
        "gauge",
        "Unix time the agent process started.",
    );
    let _ = writeln!(o, "edgecd_agent_start_time_seconds {}", s.start_time);
    o
}

/// Refuses a non-loopback `addr` unless `allow_any`.
pub fn check_addr(addr: SocketAddr, allow_any: bool) -> Result<(), ExporterError> {
    if addr.ip().is_loopback() || allow_any {
        Ok(())
    } else {
        Err(ExporterError::NotLoopback(addr))
    }
}

/// Binds the endpoint's listener (see [`check_addr`]).
pub fn bind(addr: SocketAddr, allow_any: bool) -> Result<TcpListener, ExporterError> {
    check_addr(addr, allow_any)?;
    TcpListener::bind(addr).map_err(|source| ExporterError::Bind { addr, source })
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    pub allow: Option<&'static str>,
    pub body: String,
    /// HEAD: headers only.
    pub head_only: bool,
}

impl Response {
    fn plain(status: u16, reason: &'static str, body: &str) -> Self {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            allow: None,
            body: format!("{body}\n"),
            head_only: false,
        }
    }

    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if let Some(a) = self.allow {
            let _ = write!(head, "allow: {a}\r\n");
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        if !self.head_only {
            w.write_all(self.body.as_bytes())?;
        }
        w.flush()
    }
}

/// The answer to a request line (`GET /metrics HTTP/1.1`); 400 for an unparsable one.
pub fn respond(request_line: &str, telemetry: &Telemetry) -> Response {
    let mut parts = request_line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Response::plain(400, "Bad Request", "malformed request line");
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Response::plain(400, "Bad Request", "malformed request line");
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    if path != "/metrics" {
        return Response::plain(404, "Not Found", "not found: the metrics are at /metrics");
    }
    match method {
        "GET" | "HEAD" => Response {
            status: 200,
            reason: "OK",
            content_type: CONTENT_TYPE,
            allow: None,
            body: render(&telemetry.sample()),
            head_only: method == "HEAD",
        },
        _ => Response {
            allow: Some("GET, HEAD"),
            ..Response::plain(405, "Method Not Allowed", "method not allowed")
        },
    }
}

fn serve_one(stream: TcpStream, telemetry: &Telemetry) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new((&stream).take(MAX_HEAD));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read (and ignore) the headers, so the client is not reset while still sending them.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
    }
    respond(request_line.trim_end(), telemetry).write_to(&mut &stream)
}

/// Serves `GET /metrics` from `listener` on a background thread (one short-lived thread per
/// connection, at most a few at once) for the rest of the process.
pub fn spawn(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let in_flight = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                    continue; // dropped: closed unanswered
                }
                let (t, n) = (telemetry.clone(), in_flight.clone());
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || {
                        if let Err(e) = serve_one(stream, &t) {
                            tracing::debug!(error = %e, "metrics request");
                        }
                        n.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Sample {
        Sample {
            release: Some(RunningRelease {
                app: "receipt-parser".into(),
                version: "1.5.0".into(),
                bundle_digest: "sha256:00".into(),
                slot: "b".into(),
                image: None,
            }),
            phase: Phase::RollingBack,
            installs: [2, 1, 3, 4],
            download_bytes: 123_456,
            checkins_ok: 7,
            checkins_error: 2,
            last_checkin_success: 1_790_000_000,
            temperature_celsius: Some(61.5),
            throttled: Some(true),
            throttle_events: 3,
            start_time: 1_789_999_000,
        }
    }

    /// `name{labels} value` lines (no comments).
    fn series(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn renders_every_value() {
        let text = render(&full());
        let s = series(&text);
        for want in [
            "edgecd_agent_release_info{app=\"receipt-parser\",version=\"1.5.0\",slot=\"b\"} 1",
            "edgecd_agent_phase{phase=\"rolling_back\"} 1",
            "edgecd_agent_phase{phase=\"idle\"} 0",
            "edgecd_agent_installs_total{outcome=\"committed\"} 2",
            "edgecd_agent_installs_total{outcome=\"failed\"} 1",
            "edgecd_agent_installs_total{outcome=\"rolled_back\"} 3",
            "edgecd_agent_installs_total{outcome=\"refused\"} 4",
            "edgecd_agent_download_bytes_total 123456",
            "edgecd_agent_checkins_total{result=\"ok\"} 7",
            "edgecd_agent_checkins_total{result=\"error\"} 2",
            "edgecd_agent_last_checkin_success_timestamp_seconds 1790000000",
            "edgecd_agent_temperature_celsius 61.5",
            "edgecd_agent_throttled 1",
            "edgecd_agent_throttle_events_total 3",
            "edgecd_agent_start_time_seconds 1789999000",
        ] {
            assert!(s.contains(&want), "missing {want:?} in\n{text}");
        }
        // Exactly one phase is 1, and every phase is listed.
        let phases: Vec<&&str> = s
            .iter()
            .filter(|l| l.starts_with("edgecd_agent_phase{"))
            .collect();
        assert_eq!(phases.len(), PHASES.len());
        assert_eq!(phases.iter().filter(|l| l.ends_with(" 1")).count(), 1);
    }

    #[test]
    fn every_family_has_help_and_type_before_its_series() {
        let text = render(&full());
        let mut typed: Vec<(String, String)> = vec![];
        let mut helped: Vec<String> = vec![];
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("help text");
                assert!(!help.is_empty());
                helped.push(name.to_string());
            } else if let Some(rest) = l.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type");
                assert_eq!(helped.last().map(String::as_str), Some(name), "{l}");
                typed.push((name.to_string(), kind.to_string()));
            } else {
                let name = l.split(['{', ' ']).next().expect("name");
                let (fam, kind) = typed.last().expect("a TYPE before any series");
                assert_eq!(name, fam, "series outside its family: {l}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{l}");
                let v = l.rsplit_once(' ').expect("value").1;
                assert!(v.parse::<f64>().is_ok_and(f64::is_finite), "{l}");
            }
        }
        assert_eq!(typed.len(), 10, "{text}");
    }

    #[test]
    fn unknown_values_are_absent_and_counters_start_at_zero() {
        let t = Telemetry::new(None, None);
        let s = t.sample();
        assert!(s.start_time > 1_600_000_000);
        let text = render(&s);
        for absent in [
            "edgecd_agent_release_info{",
            "edgecd_agent_temperature_celsius ",
            "edgecd_agent_throttled ",
        ] {
            assert!(
                !series(&text).iter().any(|l| l.starts_with(absent)),
                "{text}"
            );
        }
        for (_, o) in OUTCOMES {
            assert!(
                text.contains(&format!(
                    "edgecd_agent_installs_total{{outcome=\"{o}\"}} 0\n"
                )),
                "{text}"
            );
        }
        assert!(text.contains("edgecd_agent_phase{phase=\"idle\"} 1\n"));
        assert!(text.contains("edgecd_agent_last_checkin_success_timestamp_seconds 0\n"));
        // A NaN reading is unknown, not exported.
        t.record_soc(Some(f64::NAN), None);
        let text = render(&t.sample());
        assert!(
            !series(&text)
                .iter()
                .any(|l| l.starts_with("edgecd_agent_temperature_celsius")),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let mut s = full();
        if let Some(r) = s.release.as_mut() {
            r.app = "we\"ird\\app\nx".into();
        }
        let text = render(&s);
        assert!(
            text.contains("app=\"we\\\"ird\\\\app\\nx\""),
            "label not escaped: {text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.contains("release_info{")).count(),
            1
        );
    }

    #[test]
    fn phase_table_matches_the_enum() {
        for (i, (p, name)) in PHASES.iter().enumerate() {
            assert_eq!(phase_index(*p), i);
            // The label is the wire name in snake case.
            let wire = p.to_string();
            let snake: String = wire
                .chars()
                .flat_map(|c| {
                    if c.is_ascii_uppercase() {
                        vec!['_', c.to_ascii_lowercase()]
                    } else {
                        vec![c]
                    }
                })
                .collect();
            assert_eq!(&snake, name);
        }
        for (i, (k, _)) in OUTCOMES.iter().enumerate() {
            assert_eq!(outcome_index(*k), i);
        }
    }

    #[test]
    fn telemetry_counts() {
        let t = Telemetry::new(None, None);
        t.record_outcome(OutcomeKind::Committed);
        t.record_outcome(OutcomeKind::Refused);
        t.record_outcome(OutcomeKind::Refused);
        t.add_download_bytes(10);
        t.add_download_bytes(5);
        t.record_checkin(true, 42);
        t.record_checkin(false, 99);
        // Throttling episodes: off → on counts, staying on does not, unknown resets.
        for th in [
            Some(false),
            Some(true),
            Some(true),
            Some(false),
            Some(true),
            None,
            Some(true),
        ] {
            t.record_soc(Some(50.0), th);
        }
        let s = t.sample();
        assert_eq!(s.installs, [1, 0, 0, 2]);
        assert_eq!(s.download_bytes, 15);
        assert_eq!((s.checkins_ok, s.checkins_error), (1, 1));
        assert_eq!(
            s.last_checkin_success, 42,
            "a failure keeps the last success"
        );
        assert_eq!(s.throttle_events, 3);
        assert_eq!(s.throttled, Some(true));
    }

    #[test]
    fn reads_soc_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (temp, thr) = (dir.path().join("temp"), dir.path().join("throttled"));
        std::fs::write(&temp, "48250\n").expect("write");
        std::fs::write(&thr, "0x50005\n").expect("write");
        let t = Telemetry::new(Some(temp), Some(thr));
        assert_eq!(t.read_soc(), (Some(48.25), Some(true)));
        let s = t.sample();
        assert_eq!(
            (s.temperature_celsius, s.throttled),
            (Some(48.25), Some(true))
        );
        assert_eq!(s.throttle_events, 1);
    }

    #[test]
    fn loopback_only_unless_opted_in() {
        let lan: SocketAddr = "192.168.1.20:9101".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:9101".parse().expect("addr");
        assert!(matches!(
            check_addr(lan, false),
            Err(ExporterError::NotLoopback(_))
        ));
        assert!(check_addr(any, false).is_err());
        assert!(check_addr(any, true).is_ok());
        assert!(check_addr("127.0.0.1:9101".parse().expect("addr"), false).is_ok());
        assert!(check_addr("[::1]:9101".parse().expect("addr"), false).is_ok());
        assert_eq!(
            DEFAULT_LISTEN
                .parse::<SocketAddr>()
                .map(|a| a.ip().is_loopback()),
            Ok(true)
        );
    }

    #[test]
    fn routes() {
        let t = Telemetry::new(None, None);
        let ok = respond("GET /metrics HTTP/1.1", &t);
        assert_eq!((ok.status, ok.content_type), (200, CONTENT_TYPE));
        assert!(ok.body.contains("# TYPE edgecd_agent_phase gauge"));
        assert_eq!(respond("GET /metrics?x=1 HTTP/1.0", &t).status, 200);
        let head = respond("HEAD /metrics HTTP/1.1", &t);
        assert!(head.head_only && head.status == 200);
        assert_eq!(respond("GET / HTTP/1.1", &t).status, 404);
        assert_eq!(respond("GET /metricsx HTTP/1.1", &t).status, 404);
        let post = respond("POST /metrics HTTP/1.1", &t);
        assert_eq!((post.status, post.allow), (405, Some("GET, HEAD")));
        assert_eq!(respond("GARBAGE", &t).status, 400);
        assert_eq!(respond("GET /metrics SPDY/3", &t).status, 400);
    }

    fn http(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(req.as_bytes()).expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn serves_over_tcp() {
        let t = Arc::new(Telemetry::new(None, None));
        t.record_checkin(true, 7);
        let l = bind("127.0.0.1:0".parse().expect("addr"), false).expect("bind");
        let addr = l.local_addr().expect("addr");
        spawn(l, t.clone()).expect("spawn");
        let r = http(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n",
        );
        let (head, body) = r.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains(&format!("content-type: {CONTENT_TYPE}")),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(
            body.contains("edgecd_agent_checkins_total{result=\"ok\"} 1\n"),
            "{body}"
        );
        // Live: a later scrape sees later values.
        t.record_checkin(true, 8);
        let r = http(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.contains("edgecd_agent_checkins_total{result=\"ok\"} 2\n"),
            "{r}"
        );
        assert!(http(addr, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let r = http(addr, "DELETE /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("allow: GET, HEAD\r\n"),
            "{r}"
        );
        let r = http(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 ") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
    }
}
