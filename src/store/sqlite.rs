//! SQLite store: readings as per-series chunks, per-minute rollups, the series
//! catalogue, the alerts history and the alert state that survives a restart.
//!
//! The writer is one task that owns its connection. Readings are buffered per series
//! and written once per `flush_interval` in a single transaction: one chunk row per
//! series, one rollup upsert per series-minute, one catalogue upsert per series —
//! writes grow with the number of series, not of readings, which spares SD cards.
//! Small chunks are later merged per series and hour ([`Writer::compact`]); retention
//! deletes old rows in small steps so no statement holds the database for long.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::mpsc;

use super::chunk;
use crate::engine::{AlertRecord, SilenceRecord};
use crate::model::{format_ts, AlertEvent, AlertState, Reading, SeriesId, Severity, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("corrupt chunk {id}: {source}")]
    Chunk { id: i64, source: chunk::ChunkError },
}

/// Opens (creating when missing) the database at `path` with WAL and
/// `synchronous = NORMAL`, and brings its schema up to date.
pub async fn open(path: &Path) -> Result<SqlitePool, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .pragma("temp_store", "memory");
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
    sqlx::migrate!().run(&pool).await?;
    Ok(pool)
}

/// Opens an existing database for reading (CLI commands): a missing file is an error
/// rather than a new empty database.
pub async fn open_existing(path: &Path) -> Result<SqlitePool, StoreError> {
    if !path.exists() {
        return Err(StoreError::Open {
            path: path.display().to_string(),
            source: sqlx::Error::Configuration("no such file".into()),
        });
    }
    open(path).await
}

/// What flows into the writer task.
#[derive(Debug)]
pub enum StoreMsg {
    Readings(Arc<[Reading]>),
    /// Alert transitions and the engine state they leave behind, written in one
    /// transaction so a crash never separates an event from its state.
    Alerts(AlertBatch),
    /// Write everything buffered now, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// What the engine hands the store after a reading or a tick.
#[derive(Debug, Default)]
pub struct AlertBatch {
    pub events: Vec<AlertEvent>,
    /// Alert states changed since the last batch (upsert by rule and series).
    pub state: Vec<AlertRecord>,
    /// The whole set of silences, when it changed.
    pub silences: Option<Vec<SilenceRecord>>,
}

impl AlertBatch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.state.is_empty() && self.silences.is_none()
    }
}

/// Counters the writer keeps; read by the status line, `/metrics` and the bench.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub stored: AtomicU64,
    pub flushes: AtomicU64,
    pub chunks_written: AtomicU64,
    pub errors: AtomicU64,
    pub events: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub flush_interval: Duration,
    pub retention: Duration,
    pub rollup_retention: Duration,
    /// How often small chunks are merged and old rows deleted.
    pub maintenance_interval: Duration,
}

struct Pending {
    points: Vec<(Timestamp, f64)>,
    unit: Option<Arc<str>>,
}

/// Buffers readings per series and writes them in one transaction per flush.
pub struct Writer {
    pool: SqlitePool,
    ids: HashMap<SeriesId, i64>,
    pending: HashMap<SeriesId, Pending>,
    pending_count: usize,
    pub stats: Arc<StoreStats>,
}

/// Rows per multi-row INSERT (SQLite allows 32,766 bound values).
const ROWS_PER_STATEMENT: usize = 200;

