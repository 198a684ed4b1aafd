//! Helpers for the CLI tests: run the built `edgecd` binary, read JSON output.
#![allow(dead_code)]

use edgecd_cli::story::Lab;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub fn edgecd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgecd"))
}

/// Runs `edgecd args…` in `dir`; returns the output (any exit code).
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    edgecd()
        .current_dir(dir)
        .args(args)
        .env_remove("COSIGN_PASSWORD")
        .output()
        .expect("run edgecd")
}

/// Runs and asserts success; returns stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    succeeded(args, run_in(dir, args))
}

/// Asserts that `edgecd args…` succeeded; returns its stdout.
pub fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "edgecd {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and asserts failure; returns stderr.
pub fn fails(dir: &Path, args: &[&str]) -> String {
    let out = run_in(dir, args);
    assert!(
        !out.status.success(),
        "edgecd {args:?} unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// `edgecd bundle build` arguments for one model, version 1.0.0, rpi5, edgecd-infer@0.1.0.
pub fn build_args<'a>(model: &'a str, name: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "bundle",
        "build",
        "--model",
        model,
        "--name",
        name,
        "--version",
        "1.0.0",
        "--board",
        "rpi5",
        "--runtime",
        "edgecd-infer@0.1.0",
        "--out",
        out,
    ]
}

pub fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(dir, args)).expect("JSON output")
}

pub fn py_script(crate_name: &str, name: &str) -> PathBuf {
    edgecd_testkit::workspace_root()
        .join("crates")
        .join(crate_name)
        .join("tests/py")
        .join(name)
}

/// Extracts the manifest bytes (what signatures cover) from a bundle via `unpack`-free reading.
pub fn manifest_bytes(bundle: &Path) -> Vec<u8> {
    edgecd_bundle::read_bundle(bundle, &mut |_| {})
        .unwrap()
        .manifest_bytes
}

/// A sibling binary of `edgecd` (`edgecd-agent`, `edgecd-infer`): cargo builds every workspace
/// binary once for the workspace tests, and all tests share them.
pub fn sibling(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_edgecd")).with_file_name(name);
    assert!(
        p.exists(),
        "{} is not built: run the workspace tests (scripts/test) or `cargo build --bins`",
        p.display()
    );
    p
}

/// Agent processes, killed and reaped when dropped.
pub struct Agents(pub Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `edgecd args…` against `lab`'s server with its admin token (any exit code).
pub fn lab_cli(lab: &Lab, args: &[&str]) -> Output {
    edgecd()
        .args(args)
        .env("EDGECD_SERVER", lab.url())
        .env("EDGECD_TOKEN", &lab.server.admin_token)
        .output()
        .unwrap()
}

/// [`lab_cli`], asserting success; returns stdout.
pub fn lab_ok(lab: &Lab, args: &[&str]) -> String {
    let o = lab_cli(lab, args);
    assert!(
        o.status.success(),
        "edgecd {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// [`lab_ok`], parsed as JSON.
pub fn lab_json(lab: &Lab, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&lab_ok(lab, args)).unwrap()
}

/// The id of the device labelled `who=WHO`, once it has enrolled (within `timeout`).
pub fn device_labelled(lab: &Lab, who: &str, timeout: Duration) -> String {
    let t = Instant::now();
    loop {
        if let Some(d) = lab
            .admin
            .list_devices()
            .unwrap()
            .into_iter()
            .find(|d| d.labels.get("who").map(String::as_str) == Some(who))
        {
            return d.id;
        }
        assert!(t.elapsed() < timeout, "{who} did not enroll");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the device reports it runs (`app@version`).
pub fn reported_release(lab: &Lab, id: &str) -> Option<String> {
    lab.admin
        .show_device(id)
        .unwrap()
        .status
        .and_then(|s| s.running)
        .map(|r| format!("{}@{}", r.app, r.version))
}
