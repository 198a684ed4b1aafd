//! Helpers for the CLI tests: run the built `edgecd` binary, read JSON output.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