impl Writer {
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            ids: HashMap::new(),
            pending: HashMap::new(),
            pending_count: 0,
            stats: Arc::default(),
        }
    }

    pub fn add(&mut self, readings: &[Reading]) {
        for r in readings {
            let p = match self.pending.get_mut(&r.series) {
                Some(p) => p,
                None => self.pending.entry(r.series.clone()).or_insert(Pending {
                    points: Vec::new(),
                    unit: None,
                }),
            };
            p.points.push((r.ts, r.value));
            if r.unit.is_some() {
                p.unit.clone_from(&r.unit);
            }
        }
        self.pending_count += readings.len();
    }

    /// Readings buffered and not yet written.
    pub fn pending(&self) -> usize {
        self.pending_count
    }

    /// Writes every buffered reading in one transaction. On error the readings stay
    /// buffered and the next flush tries again.
    pub async fn flush(&mut self) -> Result<usize, StoreError> {
        if self.pending_count == 0 {
            return Ok(0);
        }
        let mut batch: Vec<(SeriesId, Pending)> = self
            .pending
            .drain()
            .filter(|(_, p)| !p.points.is_empty())
            .collect();
        for (_, p) in &mut batch {
            // Stable: readings with equal timestamps keep their arrival order.
            p.points.sort_by_key(|pt| pt.0);
        }
        match self.write_batch(&batch).await {
            Ok(()) => {
                let n = self.pending_count;
                self.pending_count = 0;
                self.stats.stored.fetch_add(n as u64, Ordering::Relaxed);
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .chunks_written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                // Keep the buffers' capacity for the next flush.
                for (s, mut p) in batch {
                    p.points.clear();
                    self.pending.insert(s, p);
                }
                Ok(n)
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                for (s, p) in batch {
                    self.pending.insert(s, p);
                }
                Err(e)
            }
        }
    }

    async fn write_batch(&mut self, batch: &[(SeriesId, Pending)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Catalogue: upsert every touched series; learn the ids of new ones.
        for part in batch.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO series (name, unit, first_seen, last_seen, last_value) ",
            );
            q.push_values(part, |mut b, (s, p)| {
                let first = p.points.first().map_or(0, |x| x.0);
                let last = p.points.last().map_or((0, 0.0), |x| *x);
                b.push_bind(s.as_ref())
                    .push_bind(p.unit.as_deref())
                    .push_bind(first)
                    .push_bind(last.0)
                    .push_bind(last.1);
            });
            q.push(
                " ON CONFLICT(name) DO UPDATE SET \
                 last_value = CASE WHEN excluded.last_seen >= last_seen THEN excluded.last_value ELSE last_value END, \
                 last_seen = max(last_seen, excluded.last_seen), \
                 first_seen = min(first_seen, excluded.first_seen), \
                 unit = coalesce(excluded.unit, unit) RETURNING id, name",
            );
            let rows = q.build().fetch_all(&mut *tx).await?;
            for row in rows {
                let name: String = row.try_get("name")?;
                if let Some((s, _)) = part.iter().find(|(s, _)| s.as_ref() == name) {
                    if !self.ids.contains_key(s) {
                        self.ids.insert(s.clone(), row.try_get("id")?);
                    }
                }
            }
        }
        // Chunks: one row per series.
        let blobs: Vec<(i64, Timestamp, Timestamp, i64, Vec<u8>)> = batch
            .iter()
            .filter_map(|(s, p)| {
                let id = *self.ids.get(s)?;
                let first = p.points.first()?.0;
                let last = p.points.last()?.0;
                Some((
                    id,
                    first,
                    last,
                    p.points.len() as i64,
                    chunk::encode(&p.points),
                ))
            })
            .collect();
        for part in blobs.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO chunks (series_id, first_ts, last_ts, count, data) ",
            );
            q.push_values(part, |mut b, (id, first, last, count, data)| {
                b.push_bind(id)
                    .push_bind(first)
                    .push_bind(last)
                    .push_bind(count)
                    .push_bind(data.as_slice());
            });
            q.build().execute(&mut *tx).await?;
        }
        // Rollups: merge this flush's per-minute aggregates into the table.
        let mut rollups: Vec<(i64, i64, f64, f64, f64, i64)> = Vec::new();
        for (s, p) in batch {
            let Some(&id) = self.ids.get(s) else { continue };
            let mut cur: Option<(i64, f64, f64, f64, i64)> = None;
            for &(ts, v) in &p.points {
                let minute = ts.div_euclid(60_000) * 60_000;
                match &mut cur {
                    Some(c) if c.0 == minute => {
                        c.1 = c.1.min(v);
                        c.2 = c.2.max(v);
                        c.3 += v;
                        c.4 += 1;
                    }
                    _ => {
                        if let Some(c) = cur.take() {
                            rollups.push((id, c.0, c.1, c.2, c.3 / c.4 as f64, c.4));
                        }
                        cur = Some((minute, v, v, v, 1));
                    }
                }
            }
            if let Some(c) = cur {
                rollups.push((id, c.0, c.1, c.2, c.3 / c.4 as f64, c.4));
            }
        }
        for part in rollups.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO rollups (series_id, minute, min, max, avg, count) ",
            );
            q.push_values(part, |mut b, r| {
                b.push_bind(r.0)
                    .push_bind(r.1)
                    .push_bind(r.2)
                    .push_bind(r.3)
                    .push_bind(r.4)
                    .push_bind(r.5);
            });
            q.push(
                " ON CONFLICT(series_id, minute) DO UPDATE SET \
                 min = min(min, excluded.min), max = max(max, excluded.max), \
                 avg = (avg * count + excluded.avg * excluded.count) / (count + excluded.count), \
                 count = count + excluded.count",
            );
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Appends alert events to the history and saves the engine state, in one
    /// transaction.
    pub async fn write_alerts(&self, batch: &AlertBatch, now: Timestamp) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for part in batch.events.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO alerts (rule, series, state, severity, value, unit, ts, message, notify) ",
            );
            q.push_values(part, |mut b, e| {
                b.push_bind(&e.rule)
                    .push_bind(&e.series)
                    .push_bind(e.state.as_str())
                    .push_bind(e.severity.as_str())
                    .push_bind(e.value)
                    .push_bind(e.unit.as_deref())
                    .push_bind(e.ts)
                    .push_bind(&e.message)
                    .push_bind(e.notify.join(","));
            });
            q.build().execute(&mut *tx).await?;
        }
        for part in batch.state.chunks(ROWS_PER_STATEMENT) {
            let mut q =
                sqlx::QueryBuilder::new("INSERT INTO alert_state (rule, series, record, updated) ");
            q.push_values(part, |mut b, r| {
                // Plain data with string keys: serialising cannot fail.
                let json = serde_json::to_string(r).unwrap_or_default();
                b.push_bind(&r.rule)
                    .push_bind(&r.series)
                    .push_bind(json)
                    .push_bind(now);
            });
            q.push(" ON CONFLICT(rule, series) DO UPDATE SET record = excluded.record, updated = excluded.updated");
            q.build().execute(&mut *tx).await?;
        }
        if let Some(silences) = &batch.silences {
            sqlx::query("DELETE FROM silences")
                .execute(&mut *tx)
                .await?;
            for s in silences {
                sqlx::query("INSERT OR REPLACE INTO silences (id, record) VALUES (?, ?)")
                    .bind(&s.pattern)
                    .bind(serde_json::to_string(s).unwrap_or_default())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        self.stats
            .events
            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Merges the small chunks of each series that lie wholly before `before` into one
    /// chunk per series and hour. Works in steps of at most `max_groups` groups;
    /// returns how many groups it merged.
    pub async fn compact(&self, before: Timestamp, max_groups: i64) -> Result<usize, StoreError> {
        let groups = sqlx::query(
            "SELECT series_id, first_ts / 3600000 AS hour FROM chunks WHERE last_ts < ? \
             GROUP BY series_id, hour HAVING count(*) > 1 LIMIT ?",
        )
        .bind(before)
        .bind(max_groups)
        .fetch_all(&self.pool)
        .await?;
        for g in &groups {
            let series_id: i64 = g.try_get("series_id")?;
            let hour: i64 = g.try_get("hour")?;
            let mut tx = self.pool.begin().await?;
            let rows = sqlx::query(
                "SELECT id, data FROM chunks WHERE series_id = ? AND first_ts >= ? AND first_ts < ? AND last_ts < ?",
            )
            .bind(series_id)
            .bind(hour * 3_600_000)
            .bind((hour + 1) * 3_600_000)
            .bind(before)
            .fetch_all(&mut *tx)
            .await?;
            if rows.len() < 2 {
                continue;
            }
            let mut points = Vec::new();
            let mut ids = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: i64 = row.try_get("id")?;
                let data: Vec<u8> = row.try_get("data")?;
                points.extend(
                    chunk::decode(&data).map_err(|source| StoreError::Chunk { id, source })?,
                );
                ids.push(id);
            }
            points.sort_by_key(|p| p.0);
            let (first, last) = (points[0].0, points[points.len() - 1].0);
            sqlx::query("INSERT INTO chunks (series_id, first_ts, last_ts, count, data) VALUES (?, ?, ?, ?, ?)")
                .bind(series_id)
                .bind(first)
                .bind(last)
                .bind(points.len() as i64)
                .bind(chunk::encode(&points))
                .execute(&mut *tx)
                .await?;
            let mut q = sqlx::QueryBuilder::new("DELETE FROM chunks WHERE id IN (");
            let mut sep = q.separated(", ");
            for id in ids {
                sep.push_bind(id);
            }
            sep.push_unseparated(")");
            q.build().execute(&mut *tx).await?;
            tx.commit().await?;
        }
        Ok(groups.len())
    }

    /// Deletes raw chunks that ended before `raw_before` and rollups before
    /// `rollup_before`, at most `step` rows per statement; returns rows deleted.
    pub async fn retention(
        &self,
        raw_before: Timestamp,
        rollup_before: Timestamp,
        step: i64,
    ) -> Result<u64, StoreError> {
        let a = sqlx::query(
            "DELETE FROM chunks WHERE id IN (SELECT id FROM chunks WHERE last_ts < ? LIMIT ?)",
        )
        .bind(raw_before)
        .bind(step)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let b = sqlx::query(
            "DELETE FROM rollups WHERE (series_id, minute) IN \
             (SELECT series_id, minute FROM rollups WHERE minute < ? LIMIT ?)",
        )
        .bind(rollup_before)
        .bind(step)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let c = sqlx::query(
            "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE ts < ? LIMIT ?)",
        )
        .bind(rollup_before)
        .bind(step)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(a + b + c)
    }
}

