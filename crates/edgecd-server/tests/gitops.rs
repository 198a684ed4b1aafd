//! GitOps against a real server over HTTP with its controller running, and real git repos
//! (bare repos on disk, `file://`; commits made with the `git` binary): a commit applies its
//! fleets and applying it again changes nothing; a bad commit (invalid YAML, unpublished
//! release, wrong digest pin) changes nothing and is reported with the commit, the file and
//! what is wrong, in the API and on the status branch; a fleet removed from the repo is
//! deleted; fleets from git refuse CLI changes (409 naming the repo); a revert while the
//! fleet's rollout runs aborts it and the cohort goes back; only commits signed by a trusted
//! SSH key are applied when signers are given; the webhook needs the right HMAC; a failed
//! status push is shown and does not block applying; fetch failures are shown.

use edgecd_api::protocol::*;
use edgecd_server::gitops::check::webhook_signature;
use edgecd_server::{Config, EmbeddedServer};
use edgecd_sign::SigningKey;
use edgecd_testkit::release::{self as fixtures};
use edgecd_testkit::wait_for;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SECRET: &str = "a-webhook-secret-of-some-length";
const LONG: Duration = Duration::from_secs(60);

struct H {
    _dir: tempfile::TempDir,
    srv: EmbeddedServer,
    url: String,
    http: ureq::Agent,
    ci: SigningKey,
    dir: PathBuf,
    git: PathBuf,
}

type Resp = (u16, String);

impl H {
    /// `None` when git is missing (and external tools are not required).
    fn new() -> Option<Self> {
        let git = edgecd_testkit::tool("git")?;
        let d = tempfile::tempdir().expect("tmp");
        let mut cfg = Config::new(d.path().join("data"));
        cfg.database = edgecd_testkit::postgres::database_for(&cfg.data_dir);
        cfg.listen = "127.0.0.1:0".parse().expect("addr");
        cfg.controller_tick_ms = 50;
        let srv = EmbeddedServer::start(cfg).expect("start");
        let url = format!("http://{}", srv.addr);
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let dir = d.path().to_path_buf();
        let h = Self {
            _dir: d,
            srv,
            url,
            http,
            ci: SigningKey::generate(),
            dir,
            git,
        };
        let (s, t) = h.admin(
            "POST",
            "/api/v1/admin/keys",
            Some(json!({"publicKeyPem": h.ci.verifying_key().to_spki_pem()})),
        );
        assert_eq!(s, 200, "{t}");
        Some(h)
    }

