//! CLI habits through the real `edgecd` binary: a closed stdout (`edgecd … | head`) ends a
//! command quietly instead of panicking; `--json` output parses; public artifacts are written
//! 0644 and private keys 0600 whatever the umask; `device list --selector/--state`, `device
//! delete` (the device's credential is refused afterwards), `rollout list`, and the host name
//! and serial devices report at enrollment.
mod common;

use edgecd_cli::story::Lab;
use edgecd_testkit::wait_for;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn cli(lab: &Lab, args: &[&str]) -> Output {
    common::edgecd()
        .args(args)
        .env("EDGECD_SERVER", lab.url())
        .env("EDGECD_TOKEN", &lab.server.admin_token)
        .output()
        .expect("run edgecd")
}

fn ok(lab: &Lab, args: &[&str]) -> String {
    common::succeeded(args, cli(lab, args))
}

fn json_out(lab: &Lab, args: &[&str]) -> Value {
    let out = ok(lab, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("edgecd {args:?}: not JSON ({e}): {out}"))
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Runs `cmd` with its stdout a pipe whose reading end is already closed, so its first write
/// fails with EPIPE; asserts it neither panics nor fails.
fn assert_quiet_on_closed_stdout(mut cmd: Command, what: &str) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let o = cmd
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run edgecd");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(
        o.status.success(),
        "{what}: {:?} (101 is a panic), stderr: {stderr}",
        o.status
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn closed_stdout_ends_offline_commands_quietly() {
    let t = tempfile::tempdir().unwrap();
    let mut keygen = common::edgecd();
    keygen.args(["keygen", "--out"]).arg(t.path().join("k"));
    assert_quiet_on_closed_stdout(keygen, "keygen");
    assert!(t.path().join("k.key").exists(), "keygen did its work");

    let model = t.path().join("m.onnx");
    std::fs::write(&model, edgecd_cli::demo_model::classifier_onnx(1)).unwrap();
    let out = t.path().join("dist");
    let m = model.to_str().unwrap();
    let o = out.to_str().unwrap();
    common::ok(t.path(), &common::build_args(m, "app", o));
    for json in [false, true] {
        let mut inspect = common::edgecd();
        inspect
            .args(["bundle", "inspect"])
            .arg(out.join("app-1.0.0.edgecd"));
        if json {
            inspect.arg("--json");
        }
        assert_quiet_on_closed_stdout(inspect, "bundle inspect");
    }
}

#[test]
fn public_artifacts_are_0644_and_private_keys_0600_under_any_umask() {
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("m.onnx");
    std::fs::write(&model, edgecd_cli::demo_model::classifier_onnx(2)).unwrap();
    let dist = t.path().join("dist");
    let bundle = dist.join("app-1.0.0.edgecd");
    let release = dist.join("release.json");
    let bin = env!("CARGO_BIN_EXE_edgecd");
    for (umask, prefix) in [("077", "strict"), ("000", "open")] {
        let key = t.path().join(prefix);
        let script = format!(
            "umask {umask} && {bin} keygen --out {key} && \
             {bin} bundle build --model {model} --name app --version 1.0.0 --board rpi5 \
               --runtime edgecd-infer@0.1.0 --out {dist} && \
             {bin} bundle sign {bundle} --key {key}.key && \
             {bin} release create --bundle {bundle} --key {key}.key --out {release}",
            key = key.display(),
            model = model.display(),
            dist = dist.display(),
            bundle = bundle.display(),
            release = release.display(),
        );
        let o = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            mode(&key.with_extension("key")),
            0o600,
            "umask {umask}: key"
        );
        for public in [
            key.with_extension("pub"),
            bundle.clone(),
            dist.join("app-1.0.0.cdx.json"),
            dist.join("app-1.0.0.edgecd.sigstore.json"),
            release.clone(),
            dist.join("release.json.sigstore.json"),
        ] {
            assert_eq!(mode(&public), 0o644, "umask {umask}: {}", public.display());
        }
    }
}

#[test]
fn offline_commands_print_json() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("m.onnx"), edgecd_cli::demo_model::classifier_onnx(3)).unwrap();
    let k = common::json(d, &["keygen", "--out", "k", "--json"]);
    assert!(k["keyId"].is_string(), "{k}");
    common::ok(d, &common::build_args("m.onnx", "app", "."));
    let s = common::json(
        d,
        &[
            "bundle",
            "sign",
            "app-1.0.0.edgecd",
            "--key",
            "k.key",
            "--json",
        ],
    );
    assert_eq!(s["keyId"], k["keyId"], "{s}");
    assert!(s["digest"].as_str().unwrap().starts_with("sha256:"), "{s}");
    let r = common::json(
        d,
        &[
            "release",
            "create",
            "--bundle",
            "app-1.0.0.edgecd",
            "--key",
            "k.key",
            "--out",
            "release.json",
            "--json",
        ],
    );
    assert_eq!(r["release"]["version"], "1.0.0", "{r}");
    assert_eq!(r["release"]["bundle"]["digest"], s["digest"], "{r}");
}

