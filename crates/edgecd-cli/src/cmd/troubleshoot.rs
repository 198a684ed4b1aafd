//! `edgecd device logs ID [--follow] [--lines N]` and `edgecd device diagnose ID [--json]`:
//! ask the server for a device's recent logs / a diagnosis (the device answers at its next
//! check-in, see `edgecd_server::device_logs`), wait for the answer and print it.
use super::admin::Remote;
use anyhow::Context as _;
use edgecd_agent::admin::AdminClient;
use edgecd_server::device_logs::{DeviceLogs, Diagnosis, LogsRequest};
use std::collections::{HashSet, VecDeque};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The device id (`edgecd device list`).
    pub id: String,
    /// Lines per source (the agent's and the runtime's), at most 5000.
    #[arg(long, short = 'n', default_value_t = 200)]
    pub lines: u32,
    /// Keep asking and print new lines until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// How long to wait for the device's answer, in seconds (it answers at its next check-in).
    #[arg(long, default_value_t = 120)]
    pub wait: u64,
    /// Print the answer as JSON (not with --follow).
    #[arg(long, conflicts_with = "follow")]
    pub json: bool,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Debug, clap::Args)]
pub struct DiagnoseArgs {
    /// The device id (`edgecd device list`).
    pub id: String,
    /// How long to wait for the device's answer, in seconds (it answers at its next check-in).
    #[arg(long, default_value_t = 120)]
    pub wait: u64,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: Remote,
}

/// Polls `path` until the answer is not pending or `wait` passes.
fn wait_for<T: serde::de::DeserializeOwned>(
    c: &AdminClient,
    path: &str,
    wait: Duration,
    pending: impl Fn(&T) -> bool,
) -> anyhow::Result<(T, bool)> {
    let start = Instant::now();
    loop {
        let v: T = c.get(path)?;
        if !pending(&v) {
            return Ok((v, true));
        }
        if start.elapsed() >= wait {
            return Ok((v, false));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn not_answered(id: &str, wait: u64) -> anyhow::Error {
    anyhow::anyhow!(
        "device {id} did not answer within {wait}s: it answers at its next check-in — check it \
         is online (`edgecd device show {id}`), or wait longer with --wait"
    )
}

pub fn logs(a: LogsArgs) -> anyhow::Result<ExitCode> {
    let c = a.remote.client()?;
    let path = format!("/api/v1/admin/devices/{}/logs", a.id);
    let mut seen: HashSet<(String, String, String)> = HashSet::new();
    let mut order: VecDeque<(String, String, String)> = VecDeque::new();
    loop {
        let _: DeviceLogs = c
            .send(
                "POST",
                &path,
                &LogsRequest {
                    lines: Some(a.lines),
                },
            )
            .with_context(|| format!("asking device {} for its logs", a.id))?;
        let (l, answered) =
            wait_for::<DeviceLogs>(&c, &path, Duration::from_secs(a.wait), |l| l.pending)?;
        if !answered {
            return Err(not_answered(&a.id, a.wait));
        }
        if a.json {
            crate::output::print_json(&l)?;
            return Ok(ExitCode::SUCCESS);
        }
        for line in l.lines {
            let key = (line.ts.clone(), line.source.clone(), line.line.clone());
            if !seen.insert(key.clone()) {
                continue;
            }
            order.push_back(key);
            if order.len() > 50_000
                && let Some(old) = order.pop_front()
            {
                seen.remove(&old);
            }
            crate::outln!("{} {:<7} {}", line.ts, line.source, line.line);
        }
        if !a.follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn mib(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30))
    } else {
        format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20))
    }
}

