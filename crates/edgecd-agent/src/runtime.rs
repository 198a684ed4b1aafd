//! Runtime images under podman (podman mode, `--podman`): a release whose signed manifest pins
//! a container image runs its inference runtime (edgecd-infer, or another runtime behind the
//! same HTTP API) from that image, and the image travels with the model as one A/B unit.
//!
//! Owns the podman side: pulling an image by digest (from the reference's registry or a site
//! mirror) and checking the pulled image's digest; running it with the slot mounted read-only
//! at `/model`, the accelerator device passed through when the release asks for one, the
//! memory limit from the hardware profile (`minRamMb`) and the CPU limit from the device's
//! configuration, and its HTTP API published on the configured address; the runtime's health
//! (`/readyz`, then the bundle's golden vectors sent through its own `/v1/infer`); the
//! container's crash-loop signs (restarts, exit); pruning images no slot holds; and the
//! production unit (a podman quadlet, `edgecd-infer.container`). Shells out to `podman`; no
//! other dependency. Signature and digest checks happen before anything runs (see `agent`).

use edgecd_api::profile::{HardwareProfile, Profile, TensorData};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The container's port for the runtime's HTTP API (edgecd-infer's image listens here).
pub const CONTAINER_PORT: u16 = 9500;
/// Where the slot is mounted in the container.
pub const MODEL_DIR: &str = "/model";

/// How the agent drives podman.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodmanConfig {
    /// The podman binary.
    pub podman: PathBuf,
    /// Arguments before every podman subcommand (e.g. `--runtime runc --storage-driver vfs`).
    pub global_args: Vec<String>,
    /// Extra arguments of `podman run` (e.g. `--ulimit nofile=1024:1024`).
    pub run_args: Vec<String>,
    /// Pull from this registry (`host[:port][/prefix]`) instead of the reference's own; the
    /// digest stays the same, so a mirror cannot substitute another image.
    pub mirror: Option<String>,
    /// `false`: plain-HTTP or self-signed registries (`--tls-verify=false`).
    pub tls_verify: bool,
    /// The container's name.
    pub container: String,
    /// Where the runtime's HTTP API is published on the host.
    pub publish: SocketAddr,
    /// Device nodes passed through when the release needs an accelerator (e.g. /dev/hailo0).
    pub accelerator_devices: Vec<String>,
    /// `--cpus` of the container (e.g. `2` or `1.5`).
    pub cpus: Option<String>,
    /// Production: write the quadlet here and restart `edgecd-infer.service` through
    /// systemd (`None`: run the container with podman directly).
    pub quadlet_dir: Option<PathBuf>,
    /// Container restarts after commit that count as a crash loop.
    pub max_restarts: u32,
}

impl PodmanConfig {
    pub fn new(publish: SocketAddr) -> Self {
        Self {
            podman: "podman".into(),
            global_args: Vec::new(),
            run_args: Vec::new(),
            mirror: None,
            tls_verify: true,
            container: "edgecd-infer".into(),
            publish,
            accelerator_devices: Vec::new(),
            cpus: None,
            quadlet_dir: None,
            max_restarts: 3,
        }
    }

    /// The runtime's base URL on the host.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.publish)
    }
}

/// Why a runtime image step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The image itself is wrong (not in the registry under that digest, digest differs):
    /// permanent for this release.
    #[error("{0}")]
    Refused(String),
    /// podman or the registry failed (network, disk): retried.
    #[error("{0}")]
    Failed(String),
}

/// What runs: the release's image and slot, and what its hardware profile asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    pub image: String,
    pub slot_dir: PathBuf,
    pub release: String,
    pub hardware: HardwareProfile,
}

/// What [`Podman::watch`] sees of the committed runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Running (or not the agent's container: someone else's business).
    Running,
    /// No container (e.g. after a reboot): the agent starts it again.
    Missing,
    /// Stopped or exited: a crash loop once it stays down (podman restarts a crash at once).
    Down(String),
    /// Restarted more than `max_restarts` times: a crash loop.
    Looping(String),
}

/// The container as podman reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// `running`, `exited`, `created`, …
    pub status: String,
    pub restarts: u32,
    pub exit_code: i64,
    /// The `edgecd.image` label: the image reference it was started from.
    pub image: String,
}

