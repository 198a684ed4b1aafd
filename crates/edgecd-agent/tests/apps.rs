//! Several apps on one device (protocol 1.2): each app has its own assignment, A/B slots,
//! activation, health check and rollback; a failed install of one never touches the other;
//! an agent that holds one app is not given a second. Checked by what the device reports
//! it runs and by the slots on its disk.
#![cfg(target_arch = "x86_64")]

mod common;
use common::*;
use edgecd_api::protocol::{AppStatus, OutcomeKind, Phase};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// The device's state of `app`, as it reports it to the server.
fn app_status(env: &Env, data_dir: &Path, app: &str) -> Option<AppStatus> {
    env.device_of(data_dir)?
        .status?
        .apps
        .into_iter()
        .find(|a| a.app == app)
}

fn wait_app_running(env: &Env, data_dir: &Path, release: &str) -> AppStatus {
    let app = release.split_once('@').expect("app@version").0;
    wait_for(T, &format!("the device to run {release}"), || {
        let s = app_status(env, data_dir, app)?;
        let r = s.running.as_ref()?;
        (format!("{}@{}", r.app, r.version) == release && s.phase == Phase::Committed).then_some(s)
    })
}

#[test]
fn two_apps_run_side_by_side_and_roll_back_independently() {
    let env = Env::new();
    let det1 = env.release("det", "1.0.0", 16 * 1024);
    let det2 = env.release("det", "2.0.0", 16 * 1024);
    let cls1 = env.release("cls", "1.0.0", 24 * 1024);
    let cls2 = env.release("cls", "2.0.0", 24 * 1024);
    for r in [&det1, &det2, &cls1, &cls2] {
        env.publish(r).expect("publish");
    }
    let marker = env.path("activations");
    let activate = format!(
        "echo \"$EDGECD_APP $EDGECD_RELEASE $EDGECD_CURRENT\" >> {}",
        marker.display()
    );
    let token = env.token(1, &[]);
    let a = spawn_agent(
        &env,
        "a",
        Some(&token),
        &[
            "--activate-cmd",
            &activate,
            // det 2.0.0 is broken: its health check fails.
            "--health-cmd",
            "test \"$EDGECD_RELEASE\" != det@2.0.0 && test -f \"$EDGECD_CURRENT/manifest.json\"",
        ],
    );
    wait_for(T, "enrollment", || device_id(&a.data_dir));
    env.deploy("det", "1.0.0", &[]);
    wait_app_running(&env, &a.data_dir, "det@1.0.0");
    env.deploy("cls", "1.0.0", &[]);
    wait_app_running(&env, &a.data_dir, "cls@1.0.0");
    // Both at once, each in its own slots: the first app in the data directory (as before
    // several apps), the second under apps/cls.
    let s = env
        .device_of(&a.data_dir)
        .expect("device")
        .status
        .expect("status");
    assert_eq!(s.apps.len(), 2, "{:?}", s.apps);
    let det_dir = a.data_dir.clone();
    let cls_dir = a.data_dir.join("apps").join("cls");
    assert_eq!(
        check_current(&det_dir).expect("det current"),
        (det1.bundle_digest.clone(), "det@1.0.0".into())
    );
    assert_eq!(
        check_current(&cls_dir).expect("cls current"),
        (cls1.bundle_digest.clone(), "cls@1.0.0".into())
    );

    // det 2.0.0 fails its health check: det rolls back, cls is not touched.
    env.deploy("det", "2.0.0", &[]);
    let det = wait_for(T, "det to roll back", || {
        let s = app_status(&env, &a.data_dir, "det")?;
        let o = s.last_outcome.as_ref()?;
        (o.kind == OutcomeKind::RolledBack && s.phase == Phase::Committed).then_some(s)
    });
    let o = det.last_outcome.expect("outcome");
    assert_eq!(o.release.as_deref(), Some("det@2.0.0"));
    assert!(o.reason.contains("health check failed"), "{}", o.reason);
    assert_eq!(det.running.expect("det runs").version, "1.0.0");
    let cls = app_status(&env, &a.data_dir, "cls").expect("cls");
    assert_eq!(cls.phase, Phase::Committed);
    assert_eq!(cls.running.expect("cls runs").version, "1.0.0");
    assert!(
        cls.last_outcome
            .is_some_and(|o| o.kind == OutcomeKind::Committed)
    );
    assert_eq!(check_current(&det_dir).expect("det").0, det1.bundle_digest);
    assert_eq!(check_current(&cls_dir).expect("cls").0, cls1.bundle_digest);

    // cls moves on while det stays where its rollback left it.
    env.deploy("cls", "2.0.0", &[]);
    wait_app_running(&env, &a.data_dir, "cls@2.0.0");
    assert_eq!(check_current(&cls_dir).expect("cls").0, cls2.bundle_digest);
    assert_eq!(check_current(&det_dir).expect("det").0, det1.bundle_digest);
    let det = app_status(&env, &a.data_dir, "det").expect("det");
    assert_eq!(det.running.expect("det runs").version, "1.0.0");

    // Each activation named its own app and its own `current`; cls was activated only for
    // its own installs, never during det's rollback.
    let log = std::fs::read_to_string(&marker).expect("marker");
    let lines: Vec<&str> = log.lines().collect();
    let cls_current = cls_dir.join("current");
    let det_current = det_dir.join("current");
    let want = vec![
        format!("det det@1.0.0 {}", det_current.display()),
        format!("cls cls@1.0.0 {}", cls_current.display()),
        format!("det det@2.0.0 {}", det_current.display()),
        format!("det det@1.0.0 {}", det_current.display()),
        format!("cls cls@2.0.0 {}", cls_current.display()),
    ];
    assert_eq!(lines, want);
}

