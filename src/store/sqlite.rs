//! SQLite store: readings as per-series chunks, per-minute rollups, the series
//! catalogue, the alerts history and the alert state that survives a restart.
//!
//! The writer is one task that owns its connection. Readings are buffered per series
//! and written once per `flush_interval` in a single transaction: one chunk row per
//! series, one rollup upsert per series-minute, one catalogue upsert per series —
//! writes grow with the number of series, not of readings, which spares SD cards.
//! Small chunks are later merged per series and hour ([`Writer::compact`]); retention
//! deletes old rows in small steps so no statement holds the database for long.

use std::collections::{HashMap, VecDeque};
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
    #[error("outbox: {0}")]
    Outbox(String),
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
#[derive(Debug, Default, Clone)]
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

/// How often the catalogue's last seen and last value are written.
const CATALOGUE_EVERY_MS: i64 = 60_000;

/// A series as the catalogue will get it.
#[derive(Debug, Clone)]
struct Seen {
    first: Timestamp,
    last: Timestamp,
    value: f64,
    unit: Option<Arc<str>>,
}

/// Per-minute aggregates not yet written.
#[derive(Debug, Clone, Copy)]
struct Rollup {
    min: f64,
    max: f64,
    sum: f64,
    count: i64,
}

struct Pending {
    /// Readings to store.
    points: Vec<(Timestamp, f64)>,
    /// Readings the deadband keeps out of the chunks; they still count in rollups.
    skipped: Vec<(Timestamp, f64)>,
    unit: Option<Arc<str>>,
}

/// A deadband as the writer applies it to one series.
#[derive(Debug, Clone, Copy)]
struct Band {
    delta: f64,
    max_interval: i64,
    /// The last reading stored.
    last: Option<(Timestamp, f64)>,
}

