//! The writer task: readings buffered per series and written once per
//! `flush_interval` in a single transaction (one chunk row per series, one rollup upsert
//! per series-minute, catalogue upserts), while alert batches and maintenance run
//! between flushes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Row, SqlitePool};
use tokio::sync::mpsc;

use super::{chunk, StoreError, StoreMsg, StoreStats, WriterConfig};
use crate::model::{Reading, SeriesId, Timestamp};

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
    rollups: HashMap<(i64, i64), Rollup>,
    /// Write the catalogue and every rollup now (the last flush, and tests).
    pub force: bool,
    pending_count: usize,
    pub stats: Arc<StoreStats>,
}

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
                receiving(super::maintenance::maintain(&mut w, &cfg), &mut rx, &mut queue).await;
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

pub(super) async fn flush_logged(w: &mut Writer) {
    if let Err(e) = w.flush().await {
        tracing::error!(error = %e, pending = w.pending(), "flush failed; readings kept for the next try");
    }
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
