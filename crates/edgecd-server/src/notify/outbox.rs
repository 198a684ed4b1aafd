//! The notification outbox: table `notification_outbox` (migration 0003). A rollout's
//! notifications are [`prepare`]d and inserted in the transaction that saves the state they
//! announce (`Store::save_rollout`), so a notification exists if and only if that state change
//! was saved. Each row
//! keeps its `X-Edgecd-Delivery` id, the attempts made so far and when the next one is due;
//! the channel's delivery task marks it `delivered` or `failed` ([`finish`]). Rows still
//! `pending` after a restart or crash are queued again when the notifier starts, and a periodic
//! sweep queues those a full queue could not take. Finished rows are deleted after
//! [`KEEP_FINISHED_SECS`] ([`purge`]).
//!
//! Delivery is at least once: a crash after the receiver accepted a notification but before its
//! row was marked repeats it once, with the same delivery id (receivers deduplicate on it).

use super::Notification;
use crate::store::{OutboxInsert, Store};

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

/// The row for `n` (pending, due now, a new delivery id), to insert in the caller's
/// transaction; [`Self::queued`] pairs it with its id afterwards.
pub fn prepare(n: &Notification) -> Result<OutboxInsert, OutboxError> {
    Ok(OutboxInsert {
        channel: n.channel.clone(),
        delivery_id: super::deliver::delivery_id(),
        notification: serde_json::to_string(n)?,
        created: crate::util::now() as i64,
        next_attempt_ms: now_ms(),
    })
}

/// `n`, inserted as `row` under outbox id `id`, ready for its channel.
pub fn queued(id: i64, row: OutboxInsert, n: Notification) -> Queued {
    Queued {
        id,
        delivery_id: row.delivery_id,
        notification: n,
    }
}

/// Inserts `n` as a pending row (due now) in a transaction of its own.
pub async fn insert(store: &dyn Store, n: Notification) -> Result<Queued, OutboxError> {
    let row = prepare(&n)?;
    let id = store.outbox_insert(&row).await?;
    Ok(queued(id, row, n))
}

/// A pending row's attempts so far and when the next is due (unix ms); `None` once it is
/// delivered or failed (or gone).
pub async fn pending_state(store: &dyn Store, id: i64) -> Result<Option<(u32, i64)>, sqlx::Error> {
    let row = store.outbox_pending_state(id).await?;
    Ok(row.map(|(a, n)| (u32::try_from(a).unwrap_or(0), n)))
}

/// Records a failed attempt that will be retried at `next_attempt_ms`.
pub async fn retry_later(
    store: &dyn Store,
    id: i64,
    attempts: u32,
    next_attempt_ms: i64,
    why: &str,
) -> Result<(), sqlx::Error> {
    store
        .outbox_retry_later(id, i64::from(attempts), next_attempt_ms, why)
        .await
}

/// Marks a pending row delivered (`error` `None`) or failed for good.
pub async fn finish(
    store: &dyn Store,
    id: i64,
    attempts: u32,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let status = if error.is_none() {
        "delivered"
    } else {
        "failed"
    };
    store
        .outbox_finish(
            id,
            status,
            i64::from(attempts),
            crate::util::now() as i64,
            error,
        )
        .await
}

/// The pending rows of `channel` due by `due_ms`, oldest first, among the `limit` oldest, leaving
/// out `skip` (the ones already queued); and whether there may be more. A row whose JSON no
/// longer reads is marked failed.
pub async fn pending(
    store: &dyn Store,
    channel: &str,
    due_ms: i64,
    limit: usize,
    skip: &std::collections::HashSet<i64>,
) -> Result<(Vec<Queued>, bool), sqlx::Error> {
    let rows = store
        .outbox_due(channel, due_ms, i64::try_from(limit).unwrap_or(i64::MAX))
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
                finish(store, id, 0, Some(&format!("unreadable: {e}"))).await?;
            }
        }
    }
    Ok((out, more))
}

/// Marks failed every pending row of a channel not in `configured`; returns how many per
/// channel.
pub async fn fail_unconfigured(
    store: &dyn Store,
    configured: &[&str],
) -> Result<Vec<(String, u64)>, sqlx::Error> {
    let mut out = vec![];
    for c in store.outbox_pending_channels().await? {
        if configured.contains(&c.as_str()) {
            continue;
        }
        let why = format!("channel {c} is not configured (anymore) in the notifications file");
        let n = store
            .outbox_fail_channel(&c, crate::util::now() as i64, &why)
            .await?;
        out.push((c, n));
    }
    Ok(out)
}

/// Deletes delivered and failed rows finished before `now - KEEP_FINISHED_SECS`.
pub async fn purge(store: &dyn Store, now: i64) -> Result<u64, sqlx::Error> {
    store.outbox_purge(now - KEEP_FINISHED_SECS).await
}