pub fn diagnose(a: DiagnoseArgs) -> anyhow::Result<ExitCode> {
    let c = a.remote.client()?;
    let path = format!("/api/v1/admin/devices/{}/diagnose", a.id);
    let _: Diagnosis = c
        .send("POST", &path, &LogsRequest { lines: Some(1) })
        .with_context(|| format!("asking device {} for a diagnosis", a.id))?;
    let (d, answered) =
        wait_for::<Diagnosis>(&c, &path, Duration::from_secs(a.wait), |d| d.pending)?;
    if !answered {
        return Err(not_answered(&a.id, a.wait));
    }
    if a.json {
        crate::output::print_json(&d)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_diagnosis(&d);
    Ok(ExitCode::SUCCESS)
}

fn print_diagnosis(d: &Diagnosis) {
    let labels: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    crate::outln!(
        "device       {}{}  labels {}  last seen {}",
        d.device,
        if d.revoked { " (REVOKED)" } else { "" },
        if labels.is_empty() {
            "-".into()
        } else {
            labels.join(",")
        },
        d.last_seen.as_deref().unwrap_or("never")
    );
    crate::outln!("\ninventory");
    match &d.inventory {
        Some(i) => {
            crate::outln!(
                "  board {}  ram {} MiB  host {}  serial {}",
                i.board,
                i.ram_mb,
                i.hostname.as_deref().unwrap_or("-"),
                i.serial.as_deref().unwrap_or("-")
            );
            let rt: Vec<String> = i.runtimes.iter().map(|(k, v)| format!("{k}@{v}")).collect();
            crate::outln!(
                "  accelerator {}  runtimes {}  agent {}",
                i.accelerator.as_deref().unwrap_or("-"),
                if rt.is_empty() {
                    "-".into()
                } else {
                    rt.join(",")
                },
                d.agent.as_ref().map_or("-", |a| a.agent_version.as_str())
            );
        }
        None => crate::outln!("  (never reported)"),
    }
    crate::outln!("\nrelease");
    let running = super::admin::running_summary(d.status.as_ref(), "slot ");
    crate::outln!(
        "  running {running}  assigned {}  phase {}",
        d.assigned.as_deref().unwrap_or("-"),
        d.status
            .as_ref()
            .map_or("-".to_string(), |s| format!("{:?}", s.phase).to_lowercase())
    );
    crate::outln!("\nslots");
    match &d.agent {
        Some(a) => {
            for s in &a.slots {
                crate::outln!(
                    "  {}  {:<32} {:>10}{}",
                    s.slot,
                    s.release.as_deref().unwrap_or("(empty)"),
                    mib(s.bytes),
                    if s.current { "  <- current" } else { "" }
                );
            }
        }
        None => crate::outln!("  (no device report)"),
    }
    crate::outln!("\ndisk");
    match d
        .agent
        .as_ref()
        .map(|a| (a.free_disk_bytes, a.total_disk_bytes))
    {
        Some((Some(free), total)) => crate::outln!(
            "  free {} of {}",
            mib(free),
            total.map_or("?".to_string(), mib)
        ),
        _ => crate::outln!("  (unknown)"),
    }
    crate::outln!("\ntemperature");
    if let Some(a) = &d.agent {
        match a.temperatures.last() {
            Some((_, t)) => crate::outln!(
                "  now {t:.1} °C (device, {} readings since {}){}",
                a.temperatures.len(),
                edgecd_bundle::release::rfc3339_utc(a.temperatures[0].0),
                match a.throttled {
                    Some(true) => "  THROTTLED",
                    _ => "",
                }
            ),
            None => crate::outln!("  (the device reads no SoC temperature)"),
        }
    }
    if !d.temperature_history.is_empty() {
        let max = d
            .temperature_history
            .iter()
            .filter_map(|p| p.max_c)
            .fold(f64::NEG_INFINITY, f64::max);
        crate::outln!(
            "  last day: {} check-ins, max {max:.1} °C",
            d.temperature_history.len()
        );
    }
    crate::outln!("\nruntime");
    match &d.agent {
        Some(a) => crate::outln!(
            "  {}: {} ({})",
            a.runtime.kind,
            match a.runtime.healthy {
                Some(true) => "healthy",
                Some(false) => "UNHEALTHY",
                None => "not checked",
            },
            a.runtime.detail
        ),
        None => crate::outln!("  (no device report)"),
    }
    crate::outln!("\ninstall attempts (newest first)");
    if d.install_attempts.is_empty() {
        crate::outln!("  (none)");
    }
    for t in &d.install_attempts {
        crate::outln!(
            "  {} {:<10} {:<24} {}",
            t.at,
            t.outcome,
            t.release.as_deref().unwrap_or("-"),
            t.reason
        );
    }
}
