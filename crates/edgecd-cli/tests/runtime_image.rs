//! Runtime images end to end with real components: `edgecd image build` (static edgecd-infer
//! for amd64 and arm64, one multi-arch index) pushed to a local registry (Debian's
//! docker-registry), checked with `skopeo inspect` and run under podman; and a real
//! `edgecd-agent` in podman mode against an in-process server: release 1 (image + model)
//! installs and serves, release 2 whose runtime image fails the golden vectors is rolled back
//! to image 1 + model 1 together, and a release whose image signature or digest is bad is
//! refused before anything runs. Needs podman, runc, skopeo, docker-registry
//! (`scripts/setup/podman.sh`) and a C compiler with static libc; skips without them unless
//! `EDGECD_REQUIRE_EXTERNAL=1`.
//!
//! This machine's podman only works as `podman --runtime runc --storage-driver vfs
//! --cgroup-manager cgroupfs run --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 …`: the
//! tests pass those through the agent's `--podman-global-args`/`--podman-run-args`, with a
//! podman storage of their own (`--root`/`--runroot` in a temporary directory).
#![cfg(target_arch = "x86_64")]
mod common;

use common::sibling;
use edgecd_api::protocol::{DeviceInfo, OutcomeKind, Phase};
use edgecd_testkit::services::Registry;
use edgecd_testkit::{free_port, tool, wait_for, wait_for_or};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const APP: &str = "receipt-classifier";
/// The second app on the device.
const DET: &str = "receipt-detector";
const PODMAN_GLOBAL: &str = "--runtime runc --storage-driver vfs --cgroup-manager cgroupfs";
const PODMAN_RUN: &str = "--ulimit nofile=1024:1024 --ulimit nproc=1024:1024";
const T: Duration = Duration::from_secs(180);

/// The tools these tests need, or `None` (skip) when one is missing outside CI.
fn tools() -> Option<()> {
    for t in ["podman", "runc", "skopeo", "cc"] {
        tool(t)?;
    }
    Some(())
}

/// podman with this machine's global arguments and a storage of the test's own.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("podman dir"),
        }
    }
    fn global(&self) -> String {
        format!(
            "{PODMAN_GLOBAL} --root {} --runroot {}",
            self.dir.path().join("root").display(),
            self.dir.path().join("run").display()
        )
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.args(self.global().split_whitespace())
            .stdin(Stdio::null());
        c
    }
    fn out(&self, args: &[&str]) -> Result<String, String> {
        let o = self.cmd().args(args).output().expect("podman");
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
        }
    }
    fn containers(&self) -> Vec<String> {
        self.out(&["ps", "-a", "--format", "{{.ID}}"])
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.out(&["rm", "-a", "-f", "-t", "0"]);
        let _ = self.out(&["system", "reset", "-f"]);
    }
}