/// Runs the writer until `rx` closes, then flushes what is left and returns.
pub async fn run_writer(mut w: Writer, mut rx: mpsc::Receiver<StoreMsg>, cfg: WriterConfig) {
    let mut flush = tokio::time::interval(cfg.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maintenance = tokio::time::interval(cfg.maintenance_interval);
    maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    maintenance.tick().await;
    let mut held = Vec::new();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => handle(&mut w, msg).await,
                None => break,
            },
            _ = flush.tick() => {
                // The stream keeps moving while the chunks are written: what arrives
                // meanwhile is held (up to HELD_MAX readings) and applied in order after.
                flush_receiving(&mut w, &mut rx, &mut held).await;
                for msg in held.drain(..) {
                    handle(&mut w, msg).await;
                }
            }
            _ = maintenance.tick() => {
                flush_logged(&mut w).await;
                let now = crate::model::now_ms();
                let retention = i64::try_from(cfg.retention.as_millis()).unwrap_or(i64::MAX);
                let rollup_retention = i64::try_from(cfg.rollup_retention.as_millis()).unwrap_or(i64::MAX);
                match w.compact(now - 3_600_000, 500).await {
                    Ok(n) if n > 0 => tracing::debug!(groups = n, "merged small chunks"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "chunk compaction failed"),
                }
                match w.retention(now.saturating_sub(retention), now.saturating_sub(rollup_retention), 5_000).await {
                    Ok(n) if n > 0 => tracing::info!(rows = n, "retention deleted old rows"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention failed"),
                }
            }
        }
    }
    // The stream has ended: nothing buffered may be lost.
    for attempt in 1..=5 {
        match w.flush().await {
            Ok(_) => break,
            Err(e) => {
                tracing::error!(error = %e, attempt, pending = w.pending(), "final flush failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Readings the writer accepts while a timed flush runs, at most (~6 MB); past that the
/// input waits, as it does between flushes when the writer falls behind.
const HELD_MAX: usize = 131_072;

/// Flushes while taking messages from `rx` into `held` (not applied until the flush
/// ends).
async fn flush_receiving(
    w: &mut Writer,
    rx: &mut mpsc::Receiver<StoreMsg>,
    held: &mut Vec<StoreMsg>,
) {
    let mut n = 0;
    let mut open = true;
    let flush = flush_logged(w);
    tokio::pin!(flush);
    loop {
        tokio::select! {
            _ = &mut flush => break,
            msg = rx.recv(), if open && n < HELD_MAX => match msg {
                Some(m) => {
                    n += match &m {
                        StoreMsg::Readings(r) => r.len(),
                        _ => 1,
                    };
                    held.push(m);
                }
                None => open = false,
            },
        }
    }
}

async fn handle(w: &mut Writer, msg: StoreMsg) {
    match msg {
        StoreMsg::Readings(r) => w.add(&r),
        StoreMsg::Alerts(batch) => {
            // Alerts matter more than a missed retry: try a few times.
            for attempt in 1..=5 {
                match w.write_alerts(&batch, crate::model::now_ms()).await {
                    Ok(()) => break,
                    Err(err) => {
                        tracing::error!(error = %err, attempt, events = batch.events.len(), "cannot write alert events");
                        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    }
                }
            }
        }
        StoreMsg::Flush(done) => {
            flush_logged(w).await;
            let _ = done.send(());
        }
    }
}

async fn flush_logged(w: &mut Writer) {
    if let Err(e) = w.flush().await {
        tracing::error!(error = %e, pending = w.pending(), "flush failed; readings kept for the next try");
    }
}

/// One stored reading, as `centinela readings` prints it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredReading {
    pub series: String,
    pub ts: String,
    pub value: f64,
}

/// Readings of the series matching `pattern` (MQTT wildcards) since `since`, ordered by
/// series then time.
pub async fn query_readings(
    pool: &SqlitePool,
    pattern: &str,
    since: Timestamp,
) -> Result<Vec<(String, Timestamp, f64)>, StoreError> {
    let series = sqlx::query("SELECT id, name FROM series ORDER BY name")
        .fetch_all(pool)
        .await?;
    let mut out = Vec::new();
    for s in series {
        let name: String = s.try_get("name")?;
        if !crate::model::topic_matches(pattern, &name) {
            continue;
        }
        let id: i64 = s.try_get("id")?;
        let rows = sqlx::query(
            "SELECT id, data FROM chunks WHERE series_id = ? AND last_ts >= ? ORDER BY first_ts",
        )
        .bind(id)
        .bind(since)
        .fetch_all(pool)
        .await?;
        let start = out.len();
        for row in rows {
            let cid: i64 = row.try_get("id")?;
            let data: Vec<u8> = row.try_get("data")?;
            for (ts, v) in
                chunk::decode(&data).map_err(|source| StoreError::Chunk { id: cid, source })?
            {
                if ts >= since {
                    out.push((name.clone(), ts, v));
                }
            }
        }
        out[start..].sort_by_key(|r| r.1);
    }
    Ok(out)
}

/// A row of the alerts history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertRow {
    pub rule: String,
    pub series: String,
    pub state: String,
    pub severity: String,
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub ts: String,
    pub message: String,
}

impl AlertRow {
    /// The row an event becomes in the history.
    pub fn from_event(e: &AlertEvent) -> Self {
        AlertRow {
            rule: e.rule.clone(),
            series: e.series.clone(),
            state: e.state.as_str().to_string(),
            severity: e.severity.as_str().to_string(),
            value: e.value,
            unit: e.unit.clone(),
            ts: format_ts(e.ts),
            message: e.message.clone(),
        }
    }
}

pub async fn query_alerts(
    pool: &SqlitePool,
    since: Timestamp,
    state: Option<AlertState>,
) -> Result<Vec<AlertRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT rule, series, state, severity, value, unit, ts, message FROM alerts \
         WHERE ts >= ? AND (? IS NULL OR state = ?) ORDER BY ts, id",
    )
    .bind(since)
    .bind(state.map(AlertState::as_str))
    .bind(state.map(AlertState::as_str))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AlertRow {
                rule: r.try_get("rule")?,
                series: r.try_get("series")?,
                state: r.try_get("state")?,
                severity: r.try_get("severity")?,
                value: r.try_get("value")?,
                unit: r.try_get("unit")?,
                ts: format_ts(r.try_get("ts")?),
                message: r.try_get("message")?,
            })
        })
        .collect()
}

