//! The data lake (`[output.parquet]`): readings and alert events as Parquet part files
//! in hive-style UTC partitions, for DuckDB, pyarrow/pandas, Spark and the like.
//!
//! ```text
//!  Fanout ─[64]─► lake.rs: batches held (shared, not copied) until a file is due:
//!                   │ flush_interval since the oldest, the partition ended,
//!                   │ max_rows waiting, or the input closed
//!                   ▼ blocking thread
//!                 file.rs: dir/readings/date=YYYY-MM-DD/hour=HH/part-….parquet
//!                          dir/alerts/date=YYYY-MM-DD/hour=HH/part-….parquet
//!                          (temp file, fsync, rename, fsync the folder)
//!                 compact.rs, between writes: closed partitions merged into one file
//! ```
//!
//! Guarantees: a reader never sees half a file (it appears under its final name only
//! once complete and synced). A clean stop writes everything held. A crash loses what
//! was not yet in a closed file: at most `flush_interval` of readings (SQLite has them;
//! `centinela export --parquet` writes them). A folder that cannot be written (a full
//! disk, a read-only mount) makes the output unhealthy in `/healthz` and `doctor`; the
//! rows are held and retried with backoff, and past `max_buffered_rows` the oldest
//! are dropped and counted. The task keeps taking batches while it writes or waits to
//! retry, so it never holds up the engine or the other outputs.
//!
//! Once a partition has closed, its part files are merged into one ([`compact`]) and
//! swapped in atomically (`renameat2(RENAME_EXCHANGE)` of a folder built in
//! `dir/.staging`): a reader of the live tree sees every row exactly once, before, during
//! and after a merge, and after a crash at any point of it (start-up removes
//! `.staging`; the live folders are whole either way). A part file another writer adds
//! meanwhile is never lost: exports hold `dir/.lock`, the folder is listed again
//! before the swap, and an unmerged file found in the old set goes back.
//!
//! `centinela export --parquet DIR` ([`export`]) writes what SQLite holds in the same
//! layout.

mod compact;
mod config;
mod export;
mod file;
mod lake;
mod read;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use config::{Codec, ParquetConfig, Partition};
pub use export::{export, ExportError, ExportSummary};
pub use file::{encode, partition_dir, write_all, EventRow, Layout, PartError, Table, Written};

use crate::config::Config;
use crate::http::{Sample, StageHealth};
use crate::model::OutputStatus;
use crate::shutdown::Shutdown;
use crate::store::{BoxFuture, Check, Context, Output, OutputMsg, StartError};

/// Temporary files older than this, left by a crash mid-write, are removed at start.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(600);

/// The Parquet output when `[output.parquet]` is configured.
pub fn output(cfg: &Config) -> Option<Arc<dyn Output>> {
    let p = cfg.output.parquet.as_ref()?;
    Some(Arc::new(ParquetOutput {
        cfg: p.clone(),
        stats: Arc::default(),
    }))
}

/// Counters shared with `/metrics`, the status line and `/healthz`.
#[derive(Debug, Default)]
pub struct ParquetStats {
    pub rows_written: AtomicU64,
    pub events_written: AtomicU64,
    pub files_written: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Readings in memory, not yet in a closed file (a gauge).
    pub rows_buffered: AtomicU64,
    /// Failed writes (each retried).
    pub write_errors: AtomicU64,
    /// Readings given up on: held past `max_buffered_rows` while writes failed.
    pub rows_dropped: AtomicU64,
    /// Closed partitions whose part files were merged, and the files merged.
    pub compactions: AtomicU64,
    pub files_compacted: AtomicU64,
    /// Merges that failed (the partition is left as it was, tried again later).
    pub compaction_errors: AtomicU64,
    /// Why the last write failed, until one succeeds.
    failing: Mutex<Option<String>>,
}

impl ParquetStats {
    /// Why writes fail, if the last one did.
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().ok().and_then(|f| f.clone())
    }

    /// Sets or clears the failure; true when that changed whether writes fail.
    fn set_failing(&self, why: Option<String>) -> bool {
        let Ok(mut f) = self.failing.lock() else {
            return false;
        };
        let changed = f.is_some() != why.is_some();
        *f = why;
        changed
    }
}