/// Splits `registry/name@sha256:hex` into the pull source (rewritten to `mirror` when given)
/// and the digest.
pub fn pull_source(image: &str, mirror: Option<&str>) -> Result<(String, String), String> {
    let (name, digest) = image
        .rsplit_once('@')
        .ok_or_else(|| format!("image {image:?} is not pinned by digest"))?;
    let Some(mirror) = mirror else {
        return Ok((image.to_string(), digest.to_string()));
    };
    // The first component is a registry host when it has a dot, a colon or is localhost.
    let path = match name.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            rest
        }
        _ => name,
    };
    Ok((
        format!("{}/{path}@{digest}", mirror.trim_end_matches('/')),
        digest.to_string(),
    ))
}

/// Whether `podman image inspect`'s digest line (`DIGEST REPO@DIGEST…`) names `digest`: the
/// image's own manifest digest, or the index it was pulled through (multi-arch).
pub fn inspect_has_digest(line: &str, digest: &str) -> bool {
    line.split_whitespace()
        .any(|w| w == digest || w.rsplit_once('@').is_some_and(|(_, d)| d == digest))
}

/// The `podman run` arguments (after `run`) for `spec`.
pub fn run_args(cfg: &PodmanConfig, spec: &RunSpec) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-d".into(),
        "--name".into(),
        cfg.container.clone(),
        "--restart".into(),
        "on-failure".into(),
        "--read-only".into(),
        "--cap-drop".into(),
        "all".into(),
        "--security-opt".into(),
        "no-new-privileges".into(),
        "--label".into(),
        format!("edgecd.image={}", spec.image),
        "--label".into(),
        format!("edgecd.release={}", spec.release),
        "-v".into(),
        format!("{}:{MODEL_DIR}:ro", spec.slot_dir.display()),
        "-p".into(),
        format!(
            "{}:{}:{CONTAINER_PORT}",
            cfg.publish.ip(),
            cfg.publish.port()
        ),
    ];
    if let Some(mb) = spec.hardware.min_ram_mb {
        a.push("--memory".into());
        a.push(format!("{mb}m"));
    }
    if let Some(c) = &cfg.cpus {
        a.push("--cpus".into());
        a.push(c.clone());
    }
    if spec.hardware.accelerator.is_some() {
        for d in &cfg.accelerator_devices {
            a.push("--device".into());
            a.push(d.clone());
        }
    }
    a.extend(cfg.run_args.iter().cloned());
    a.push(spec.image.clone());
    a.extend([
        "--model-dir".into(),
        MODEL_DIR.into(),
        "--listen".into(),
        format!("0.0.0.0:{CONTAINER_PORT}"),
    ]);
    a
}

/// The production unit: a podman quadlet (`/etc/containers/systemd/edgecd-infer.container`),
/// which systemd turns into `edgecd-infer.service`. Same mounts, device and limits as
/// [`run_args`]; systemd restarts it, and the agent reads its restarts from podman.
pub fn quadlet(cfg: &PodmanConfig, spec: &RunSpec) -> String {
    let mut s = String::new();
    s.push_str(
        "# Written by edgecd-agent (podman mode) for the release it activates; do not edit.\n",
    );
    s.push_str(&format!(
        "[Unit]\nDescription=edgecd inference runtime ({})\nAfter=network-online.target\n\n",
        spec.release
    ));
    s.push_str("[Container]\n");
    s.push_str(&format!("ContainerName={}\n", cfg.container));
    s.push_str(&format!("Image={}\n", spec.image));
    s.push_str(&format!(
        "Volume={}:{MODEL_DIR}:ro\n",
        spec.slot_dir.display()
    ));
    s.push_str(&format!(
        "PublishPort={}:{}:{CONTAINER_PORT}\n",
        cfg.publish.ip(),
        cfg.publish.port()
    ));
    s.push_str("ReadOnly=true\nDropCapability=all\nNoNewPrivileges=true\n");
    s.push_str(&format!(
        "Label=edgecd.image={}\nLabel=edgecd.release={}\n",
        spec.image, spec.release
    ));
    if spec.hardware.accelerator.is_some() {
        for d in &cfg.accelerator_devices {
            s.push_str(&format!("AddDevice={d}\n"));
        }
    }
    let mut podman_args = Vec::new();
    if let Some(mb) = spec.hardware.min_ram_mb {
        podman_args.push(format!("--memory={mb}m"));
    }
    if let Some(c) = &cfg.cpus {
        podman_args.push(format!("--cpus={c}"));
    }
    if !podman_args.is_empty() {
        s.push_str(&format!("PodmanArgs={}\n", podman_args.join(" ")));
    }
    s.push_str(&format!(
        "Exec=--model-dir {MODEL_DIR} --listen 0.0.0.0:{CONTAINER_PORT}\n\n"
    ));
    s.push_str("[Service]\nRestart=on-failure\nRestartSec=2\nTimeoutStartSec=300\n\n");
    s.push_str("[Install]\nWantedBy=multi-user.target\n");
    s
}

