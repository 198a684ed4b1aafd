//! The PostgreSQL backend (`--database postgres://…`): all of its SQL. Several server
//! replicas may share one database. Forward-only migrations in `migrations/postgres/`, the
//! same steps as SQLite's; the applied count is kept in `schema_version`, and replicas that
//! start together take turns through a transaction-scoped advisory lock.

use super::{
    ApiTokenRow, AssignmentRow, AssignmentTuple, AuditRow, ConsoleSessionRow, DeviceLogsRow,
    DeviceRow, Fenced, FleetRow, GitopsRow, NewDevice, OutboxInsert, OutboxRow, RolloutGuard,
    RolloutSave, Store, StoreResult, TokenRefusal, TrustedKeyRow, merge_labels,
};
use crate::error::ServerError;
use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::collections::BTreeMap;

/// Migrations, applied in order (the same steps as SQLite's, in PostgreSQL's dialect).
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_rollouts.sql"),
    include_str!("../../migrations/postgres/0003_notification_outbox.sql"),
    include_str!("../../migrations/postgres/0004_assignment_floor.sql"),
    include_str!("../../migrations/postgres/0005_metric_windows.sql"),
    include_str!("../../migrations/postgres/0006_controller_lease.sql"),
    include_str!("../../migrations/postgres/0007_access.sql"),
    include_str!("../../migrations/postgres/0008_fleets.sql"),
    include_str!("../../migrations/postgres/0009_console_sessions.sql"),
    include_str!("../../migrations/postgres/0010_device_logs.sql"),
    include_str!("../../migrations/postgres/0011_chat_replays.sql"),
    include_str!("../../migrations/postgres/0012_app_assignments.sql"),
    include_str!("../../migrations/postgres/0013_gitops.sql"),
];

/// The advisory lock replicas take while migrating (an arbitrary, fixed key).
const MIGRATION_LOCK: i64 = 0x6564_6763_6d69_6772;
/// The advisory lock that serializes changes to rollouts across replicas.
const ROLLOUT_LOCK: i64 = 0x6564_6763_726f_6c6c;

#[derive(Debug, Clone)]
pub struct PgStore {
    pub pool: PgPool,
}

/// True when the database at `url` has no tables yet (a restore target must be empty).
pub async fn is_empty(url: &str) -> Result<bool, ServerError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|e| {
            ServerError::Config(format!(
                "cannot connect to PostgreSQL at {}: {e} (create the database first)",
                super::redact_url(url)
            ))
        })?;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    Ok(n == 0)
}

const TOKEN_COLUMNS: &str = "SELECT name, role, hash, created, rotated, revoked FROM api_tokens";

fn token_row(r: &sqlx::postgres::PgRow) -> Result<ApiTokenRow, sqlx::Error> {
    Ok(ApiTokenRow {
        name: r.try_get(0)?,
        role: r.try_get(1)?,
        hash: r.try_get(2)?,
        created: r.try_get(3)?,
        rotated: r.try_get(4)?,
        revoked: r.try_get(5)?,
    })
}

const DEVICE_COLUMNS: &str =
    "SELECT id, cred_hash, labels, enrolled, last_seen, revoked, inventory, status FROM devices";