    fn req(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: &[u8],
        hs: &[(&str, &str)],
    ) -> Resp {
        let mut r = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url));
        if let Some(a) = auth {
            r = r.header("authorization", format!("Bearer {a}"));
        }
        for (k, v) in hs {
            r = r.header(*k, *v);
        }
        let mut resp = self
            .http
            .run(r.body(body.to_vec()).expect("req"))
            .expect("http");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }

    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let b = body.map(|v| serde_json::to_vec(&v).expect("json"));
        let hs: &[(&str, &str)] = if b.is_some() {
            &[("content-type", "application/json")]
        } else {
            &[]
        };
        self.req(
            method,
            path,
            Some(&self.srv.admin_token),
            b.as_deref().unwrap_or_default(),
            hs,
        )
    }

    /// Publishes `app@version`; returns its bundle digest.
    fn publish(&self, version: &str) -> String {
        let r = fixtures::make_release(
            &self.dir.join("rel"),
            &self.ci,
            "app",
            version,
            fixtures::rpi5(),
            fixtures::infer_pin(),
            4096,
        )
        .expect("release");
        for (_, p) in r.blobs().expect("blobs") {
            let b = fixtures::blob_ref(&p).expect("ref");
            let (s, t) = self.req(
                "PUT",
                &format!("/api/v1/admin/blobs/{}", b.digest),
                Some(&self.srv.admin_token),
                &std::fs::read(&p).expect("read"),
                &[("content-type", "application/octet-stream")],
            );
            assert!(s == 200 || s == 201, "{s} {t}");
        }
        let (s, t) = self.admin(
            "POST",
            "/api/v1/admin/releases",
            Some(serde_json::to_value(r.publish_request().expect("req")).expect("json")),
        );
        assert!(s == 200 || s == 201, "{t}");
        let info: ReleaseInfo = serde_json::from_str(&t).expect("info");
        info.release.bundle_digest
    }

    fn enroll(&self, labels: &[(&str, &str)]) -> EnrollResponse {
        let (s, t) = self.admin("POST", "/api/v1/admin/enrollment-tokens", Some(json!({})));
        assert_eq!(s, 200, "{t}");
        let tok: CreateTokenResponse = serde_json::from_str(&t).expect("token");
        let req = EnrollRequest {
            token: tok.token,
            inventory: Inventory {
                board: "rpi5".into(),
                ram_mb: 4096,
                runtimes: [("edgecd-infer".to_string(), "0.1.0".to_string())].into(),
                agent_version: "test".into(),
                ..Default::default()
            },
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            protocol: PROTOCOL_VERSION.into(),
        };
        let (s, t) = self.req(
            "POST",
            "/api/v1/devices/enroll",
            None,
            &serde_json::to_vec(&req).expect("json"),
            &[("content-type", "application/json")],
        );
        assert_eq!(s, 200, "{t}");
        serde_json::from_str(&t).expect("enroll")
    }

    /// The release the server assigned the device (`app@version`) and the assignment version.
    fn assigned(&self, id: &str) -> Option<(String, u64)> {
        let (s, t) = self.admin("GET", &format!("/api/v1/admin/devices/{id}"), None);
        assert_eq!(s, 200, "{t}");
        let v: DeviceInfo = serde_json::from_str(&t).expect("json");
        v.assigned
            .map(|a| (a, v.assignment_version.unwrap_or_default()))
    }

    fn gitops(&self) -> Value {
        let (s, t) = self.admin("GET", "/api/v1/admin/gitops", None);
        assert_eq!(s, 200, "{t}");
        serde_json::from_str(&t).expect("json")
    }

    fn webhook(&self, sig: Option<&str>) -> Resp {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut hs = vec![("content-type", "application/json")];
        if let Some(s) = sig {
            hs.push(("x-hub-signature-256", s));
        }
        self.req("POST", "/api/v1/gitops/webhook", None, body, &hs)
    }

    fn poke(&self) {
        let sig = webhook_signature(SECRET.as_bytes(), br#"{"ref":"refs/heads/main"}"#);
        let (s, t) = self.webhook(Some(&sig));
        assert_eq!(s, 202, "{t}");
    }

    /// Waits until the controller judged `commit`; returns the status.
    fn judged(&self, commit: &str) -> Value {
        wait_for(&format!("commit {commit} judged"), LONG, || {
            let st = self.gitops();
            let applied = st["lastApplied"] == commit;
            let refused = st["lastError"]["commit"] == commit;
            (applied || refused).then_some(st)
        })
    }

    fn fleet(&self, name: &str) -> Option<Value> {
        let (s, t) = self.admin("GET", &format!("/api/v1/admin/fleets/{name}"), None);
        (s == 200).then(|| serde_json::from_str(&t).expect("json"))
    }
}

/// A bare repo (`origin.git`) and a work tree pushing to it.
struct Repo {
    git: PathBuf,
    work: PathBuf,
    bare: PathBuf,
}

