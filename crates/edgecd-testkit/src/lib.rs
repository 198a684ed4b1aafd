//! Shared test fixtures (dev-dependency only).
//!
//! Owns: finding the external verifiers and test material that `scripts/test` installs
//! (Python venv with onnx/onnxruntime/cyclonedx, npm `@sigstore/verify`, downloaded wheels),
//! and running real Prometheus and Alertmanager processes (`services`).
//! When `EDGECD_REQUIRE_EXTERNAL=1` (set by `scripts/test` and CI) a missing tool is a test
//! failure; otherwise the test prints why it skipped, so plain `cargo test` works on a bare box.

pub mod postgres;
pub mod release;
pub mod services;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// The first file called `name` in a `PATH` directory.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The executable `name` on `PATH`. Otherwise panics when external tools are required, or
/// prints a skip notice and returns `None` (e.g. `tool("promtool")`, from Debian's
/// `prometheus` package that `scripts/setup/infer.sh` installs).
pub fn tool(name: &str) -> Option<PathBuf> {
    if let Some(p) = on_path(name) {
        return Some(p);
    }
    if required() {
        panic!("{name} not found on PATH: run scripts/test, which installs it");
    }
    eprintln!("SKIP: {name} not found on PATH (run scripts/test to install it)");
    None
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `f` every 200 ms until it returns a value; panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`wait_for`], and when it times out the message carries `context()` (e.g. the state the
/// server holds and the agent's log), to tell why.
pub fn wait_for_or<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sets its flag when dropped, so a scoped worker thread (e.g. a simulated fleet's
/// `run(&stop)`) stops even when an assertion fails in the scope.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Asserts that `promtool check metrics` (Debian's `prometheus` package) accepts the
/// exposition `text` and has nothing to say about it; skips as [`tool`] does without promtool.
pub fn assert_promtool_clean(text: &str) {
    use std::io::Write as _;
    use std::process::Stdio;
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let o = child.wait_with_output().expect("promtool");
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n--- metrics:\n{text}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
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

/// A static edgecd-infer binary for `target` (`x86_64-unknown-linux-gnu` or
/// `aarch64-unknown-linux-gnu`), built by `scripts/static-infer` (where the flags and target
/// directories are defined once; `scripts/test` builds both before the tests, so here the
/// build is fresh). Panics with cargo's error when the build fails.
pub fn static_infer(target: &str) -> PathBuf {
    let started = std::time::Instant::now();
    let out = Command::new(workspace_root().join("scripts/static-infer"))
        .arg(target)
        .env("EDGECD_TEST_CACHE", test_cache())
        .env(
            "CARGO",
            std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into()),
        )
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/static-infer");
    assert!(
        out.status.success(),
        "building static edgecd-infer for {target} failed (see cargo's output above)"
    );
    eprintln!(
        "static edgecd-infer for {target}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
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
