//! PostgreSQL for server tests. `scripts/with-postgres` starts a private cluster and sets
//! [`ENV`]; [`database_for`] then gives each test server a database of its own, named after
//! its data directory (so a restarted server finds its state again). Without [`ENV`] tests use
//! the embedded SQLite default.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::process::Command;

/// The base URL of the cluster (`postgres://USER@127.0.0.1:PORT`), set by `scripts/with-postgres`.
pub const ENV: &str = "EDGECD_TEST_POSTGRES";

/// The cluster's base URL when the tests run against PostgreSQL.
pub fn cluster() -> Option<String> {
    std::env::var(ENV).ok().filter(|s| !s.is_empty())
}

/// A database URL for a server whose data directory is `data_dir`: `None` (SQLite) unless
/// [`ENV`] is set; then a database created on first use, the same for the same directory.
pub fn database_for(data_dir: &Path) -> Option<String> {
    let base = cluster()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut h);
    let name = format!("t_{:016x}", h.finish());
    create_database(&base, &name);
    Some(format!("{}/{name}", base.trim_end_matches('/')))
}

/// Creates database `name` on the cluster at `base` unless it exists.
pub fn create_database(base: &str, name: &str) {
    let out = Command::new("psql")
        .arg(format!("{}/postgres", base.trim_end_matches('/')))
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("psql (scripts/setup/postgres.sh installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("already exists"),
        "CREATE DATABASE {name}: {err}"
    );
}

/// A private PostgreSQL cluster for one test (replicas, failover): `initdb` in a temp dir,
/// the server on 127.0.0.1 at a free port (as `nobody` when the tests run as root), stopped
/// by its PID and removed on drop.
pub struct Cluster {
    pub url: String,
    dir: std::path::PathBuf,
    pid: Option<u32>,
}

fn pg_bin(name: &str) -> std::path::PathBuf {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/setup/postgres.sh")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL version").join(name)
}

fn as_postgres(cmd: &str) -> Command {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(pg_bin(cmd));
        c
    } else {
        Command::new(pg_bin(cmd))
    }
}

impl Cluster {
    /// Starts a cluster with database `edgecd`; `url` points at it.
    pub fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "edgecd-pg-{}-{}",
            std::process::id(),
            crate::free_port()
        ));
        std::fs::create_dir_all(&dir).expect("pg dir");
        let _ = Command::new("chown")
            .args(["nobody:nogroup"])
            .arg(&dir)
            .status();
        let _ = Command::new("chmod").arg("755").arg(&dir).status();
        let data = dir.join("data");
        let out = as_postgres("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "edgecd", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::free_port();
        let opts = format!(
            "-k {} -p {port} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c synchronous_commit=off",
            dir.display()
        );
        let out = as_postgres("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .output()
            .expect("pg_ctl");
        let mut c = Cluster {
            url: format!("postgres://edgecd@127.0.0.1:{port}/edgecd"),
            dir: dir.clone(),
            pid: None,
        };
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        c.pid = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
        create_database(&format!("postgres://edgecd@127.0.0.1:{port}"), "edgecd");
        c
    }

    /// Runs one SQL statement with `psql`; its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .arg(&self.url)
            .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let kill = |sig: &str| {
                let _ = Command::new("kill")
                    .args([sig, &pid.to_string()])
                    .stderr(std::process::Stdio::null())
                    .status();
            };
            kill("-INT");
            for _ in 0..100 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            kill("-KILL");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