/// Drives podman for the agent.
#[derive(Debug, Clone)]
pub struct Podman {
    pub cfg: PodmanConfig,
    /// The mirror the server named for this device's site, used unless `cfg.mirror` is set.
    pub server_mirror: Option<String>,
}

impl Podman {
    pub fn new(cfg: PodmanConfig) -> Self {
        Self {
            cfg,
            server_mirror: None,
        }
    }

    /// The mirror to pull from: the agent's own `--image-mirror`, else the server's.
    pub fn mirror(&self) -> Option<&str> {
        self.cfg.mirror.as_deref().or(self.server_mirror.as_deref())
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.cfg.podman);
        c.args(&self.cfg.global_args).stdin(Stdio::null());
        c
    }

    /// Runs podman with `args`; stdout on success, else stderr (trimmed, bounded).
    fn run(&self, args: &[String]) -> Result<String, String> {
        let out = self
            .cmd()
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.cfg.podman.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let err: String = err.trim().chars().take(1000).collect();
            Err(format!(
                "podman {} failed ({}): {err}",
                args.first().map_or("", String::as_str),
                out.status
            ))
        }
    }

    /// Whether podman works on this device.
    pub fn available(&self) -> bool {
        self.run(&[
            "version".into(),
            "--format".into(),
            "{{.Client.Version}}".into(),
        ])
        .is_ok()
    }

    /// Pulls `image` by digest (from the mirror when configured) and checks that the image
    /// podman stored carries that digest. A digest the registry does not have is refused.
    pub fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        let (source, digest) = pull_source(image, self.mirror()).map_err(RuntimeError::Refused)?;
        let mut args = vec!["pull".to_string(), "-q".to_string()];
        if !self.cfg.tls_verify {
            args.push("--tls-verify=false".into());
        }
        args.push(source.clone());
        if let Err(e) = self.run(&args) {
            let l = e.to_lowercase();
            return Err(
                if l.contains("manifest unknown")
                    || l.contains("not found")
                    || l.contains("name unknown")
                    || l.contains("digest")
                {
                    RuntimeError::Refused(format!(
                        "runtime image {source} cannot be pulled by its pinned digest: {e}"
                    ))
                } else {
                    RuntimeError::Failed(format!("pulling runtime image {source}: {e}"))
                },
            );
        }
        let line = self
            .run(&[
                "image".into(),
                "inspect".into(),
                "--format".into(),
                "{{.Digest}}{{range .RepoDigests}} {{.}}{{end}}".into(),
                source.clone(),
            ])
            .map_err(|e| RuntimeError::Failed(format!("inspecting {source}: {e}")))?;
        if !inspect_has_digest(&line, &digest) {
            let _ = self.run(&["rmi".into(), "-f".into(), source.clone()]);
            return Err(RuntimeError::Refused(format!(
                "runtime image {source}: the pulled image's digest ({line}) is not the pinned {digest}"
            )));
        }
        Ok(())
    }

    /// The local name to run `image` by (the mirror's when pulled from one).
    fn local_ref(&self, image: &str) -> String {
        pull_source(image, self.mirror()).map_or_else(|_| image.to_string(), |s| s.0)
    }

    /// Replaces the runtime container with one running `spec` (or writes the quadlet and
    /// restarts the unit in production).
    pub fn start(&self, spec: &RunSpec) -> Result<(), String> {
        let local = RunSpec {
            image: self.local_ref(&spec.image),
            ..spec.clone()
        };
        if let Some(dir) = &self.cfg.quadlet_dir {
            let path = dir.join(format!("{}.container", self.cfg.container));
            crate::fsutil::write_atomic(&path, quadlet(&self.cfg, &local).as_bytes(), 0o644)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            for args in [
                &["daemon-reload"][..],
                &["restart", &format!("{}.service", self.cfg.container)][..],
            ] {
                let st = Command::new("systemctl")
                    .args(args)
                    .stdin(Stdio::null())
                    .status()
                    .map_err(|e| format!("systemctl: {e}"))?;
                if !st.success() {
                    return Err(format!("systemctl {} failed ({st})", args.join(" ")));
                }
            }
            return Ok(());
        }
        self.stop();
        let mut args = vec!["run".to_string()];
        args.extend(run_args(&self.cfg, &local));
        self.run(&args).map(|_| ())
    }

    /// Stops and removes the runtime container (nothing to do when there is none).
    pub fn stop(&self) {
        if let Some(dir) = &self.cfg.quadlet_dir {
            let _ = Command::new("systemctl")
                .args(["stop", &format!("{}.service", self.cfg.container)])
                .stdin(Stdio::null())
                .status();
            let _ = std::fs::remove_file(dir.join(format!("{}.container", self.cfg.container)));
        }
        let _ = self.run(&[
            "rm".into(),
            "-f".into(),
            "-t".into(),
            "5".into(),
            self.cfg.container.clone(),
        ]);
    }

    /// The container's state (`None`: there is no such container).
    pub fn state(&self) -> Option<ContainerState> {
        let line = self
            .run(&[
                "inspect".into(),
                "--type".into(),
                "container".into(),
                "--format".into(),
                "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}} {{index .Config.Labels \"edgecd.image\"}}".into(),
                self.cfg.container.clone(),
            ])
            .ok()?;
        let mut w = line.split_whitespace();
        Some(ContainerState {
            status: w.next()?.to_string(),
            restarts: w.next()?.parse().ok()?,
            exit_code: w.next()?.parse().ok()?,
            image: w.next().unwrap_or_default().to_string(),
        })
    }

    /// The last lines of the container's log (for error messages).
    pub fn logs_tail(&self) -> String {
        self.run(&[
            "logs".into(),
            "--tail".into(),
            "5".into(),
            self.cfg.container.clone(),
        ])
        .unwrap_or_default()
    }

    /// The container's last `n` log lines with podman's timestamps (its stdout and stderr),
    /// for `edgecd device logs`.
    pub fn logs(&self, n: usize) -> Result<String, String> {
        let out = self
            .cmd()
            .args([
                "logs",
                "--timestamps",
                "--tail",
                &n.to_string(),
                &self.cfg.container,
            ])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.cfg.podman.display()))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(1000)
                .collect());
        }
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// How the committed runtime's container is doing (see [`Health`]).
    pub fn watch(&self, image: &str) -> Health {
        let local = self.local_ref(image);
        match self.state() {
            None => Health::Missing,
            Some(s) if s.image != local && s.image != image => Health::Running,
            Some(s) if s.restarts > self.cfg.max_restarts => Health::Looping(format!(
                "the runtime container restarted {} times (exit code {})",
                s.restarts, s.exit_code
            )),
            Some(s) if s.status == "exited" || s.status == "stopped" => Health::Down(format!(
                "the runtime container {} with exit code {}: {}",
                s.status,
                s.exit_code,
                self.logs_tail()
            )),
            Some(_) => Health::Running,
        }
    }

    /// Removes the runtime images no slot holds (`keep`: the images of the two slots).
    /// Only images the agent pulled are considered; one a container still uses stays.
    pub fn prune(&self, pulled: &[String], keep: &[String]) {
        for image in pulled {
            if keep.contains(image) {
                continue;
            }
            let name = self.local_ref(image);
            match self.run(&["rmi".into(), name.clone()]) {
                Ok(_) => tracing::info!(image = %name, "pruned a runtime image no slot holds"),
                Err(e) => tracing::debug!(image = %name, error = %e, "not removing image"),
            }
        }
    }
}