impl PgStore {
    /// Connects to `url` and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, ServerError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| {
                ServerError::Config(format!(
                    "cannot connect to PostgreSQL at {}: {e} (is it running, and does the database exist?)",
                    super::redact_url(url)
                ))
            })?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), ServerError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&mut *tx)
            .await?;
        let applied = usize::try_from(applied.unwrap_or(0))
            .map_err(|_| ServerError::Corrupt("negative schema_version".into()))?;
        if applied > MIGRATIONS.len() {
            return Err(ServerError::Corrupt(format!(
                "database schema version {applied} is newer than this server ({}); upgrade edgecd",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(applied) {
            sqlx::raw_sql(m).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind((i + 1) as i64)
                .execute(&mut *tx)
                .await?;
            tracing::info!(migration = i + 1, "applied database migration");
        }
        tx.commit().await?;
        Ok(())
    }
}

fn device_row(r: &sqlx::postgres::PgRow) -> Result<DeviceRow, sqlx::Error> {
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

async fn insert_outbox(
    conn: &mut sqlx::PgConnection,
    n: &OutboxInsert,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO notification_outbox (channel, delivery_id, notification, created, attempts, next_attempt_ms, status)
         VALUES ($1, $2, $3, $4, 0, $5, 'pending') RETURNING id",
    )
    .bind(&n.channel)
    .bind(&n.delivery_id)
    .bind(&n.notification)
    .bind(n.created)
    .bind(n.next_attempt_ms)
    .fetch_one(conn)
    .await
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
    }

    async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO settings(key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        sqlx::query("INSERT INTO settings(key, value) VALUES ($1, $2) ON CONFLICT(key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
    }

    async fn put_trusted_key(&self, k: &TrustedKeyRow) -> StoreResult<()> {
        sqlx::query("INSERT INTO trusted_keys(hint, name, pem, added) VALUES ($1, $2, $3, $4) ON CONFLICT(hint) DO UPDATE SET name = excluded.name")
            .bind(&k.hint)
            .bind(&k.name)
            .bind(&k.pem)
            .bind(k.added)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn trusted_keys(&self) -> StoreResult<Vec<TrustedKeyRow>> {
        let rows: Vec<(String, Option<String>, String, i64)> =
            sqlx::query_as("SELECT hint, name, pem, added FROM trusted_keys ORDER BY added")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(hint, name, pem, added)| TrustedKeyRow {
                hint,
                name,
                pem,
                added,
            })
            .collect())
    }

    async fn release(&self, app: &str, version: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT info FROM releases WHERE app = $1 AND version = $2")
            .bind(app)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
    }

    async fn insert_release(
        &self,
        app: &str,
        version: &str,
        info: &str,
        published: i64,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "INSERT INTO releases(app, version, info, published) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(app)
        .bind(version)
        .bind(info)
        .bind(published)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn release_infos(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT info FROM releases ORDER BY published, app, version")
            .fetch_all(&self.pool)
            .await
    }

    async fn create_enroll_token(
        &self,
        hash: &str,
        labels: &str,
        expires: i64,
        uses: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO enroll_tokens(hash, labels, expires, uses_left) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(labels)
        .bind(expires)
        .bind(uses)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn enroll(
        &self,
        token_hash: &str,
        now: i64,
        device: &NewDevice,
    ) -> StoreResult<Result<BTreeMap<String, String>, TokenRefusal>> {
        let mut tx = self.pool.begin().await?;
        // Take one use of the token with a single write, so concurrent enrollments queue on
        // SQLite's write lock instead of failing a read-then-write upgrade.
        let taken: Option<String> = sqlx::query_scalar(
            "UPDATE enroll_tokens SET uses_left = uses_left - 1 \
             WHERE hash = $1 AND expires > $2 AND uses_left > 0 RETURNING labels",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(token_labels) = taken else {
            let row: Option<(i64, i64)> =
                sqlx::query_as("SELECT expires, uses_left FROM enroll_tokens WHERE hash = $1")
                    .bind(token_hash)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(Err(match row {
                None => TokenRefusal::Unknown,
                Some((expires, _)) if expires <= now => TokenRefusal::Expired,
                Some(_) => TokenRefusal::UsedUp,
            }));
        };
        let labels = merge_labels(&device.labels, &token_labels)?;
        sqlx::query(
            "INSERT INTO devices(id, cred_hash, labels, enrolled, inventory) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&device.id)
        .bind(&device.cred_hash)
        .bind(serde_json::to_string(&labels).map_err(|e| sqlx::Error::Encode(Box::new(e)))?)
        .bind(device.enrolled)
        .bind(&device.inventory)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(labels))
    }

    async fn device(&self, id: &str) -> StoreResult<Option<DeviceRow>> {
        let row = sqlx::query(&format!("{DEVICE_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| device_row(&r)).transpose()
    }

    async fn devices(&self) -> StoreResult<Vec<DeviceRow>> {
        let rows = sqlx::query(&format!("{DEVICE_COLUMNS} ORDER BY enrolled, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_row).collect()
    }

    async fn record_checkin(
        &self,
        id: &str,
        at: i64,
        inventory: &str,
        status: &str,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE devices SET last_seen = $1, inventory = $2, status = $3 WHERE id = $4")
            .bind(at)
            .bind(inventory)
            .bind(status)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_labels(&self, id: &str, labels: &str) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE devices SET labels = $1 WHERE id = $2")
            .bind(labels)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn revoke(&self, id: &str) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE devices SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn delete_device(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // Its logs and diagnosis go with it (they are the device's, redacted or not).
        for table in ["assignments", "device_logs"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE device_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let r = sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    async fn assignment(&self, device_id: &str) -> StoreResult<Option<AssignmentRow>> {
        Ok(self
            .device_assignments(device_id)
            .await?
            .into_iter()
            .filter(|a| !a.removed)
            .max_by_key(|a| a.version))
    }

    async fn app_assignment(
        &self,
        device_id: &str,
        app: &str,
    ) -> StoreResult<Option<AssignmentRow>> {
        let row: Option<AssignmentTuple> = sqlx::query_as(
            "SELECT device_id, version, app, release_version, payload, signature, expires, blobs, removed FROM assignments WHERE device_id = $1 AND app = $2",
        )
        .bind(device_id)
        .bind(app)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(AssignmentRow::from))
    }

    async fn device_assignments(&self, device_id: &str) -> StoreResult<Vec<AssignmentRow>> {
        let rows: Vec<AssignmentTuple> = sqlx::query_as(
            "SELECT device_id, version, app, release_version, payload, signature, expires, blobs, removed FROM assignments WHERE device_id = $1 ORDER BY app",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(AssignmentRow::from).collect())
    }

    async fn next_assignment_version(&self, device_id: &str) -> StoreResult<u64> {
        let v: i64 = sqlx::query_scalar(
            "SELECT GREATEST(COALESCE((SELECT MAX(version) FROM assignments WHERE device_id = $1), 0),
                        COALESCE((SELECT assignment_floor FROM devices WHERE id = $1), 0))",
        )
        .bind(device_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(v as u64 + 1)
    }

    async fn raise_assignment_floor(&self, device_id: &str, version: u64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE devices SET assignment_floor = GREATEST(assignment_floor, $1) WHERE id = $2",
        )
        .bind(version as i64)
        .bind(device_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn put_assignment(&self, a: &AssignmentRow) -> StoreResult<bool> {
        // Above every assignment of the device (any app) and above the app's own: two
        // writers racing for one version of an app cannot both win.
        let r = sqlx::query(
            "INSERT INTO assignments(device_id, version, app, release_version, payload, signature, expires, blobs, removed)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $11
             WHERE $9 > COALESCE((SELECT MAX(version) FROM assignments WHERE device_id = $10), 0)
             ON CONFLICT(device_id, app) DO UPDATE SET version = excluded.version,
               release_version = excluded.release_version, payload = excluded.payload,
               signature = excluded.signature, expires = excluded.expires, blobs = excluded.blobs,
               removed = excluded.removed
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
        .bind(a.version)
        .bind(&a.device_id)
        .bind(a.removed as i32)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn force_assignment(&self, a: &AssignmentRow) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM assignments WHERE device_id = $1 AND app = $2")
            .bind(&a.device_id)
            .bind(&a.app)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO assignments(device_id, version, app, release_version, payload, signature, expires, blobs, removed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&a.device_id)
        .bind(a.version)
        .bind(&a.app)
        .bind(&a.release_version)
        .bind(&a.payload)
        .bind(&a.signature)
        .bind(a.expires)
        .bind(&a.blobs)
        .bind(a.removed as i32)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn event(
        &self,
        device_id: Option<&str>,
        at: i64,
        kind: &str,
        detail: &str,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO events(device_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
            .bind(device_id)
            .bind(at)
            .bind(kind)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn events(&self, device_id: &str) -> StoreResult<Vec<(i64, String, String)>> {
        sqlx::query_as("SELECT at, kind, detail FROM events WHERE device_id = $1 ORDER BY id")
            .bind(device_id)
            .fetch_all(&self.pool)
            .await
    }

    async fn insert_rollout(
        &self,
        id: &str,
        app: &str,
        state: &str,
        created: i64,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO rollouts (id, app, state, created, updated, finished) VALUES ($1, $2, $3, $4, $5, 0)")
            .bind(id)
            .bind(app)
            .bind(state)
            .bind(created)
            .bind(created)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn rollout_state(&self, id: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT state FROM rollouts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    async fn active_rollout_for_app(&self, app: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT id FROM rollouts WHERE app = $1 AND finished = 0")
            .bind(app)
            .fetch_optional(&self.pool)
            .await
    }

    async fn active_rollout_ids(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT id FROM rollouts WHERE finished = 0 ORDER BY created, id")
            .fetch_all(&self.pool)
            .await
    }

    async fn active_rollout_states(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT state FROM rollouts WHERE finished = 0 ORDER BY created, id")
            .fetch_all(&self.pool)
            .await
    }

    async fn rollout_states(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT state FROM rollouts ORDER BY created DESC, id DESC")
            .fetch_all(&self.pool)
            .await
    }

    async fn rollout_audit(&self, id: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT record FROM rollout_audit WHERE rollout_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await
    }

    async fn save_rollout(&self, s: &RolloutSave) -> StoreResult<Result<Vec<i64>, Fenced>> {
        let mut tx = self.pool.begin().await?;
        if let Some(f) = &s.fence {
            let held: Option<(String, i64)> =
                sqlx::query_as("SELECT holder, epoch FROM leases WHERE name = $1 FOR UPDATE")
                    .bind(crate::controller::LEASE)
                    .fetch_optional(&mut *tx)
                    .await?;
            if held.as_ref() != Some(&(f.holder.clone(), f.epoch)) {
                return Ok(Err(Fenced {
                    epoch: held.as_ref().map_or(0, |h| h.1),
                    holder: held.map(|h| h.0),
                }));
            }
        }
        sqlx::query("UPDATE rollouts SET state = $1, updated = $2, finished = $3 WHERE id = $4")
            .bind(&s.state)
            .bind(s.updated)
            .bind(i64::from(s.finished))
            .bind(&s.id)
            .execute(&mut *tx)
            .await?;
        for (at, kind, record) in &s.audit {
            sqlx::query(
                "INSERT INTO rollout_audit (rollout_id, at, kind, record) VALUES ($1, $2, $3, $4)",
            )
            .bind(&s.id)
            .bind(at)
            .bind(kind)
            .bind(record)
            .execute(&mut *tx)
            .await?;
        }
        let mut ids = Vec::with_capacity(s.outbox.len());
        for n in &s.outbox {
            ids.push(insert_outbox(&mut tx, n).await?);
        }
        tx.commit().await?;
        Ok(Ok(ids))
    }

    async fn lock_rollouts(&self) -> StoreResult<RolloutGuard> {
        // A transaction-scoped advisory lock: released when the guard's transaction ends
        // (dropped: rolled back), or by the database when this server's connection dies.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ROLLOUT_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(RolloutGuard::new(tx))
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        _now_ms: i64,
    ) -> StoreResult<Option<i64>> {
        sqlx::query_scalar(
            "WITH now AS (SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT AS ms)
             INSERT INTO leases (name, holder, epoch, expires_ms)
             SELECT $1, $2, 1, now.ms + $3 FROM now
             ON CONFLICT (name) DO UPDATE SET
               holder = excluded.holder,
               epoch = CASE WHEN leases.holder = excluded.holder THEN leases.epoch ELSE leases.epoch + 1 END,
               expires_ms = excluded.expires_ms
             WHERE leases.holder = excluded.holder
                OR leases.expires_ms < (SELECT ms FROM now)
             RETURNING epoch",
        )
        .bind(name)
        .bind(holder)
        .bind(ttl_ms)
        .fetch_optional(&self.pool)
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn lease(&self, name: &str) -> StoreResult<Option<(String, i64, i64)>> {
        sqlx::query_as("SELECT holder, epoch, expires_ms FROM leases WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
    }

    async fn insert_device_metrics(
        &self,
        device_id: &str,
        at: i64,
        release: &str,
        agg: &str,
        since: Option<i64>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO device_metrics (device_id, at, release, agg, since) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(device_id)
        .bind(at)
        .bind(release)
        .bind(agg)
        .bind(since)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn device_metrics_since(
        &self,
        since: i64,
        release: &str,
    ) -> StoreResult<Vec<(String, String)>> {
        sqlx::query_as(
            "SELECT device_id, agg FROM device_metrics WHERE since IS NOT NULL AND since >= $1 AND release = $2",
        )
        .bind(since)
        .bind(release)
        .fetch_all(&self.pool)
        .await
    }

    async fn prune_device_metrics(&self, before: i64) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM device_metrics WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn outbox_insert(&self, n: &OutboxInsert) -> StoreResult<i64> {
        let mut conn = self.pool.acquire().await?;
        insert_outbox(&mut conn, n).await
    }

    async fn outbox_pending_state(&self, id: i64) -> StoreResult<Option<(i64, i64)>> {
        sqlx::query_as(
            "SELECT attempts, next_attempt_ms FROM notification_outbox WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    async fn outbox_retry_later(
        &self,
        id: i64,
        attempts: i64,
        next_attempt_ms: i64,
        why: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE notification_outbox SET attempts = $1, next_attempt_ms = $2, last_error = $3
             WHERE id = $4 AND status = 'pending'",
        )
        .bind(attempts)
        .bind(next_attempt_ms)
        .bind(why)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn outbox_finish(
        &self,
        id: i64,
        status: &str,
        attempts: i64,
        finished: i64,
        error: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE notification_outbox SET status = $1, attempts = $2, finished = $3, last_error = COALESCE($4, last_error)
             WHERE id = $5 AND status = 'pending'",
        )
        .bind(status)
        .bind(attempts)
        .bind(finished)
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn outbox_due(
        &self,
        channel: &str,
        due_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, String, String)>> {
        sqlx::query_as(
            "SELECT id, delivery_id, notification FROM notification_outbox
             WHERE status = 'pending' AND channel = $1 AND next_attempt_ms <= $2 ORDER BY id LIMIT $3",
        )
        .bind(channel)
        .bind(due_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    async fn outbox_pending_channels(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT channel FROM notification_outbox WHERE status = 'pending' ORDER BY channel",
        )
        .fetch_all(&self.pool)
        .await
    }

    async fn outbox_fail_channel(&self, channel: &str, now: i64, why: &str) -> StoreResult<u64> {
        let r = sqlx::query(
            "UPDATE notification_outbox SET status = 'failed', finished = $1, last_error = $2
             WHERE status = 'pending' AND channel = $3",
        )
        .bind(now)
        .bind(why)
        .bind(channel)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn outbox_purge(&self, before: i64) -> StoreResult<u64> {
        let r = sqlx::query(
            "DELETE FROM notification_outbox WHERE status != 'pending' AND finished IS NOT NULL AND finished < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn outbox_pending_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        sqlx::query_as(
            "SELECT channel, COUNT(*) FROM notification_outbox WHERE status = 'pending' GROUP BY channel",
        )
        .fetch_all(&self.pool)
        .await
    }

    async fn outbox_rows(&self) -> StoreResult<Vec<OutboxRow>> {
        let rows: Vec<(i64, String, String, String, i64, Option<String>, String)> = sqlx::query_as(
            "SELECT id, channel, delivery_id, status, attempts, last_error, notification FROM notification_outbox ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, channel, delivery_id, status, attempts, last_error, notification)| {
                    OutboxRow {
                        id,
                        channel,
                        delivery_id,
                        status,
                        attempts,
                        last_error,
                        notification,
                    }
                },
            )
            .collect())
    }

    async fn api_token_create(&self, t: &ApiTokenRow) -> StoreResult<bool> {
        let r = sqlx::query(
            "INSERT INTO api_tokens (name, role, hash, created, rotated, revoked) VALUES ($1, $2, $3, $4, NULL, NULL)
             ON CONFLICT(name) DO UPDATE SET role = excluded.role, hash = excluded.hash,
               created = excluded.created, rotated = NULL, revoked = NULL
             WHERE api_tokens.revoked IS NOT NULL",
        )
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.hash)
        .bind(t.created)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn api_token_ensure(&self, t: &ApiTokenRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_tokens (name, role, hash, created, rotated, revoked) VALUES ($1, $2, $3, $4, NULL, NULL)
             ON CONFLICT DO NOTHING",
        )
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.hash)
        .bind(t.created)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn api_token_by_hash(&self, hash: &str) -> StoreResult<Option<ApiTokenRow>> {
        let r = sqlx::query(&format!("{TOKEN_COLUMNS} WHERE hash = $1"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(token_row).transpose()
    }

    async fn api_tokens(&self) -> StoreResult<Vec<ApiTokenRow>> {
        let rows = sqlx::query(&format!("{TOKEN_COLUMNS} ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_row).collect()
    }

    async fn api_token_rotate(&self, name: &str, hash: &str, now: i64) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE api_tokens SET hash = $1, rotated = $2 WHERE name = $3 AND revoked IS NULL",
        )
        .bind(hash)
        .bind(now)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn api_token_revoke(&self, name: &str, now: i64) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE api_tokens SET revoked = $1 WHERE name = $2 AND revoked IS NULL
               AND (role <> 'admin'
                    OR (SELECT count(*) FROM api_tokens WHERE role = 'admin' AND revoked IS NULL) > 1)",
        )
        .bind(now)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn audit_insert(&self, r: &AuditRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (at_ms, token, role, method, route, path, status, peer, forwarded_for, summary)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(r.at_ms)
        .bind(&r.token)
        .bind(&r.role)
        .bind(&r.method)
        .bind(&r.route)
        .bind(&r.path)
        .bind(r.status)
        .bind(&r.peer)
        .bind(&r.forwarded_for)
        .bind(&r.summary)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit(
        &self,
        since_ms: i64,
        token: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, token, role, method, route, path, status, peer, forwarded_for, summary
             FROM audit_log WHERE at_ms >= $1 AND ($2::TEXT IS NULL OR token = $2)
             ORDER BY id DESC LIMIT $3",
        )
        .bind(since_ms)
        .bind(token)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    token: r.try_get(2)?,
                    role: r.try_get(3)?,
                    method: r.try_get(4)?,
                    route: r.try_get(5)?,
                    path: r.try_get(6)?,
                    status: r.try_get(7)?,
                    peer: r.try_get(8)?,
                    forwarded_for: r.try_get(9)?,
                    summary: r.try_get(10)?,
                })
            })
            .collect()
    }

    async fn execute_raw(&self, sql: &str) -> StoreResult<()> {
        sqlx::raw_sql(sql).execute(&self.pool).await.map(|_| ())
    }

    async fn console_session_create(&self, s: &ConsoleSessionRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, token_name, token_hash, created, expires)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&s.id_hash)
        .bind(&s.token_name)
        .bind(&s.token_hash)
        .bind(s.created)
        .bind(s.expires)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn console_session(&self, id_hash: &str) -> StoreResult<Option<ConsoleSessionRow>> {
        let r = sqlx::query(
            "SELECT id_hash, token_name, token_hash, created, expires FROM console_sessions WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| {
            Ok(ConsoleSessionRow {
                id_hash: r.try_get(0)?,
                token_name: r.try_get(1)?,
                token_hash: r.try_get(2)?,
                created: r.try_get(3)?,
                expires: r.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn console_session_delete(&self, id_hash: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn console_sessions_purge(&self, now: i64) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM console_sessions WHERE expires <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn device_logs_request(
        &self,
        device_id: &str,
        request_id: &str,
        lines: i64,
        diagnose: bool,
        at: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO device_logs (device_id, request_id, lines, diagnose, requested_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (device_id) DO UPDATE SET
               request_id = excluded.request_id,
               lines = excluded.lines,
               diagnose = excluded.diagnose OR (device_logs.diagnose
                 AND (device_logs.answered_id IS NULL OR device_logs.answered_id <> device_logs.request_id)),
               requested_at = excluded.requested_at",
        )
        .bind(device_id)
        .bind(request_id)
        .bind(lines)
        .bind(diagnose)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn device_logs(&self, device_id: &str) -> StoreResult<Option<DeviceLogsRow>> {
        let row = sqlx::query(
            "SELECT request_id, lines, diagnose, requested_at, answered_id, received_at, report
             FROM device_logs WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(DeviceLogsRow {
                request_id: r.try_get(0)?,
                lines: r.try_get(1)?,
                diagnose: r.try_get(2)?,
                requested_at: r.try_get(3)?,
                answered_id: r.try_get(4)?,
                received_at: r.try_get(5)?,
                report: r.try_get(6)?,
            })
        })
        .transpose()
    }

    async fn device_logs_pending(
        &self,
        device_id: &str,
    ) -> StoreResult<Option<(String, i64, bool)>> {
        sqlx::query_as(
            "SELECT request_id, lines, diagnose FROM device_logs
             WHERE device_id = $1 AND (answered_id IS NULL OR answered_id <> request_id)",
        )
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await
    }

    async fn device_logs_put(
        &self,
        device_id: &str,
        request_id: &str,
        at: i64,
        report: &str,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE device_logs SET answered_id = request_id, received_at = $1, report = $2
             WHERE device_id = $3 AND request_id = $4",
        )
        .bind(at)
        .bind(report)
        .bind(device_id)
        .bind(request_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn device_metrics_of(
        &self,
        device_id: &str,
        since: i64,
    ) -> StoreResult<Vec<(i64, String)>> {
        sqlx::query_as(
            "SELECT at, agg FROM device_metrics WHERE device_id = $1 AND at >= $2 ORDER BY at",
        )
        .bind(device_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await
    }

    async fn chat_replay_first(
        &self,
        key: &str,
        expires_ms: i64,
        now_ms: i64,
    ) -> StoreResult<bool> {
        sqlx::query("DELETE FROM chat_replays WHERE expires_ms < $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        let r = sqlx::query(
            "INSERT INTO chat_replays (key, expires_ms) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn put_fleet(&self, f: &FleetRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO fleets (name, spec, origin, updated_ms, state) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, origin = excluded.origin,
               updated_ms = excluded.updated_ms, state = excluded.state",
        )
        .bind(&f.name)
        .bind(&f.spec)
        .bind(&f.origin)
        .bind(f.updated_ms)
        .bind(&f.state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn fleet(&self, name: &str) -> StoreResult<Option<FleetRow>> {
        sqlx::query("SELECT name, spec, origin, updated_ms, state FROM fleets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(fleet_row)
            .transpose()
    }

    async fn fleets(&self) -> StoreResult<Vec<FleetRow>> {
        sqlx::query("SELECT name, spec, origin, updated_ms, state FROM fleets ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(fleet_row)
            .collect()
    }

    async fn delete_fleet(&self, name: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM fleets WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn assigned_releases(&self) -> StoreResult<Vec<(String, String, String)>> {
        sqlx::query("SELECT device_id, app, release_version FROM assignments WHERE removed = 0")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    async fn gitops(&self) -> StoreResult<Option<GitopsRow>> {
        sqlx::query("SELECT source, status, wake_ms FROM gitops WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?
            .map(|r| {
                Ok(GitopsRow {
                    source: r.try_get(0)?,
                    status: r.try_get(1)?,
                    wake_ms: r.try_get(2)?,
                })
            })
            .transpose()
    }

    async fn put_gitops(&self, source: &str, status: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO gitops (id, source, status, wake_ms) VALUES (1, $1, $2, 0)
             ON CONFLICT(id) DO UPDATE SET source = excluded.source, status = excluded.status",
        )
        .bind(source)
        .bind(status)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_gitops_status(
        &self,
        status: &str,
        fence: Option<&crate::controller::Fence>,
    ) -> StoreResult<bool> {
        // The lease check and the write in one statement: nothing in between.
        let r = sqlx::query(
            "UPDATE gitops SET status = $1 WHERE id = 1
               AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM leases WHERE name = $3 AND holder = $2 AND epoch = $4))",
        )
        .bind(status)
        .bind(fence.map(|f| f.holder.clone()))
        .bind(crate::controller::LEASE)
        .bind(fence.map_or(0, |f| f.epoch))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn gitops_wake(&self, now_ms: i64) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE gitops SET wake_ms = $1 WHERE id = 1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_gitops(&self) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM gitops WHERE id = 1")
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}

fn fleet_row(r: &sqlx::postgres::PgRow) -> Result<FleetRow, sqlx::Error> {
    Ok(FleetRow {
        name: r.try_get(0)?,
        spec: r.try_get(1)?,
        origin: r.try_get(2)?,
        updated_ms: r.try_get(3)?,
        state: r.try_get(4)?,
    })
}
