//! Raspberry Pi 5 smoke test: cross-build the `edgecd-infer` binary for aarch64 (static, by
//! `scripts/static-infer`, the build runtime images ship), run it under `qemu-aarch64` and
//! answer one inference over HTTP. Needs the cross toolchain, qemu-user and the rustup target
//! (`scripts/setup/infer.sh`); skips without them unless `EDGECD_REQUIRE_EXTERNAL=1`. The
//! build goes to `$EDGECD_TEST_CACHE/target-infer-aarch64` so later runs only rebuild what
//! changed.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const TARGET: &str = "aarch64-unknown-linux-gnu";

fn target_installed() -> bool {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let found = sysroot.is_some_and(|s| {
        PathBuf::from(s)
            .join("lib/rustlib")
            .join(TARGET)
            .join("lib")
            .is_dir()
    });
    if !found {
        if std::env::var("EDGECD_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1") {
            panic!("rust target {TARGET} not installed: run scripts/setup/infer.sh");
        }
        eprintln!("SKIP: rust target {TARGET} not installed (run scripts/setup/infer.sh)");
    }
    found
}

#[test]
fn aarch64_binary_answers_one_inference_under_qemu() {
    let (Some(_gcc), Some(qemu)) = (
        edgecd_testkit::tool("aarch64-linux-gnu-gcc"),
        edgecd_testkit::tool("qemu-aarch64"),
    ) else {
        return;
    };
    if !target_installed() {
        return;
    }
    // The static build runtime images use too (`scripts/static-infer`): one build of the
    // dependencies for aarch64, shared with the kernels' tests in `scripts/test`.
    let bin = edgecd_testkit::static_infer(TARGET);
    let elf = std::fs::read(&bin).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([elf[18], elf[19]]),
        0xB7,
        "e_machine is not AArch64"
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let bias = [1.0f32, 2.0, 3.0];
    write_bundle(&dir, "tiny", "1.0.0", &tiny_classifier(bias), None);
    let thermal = tmp.path().join("temp");
    std::fs::write(&thermal, "45000").unwrap();
    let mut child = Command::new(qemu)
        .args(["-L", "/usr/aarch64-linux-gnu"])
        .arg(&bin)
        .args([
            "--model-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "2",
            "--thermal-path",
            thermal.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut addr: Option<SocketAddr> = None;
    let mut log = Vec::new();
    while addr.is_none() {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if v["fields"]["message"] == "listening" {
                    addr = v["fields"]["addr"].as_str().and_then(|a| a.parse().ok());
                }
                log.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                panic!("the aarch64 server did not start: {log:#?}");
            }
        }
    }
    let addr = addr.expect("listen address");
    let x = [0.5f32, -1.0, 2.0, 0.25];
    let body = infer_body(&x, 1);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "POST /v1/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    s.write_all(&body).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let json: serde_json::Value =
        serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let got: Vec<f64> = json["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let want = expected_logits(&x, bias);
    assert_eq!(got.len(), 3);
    for (g, w) in got.iter().zip(want) {
        assert!((g - f64::from(w)).abs() < 1e-5, "{got:?}");
    }
    assert!(
        log.iter().any(|l| l.contains("model loaded")),
        "JSON logs: {log:#?}"
    );
}
