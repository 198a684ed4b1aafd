//! Fleets as desired state through the real `edgecd` binary, with real `edgecd-agent`
//! processes: a device that enrolls after a fleet is applied installs its release with no
//! further command (checked by what the agent reports it runs); relabelled devices converge,
//! devices that stop matching are listed as left and keep their release, an incompatible
//! device is listed with the reason; a bad fleet file changes nothing; a diff shows the change
//! before it is applied; a release placed with a rollout policy is carried by a rollout, and a
//! rollout started with `--fleet` moves the fleet when it completes.
mod common;
use common::{
    Agents, lab_cli as cli, lab_json as json, lab_ok as ok, reported_release as running, sibling,
};
use edgecd_cli::story::Lab;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts an agent named `who` (label `who=NAME`) with `labels` and `board`.
fn agent(lab: &Lab, dir: &Path, who: &str, labels: &[&str], board: &str) -> Child {
    let token = lab
        .admin
        .create_token(&edgecd_api::protocol::CreateTokenRequest {
            labels: Default::default(),
            expires_in_secs: Some(600),
            max_uses: Some(1),
        })
        .unwrap()
        .token;
    let log = std::fs::File::create(dir.join(format!("agent-{who}.log"))).unwrap();
    let mut c = Command::new(sibling("edgecd-agent"));
    c.args(["--server", &lab.url(), "--data-dir"])
        .arg(dir.join(format!("agent-{who}")))
        .args(["--enroll-token", &token, "--label", &format!("who={who}")]);
    for l in labels {
        c.args(["--label", l]);
    }
    c.args(["--board", board, "--runtime", "edgecd-infer@0.1.0"])
        .args(["--checkin-interval-ms", "300"])
        .env_remove("EDGECD_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The device id of agent `who`, once it enrolled.
fn device_id(lab: &Lab, who: &str) -> String {
    common::device_labelled(lab, who, Duration::from_secs(30))
}

fn wait_running(lab: &Lab, id: &str, release: &str, dir: &Path) {
    let t = Instant::now();
    while running(lab, id).as_deref() != Some(release) {
        if t.elapsed() > Duration::from_secs(90) {
            let logs: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect();
            panic!(
                "{id} does not run {release} (runs {:?}); logs:\n{}",
                running(lab, id),
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn entry(status: &serde_json::Value, id: &str) -> serde_json::Value {
    status["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["device"] == id)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

fn wait_state(lab: &Lab, fleet: &str, id: &str, state: &str) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let st = json(lab, &["fleet", "status", fleet, "--json"]);
        if entry(&st, id)["state"] == state {
            return entry(&st, id);
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{id} not {state} in {fleet}: {st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

const APP: &str = "receipt-classifier";

#[test]
fn a_device_that_enrolls_after_a_fleet_is_applied_runs_its_release_with_no_command() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let lab = Lab::start(d, 1, 100).unwrap();
    for (v, seed) in [("1.0.0", 1), ("1.1.0", 2), ("1.2.0", 3)] {
        lab.release(v, seed).unwrap();
    }
    let file = d.join("fleet.yaml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    let f = file.to_str().unwrap();

    // A bad fleet file is refused before anything changes, with the reason.
    write(
        "name: lab-cams\nselector: {site: lab}\napps:\n  receipt-classifier: {release: 1.0.0}\nonunmatch: keep\n",
    );
    let o = cli(&lab, &["fleet", "apply", "-f", f]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("unknown field `onunmatch`"),
        "{err}"
    );
    write("name: lab-cams\nselector: {site: lab}\napps:\n  receipt-classifier: {release: 9.9.9}\n");
    let o = cli(&lab, &["fleet", "apply", "-f", f]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("receipt-classifier@9.9.9 is not published"),
        "{err}"
    );
    assert_eq!(
        json(&lab, &["fleet", "list", "--json"]),
        serde_json::json!([])
    );

    write(
        "name: lab-cams\nselector: {site: lab}\napps:\n  receipt-classifier: {release: 1.0.0}\non_unmatch: keep\n",
    );
    let diff = ok(&lab, &["fleet", "diff", "-f", f]);
    assert!(
        diff.contains("creates fleet lab-cams") && diff.contains("nothing changed"),
        "{diff}"
    );
    assert_eq!(
        json(&lab, &["fleet", "list", "--json"]),
        serde_json::json!([])
    );
    let applied = ok(&lab, &["fleet", "apply", "-f", f]);
    assert!(applied.contains("applied fleet lab-cams"), "{applied}");

    // Enrolled after the apply: installs the release with no command.
    let mut agents = Agents(vec![agent(&lab, d, "a", &["site=lab"], "rpi5")]);
    let a = device_id(&lab, "a");
    wait_running(&lab, &a, &format!("{APP}@1.0.0"), d);
    wait_state(&lab, "lab-cams", &a, "converged");

    // Relabelled into the fleet: converges; an incompatible device is listed with the reason.
    agents.0.push(agent(&lab, d, "b", &["site=home"], "rpi5"));
    agents.0.push(agent(&lab, d, "c", &["site=lab"], "rpi4"));
    let (b, c) = (device_id(&lab, "b"), device_id(&lab, "c"));
    ok(&lab, &["device", "label", &b, "site=lab"]);
    wait_running(&lab, &b, &format!("{APP}@1.0.0"), d);
    let blocked = wait_state(&lab, "lab-cams", &c, "blocked");
    assert!(
        blocked["why"].as_str().unwrap().contains("board rpi4"),
        "{blocked}"
    );
    let human = ok(&lab, &["fleet", "status", "lab-cams"]);
    assert!(
        human.contains(&c) && human.contains("incompatible"),
        "{human}"
    );
    assert_eq!(running(&lab, &c), None);

    // Relabelled out (keep): left, and the device keeps running its release.
    ok(&lab, &["device", "label", &a, "site=home"]);
    let left = wait_state(&lab, "lab-cams", &a, "left");
    assert!(left["why"].as_str().unwrap().contains("keeps"), "{left}");
    assert_eq!(running(&lab, &a).as_deref(), Some(&*format!("{APP}@1.0.0")));

    // A new release with a rollout policy: the diff says a rollout starts; applying starts it
    // over the fleet's devices, and the fleet's device ends up running it.
    write(
        "name: lab-cams\nselector: {site: lab}\napps:\n  receipt-classifier:\n    release: 1.1.0\n    rollout:\n      steps: [{canary: {percent: 100}}]\n",
    );
    let diff = ok(&lab, &["fleet", "diff", "-f", f]);
    assert!(
        diff.contains("a rollout of receipt-classifier@1.1.0 starts"),
        "{diff}"
    );
    ok(&lab, &["fleet", "apply", "-f", f]);
    wait_running(&lab, &b, &format!("{APP}@1.1.0"), d);
    let rollouts = json(&lab, &["rollout", "list", "--json"]);
    let r = &rollouts[0]["rollout"];
    assert_eq!(r["spec"]["release"], format!("{APP}@1.1.0"), "{rollouts}");
    assert_eq!(r["spec"]["selector"]["site"], "lab", "{rollouts}");
    assert_eq!(
        running(&lab, &a).as_deref(),
        Some(&*format!("{APP}@1.0.0")),
        "a left the fleet"
    );

    // A rollout started with --fleet targets the fleet and moves it when it completes.
    let spec = d.join("rollout.yaml");
    std::fs::write(
        &spec,
        format!("release: {APP}@1.2.0\nsteps:\n  - canary: {{percent: 100}}\n"),
    )
    .unwrap();
    let t = Instant::now();
    let started = loop {
        // The fleet's own rollout must finish first (one rollout per app at a time).
        let o = cli(
            &lab,
            &[
                "rollout",
                "start",
                "-f",
                spec.to_str().unwrap(),
                "--fleet",
                "lab-cams",
                "--json",
            ],
        );
        if o.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        started["rollout"]["spec"]["selector"]["site"], "lab",
        "{started}"
    );
    wait_running(&lab, &b, &format!("{APP}@1.2.0"), d);
    let t = Instant::now();
    loop {
        let st = json(&lab, &["fleet", "status", "lab-cams", "--json"]);
        if st["apps"][0]["placed"] == format!("{APP}@1.2.0")
            && st["apps"][0]["current"] == format!("{APP}@1.2.0")
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the fleet did not take 1.2.0: {st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A device enrolling now gets the fleet's new release.
    agents.0.push(agent(&lab, d, "e", &["site=lab"], "rpi5"));
    let e = device_id(&lab, "e");
    wait_running(&lab, &e, &format!("{APP}@1.2.0"), d);
    let list = ok(&lab, &["fleet", "list"]);
    assert!(
        list.contains("lab-cams") && list.contains("(apply)"),
        "{list}"
    );
    let gone = ok(&lab, &["fleet", "delete", "lab-cams"]);
    assert!(gone.contains("deleted fleet lab-cams"), "{gone}");
    assert_eq!(
        json(&lab, &["fleet", "list", "--json"]),
        serde_json::json!([])
    );

    // A fleet without a selector takes every device, now and later: without a terminal it
    // needs --yes, and nothing is stored until then.
    write(&format!(
        "name: everywhere\napps:\n  {APP}: {{release: 1.2.0}}\n"
    ));
    let o = cli(&lab, &["fleet", "apply", "-f", f]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no selector") && err.contains("--yes"),
        "{err}"
    );
    assert_eq!(
        json(&lab, &["fleet", "list", "--json"]),
        serde_json::json!([])
    );
    let applied = ok(&lab, &["fleet", "apply", "-f", f, "--yes"]);
    assert!(applied.contains("applied fleet everywhere"), "{applied}");
    let list = ok(&lab, &["fleet", "list"]);
    assert!(
        list.contains("everywhere") && list.contains("(all devices)"),
        "{list}"
    );
}

/// `deploy` stays a shortcut that writes desired state: a device that enrolls after it also
/// runs the release.
#[test]
fn a_device_that_enrolls_after_a_deploy_runs_the_release() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let lab = Lab::start(d, 1, 100).unwrap();
    lab.release("1.0.0", 1).unwrap();
    let mut agents = Agents(vec![agent(&lab, d, "a", &["site=lab"], "rpi5")]);
    let a = device_id(&lab, "a");
    ok(
        &lab,
        &[
            "deploy",
            &format!("{APP}@1.0.0"),
            "--selector",
            "site=lab",
            "--yes",
        ],
    );
    wait_running(&lab, &a, &format!("{APP}@1.0.0"), d);
    agents.0.push(agent(&lab, d, "b", &["site=lab"], "rpi5"));
    let b = device_id(&lab, "b");
    wait_running(&lab, &b, &format!("{APP}@1.0.0"), d);
    let st = json(
        &lab,
        &[
            "fleet",
            "status",
            &format!("deploy:{APP}:site=lab"),
            "--json",
        ],
    );
    assert_eq!(st["origin"], "deploy", "{st}");
}
