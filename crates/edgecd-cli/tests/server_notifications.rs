//! `edgecd server --notifications FILE` refuses to start on a wrong file, saying what to fix
//! and never printing a webhook URL.
use std::process::Command;

#[test]
fn server_refuses_a_wrong_notifications_file() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("notify.yaml");
    std::fs::write(
        &file,
        "channels:\n  ops: {type: slack, url: \"https://hooks.slack.com/services/T0/B0/SECRETPART\"}\n  audit: {type: webhook, url: \"https://hooks.example/h\", secret_env: EDGECD_TEST_UNSET_SECRET}\n  chat: {type: discord, url: \"https://discord.example/x\"}\n",
    )
    .unwrap();
    let data = d.path().join("data");
    let o = Command::new(env!("CARGO_BIN_EXE_edgecd"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--notifications")
        .arg(&file)
        .env_remove("EDGECD_TEST_UNSET_SECRET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(&format!("--notifications {}", file.display())),
        "{err}"
    );
    assert!(
        err.contains("channel `audit`: secret_env EDGECD_TEST_UNSET_SECRET is not set or empty: export EDGECD_TEST_UNSET_SECRET"),
        "{err}"
    );
    assert!(
        err.contains("channel `chat`: unknown type \"discord\": use slack, teams or webhook"),
        "{err}"
    );
    assert!(!err.contains("SECRETPART"), "{err}");
    assert!(!data.exists(), "the server must not start");

    let missing = d.path().join("missing.yaml");
    let o = Command::new(env!("CARGO_BIN_EXE_edgecd"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--notifications")
        .arg(&missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "cannot read the notifications file {}",
            missing.display()
        )),
        "{err}"
    );
}

/// Lifetimes below their floor are an error naming the floor, never silently raised.
#[test]
fn server_refuses_metadata_lifetimes_below_their_floor() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    for (flag, value, floor) in [
        ("--assignment-ttl-secs", "30", "60"),
        ("--timestamp-ttl-secs", "59", "60"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_edgecd"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(["--checkin-interval-secs", "10", flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{flag} {value}: {err}");
        assert!(
            err.contains(&format!(
                "{flag} {value} is below its floor of {floor} seconds"
            )),
            "{err}"
        );
        assert!(!data.exists(), "the server must not start");
    }
    // Three check-in intervals for assignments: 120 s is too short for 60 s check-ins.
    let o = Command::new(env!("CARGO_BIN_EXE_edgecd"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args([
            "--checkin-interval-secs",
            "60",
            "--assignment-ttl-secs",
            "120",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("below its floor of 180 seconds"), "{err}");
}