impl Repo {
    fn new(git: &Path, dir: &Path) -> Repo {
        let r = Repo {
            git: git.to_path_buf(),
            work: dir.join("work"),
            bare: dir.join("origin.git"),
        };
        r.run(
            dir,
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                r.bare.to_str().unwrap(),
            ],
        );
        r.run(dir, &["init", "-q", "-b", "main", r.work.to_str().unwrap()]);
        r.git(&["remote", "add", "origin", r.bare.to_str().unwrap()]);
        r
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    fn run(&self, cwd: &Path, args: &[&str]) -> String {
        let o = Command::new(&self.git)
            .current_dir(cwd)
            .args([
                "-c",
                "user.name=Dev",
                "-c",
                "user.email=dev@example.com",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", cwd)
            .output()
            .expect("git");
        assert!(
            o.status.success(),
            "git {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn git(&self, args: &[&str]) -> String {
        self.run(&self.work, args)
    }

    fn write(&self, file: &str, text: &str) {
        let p = self.work.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Commits everything (with `extra` git arguments, e.g. signing) and pushes; the commit id.
    fn commit(&self, msg: &str, extra: &[&str]) -> String {
        self.git(&["add", "-A"]);
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["commit", "-q", "--allow-empty", "-m", msg]);
        self.git(&args);
        self.git(&["push", "-q", "origin", "main"]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// A file of a branch of the bare repo (what reviewers fetch).
    fn show(&self, rev_path: &str) -> String {
        self.run(&self.bare, &["show", rev_path])
    }
}

fn connect(h: &H, repo: &Repo, extra: Value) {
    let mut body = json!({
        "repo": repo.url(), "branch": "main", "path": "fleets",
        "pollSecs": 3600, "webhookSecret": SECRET,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, t) = h.admin("POST", "/api/v1/admin/gitops", Some(body));
    assert_eq!(s, 200, "{t}");
}

fn cams(release: &str, digest: Option<&str>) -> String {
    let pin = digest
        .map(|d| format!("    digest: {d}\n"))
        .unwrap_or_default();
    format!("name: cams\nselector: {{site: lab}}\napps:\n  app:\n    release: {release}\n{pin}")
}

#[test]
fn commits_apply_whole_or_not_at_all_and_the_status_goes_back_to_the_repo() {
    let Some(h) = H::new() else { return };
    let d1 = h.publish("1.0.0");
    h.publish("1.1.0");
    let dev = h.enroll(&[("site", "lab")]);
    let repo = Repo::new(&h.git, &h.dir);
    repo.write("fleets/cams.yaml", &cams("app@1.0.0", Some(&d1)));
    repo.write("fleets/README.md", "fleets of the lab\n");
    let good = repo.commit("cams on 1.0.0", &[]);
    connect(&h, &repo, json!({}));

    let st = h.judged(&good);
    assert_eq!(st["lastApplied"], good, "{st}");
    assert!(st["lastError"].is_null(), "{st}");
    assert_eq!(
        st["changes"][0], "creates fleet cams (fleets/cams.yaml)",
        "{st}"
    );
    assert_eq!(h.fleet("cams").expect("fleet")["origin"], "gitops");
    let (rel, version) = wait_for("the fleet assigns the device", LONG, || {
        h.assigned(&dev.device_id)
    });
    assert_eq!(rel, "app@1.0.0");
    assert_eq!(st["fleets"][0]["name"], "cams", "{st}");

    // Judged again (re-registering the source): nothing changes.
    connect(&h, &repo, json!({}));
    let again = wait_for("the same commit judged again", LONG, || {
        let st = h.gitops();
        (st["lastFetchMs"].is_i64() && st["lastApplied"] == good && st["evaluated"] == good)
            .then_some(st)
    });
    assert_eq!(again["changes"], Value::Null, "nothing changed: {again}");
    assert_eq!(
        h.assigned(&dev.device_id),
        Some((rel.clone(), version)),
        "no new assignment"
    );

    // Bad commits change nothing and say where and what.
    let before = h.fleet("cams").expect("fleet")["spec"].clone();
    for (file, text, want) in [
        (
            "fleets/bad.yaml",
            "name: other\napps: [oops\n".to_string(),
            "not valid YAML",
        ),
        (
            "fleets/cams.yaml",
            cams("app@9.9.9", None),
            "app@9.9.9 is not published",
        ),
        (
            "fleets/cams.yaml",
            cams("app@1.1.0", Some(&d1)),
            "pinned to digest",
        ),
    ] {
        repo.git(&["reset", "-q", "--hard", &good]);
        repo.write(file, &text);
        let bad = repo.commit("bad", &[]);
        h.poke();
        let st = h.judged(&bad);
        let e = &st["lastError"];
        assert_eq!(e["commit"], bad, "{st}");
        assert_eq!(e["file"], file, "{st}");
        assert!(
            e["message"].as_str().unwrap().contains(want),
            "{want}: {st}"
        );
        assert_eq!(st["lastApplied"], good, "the good commit stays in force");
        assert_eq!(h.fleet("cams").expect("fleet")["spec"], before);
        assert!(h.fleet("other").is_none());
        // The refusal is on the status branch, for reviewers.
        let doc: Value = serde_json::from_str(&wait_for("status pushed", LONG, || {
            let st = h.gitops();
            (st["pushed"] == bad).then(|| repo.show(&format!("edgecd-status:commits/{bad}.json")))
        }))
        .unwrap();
        assert_eq!(doc["result"], "refused", "{doc}");
        assert_eq!(doc["file"], file, "{doc}");
        assert!(doc["error"].as_str().unwrap().contains(want), "{doc}");
        assert_eq!(doc["inForce"], good, "{doc}");
        repo.git(&[
            "push",
            "-q",
            "-f",
            "origin",
            &format!("{good}:refs/heads/main"),
        ]);
    }
    let latest: Value = serde_json::from_str(&repo.show("edgecd-status:status.json")).unwrap();
    assert_eq!(latest["result"], "refused");
    let first: Value =
        serde_json::from_str(&repo.show(&format!("edgecd-status:commits/{good}.json"))).unwrap();
    assert_eq!(first["result"], "applied", "{first}");

    // Fleets from git refuse CLI changes, naming the repo and branch.
    let url = repo.url();
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/admin/fleets",
            Some(json!({"name": "cams", "apps": {"app": {"release": "1.1.0"}}})),
        ),
        ("DELETE", "/api/v1/admin/fleets/cams", None),
        (
            "POST",
            "/api/v1/admin/deployments",
            Some(json!({"app": "app", "version": "1.1.0", "selector": {"site": "lab"}})),
        ),
        (
            "POST",
            "/api/v1/admin/rollouts",
            Some(json!({
                "spec": {"release": "app@1.1.0", "steps": [{"canary": {"percent": 100}}]},
                "fleet": "cams",
            })),
        ),
        // A bare selector over the fleet's devices is no way around it.
        (
            "POST",
            "/api/v1/admin/rollouts",
            Some(json!({
                "spec": {
                    "release": "app@1.1.0",
                    "selector": {"site": "lab"},
                    "steps": [{"canary": {"percent": 100}}],
                },
            })),
        ),
    ] {
        let (s, t) = h.admin(method, path, body);
        assert_eq!(s, 409, "{method} {path}: {t}");
        assert!(
            t.contains(&url) && t.contains("branch main") && t.contains("change the repo"),
            "{t}"
        );
    }
    assert_eq!(h.assigned(&dev.device_id).map(|a| a.0), Some(rel));

    // A fleet removed from the repo is deleted.
    repo.git(&["rm", "-q", "fleets/cams.yaml"]);
    let removed = repo.commit("no more cams", &[]);
    h.poke();
    let st = h.judged(&removed);
    assert_eq!(st["lastApplied"], removed, "{st}");
    assert!(h.fleet("cams").is_none());
    assert_eq!(
        st["changes"][0], "deletes fleet cams (no longer in the repo)",
        "{st}"
    );

    // Disconnected: fleets are the CLI's again.
    repo.write("fleets/cams.yaml", &cams("1.0.0", None));
    let back = repo.commit("cams again", &[]);
    h.poke();
    h.judged(&back);
    let (s, t) = h.admin("DELETE", "/api/v1/admin/gitops", None);
    assert_eq!(s, 200, "{t}");
    assert_eq!(h.fleet("cams").expect("fleet")["origin"], "apply");
    let (s, t) = h.admin(
        "POST",
        "/api/v1/admin/fleets",
        Some(json!({"name": "cams", "selector": {"site": "lab"}, "apps": {"app": {"release": "1.1.0"}}})),
    );
    assert_eq!(s, 200, "{t}");
}

#[test]
fn the_webhook_needs_the_right_signature_and_only_wakes_a_fetch() {
    let Some(h) = H::new() else { return };
    h.publish("1.0.0");
    let repo = Repo::new(&h.git, &h.dir);
    repo.write("fleets/cams.yaml", &cams("1.0.0", None));
    let first = repo.commit("first", &[]);
    connect(&h, &repo, json!({}));
    h.judged(&first);
    repo.write(
        "fleets/cams.yaml",
        &cams("1.0.0", None).replace("lab", "shop"),
    );
    let second = repo.commit("second", &[]);

    let good = webhook_signature(SECRET.as_bytes(), br#"{"ref":"refs/heads/main"}"#);
    let wrong = webhook_signature(b"not-the-secret-at-all", br#"{"ref":"refs/heads/main"}"#);
    for sig in [
        None,
        Some(wrong.as_str()),
        Some("sha256=00"),
        Some(good.trim_start_matches("sha256=")),
    ] {
        let (s, t) = h.webhook(sig);
        assert_eq!(s, 401, "{sig:?}: {t}");
    }
    let st = h.gitops();
    assert!(
        st["lastWebhookMs"].is_null(),
        "a refused webhook wakes nothing: {st}"
    );
    assert_eq!(st["lastSeen"], first, "{st}");

    let (s, t) = h.webhook(Some(&good));
    assert_eq!(s, 202, "{t}");
    let st = h.judged(&second);
    assert!(st["lastWebhookMs"].is_i64(), "{st}");
    assert_eq!(h.fleet("cams").unwrap()["spec"]["selector"]["site"], "shop");

    // The source's settings are checked before they are stored.
    for (extra, want) in [
        (json!({"branch": "bad..name"}), "not a valid branch name"),
        (
            json!({"repo": "https://example.com/x.git"}),
            "file:// and git://",
        ),
        (json!({"trustedSigners": "alice AAAA"}), "--trusted-signers"),
        (json!({"webhookSecret": "short"}), "at least 16"),
        (json!({"pollSecs": 0}), "--poll-secs"),
    ] {
        let mut body = json!({"repo": repo.url(), "branch": "main", "path": "fleets"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, t) = h.admin("POST", "/api/v1/admin/gitops", Some(body));
        assert_eq!(s, 422, "{extra}: {t}");
        assert!(t.contains(want), "{want}: {t}");
    }
    assert_eq!(h.gitops()["repo"], repo.url());
}

/// A revert while the fleet's rollout runs aborts it: the cohort goes back to the baseline.
#[test]
fn a_revert_during_the_fleets_rollout_aborts_it() {
    let Some(h) = H::new() else { return };
    h.publish("1.0.0");
    h.publish("1.1.0");
    let devs: Vec<EnrollResponse> = (0..2).map(|_| h.enroll(&[("site", "lab")])).collect();
    let repo = Repo::new(&h.git, &h.dir);
    let policy = "    rollout:\n      steps: [{canary: {devices: 1}}, {approve: {}}, {canary: {percent: 100}}]\n";
    repo.write("fleets/cams.yaml", &cams("1.0.0", None));
    let v1 = repo.commit("cams on 1.0.0", &[]);
    connect(&h, &repo, json!({}));
    h.judged(&v1);
    for d in &devs {
        wait_for("v1 assigned", LONG, || {
            (h.assigned(&d.device_id)?.0 == "app@1.0.0").then_some(())
        });
    }
    repo.write(
        "fleets/cams.yaml",
        &format!("{}{policy}", cams("1.1.0", None)),
    );
    let v2 = repo.commit("promote 1.1.0", &[]);
    h.poke();
    h.judged(&v2);
    let rollout = wait_for("the fleet's rollout starts", LONG, || {
        let st = h.fleet("cams")?;
        st["apps"][0]["rollout"].as_str().map(str::to_string)
    });
    let canary = wait_for("a canary gets 1.1.0", LONG, || {
        devs.iter()
            .find(|d| h.assigned(&d.device_id).is_some_and(|a| a.0 == "app@1.1.0"))
            .map(|d| d.device_id.clone())
    });
    repo.git(&["revert", "--no-edit", "HEAD"]);
    repo.git(&["push", "-q", "origin", "main"]);
    let revert = repo.git(&["rev-parse", "HEAD"]);
    h.poke();
    let st = h.judged(&revert);
    assert_eq!(st["lastApplied"], revert, "{st}");
    assert!(
        st["changes"]
            .to_string()
            .contains(&format!("rollout {rollout} of app@1.1.0 is aborted")),
        "{st}"
    );
    wait_for("the rollout is aborted", LONG, || {
        let (_, t) = h.admin("GET", &format!("/api/v1/admin/rollouts/{rollout}"), None);
        let v: Value = serde_json::from_str(&t).ok()?;
        (v["rollout"]["state"]["phase"] == "aborted").then_some(())
    });
    wait_for("the canary goes back to 1.0.0", LONG, || {
        (h.assigned(&canary)?.0 == "app@1.0.0").then_some(())
    });
    let f = h.fleet("cams").unwrap();
    assert!(f["apps"][0]["rollout"].is_null(), "{f}");
    assert_eq!(f["apps"][0]["current"], "app@1.0.0", "{f}");
}

/// With trusted signers, only commits signed by one of their keys are applied.
#[test]
fn only_commits_signed_by_a_trusted_key_are_applied() {
    let Some(h) = H::new() else { return };
    let Some(keygen) = edgecd_testkit::tool("ssh-keygen") else {
        return;
    };
    h.publish("1.0.0");
    let keys = h.dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for who in ["trusted", "other"] {
        let o = Command::new(&keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", who, "-f"])
            .arg(keys.join(who))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let pubkey = std::fs::read_to_string(keys.join("trusted.pub")).unwrap();
    let signers = format!(
        "# who may change the fleets\ndev@example.com {}",
        pubkey.trim()
    );
    let sign = |who: &str| {
        vec![
            "-c".to_string(),
            "gpg.format=ssh".to_string(),
            "-c".to_string(),
            format!("user.signingkey={}", keys.join(who).display()),
        ]
    };
    let repo = Repo::new(&h.git, &h.dir);
    repo.write("fleets/cams.yaml", &cams("1.0.0", None));
    let args = sign("trusted");
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.push("-c");
    a.push("commit.gpgsign=true");
    let signed = repo.commit("signed", &a);
    connect(&h, &repo, json!({"trustedSigners": signers}));
    let st = h.judged(&signed);
    assert_eq!(st["lastApplied"], signed, "{st}");
    assert!(
        st["signedBy"].as_str().unwrap().contains("dev@example.com"),
        "{st}"
    );
    assert_eq!(st["trustedSigners"], 1);

    let mut expected: BTreeMap<String, &str> = BTreeMap::new();
    repo.write("fleets/cams.yaml", &cams("1.0.0", None).replace("lab", "a"));
    expected.insert(repo.commit("unsigned", &[]), "not signed");
    let args = sign("other");
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.extend(["-c", "commit.gpgsign=true"]);
    repo.write("fleets/cams.yaml", &cams("1.0.0", None).replace("lab", "b"));
    expected.insert(
        repo.commit("signed by a stranger", &a),
        "not a trusted signer",
    );
    // Only the head counts: the last one is judged.
    let last = repo.git(&["rev-parse", "HEAD"]);
    h.poke();
    let st = h.judged(&last);
    assert!(
        st["lastError"]["message"]
            .as_str()
            .unwrap()
            .contains(expected[&last]),
        "{st}"
    );
    assert_eq!(st["lastApplied"], signed);
    assert_eq!(h.fleet("cams").unwrap()["spec"]["selector"]["site"], "lab");
    // An unsigned head.
    repo.write("fleets/cams.yaml", &cams("1.0.0", None).replace("lab", "c"));
    let unsigned = repo.commit("unsigned again", &[]);
    h.poke();
    let st = h.judged(&unsigned);
    assert!(
        st["lastError"]["message"]
            .as_str()
            .unwrap()
            .contains("not signed"),
        "{st}"
    );
    assert_eq!(h.fleet("cams").unwrap()["spec"]["selector"]["site"], "lab");
}

/// A status push that fails is shown in the status and does not keep the commit from applying.
#[test]
fn a_failed_status_push_is_reported_and_does_not_block_applying() {
    let Some(h) = H::new() else { return };
    h.publish("1.0.0");
    let repo = Repo::new(&h.git, &h.dir);
    // `edgecd-status/blocker` on the remote: the ref `edgecd-status` cannot be created there.
    repo.write("fleets/cams.yaml", &cams("1.0.0", None));
    let c1 = repo.commit("cams", &[]);
    repo.git(&[
        "push",
        "-q",
        "origin",
        "HEAD:refs/heads/edgecd-status/blocker",
    ]);
    connect(&h, &repo, json!({}));
    let st = h.judged(&c1);
    assert_eq!(st["lastApplied"], c1, "{st}");
    assert!(
        st["pushError"]
            .as_str()
            .is_some_and(|e| e.contains("edgecd-status")),
        "{st}"
    );
    assert!(st["pushed"].is_null(), "{st}");
    assert_eq!(h.fleet("cams").expect("applied")["origin"], "gitops");
    // Pushing works again once the repo lets it.
    repo.git(&["push", "-q", "origin", ":refs/heads/edgecd-status/blocker"]);
    repo.write(
        "fleets/cams.yaml",
        &cams("1.0.0", None).replace("lab", "shop"),
    );
    let c2 = repo.commit("shop", &[]);
    h.poke();
    let st = h.judged(&c2);
    assert_eq!(st["pushed"], c2, "{st}");
    assert!(st["pushError"].is_null(), "{st}");
    let doc: Value = serde_json::from_str(&repo.show("edgecd-status:status.json")).unwrap();
    assert_eq!(doc["commit"], c2, "{doc}");
}

/// A repo that cannot be fetched, or a branch it does not have, is shown as the last error;
/// nothing changes.
#[test]
fn fetch_failures_are_shown_in_the_status() {
    let Some(h) = H::new() else { return };
    let missing = h.dir.join("nowhere.git");
    let (s, t) = h.admin(
        "POST",
        "/api/v1/admin/gitops",
        Some(json!({"repo": format!("file://{}", missing.display()), "branch": "main", "path": "fleets"})),
    );
    assert_eq!(s, 200, "{t}");
    let st = wait_for("the fetch fails", LONG, || {
        let st = h.gitops();
        st["lastError"]["message"].as_str().map(|_| st.clone())
    });
    let e = st["lastError"]["message"].as_str().unwrap();
    assert!(e.contains("fetching") && e.contains("nowhere.git"), "{st}");
    assert!(
        st["lastError"]["commit"].is_null() && st["lastApplied"].is_null(),
        "{st}"
    );

    // The status is fenced by the controller lease: a deposed leader's pass (a stale holder
    // or epoch) writes nothing; the lease's holder does.
    let store = &h.srv.state.store;
    let row = h.srv.block_on(store.gitops()).unwrap().expect("source");
    let (holder, epoch, _) = h
        .srv
        .block_on(store.lease(edgecd_server::controller::LEASE))
        .unwrap()
        .expect("the controller holds the lease");
    for stale in [
        edgecd_server::controller::Fence {
            holder: "a-deposed-replica".into(),
            epoch,
        },
        edgecd_server::controller::Fence {
            holder: holder.clone(),
            epoch: epoch - 1,
        },
    ] {
        let saved = h
            .srv
            .block_on(store.set_gitops_status("{\"stale\": true}", Some(&stale)))
            .unwrap();
        assert!(!saved, "{stale:?}");
    }
    assert!(h.gitops()["lastError"]["message"].is_string(), "untouched");
    let current = edgecd_server::controller::Fence { holder, epoch };
    assert!(
        h.srv
            .block_on(store.set_gitops_status(&row.status, Some(&current)))
            .unwrap()
    );

    let repo = Repo::new(&h.git, &h.dir);
    repo.write("fleets/cams.yaml", &cams("1.0.0", None));
    repo.commit("cams", &[]);
    let (s, t) = h.admin(
        "POST",
        "/api/v1/admin/gitops",
        Some(json!({"repo": repo.url(), "branch": "prod", "path": "fleets"})),
    );
    assert_eq!(s, 200, "{t}");
    wait_for("the missing branch is reported", LONG, || {
        let st = h.gitops();
        st["lastError"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("branch prod not found"))
            .then_some(())
    });
    assert!(h.fleet("cams").is_none());
}
