//! The notification outbox in SQLite (`migrations/0003_outbox.sql`): every alert event
//! × channel is a row before any attempt, and stays until delivered or dead. This is
//! what makes delivery survive a crash: workers only ever read from here.
//!
//! Ids are stable hashes of (rule, series, state, ts, channel), so enqueueing the same
//! event again (a replayed engine step, a retry after a crash) inserts nothing.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use sqlx::{Row, SqlitePool};
use tokio::sync::watch;

use crate::model::{AlertEvent, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("outbox row {id}: stored event is unreadable: {source}")]
    Decode {
        id: String,
        source: serde_json::Error,
    },
    /// The targets already served (`done`) or refused (`refused`) cannot be read: the
    /// notification stays pending rather than going again to targets that have it.
    #[error("outbox row {id}: the {column} target list {value:?} is unreadable ({source}); the notification stays pending until the row is repaired or expires")]
    TargetList {
        id: String,
        column: &'static str,
        value: String,
        source: serde_json::Error,
    },
}

impl OutboxError {
    /// The row this error is about, when it is about one row.
    pub fn row_id(&self) -> Option<&str> {
        match self {
            OutboxError::Decode { id, .. } | OutboxError::TargetList { id, .. } => Some(id),
            OutboxError::Db(_) => None,
        }
    }
}

/// Where a notification is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Delivered,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "delivered" => Status::Delivered,
            "dead" => Status::Dead,
            _ => Status::Pending,
        }
    }
}

/// One notification: one event for one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: String,
    pub channel: String,
    pub event: AlertEvent,
    pub status: Status,
    pub created_at: Timestamp,
    pub attempts: u32,
    pub next_at: Timestamp,
    /// Targets already served (Telegram chat ids); a retry skips them.
    pub done: Vec<String>,
    /// Targets that refused for good.
    pub refused: Vec<String>,
    pub last_error: Option<String>,
    pub updated_at: Timestamp,
}

/// Per channel: how many notifications wait, went out, or died (for metrics and the TUI).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelCounts {
    pub channel: String,
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
}

