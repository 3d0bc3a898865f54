//! The Parquet output's task: takes batches from the fan-out, holds them until a part
//! file is due, writes it on a blocking thread while it goes on taking batches, and
//! keeps what a failed write could not write for the next try.
//!
//! A part file is due when the oldest row waiting arrived `flush_interval` ago, when the
//! UTC partition (hour or day) it arrived in has ended (plus a second for stragglers),
//! when `max_rows` readings wait, or when the input closes. After a failed write the
//! next try is backed off (1 s doubling to 30 s); meanwhile rows keep arriving and are
//! held up to `max_buffered_rows` (the oldest dropped past it, counted).
//!
//! Between writes, on the same blocking thread, the [`Compactor`] merges the part files
//! of partitions that have closed (those this task wrote to, and at start and every
//! partition period those it finds in the lake), a bounded round at a time; a write that
//! falls due goes first.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::compact::{Compactor, Kind};
use super::config::ParquetConfig;
use super::file::{write_all, EventRow, Layout, Outcome, PartError};
use super::ParquetStats;
use crate::logging::Throttle;
use crate::model::{now_ms, Reading};
use crate::shutdown::Shutdown;
use crate::store::OutputMsg;

/// Alert events held at most while writes fail (they are few; this is a backstop).
const MAX_BUFFERED_EVENTS: usize = 100_000;
/// The longest wait between two tries of a failing write.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Tries of the last write when the input has closed, a second apart.
const FINAL_TRIES: u32 = 3;

/// What a job on the blocking thread hands back.
enum Done {
    Flushed(Box<Flushed>),
    Compacted(Box<Compactor>),
}

/// What one write did, handed back from the blocking thread.
struct Flushed {
    readings: Outcome<Reading>,
    events: Outcome<EventRow>,
    /// When the oldest of its rows arrived (kept if they come back).
    oldest: Option<Instant>,
}

pub(super) struct Lake {
    root: PathBuf,
    layout: Layout,
    flush_every: Duration,
    max_buffered: usize,
    stats: Arc<ParquetStats>,
    readings: VecDeque<Arc<[Reading]>>,
    /// Rows in `readings`.
    buffered: usize,
    events: Vec<EventRow>,
    /// Rows handed to the write in flight.
    in_flight: usize,
    /// When the oldest row waiting arrived, and when its partition ends.
    oldest: Option<Instant>,
    close_by: Option<Instant>,
    /// Failed writes in a row, and when to try again.
    attempt: u32,
    retry_at: Option<Instant>,
    drop_log: Throttle,
    /// Merges closed partitions (none with `compact = false`, and while a round runs).
    compactor: Option<Box<Compactor>>,
}

impl Lake {
    pub(super) fn new(cfg: &ParquetConfig, stats: Arc<ParquetStats>) -> Self {
        Self {
            root: cfg.dir.clone(),
            layout: cfg.layout(),
            flush_every: cfg.flush_interval.std(),
            max_buffered: cfg.max_buffered_rows,
            stats,
            readings: VecDeque::new(),
            buffered: 0,
            events: Vec::new(),
            in_flight: 0,
            oldest: None,
            close_by: None,
            attempt: 0,
            retry_at: None,
            drop_log: Throttle::new(Duration::from_secs(60)),
            compactor: cfg.compact.then(|| {
                Box::new(Compactor::new(
                    cfg.dir.clone(),
                    cfg.layout(),
                    cfg.flush_interval.std(),
                ))
            }),
        }
    }

    pub(super) async fn run(mut self, mut input: mpsc::Receiver<OutputMsg>, shutdown: Shutdown) {
        let _shutdown = shutdown;
        let mut writing: Option<JoinHandle<Done>> = None;
        let mut open = true;
        loop {
            let due = self.due();
            // A write that falls due first goes first.
            let compact_at = self.compact_due().filter(|&c| due.is_none_or(|w| w > c));
            tokio::select! {
                msg = input.recv(), if open => match msg {
                    Some(msg) => self.take(msg),
                    None => open = false,
                },
                done = async { writing.as_mut().expect("guarded by is_some").await },
                    if writing.is_some() =>
                {
                    writing = None;
                    match done {
                        Ok(Done::Flushed(f)) => self.finished(*f),
                        Ok(Done::Compacted(c)) => self.compactor = Some(c),
                        // The rows (or the schedule) went with the panicked thread.
                        Err(e) => tracing::error!(error = %e, "Parquet writer thread failed"),
                    }
                }
                () = sleep_until(due), if writing.is_none() && due.is_some() && open => {
                    writing = Some(self.start_write());
                }
                () = sleep_until(compact_at), if writing.is_none() && compact_at.is_some() && open => {
                    writing = self.start_compaction();
                }
            }
            if !open && writing.is_none() {
                break;
            }
        }
        self.write_the_rest().await;
    }