/// `edgecd image build` of `binaries`, pushed as REGISTRY/NAME:TAG; the pinned reference.
fn build_image(dir: &Path, reg: &Registry, name: &str, binaries: &[(&str, &Path)]) -> String {
    let mut args: Vec<String> = vec!["image".into(), "build".into()];
    for (arch, p) in binaries {
        args.push("--binary".into());
        args.push(format!("{arch}={}", p.display()));
    }
    args.extend([
        "--push".into(),
        format!("{}/{name}:test", reg.addr()),
        "--insecure-registry".into(),
        "--json".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let v = common::json(dir, &args);
    let image = v["image"].as_str().expect("pinned image").to_string();
    assert_eq!(
        image,
        format!(
            "{}/{name}@{}",
            reg.addr(),
            v["digest"].as_str().expect("digest")
        )
    );
    image
}

fn skopeo_inspect(args: &[&str]) -> serde_json::Value {
    let o = Command::new("skopeo")
        .arg("inspect")
        .arg("--tls-verify=false")
        .args(args)
        .output()
        .expect("skopeo");
    assert!(
        o.status.success(),
        "skopeo inspect {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("skopeo JSON")
}

#[test]
fn image_build_pushes_a_multi_arch_static_non_root_index_that_runs_under_podman() {
    if tools().is_none() || tool("aarch64-linux-gnu-gcc").is_none() {
        return;
    }
    let Some(reg) = Registry::try_start() else {
        return;
    };
    let amd64 = edgecd_testkit::static_infer("x86_64-unknown-linux-gnu");
    let arm64 = edgecd_testkit::static_infer("aarch64-unknown-linux-gnu");
    let tmp = tempfile::tempdir().expect("tmp");
    let image = build_image(
        tmp.path(),
        &reg,
        "edgecd-infer",
        &[("amd64", &amd64), ("arm64", &arm64)],
    );
    let digest = image.rsplit_once('@').expect("digest").1;
    let tagged = format!("docker://{}/edgecd-infer:test", reg.addr());
    // The index holds both platforms; its digest is the one printed.
    let raw = skopeo_inspect(&["--raw", &tagged]);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let mut archs: Vec<&str> = raw["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().expect("arch"))
        .collect();
    archs.sort_unstable();
    assert_eq!(archs, ["amd64", "arm64"]);
    for arch in ["amd64", "arm64"] {
        let by_digest = format!("docker://{image}");
        let v = skopeo_inspect(&[
            "--override-arch",
            arch,
            "--override-os",
            "linux",
            &by_digest,
        ]);
        assert_eq!(v["Architecture"], arch, "{v}");
        assert_eq!(v["Digest"].as_str(), Some(digest), "{v}");
        assert_eq!(
            v["Layers"].as_array().map(Vec::len),
            Some(1),
            "one layer: {v}"
        );
        let cfg = skopeo_inspect(&["--config", "--override-arch", arch, &by_digest]);
        assert_eq!(cfg["config"]["User"], "65532:65532", "non-root: {cfg}");
    }

    // Run it under podman, pulled by digest: the binary answers, as the non-root user, and
    // there is no shell in the image.
    let podman = Podman::new();
    podman
        .out(&["pull", "-q", "--tls-verify=false", &image])
        .expect("pull by digest");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend(PODMAN_RUN.split_whitespace());
        args.extend_from_slice(extra);
        podman.out(&args)
    };
    let version = run(&[&image, "--version"]).expect("runs");
    assert!(version.starts_with("edgecd-infer "), "{version}");
    let err = run(&["--entrypoint", "/bin/sh", &image, "-c", "true"]).expect_err("no shell");
    assert!(
        err.contains("no such file") || err.contains("not found"),
        "{err}"
    );
    let user = podman
        .out(&["image", "inspect", "--format", "{{.Config.User}}", &image])
        .expect("inspect");
    assert_eq!(user, "65532:65532");

    // A dynamically linked binary is refused with what to do.
    let err = common::fails(
        tmp.path(),
        &[
            "image",
            "build",
            "--binary",
            &format!("amd64={}", sibling("edgecd-agent").display()),
        ],
    );
    assert!(
        err.contains("dynamically linked") && err.contains("crt-static"),
        "{err}"
    );
}

/// A static C "runtime" that answers `/readyz` (ready, serving `model`) but whose inference
/// answers are `answer`: a runtime image that passes readiness and fails the golden vectors.
fn wrong_answers_runtime(dir: &Path, model: &str, answer: &str) -> PathBuf {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let ready = format!("{{\"ready\":true,\"model\":\"{model}\"}}");
    let src = format!(
        r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>
static const char *READY = "{ready}";
static const char *ANSWER = "{answer}";
int main(void) {{
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {{0}};
  a.sin_family = AF_INET; a.sin_port = htons(9500); a.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) {{ perror("listen"); return 1; }}
  for (;;) {{
    int c = accept(s, 0, 0);
    if (c < 0) continue;
    static char buf[1 << 20];
    size_t n = 0; char *body = 0;
    while (n < sizeof buf - 1) {{
      ssize_t r = read(c, buf + n, sizeof buf - 1 - n);
      if (r <= 0) break;
      n += r; buf[n] = 0;
      if (!body && (body = strstr(buf, "\r\n\r\n"))) body += 4;
      if (body) {{
        char *cl = strstr(buf, "Content-Length:");
        if (!cl) cl = strstr(buf, "content-length:");
        size_t want = cl ? strtoul(cl + 15, 0, 10) : 0;
        if ((size_t)(buf + n - body) >= want) break;
      }}
    }}
    const char *out = strncmp(buf, "POST", 4) == 0 ? ANSWER : READY;
    char head[256];
    int h = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", strlen(out));
    write(c, head, h); write(c, out, strlen(out));
    close(c);
  }}
}}
"#,
        ready = esc(&ready),
        answer = esc(answer),
    );
    let c = dir.join("wrong-runtime.c");
    std::fs::write(&c, src).expect("write C");
    let bin = dir.join("wrong-runtime");
    let st = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&c)
        .status()
        .expect("cc");
    assert!(st.success(), "compiling the wrong-answers runtime");
    bin
}

struct Lab {
    dir: PathBuf,
    srv: edgecd_server::EmbeddedServer,
}

impl Lab {
    fn url(&self) -> String {
        format!("http://{}", self.srv.addr)
    }
    fn admin(&self) -> edgecd_agent::admin::AdminClient {
        edgecd_agent::admin::AdminClient::new(&self.url(), &self.srv.admin_token, None)
            .expect("client")
    }
    fn cli(&self, args: &[&str]) -> String {
        let o = common::edgecd()
            .current_dir(&self.dir)
            .args(args)
            .env("EDGECD_SERVER", self.url())
            .env("EDGECD_TOKEN", &self.srv.admin_token)
            .env_remove("EDGECD_CA_CERT")
            .output()
            .expect("run edgecd");
        assert!(
            o.status.success(),
            "edgecd {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).expect("utf8")
    }
    /// Bundles `model` (self-test vectors recorded) and signs it; returns the bundle's path.
    fn bundle(&self, version: &str, model: &[u8]) -> PathBuf {
        self.bundle_of(APP, version, model)
    }
    fn bundle_of(&self, app: &str, version: &str, model: &[u8]) -> PathBuf {
        let src = self.dir.join(format!("src-{app}-{version}"));
        std::fs::create_dir_all(&src).expect("src");
        let m = src.join(format!("{app}.onnx"));
        std::fs::write(&m, model).expect("model");
        let out = self.dir.join(format!("dist-{app}-{version}"));
        let (m, out_s) = (m.to_str().expect("utf8"), out.to_str().expect("utf8"));
        self.cli(&[
            "bundle",
            "build",
            "--model",
            m,
            "--name",
            app,
            "--version",
            version,
            "--board",
            "rpi5",
            "--runtime",
            "edgecd-infer@0.1.0",
            "--min-ram-mb",
            "512",
            "--selftest",
            "auto",
            "--out",
            out_s,
        ]);
        let bundle = out.join(format!("{app}-{version}.edgecd"));
        self.cli(&[
            "bundle",
            "sign",
            bundle.to_str().expect("utf8"),
            "--key",
            "ci.key",
        ]);
        bundle
    }
    /// Creates the release of `bundle` pinning `image` with an image signature; returns the
    /// release manifest's path (not published yet).
    fn release(&self, bundle: &Path, image: &str) -> PathBuf {
        let b = bundle.to_str().expect("utf8");
        let manifest = bundle.with_extension("release.json");
        self.cli(&[
            "release",
            "create",
            "--bundle",
            b,
            "--image",
            image,
            "--sign-image",
            "--key",
            "ci.key",
            "--out",
            manifest.to_str().expect("utf8"),
        ]);
        manifest
    }
    fn publish(&self, version: &str) {
        self.publish_of(APP, version)
    }
    fn publish_of(&self, app: &str, version: &str) {
        let bundle = self
            .dir
            .join(format!("dist-{app}-{version}/{app}-{version}.edgecd"));
        self.cli(&["release", "publish", bundle.to_str().expect("utf8")]);
    }
    fn deploy(&self, version: &str) {
        self.deploy_of(APP, version)
    }
    fn deploy_of(&self, app: &str, version: &str) {
        self.admin()
            .deploy(&edgecd_api::protocol::DeployRequest {
                app: app.into(),
                version: version.into(),
                selector: Default::default(),
            })
            .expect("deploy");
    }
    fn device(&self) -> Option<DeviceInfo> {
        self.admin().list_devices().ok()?.into_iter().next()
    }
}

/// Re-signs `manifest` with `key` after `edit` (a release whose manifest signature is good
/// but whose content is what a test needs).
fn edit_release(
    manifest: &Path,
    key: &edgecd_sign::SigningKey,
    edit: impl FnOnce(&mut edgecd_bundle::release::ReleaseManifest),
) {
    let mut m = edgecd_bundle::release::ReleaseManifest::from_json(
        &std::fs::read(manifest).expect("manifest"),
    )
    .expect("parse");
    edit(&mut m);
    let bytes = m.to_json();
    std::fs::write(manifest, &bytes).expect("write");
    std::fs::write(
        edgecd_bundle::signature_path(manifest),
        edgecd_sign::sign_artifact(key, &bytes).to_json_pretty(),
    )
    .expect("write sig");
}

fn infer(port: u16, body: &str) -> serde_json::Value {
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let mut r = http
        .post(&format!("http://127.0.0.1:{port}/v1/infer"))
        .header("content-type", "application/json")
        .send(body)
        .expect("inference request");
    assert_eq!(r.status(), 200);
    serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("JSON")
}

#[test]
fn runtime_image_and_model_install_roll_back_and_are_refused_together() {
    if tools().is_none() {
        return;
    }
    let Some(reg) = Registry::try_start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path().to_path_buf();
    let amd64 = edgecd_testkit::static_infer("x86_64-unknown-linux-gnu");
    let mut cfg = edgecd_server::Config::new(d.join("server"));
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    cfg.checkin_interval_secs = 1;
    let lab = Lab {
        dir: d.clone(),
        srv: edgecd_server::EmbeddedServer::start(cfg).expect("server"),
    };
    lab.cli(&["keygen", "--out", "ci"]);
    lab.admin()
        .trust_key(
            &std::fs::read_to_string(d.join("ci.pub")).expect("pub"),
            Some("ci"),
        )
        .expect("trust");
    let ci = edgecd_sign::SigningKey::load(&d.join("ci.key"), None).expect("ci key");

    // Image 1: the real runtime. Release 1 = image 1 + model 1.
    let image1 = build_image(&d, &reg, "edgecd-infer", &[("amd64", &amd64)]);
    let b1 = lab.bundle("1.0.0", &edgecd_cli::demo_model::classifier_onnx(1));
    let m1 = lab.release(&b1, &image1);
    lab.publish("1.0.0");
    // An outside verifier: openssl checks the image signature over the index bytes the
    // registry serves (their SHA-256 is the pinned digest).
    if let Some(openssl) = tool("openssl") {
        let raw = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{image1}"))
            .output()
            .expect("skopeo");
        assert!(raw.status.success());
        let hex: String = <sha2::Sha256 as sha2::Digest>::digest(&raw.stdout)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(image1.ends_with(&hex), "{image1} vs sha256 {hex}");
        let m = edgecd_bundle::release::ReleaseManifest::from_json(
            &std::fs::read(&m1).expect("manifest"),
        )
        .expect("parse");
        let der = m
            .image_signature
            .expect("image signature")
            .signature_der()
            .expect("der");
        std::fs::write(d.join("index.json"), &raw.stdout).expect("index");
        std::fs::write(d.join("image.sig"), der).expect("sig");
        let o = Command::new(openssl)
            .args(["dgst", "-sha256", "-verify"])
            .arg(d.join("ci.pub"))
            .arg("-signature")
            .arg(d.join("image.sig"))
            .arg(d.join("index.json"))
            .output()
            .expect("openssl");
        assert!(
            o.status.success(),
            "openssl: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Release 2's vectors, to make image 2 a runtime that is ready but answers wrong.
    let b2 = lab.bundle("2.0.0", &edgecd_cli::demo_model::classifier_onnx(2));
    let profile = edgecd_bundle::read_bundle(&b2, &mut |_| {})
        .expect("bundle")
        .profile;
    let case = &profile.selftest.as_ref().expect("vectors").cases[0];
    let wrong: Vec<_> = case
        .outputs
        .iter()
        .map(|o| {
            let mut o = o.clone();
            o.data.iter_mut().for_each(|x| *x += 0.5);
            o
        })
        .collect();
    let wrong = serde_json::json!({ "outputs": wrong }).to_string();
    let fake = wrong_answers_runtime(&d, &case.model, &wrong);
    let image2 = build_image(&d, &reg, "wrong-runtime", &[("amd64", &fake)]);
    // Release 2 = image 2 + model 2 (image signed with the release key).
    lab.release(&b2, &image2);
    lab.publish("2.0.0");
    // Release 3: image 1 with an image signature by a key the device does not trust (the
    // release manifest itself is properly signed).
    let b3 = lab.bundle("3.0.0", &edgecd_cli::demo_model::classifier_onnx(3));
    let m3 = lab.release(&b3, &image1);
    let stranger = edgecd_sign::SigningKey::generate();
    edit_release(&m3, &ci, |m| {
        m.sign_image(&stranger).expect("sign");
    });
    lab.publish("3.0.0");
    // Release 4: a digest the registry does not have (signed: only the digest is wrong).
    let b4 = lab.bundle("4.0.0", &edgecd_cli::demo_model::classifier_onnx(4));
    let m4 = lab.release(&b4, &image1);
    let missing = format!("{}/edgecd-infer@sha256:{}", reg.addr(), "e".repeat(64));
    edit_release(&m4, &ci, |m| {
        m.image = Some(missing.clone());
        m.sign_image(&ci).expect("sign");
    });
    lab.publish("4.0.0");
    // Release 5: model 5 in image 3 (the real runtime again, under another digest: one byte
    // appended to the binary, which the loader ignores).
    let infer3 = d.join("edgecd-infer-3");
    let mut bytes = std::fs::read(&amd64).expect("binary");
    bytes.push(0);
    std::fs::write(&infer3, bytes).expect("copy");
    let image3 = build_image(&d, &reg, "edgecd-infer-3", &[("amd64", &infer3)]);
    let b5 = lab.bundle("5.0.0", &edgecd_cli::demo_model::classifier_onnx(5));
    lab.release(&b5, &image3);
    lab.publish("5.0.0");
    // The second app: its release 1 in image 1, its release 2 in image 2 (a runtime that
    // says it serves the classifier's model, not the detector's).
    let det1 = lab.bundle_of(DET, "1.0.0", &edgecd_cli::demo_model::classifier_onnx(6));
    lab.release(&det1, &image1);
    lab.publish_of(DET, "1.0.0");
    let det2 = lab.bundle_of(DET, "2.0.0", &edgecd_cli::demo_model::classifier_onnx(7));
    lab.release(&det2, &image2);
    lab.publish_of(DET, "2.0.0");

    // The device: a real agent in podman mode.
    let podman = Podman::new();
    let port = free_port();
    let token = lab
        .admin()
        .create_token(&edgecd_api::protocol::CreateTokenRequest {
            labels: Default::default(),
            expires_in_secs: Some(600),
            max_uses: Some(1),
        })
        .expect("token")
        .token;
    let log = d.join("agent.log");
    let mut agent = Command::new(sibling("edgecd-agent"))
        .args(["--server", &lab.url(), "--data-dir"])
        .arg(d.join("agent"))
        .args(["--enroll-token", &token, "--board", "rpi5"])
        .args(["--runtime", "edgecd-infer@0.1.0"])
        .args([
            "--checkin-interval-ms",
            "300",
            "--health-timeout-secs",
            "90",
        ])
        .arg("--podman")
        .arg(format!("--podman-global-args={}", podman.global()))
        .arg(format!("--podman-run-args={PODMAN_RUN}"))
        .args(["--registry-insecure", "--runtime-listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--runtime-cpus", "1", "--runtime-max-restarts", "2"])
        .env_remove("EDGECD_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("agent");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut agent);
    let log_tail = || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().rev().take(15).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    wait_for("the agent to enroll", Duration::from_secs(30), || {
        lab.device()
    });
    let lab = &lab;
    let running = |version: &'static str| {
        move || {
            let d = lab.device()?;
            let s = d.status?;
            let r = s.running?;
            (s.phase == Phase::Committed && r.version == version).then_some(r)
        }
    };
    let inspect_in = |container: &str, what: &str| {
        podman
            .out(&[
                "inspect",
                "--type",
                "container",
                "--format",
                what,
                container,
            ])
            .map_err(|e| format!("{e}\nagent log:\n{}", log_tail()))
    };
    let inspect = |what: &str| inspect_in("edgecd-infer", what);
    let body = serde_json::json!({ "inputs": case.inputs }).to_string();

    // Release 1 installs: the device reports image 1 and model 1, and the container serves.
    lab.deploy("1.0.0");
    let r = edgecd_testkit::wait_for("release 1 to run", T, running("1.0.0"));
    assert_eq!(r.image.as_deref(), Some(image1.as_str()), "{}", log_tail());
    let first = inspect("{{.Id}} {{index .Config.Labels \"edgecd.image\"}}").expect("container");
    assert!(first.ends_with(&image1), "{first}");
    let mounts = inspect("{{range .Mounts}}{{.Destination}} {{.RW}}{{end}}").expect("mounts");
    assert_eq!(mounts, "/model false", "the slot is mounted read-only");
    assert_eq!(inspect("{{.Config.User}}").expect("user"), "65532:65532");
    let memory = inspect("{{.HostConfig.Memory}}").expect("memory");
    assert_eq!(
        memory,
        (512u64 << 20).to_string(),
        "minRamMb is the memory limit"
    );
    let answer = infer(port, &body);
    assert_eq!(answer["release"], format!("{APP}@1.0.0"), "{answer}");
    assert!(!answer["outputs"].as_array().expect("outputs").is_empty());

    // A second app on the same device runs in a runtime container of its own
    // (edgecd-infer-DET), published on a port the agent chose above --runtime-listen and
    // kept in apps/DET/runtime-port; the first app's container is not touched.
    let det_body = {
        let p = edgecd_bundle::read_bundle(&det1, &mut |_| {})
            .expect("bundle")
            .profile;
        serde_json::json!({ "inputs": p.selftest.expect("vectors").cases[0].inputs }).to_string()
    };
    lab.deploy_of(DET, "1.0.0");
    let det_running = |version: &'static str| {
        move || {
            let s = lab.device()?.status?;
            let a = s.app_state(DET)?;
            (a.phase == Phase::Committed && a.running.as_ref()?.version == version)
                .then_some(a.running?)
        }
    };
    let r = wait_for_or("the second app to run", T, det_running("1.0.0"), || {
        format!("{:?}\nagent log:\n{}", lab.device(), log_tail())
    });
    assert_eq!(r.image.as_deref(), Some(image1.as_str()));
    let det_port: u16 = std::fs::read_to_string(d.join(format!("agent/apps/{DET}/runtime-port")))
        .expect("the second app's runtime port")
        .trim()
        .parse()
        .expect("port");
    assert_ne!(det_port, port);
    let det_container = format!("edgecd-infer-{DET}");
    let inspect_det = |what: &str| inspect_in(&det_container, what);
    let det_first =
        inspect_det("{{.Id}} {{index .Config.Labels \"edgecd.release\"}}").expect("container");
    assert!(det_first.ends_with(&format!("{DET}@1.0.0")), "{det_first}");
    assert_eq!(
        infer(det_port, &det_body)["release"],
        format!("{DET}@1.0.0")
    );
    assert_eq!(infer(port, &body)["release"], format!("{APP}@1.0.0"));
    assert_eq!(
        inspect("{{.Id}} {{index .Config.Labels \"edgecd.image\"}}").expect("container"),
        first,
        "the first app's container kept running"
    );

    // Release 2's runtime image is ready but answers wrong: rolled back, image and model.
    lab.deploy("2.0.0");
    let o = wait_for("release 2 to be rolled back", T, || {
        let o = lab.device()?.status?.last_outcome?;
        (o.kind == OutcomeKind::RolledBack).then_some(o)
    });
    assert_eq!(o.release.as_deref(), Some(&*format!("{APP}@2.0.0")));
    assert!(
        o.reason.contains("health check failed") && o.reason.contains("self-test case"),
        "{}",
        o.reason
    );
    let r = wait_for("release 1 again", T, running("1.0.0"));
    assert_eq!(r.image.as_deref(), Some(image1.as_str()));
    let back = inspect("{{.Id}} {{index .Config.Labels \"edgecd.image\"}}").expect("container");
    assert!(back.ends_with(&image1), "image 1 runs again: {back}");
    assert_ne!(back, first, "a new container of image 1 replaced image 2's");
    assert_eq!(infer(port, &body)["release"], format!("{APP}@1.0.0"));
    assert_eq!(
        inspect_det("{{.Id}} {{index .Config.Labels \"edgecd.release\"}}").expect("container"),
        det_first,
        "the first app's rollback did not touch the second app's container"
    );
    assert_eq!(
        infer(det_port, &det_body)["release"],
        format!("{DET}@1.0.0")
    );

    // The second app's release 2 fails its health check: that app alone goes back.
    lab.deploy_of(DET, "2.0.0");
    let o = wait_for_or(
        "the second app's release 2 to be rolled back",
        T,
        || {
            let o = lab.device()?.status?.app_state(DET)?.last_outcome?;
            (o.kind == OutcomeKind::RolledBack).then_some(o)
        },
        || format!("{:?}\nagent log:\n{}", lab.device(), log_tail()),
    );
    assert_eq!(o.release.as_deref(), Some(&*format!("{DET}@2.0.0")));
    assert!(
        o.reason.contains("does not serve this release's model"),
        "{}",
        o.reason
    );
    let r = wait_for("the second app's release 1 again", T, det_running("1.0.0"));
    assert_eq!(r.image.as_deref(), Some(image1.as_str()));
    let det_back =
        inspect_det("{{.Id}} {{index .Config.Labels \"edgecd.release\"}}").expect("container");
    assert!(det_back.ends_with(&format!("{DET}@1.0.0")), "{det_back}");
    assert_eq!(
        infer(det_port, &det_body)["release"],
        format!("{DET}@1.0.0")
    );
    assert_eq!(
        inspect("{{.Id}} {{index .Config.Labels \"edgecd.image\"}}").expect("container"),
        back,
        "the second app's rollback did not touch the first app's container"
    );
    assert_eq!(
        podman.containers().len(),
        2,
        "one runtime container per app"
    );

    // A bad image signature, then a digest the registry does not have: refused before
    // anything runs (the same container keeps serving release 1).
    for (version, needle) in [
        ("3.0.0", "image signature"),
        ("4.0.0", "cannot be pulled by its pinned digest"),
    ] {
        lab.deploy(version);
        let o = wait_for(&format!("release {version} to be refused"), T, || {
            let o = lab.device()?.status?.last_outcome?;
            (o.kind == OutcomeKind::Refused
                && o.release.as_deref() == Some(&*format!("{APP}@{version}")))
            .then_some(o)
        });
        assert!(o.reason.contains(needle), "{version}: {}", o.reason);
        let now = inspect("{{.Id}} {{index .Config.Labels \"edgecd.image\"}}").expect("container");
        assert_eq!(now, back, "no container started for {version}");
        let r = lab
            .device()
            .and_then(|d| d.status?.running)
            .expect("running");
        assert_eq!(
            (r.version.as_str(), r.image.as_deref()),
            ("1.0.0", Some(image1.as_str()))
        );
    }
    let present = |image: &str| podman.out(&["image", "exists", image]).is_ok();
    assert!(!present(&missing), "the missing digest left nothing");
    assert!(!present(&image2), "image 2 was pruned");
    assert!(present(&image1));

    // Release 5 (image 3 + model 5) commits; image 1 stays as the other slot's.
    lab.deploy("5.0.0");
    let r = wait_for("release 5 to run", T, running("5.0.0"));
    assert_eq!(r.image.as_deref(), Some(image3.as_str()));
    assert_eq!(infer(port, &body)["release"], format!("{APP}@5.0.0"));
    assert!(
        present(&image1) && present(&image3),
        "the two slots' images are kept"
    );
    // Then its runtime crashes again and again after commit: back to image 1 + model 1.
    let mut restarts = 0;
    while restarts <= 2 {
        let (pid, n) = wait_for("the runtime to run", T, || {
            let v = inspect("{{.State.Status}} {{.State.Pid}} {{.RestartCount}}").ok()?;
            let w: Vec<&str> = v.split_whitespace().collect();
            let n: u32 = w.get(2)?.parse().ok()?;
            (w.first() == Some(&"running") && n >= restarts && w.get(1) != Some(&"0"))
                .then(|| (w[1].to_string(), n))
        });
        if lab
            .device()
            .and_then(|d| d.status?.last_outcome)
            .is_some_and(|o| {
                o.kind == OutcomeKind::RolledBack
                    && o.release.as_deref() == Some(&*format!("{APP}@5.0.0"))
            })
        {
            break;
        }
        let _ = Command::new("kill").args(["-9", &pid]).status();
        restarts = n + 1;
    }
    let o = wait_for("the crash loop to be rolled back", T, || {
        let o = lab.device()?.status?.last_outcome?;
        (o.kind == OutcomeKind::RolledBack
            && o.release.as_deref() == Some(&*format!("{APP}@5.0.0")))
        .then_some(o)
    });
    assert!(o.reason.contains("crash loop after commit"), "{}", o.reason);
    let r = wait_for("release 1 after the crash loop", T, running("1.0.0"));
    assert_eq!(r.image.as_deref(), Some(image1.as_str()));
    let label = wait_for("image 1's container", T, || {
        inspect("{{index .Config.Labels \"edgecd.image\"}}")
            .ok()
            .filter(|l| *l == image1)
    });
    assert_eq!(label, image1);
    wait_for("image 3 to be pruned", T, || {
        (!present(&image3)).then_some(())
    });
    wait_for("release 1 to answer again", T, || {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let mut r = http
            .post(&format!("http://127.0.0.1:{port}/v1/infer"))
            .header("content-type", "application/json")
            .send(body.as_str())
            .ok()?;
        let v: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
        (v["release"] == format!("{APP}@1.0.0")).then_some(())
    });
}
