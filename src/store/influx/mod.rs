//! The optional InfluxDB sink: readings and alert events from the engine, as line
//! protocol, to InfluxDB over HTTP — and nothing lost while InfluxDB is away.
//!
//! ```text
//!  engine ──InfluxInput──► [bounded mpsc] ──► sink task
//!                                              │ encode (line.rs, pure) into a batch
//!                                              │ batch_size points or flush_interval
//!                                              ▼
//!                              one write in flight (client.rs, gzip) ──► InfluxDB
//!                                              │ unreachable / 5xx / 429 / 401 / 404
//!                                              ▼
//!                              backlog.rs: SQLite file, bounded, oldest first
//!                                              │ replayed when InfluxDB answers again,
//!                                              ▼ one backlog batch per live batch
//! ```
//!
//! Guarantees: a point taken from the channel is written, or in the backlog file, or
//! counted as rejected (InfluxDB refused it as bad data: 400, 413, 422; or the encoder
//! could not write it: NaN, no metric name) or dropped (the backlog was full, oldest
//! first). A refused batch is split in halves to find the bad points, so good points
//! next to a bad one are still written. A failed write puts its batch in the backlog
//! before letting go of it; what is only in memory at a crash is the batch being filled
//! (at most `flush_interval` or `batch_size`), the write in flight and up to
//! `LIVE_QUEUE_MAX` batches waiting for it. On shutdown, memory is written or, failing
//! that, put in the backlog. [`InfluxStats`] shows all of it to the service and the TUI.
//!
//! Falling behind: when more than `LIVE_QUEUE_MAX` batches wait for the writer (a burst
//! faster than InfluxDB takes it), the oldest go to the backlog file, which is fast, so
//! the sink keeps draining its channel and the engine is not held up; the backlog is
//! replayed alongside live batches. A sustained overload shows as a growing backlog and,
//! past `backlog_max`, as dropped points. Only when the backlog file itself is slower
//! than ingest does the channel fill and make the engine wait.

pub mod backlog;
pub mod client;
pub mod line;
mod output;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use backlog::{Backlog, BacklogError};
pub use client::{
    health_check, health_check_with, HealthError, InfluxClient, Secret, Secrets, WriteError,
};
pub use output::{output, InfluxOutput};

use crate::config::InfluxConfig;
use crate::model::{AlertEvent, Reading};

/// What the engine hands the sink.
#[derive(Debug, Clone)]
pub enum InfluxInput {
    Readings(std::sync::Arc<[Reading]>),
    Events(Vec<AlertEvent>),
}

/// What the sink can take from its channel: [`InfluxInput`], or the pipeline's
/// [`OutputMsg`](crate::store::OutputMsg) (readings, and the events of alert batches).
pub trait SinkInput: Send + 'static {
    /// `None` when there is nothing in it for InfluxDB (alert state without events).
    fn into_input(self) -> Option<InfluxInput>;
}

impl SinkInput for InfluxInput {
    fn into_input(self) -> Option<InfluxInput> {
        Some(self)
    }
}

impl SinkInput for crate::store::OutputMsg {
    fn into_input(self) -> Option<InfluxInput> {
        match self {
            Self::Readings(r) if r.is_empty() => None,
            Self::Readings(r) => Some(InfluxInput::Readings(r)),
            Self::Alerts(a) if a.events.is_empty() => None,
            Self::Alerts(a) => Some(InfluxInput::Events(a.events.clone())),
        }
    }
}

/// Whether the early-stop signal says stop (true also when its sender is gone).
async fn stopped(shutdown: &mut Option<watch::Receiver<bool>>) -> bool {
    match shutdown {
        Some(s) => s.changed().await.is_err() || *s.borrow(),
        None => std::future::pending().await,
    }
}

/// Counters shared with the service and the TUI. Points, not requests.
#[derive(Debug, Default)]
pub struct InfluxStats {
    /// Taken from the channel.
    pub accepted: AtomicU64,
    /// Acknowledged by InfluxDB.
    pub written: AtomicU64,
    /// Waiting in the backlog file (a gauge).
    pub backlog: AtomicU64,
    /// Deleted from a full backlog (`backlog_max`).
    pub dropped: AtomicU64,
    /// Refused as bad data, by InfluxDB or by the encoder (NaN, no metric name).
    pub rejected: AtomicU64,
    /// Failed write requests (each one retried later from the backlog).
    pub failed_writes: AtomicU64,
    /// Whether the last write succeeded (false until the first one has).
    pub up: AtomicBool,
}