/// Persisted engine state. A row that does not parse (written by another version) is
/// skipped with a warning rather than stopping the start.
pub async fn load_engine_state(
    pool: &SqlitePool,
) -> Result<(Vec<AlertRecord>, Vec<SilenceRecord>), StoreError> {
    let rows = sqlx::query("SELECT rule, series, record FROM alert_state")
        .fetch_all(pool)
        .await?;
    let mut alerts = Vec::with_capacity(rows.len());
    for r in &rows {
        let record: String = r.try_get("record")?;
        match serde_json::from_str(&record) {
            Ok(a) => alerts.push(a),
            Err(e) => {
                let (rule, series): (String, String) = (r.try_get("rule")?, r.try_get("series")?);
                tracing::warn!(rule, series, error = %e, "stored alert state unreadable: skipped");
            }
        }
    }
    let rows = sqlx::query("SELECT id, record FROM silences")
        .fetch_all(pool)
        .await?;
    let mut silences = Vec::with_capacity(rows.len());
    for r in &rows {
        let record: String = r.try_get("record")?;
        match serde_json::from_str(&record) {
            Ok(s) => silences.push(s),
            Err(e) => {
                tracing::warn!(id = r.try_get::<String, _>("id")?, error = %e, "stored silence unreadable: skipped")
            }
        }
    }
    Ok((alerts, silences))
}

