//! The data lake: readings as Parquet files, one partition per UTC hour, for DuckDB,
//! pandas/pyarrow, Spark and the like (`[output.parquet]`).
//!
//! ```text
//!  Fanout ─[64]─► this task: rows held per hour (by the readings' own time)
//!                   │ the hour has closed and took nothing for a round (5 s)
//!                   │ or it holds max_rows
//!                   ▼
//!                 file.rs: dir/date=YYYY-MM-DD/hour=HH/part-N.parquet  (temp + link)
//! ```
//!
//! One file per closed hour in the usual case; an hour that takes more than
//! `max_rows`, or readings that arrive after their hour was written (late or replayed
//! data), makes further parts `part-1`, `part-2`, … in the same folder.
//!
//! Guarantees: when the input closes (shutdown), every hour still held is written as a
//! part file before the task returns: a clean stop loses nothing. A failed write keeps
//! its rows and tries again next round (a full disk that frees up loses nothing); past
//! ten times `max_rows` held, the oldest hour is dropped and counted. A crash loses
//! the hours held in memory, which SQLite still has: `centinela export --parquet`
//! writes the same layout from it.
//!
//! Falling behind: the engine waits for this task (it only copies rows into memory;
//! writing a part happens on a blocking thread and takes a moment per hour).

mod config;
mod export;
mod file;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use config::ParquetConfig;
pub use export::{export, ExportSummary};
pub use file::{encode, hour_of, partition, write_part, PartError, HOUR_MS};

use crate::config::Config;
use crate::http::{Sample, StageHealth};
use crate::model::{now_ms, OutputStatus, Reading, Timestamp};
use crate::shutdown::Shutdown;
use crate::store::{BoxFuture, Check, Context, Output, OutputMsg, StartError};

/// How often closed hours are looked for.
const ROUND: Duration = Duration::from_secs(5);

/// The Parquet output when `[output.parquet]` is configured.
pub fn output(cfg: &Config) -> Option<Arc<dyn Output>> {
    let p = cfg.output.parquet.as_ref()?;
    Some(Arc::new(ParquetOutput {
        cfg: p.clone(),
        stats: Arc::default(),
    }))
}

/// Counters shared with `/metrics`, the header and `/healthz`.
#[derive(Debug, Default)]
pub struct ParquetStats {
    pub rows_written: AtomicU64,
    pub files_written: AtomicU64,
    /// Rows held in memory, waiting for their hour to close (a gauge).
    pub rows_held: AtomicU64,
    /// Failed writes (each one retried the next round).
    pub write_errors: AtomicU64,
    /// Rows given up on: held past the bound while writes kept failing.
    pub rows_dropped: AtomicU64,
    /// Why the last write failed, until one succeeds.
    pub failing: Mutex<Option<String>>,
}

pub struct ParquetOutput {
    cfg: ParquetConfig,
    stats: Arc<ParquetStats>,
}

impl ParquetOutput {
    pub fn stats(&self) -> Arc<ParquetStats> {
        self.stats.clone()
    }

    fn failing(&self) -> Option<String> {
        self.stats.failing.lock().ok().and_then(|f| f.clone())
    }
}

impl Output for ParquetOutput {
    fn name(&self) -> &'static str {
        "parquet"
    }

    fn start<'a>(
        &'a self,
        _ctx: &'a Context<'a>,
        input: mpsc::Receiver<OutputMsg>,
        shutdown: Shutdown,
    ) -> BoxFuture<'a, Result<JoinHandle<()>, StartError>> {
        let lake = Lake {
            cfg: self.cfg.clone(),
            stats: self.stats.clone(),
            hours: BTreeMap::new(),
            held: 0,
        };
        Box::pin(async move {
            std::fs::create_dir_all(&lake.cfg.dir).map_err(|e| StartError {
                output: "parquet",
                message: format!("cannot create {}: {e}", lake.cfg.dir.display()),
            })?;
            tracing::info!(dir = %lake.cfg.dir.display(), "Parquet output started");
            Ok(tokio::spawn(lake.run(input, shutdown)))
        })
    }

    fn metrics(&self) -> Vec<Sample> {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            Sample::counter(
                "centinela_parquet_rows_written_total",
                "Readings written to Parquet part files.",
                get(&s.rows_written),
            ),
            Sample::counter(
                "centinela_parquet_files_written_total",
                "Parquet part files written.",
                get(&s.files_written),
            ),
            Sample::gauge(
                "centinela_parquet_rows_held",
                "Readings held in memory until their hour closes.",
                get(&s.rows_held),
            ),
            Sample::counter(
                "centinela_parquet_write_errors_total",
                "Failed Parquet writes (retried).",
                get(&s.write_errors),
            ),
            Sample::counter(
                "centinela_parquet_rows_dropped_total",
                "Readings dropped after writes kept failing past the bound.",
                get(&s.rows_dropped),
            ),
        ]
    }

    fn status(&self) -> Option<OutputStatus> {
        Some(OutputStatus {
            name: "parquet".into(),
            label: "files".into(),
            value: self.stats.files_written.load(Ordering::Relaxed),
            warn: self.failing().is_some(),
        })
    }

    fn health(&self) -> Option<StageHealth> {
        Some(match self.failing() {
            Some(why) => StageHealth::new("parquet", false, format!("writes fail: {why}")),
            None => StageHealth::new(
                "parquet",
                self.stats.rows_dropped.load(Ordering::Relaxed) == 0,
                format!(
                    "{} files written",
                    self.stats.files_written.load(Ordering::Relaxed)
                ),
            ),
        })
    }

    fn check(&self) -> BoxFuture<'_, Option<Check>> {
        let dir = self.cfg.dir.clone();
        Box::pin(async move {
            let result = tokio::task::spawn_blocking(move || writable(&dir))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            Some(Check {
                target: self.cfg.dir.display().to_string(),
                result,
            })
        })
    }
}