/// A copy of [`InfluxStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InfluxStatsSnapshot {
    pub accepted: u64,
    pub written: u64,
    pub backlog: u64,
    pub dropped: u64,
    pub rejected: u64,
    pub failed_writes: u64,
    pub up: bool,
}

impl InfluxStats {
    pub fn snapshot(&self) -> InfluxStatsSnapshot {
        InfluxStatsSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            backlog: self.backlog.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            failed_writes: self.failed_writes.load(Ordering::Relaxed),
            up: self.up.load(Ordering::Relaxed),
        }
    }

    fn add(field: &AtomicU64, n: u64) {
        field.fetch_add(n, Ordering::Relaxed);
    }
}

/// Where the backlog of the SQLite database at `db` lives: `<db>.influx-backlog.db`.
pub fn backlog_path_for(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".influx-backlog.db");
    PathBuf::from(s)
}

/// Why the sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error(transparent)]
    Backlog(#[from] BacklogError),
}

/// Live batches held in memory, waiting for the writer; more are spilled to the backlog.
const LIVE_QUEUE_MAX: usize = 4;
/// A refused batch is split in halves this many times at most to find the bad points;
/// past that, the piece is counted rejected as a whole.
const MAX_SPLIT_DEPTH: u8 = 4;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A batch of encoded points on its way.
#[derive(Debug)]
struct Batch {
    points: u64,
    /// Gzipped line protocol.
    gz: Vec<u8>,
    /// Set when the batch is a backlog row (removed once written).
    backlog_id: Option<i64>,
    /// How many times it has been split after a refusal.
    depth: u8,
}

/// The running state of the sink task.
pub struct InfluxSink {
    cfg: InfluxConfig,
    client: InfluxClient,
    backlog: Backlog,
    stats: Arc<InfluxStats>,
    /// The batch being filled.
    cur: String,
    cur_points: u64,
    /// When `cur` must be sent even if not full.
    cur_deadline: Option<Instant>,
    /// Sealed live batches waiting for the writer.
    queue: VecDeque<Batch>,
    /// The write in flight (at most one).
    inflight: JoinSet<(Batch, Result<(), WriteError>)>,
    /// Whether the id of the backlog batch in flight (never deleted to make room).
    inflight_backlog: Option<i64>,
    up: bool,
    /// While down: when to try again.
    retry_at: Instant,
    backoff: crate::backoff::Backoff,
    /// Alternates live and backlog batches while both wait.
    replay_turn: bool,
    warned_encode: bool,
}

impl InfluxSink {
    /// Opens the backlog at `backlog_path` and builds the client with `secrets`.
    pub async fn new(
        cfg: &InfluxConfig,
        secrets: Secrets,
        backlog_path: &Path,
        stats: Arc<InfluxStats>,
    ) -> Result<Self, SinkError> {
        let client = InfluxClient::new(cfg, secrets)?;
        let backlog = Backlog::open(backlog_path, cfg.backlog_max).await?;
        stats.backlog.store(backlog.points(), Ordering::Relaxed);
        if !backlog.is_empty() {
            tracing::info!(points = backlog.points(), path = %backlog_path.display(), "InfluxDB backlog found; it will be replayed");
        }
        Ok(Self {
            cfg: cfg.clone(),
            client,
            backlog,
            stats,
            cur: String::new(),
            cur_points: 0,
            cur_deadline: None,
            queue: VecDeque::new(),
            inflight: JoinSet::new(),
            inflight_backlog: None,
            up: true,
            retry_at: Instant::now(),
            backoff: crate::backoff::Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
            replay_turn: false,
            warned_encode: false,
        })
    }

    /// Runs until `shutdown` turns true or the channel closes, then sends what is in
    /// memory (or puts it in the backlog) and returns.
    pub async fn run<M: SinkInput>(
        self,
        rx: mpsc::Receiver<M>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), SinkError> {
        self.run_inner(rx, Some(shutdown)).await
    }

    /// Runs until the channel closes — after the last batch the engine sends — then
    /// empties memory as [`run`](Self::run) does. The pipeline's way.
    pub async fn run_to_end<M: SinkInput>(self, rx: mpsc::Receiver<M>) -> Result<(), SinkError> {
        self.run_inner(rx, None).await
    }