/// Last seen time of every series in the catalogue (deadman rules start from it).
pub async fn last_seen(
    pool: &SqlitePool,
) -> Result<Vec<(String, Timestamp, Option<f64>)>, StoreError> {
    let rows = sqlx::query("SELECT name, last_seen, last_value FROM series")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("name")?,
                r.try_get("last_seen")?,
                r.try_get("last_value")?,
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(Into::into)
}

/// Severity as stored, for readers that need the type back.
pub fn parse_severity(s: &str) -> Severity {
    Severity::parse(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(series: &SeriesId, ts: Timestamp, value: f64) -> Reading {
        Reading {
            series: series.clone(),
            value,
            ts,
            unit: Some(Arc::from("°C")),
        }
    }

    #[tokio::test]
    async fn flush_writes_chunks_rollups_and_catalogue() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(&dir.path().join("t.db")).await.unwrap();
        let mut w = Writer::new(pool.clone());
        let a: SeriesId = Arc::from("gh/n1/temperature");
        let b: SeriesId = Arc::from("gh/n2/temperature");
        let base = 1_700_000_020_000; // 40 s into a minute
        let batch: Vec<Reading> = (0..30)
            .flat_map(|i| {
                [
                    reading(&a, base + i * 1000, 20.0 + i as f64 / 10.0),
                    reading(&b, base + i * 1000, 5.0),
                ]
            })
            .collect();
        w.add(&batch);
        assert_eq!(w.flush().await.unwrap(), 60);
        w.add(&[reading(&a, base + 30_000, 30.0)]);
        assert_eq!(w.flush().await.unwrap(), 1);

        let got = query_readings(&pool, "gh/n1/#", 0).await.unwrap();
        assert_eq!(got.len(), 31);
        assert_eq!(got[0], ("gh/n1/temperature".to_string(), base, 20.0));
        assert_eq!(
            got[30],
            ("gh/n1/temperature".to_string(), base + 30_000, 30.0)
        );
        assert_eq!(
            query_readings(&pool, "gh/+/temperature", base + 29_000)
                .await
                .unwrap()
                .len(),
            3
        );

        let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(chunks, 3, "one row per series per flush");

        let r: Vec<(String, i64, f64, f64, f64, i64)> = sqlx::query_as(
            "SELECT series, minute, min, max, avg, count FROM rollups_named WHERE series = 'gh/n1/temperature' ORDER BY minute",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        // 20 readings in the first minute (40 s..59 s), 11 in the next (incl. the second flush).
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].2, r[0].3, r[0].5), (20.0, 21.9, 20));
        assert!((r[0].4 - 20.95).abs() < 1e-9);
        assert_eq!((r[1].2, r[1].3, r[1].5), (22.0, 30.0, 11));

        let (unit, last_seen, last_value): (String, i64, f64) = sqlx::query_as(
            "SELECT unit, last_seen, last_value FROM series WHERE name = 'gh/n1/temperature'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            (unit.as_str(), last_seen, last_value),
            ("°C", base + 30_000, 30.0)
        );
    }

    #[tokio::test]
    async fn compaction_merges_small_chunks_and_keeps_every_point() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(&dir.path().join("t.db")).await.unwrap();
        let mut w = Writer::new(pool.clone());
        let a: SeriesId = Arc::from("x/y");
        let base = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000;
        for i in 0..50 {
            w.add(&[reading(&a, base + i * 1000, i as f64)]);
            w.flush().await.unwrap();
        }
        assert_eq!(w.compact(base + 3_600_000, 100).await.unwrap(), 1);
        let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(chunks, 1);
        let got = query_readings(&pool, "#", 0).await.unwrap();
        assert_eq!(
            got.iter().map(|r| r.2).collect::<Vec<_>>(),
            (0..50).map(|i| i as f64).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn retention_deletes_old_chunks_only() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(&dir.path().join("t.db")).await.unwrap();
        let mut w = Writer::new(pool.clone());
        let a: SeriesId = Arc::from("x/y");
        w.add(&[reading(&a, 1000, 1.0)]);
        w.flush().await.unwrap();
        w.add(&[reading(&a, 9000, 2.0)]);
        w.flush().await.unwrap();
        w.retention(5000, 0, 10).await.unwrap();
        let got = query_readings(&pool, "#", 0).await.unwrap();
        assert_eq!(got, vec![("x/y".to_string(), 9000, 2.0)]);
    }
}
