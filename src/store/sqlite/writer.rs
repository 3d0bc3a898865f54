//! The writer task: readings buffered per series and written once per
//! `flush_interval` in a single transaction — one block row holding every series' new
//! points (or, when the series hold many points each, one chunk row per series), the
//! rollups of the minutes that are over, catalogue upserts for new series — while
//! alert batches, the merge of blocks into per-series chunks and maintenance run
//! between flushes. What a flush costs follows the readings, not the series.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Row, SqlitePool};
use tokio::sync::mpsc;

use super::{chunk, AlertBatch, StoreError, StoreMsg, StoreStats, WriterConfig};
use crate::model::{Reading, SeriesId, Timestamp};
use crate::store::block;

/// How often the catalogue's last seen and last value are written.
const CATALOGUE_EVERY_MS: i64 = 60_000;
/// How often the rollups of the minutes that are over are written: rows of one series
/// for consecutive minutes share a page, so writing several minutes at once spares the
/// SD card a page per series per minute.
pub const ROLLUPS_EVERY_MS: i64 = 600_000;
/// Rollup rows per flush at most (whole minutes; the rest waits for the next flush).
const ROLLUP_ROWS_PER_FLUSH: usize = 20_000;
/// A flush whose series hold at least this many new points each, on average, writes one
/// chunk row per series (flat out: the rows are full); with fewer, one block row.
pub const CHUNK_POINTS_MIN: usize = 32;
/// Blocks are merged into per-series chunks once they hold this many points (~8 MB of
/// points in memory while merging), or once the hour the oldest was written in is over.
pub const MERGE_POINTS: u64 = 500_000;
const HOUR_MS: i64 = 3_600_000;

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

impl Rollup {
    fn of(v: f64) -> Self {
        Rollup {
            min: v,
            max: v,
            sum: v,
            count: 1,
        }
    }

    fn add(&mut self, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.count += 1;
    }

    fn merge(&mut self, o: &Rollup) {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        self.count += o.count;
    }
}

/// The blocks not merged yet, as the writer knows them.
#[derive(Debug, Clone, Copy, Default)]
struct Blocks {
    points: u64,
    /// Wall time of the flush that wrote the oldest one (`None`: there are none).
    oldest: Option<Timestamp>,
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
    pub(super) pool: SqlitePool,
    ids: HashMap<SeriesId, i64>,
    pending: HashMap<SeriesId, Pending>,
    /// Notifications of alert events are written with them and the workers woken.
    pub(super) outbox: Option<crate::notify::Outbox>,
    deadband: Vec<crate::config::DeadbandConfig>,
    /// Per series: its deadband (`None`: every reading is stored).
    bands: HashMap<SeriesId, Option<Band>>,
    seen: HashMap<SeriesId, Seen>,
    catalogue_written: Option<Timestamp>,
    /// Rollups not written yet: minute → series id → aggregates.
    rollups: BTreeMap<i64, HashMap<i64, Rollup>>,
    rollups_written: Option<Timestamp>,
    /// Unmerged blocks (`None`: not read from the database yet).
    blocks: Option<Blocks>,
    /// Write the catalogue and every rollup now (the last flush, and tests).
    pub force: bool,
    pending_count: usize,
    pub stats: Arc<StoreStats>,
    /// Alert batches not written yet (a write failed); written before any reading.
    alerts: VecDeque<AlertBatch>,
    /// Readings held in memory at most; past it new readings are refused and counted.
    max_buffered: usize,
    /// After a failed write: no new try before this instant; the wait that led to it.
    retry: Option<(Instant, Duration)>,
    /// When readings refused for a full buffer were last logged.
    dropped_logged: Option<Instant>,
}

/// Readings held in memory at most while writes fail (~16 bytes each, ~32 MB): far
/// above what one flush interval gathers at full speed.
pub const MAX_BUFFERED: usize = 2_000_000;
/// Alert batches held at most while writes fail (the oldest go first past it).
const MAX_ALERT_BATCHES: usize = 100_000;
/// The wait after a failed write doubles from the first to the last value.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(8);
/// How long the last flush at shutdown keeps trying (systemd's `TimeoutStopSec=30s`).
const FINAL_TRIES_FOR: Duration = Duration::from_secs(10);

