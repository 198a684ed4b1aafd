//! The real `edgecd-agent` reports its host name and serial number at enrollment and in its
//! check-ins (from the OS, or from `--hostname`/`--serial`), and a device deleted on the
//! server can no longer check in with its credential.
mod common;

use common::{Env, device_id, spawn_agent, wait_for};
use edgecd_api::protocol::DeviceInfo;
use std::time::Duration;

fn os_value(path: &str) -> Option<String> {
    edgecd_agent::inventory::text_value(&std::fs::read_to_string(path).ok()?)
}

#[test]
fn agents_report_hostname_and_serial_and_deleted_devices_are_refused() {
    let env = Env::new();
    let token = env.token(2, &[("site", "lab")]);
    let flagged = spawn_agent(
        &env,
        "flagged",
        Some(&token),
        &["--hostname", "pi-lab-07", "--serial", "10000000abcdef01"],
    );
    let plain = spawn_agent(&env, "plain", Some(&token), &[]);
    let checked_in = |dir: &std::path::Path| -> Option<DeviceInfo> {
        env.device_of(dir).filter(|d| d.last_seen.is_some())
    };
    let d = wait_for(
        Duration::from_secs(60),
        "the flagged agent to check in",
        || checked_in(&flagged.data_dir),
    );
    let inv = d.inventory.expect("inventory");
    assert_eq!(inv.hostname.as_deref(), Some("pi-lab-07"));
    assert_eq!(inv.serial.as_deref(), Some("10000000abcdef01"));

    let p = wait_for(
        Duration::from_secs(60),
        "the plain agent to check in",
        || checked_in(&plain.data_dir),
    );
    let inv = p.inventory.expect("inventory");
    let os_hostname = os_value("/proc/sys/kernel/hostname").or_else(|| os_value("/etc/hostname"));
    assert!(os_hostname.is_some(), "this machine has a host name");
    assert_eq!(inv.hostname, os_hostname);
    assert_eq!(inv.serial, os_value("/proc/device-tree/serial-number"));

    // Deleted: gone from the list, 404 to show, its credential refused.
    let id = device_id(&flagged.data_dir).expect("device id");
    let deleted = env.admin.delete_device(&id).expect("delete");
    assert_eq!(deleted.id, id);
    assert!(env.devices().iter().all(|d| d.id != id));
    let e = env.admin.show_device(&id).expect_err("deleted");
    assert!(e.to_string().contains("404"), "{e}");
    let e = env.admin.delete_device(&id).expect_err("already deleted");
    assert!(e.to_string().contains("404"), "{e}");
    let device: serde_json::Value = serde_json::from_slice(
        &std::fs::read(flagged.data_dir.join("device.json")).expect("device.json"),
    )
    .expect("device.json");
    let credential = device["credential"].as_str().expect("credential");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = serde_json::json!({
        "inventory": {"board": "rpi5", "ramMb": 1, "agentVersion": "test"},
        "status": {"phase": "idle", "assignmentVersion": 0},
    });
    let status = agent
        .post(format!("{}/api/v1/devices/{id}/checkin", env.url))
        .header("authorization", &format!("Bearer {credential}"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .expect("check-in")
        .status()
        .as_u16();
    assert_eq!(status, 401);
    // The other device is untouched.
    assert!(
        env.devices()
            .iter()
            .any(|d| Some(&d.id) == device_id(&plain.data_dir).as_ref())
    );
}