    async fn run_inner<M: SinkInput>(
        mut self,
        mut rx: mpsc::Receiver<M>,
        mut shutdown: Option<watch::Receiver<bool>>,
    ) -> Result<(), SinkError> {
        tracing::info!(
            url = self.client.url(),
            api = self.cfg.api.as_str(),
            "InfluxDB sink started"
        );
        loop {
            if self.inflight.is_empty() {
                self.dispatch().await?;
            }
            let idle_down = !self.up
                && self.inflight.is_empty()
                && (!self.backlog.is_empty() || !self.queue.is_empty());
            let deadline = self.cur_deadline;
            tokio::select! {
                biased;
                done = self.inflight.join_next(), if !self.inflight.is_empty() => {
                    if let Some(res) = done {
                        self.settle(res).await?;
                    }
                }
                stop = stopped(&mut shutdown), if shutdown.is_some() => {
                    if stop {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.seal().await?;
                }
                _ = tokio::time::sleep_until(self.retry_at), if idle_down => {}
                msg = rx.recv() => match msg {
                    Some(input) => {
                        if let Some(input) = input.into_input() {
                            self.take(input).await?;
                        }
                    }
                    None => break,
                },
            }
        }
        // Shutdown: take what the engine already sent, then empty memory.
        rx.close();
        while let Some(input) = rx.recv().await {
            if let Some(input) = input.into_input() {
                self.take(input).await?;
            }
        }
        self.seal().await?;
        while let Some(res) = self.inflight.join_next().await {
            self.settle(res).await?;
        }
        while let Some(batch) = self.queue.pop_front() {
            if self.up {
                let res = self.client.write(self.body(&batch.gz)).await;
                self.settle(Ok((batch, res))).await?;
            } else {
                self.spill(batch).await?;
            }
        }
        let s = self.stats.snapshot();
        tracing::info!(
            written = s.written,
            backlog = s.backlog,
            dropped = s.dropped,
            rejected = s.rejected,
            "InfluxDB sink stopped"
        );
        self.backlog.close().await?;
        Ok(())
    }

    /// Encodes one input into the current batch, sealing it each time it is full.
    async fn take(&mut self, input: InfluxInput) -> Result<(), SinkError> {
        let n = match &input {
            InfluxInput::Readings(v) => v.len(),
            InfluxInput::Events(v) => v.len(),
        };
        InfluxStats::add(&self.stats.accepted, n as u64);
        match input {
            InfluxInput::Readings(v) => {
                for r in v.iter() {
                    let res = line::encode_reading(&mut self.cur, r);
                    self.counted(res).await?;
                }
            }
            InfluxInput::Events(v) => {
                for e in &v {
                    let res = line::encode_event(&mut self.cur, e);
                    self.counted(res).await?;
                }
            }
        }
        Ok(())
    }

    async fn counted(&mut self, res: Result<(), line::EncodeError>) -> Result<(), SinkError> {
        match res {
            Ok(()) => {
                self.cur_points += 1;
                if self.cur_deadline.is_none() {
                    self.cur_deadline = Some(Instant::now() + self.cfg.flush_interval.std());
                }
                if self.cur_points >= self.cfg.batch_size as u64 {
                    self.seal().await?;
                }
            }
            Err(e) => {
                InfluxStats::add(&self.stats.rejected, 1);
                if !self.warned_encode {
                    tracing::warn!(error = %e, "point not sent to InfluxDB (counted as rejected; further ones logged at debug)");
                    self.warned_encode = true;
                } else {
                    tracing::debug!(error = %e, "point not sent to InfluxDB");
                }
            }
        }
        Ok(())
    }

    /// Turns the current batch into a sealed one: queued for the writer, or straight
    /// into the backlog while InfluxDB is down.
    async fn seal(&mut self) -> Result<(), SinkError> {
        self.cur_deadline = None;
        if self.cur_points == 0 {
            return Ok(());
        }
        let gz = client::gzip(self.cur.as_bytes());
        let batch = Batch {
            points: self.cur_points,
            gz,
            backlog_id: None,
            depth: 0,
        };
        self.cur.clear();
        self.cur_points = 0;
        if !self.up && Instant::now() < self.retry_at {
            return self.spill(batch).await;
        }
        self.queue.push_back(batch);
        while self.queue.len() > LIVE_QUEUE_MAX {
            if let Some(old) = self.queue.pop_front() {
                self.spill(old).await?;
            }
        }
        Ok(())
    }

    /// Puts a live batch into the backlog, counting what the bound drops.
    async fn spill(&mut self, batch: Batch) -> Result<(), SinkError> {
        debug_assert!(batch.backlog_id.is_none());
        let dropped = self
            .backlog
            .push(batch.points, &batch.gz, self.inflight_backlog)
            .await?;
        if dropped > 0 {
            InfluxStats::add(&self.stats.dropped, dropped);
            tracing::warn!(
                dropped,
                backlog_max = self.cfg.backlog_max,
                "InfluxDB backlog full: oldest points dropped"
            );
        }
        self.stats
            .backlog
            .store(self.backlog.points(), Ordering::Relaxed);
        Ok(())
    }

    fn body(&self, gz: &[u8]) -> Vec<u8> {
        if self.client.gzips() {
            gz.to_vec()
        } else {
            client::gunzip(gz).unwrap_or_default()
        }
    }

    /// Starts the next write when there is one to start: live batches first, one
    /// backlog batch in between while both wait; nothing while down and not yet due.
    async fn dispatch(&mut self) -> Result<(), SinkError> {
        if !self.up && Instant::now() < self.retry_at {
            return Ok(());
        }
        let take_backlog = !self.backlog.is_empty() && (self.queue.is_empty() || self.replay_turn);
        let batch = if take_backlog {
            self.replay_turn = false;
            match self.backlog.oldest().await? {
                Some(c) => Batch {
                    points: c.points,
                    gz: c.gz,
                    backlog_id: Some(c.id),
                    depth: 0,
                },
                None => return Ok(()),
            }
        } else {
            match self.queue.pop_front() {
                Some(b) => {
                    self.replay_turn = true;
                    b
                }
                None => return Ok(()),
            }
        };
        self.inflight_backlog = batch.backlog_id;
        let client = self.client.clone();
        let body = self.body(&batch.gz);
        self.inflight.spawn(async move {
            let res = client.write(body).await;
            (batch, res)
        });
        Ok(())
    }

    /// Books the outcome of one write.
    async fn settle(
        &mut self,
        res: Result<(Batch, Result<(), WriteError>), tokio::task::JoinError>,
    ) -> Result<(), SinkError> {
        self.inflight_backlog = None;
        let (batch, outcome) = match res {
            Ok(r) => r,
            Err(e) => {
                // The write task only awaits reqwest; it is not aborted, so this is a panic.
                // Its batch is lost with it: say so loudly.
                tracing::error!(error = %e, "InfluxDB write task failed");
                return Ok(());
            }
        };
        match outcome {
            Ok(()) => {
                InfluxStats::add(&self.stats.written, batch.points);
                if let Some(id) = batch.backlog_id {
                    self.backlog.remove(id).await?;
                    self.stats
                        .backlog
                        .store(self.backlog.points(), Ordering::Relaxed);
                }
                if !self.up {
                    tracing::info!(
                        backlog = self.backlog.points(),
                        "InfluxDB answers again; replaying the backlog"
                    );
                }
                self.up = true;
                self.stats.up.store(true, Ordering::Relaxed);
                self.backoff.reset();
            }
            Err(e) if e.is_retryable() => {
                InfluxStats::add(&self.stats.failed_writes, 1);
                if self.up {
                    tracing::warn!(error = %e, "InfluxDB write failed; keeping points in the backlog until it answers");
                } else {
                    tracing::debug!(error = %e, "InfluxDB still failing");
                }
                self.up = false;
                self.stats.up.store(false, Ordering::Relaxed);
                self.retry_at = Instant::now() + self.backoff.failed();
                if batch.backlog_id.is_none() {
                    self.spill(batch).await?;
                }
                while let Some(b) = self.queue.pop_front() {
                    self.spill(b).await?;
                }
            }
            Err(e) => self.refused(batch, e).await?,
        }
        Ok(())
    }

    /// A batch refused as bad data: split it to save its good points, or count it.
    async fn refused(&mut self, batch: Batch, e: WriteError) -> Result<(), SinkError> {
        if let Some(id) = batch.backlog_id {
            self.backlog.remove(id).await?;
            self.stats
                .backlog
                .store(self.backlog.points(), Ordering::Relaxed);
        }
        let text = client::gunzip(&batch.gz).unwrap_or_default();
        let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
        if lines.len() > 1 && batch.depth < MAX_SPLIT_DEPTH {
            tracing::debug!(error = %e, points = batch.points, "InfluxDB refused a batch; splitting it to find the bad points");
            let (a, b) = lines.split_at(lines.len() / 2);
            for half in [b, a] {
                let gz = client::gzip(&half.concat());
                self.queue.push_front(Batch {
                    points: half.len() as u64,
                    gz,
                    backlog_id: None,
                    depth: batch.depth + 1,
                });
            }
            return Ok(());
        }
        InfluxStats::add(&self.stats.rejected, batch.points);
        tracing::warn!(error = %e, points = batch.points, "InfluxDB rejected points as bad data; they are counted and not retried");
        Ok(())
    }
}