    /// When the next write is due, if anything waits.
    fn due(&self) -> Option<Instant> {
        if self.buffered == 0 && self.events.is_empty() {
            return None;
        }
        if let Some(t) = self.retry_at {
            return Some(t);
        }
        if self.buffered >= self.layout.max_rows {
            return Some(Instant::now());
        }
        let oldest = self.oldest?;
        let at = oldest + self.flush_every;
        Some(self.close_by.map_or(at, |c| c.min(at)))
    }

    /// When the next compaction round is due, if one is.
    fn compact_due(&self) -> Option<Instant> {
        let at = self.compactor.as_ref()?.due()?;
        let wait = u64::try_from(at - now_ms()).unwrap_or(0);
        Some(Instant::now() + Duration::from_millis(wait))
    }

    /// Hands the compactor to a blocking thread for one round.
    fn start_compaction(&mut self) -> Option<JoinHandle<Done>> {
        let mut c = self.compactor.take()?;
        let stats = self.stats.clone();
        Some(tokio::task::spawn_blocking(move || {
            c.round(&stats);
            Done::Compacted(c)
        }))
    }

    fn take(&mut self, msg: OutputMsg) {
        match msg {
            OutputMsg::Readings(batch) if !batch.is_empty() => {
                self.buffered += batch.len();
                self.readings.push_back(batch);
            }
            OutputMsg::Alerts(a) if !a.events.is_empty() => {
                self.events.extend(a.events.iter().map(EventRow::from));
            }
            _ => return,
        }
        if self.oldest.is_none() {
            let now = Instant::now();
            self.oldest = Some(now);
            let wall = now_ms();
            let end = self.layout.partition.start_of(wall) + self.layout.partition.period_ms();
            let to_end = Duration::from_millis(u64::try_from(end - wall).unwrap_or(0));
            self.close_by = Some(now + to_end + Duration::from_secs(1));
        }
        self.bound();
    }

    /// Drops the oldest rows held past the bound (counted and logged).
    fn bound(&mut self) {
        let mut dropped = 0;
        while self.buffered + self.in_flight > self.max_buffered {
            let Some(b) = self.readings.pop_front() else {
                break;
            };
            self.buffered -= b.len();
            dropped += b.len();
        }
        if self.events.len() > MAX_BUFFERED_EVENTS {
            let n = self.events.len() - MAX_BUFFERED_EVENTS;
            self.events.drain(..n);
            tracing::error!(events = n, "Parquet: alert events dropped past the bound");
        }
        if dropped > 0 {
            self.stats
                .rows_dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
            if let Some(held_back) = self.drop_log.ready() {
                tracing::error!(
                    dropped,
                    held_back,
                    max_buffered_rows = self.max_buffered,
                    "Parquet: writes keep failing; the oldest readings held were dropped \
                     (SQLite still has them: centinela export --parquet writes them)"
                );
            }
        }
        self.gauge();
    }

    fn gauge(&self) {
        self.stats
            .rows_buffered
            .store((self.buffered + self.in_flight) as u64, Ordering::Relaxed);
    }

    /// Hands everything waiting to a blocking thread.
    fn start_write(&mut self) -> JoinHandle<Done> {
        let job = self.write_job();
        tokio::task::spawn_blocking(move || Done::Flushed(Box::new(job())))
    }

