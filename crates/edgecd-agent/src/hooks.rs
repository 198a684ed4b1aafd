//! Activation hook and health check (command or HTTP URL), each inside a deadline.
//!
//! Commands run with `sh -c` and get `EDGECD_CURRENT` (the `current` symlink),
//! `EDGECD_SLOT_DIR` (the slot it points to), `EDGECD_RELEASE` (`APP@VERSION`) and
//! `EDGECD_APP`. With several apps on a device, each app's runtime has its own health
//! endpoint: `{app}` in a health URL is replaced by the app's name.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How to tell whether the activated release works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// Exit status 0 means healthy.
    Cmd(String),
    /// A 2xx answer means healthy.
    Url(String),
}

/// What the hooks learn about the release they act on.
#[derive(Debug, Clone)]
pub struct HookEnv {
    pub current: PathBuf,
    pub slot_dir: PathBuf,
    pub release: String,
    /// The app (several may run side by side, each with its own `current`).
    pub app: String,
}

/// Runs `cmd` once; `Err` on a non-zero exit or when the deadline passes (the child is killed).
pub fn run_cmd(cmd: &str, env: &HookEnv, timeout: Duration) -> Result<(), String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("EDGECD_CURRENT", &env.current)
        .env("EDGECD_SLOT_DIR", &env.slot_dir)
        .env("EDGECD_RELEASE", &env.release)
        .env("EDGECD_APP", &env.app)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    use std::io::Read;
                    let _ = s.by_ref().take(2048).read_to_string(&mut err);
                }
                return if status.success() {
                    Ok(())
                } else {
                    let err = err.trim();
                    Err(format!(
                        "{cmd:?} exited with {status}{}",
                        if err.is_empty() {
                            String::new()
                        } else {
                            format!(": {err}")
                        }
                    ))
                };
            }
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{cmd:?} did not finish within {}s",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    }
}

/// Probes until healthy or until `deadline` passes (every `interval`); returns the last error.
pub fn health(
    check: &HealthCheck,
    env: &HookEnv,
    deadline: Duration,
    interval: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(
            Duration::from_secs(5).min(deadline.max(Duration::from_millis(100))),
        ))
        .build()
        .into();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        let res = match check {
            HealthCheck::Cmd(cmd) => run_cmd(cmd, env, left.max(Duration::from_millis(100))),
            HealthCheck::Url(url) => match agent.get(&url.replace("{app}", &env.app)).call() {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{url} answered {}", r.status())),
                Err(e) => Err(format!("{url}: {e}")),
            },
        };
        match res {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() + interval >= deadline => {
                return Err(format!("not healthy within {}s: {e}", deadline.as_secs()));
            }
            Err(_) => std::thread::sleep(interval),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HookEnv {
        HookEnv {
            current: "/nonexistent".into(),
            slot_dir: "/nonexistent".into(),
            release: "app@1".into(),
            app: "app".into(),
        }
    }

    #[test]
    fn commands_and_deadlines() {
        assert!(run_cmd("true", &env(), Duration::from_secs(5)).is_ok());
        let e = run_cmd("echo boom >&2; exit 3", &env(), Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("boom"), "{e}");
        let e = run_cmd("sleep 5", &env(), Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        assert!(
            run_cmd(
                "test \"$EDGECD_RELEASE\" = app@1",
                &env(),
                Duration::from_secs(5)
            )
            .is_ok()
        );
    }

    #[test]
    fn health_retries_until_deadline() {
        let e = health(
            &HealthCheck::Cmd("false".into()),
            &env(),
            Duration::from_millis(300),
            Duration::from_millis(50),
        );
        assert!(e.unwrap_err().contains("not healthy"));
        let d = tempfile::tempdir().expect("tmp");
        let flag = d.path().join("n");
        // Healthy on the third probe.
        let cmd = format!("echo x >> {0}; test $(wc -l < {0}) -ge 3", flag.display());
        assert!(
            health(
                &HealthCheck::Cmd(cmd),
                &env(),
                Duration::from_secs(5),
                Duration::from_millis(20)
            )
            .is_ok()
        );
    }
}
