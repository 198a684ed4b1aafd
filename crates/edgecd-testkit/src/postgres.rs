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
