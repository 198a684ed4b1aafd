//! The SQLite store (WAL mode, forward-only migrations in `migrations/`).

use crate::error::ServerError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;

/// Migrations, applied in order; the applied count is kept in `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_rollouts.sql"),
    include_str!("../migrations/0003_notification_outbox.sql"),
    include_str!("../migrations/0004_assignment_floor.sql"),
    include_str!("../migrations/0005_metric_windows.sql"),
];

#[derive(Debug, Clone)]
pub struct Store {
    pub pool: SqlitePool,
}

/// One row of `devices` (JSON columns still as text).
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub id: String,
    pub cred_hash: String,
    pub labels: String,
    pub enrolled: i64,
    pub last_seen: Option<i64>,
    pub revoked: bool,
    pub inventory: Option<String>,
    pub status: Option<String>,
}

/// One row of `assignments`.
#[derive(Debug, Clone)]
pub struct AssignmentRow {
    pub device_id: String,
    pub version: i64,
    pub app: String,
    pub release_version: String,
    pub payload: String,
    pub signature: String,
    pub expires: i64,
    pub blobs: String,
}

impl Store {
    /// Opens (creating) `DATA/edgecd.db` and applies pending migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, ServerError> {
        let path = data_dir.join("edgecd.db");
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), ServerError> {
        let mut tx = self.pool.begin().await?;
        let applied: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await?;
        let applied = usize::try_from(applied)
            .map_err(|_| ServerError::Corrupt("negative user_version".into()))?;
        if applied > MIGRATIONS.len() {
            return Err(ServerError::Corrupt(format!(
                "database schema version {applied} is newer than this server ({}); upgrade edgecd",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(applied) {
            sqlx::raw_sql(m).execute(&mut *tx).await?;
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1))
                .execute(&mut *tx)
                .await?;
            tracing::info!(migration = i + 1, "applied database migration");
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn setting(&self, key: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The stored `ReleaseInfo` JSON of `app@version`, if published.
    pub async fn release(&self, app: &str, version: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT info FROM releases WHERE app = ? AND version = ?")
            .bind(app)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn device(&self, id: &str) -> Result<Option<DeviceRow>, sqlx::Error> {
        let row = sqlx::query("SELECT id, cred_hash, labels, enrolled, last_seen, revoked, inventory, status FROM devices WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| device_row(&r)).transpose()
    }

    pub async fn devices(&self) -> Result<Vec<DeviceRow>, sqlx::Error> {
        let rows = sqlx::query("SELECT id, cred_hash, labels, enrolled, last_seen, revoked, inventory, status FROM devices ORDER BY enrolled, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_row).collect()
    }

    pub async fn assignment(&self, device_id: &str) -> Result<Option<AssignmentRow>, sqlx::Error> {
        let row = sqlx::query("SELECT device_id, version, app, release_version, payload, signature, expires, blobs FROM assignments WHERE device_id = ?")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(AssignmentRow {
                device_id: r.try_get(0)?,
                version: r.try_get(1)?,
                app: r.try_get(2)?,
                release_version: r.try_get(3)?,
                payload: r.try_get(4)?,
                signature: r.try_get(5)?,
                expires: r.try_get(6)?,
                blobs: r.try_get(7)?,
            })
        })
        .transpose()
    }

    /// The version the device's next assignment must carry: above its current assignment and
    /// above any version the device proved it accepted (`assignment_floor`).
    pub async fn next_assignment_version(&self, device_id: &str) -> Result<u64, sqlx::Error> {
        let (v,): (i64,) = sqlx::query_as(
            "SELECT MAX(COALESCE((SELECT version FROM assignments WHERE device_id = ?1), 0),
                        COALESCE((SELECT assignment_floor FROM devices WHERE id = ?1), 0))",
        )
        .bind(device_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(v as u64 + 1)
    }

    /// Raises the device's assignment floor to `version` (never lowers it).
    pub async fn raise_assignment_floor(
        &self,
        device_id: &str,
        version: u64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE devices SET assignment_floor = MAX(assignment_floor, ?) WHERE id = ?")
            .bind(version as i64)
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Inserts or replaces a device's assignment; refuses to lower its version.
    pub async fn put_assignment(&self, a: &AssignmentRow) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(
            "INSERT INTO assignments(device_id, version, app, release_version, payload, signature, expires, blobs)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(device_id) DO UPDATE SET version = excluded.version, app = excluded.app,
               release_version = excluded.release_version, payload = excluded.payload,
               signature = excluded.signature, expires = excluded.expires, blobs = excluded.blobs
             WHERE excluded.version > assignments.version",
        )
        .bind(&a.device_id)
        .bind(a.version)
        .bind(&a.app)
        .bind(&a.release_version)
        .bind(&a.payload)
        .bind(&a.signature)
        .bind(a.expires)
        .bind(&a.blobs)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Test and recovery hook: replaces an assignment regardless of its version.
    pub async fn force_assignment(&self, a: &AssignmentRow) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM assignments WHERE device_id = ?")
            .bind(&a.device_id)
            .execute(&self.pool)
            .await?;
        self.put_assignment(a).await.map(|_| ())
    }

    pub async fn event(
        &self,
        device_id: Option<&str>,
        kind: &str,
        detail: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO events(device_id, at, kind, detail) VALUES (?, ?, ?, ?)")
            .bind(device_id)
            .bind(crate::util::now() as i64)
            .bind(kind)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Events recorded for a device, oldest first: `(at, kind, detail)`.
    pub async fn events(&self, device_id: &str) -> Result<Vec<(i64, String, String)>, sqlx::Error> {
        sqlx::query_as("SELECT at, kind, detail FROM events WHERE device_id = ? ORDER BY id")
            .bind(device_id)
            .fetch_all(&self.pool)
            .await
    }
}

fn device_row(r: &sqlx::sqlite::SqliteRow) -> Result<DeviceRow, sqlx::Error> {
    Ok(DeviceRow {
        id: r.try_get(0)?,
        cred_hash: r.try_get(1)?,
        labels: r.try_get(2)?,
        enrolled: r.try_get(3)?,
        last_seen: r.try_get(4)?,
        revoked: r.try_get::<i64, _>(5)? != 0,
        inventory: r.try_get(6)?,
        status: r.try_get(7)?,
    })
}