/// The stable id of `event` for `channel`: 32 hex digits of SHA-256.
pub fn notification_id(event: &AlertEvent, channel: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        event.rule.as_str(),
        event.series.as_str(),
        event.state.as_str(),
        &event.ts.to_string(),
        channel,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes one row per (event × channel in `event.notify`) in one transaction. Rows that
/// exist already are left alone. Returns how many were new.
pub async fn enqueue(
    pool: &SqlitePool,
    events: &[AlertEvent],
    now: Timestamp,
) -> Result<usize, OutboxError> {
    let mut tx = pool.begin().await?;
    let added = enqueue_in(&mut tx, events, now).await?;
    tx.commit().await?;
    Ok(added)
}

/// [`enqueue`] inside the caller's transaction: the store writes an event to the
/// history, the engine state it leaves and its notifications in one commit, so a
/// crash can separate none of them.
pub async fn enqueue_in(
    conn: &mut sqlx::SqliteConnection,
    events: &[AlertEvent],
    now: Timestamp,
) -> Result<usize, OutboxError> {
    let mut added = 0;
    for event in events {
        if event.notify.is_empty() {
            continue;
        }
        // Serializing plain data with string keys cannot fail.
        let json = serde_json::to_string(event).unwrap_or_default();
        for channel in &event.notify {
            let r = sqlx::query(
                "INSERT OR IGNORE INTO outbox (id, channel, event, status, created_at, attempts, next_at, updated_at) \
                 VALUES (?, ?, ?, 'pending', ?, 0, ?, ?)",
            )
            .bind(notification_id(event, channel))
            .bind(channel)
            .bind(&json)
            .bind(now)
            .bind(now)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            added += r.rows_affected() as usize;
        }
    }
    Ok(added)
}

const COLUMNS: &str = "id, channel, event, status, created_at, attempts, next_at, done, refused, last_error, updated_at";

fn decode(row: &sqlx::sqlite::SqliteRow) -> Result<OutboxRow, OutboxError> {
    let id: String = row.try_get("id")?;
    let event: String = row.try_get("event")?;
    let event = serde_json::from_str(&event).map_err(|source| OutboxError::Decode {
        id: id.clone(),
        source,
    })?;
    let list = |column: &'static str| -> Result<Vec<String>, OutboxError> {
        let value: String = row.try_get(column)?;
        serde_json::from_str(&value).map_err(|source| OutboxError::TargetList {
            id: id.clone(),
            column,
            value: value.chars().take(80).collect(),
            source,
        })
    };
    Ok(OutboxRow {
        channel: row.try_get("channel")?,
        event,
        status: Status::parse(row.try_get::<&str, _>("status")?),
        created_at: row.try_get("created_at")?,
        attempts: row
            .try_get::<i64, _>("attempts")?
            .try_into()
            .unwrap_or(u32::MAX),
        next_at: row.try_get("next_at")?,
        done: list("done")?,
        refused: list("refused")?,
        last_error: row.try_get("last_error")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}

/// The oldest `limit` pending notifications of `channel`, oldest first; an error when
/// one of them cannot be read.
pub async fn pending(
    pool: &SqlitePool,
    channel: &str,
    limit: usize,
) -> Result<Vec<OutboxRow>, OutboxError> {
    let (rows, mut unreadable) = pending_readable(pool, channel, limit).await?;
    match unreadable.pop() {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}

/// As [`pending`], with the rows that cannot be read apart: they stay pending (and
/// expire after `max_age` like any other), while the readable ones go on.
pub async fn pending_readable(
    pool: &SqlitePool,
    channel: &str,
    limit: usize,
) -> Result<(Vec<OutboxRow>, Vec<OutboxError>), OutboxError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM outbox WHERE channel = ? AND status = 'pending' ORDER BY created_at, rowid LIMIT ?"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(channel)
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for r in &rows {
        match decode(r) {
            Ok(row) => good.push(row),
            Err(e @ (OutboxError::Decode { .. } | OutboxError::TargetList { .. })) => bad.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok((good, bad))
}

/// How many notifications of `channel` were enqueued since `since` (any status).
pub async fn enqueued_since(
    pool: &SqlitePool,
    channel: &str,
    since: Timestamp,
) -> Result<u64, OutboxError> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE channel = ? AND created_at >= ?")
            .bind(channel)
            .bind(since)
            .fetch_one(pool)
            .await?;
    Ok(n.max(0) as u64)
}

/// Every dead notification, newest first, with its last error.
pub async fn dead(pool: &SqlitePool) -> Result<Vec<OutboxRow>, OutboxError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM outbox WHERE status = 'dead' ORDER BY updated_at DESC, rowid DESC"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?;
    rows.iter().map(decode).collect()
}

/// One notification by id.
pub async fn get(pool: &SqlitePool, id: &str) -> Result<Option<OutboxRow>, OutboxError> {
    let sql = format!("SELECT {COLUMNS} FROM outbox WHERE id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(decode).transpose()
}

/// Pending, delivered and dead per channel, channels in name order. Delivered rows
/// are kept for `keep_delivered`, so `delivered` counts that window.
pub async fn counts(pool: &SqlitePool) -> Result<Vec<ChannelCounts>, OutboxError> {
    let rows = sqlx::query("SELECT channel, status, COUNT(*) AS n FROM outbox GROUP BY channel, status ORDER BY channel")
        .fetch_all(pool)
        .await?;
    let mut out: Vec<ChannelCounts> = Vec::new();
    for r in rows {
        let channel: String = r.try_get("channel")?;
        let n = r.try_get::<i64, _>("n")?.max(0) as u64;
        if out.last().is_none_or(|c| c.channel != channel) {
            out.push(ChannelCounts {
                channel: channel.clone(),
                ..Default::default()
            });
        }
        // The vector has an element: one was pushed just above when it was empty.
        let c = out.last_mut().expect("pushed above");
        match Status::parse(r.try_get::<&str, _>("status")?) {
            Status::Pending => c.pending = n,
            Status::Delivered => c.delivered = n,
            Status::Dead => c.dead = n,
        }
    }
    Ok(out)
}

/// Records that `target` received the notifications `ids`.
pub async fn mark_target_done(
    pool: &SqlitePool,
    ids: &[&str],
    target: &str,
    now: Timestamp,
) -> Result<(), OutboxError> {
    add_to_list(pool, "done", ids, target, None, now).await
}

/// Records that `target` refused the notifications `ids` for good.
pub async fn mark_target_refused(
    pool: &SqlitePool,
    ids: &[&str],
    target: &str,
    error: &str,
    now: Timestamp,
) -> Result<(), OutboxError> {
    add_to_list(pool, "refused", ids, target, Some(error), now).await
}

async fn add_to_list(
    pool: &SqlitePool,
    col: &str,
    ids: &[&str],
    target: &str,
    error: Option<&str>,
    now: Timestamp,
) -> Result<(), OutboxError> {
    // One UPDATE per row, no read first: a transaction that reads and then writes
    // fails at once (SQLITE_BUSY) when another connection wrote in between, while a
    // plain write waits for the lock (busy_timeout).
    let sql = format!(
        "UPDATE outbox SET {col} = CASE \
             WHEN EXISTS (SELECT 1 FROM json_each({col}) WHERE value = ?1) THEN {col} \
             ELSE json_insert({col}, '$[#]', ?1) END, \
         last_error = COALESCE(?2, last_error), updated_at = ?3 WHERE id = ?4"
    );
    let mut tx = pool.begin().await?;
    for id in ids {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(target)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Ends the notifications `ids` as delivered.
pub async fn mark_delivered(
    pool: &SqlitePool,
    ids: &[&str],
    now: Timestamp,
) -> Result<(), OutboxError> {
    set_status(pool, ids, Status::Delivered, None, now).await
}

/// Ends the notifications `ids` as dead with `error`.
pub async fn mark_dead(
    pool: &SqlitePool,
    ids: &[&str],
    error: &str,
    now: Timestamp,
) -> Result<(), OutboxError> {
    set_status(pool, ids, Status::Dead, Some(error), now).await
}

async fn set_status(
    pool: &SqlitePool,
    ids: &[&str],
    status: Status,
    error: Option<&str>,
    now: Timestamp,
) -> Result<(), OutboxError> {
    let mut tx = pool.begin().await?;
    for id in ids {
        sqlx::query("UPDATE outbox SET status = ?, last_error = COALESCE(?, last_error), updated_at = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Counts a failed attempt on `ids` and schedules the next one at `next_at`.
pub async fn mark_retry(
    pool: &SqlitePool,
    ids: &[&str],
    error: &str,
    next_at: Timestamp,
    now: Timestamp,
) -> Result<(), OutboxError> {
    let mut tx = pool.begin().await?;
    for id in ids {
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_at = ?, updated_at = ? WHERE id = ?")
            .bind(error)
            .bind(next_at)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Ends as dead the pending notifications of `channel` enqueued before `before`.
pub async fn expire(
    pool: &SqlitePool,
    channel: &str,
    before: Timestamp,
    now: Timestamp,
) -> Result<u64, OutboxError> {
    let r = sqlx::query(
        "UPDATE outbox SET status = 'dead', \
         last_error = 'expired: not delivered within max_age' || COALESCE('; last error: ' || last_error, ''), \
         updated_at = ? WHERE channel = ? AND status = 'pending' AND created_at < ?",
    )
    .bind(now)
    .bind(channel)
    .bind(before)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Deletes delivered notifications older than `before` (dead ones stay for people to see).
pub async fn prune_delivered(pool: &SqlitePool, before: Timestamp) -> Result<u64, OutboxError> {
    let r = sqlx::query("DELETE FROM outbox WHERE status = 'delivered' AND updated_at < ?")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

/// The outbox as the service holds it: the pool plus a signal that wakes the workers
/// when something was enqueued.
#[derive(Clone)]
pub struct Outbox {
    pool: SqlitePool,
    wake: Arc<watch::Sender<u64>>,
}

impl Outbox {
    pub fn new(pool: SqlitePool) -> Self {
        Outbox {
            pool,
            wake: Arc::new(watch::channel(0).0),
        }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// [`enqueue`], then wakes the workers.
    pub async fn enqueue(
        &self,
        events: &[AlertEvent],
        now: Timestamp,
    ) -> Result<usize, OutboxError> {
        let n = enqueue(&self.pool, events, now).await?;
        if n > 0 {
            self.wake.send_modify(|v| *v = v.wrapping_add(1));
        }
        Ok(n)
    }

    /// Tells the workers that rows were added by someone else (the store, in its own
    /// transaction).
    pub fn wake(&self) {
        self.wake.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that changes on every enqueue, for a worker to wait on.
    pub fn wakeups(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertState, Severity};

    fn event(state: AlertState, ts: Timestamp) -> AlertEvent {
        AlertEvent {
            rule: "hot".into(),
            series: "greenhouse/node1/temperature".into(),
            state,
            severity: Severity::Critical,
            value: Some(31.2),
            unit: Some("°C".into()),
            ts,
            message: "too hot".into(),
            notify: vec!["email".into()],
        }
    }

    #[test]
    fn ids_are_stable_and_distinguish_what_matters() {
        let a = event(AlertState::Firing, 1000);
        assert_eq!(
            notification_id(&a, "email"),
            notification_id(&a.clone(), "email")
        );
        assert_eq!(notification_id(&a, "email").len(), 32);
        assert_ne!(
            notification_id(&a, "email"),
            notification_id(&a, "telegram")
        );
        assert_ne!(
            notification_id(&a, "email"),
            notification_id(&event(AlertState::Resolved, 1000), "email")
        );
        assert_ne!(
            notification_id(&a, "email"),
            notification_id(&event(AlertState::Firing, 1001), "email")
        );
        // The message text is not part of the identity: a re-rendered event is the same one.
        let mut b = a.clone();
        b.message = "other words".into();
        assert_eq!(notification_id(&a, "email"), notification_id(&b, "email"));
    }
}