pub struct ParquetOutput {
    cfg: ParquetConfig,
    stats: Arc<ParquetStats>,
}

impl ParquetOutput {
    pub fn stats(&self) -> Arc<ParquetStats> {
        self.stats.clone()
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
        let lake = lake::Lake::new(&self.cfg, self.stats.clone());
        let dir = self.cfg.dir.clone();
        Box::pin(async move {
            let probe = dir.clone();
            match tokio::task::spawn_blocking(move || writable(&probe)).await {
                Ok(Ok(_)) => {}
                // Not fatal: rows are held and retried until the folder can be written.
                Ok(Err(e)) => {
                    tracing::error!(dir = %self.cfg.dir.display(), "Parquet: {e}; readings are held meanwhile");
                    self.stats.set_failing(Some(e));
                }
                Err(e) => tracing::error!(error = %e, "Parquet: the start-up check failed"),
            }
            // In the background: a large lake takes a while to walk.
            tokio::task::spawn_blocking(move || {
                let n = file::remove_stale_temps(&dir, STALE_TEMP);
                if n > 0 {
                    tracing::info!(
                        files = n,
                        "Parquet: removed temporary files left by a crash"
                    );
                }
            });
            tracing::info!(dir = %self.cfg.dir.display(), "Parquet output started");
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
                "centinela_parquet_events_written_total",
                "Alert events written to Parquet part files.",
                get(&s.events_written),
            ),
            Sample::counter(
                "centinela_parquet_files_written_total",
                "Parquet part files written.",
                get(&s.files_written),
            ),
            Sample::counter(
                "centinela_parquet_bytes_written_total",
                "Bytes of Parquet part files written.",
                get(&s.bytes_written),
            ),
            Sample::gauge(
                "centinela_parquet_rows_buffered",
                "Readings in memory, not yet in a closed part file.",
                get(&s.rows_buffered),
            ),
            Sample::counter(
                "centinela_parquet_write_errors_total",
                "Failed Parquet writes (retried).",
                get(&s.write_errors),
            ),
            Sample::counter(
                "centinela_parquet_rows_dropped_total",
                "Readings dropped after writes kept failing past max_buffered_rows.",
                get(&s.rows_dropped),
            ),
            Sample::counter(
                "centinela_parquet_compactions_total",
                "Closed partitions whose part files were merged into one.",
                get(&s.compactions),
            ),
            Sample::counter(
                "centinela_parquet_compacted_files_total",
                "Part files merged away by compaction.",
                get(&s.files_compacted),
            ),
            Sample::counter(
                "centinela_parquet_compaction_errors_total",
                "Merges that failed (the partition is left as it was).",
                get(&s.compaction_errors),
            ),
        ]
    }

    fn status(&self) -> Option<OutputStatus> {
        Some(OutputStatus {
            name: "parquet".into(),
            label: "files".into(),
            value: self.stats.files_written.load(Ordering::Relaxed),
            warn: self.stats.failing().is_some()
                || self.stats.rows_dropped.load(Ordering::Relaxed) > 0,
        })
    }

    fn health(&self) -> Option<StageHealth> {
        let s = &self.stats;
        let buffered = s.rows_buffered.load(Ordering::Relaxed);
        let dropped = s.rows_dropped.load(Ordering::Relaxed);
        Some(match s.failing() {
            Some(why) => StageHealth::new(
                "parquet",
                false,
                format!("cannot write: {why}; {buffered} readings held, retried"),
            ),
            None if dropped > 0 => StageHealth::new(
                "parquet",
                false,
                format!("{dropped} readings dropped while writes failed"),
            ),
            None => StageHealth::new(
                "parquet",
                true,
                format!(
                    "{} files written, {buffered} readings waiting",
                    s.files_written.load(Ordering::Relaxed)
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

/// Whether a file can be made, synced and removed in `dir` (created when missing).
fn writable(dir: &Path) -> Result<String, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the folder {}: {e}", dir.display()))?;
    let probe = dir.join(".centinela-probe.tmp");
    std::fs::write(&probe, b"probe")
        .and_then(|()| std::fs::File::open(&probe)?.sync_all())
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    std::fs::remove_file(&probe).map_err(|e| format!("cannot remove {}: {e}", probe.display()))?;
    Ok("the folder is writable".into())
}
