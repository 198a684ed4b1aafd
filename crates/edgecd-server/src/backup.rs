//! Online backup and restore of a server (`edgecd server backup|restore`).
//!
//! A backup is a directory:
//! ```text
//! OUT/edgecd.db          SQLite: a consistent snapshot (`VACUUM INTO`, taken while servers run)
//! OUT/postgres.dump      PostgreSQL: `pg_dump --format=custom` (one consistent snapshot)
//! OUT/keys/assignment.key|.pub, OUT/admin-token   the data directory's secrets (0600)
//! OUT/blobs/sha256/<hex> the blobs, copied after the database snapshot (so every blob it
//!                        refers to is there: blobs are immutable and only unreferenced ones
//!                        are ever removed)
//! OUT/backup.json        what was backed up, written last: a backup without it is incomplete
//! ```
//! Restore brings it into a fresh data directory (and, for PostgreSQL, an empty database).
//! Devices keep working: their credentials are in the database and the assignment key comes
//! back; a device holding an assignment newer than the backup resynchronizes the counter on
//! its next check-in (`resync` in `api`).

use crate::error::ServerError;
use crate::store;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `OUT/backup.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupManifest {
    pub format: u32,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Unix milliseconds when the snapshot was taken.
    pub created_ms: i64,
    pub edgecd_version: String,
    pub blobs: usize,
    pub blob_bytes: u64,
}

const FORMAT: u32 = 1;
const MANIFEST: &str = "backup.json";
const SQLITE_FILE: &str = "edgecd.db";
const PG_FILE: &str = "postgres.dump";
/// The data directory's files that come along (private ones stay 0600).
const SECRET_FILES: &[&str] = &["keys/assignment.key", "admin-token"];
const PUBLIC_FILES: &[&str] = &["keys/assignment.pub"];

enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

fn database(data_dir: &Path, database: Option<&str>) -> Result<Db, ServerError> {
    match database {
        None => Ok(Db::Sqlite(data_dir.join(SQLITE_FILE))),
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Ok(Db::Postgres(u.to_string()))
        }
        Some(u) if u.starts_with("sqlite:") => {
            let p = u
                .trim_start_matches("sqlite:")
                .trim_start_matches("//")
                .split('?')
                .next()
                .unwrap_or_default();
            Ok(Db::Sqlite(if p.is_empty() {
                data_dir.join(SQLITE_FILE)
            } else {
                PathBuf::from(p)
            }))
        }
        Some(other) => Err(ServerError::Config(format!(
            "--database {:?}: use postgres://USER@HOST:PORT/DB or sqlite://PATH",
            store::redact_url(other)
        ))),
    }
}

/// A PostgreSQL client tool: on `PATH`, else the newest under /usr/lib/postgresql.
fn pg_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.pop().unwrap_or_else(|| PathBuf::from(name))
}

fn run(mut cmd: Command, what: &str) -> Result<(), ServerError> {
    let out = cmd.output().map_err(|e| {
        ServerError::Config(format!(
            "cannot run {what}: {e} (install the PostgreSQL client tools, e.g. apt-get install postgresql-client)"
        ))
    })?;
    if !out.status.success() {
        return Err(ServerError::Config(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path, private: bool) -> Result<u64, ServerError> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ServerError::io(dir, e))?;
    }
    if private {
        let bytes = std::fs::read(from).map_err(|e| ServerError::io(from, e))?;
        crate::util::write_private_new(to, &bytes).map_err(|e| ServerError::io(to, e))?;
        Ok(bytes.len() as u64)
    } else {
        std::fs::copy(from, to).map_err(|e| ServerError::io(to, e))
    }
}

/// Copies the finished blobs `from/blobs/sha256/*` to `to/blobs/sha256/`; (count, bytes).
fn copy_blobs(from: &Path, to: &Path) -> Result<(usize, u64), ServerError> {
    let src = from.join("blobs/sha256");
    let dst = to.join("blobs/sha256");
    std::fs::create_dir_all(&dst).map_err(|e| ServerError::io(&dst, e))?;
    let Ok(entries) = std::fs::read_dir(&src) else {
        return Ok((0, 0));
    };
    let (mut n, mut bytes) = (0, 0);
    for e in entries {
        let e = e.map_err(|e| ServerError::io(&src, e))?;
        if e.file_type()
            .map_err(|x| ServerError::io(e.path(), x))?
            .is_file()
        {
            bytes += copy_file(&e.path(), &dst.join(e.file_name()), false)?;
            n += 1;
        }
    }
    Ok((n, bytes))
}

fn empty_or_new(dir: &Path, what: &str) -> Result<(), ServerError> {
    match std::fs::read_dir(dir).map(|mut d| d.next().is_some()) {
        Ok(true) => Err(ServerError::Config(format!(
            "{what} {} is not empty: give a new directory",
            dir.display()
        ))),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| ServerError::io(dir, e))
        }
        Err(e) => Err(ServerError::io(dir, e)),
    }
}

/// Backs up the server whose data directory is `data_dir` (and database `database`, as
/// `edgecd server --database` takes it) into the new directory `out`, while it runs.
pub async fn backup(
    data_dir: &Path,
    database_url: Option<&str>,
    out: &Path,
) -> Result<BackupManifest, ServerError> {
    let db = database(data_dir, database_url)?;
    if !data_dir.join("keys/assignment.key").is_file() {
        return Err(ServerError::Config(format!(
            "{} has no keys/assignment.key: is --data-dir the server's data directory?",
            data_dir.display()
        )));
    }
    empty_or_new(out, "backup directory")?;
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let backend = match &db {
        Db::Sqlite(path) => {
            store::sqlite::snapshot(path, &out.join(SQLITE_FILE)).await?;
            "sqlite"
        }
        Db::Postgres(url) => {
            let mut c = Command::new(pg_tool("pg_dump"));
            c.args(["--format=custom", "--no-owner", "--no-privileges", "--file"])
                .arg(out.join(PG_FILE))
                .arg("--dbname")
                .arg(url);
            run(c, "pg_dump")?;
            "postgres"
        }
    };
    for f in SECRET_FILES {
        if data_dir.join(f).is_file() {
            copy_file(&data_dir.join(f), &out.join(f), true)?;
        }
    }
    for f in PUBLIC_FILES {
        if data_dir.join(f).is_file() {
            copy_file(&data_dir.join(f), &out.join(f), false)?;
        }
    }
    let (blobs, blob_bytes) = copy_blobs(data_dir, out)?;
    let m = BackupManifest {
        format: FORMAT,
        backend: backend.into(),
        created_ms,
        edgecd_version: env!("CARGO_PKG_VERSION").into(),
        blobs,
        blob_bytes,
    };
    let json = serde_json::to_vec_pretty(&m).map_err(|e| ServerError::Config(e.to_string()))?;
    std::fs::write(out.join(MANIFEST), json).map_err(|e| ServerError::io(out.join(MANIFEST), e))?;
    tracing::info!(out = %out.display(), backend, blobs, "backup written");
    Ok(m)
}

/// Reads a backup's manifest, refusing an incomplete or unknown one.
pub fn manifest(backup_dir: &Path) -> Result<BackupManifest, ServerError> {
    let p = backup_dir.join(MANIFEST);
    let bytes = std::fs::read(&p).map_err(|e| {
        ServerError::Config(format!(
            "{} is not a complete edgecd backup (no {MANIFEST}: {e})",
            backup_dir.display()
        ))
    })?;
    let m: BackupManifest = serde_json::from_slice(&bytes)
        .map_err(|e| ServerError::Corrupt(format!("{}: {e}", p.display())))?;
    if m.format != FORMAT {
        return Err(ServerError::Config(format!(
            "{}: backup format {} is not {FORMAT}: restore it with the edgecd version that wrote it ({})",
            p.display(),
            m.format,
            m.edgecd_version
        )));
    }
    Ok(m)
}

/// Restores the backup `backup_dir` into the fresh data directory `data_dir` (empty or new)
/// and, for a PostgreSQL backup, the empty database `database_url`.
pub async fn restore(
    backup_dir: &Path,
    data_dir: &Path,
    database_url: Option<&str>,
) -> Result<BackupManifest, ServerError> {
    let m = manifest(backup_dir)?;
    let db = database(data_dir, database_url)?;
    match (&db, m.backend.as_str()) {
        (Db::Sqlite(_), "sqlite") | (Db::Postgres(_), "postgres") => {}
        (Db::Sqlite(_), other) => {
            return Err(ServerError::Config(format!(
                "this backup holds a {other} database: pass --database with an empty {other} database"
            )));
        }
        (Db::Postgres(_), other) => {
            return Err(ServerError::Config(format!(
                "this backup holds a {other} database: restore it without --database (into DATA/edgecd.db)"
            )));
        }
    }
    empty_or_new(data_dir, "data directory")?;
    match &db {
        Db::Sqlite(path) => {
            if path.exists() {
                return Err(ServerError::Config(format!(
                    "{} exists: restore into a fresh database file",
                    path.display()
                )));
            }
            copy_file(&backup_dir.join(SQLITE_FILE), path, true)?;
        }
        Db::Postgres(url) => {
            if !store::postgres::is_empty(url).await? {
                return Err(ServerError::Config(format!(
                    "the database {} has tables: restore into an empty database (createdb NAME)",
                    store::redact_url(url)
                )));
            }
            let mut c = Command::new(pg_tool("pg_restore"));
            c.args([
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                "--dbname",
            ])
            .arg(url)
            .arg(backup_dir.join(PG_FILE));
            run(c, "pg_restore")?;
        }
    }
    for f in SECRET_FILES {
        if backup_dir.join(f).is_file() {
            copy_file(&backup_dir.join(f), &data_dir.join(f), true)?;
        }
    }
    for f in PUBLIC_FILES {
        if backup_dir.join(f).is_file() {
            copy_file(&backup_dir.join(f), &data_dir.join(f), false)?;
        }
    }
    copy_blobs(backup_dir, data_dir)?;
    tracing::info!(data_dir = %data_dir.display(), backend = %m.backend, "backup restored");
    Ok(m)
}

/// Runs a backup or restore future on a runtime of its own (for the `edgecd server backup|restore`
/// commands, which have none).
pub fn block_on<T>(
    f: impl std::future::Future<Output = Result<T, ServerError>>,
) -> Result<T, ServerError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServerError::io("tokio runtime", e))?
        .block_on(f)
}