#[test]
fn an_agent_that_holds_one_app_is_not_given_a_second() {
    let env = Env::new();
    let det1 = env.release("det", "1.0.0", 16 * 1024);
    let cls1 = env.release("cls", "1.0.0", 16 * 1024);
    env.publish(&det1).expect("publish");
    env.publish(&cls1).expect("publish");
    let token = env.token(1, &[]);
    let a = spawn_agent(&env, "one", Some(&token), &["--max-apps", "1"]);
    wait_for(T, "enrollment", || device_id(&a.data_dir));
    env.deploy("det", "1.0.0", &[]);
    wait_app_running(&env, &a.data_dir, "det@1.0.0");
    let err = env
        .admin
        .deploy(&edgecd_api::protocol::DeployRequest {
            app: "cls".into(),
            version: "1.0.0".into(),
            selector: Default::default(),
        })
        .expect_err("no room for a second app");
    let msg = err.to_string();
    assert!(
        msg.contains("already holds det@1.0.0") && msg.contains("--max-apps"),
        "{msg}"
    );
    // Nothing changed on the device.
    let s = env
        .device_of(&a.data_dir)
        .expect("device")
        .status
        .expect("status");
    assert_eq!(s.apps.len(), 1);
    assert!(!a.data_dir.join("apps").join("cls").exists());
}

fn apply_fleet(env: &Env, spec: serde_json::Value) {
    let _: serde_json::Value = env
        .admin
        .send("POST", "/api/v1/admin/fleets", &spec)
        .expect("fleet apply");
}

