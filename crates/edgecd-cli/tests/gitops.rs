//! GitOps end to end through the real `edgecd` binary with real `edgecd-agent` processes and
//! real git repos — a bare repo over `file://`, and one served by `git daemon` on 127.0.0.1
//! (`git://`, pushes allowed): a commit applies a fleet and the agents report its release; a
//! commit changing the release with a rollout policy starts a rollout (the canary reports the
//! new release), and `git revert` of it rolls it back (the canary reports the old one again);
//! after a release completed, a revert carries the fleet back; a bad commit changes nothing and
//! is shown in `gitops status`; `fleet apply` of a fleet from git is refused naming the repo;
//! the status the server pushes is readable from the repo's status branch.
mod common;
use common::{
    Agents, lab_cli as cli, lab_json as json, lab_ok as ok, reported_release as running, sibling,
};
use edgecd_cli::story::Lab;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const APP: &str = "receipt-classifier";

fn agent(lab: &Lab, dir: &Path, who: &str) -> Child {
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
    Command::new(sibling("edgecd-agent"))
        .args(["--server", &lab.url(), "--data-dir"])
        .arg(dir.join(format!("agent-{who}")))
        .args(["--enroll-token", &token, "--label", &format!("who={who}")])
        .args(["--label", "site=lab", "--board", "rpi5"])
        .args([
            "--runtime",
            "edgecd-infer@0.1.0",
            "--checkin-interval-ms",
            "300",
        ])
        .env_remove("EDGECD_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn device_id(lab: &Lab, who: &str) -> String {
    common::device_labelled(lab, who, Duration::from_secs(120))
}

fn wait_running(lab: &Lab, id: &str, version: &str) {
    let want = format!("{APP}@{version}");
    wait(&format!("{id} reports {want}"), || {
        (running(lab, id).as_deref() == Some(&want)).then_some(())
    });
}

/// Waits until the server judged `commit` (applied or refused); its `gitops status --json`.
fn judged(lab: &Lab, commit: &str) -> serde_json::Value {
    wait(&format!("commit {commit} judged"), || {
        let st = json(lab, &["gitops", "status", "--json"]);
        (st["lastApplied"] == commit || st["lastError"]["commit"] == commit).then_some(st)
    })
}

/// A work tree pushing to `remote`, committing with the `git` binary.
struct Work {
    git: PathBuf,
    dir: PathBuf,
}

impl Work {
    fn new(git: &Path, dir: PathBuf, remote: &str) -> Work {
        let w = Work {
            git: git.to_path_buf(),
            dir,
        };
        std::fs::create_dir_all(&w.dir).unwrap();
        w.run(&["init", "-q", "-b", "main"]);
        w.run(&["remote", "add", "origin", remote]);
        w
    }

    fn run(&self, args: &[&str]) -> String {
        let o = Command::new(&self.git)
            .current_dir(&self.dir)
            .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.com"])
            .args(["-c", "commit.gpgsign=false"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &self.dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn commit(&self, file: &str, text: &str, msg: &str) -> String {
        let p = self.dir.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self.run(&["add", "-A"]);
        self.run(&["commit", "-q", "-m", msg]);
        self.push()
    }

    fn push(&self) -> String {
        self.run(&["push", "-q", "origin", "main"]);
        self.run(&["rev-parse", "HEAD"])
    }

    /// `status.json` or `commits/C.json` of the status branch, as fetched from the repo.
    fn status_file(&self, file: &str) -> serde_json::Value {
        self.run(&["fetch", "-q", "origin", "edgecd-status"]);
        serde_json::from_str(&self.run(&["show", &format!("FETCH_HEAD:{file}")])).unwrap()
    }
}

fn fleet_yaml(version: &str, policy: bool) -> String {
    let mut s = format!(
        "name: lab-cams\nselector: {{site: lab}}\napps:\n  {APP}:\n    release: {APP}@{version}\n"
    );
    if policy {
        s.push_str("    rollout:\n      steps: [{canary: {devices: 1}}, {approve: {}}, {canary: {percent: 100}}]\n");
    }
    s
}

/// `git daemon` on 127.0.0.1 serving `base` (pushes allowed), killed on drop.
struct Daemon(Child, u16);

impl Daemon {
    fn start(git: &Path, base: &Path) -> Daemon {
        let port = edgecd_testkit::free_port();
        let child = Command::new(git)
            .args([
                "daemon",
                "--export-all",
                "--enable=receive-pack",
                "--reuseaddr",
            ])
            .arg(format!("--base-path={}", base.display()))
            .args(["--listen=127.0.0.1", &format!("--port={port}")])
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Daemon(child, port);
        wait("git daemon listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bare(git: &Path, path: &Path) {
    let o = Command::new(git)
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success());
}

#[test]
fn a_commit_promotes_a_revert_rolls_back_and_a_bad_commit_changes_nothing() {
    let Some(git) = edgecd_testkit::tool("git") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let lab = Lab::start(d, 1, 100).unwrap();
    for (v, seed) in [("1.0.0", 1), ("1.1.0", 2)] {
        lab.release(v, seed).unwrap();
    }
    let origin = d.join("fleets.git");
    bare(&git, &origin);
    let url = format!("file://{}", origin.display());
    let work = Work::new(&git, d.join("work"), &url);
    let c1 = work.commit(
        "fleets/lab-cams.yaml",
        &fleet_yaml("1.0.0", false),
        "lab cams on 1.0.0",
    );
    let secret = d.join("webhook-secret");
    std::fs::write(&secret, "a-long-enough-webhook-secret\n").unwrap();
    let out = ok(
        &lab,
        &[
            "gitops",
            "--repo",
            &url,
            "--branch",
            "main",
            "--path",
            "fleets",
            "--poll-secs",
            "1",
            "--webhook-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("connected") && out.contains("/api/v1/gitops/webhook"),
        "{out}"
    );
    let st = judged(&lab, &c1);
    assert_eq!(st["lastApplied"], c1, "{st}");

    let mut agents = Agents(vec![agent(&lab, d, "a"), agent(&lab, d, "b")]);
    let (a, b) = (device_id(&lab, "a"), device_id(&lab, "b"));
    wait_running(&lab, &a, "1.0.0");
    wait_running(&lab, &b, "1.0.0");
    let list = ok(&lab, &["fleet", "list"]);
    assert!(list.contains("lab-cams  (gitops)"), "{list}");

    // Promotion is a commit: the rollout's canary reports the new release.
    let c2 = work.commit(
        "fleets/lab-cams.yaml",
        &fleet_yaml("1.1.0", true),
        "promote 1.1.0",
    );
    judged(&lab, &c2);
    let canary = wait("a canary reports 1.1.0", || {
        [&a, &b]
            .into_iter()
            .find(|id| running(&lab, id).as_deref() == Some(&*format!("{APP}@1.1.0")))
            .cloned()
    });
    let rollouts = json(&lab, &["rollout", "list", "--json"]);
    let rid = rollouts[0]["rollout"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        rollouts[0]["rollout"]["spec"]["release"],
        format!("{APP}@1.1.0")
    );

    // `git revert` is the rollback: the running rollout is aborted, the canary goes back.
    work.run(&["revert", "--no-edit", "HEAD"]);
    let c3 = work.push();
    assert_eq!(judged(&lab, &c3)["lastApplied"], c3);
    wait_running(&lab, &canary, "1.0.0");
    let r = json(&lab, &["rollout", "status", &rid, "--json"]);
    assert_eq!(r["rollout"]["state"]["phase"], "aborted", "{r}");
    for id in [&a, &b] {
        assert_eq!(running(&lab, id).as_deref(), Some(&*format!("{APP}@1.0.0")));
    }

    // A bad commit changes nothing and is shown with the commit, the file and what is wrong.
    let bad = work.commit(
        "fleets/lab-cams.yaml",
        "name: lab-cams\napps: [oops\n",
        "broken",
    );
    let st = judged(&lab, &bad);
    assert_eq!(st["lastApplied"], c3, "{st}");
    assert_eq!(st["lastError"]["file"], "fleets/lab-cams.yaml", "{st}");
    let human = ok(&lab, &["gitops", "status"]);
    assert!(
        human.contains(&format!(
            "commit {}: fleets/lab-cams.yaml: not valid YAML",
            &bad[..12]
        )) && human.contains(&format!("last applied commit: {c3}"))
            && human.contains("fleet lab-cams"),
        "{human}"
    );
    let unknown = work.commit(
        "fleets/lab-cams.yaml",
        &fleet_yaml("9.9.9", false),
        "unknown release",
    );
    let st = judged(&lab, &unknown);
    assert!(
        st["lastError"]["message"]
            .as_str()
            .unwrap()
            .contains("9.9.9 is not published"),
        "{st}"
    );
    let fleet = json(&lab, &["fleet", "status", "lab-cams", "--json"]);
    assert_eq!(
        fleet["apps"][0]["placed"],
        format!("{APP}@1.0.0"),
        "{fleet}"
    );

    // The CLI cannot change a fleet from git; the error names the repo.
    let f = d.join("lab-cams.yaml");
    std::fs::write(&f, fleet_yaml("1.1.0", false)).unwrap();
    let o = cli(&lab, &["fleet", "apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains(&url)
            && err.contains("branch main")
            && err.contains("change the repo"),
        "{err}"
    );
    let o = cli(&lab, &["fleet", "delete", "lab-cams"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains(&url));
    // A diff still previews a file (nothing is stored).
    let diff = ok(&lab, &["fleet", "diff", "-f", f.to_str().unwrap()]);
    assert!(diff.contains("nothing changed"), "{diff}");
    let fleet = json(&lab, &["fleet", "status", "lab-cams", "--json"]);
    assert_eq!(fleet["origin"], "gitops", "{fleet}");
    assert_eq!(
        fleet["apps"][0]["placed"],
        format!("{APP}@1.0.0"),
        "{fleet}"
    );

    // Reviewers read the status from the repo's status branch.
    let s = work.status_file("status.json");
    assert_eq!(s["commit"], unknown, "{s}");
    assert_eq!(s["result"], "refused", "{s}");
    assert_eq!(s["inForce"], c3, "{s}");
    let applied = work.status_file(&format!("commits/{c2}.json"));
    assert_eq!(applied["result"], "applied", "{applied}");

    // The devices never left 1.0.0.
    for id in [&a, &b] {
        assert_eq!(running(&lab, id).as_deref(), Some(&*format!("{APP}@1.0.0")));
    }
    agents.0.clear();
}

#[test]
fn a_repo_served_by_git_daemon_is_applied_and_gets_its_status_pushed() {
    let Some(git) = edgecd_testkit::tool("git") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let lab = Lab::start(d, 1, 100).unwrap();
    for (v, seed) in [("1.0.0", 1), ("1.1.0", 2)] {
        lab.release(v, seed).unwrap();
    }
    let base = d.join("served");
    std::fs::create_dir_all(&base).unwrap();
    bare(&git, &base.join("fleet.git"));
    let daemon = Daemon::start(&git, &base);
    let url = format!("git://127.0.0.1:{}/fleet.git", daemon.1);
    let work = Work::new(&git, d.join("work"), &url);
    let c1 = work.commit(
        "fleets/lab-cams.yaml",
        &fleet_yaml("1.0.0", false),
        "lab cams on 1.0.0",
    );
    ok(
        &lab,
        &[
            "gitops",
            "--repo",
            &url,
            "--branch",
            "main",
            "--path",
            "fleets",
            "--poll-secs",
            "1",
        ],
    );
    assert_eq!(judged(&lab, &c1)["lastApplied"], c1);
    let _agents = Agents(vec![agent(&lab, d, "a")]);
    let a = device_id(&lab, "a");
    wait_running(&lab, &a, "1.0.0");

    // Without a rollout policy a commit moves the fleet at once; a revert carries it back.
    let c2 = work.commit("fleets/lab-cams.yaml", &fleet_yaml("1.1.0", false), "1.1.0");
    assert_eq!(judged(&lab, &c2)["lastApplied"], c2);
    wait_running(&lab, &a, "1.1.0");
    work.run(&["revert", "--no-edit", "HEAD"]);
    let c3 = work.push();
    assert_eq!(judged(&lab, &c3)["lastApplied"], c3);
    wait_running(&lab, &a, "1.0.0");

    // The status went back over git:// too.
    let st = wait("the status is pushed", || {
        let st = json(&lab, &["gitops", "status", "--json"]);
        (st["pushed"] == c3).then_some(st)
    });
    assert!(st["pushError"].is_null(), "{st}");
    let s = work.status_file("status.json");
    assert_eq!(s["commit"], c3, "{s}");
    assert_eq!(s["result"], "applied", "{s}");

    // Disconnected: the fleet is the CLI's again.
    let out = ok(&lab, &["gitops", "disconnect"]);
    assert!(out.contains("managed with the CLI"), "{out}");
    let list = ok(&lab, &["fleet", "list"]);
    assert!(list.contains("lab-cams  (apply)"), "{list}");
    drop(daemon);
}