/// The runtime's health: `/readyz` answers 200 within `deadline` (the runtime loaded the model
/// and passed a real inference), then each golden vector of the bundle's profile for the
/// model it serves, sent through its own `POST /v1/infer`, comes back within tolerance.
/// `alive` is polled while waiting, to fail fast when the container died.
pub fn check_health(
    base_url: &str,
    slot_dir: &Path,
    deadline: Duration,
    interval: Duration,
    alive: &dyn Fn() -> Result<(), String>,
) -> Result<(), String> {
    let start = Instant::now();
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let ready = loop {
        let r = http
            .get(format!("{base_url}/readyz"))
            .call()
            .map_err(|e| e.to_string())
            .and_then(|r| {
                let status = r.status().as_u16();
                let body = r
                    .into_body()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_string()
                    .unwrap_or_default();
                if status == 200 {
                    Ok(body)
                } else {
                    Err(format!("/readyz answered {status}: {}", body.trim()))
                }
            });
        match r {
            Ok(body) => break body,
            Err(e) => {
                alive()?;
                if start.elapsed() + interval >= deadline {
                    return Err(format!(
                        "runtime not ready within {}s: {e}",
                        deadline.as_secs()
                    ));
                }
                std::thread::sleep(interval);
            }
        }
    };
    let model = serde_json::from_str::<serde_json::Value>(&ready)
        .ok()
        .and_then(|v| v["model"].as_str().map(str::to_string));
    selftest_over_http(&http, base_url, slot_dir, model.as_deref())
}

