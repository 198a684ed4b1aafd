//! Shared test fixtures (dev-dependency only).
//!
//! Owns: finding the external verifiers and test material that `scripts/test` installs
//! (Python venv with onnx/onnxruntime/cyclonedx, npm `@sigstore/verify`, downloaded wheels),
//! and running real Prometheus and Alertmanager processes (`services`).
//! When `EDGECD_REQUIRE_EXTERNAL=1` (set by `scripts/test` and CI) a missing tool is a test
//! failure; otherwise the test prints why it skipped, so plain `cargo test` works on a bare box.

pub mod services;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The cache directory `scripts/test` fills (`$EDGECD_TEST_CACHE`, default `~/.cache/edgecd`).
pub fn test_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGECD_TEST_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/edgecd")
}

fn required() -> bool {
    std::env::var("EDGECD_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1")
}

/// Returns `Some(path)` if it exists. Otherwise panics when external tools are required, or
/// prints a skip notice and returns `None`.
pub fn external(what: &str, path: PathBuf) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    if required() {
        panic!(
            "{what} not found at {}: run scripts/test, which installs it",
            path.display()
        );
    }
    eprintln!(
        "SKIP: {what} not found at {} (run scripts/test to install it)",
        path.display()
    );
    None
}

/// The executable `name` on `PATH`. Otherwise panics when external tools are required, or
/// prints a skip notice and returns `None` (e.g. `tool("promtool")`, from Debian's
/// `prometheus` package that `scripts/setup/infer.sh` installs).
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_some() {
        return found;
    }
    if required() {
        panic!("{name} not found on PATH: run scripts/test, which installs it");
    }
    eprintln!("SKIP: {name} not found on PATH (run scripts/test to install it)");
    None
}

/// The Python interpreter of the test venv (has onnx, onnxruntime, numpy, cyclonedx, pynacl).
pub fn python() -> Option<PathBuf> {
    external("test Python venv", test_cache().join("venv/bin/python"))
}

/// The `node_modules` directory holding `@sigstore/verify`.
pub fn node_modules() -> Option<PathBuf> {
    external(
        "npm @sigstore/verify",
        test_cache().join("npm/node_modules/@sigstore/verify"),
    )
    .map(|_| test_cache().join("npm/node_modules"))
}

/// The directory holding downloaded wheels (rapidocr-onnxruntime).
pub fn wheels_dir() -> Option<PathBuf> {
    external("downloaded wheels", test_cache().join("wheels"))
}

/// The workspace root (for scripts and fixtures).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Runs the venv Python with `args`; panics with stderr on failure. Returns stdout.
pub fn run_py(python: &Path, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(python)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python {:?} failed: {}\n{}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// The `onnx` package's `backend/test/data/light/*.onnx` models, sorted.
pub fn light_models(python: &Path) -> Vec<PathBuf> {
    let dir = run_py(
        python,
        &[
            "-c".as_ref(),
            "import onnx, os; print(os.path.dirname(onnx.__file__))".as_ref(),
        ],
    );
    let dir = PathBuf::from(dir.trim()).join("backend/test/data/light");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    v
}

/// Extracts every `.onnx` member of the rapidocr wheel into `into`; returns their paths, sorted.
pub fn ppocr_models(python: &Path, wheels: &Path, into: &Path) -> Vec<PathBuf> {
    let wheel = std::fs::read_dir(wheels)
        .expect("read wheels dir")
        .map(|e| e.expect("dir entry").path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("rapidocr_onnxruntime"))
        })
        .unwrap_or_else(|| panic!("no rapidocr_onnxruntime wheel in {}", wheels.display()));
    let code = "import sys, zipfile, os\n\
                z = zipfile.ZipFile(sys.argv[1])\n\
                for n in z.namelist():\n\
                \x20   if n.endswith('.onnx'):\n\
                \x20       p = os.path.join(sys.argv[2], os.path.basename(n))\n\
                \x20       open(p, 'wb').write(z.read(n)); print(p)\n";
    let out = run_py(
        python,
        &[
            "-c".as_ref(),
            code.as_ref(),
            wheel.as_os_str(),
            into.as_os_str(),
        ],
    );
    let mut v: Vec<PathBuf> = out.lines().map(PathBuf::from).collect();
    v.sort();
    v
}