    /// Takes everything waiting, for a write on a blocking thread.
    fn write_job(&mut self) -> impl FnOnce() -> Flushed + Send + 'static {
        let batches: Vec<Arc<[Reading]>> = self.readings.drain(..).collect();
        let events = std::mem::take(&mut self.events);
        self.in_flight = std::mem::take(&mut self.buffered);
        let oldest = self.oldest.take();
        self.close_by = None;
        self.retry_at = None;
        let root = self.root.clone();
        let layout = self.layout;
        move || {
            let rows: Vec<Reading> = batches.iter().flat_map(|b| b.iter().cloned()).collect();
            drop(batches);
            Flushed {
                readings: write_all(&root, &layout, rows),
                events: write_all(&root, &layout, events),
                oldest,
            }
        }
    }

    /// Counts what a write did and keeps what it could not write.
    fn finished(&mut self, f: Flushed) {
        self.in_flight = 0;
        let s = &self.stats;
        for w in &f.readings.written {
            s.rows_written.fetch_add(w.rows as u64, Ordering::Relaxed);
            tracing::debug!(path = %w.path.display(), rows = w.rows, bytes = w.bytes, "Parquet part written");
        }
        for w in &f.events.written {
            s.events_written.fetch_add(w.rows as u64, Ordering::Relaxed);
        }
        for w in f.readings.written.iter().chain(&f.events.written) {
            s.files_written.fetch_add(1, Ordering::Relaxed);
            s.bytes_written.fetch_add(w.bytes, Ordering::Relaxed);
        }
        if let Some(c) = self.compactor.as_mut() {
            let kinds = [Kind::Readings, Kind::Alerts];
            for (kind, written) in kinds
                .into_iter()
                .zip([&f.readings.written, &f.events.written])
            {
                for w in written {
                    if let Some(dir) = w.path.parent() {
                        c.touched(kind, dir.to_path_buf(), w.start);
                    }
                }
            }
        }
        let mut error: Option<PartError> = None;
        if let Some((e, rows)) = f.readings.failed {
            self.buffered += rows.len();
            self.readings.push_front(rows.into());
            error = Some(e);
        }
        if let Some((e, mut rows)) = f.events.failed {
            rows.append(&mut self.events);
            self.events = rows;
            error.get_or_insert(e);
        }
        match error {
            Some(e) => {
                s.write_errors.fetch_add(1, Ordering::Relaxed);
                self.attempt += 1;
                let wait =
                    crate::backoff::jittered(self.attempt, Duration::from_secs(1), RETRY_MAX, 0.1);
                self.retry_at = Some(Instant::now() + wait);
                // The rows that came back are older than any that arrived meanwhile.
                self.oldest = f.oldest.or(self.oldest);
                let first = s.set_failing(Some(e.to_string()));
                if first {
                    tracing::error!(
                        error = %e,
                        held = self.buffered,
                        "Parquet: cannot write a part file; readings are held and retried"
                    );
                }
            }
            None => {
                self.attempt = 0;
                if s.set_failing(None) {
                    tracing::info!("Parquet: part files are written again");
                }
            }
        }
        self.bound();
    }

    /// The input has closed: writes what is held, trying a few times.
    async fn write_the_rest(&mut self) {
        for i in 0..FINAL_TRIES {
            if self.buffered == 0 && self.events.is_empty() {
                return;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match tokio::task::spawn_blocking(self.write_job()).await {
                Ok(f) => self.finished(f),
                Err(e) => {
                    tracing::error!(error = %e, "Parquet writer thread failed");
                    return;
                }
            }
        }
        if self.buffered > 0 || !self.events.is_empty() {
            tracing::error!(
                readings = self.buffered,
                events = self.events.len(),
                dir = %self.root.display(),
                "Parquet: stopping with rows not written (SQLite has them: \
                 centinela export --parquet writes them)"
            );
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Output;

    fn batch(n: usize, base: i64) -> OutputMsg {
        let series: Arc<str> = Arc::from("a/b");
        let rows: Vec<Reading> = (0..n)
            .map(|i| Reading {
                series: series.clone(),
                value: i as f64,
                ts: base + i as i64,
                unit: None,
            })
            .collect();
        OutputMsg::Readings(rows.into())
    }

    /// A lake whose root is a plain file: every write fails, as on a broken disk.
    #[tokio::test]
    async fn failing_writes_never_hold_up_the_sender_and_memory_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-folder");
        std::fs::write(&blocker, b"x").unwrap();
        let cfg = ParquetConfig {
            dir: blocker,
            flush_interval: crate::config::Duration::from_millis(10),
            max_rows: 10,
            max_buffered_rows: 100,
            ..ParquetConfig::default()
        };
        let out = super::super::ParquetOutput {
            cfg: cfg.clone(),
            stats: Arc::default(),
        };
        let stats = out.stats();
        let (tx, rx) = mpsc::channel(1);
        let trigger = crate::shutdown::Trigger::new();
        let task = tokio::spawn(Lake::new(&cfg, stats.clone()).run(rx, trigger.token()));
        let sent = tokio::time::timeout(Duration::from_secs(20), async {
            for i in 0..1_000 {
                tx.send(batch(10, i * 10)).await.unwrap();
            }
        })
        .await;
        assert!(sent.is_ok(), "the sender was held up");
        let deadline = Instant::now() + Duration::from_secs(20);
        while stats.write_errors.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "no write failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(stats.rows_buffered.load(Ordering::Relaxed) <= 100);
        let dropped = stats.rows_dropped.load(Ordering::Relaxed);
        // All but the bound, and the batch that may still wait in the channel.
        assert!(dropped >= 10_000 - 100 - 10, "{dropped} dropped");
        assert_eq!(stats.rows_written.load(Ordering::Relaxed), 0);
        let health = out.health().unwrap();
        assert!(!health.ok, "{health:?}");
        assert!(health.detail.contains("not-a-folder"), "{health:?}");
        drop(tx);
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("the task ends when its input closes")
            .unwrap();
    }
}
