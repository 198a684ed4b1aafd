//! The notification outbox: table `notification_outbox` (migration 0003). A rollout's
//! notifications are inserted ([`insert`]) in the transaction that saves the state they
//! announce, so a notification exists if and only if that state change was saved. Each row
//! keeps its `X-Edgecd-Delivery` id, the attempts made so far and when the next one is due;
//! the channel's delivery task marks it `delivered` or `failed` ([`finish`]). Rows still
//! `pending` after a restart or crash are queued again when the notifier starts, and a periodic
//! sweep queues those a full queue could not take. Finished rows are deleted after
//! [`KEEP_FINISHED_SECS`] ([`purge`]).
//!
//! Delivery is at least once: a crash after the receiver accepted a notification but before its
//! row was marked repeats it once, with the same delivery id (receivers deduplicate on it).

use super::Notification;
use sqlx::{SqliteConnection, SqlitePool};

/// How long delivered and failed rows are kept (7 days).
pub const KEEP_FINISHED_SECS: i64 = 7 * 24 * 3600;

/// A notification with its outbox row, on its way to the channel's delivery task.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The outbox row.
    pub id: i64,
    /// `X-Edgecd-Delivery`: the same on every attempt, across restarts.
    pub delivery_id: String,
    pub notification: Notification,
}

/// Why the outbox could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("notification outbox: database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("notification outbox: cannot serialize the notification: {0}")]
    Json(#[from] serde_json::Error),
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Inserts `n` as a pending row (due now) on `conn` — the caller's transaction.
pub async fn insert(conn: &mut SqliteConnection, n: Notification) -> Result<Queued, OutboxError> {
    let delivery_id = super::deliver::delivery_id();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO notification_outbox (channel, delivery_id, notification, created, attempts, next_attempt_ms, status)
         VALUES (?, ?, ?, ?, 0, ?, 'pending') RETURNING id",
    )
    .bind(&n.channel)
    .bind(&delivery_id)
    .bind(serde_json::to_string(&n)?)
    .bind(crate::util::now() as i64)
    .bind(now_ms())
    .fetch_one(&mut *conn)
    .await?;
    Ok(Queued {
        id,
        delivery_id,
        notification: n,
    })
}

/// A pending row's attempts so far and when the next is due (unix ms); `None` once it is
/// delivered or failed (or gone).
pub async fn pending_state(pool: &SqlitePool, id: i64) -> Result<Option<(u32, i64)>, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT attempts, next_attempt_ms FROM notification_outbox WHERE id = ? AND status = 'pending'",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(a, n)| (u32::try_from(a).unwrap_or(0), n)))
}

/// Records a failed attempt that will be retried at `next_attempt_ms`.
pub async fn retry_later(
    pool: &SqlitePool,
    id: i64,
    attempts: u32,
    next_attempt_ms: i64,
    why: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notification_outbox SET attempts = ?, next_attempt_ms = ?, last_error = ?
         WHERE id = ? AND status = 'pending'",
    )
    .bind(i64::from(attempts))
    .bind(next_attempt_ms)
    .bind(why)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks a pending row delivered (`error` `None`) or failed for good.
pub async fn finish(
    pool: &SqlitePool,
    id: i64,
    attempts: u32,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notification_outbox SET status = ?, attempts = ?, finished = ?, last_error = COALESCE(?, last_error)
         WHERE id = ? AND status = 'pending'",
    )
    .bind(if error.is_none() { "delivered" } else { "failed" })
    .bind(i64::from(attempts))
    .bind(crate::util::now() as i64)
    .bind(error)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The pending rows of `channel` due by `due_ms`, oldest first, among the `limit` oldest, leaving
/// out `skip` (the ones already queued); and whether there may be more. A row whose JSON no
/// longer reads is marked failed.
pub async fn pending(
    pool: &SqlitePool,
    channel: &str,
    due_ms: i64,
    limit: usize,
    skip: &std::collections::HashSet<i64>,
) -> Result<(Vec<Queued>, bool), sqlx::Error> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, delivery_id, notification FROM notification_outbox
         WHERE status = 'pending' AND channel = ? AND next_attempt_ms <= ? ORDER BY id LIMIT ?",
    )
    .bind(channel)
    .bind(due_ms)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    let more = rows.len() >= limit;
    let mut out = vec![];
    for (id, delivery_id, text) in rows {
        if skip.contains(&id) {
            continue;
        }
        match serde_json::from_str::<Notification>(&text) {
            Ok(notification) => out.push(Queued {
                id,
                delivery_id,
                notification,
            }),
            Err(e) => {
                tracing::warn!(channel, outbox_id = id, error = %e, "unreadable notification in the outbox: marked failed");
                finish(pool, id, 0, Some(&format!("unreadable: {e}"))).await?;
            }
        }
    }
    Ok((out, more))
}

/// Marks failed every pending row of a channel not in `configured`; returns how many per
/// channel.
pub async fn fail_unconfigured(
    pool: &SqlitePool,
    configured: &[&str],
) -> Result<Vec<(String, u64)>, sqlx::Error> {
    let channels: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT channel FROM notification_outbox WHERE status = 'pending' ORDER BY channel",
    )
    .fetch_all(pool)
    .await?;
    let mut out = vec![];
    for (c,) in channels {
        if configured.contains(&c.as_str()) {
            continue;
        }
        let r = sqlx::query(
            "UPDATE notification_outbox SET status = 'failed', finished = ?, last_error = ?
             WHERE status = 'pending' AND channel = ?",
        )
        .bind(crate::util::now() as i64)
        .bind(format!(
            "channel {c} is not configured (anymore) in the notifications file"
        ))
        .bind(&c)
        .execute(pool)
        .await?;
        out.push((c, r.rows_affected()));
    }
    Ok(out)
}

/// Deletes delivered and failed rows finished before `now - KEEP_FINISHED_SECS`.
pub async fn purge(pool: &SqlitePool, now: i64) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "DELETE FROM notification_outbox WHERE status != 'pending' AND finished IS NOT NULL AND finished < ?",
    )
    .bind(now - KEEP_FINISHED_SECS)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}