/// Whether a file can be made and removed in `dir` (created when missing).
fn writable(dir: &Path) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the folder: {e}"))?;
    let probe = dir.join(".centinela-doctor.tmp");
    std::fs::write(&probe, b"probe").map_err(|e| format!("cannot write in it: {e}"))?;
    std::fs::remove_file(&probe).map_err(|e| format!("cannot remove {}: {e}", probe.display()))?;
    Ok("the folder is writable".into())
}

/// The rows of one hour not yet written.
#[derive(Default)]
struct Hour {
    rows: Vec<Reading>,
    /// Took rows since the last round.
    touched: bool,
}

/// The running state of the output's task.
struct Lake {
    cfg: ParquetConfig,
    stats: Arc<ParquetStats>,
    /// By the hour's start (UTC ms).
    hours: BTreeMap<Timestamp, Hour>,
    held: usize,
}

impl Lake {
    async fn run(mut self, mut input: mpsc::Receiver<OutputMsg>, shutdown: Shutdown) {
        let _shutdown = shutdown;
        let mut round = tokio::time::interval(ROUND);
        round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = input.recv() => match msg {
                    Some(OutputMsg::Readings(batch)) => self.take(&batch).await,
                    Some(OutputMsg::Alerts(_)) => {}
                    None => break,
                },
                _ = round.tick() => self.round(now_ms()).await,
            }
        }
        // The input has closed: every hour held becomes a part file.
        for attempt in 1..=5 {
            let hours: Vec<Timestamp> = self.hours.keys().copied().collect();
            for h in hours {
                self.write(h).await;
            }
            if self.hours.is_empty() {
                break;
            }
            tracing::error!(attempt, rows = self.held, "Parquet: final write failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if self.held > 0 {
            tracing::error!(
                rows = self.held,
                "Parquet: rows not written at shutdown (SQLite has them: `centinela export --parquet`)"
            );
        }
        tracing::info!(
            files = self.stats.files_written.load(Ordering::Relaxed),
            rows = self.stats.rows_written.load(Ordering::Relaxed),
            "Parquet output stopped"
        );
    }

    async fn take(&mut self, batch: &[Reading]) {
        let mut full = Vec::new();
        for r in batch {
            let h = hour_of(r.ts);
            let hour = self.hours.entry(h).or_default();
            hour.rows.push(r.clone());
            hour.touched = true;
            if hour.rows.len() == self.cfg.max_rows {
                full.push(h);
            }
        }
        self.held += batch.len();
        self.stats.rows_held.store(self.held as u64, Ordering::Relaxed);
        for h in full {
            self.write(h).await;
        }
    }

    /// Writes the hours that have closed and took nothing since the last round; bounds
    /// what failed writes hold.
    async fn round(&mut self, now: Timestamp) {
        let mut due = Vec::new();
        for (&h, hour) in self.hours.iter_mut() {
            if h + HOUR_MS <= now && !hour.touched {
                due.push(h);
            }
            hour.touched = false;
        }
        for h in due {
            self.write(h).await;
        }
        while self.held > self.cfg.max_rows.saturating_mul(10) {
            let Some((h, hour)) = self.hours.pop_first() else {
                break;
            };
            self.held -= hour.rows.len();
            self.stats
                .rows_dropped
                .fetch_add(hour.rows.len() as u64, Ordering::Relaxed);
            tracing::error!(
                hour = %crate::model::format_ts(h),
                rows = hour.rows.len(),
                "Parquet: writes keep failing; dropped the oldest hour held (SQLite still has it)"
            );
        }
        self.stats.rows_held.store(self.held as u64, Ordering::Relaxed);
    }

    /// Writes hour `h` as a part file; on failure its rows stay held.
    async fn write(&mut self, h: Timestamp) {
        let Some(hour) = self.hours.remove(&h) else {
            return;
        };
        let root = self.cfg.dir.clone();
        let mut rows = hour.rows;
        let done = tokio::task::spawn_blocking(move || {
            let res = write_part(&root, h, &mut rows);
            (rows, res)
        })
        .await;
        let (rows, res) = match done {
            Ok(x) => x,
            Err(e) => {
                // The rows went with the panicked thread.
                tracing::error!(error = %e, "Parquet writer panicked");
                return;
            }
        };
        match res {
            Ok(path) => {
                self.held -= rows.len();
                self.stats
                    .rows_written
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                self.stats.files_written.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = self.stats.failing.lock() {
                    *f = None;
                }
                tracing::debug!(path = %path.display(), rows = rows.len(), "Parquet part written");
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                let first = self
                    .stats
                    .failing
                    .lock()
                    .map(|mut f| f.replace(e.to_string()).is_none())
                    .unwrap_or(true);
                if first {
                    tracing::error!(error = %e, rows = rows.len(), "Parquet: cannot write a part; rows kept, retried every round");
                }
                let hour = self.hours.entry(h).or_default();
                let mut rows = rows;
                rows.append(&mut hour.rows);
                hour.rows = rows;
            }
        }
        self.stats.rows_held.store(self.held as u64, Ordering::Relaxed);
    }
}
