//! The writer task: readings buffered per series and written once per
//! `flush_interval` in a single transaction — one block row holding every series' new
//! points (or, when the series hold many points each, one chunk row per series), the
//! rollups of the minutes that are over, catalogue upserts for new series — while
//! alert batches, the merge of blocks into per-series chunks and maintenance run
//! between flushes. What a flush costs follows the readings, not the series.
//!
//! # Layout
//! - this file: the writer's buffers and counters, and taking readings in
//!   (deadband, limits);
//! - `flush`: the flush transaction (block or chunk rows, rollups, catalogue);
//! - `merge`: merging blocks into per-series chunks when due;
//! - `task`: the async task around it, taking messages while a slow step runs,
//!   retrying failed writes.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::model::FastMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::SqlitePool;

use super::{AlertBatch, StoreError, StoreStats};
use crate::model::{Reading, SeriesId, Timestamp};

mod flush;
mod merge;
mod task;
#[cfg(test)]
mod tests;

pub use task::run_writer;
pub(in crate::store::sqlite) use task::write_logged;

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
    ids: FastMap<SeriesId, i64>,
    pending: FastMap<SeriesId, Pending>,
    /// Notifications of alert events are written with them and the workers woken.
    pub(super) outbox: Option<crate::notify::Outbox>,
    deadband: Vec<crate::config::DeadbandConfig>,
    /// Per series: its deadband (`None`: every reading is stored).
    bands: FastMap<SeriesId, Option<Band>>,
    seen: FastMap<SeriesId, Seen>,
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
            ids: FastMap::default(),
            pending: FastMap::default(),
            outbox: None,
            deadband: Vec::new(),
            bands: FastMap::default(),
            seen: FastMap::default(),
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
}
