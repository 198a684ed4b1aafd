//! Reading the SoC temperature (Linux thermal zone: millidegrees Celsius as text) and driving the
//! governor from it.

use crate::governor::Governor;
use crate::metrics::Metrics;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The Raspberry Pi 5 (and most Linux SoCs) CPU thermal zone.
pub const DEFAULT_THERMAL_PATH: &str = "/sys/class/thermal/thermal_zone0/temp";

/// Reads a thermal-zone file. Values above 1000 are millidegrees (the kernel's unit); smaller
/// values are taken as degrees, which some fake sensors write. `None` when unreadable.
pub fn read_temperature(path: &Path) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    let v: f64 = s.trim().parse().ok()?;
    Some(if v.abs() >= 1000.0 { v / 1000.0 } else { v })
}

/// What the governor decided, shared with the request handlers.
#[derive(Debug)]
pub struct GovernorOutput {
    pub threads: AtomicUsize,
    pub shedding: AtomicBool,
}

/// Feeds one reading to the governor and publishes the result (atomics, metrics, a log line on
/// every state change).
pub fn apply_reading(
    gov: &mut Governor,
    temp_c: Option<f64>,
    out: &GovernorOutput,
    metrics: &Metrics,
) {
    metrics.temperature_c.set(temp_c.unwrap_or(f64::NAN));
    if let Some(t) = gov.observe(temp_c) {
        metrics.governor_transitions.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            from = t.from.as_str(),
            to = t.to.as_str(),
            temp_c = t.temp_c,
            threads = gov.threads(),
            soft_limit_c = gov.cfg.soft_limit_c,
            hard_limit_c = gov.cfg.hard_limit_c,
            "thermal governor state changed"
        );
    }
    out.threads.store(gov.threads(), Ordering::Relaxed);
    out.shedding.store(gov.shedding(), Ordering::Relaxed);
    metrics.threads.set(gov.threads() as f64);
    metrics
        .governor_state
        .store(u64::from(gov.state().code()), Ordering::Relaxed);
}

/// Polls `path` every `interval` forever, driving `gov`.
pub async fn run_thermal_loop(
    mut gov: Governor,
    path: std::path::PathBuf,
    interval: std::time::Duration,
    out: Arc<GovernorOutput>,
    metrics: Arc<Metrics>,
) {
    let mut warned = false;
    loop {
        tokio::time::sleep(interval).await;
        let temp = read_temperature(&path);
        if temp.is_none() && !warned {
            tracing::warn!(path = %path.display(), "cannot read the SoC temperature; the governor keeps its state");
            warned = true;
        }
        warned &= temp.is_none();
        apply_reading(&mut gov, temp, &out, &metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_millidegrees() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("temp");
        std::fs::write(&p, "48312\n").unwrap();
        assert_eq!(read_temperature(&p), Some(48.312));
        std::fs::write(&p, "71.5").unwrap();
        assert_eq!(read_temperature(&p), Some(71.5));
        std::fs::write(&p, "garbage").unwrap();
        assert_eq!(read_temperature(&p), None);
        assert_eq!(read_temperature(&dir.path().join("missing")), None);
    }
}