fn relabel(env: &Env, data_dir: &Path, labels: &[(&str, &str)]) {
    let id = device_id(data_dir).expect("id");
    env.admin
        .label_device(
            &id,
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .expect("relabel");
}

#[test]
fn an_app_whose_fleet_the_device_leaves_is_stopped_and_deleted() {
    let env = Env::new();
    let det1 = env.release("det", "1.0.0", 16 * 1024);
    let cls1 = env.release("cls", "1.0.0", 16 * 1024);
    env.publish(&det1).expect("publish");
    env.publish(&cls1).expect("publish");
    let removed = env.path("removed");
    let deactivate = format!(
        "echo \"$EDGECD_APP $EDGECD_RELEASE\" >> {}",
        removed.display()
    );
    let token = env.token(1, &[("kind", "cam"), ("site", "lab")]);
    let a = spawn_agent(&env, "a", Some(&token), &["--deactivate-cmd", &deactivate]);
    wait_for(T, "enrollment", || device_id(&a.data_dir));
    for (name, key, app) in [("cams", "kind", "det"), ("lab", "site", "cls")] {
        let value = if key == "kind" { "cam" } else { "lab" };
        apply_fleet(
            &env,
            serde_json::json!({"name": name, "selector": {key: value},
                "apps": {app: {"release": "1.0.0"}}, "on_unmatch": "remove"}),
        );
        wait_app_running(&env, &a.data_dir, &format!("{app}@1.0.0"));
    }
    // det came first: the data directory's own unit; cls under apps/cls.
    let cls_dir = a.data_dir.join("apps").join("cls");
    assert_eq!(check_current(&a.data_dir).expect("det").1, "det@1.0.0");
    assert_eq!(check_current(&cls_dir).expect("cls").1, "cls@1.0.0");

    // The device leaves the lab: cls is stopped and its directory deleted; det untouched.
    relabel(&env, &a.data_dir, &[("kind", "cam"), ("site", "home")]);
    wait_for(T, "cls to be removed", || {
        let s = env.device_of(&a.data_dir)?.status?;
        (s.apps.len() == 1 && s.apps[0].app == "det").then_some(())
    });
    assert!(!cls_dir.exists(), "cls's slots are deleted");
    // The server shows what is assigned: det, not the removal of cls (newest as it is).
    let info = env.device_of(&a.data_dir).expect("device");
    assert_eq!(info.assigned.as_deref(), Some("det@1.0.0"), "{info:?}");
    assert_eq!(info.assignments, ["det@1.0.0"], "{info:?}");
    // And so does the device's own assignment endpoint (what an agent that holds one app
    // reads): never a removal, which such an agent would install.
    let dev: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.data_dir.join("device.json")).expect("device"))
            .expect("json");
    let text = ureq::get(&format!(
        "{}/api/v1/devices/{}/assignment",
        env.url,
        dev["deviceId"].as_str().expect("id")
    ))
    .header(
        "authorization",
        &format!("Bearer {}", dev["credential"].as_str().expect("credential")),
    )
    .call()
    .expect("GET assignment")
    .body_mut()
    .read_to_string()
    .expect("body");
    let signed: edgecd_api::protocol::SignedAssignment =
        serde_json::from_str(&text).expect("signed assignment");
    let newest: edgecd_api::protocol::Assignment =
        serde_json::from_str(&signed.payload).expect("payload");
    assert_eq!(
        (newest.release.app.as_str(), newest.remove),
        ("det", false),
        "{newest:?}"
    );
    assert_eq!(
        check_current(&a.data_dir).expect("det").0,
        det1.bundle_digest
    );
    assert_eq!(
        std::fs::read_to_string(&removed).expect("deactivated"),
        "cls cls@1.0.0\n"
    );
    let body: serde_json::Value = env
        .admin
        .get("/api/v1/admin/fleets/lab")
        .expect("fleet status");
    assert!(
        body.to_string()
            .contains("cls@1.0.0 removed from the device"),
        "{body}"
    );

    // Back in the lab: cls is installed afresh next to det.
    relabel(&env, &a.data_dir, &[("kind", "cam"), ("site", "lab")]);
    wait_app_running(&env, &a.data_dir, "cls@1.0.0");
    assert_eq!(
        check_current(&cls_dir).expect("cls again").0,
        cls1.bundle_digest
    );

    // It stops being a camera: det, the data directory's own app, is removed; cls stays.
    relabel(&env, &a.data_dir, &[("kind", "none"), ("site", "lab")]);
    wait_for(T, "det to be removed", || {
        let s = env.device_of(&a.data_dir)?.status?;
        (s.apps.len() == 1 && s.apps[0].app == "cls").then_some(())
    });
    assert!(
        !a.data_dir.join("current").exists(),
        "det's current is gone"
    );
    assert!(!a.data_dir.join("slots").join("a").exists());
    assert_eq!(
        check_current(&cls_dir).expect("cls stays").0,
        cls1.bundle_digest
    );
    let log = std::fs::read_to_string(&removed).expect("deactivated");
    assert_eq!(log, "cls cls@1.0.0\ndet det@1.0.0\n");
}

/// A removal that arrives while the app is still downloading does not stop the download
/// halfway (which would leave the install stuck, never resumed and never removed): the
/// install runs to its end and the app is removed right after.
#[test]
fn a_removal_during_the_apps_download_lands_once_the_install_ends() {
    let env = Env::new();
    // About 28 s for cls's 4 MiB, so the removal arrives mid-download.
    let link = slow_link(
        env.server.addr,
        Link {
            bytes_per_sec: 150_000,
            stall_after: None,
        },
    );
    let det1 = env.release("det", "1.0.0", 16 * 1024);
    let cls1 = env.release("cls", "1.0.0", 4 << 20);
    env.publish(&det1).expect("publish");
    env.publish(&cls1).expect("publish");
    let token = env.token(1, &[("kind", "cam"), ("site", "lab")]);
    let dir = env.path("slow");
    let _agent = AgentProc {
        child: agent_cmd(&link.url, &dir, Some(&token), &[])
            .stderr(std::fs::File::create(env.path("slow.log")).expect("log"))
            .spawn()
            .expect("spawn agent"),
        data_dir: dir.clone(),
        log: env.path("slow.log"),
    };
    wait_for(T, "enrollment", || device_id(&dir));
    apply_fleet(
        &env,
        serde_json::json!({"name": "cams", "selector": {"kind": "cam"},
            "apps": {"det": {"release": "1.0.0"}}}),
    );
    wait_app_running(&env, &dir, "det@1.0.0");
    apply_fleet(
        &env,
        serde_json::json!({"name": "lab", "selector": {"site": "lab"},
            "apps": {"cls": {"release": "1.0.0"}}, "on_unmatch": "remove"}),
    );
    wait_for(T, "cls to be downloading", || {
        (app_status(&env, &dir, "cls")?.phase == Phase::Downloading).then_some(())
    });
    relabel(&env, &dir, &[("kind", "cam"), ("site", "home")]);
    wait_for(Duration::from_secs(120), "cls to be removed", || {
        let s = env.device_of(&dir)?.status?;
        (s.apps.len() == 1 && s.apps[0].app == "det").then_some(())
    });
    assert!(
        !dir.join("apps").join("cls").exists(),
        "cls's files are deleted"
    );
    assert_eq!(check_current(&dir).expect("det").0, det1.bundle_digest);
}