/// Buffers readings per series and writes them in one transaction per flush.
pub struct Writer {
    pool: SqlitePool,
    ids: HashMap<SeriesId, i64>,
    pending: HashMap<SeriesId, Pending>,
    /// Notifications of alert events are written with them and the workers woken.
    outbox: Option<crate::notify::Outbox>,
    deadband: Vec<crate::config::DeadbandConfig>,
    /// Per series: its deadband (`None`: every reading is stored).
    bands: HashMap<SeriesId, Option<Band>>,
    seen: HashMap<SeriesId, Seen>,
    catalogue_written: Option<Timestamp>,
    rollups: HashMap<(i64, i64), Rollup>,
    /// Write the catalogue and every rollup now (the last flush, and tests).
    pub force: bool,
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
            outbox: None,
            deadband: Vec::new(),
            bands: HashMap::new(),
            seen: HashMap::new(),
            catalogue_written: None,
            rollups: HashMap::new(),
            force: false,
            pending_count: 0,
            stats: Arc::default(),
        }
    }

    /// Writes the notifications of alert events to this outbox, in the same
    /// transaction as the events.
    pub fn with_outbox(mut self, outbox: crate::notify::Outbox) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Stores a reading of a series matching a deadband only when it moved more than
    /// `delta` from the last stored one or `max_interval` passed (the first match wins).
    pub fn with_deadband(mut self, deadband: Vec<crate::config::DeadbandConfig>) -> Self {
        self.deadband = deadband;
        self
    }

    pub fn add(&mut self, readings: &[Reading]) {
        for r in readings {
            let band = if self.deadband.is_empty() {
                None
            } else {
                let deadband = &self.deadband;
                self.bands
                    .entry(r.series.clone())
                    .or_insert_with(|| {
                        deadband
                            .iter()
                            .find(|d| crate::model::topic_matches(&d.series, &r.series))
                            .map(|d| Band {
                                delta: d.delta,
                                max_interval: d.max_interval.as_millis(),
                                last: None,
                            })
                    })
                    .as_mut()
            };
            let keep = match band {
                None => true,
                Some(b) => {
                    let keep = b.last.is_none_or(|(t, v)| {
                        (r.value - v).abs() > b.delta
                            || r.ts.saturating_sub(t) >= b.max_interval
                            || r.ts < t
                    });
                    if keep {
                        b.last = Some((r.ts, r.value));
                    }
                    keep
                }
            };
            let p = match self.pending.get_mut(&r.series) {
                Some(p) => p,
                None => self.pending.entry(r.series.clone()).or_insert(Pending {
                    points: Vec::new(),
                    skipped: Vec::new(),
                    unit: None,
                }),
            };
            if keep {
                p.points.push((r.ts, r.value));
            } else {
                p.skipped.push((r.ts, r.value));
            }
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
            .filter(|(_, p)| !p.points.is_empty() || !p.skipped.is_empty())
            .collect();
        for (_, p) in &mut batch {
            // Stable: readings with equal timestamps keep their arrival order.
            p.points.sort_by_key(|pt| pt.0);
            p.skipped.sort_by_key(|pt| pt.0);
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
                    p.skipped.clear();
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
        // What the catalogue and the rollups will get, kept in memory between writes.
        for (s, p) in batch {
            // The catalogue sees every reading, stored or kept out by a deadband.
            let first = [p.points.first(), p.skipped.first()]
                .into_iter()
                .flatten()
                .map(|x| x.0)
                .min();
            let last = [p.points.last(), p.skipped.last()]
                .into_iter()
                .flatten()
                .max_by_key(|x| x.0)
                .copied();
            let (Some(first), Some(last)) = (first, last) else {
                continue;
            };
            let e = self.seen.entry(s.clone()).or_insert(Seen {
                first,
                last: last.0,
                value: last.1,
                unit: None,
            });
            e.first = e.first.min(first);
            if last.0 >= e.last {
                (e.last, e.value) = last;
            }
            if p.unit.is_some() {
                e.unit.clone_from(&p.unit);
            }
        }
        let now = crate::model::now_ms();
        let catalogue_due = self.force
            || self
                .catalogue_written
                .is_none_or(|t| now - t >= CATALOGUE_EVERY_MS);
        let mut tx = self.pool.begin().await?;
        // Catalogue: new series at once (their ids are needed); the others' last seen
        // and last value once a minute, to spare the disk a page write per flush.
        let rows: Vec<(&SeriesId, &Seen)> = self
            .seen
            .iter()
            .filter(|(s, _)| catalogue_due || !self.ids.contains_key(*s))
            .collect();
        let mut new_ids: Vec<(SeriesId, i64)> = Vec::new();
        for part in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO series (name, unit, first_seen, last_seen, last_value) ",
            );
            q.push_values(part, |mut b, (s, e)| {
                b.push_bind(s.as_ref())
                    .push_bind(e.unit.as_deref())
                    .push_bind(e.first)
                    .push_bind(e.last)
                    .push_bind(e.value);
            });
            q.push(
                " ON CONFLICT(name) DO UPDATE SET \
                 last_value = CASE WHEN excluded.last_seen >= last_seen THEN excluded.last_value ELSE last_value END, \
                 last_seen = max(last_seen, excluded.last_seen), \
                 first_seen = min(first_seen, excluded.first_seen), \
                 unit = coalesce(excluded.unit, unit) RETURNING id, name",
            );
            for row in q.build().fetch_all(&mut *tx).await? {
                let name: String = row.try_get("name")?;
                if let Some((s, _)) = part.iter().find(|(s, _)| s.as_ref() == name) {
                    if !self.ids.contains_key(*s) {
                        new_ids.push(((*s).clone(), row.try_get("id")?));
                    }
                }
            }
        }
        let id_of = |s: &SeriesId| {
            self.ids
                .get(s)
                .copied()
                .or_else(|| new_ids.iter().find(|(n, _)| n == s).map(|x| x.1))
        };
        // Chunks: one row per series, appended (see the migration on why unindexed by series).
        let blobs: Vec<(i64, Timestamp, Timestamp, i64, Vec<u8>)> = batch
            .iter()
            .filter_map(|(s, p)| {
                let id = id_of(s)?;
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
        // Rollups: accumulated per series and minute; a minute is written once it is
        // over (a late reading merges into the stored row).
        let mut acc = self.rollups.clone();
        for (s, p) in batch {
            let Some(id) = id_of(s) else { continue };
            for &(ts, v) in p.points.iter().chain(&p.skipped) {
                let r = acc
                    .entry((id, ts.div_euclid(60_000) * 60_000))
                    .or_insert(Rollup {
                        min: v,
                        max: v,
                        sum: 0.0,
                        count: 0,
                    });
                r.min = r.min.min(v);
                r.max = r.max.max(v);
                r.sum += v;
                r.count += 1;
            }
        }
        let open_minute = now.div_euclid(60_000) * 60_000 - 60_000;
        let closed: Vec<((i64, i64), Rollup)> = acc
            .iter()
            .filter(|(k, _)| self.force || k.1 < open_minute)
            .map(|(k, r)| (*k, *r))
            .collect();
        for part in closed.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO rollups (series_id, minute, min, max, avg, count) ",
            );
            q.push_values(part, |mut b, ((id, minute), r)| {
                b.push_bind(id)
                    .push_bind(minute)
                    .push_bind(r.min)
                    .push_bind(r.max)
                    .push_bind(r.sum / r.count as f64)
                    .push_bind(r.count);
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
        // Only now is what was written true.
        self.ids.extend(new_ids);
        for (k, _) in &closed {
            acc.remove(k);
        }
        self.rollups = acc;
        if catalogue_due {
            self.seen.clear();
            self.catalogue_written = Some(now);
        }
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
        let notified = match &self.outbox {
            Some(_) => crate::notify::outbox::enqueue_in(&mut tx, &batch.events, now)
                .await
                .map_err(|e| StoreError::Outbox(e.to_string()))?,
            None => 0,
        };
        tx.commit().await?;
        if let (Some(outbox), true) = (&self.outbox, notified > 0) {
            outbox.wake();
        }
        self.stats
            .events
            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Merges the chunks written flush by flush that lie wholly before `before` into
    /// one chunk per series and hour, indexed by series. Works on at most `max_rows`
    /// chunks per call; returns how many merged chunks it wrote.
    pub async fn compact(&self, before: Timestamp, max_rows: i64) -> Result<usize, StoreError> {
        let rows = sqlx::query(
            "SELECT id, series_id, first_ts, data FROM chunks WHERE compacted = 0 AND last_ts < ? LIMIT ?",
        )
        .bind(before)
        .bind(max_rows)
        .fetch_all(&self.pool)
        .await?;
        // (series, hour) → (chunk ids, points)
        // (chunk ids, their points)
        type Group = (Vec<i64>, Vec<(Timestamp, f64)>);
        let mut groups: std::collections::BTreeMap<(i64, i64), Group> =
            std::collections::BTreeMap::new();
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let series_id: i64 = row.try_get("series_id")?;
            let first: i64 = row.try_get("first_ts")?;
            let data: Vec<u8> = row.try_get("data")?;
            let g = groups
                .entry((series_id, first.div_euclid(3_600_000)))
                .or_default();
            g.0.push(id);
            g.1.extend(chunk::decode(&data).map_err(|source| StoreError::Chunk { id, source })?);
        }
        let written = groups.len();
        let mut tx = self.pool.begin().await?;
        for ((series_id, _), (ids, mut points)) in groups {
            if points.is_empty() {
                continue;
            }
            points.sort_by_key(|p| p.0);
            let (first, last) = (points[0].0, points[points.len() - 1].0);
            sqlx::query(
                "INSERT INTO chunks (series_id, first_ts, last_ts, count, compacted, data) VALUES (?, ?, ?, ?, 1, ?)",
            )
            .bind(series_id)
            .bind(first)
            .bind(last)
            .bind(points.len() as i64)
            .bind(chunk::encode(&points))
            .execute(&mut *tx)
            .await?;
            for part in ids.chunks(500) {
                let mut q = sqlx::QueryBuilder::new("DELETE FROM chunks WHERE id IN (");
                let mut sep = q.separated(", ");
                for id in part {
                    sep.push_bind(*id);
                }
                sep.push_unseparated(")");
                q.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Deletes raw chunks that ended before `raw_before` and rollups before
    /// `rollup_before`, at most `step` rows per statement; returns rows deleted.
    pub async fn retention(
        &self,
        raw_before: Timestamp,
        rollup_before: Timestamp,
        step: i64,
    ) -> Result<u64, StoreError> {
        let mut a = 0;
        // Literal `compacted` values, so each statement can use its partial index.
        for sql in [
            "DELETE FROM chunks WHERE id IN (SELECT id FROM chunks WHERE compacted = 1 AND last_ts < ?1 LIMIT ?2)",
            "DELETE FROM chunks WHERE id IN (SELECT id FROM chunks WHERE compacted = 0 AND last_ts < ?1 LIMIT ?2)",
        ] {
            a += sqlx::query(sql)
            .bind(raw_before)
            .bind(step)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
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
///
/// Every slow step (the timed flush, alert batches, maintenance) runs while the writer
/// keeps taking messages: what arrives meanwhile is queued (up to [`HELD_MAX`]
/// readings) and applied in order afterwards, so a large transaction never stalls the
/// stream behind it.
pub async fn run_writer(mut w: Writer, mut rx: mpsc::Receiver<StoreMsg>, cfg: WriterConfig) {
    let mut flush = tokio::time::interval(cfg.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maintenance = tokio::time::interval(cfg.maintenance_interval);
    maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    maintenance.tick().await;
    let mut queue = VecDeque::new();
    loop {
        tokio::select! {
            _ = std::future::ready(()), if !queue.is_empty() => {
                // What is queued now; what arrives meanwhile waits for the next round,
                // so the timers get their turn.
                for _ in 0..queue.len() {
                    match queue.pop_front() {
                        Some(StoreMsg::Readings(r)) => w.add(&r),
                        Some(msg) => receiving(handle(&mut w, msg), &mut rx, &mut queue).await,
                        None => break,
                    }
                }
            }
            msg = rx.recv(), if queue.is_empty() => match msg {
                Some(msg) => queue.push_back(msg),
                None => break,
            },
            _ = flush.tick() => {
                receiving(flush_logged(&mut w), &mut rx, &mut queue).await;
            }
            _ = maintenance.tick() => {
                receiving(maintain(&mut w, &cfg), &mut rx, &mut queue).await;
            }
        }
    }
    // The stream has ended: nothing buffered may be lost.
    w.force = true;
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

/// Readings the writer queues while a slow step runs, at most (~6 MB); past that the
/// input waits, as it does when the writer falls behind.
const HELD_MAX: usize = 131_072;

/// Runs `step` while taking messages from `rx` into `queue` (applied after it).
async fn receiving(
    step: impl std::future::Future<Output = ()>,
    rx: &mut mpsc::Receiver<StoreMsg>,
    queue: &mut VecDeque<StoreMsg>,
) {
    let size = |m: &StoreMsg| match m {
        StoreMsg::Readings(r) => r.len(),
        _ => 1,
    };
    let mut n: usize = queue.iter().map(size).sum();
    let mut open = true;
    tokio::pin!(step);
    loop {
        tokio::select! {
            _ = &mut step => break,
            msg = rx.recv(), if open && n < HELD_MAX => match msg {
                Some(m) => {
                    n += size(&m);
                    queue.push_back(m);
                }
                None => open = false,
            },
        }
    }
}

/// The hourly merge of chunks, then retention, in small steps.
async fn maintain(w: &mut Writer, cfg: &WriterConfig) {
    flush_logged(w).await;
    let now = crate::model::now_ms();
    let retention = i64::try_from(cfg.retention.as_millis()).unwrap_or(i64::MAX);
    let rollup_retention = i64::try_from(cfg.rollup_retention.as_millis()).unwrap_or(i64::MAX);
    // Merge the flush-sized chunks of every hour that is over, in steps.
    let hour_start = now - now.rem_euclid(3_600_000);
    for _ in 0..20 {
        match w.compact(hour_start, 20_000).await {
            Ok(0) => break,
            Ok(n) => tracing::debug!(chunks = n, "merged an hour's chunks"),
            Err(e) => {
                tracing::warn!(error = %e, "chunk compaction failed");
                break;
            }
        }
    }
    match w
        .retention(
            now.saturating_sub(retention),
            now.saturating_sub(rollup_retention),
            5_000,
        )
        .await
    {
        Ok(n) if n > 0 => tracing::info!(rows = n, "retention deleted old rows"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "retention failed"),
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
    let series = sqlx::query("SELECT id, name FROM series")
        .fetch_all(pool)
        .await?;
    let mut names: HashMap<i64, String> = HashMap::new();
    for s in series {
        let name: String = s.try_get("name")?;
        if crate::model::topic_matches(pattern, &name) {
            names.insert(s.try_get("id")?, name);
        }
    }
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut points: HashMap<i64, Vec<(Timestamp, f64)>> = HashMap::new();
    let rows = sqlx::query("SELECT id, series_id, data FROM chunks WHERE last_ts >= ?")
        .bind(since)
        .fetch_all(pool)
        .await?;
    for row in rows {
        let series_id: i64 = row.try_get("series_id")?;
        if !names.contains_key(&series_id) {
            continue;
        }
        let id: i64 = row.try_get("id")?;
        let data: Vec<u8> = row.try_get("data")?;
        let decoded = chunk::decode(&data).map_err(|source| StoreError::Chunk { id, source })?;
        points
            .entry(series_id)
            .or_default()
            .extend(decoded.into_iter().filter(|p| p.0 >= since));
    }
    let mut by_name: Vec<(String, Vec<(Timestamp, f64)>)> = points
        .into_iter()
        .map(|(id, pts)| (names.remove(&id).unwrap_or_default(), pts))
        .collect();
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (name, mut pts) in by_name {
        pts.sort_by_key(|p| p.0);
        out.extend(pts.into_iter().map(|(ts, v)| (name.clone(), ts, v)));
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

/// History for the terminal's detail chart, read from the database. Called from a
/// blocking thread (the TUI runs it in `spawn_blocking`).
pub struct SqliteHistory {
    pub pool: SqlitePool,
    pub runtime: tokio::runtime::Handle,
}

impl crate::tui::HistorySource for SqliteHistory {
    fn history(&self, series: &str, since: Timestamp) -> Vec<(Timestamp, f64)> {
        match self
            .runtime
            .block_on(query_series(&self.pool, series, since))
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(series, error = %e, "cannot read history");
                Vec::new()
            }
        }
    }
}

/// Points of one series since `since`, ascending.
pub async fn query_series(
    pool: &SqlitePool,
    series: &str,
    since: Timestamp,
) -> Result<Vec<(Timestamp, f64)>, StoreError> {
    let Some(series_id): Option<i64> = sqlx::query_scalar("SELECT id FROM series WHERE name = ?")
        .bind(series)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(Vec::new());
    };
    // Merged chunks through the series index, recent ones through the time index.
    let rows = sqlx::query(
        "SELECT id, data FROM chunks WHERE compacted = 1 AND series_id = ?1 AND last_ts >= ?2 \
         UNION ALL SELECT id, data FROM chunks WHERE compacted = 0 AND last_ts >= ?2 AND series_id = ?1",
    )
    .bind(series_id)
    .bind(since)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let data: Vec<u8> = row.try_get("data")?;
        out.extend(
            chunk::decode(&data)
                .map_err(|source| StoreError::Chunk { id, source })?
                .into_iter()
                .filter(|p| p.0 >= since),
        );
    }
    out.sort_by_key(|p| p.0);
    Ok(out)
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
        w.force = true;
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
    async fn deadband_keeps_flat_readings_out_of_chunks_but_not_out_of_rollups() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(&dir.path().join("t.db")).await.unwrap();
        let band = crate::config::DeadbandConfig {
            series: "gh/+/t".into(),
            delta: 0.5,
            max_interval: crate::config::Duration::from_secs(10),
        };
        let mut w = Writer::new(pool.clone()).with_deadband(vec![band]);
        let a: SeriesId = Arc::from("gh/n1/t");
        let other: SeriesId = Arc::from("lab/x");
        let base = 1_699_999_980_000; // a minute's start
                                      // 20.0 stored; 20.2, 20.4 within the band; 21.0 moved; 21.1 within; at +12 s the
                                      // interval forces a store; the other series has no band.
        let values = [
            (0, 20.0),
            (1, 20.2),
            (2, 20.4),
            (3, 21.0),
            (4, 21.1),
            (16, 21.1),
        ];
        let batch: Vec<Reading> = values
            .iter()
            .map(|&(s, v)| reading(&a, base + s * 1000, v))
            .chain((0..6).map(|i| reading(&other, base + i * 1000, 1.0)))
            .collect();
        w.add(&batch);
        w.flush().await.unwrap();
        let stored: Vec<f64> = query_series(&pool, "gh/n1/t", 0)
            .await
            .unwrap()
            .iter()
            .map(|p| p.1)
            .collect();
        assert_eq!(stored, vec![20.0, 21.0, 21.1]);
        assert_eq!(query_series(&pool, "lab/x", 0).await.unwrap().len(), 6);
        let (count, max): (i64, f64) =
            sqlx::query_as("SELECT count, max FROM rollups_named WHERE series = 'gh/n1/t'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((count, max), (6, 21.1), "rollups count every reading");
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