/// A device enrolled and checked in over the real HTTP API (JSON written out, as an agent
/// sends it).
struct Device {
    id: String,
    credential: String,
}

/// POSTs `body` as JSON to `path`; returns the status and the answer's text.
fn post(lab: &Lab, path: &str, auth: Option<&str>, body: &Value) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(format!("{}{path}", lab.url()))
        .header("content-type", "application/json");
    if let Some(a) = auth {
        r = r.header("authorization", &format!("Bearer {a}"));
    }
    let mut resp = r.send(body.to_string()).expect("POST");
    let text = resp.body_mut().read_to_string().expect("body");
    (resp.status().as_u16(), text)
}

fn inventory(hostname: &str, serial: &str) -> Value {
    json!({"board": "rpi5", "ramMb": 8192, "runtimes": {"edgecd-infer": "0.1.0"},
           "agentVersion": "test", "hostname": hostname, "serial": serial})
}

fn enroll(lab: &Lab, labels: Value, hostname: &str, serial: &str) -> Device {
    let token = json_out(lab, &["device", "token", "create", "--json"]);
    let (status, text) = post(
        lab,
        "/api/v1/devices/enroll",
        None,
        &json!({"token": token["token"], "labels": labels,
                "inventory": inventory(hostname, serial)}),
    );
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).expect("enroll JSON");
    Device {
        id: body["deviceId"].as_str().unwrap().to_string(),
        credential: body["credential"].as_str().unwrap().to_string(),
    }
}

/// Checks in reporting `phase`; returns the HTTP status.
fn checkin(lab: &Lab, d: &Device, phase: &str, hostname: &str, serial: &str) -> u16 {
    post(
        lab,
        &format!("/api/v1/devices/{}/checkin", d.id),
        Some(&d.credential),
        &json!({"inventory": inventory(hostname, serial),
                "status": {"phase": phase, "assignmentVersion": 0}}),
    )
    .0
}