/// Sends the profile's self-test cases for `model` (all cases when the runtime does not say
/// which model it serves) through `POST /v1/infer` and compares the answers.
fn selftest_over_http(
    http: &ureq::Agent,
    base_url: &str,
    slot_dir: &Path,
    model: Option<&str>,
) -> Result<(), String> {
    let path = slot_dir.join(edgecd_api::layout::PROFILE_FILE);
    let profile: Profile = serde_json::from_slice(
        &std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let Some(st) = &profile.selftest else {
        return Ok(());
    };
    let cases: Vec<_> = st
        .cases
        .iter()
        .filter(|c| model.is_none_or(|m| c.model == m))
        .collect();
    if cases.is_empty()
        && let (Some(m), Some(first)) = (model, st.cases.first())
    {
        // Nothing to compare is no evidence: the runtime serves another model than the
        // release's (a wrong image, or a model file the runtime picked by mistake).
        return Err(format!(
            "the runtime serves model {m:?}, and this release's self-test vectors are for {:?}: the runtime image does not serve this release's model",
            first.model
        ));
    }
    for case in cases {
        let body = serde_json::json!({ "inputs": case.inputs }).to_string();
        let r = http
            .post(format!("{base_url}/v1/infer"))
            .header("content-type", "application/json")
            .send(body.as_str())
            .map_err(|e| format!("self-test case {}: {e}", case.name))?;
        let status = r.status().as_u16();
        let text = r
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| format!("self-test case {}: {e}", case.name))?;
        if status != 200 {
            return Err(format!(
                "self-test case {}: the runtime answered {status}: {}",
                case.name,
                text.trim()
            ));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            outputs: Vec<TensorData>,
        }
        let a: Answer = serde_json::from_str(&text)
            .map_err(|e| format!("self-test case {}: answer: {e}", case.name))?;
        for want in &case.outputs {
            let got = a
                .outputs
                .iter()
                .find(|o| o.name == want.name)
                .ok_or_else(|| {
                    format!(
                        "self-test case {}: the runtime returned no output {:?}",
                        case.name, want.name
                    )
                })?;
            if got.shape != want.shape || got.data.len() != want.data.len() {
                return Err(format!(
                    "self-test case {}: output {} has shape {:?}, expected {:?}",
                    case.name, want.name, got.shape, want.shape
                ));
            }
            let (abs, ratio) = st.tolerance.compare(&got.data, &want.data);
            if ratio.is_nan() || ratio > 1.0 {
                return Err(format!(
                    "self-test case {}: output {} is off by {abs:e}, beyond the tolerance (abs {}, rel {})",
                    case.name, want.name, st.tolerance.abs, st.tolerance.rel
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(acc: Option<&str>, ram: Option<u64>) -> RunSpec {
        RunSpec {
            image: format!("127.0.0.1:5000/infer@sha256:{}", "a".repeat(64)),
            slot_dir: "/var/lib/edgecd-agent/slots/b".into(),
            release: "app@1.0.0".into(),
            hardware: HardwareProfile {
                board: "rpi5".into(),
                accelerator: acc.map(str::to_string),
                min_ram_mb: ram,
            },
        }
    }

    fn cfg() -> PodmanConfig {
        let mut c = PodmanConfig::new("127.0.0.1:9500".parse().expect("addr"));
        c.accelerator_devices = vec!["/dev/hailo0".into()];
        c.cpus = Some("2".into());
        c
    }

    #[test]
    fn the_agents_own_mirror_wins_over_the_servers() {
        let mut p = Podman::new(PodmanConfig::new("127.0.0.1:9500".parse().expect("addr")));
        assert_eq!(p.mirror(), None);
        p.server_mirror = Some("site.mirror:5000".into());
        assert_eq!(p.mirror(), Some("site.mirror:5000"));
        p.cfg.mirror = Some("own.mirror".into());
        assert_eq!(p.mirror(), Some("own.mirror"));
    }

    #[test]
    fn mirrors_keep_the_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let img = format!("ghcr.io/org/infer@{d}");
        assert_eq!(
            pull_source(&img, None).expect("ok"),
            (img.clone(), d.clone())
        );
        assert_eq!(
            pull_source(&img, Some("mirror.site:5000/")).expect("ok").0,
            format!("mirror.site:5000/org/infer@{d}")
        );
        assert_eq!(
            pull_source(&format!("org/infer@{d}"), Some("m:1"))
                .expect("ok")
                .0,
            format!("m:1/org/infer@{d}")
        );
        assert!(pull_source("ghcr.io/org/infer:latest", None).is_err());
    }

    #[test]
    fn digest_check_reads_manifest_and_index_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let other = format!("sha256:{}", "b".repeat(64));
        assert!(inspect_has_digest(&d, &d));
        // Pulled through a multi-arch index: the instance digest first, the index in RepoDigests.
        assert!(inspect_has_digest(
            &format!("{other} r/infer@{other} r/infer@{d}"),
            &d
        ));
        assert!(!inspect_has_digest(&format!("{other} r/infer@{other}"), &d));
        assert!(!inspect_has_digest("", &d));
    }

    #[test]
    fn run_args_mount_read_only_limit_and_pass_the_accelerator_when_asked() {
        let a = run_args(&cfg(), &spec(Some("hailo-10h"), Some(512))).join(" ");
        assert!(
            a.contains("-v /var/lib/edgecd-agent/slots/b:/model:ro"),
            "{a}"
        );
        assert!(a.contains("-p 127.0.0.1:9500:9500"), "{a}");
        assert!(a.contains("--memory 512m") && a.contains("--cpus 2"), "{a}");
        assert!(a.contains("--device /dev/hailo0"), "{a}");
        assert!(
            a.contains("--read-only") && a.contains("--cap-drop all"),
            "{a}"
        );
        assert!(
            a.ends_with(&format!(
                "infer@sha256:{} --model-dir /model --listen 0.0.0.0:9500",
                "a".repeat(64)
            )),
            "{a}"
        );
        let cpu_only = run_args(&cfg(), &spec(None, None)).join(" ");
        assert!(!cpu_only.contains("--device"), "{cpu_only}");
        assert!(!cpu_only.contains("--memory"), "{cpu_only}");
    }

    #[test]
    fn quadlet_has_the_same_mounts_device_and_limits() {
        let q = quadlet(&cfg(), &spec(Some("hailo-10h"), Some(512)));
        for line in [
            "[Container]",
            "ContainerName=edgecd-infer",
            "Volume=/var/lib/edgecd-agent/slots/b:/model:ro",
            "PublishPort=127.0.0.1:9500:9500",
            "AddDevice=/dev/hailo0",
            "PodmanArgs=--memory=512m --cpus=2",
            "ReadOnly=true",
            "Exec=--model-dir /model --listen 0.0.0.0:9500",
            "Restart=on-failure",
            "WantedBy=multi-user.target",
        ] {
            assert!(q.lines().any(|l| l == line), "missing {line:?} in\n{q}");
        }
        assert!(q.contains(&format!(
            "Image=127.0.0.1:5000/infer@sha256:{}",
            "a".repeat(64)
        )));
        let cpu_only = quadlet(&cfg(), &spec(None, None));
        assert!(!cpu_only.contains("AddDevice"), "{cpu_only}");
    }

    #[test]
    fn tolerance_compare_uses_abs_and_rel() {
        let tol = edgecd_api::profile::Tolerance { abs: 0.1, rel: 0.1 };
        let (abs, ratio) = tol.compare(&[10.15, 0.0], &[10.0, 0.0]);
        assert!((abs - 0.15).abs() < 1e-9 && ratio < 1.0);
        let (_, ratio) = tol.compare(&[11.5], &[10.0]);
        assert!(ratio > 1.0);
        assert!(tol.compare(&[f64::NAN], &[1.0]).1.is_nan());
    }
}