/// Rows per multi-row INSERT (SQLite allows 32,766 bound values).
pub(super) const ROWS_PER_STATEMENT: usize = 200;

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
            rollups: BTreeMap::new(),
            rollups_written: None,
            blocks: None,
            force: false,
            pending_count: 0,
            stats: Arc::default(),
            alerts: VecDeque::new(),
            max_buffered: MAX_BUFFERED,
            retry: None,
            dropped_logged: None,
        }
    }

    /// Holds at most `n` readings in memory while writes fail (default [`MAX_BUFFERED`]).
    pub fn with_buffer_limit(mut self, n: usize) -> Self {
        self.max_buffered = n;
        self
    }

    /// Readings and alert batches held in memory, not written yet.
    pub fn unwritten(&self) -> (usize, usize) {
        (self.pending_count, self.alerts.len())
    }

    /// Whether a write failed and the wait before the next try is not over.
    pub fn backing_off(&self) -> bool {
        self.retry.is_some_and(|(at, _)| Instant::now() < at)
    }

    /// Queues an alert batch; it is written before any reading.
    pub fn add_alerts(&mut self, batch: AlertBatch) {
        if batch.is_empty() {
            return;
        }
        if self.alerts.len() >= MAX_ALERT_BATCHES {
            self.alerts.pop_front();
            tracing::error!(
                held = MAX_ALERT_BATCHES,
                "alert batches held while the database fails: the oldest is dropped"
            );
        }
        self.alerts.push_back(batch);
        self.publish_counts();
    }

    /// Writes the queued alert batches in order; on error the rest stay queued.
    pub async fn write_pending_alerts(&mut self) -> Result<(), StoreError> {
        while let Some(batch) = self.alerts.front() {
            self.write_alerts(batch, crate::model::now_ms()).await?;
            self.alerts.pop_front();
        }
        Ok(())
    }

    /// Writes everything held: alert batches first, then the readings. Returns the
    /// readings written.
    pub async fn write_all(&mut self) -> Result<usize, StoreError> {
        self.write_pending_alerts().await?;
        self.flush().await
    }

    /// Records the outcome of a write: counters, health, the wait before the next try,
    /// and the log line (one per failure, as tries back off; one on recovery).
    pub fn record(&mut self, result: Result<usize, StoreError>) -> bool {
        let ok = match result {
            Ok(_) => {
                let failed = self.stats.failing.swap(0, Ordering::Relaxed);
                if failed > 0 {
                    tracing::info!(
                        failed_tries = failed,
                        "database writes succeed again; everything held in memory is written"
                    );
                }
                self.retry = None;
                self.stats
                    .progress_ms
                    .store(crate::model::now_ms(), Ordering::Relaxed);
                true
            }
            Err(e) => {
                let wait = self
                    .retry
                    .map_or(RETRY_FIRST, |(_, d)| (d * 2).min(RETRY_MAX));
                self.retry = Some((Instant::now() + wait, wait));
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let tries = self.stats.failing.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(
                    error = %e,
                    tries,
                    readings_held = self.pending_count,
                    alert_batches_held = self.alerts.len(),
                    retry_in_ms = wait.as_millis() as u64,
                    "database write failed; everything is kept in memory and tried again"
                );
                false
            }
        };
        self.publish_counts();
        ok
    }

    fn publish_counts(&self) {
        self.stats
            .pending
            .store(self.pending_count as u64, Ordering::Relaxed);
        self.stats
            .alerts_pending
            .store(self.alerts.len() as u64, Ordering::Relaxed);
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
        let room = self.max_buffered.saturating_sub(self.pending_count);
        let readings = if readings.len() > room {
            let refused = readings.len() - room;
            self.stats
                .dropped
                .fetch_add(refused as u64, Ordering::Relaxed);
            if self
                .dropped_logged
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            {
                self.dropped_logged = Some(Instant::now());
                tracing::error!(
                    held = self.pending_count,
                    dropped_total = self.stats.dropped.load(Ordering::Relaxed),
                    "database writes failing and the reading buffer is full: new readings are dropped"
                );
            }
            &readings[..room]
        } else {
            readings
        };
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
        self.publish_counts();
    }

    /// Readings buffered and not yet written.
    pub fn pending(&self) -> usize {
        self.pending_count
    }

    /// Writes every buffered reading in one transaction. On error the readings stay
    /// buffered and the next flush tries again.
    pub async fn flush(&mut self) -> Result<usize, StoreError> {
        self.flush_at(crate::model::now_ms()).await
    }

    /// [`Writer::flush`] at wall time `now` (which minutes are over, whether the
    /// catalogue is due): a fixed `now` makes a run repeatable.
    pub async fn flush_at(&mut self, now: Timestamp) -> Result<usize, StoreError> {
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
        match self.write_batch(&batch, now).await {
            Ok(rows) => {
                let n = self.pending_count;
                self.pending_count = 0;
                self.stats.stored.fetch_add(n as u64, Ordering::Relaxed);
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .chunks_written
                    .fetch_add(rows as u64, Ordering::Relaxed);
                // Keep the buffers' capacity for the next flush.
                for (s, mut p) in batch {
                    p.points.clear();
                    p.skipped.clear();
                    self.pending.insert(s, p);
                }
                Ok(n)
            }
            Err(e) => {
                for (s, p) in batch {
                    self.pending.insert(s, p);
                }
                Err(e)
            }
        }
    }

    async fn write_batch(
        &mut self,
        batch: &[(SeriesId, Pending)],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
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
        // Hash lookups only: a burst of new series (64,000 in one flush) must cost
        // O(series), not O(series²).
        let mut new_ids: HashMap<SeriesId, i64> = HashMap::new();
        for part in rows.chunks(ROWS_PER_STATEMENT) {
            let by_name: HashMap<&str, &SeriesId> =
                part.iter().map(|(s, _)| (s.as_ref(), *s)).collect();
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
                if let Some(s) = by_name.get(name.as_str()) {
                    if !self.ids.contains_key(*s) {
                        new_ids.insert((*s).clone(), row.try_get("id")?);
                    }
                }
            }
        }
        let id_of = |s: &SeriesId| self.ids.get(s).copied().or_else(|| new_ids.get(s).copied());
        let with_points: Vec<(i64, &[(Timestamp, f64)])> = batch
            .iter()
            .filter(|(_, p)| !p.points.is_empty())
            .filter_map(|(s, p)| Some((id_of(s)?, p.points.as_slice())))
            .collect();
        let points: usize = with_points.iter().map(|(_, p)| p.len()).sum();
        let as_block = points < CHUNK_POINTS_MIN * with_points.len();
        if as_block {
            // One row for the whole flush, appended at the end of its table.
            let first = with_points.iter().map(|(_, p)| p[0].0).min();
            let last = with_points.iter().map(|(_, p)| p[p.len() - 1].0).max();
            if let (Some(first), Some(last)) = (first, last) {
                sqlx::query(
                    "INSERT INTO blocks (first_ts, last_ts, count, data) VALUES (?, ?, ?, ?)",
                )
                .bind(first)
                .bind(last)
                .bind(points as i64)
                .bind(block::encode(with_points.iter().copied()))
                .execute(&mut *tx)
                .await?;
            }
        }
        // Otherwise chunks: one row per series, appended (see the migration on why
        // unindexed by series).
        let blobs: Vec<(i64, Timestamp, Timestamp, i64, Vec<u8>)> = batch
            .iter()
            .filter(|_| !as_block)
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
        // over (a late reading merges into the stored row). What this batch adds is
        // kept apart until the commit, so a failed write leaves the totals as they were
        // and the work follows the readings, not the series held.
        let mut delta: HashMap<(i64, i64), Rollup> = HashMap::new();
        for (s, p) in batch {
            let Some(id) = id_of(s) else { continue };
            for &(ts, v) in p.points.iter().chain(&p.skipped) {
                delta
                    .entry((id, ts.div_euclid(60_000) * 60_000))
                    .and_modify(|r| r.add(v))
                    .or_insert_with(|| Rollup::of(v));
            }
        }
        let open_minute = now.div_euclid(60_000) * 60_000 - 60_000;
        let rollups_due = self
            .rollups_written
            .is_none_or(|t| now - t >= ROLLUPS_EVERY_MS);
        // Minutes before `upto` are written now.
        let mut upto = if self.force {
            i64::MAX
        } else if rollups_due {
            open_minute
        } else {
            i64::MIN
        };
        let mut capped = false;
        if !self.force {
            let mut rows = 0;
            for (&minute, r) in self.rollups.range(..upto) {
                if rows > 0 && rows + r.len() > ROLLUP_ROWS_PER_FLUSH {
                    upto = minute;
                    capped = true;
                    break;
                }
                rows += r.len();
            }
        }
        let mut closed: Vec<((i64, i64), Rollup)> = Vec::new();
        for (&minute, r) in self.rollups.range(..upto) {
            for (&id, r) in r {
                let mut r = *r;
                if let Some(d) = delta.remove(&(id, minute)) {
                    r.merge(&d);
                }
                closed.push(((id, minute), r));
            }
        }
        let mut open: Vec<((i64, i64), Rollup)> = Vec::with_capacity(delta.len());
        for (k, d) in delta {
            if k.1 < upto {
                closed.push((k, d));
            } else {
                open.push((k, d));
            }
        }
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
        if as_block && points > 0 {
            if let Some(b) = &mut self.blocks {
                b.points += points as u64;
                b.oldest.get_or_insert(now);
            }
        }
        if upto != i64::MIN {
            self.rollups = if upto == i64::MAX {
                BTreeMap::new()
            } else {
                self.rollups.split_off(&upto)
            };
            if !capped {
                self.rollups_written = Some(now);
            }
        }
        for ((id, minute), d) in open {
            self.rollups
                .entry(minute)
                .or_default()
                .entry(id)
                .and_modify(|r| r.merge(&d))
                .or_insert(d);
        }
        if catalogue_due {
            self.seen.clear();
            self.catalogue_written = Some(now);
        }
        Ok(if as_block { 1 } else { blobs.len() })
    }

    /// Merges blocks into per-series chunks when they are due: once they hold
    /// [`MERGE_POINTS`] points, or once the hour the oldest was written in (wall time
    /// `now`) is over. Merges at most about [`MERGE_POINTS`] points per call; returns
    /// the chunk rows written.
    pub async fn merge_if_due(&mut self, now: Timestamp) -> Result<usize, StoreError> {
        let b = match self.blocks {
            Some(b) => b,
            None => {
                let (n, points): (i64, i64) =
                    sqlx::query_as("SELECT count(*), coalesce(sum(count), 0) FROM blocks")
                        .fetch_one(&self.pool)
                        .await?;
                let b = Blocks {
                    points: u64::try_from(points).unwrap_or(0),
                    oldest: (n > 0).then_some(now),
                };
                self.blocks = Some(b);
                b
            }
        };
        let hour_over = b
            .oldest
            .is_some_and(|t| t.div_euclid(HOUR_MS) < now.div_euclid(HOUR_MS));
        if b.points < MERGE_POINTS && !hour_over {
            return Ok(0);
        }
        let (rows, merged, left) = self.merge_blocks(MERGE_POINTS).await?;
        self.blocks = Some(Blocks {
            points: b.points.saturating_sub(merged),
            oldest: if left { b.oldest } else { None },
        });
        Ok(rows)
    }

    /// Merges the oldest blocks, about `max_points` points of them (at least one
    /// block), into one chunk per series and hour, in one transaction that also
    /// deletes them. Returns (chunk rows written, points merged, whether blocks are left).
    pub async fn merge_blocks(&self, max_points: u64) -> Result<(usize, u64, bool), StoreError> {
        let heads: Vec<(i64, i64)> = sqlx::query_as("SELECT id, count FROM blocks ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let mut take = 0usize;
        let mut merged = 0u64;
        for &(_, count) in &heads {
            if take > 0 && merged + count.max(0) as u64 > max_points {
                break;
            }
            take += 1;
            merged += count.max(0) as u64;
        }
        let Some(&(last_id, _)) = take.checked_sub(1).and_then(|i| heads.get(i)) else {
            return Ok((0, 0, false));
        };
        let rows = sqlx::query("SELECT id, data FROM blocks WHERE id <= ? ORDER BY id")
            .bind(last_id)
            .fetch_all(&self.pool)
            .await?;
        // (series, hour) → points, in the order written.
        let mut groups: HashMap<(i64, i64), Vec<(Timestamp, f64)>> = HashMap::new();
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let data: &[u8] = row.try_get("data")?;
            block::for_each(data, |series, blob| {
                for p in chunk::decode(blob)? {
                    groups
                        .entry((series, p.0.div_euclid(HOUR_MS)))
                        .or_default()
                        .push(p);
                }
                Ok(())
            })
            .map_err(|source| StoreError::Block { id, source })?;
        }
        let chunks: Vec<(i64, Timestamp, Timestamp, i64, Vec<u8>)> = groups
            .into_iter()
            .map(|((series, _), mut points)| {
                // Stable: readings with equal timestamps keep their arrival order.
                points.sort_by_key(|p| p.0);
                let (first, last) = (points[0].0, points[points.len() - 1].0);
                (
                    series,
                    first,
                    last,
                    points.len() as i64,
                    chunk::encode(&points),
                )
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        for part in chunks.chunks(ROWS_PER_STATEMENT) {
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
        sqlx::query("DELETE FROM blocks WHERE id <= ?")
            .bind(last_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((chunks.len(), merged, take < heads.len()))
    }
}

/// Runs the writer until `rx` closes, then writes what is left and returns.
///
/// Every slow step (the timed flush, alert batches, maintenance) runs while the writer
/// keeps taking messages: what arrives meanwhile is queued (up to [`HELD_MAX`]
/// readings) and applied afterwards, alert batches first, so a large transaction never
/// stalls the stream behind it.
///
/// A failed write (disk full, I/O error, a read-only file) keeps everything in memory
/// (at most [`MAX_BUFFERED`] readings; more are refused and counted) and is tried again
/// after a wait doubling from 0.5 s to 8 s. What cannot be written by the end is
/// logged and left in [`StoreStats::pending`] for the caller to report.
pub async fn run_writer(mut w: Writer, mut rx: mpsc::Receiver<StoreMsg>, cfg: WriterConfig) {
    let behind = (cfg.flush_interval * 3 + Duration::from_secs(5)).as_millis();
    w.stats
        .behind_after_ms
        .store(i64::try_from(behind).unwrap_or(i64::MAX), Ordering::Relaxed);
    w.stats
        .progress_ms
        .store(crate::model::now_ms(), Ordering::Relaxed);
    let mut flush = tokio::time::interval(cfg.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maintenance = tokio::time::interval(cfg.maintenance_interval);
    maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    maintenance.tick().await;
    let mut queue = VecDeque::new();
    let mut merge_failed = crate::logging::Throttle::new(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = std::future::ready(()), if !queue.is_empty() => {
                // What is queued now, alert batches first; what arrives meanwhile waits
                // for the next round, so the timers get their turn.
                let (alerts, rest): (VecDeque<StoreMsg>, VecDeque<StoreMsg>) =
                    queue.drain(..).partition(|m| matches!(m, StoreMsg::Alerts(_)));
                let mut had_alerts = false;
                for msg in alerts {
                    if let StoreMsg::Alerts(batch) = msg {
                        w.add_alerts(batch);
                        had_alerts = true;
                    }
                }
                if had_alerts && !w.backing_off() {
                    receiving(write_alerts_logged(&mut w), &mut rx, &mut queue).await;
                }
                for msg in rest {
                    match msg {
                        StoreMsg::Readings(r) => w.add(&r),
                        StoreMsg::Flush(done) => {
                            receiving(write_logged(&mut w), &mut rx, &mut queue).await;
                            let _ = done.send(());
                        }
                        StoreMsg::Alerts(batch) => w.add_alerts(batch),
                    }
                }
            }
            msg = rx.recv(), if queue.is_empty() => match msg {
                Some(msg) => queue.push_back(msg),
                None => break,
            },
            _ = flush.tick() => {
                if !w.backing_off() {
                    receiving(write_logged(&mut w), &mut rx, &mut queue).await;
                }
                if !w.backing_off() {
                    receiving(merge_logged(&mut w, &mut merge_failed), &mut rx, &mut queue).await;
                }
            }
            _ = maintenance.tick() => {
                if !w.backing_off() {
                    receiving(super::maintenance::maintain(&mut w, &cfg), &mut rx, &mut queue).await;
                }
            }
        }
    }
    // The stream has ended: write everything held, trying for a bounded time.
    w.force = true;
    let deadline = Instant::now() + FINAL_TRIES_FOR;
    loop {
        let r = w.write_all().await;
        if w.record(r) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(RETRY_FIRST).await;
    }
    let (readings, alert_batches) = w.unwritten();
    if readings > 0 || alert_batches > 0 {
        tracing::error!(
            readings,
            alert_batches,
            dropped_earlier = w.stats.dropped.load(Ordering::Relaxed),
            "stopping with data the database did not take: these are lost"
        );
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

/// Writes alert batches, then readings, recording the outcome.
pub(super) async fn write_logged(w: &mut Writer) {
    let r = w.write_all().await;
    w.record(r);
}

/// Merges blocks into chunks when due. A failure keeps the blocks (every query reads
/// them) and is tried again after the next flush; it is logged once a minute at most.
async fn merge_logged(w: &mut Writer, failed: &mut crate::logging::Throttle) {
    if let Err(e) = w.merge_if_due(crate::model::now_ms()).await {
        if let Some(held_back) = failed.ready() {
            tracing::warn!(error = %e, held_back, "merging blocks into chunks failed; they stay readable and are merged later");
        }
    }
}

/// Writes the queued alert batches only (readings wait for their flush).
async fn write_alerts_logged(w: &mut Writer) {
    let r = w.write_pending_alerts().await.map(|()| 0);
    w.record(r);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::{open, query_readings, query_series};

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

        let rows: (i64, i64) =
            sqlx::query_as("SELECT (SELECT count(*) FROM blocks), (SELECT count(*) FROM chunks)")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(rows, (2, 0), "one block row per flush");
        // Merged: one chunk per series (and hour), the same readings.
        let before = query_readings(&pool, "#", 0).await.unwrap();
        assert_eq!(w.merge_blocks(MERGE_POINTS).await.unwrap(), (2, 61, false));
        let rows: (i64, i64) =
            sqlx::query_as("SELECT (SELECT count(*) FROM blocks), (SELECT count(*) FROM chunks)")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(rows, (0, 2));
        assert_eq!(query_readings(&pool, "#", 0).await.unwrap(), before);

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
        // Blocks of at most 20 points per merge: three chunks, then one.
        assert_eq!(w.merge_blocks(20).await.unwrap(), (1, 20, true));
        assert_eq!(w.merge_blocks(20).await.unwrap(), (1, 20, true));
        assert_eq!(w.merge_blocks(20).await.unwrap(), (1, 10, false));
        assert_eq!(w.merge_blocks(20).await.unwrap(), (0, 0, false));
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
    async fn a_flush_of_many_series_writes_one_row_and_is_merged_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(&dir.path().join("t.db")).await.unwrap();
        let mut w = Writer::new(pool.clone());
        let names: Vec<SeriesId> = (0..2000).map(|i| Arc::from(format!("s/{i}"))).collect();
        let t = 1_800_000_012_345;
        let hour = t - t % HOUR_MS;
        let count = |pool: SqlitePool| async move {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT (SELECT count(*) FROM blocks), (SELECT count(*) FROM chunks)",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        };
        // 2,000 series, one reading each per flush: one block row per flush.
        for round in 0..3 {
            let batch: Vec<Reading> = names
                .iter()
                .enumerate()
                .map(|(i, s)| reading(s, hour + round * 1000, i as f64 + 0.5))
                .collect();
            w.add(&batch);
            assert_eq!(w.flush_at(hour + round * 1000 + 1000).await.unwrap(), 2000);
            assert_eq!(w.merge_if_due(hour + round * 1000 + 1000).await.unwrap(), 0);
        }
        assert_eq!(count(pool.clone()).await, (3, 0));
        let stored = query_readings(&pool, "#", 0).await.unwrap();
        assert_eq!(stored.len(), 6000);
        assert_eq!(
            query_series(&pool, "s/7", 0).await.unwrap(),
            vec![(hour, 7.5), (hour + 1000, 7.5), (hour + 2000, 7.5)]
        );
        // Many points per series in one flush: one chunk row per series instead.
        let many: Vec<Reading> = (0..CHUNK_POINTS_MIN as i64)
            .flat_map(|k| names[..10].iter().map(move |s| (s, k)))
            .map(|(s, k)| reading(s, hour + 10_000 + k, 1.0))
            .collect();
        w.add(&many);
        w.flush_at(hour + 20_000).await.unwrap();
        assert_eq!(count(pool.clone()).await, (3, 10));
        // Once the hour is over, the blocks become one chunk per series.
        assert_eq!(w.merge_if_due(hour + HOUR_MS).await.unwrap(), 2000);
        assert_eq!(count(pool.clone()).await, (0, 2010));
        let merged = query_readings(&pool, "#", 0).await.unwrap();
        assert_eq!(merged.len(), 6000 + many.len());
        assert_eq!(
            query_series(&pool, "s/7", 0).await.unwrap()[..3],
            [(hour, 7.5), (hour + 1000, 7.5), (hour + 2000, 7.5)]
        );
    }

    #[tokio::test]
    async fn rollups_of_past_minutes_are_written_every_few_minutes_and_never_twice() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(&dir.path().join("t.db")).await.unwrap();
        let mut w = Writer::new(pool.clone());
        let a: SeriesId = Arc::from("r/a");
        let t = 1_800_000_012_345;
        let minute = t - t % 60_000;
        let rollups = |pool: SqlitePool| async move {
            sqlx::query_as::<_, (i64, i64, f64)>(
                "SELECT minute, count, avg FROM rollups ORDER BY minute",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        };
        // A reading a second for three minutes, flushed each second: the minutes that
        // are over wait in memory for the next write of rollups.
        for s in 0..180 {
            w.add(&[reading(&a, minute + s * 1000, s as f64)]);
            w.flush_at(minute + s * 1000 + 1000).await.unwrap();
        }
        assert_eq!(rollups(pool.clone()).await, vec![]);
        // A late reading of the first minute joins it in memory.
        w.add(&[reading(&a, minute + 59_500, 29.5)]);
        w.flush_at(minute + 1000 + ROLLUPS_EVERY_MS).await.unwrap();
        assert_eq!(
            rollups(pool.clone()).await,
            vec![
                (minute, 61, 29.5),
                (minute + 60_000, 60, 89.5),
                (minute + 120_000, 60, 149.5)
            ]
        );
        // Later still: it merges into the stored row.
        w.add(&[reading(&a, minute + 59_600, 29.5)]);
        w.flush_at(minute + 1000 + 2 * ROLLUPS_EVERY_MS)
            .await
            .unwrap();
        assert_eq!(rollups(pool.clone()).await[0], (minute, 62, 29.5));
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