#[test]
fn device_list_filters_delete_rollout_list_and_identity() {
    let t = tempfile::tempdir().unwrap();
    // Check-ins every 2 s: silent (offline) after 6 s.
    let lab = Lab::start(t.path(), 2, 200).unwrap();
    let a = enroll(&lab, json!({"site": "a", "tier": "gold"}), "pi-a", "SER-A");
    let b = enroll(&lab, json!({"site": "b"}), "pi-b", "SER-B");
    let c = enroll(&lab, json!({"site": "a"}), "pi-c", "SER-C");
    assert_eq!(checkin(&lab, &a, "committed", "pi-a", "SER-A"), 200);
    assert_eq!(checkin(&lab, &b, "idle", "pi-b", "SER-B"), 200);
    // The server bounds what a device may claim.
    let long = "h".repeat(254);
    let (status, text) = post(
        &lab,
        &format!("/api/v1/devices/{}/checkin", a.id),
        Some(&a.credential),
        &json!({"inventory": inventory(&long, "SER-A"),
                "status": {"phase": "idle", "assignmentVersion": 0}}),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("inventory.hostname"), "{text}");

    // Host name and serial reach `device show` and the `device list` table.
    let shown = json_out(&lab, &["device", "show", &a.id, "--json"]);
    assert_eq!(shown["inventory"]["hostname"], "pi-a", "{shown}");
    assert_eq!(shown["inventory"]["serial"], "SER-A", "{shown}");
    let human = ok(&lab, &["device", "show", &a.id]);
    assert!(human.contains("SER-A"), "{human}");
    let table = ok(&lab, &["device", "list"]);
    assert!(
        table.lines().next().unwrap().contains("HOSTNAME"),
        "{table}"
    );
    let row_a = table.lines().find(|l| l.starts_with(&a.id)).expect("row");
    assert!(row_a.contains("pi-a"), "{table}");

    // Selector and state, server-side.
    let list = |args: &[&str]| {
        let mut v = vec!["device", "list", "--json"];
        v.extend_from_slice(args);
        ids(&json_out(&lab, &v))
    };
    assert_eq!(list(&[]), set(&[&a.id, &b.id, &c.id]));
    assert_eq!(list(&["--selector", "site=a"]), set(&[&a.id, &c.id]));
    assert_eq!(list(&["--selector", "site=a,tier=gold"]), set(&[&a.id]));
    assert_eq!(
        list(&["--selector", "site=a", "--selector", "tier=gold"]),
        set(&[&a.id])
    );
    assert_eq!(list(&["--state", "committed"]), set(&[&a.id]));
    assert_eq!(list(&["--state", "idle", "--selector", "site=a"]), set(&[]));
    let bad = cli(&lab, &["device", "list", "--state", "asleep"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("unknown device state") && err.contains("offline"),
        "{err}"
    );
    // c never checks in; a keeps checking in: c (and b) go offline, a stays online.
    let offline = wait_for("c to be offline", Duration::from_secs(60), || {
        assert_eq!(checkin(&lab, &a, "committed", "pi-a", "SER-A"), 200);
        let off = list(&["--state", "offline"]);
        off.contains(&c.id).then_some(off)
    });
    assert!(!offline.contains(&a.id), "{offline:?}");
    assert_eq!(checkin(&lab, &a, "committed", "pi-a", "SER-A"), 200);
    assert!(list(&["--state", "online"]).contains(&a.id));

    // Delete: the device, its credential and its assignment go; an unknown id is a 404.
    lab.release("1.0.0", 1).unwrap();
    ok(
        &lab,
        &["deploy", "receipt-classifier@1.0.0", "--selector", "site=b"],
    );
    assert!(
        lab.server
            .block_on(lab.server.state.store.assignment(&b.id))
            .unwrap()
            .is_some()
    );
    let gone = json_out(&lab, &["device", "delete", &b.id, "--json"]);
    assert_eq!(gone["id"], b.id.as_str(), "{gone}");
    assert_eq!(gone["assigned"], "receipt-classifier@1.0.0", "{gone}");
    assert_eq!(checkin(&lab, &b, "idle", "pi-b", "SER-B"), 401);
    assert!(
        lab.server
            .block_on(lab.server.state.store.assignment(&b.id))
            .unwrap()
            .is_none()
    );
    assert_eq!(list(&[]), set(&[&a.id, &c.id]));
    let events = lab
        .server
        .block_on(lab.server.state.store.events(&b.id))
        .unwrap();
    assert!(
        events.iter().any(|(_, kind, _)| kind == "deleted"),
        "{events:?}"
    );
    let again = cli(&lab, &["device", "delete", &b.id]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("404") && err.contains(&b.id), "{err}");
    assert_eq!(
        ok(&lab, &["device", "delete", &c.id]).trim(),
        format!("deleted {}", c.id)
    );

    // rollout list: table and JSON.
    assert!(ok(&lab, &["rollout", "list"]).lines().count() == 1);
    lab.release("1.1.0", 2).unwrap();
    let started = lab
        .start_rollout(
            "release: receipt-classifier@1.1.0\nselector: {site: a}\nsteps:\n  - canary: {devices: 1}\n  - pause: {}\n",
        )
        .unwrap();
    let rid = started["rollout"]["id"].as_str().unwrap().to_string();
    let all = json_out(&lab, &["rollout", "list", "--json"]);
    assert_eq!(all[0]["rollout"]["id"], rid.as_str(), "{all}");
    let table = ok(&lab, &["rollout", "list"]);
    let row = table.lines().find(|l| l.starts_with(&rid)).expect("row");
    assert!(row.contains("receipt-classifier@1.1.0"), "{table}");
    let paused = json_out(&lab, &["rollout", "pause", &rid, "--json"]);
    assert_eq!(paused["rollout"]["id"], rid.as_str(), "{paused}");

    // Other data commands print JSON too.
    let labelled = json_out(&lab, &["device", "label", &a.id, "tier=silver", "--json"]);
    assert_eq!(labelled["labels"]["tier"], "silver", "{labelled}");
    assert!(json_out(&lab, &["keys", "list", "--json"]).is_array());
    let key = edgecd_sign::SigningKey::generate();
    let pub_file = lab.dir.join("extra.pub");
    std::fs::write(&pub_file, key.verifying_key().to_spki_pem()).unwrap();
    let trusted = json_out(
        &lab,
        &["keys", "trust", pub_file.to_str().unwrap(), "--json"],
    );
    assert_eq!(
        trusted["hint"],
        key.verifying_key().hint().as_str(),
        "{trusted}"
    );
    assert!(json_out(&lab, &["release", "list", "--json"]).is_array());
    let revoked = json_out(&lab, &["device", "revoke", &a.id, "--json"]);
    assert_eq!(revoked["revoked"], true, "{revoked}");
    assert_eq!(list(&["--state", "revoked"]), set(&[&a.id]));

    // `edgecd device list | head -1` and friends: no panic on a closed stdout.
    for args in [
        &["device", "list"][..],
        &["device", "list", "--json"][..],
        &["rollout", "list"][..],
    ] {
        let mut c = common::edgecd();
        c.args(args)
            .env("EDGECD_SERVER", lab.url())
            .env("EDGECD_TOKEN", &lab.server.admin_token);
        assert_quiet_on_closed_stdout(c, &format!("{args:?}"));
    }
}
