//! Real Prometheus and Alertmanager (Debian's `prometheus`, `prometheus-alertmanager`) as child
//! processes on 127.0.0.1, for tests: each gets its own data directory and a free port, can be
//! stopped and started again on the same port and data (to test outages), and is killed when
//! dropped. A missing binary fails the test under `EDGECD_REQUIRE_EXTERNAL=1`, else skips it.
//! [`Registry`]: an OCI registry (Debian's `docker-registry`, CNCF distribution) on 127.0.0.1
//! in a temporary directory, stopped when dropped.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The first of `names` on `PATH`, or `None` (see [`crate::external`]).
pub fn binary(what: &str, names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|n| crate::on_path(n)).or_else(|| {
        crate::external(
            what,
            PathBuf::from(format!("PATH entry {}", names.join(" or "))),
        )
    })
}

/// A service process that can be stopped and started again.
pub struct Service {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Service {
    /// Prometheus with `config` (YAML; `{dir}` is replaced with the data dir), TSDB in `dir`,
    /// on `port` (0: a free one).
    pub fn prometheus(dir: &Path, config: &str, port: u16) -> Option<Service> {
        let program = binary("Debian package prometheus", &["prometheus"])?;
        std::fs::create_dir_all(dir).expect("prometheus dir");
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, config.replace("{dir}", &dir.display().to_string()))
            .expect("write prometheus.yml");
        let port = if port == 0 { crate::free_port() } else { port };
        let args = vec![
            format!("--config.file={}", cfg.display()),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-lifecycle".into(),
            "--log.level=warn".into(),
        ];
        Some(Service::launch("prometheus", program, args, dir, port))
    }

    /// Alertmanager with `config` (YAML), state in `dir`, clustering off.
    pub fn alertmanager(dir: &Path, config: &str) -> Option<Service> {
        let program = binary(
            "Debian package prometheus-alertmanager",
            &["prometheus-alertmanager", "alertmanager"],
        )?;
        std::fs::create_dir_all(dir).expect("alertmanager dir");
        let cfg = dir.join("alertmanager.yml");
        std::fs::write(&cfg, config).expect("write alertmanager.yml");
        let port = crate::free_port();
        let args = vec![
            format!("--config.file={}", cfg.display()),
            format!("--storage.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
            "--log.level=warn".into(),
        ];
        Some(Service::launch("alertmanager", program, args, dir, port))
    }

    fn launch(name: &str, program: PathBuf, args: Vec<String>, dir: &Path, port: u16) -> Service {
        let mut s = Service {
            name: name.into(),
            program,
            args,
            log: dir.join(format!("{name}.log")),
            port,
            child: None,
        };
        s.start();
        s
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again) and waits until it answers `/-/ready`.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("service log");
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.program.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .new_agent();
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "{} exited with {status} at start: {}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if agent
                .get(format!("{}/-/ready", self.url()))
                .call()
                .is_ok_and(|r| r.status() == 200)
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not ready within 60 s: {}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the process (SIGKILL: an outage, not a shutdown) and waits for it; the port
    /// closes, the data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An OCI registry (`docker-registry serve`, plain HTTP) on 127.0.0.1 with a free port and its
/// storage in a temporary directory; killed (and the storage removed) when dropped. Clients
/// need `--tls-verify=false` (podman, skopeo) or an `http://` URL.
pub struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry and waits until it answers `GET /v2/`. Panics when it cannot start
    /// (`docker-registry` missing: run `scripts/setup/podman.sh`).
    pub fn start() -> Registry {
        Self::try_start().expect("docker-registry not found: run scripts/setup/podman.sh")
    }

    /// Like [`Registry::start`], but `None` (after a skip notice) when `docker-registry` is
    /// missing, unless `EDGECD_REQUIRE_EXTERNAL=1`, which fails the test.
    pub fn try_start() -> Option<Registry> {
        let program = binary("Debian package docker-registry", &["docker-registry"])?;
        let dir = tempfile::tempdir().expect("registry dir");
        let port = crate::free_port();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new(program)
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let mut r = Registry { child, port, dir };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .new_agent();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("docker-registry exited with {status} at start: {}", r.log());
            }
            if agent
                .get(format!("{}/v2/", r.url()))
                .call()
                .is_ok_and(|x| x.status() == 200)
            {
                return Some(r);
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not ready within 30 s: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`: the registry host of image references (`127.0.0.1:PORT/name@sha256:…`).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` (the registry API is under `/v2/`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The registry's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
