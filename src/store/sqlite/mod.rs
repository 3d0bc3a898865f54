//! SQLite store: readings as blocks and per-series chunks, per-minute rollups, the
//! series catalogue, the alerts history and the alert state that survives a restart.
//!
//! The writer is one task that owns its connection. Readings are buffered per series
//! and written once per `flush_interval` in a single transaction: one block row holding
//! every series' new points (one chunk row per series when they hold many each), the
//! rollups of the minutes that are over, catalogue upserts for new series — a flush
//! costs by the readings it writes, not by the series, and one commit per interval
//! spares SD cards. Blocks are merged into per-series chunks in the background
//! ([`Writer::merge_if_due`]), chunks per series and hour once the hour has passed
//! ([`Writer::compact`]); retention deletes old rows in small steps so no statement
//! holds the database for long.
//!
//! # Layout
//!
//! - `mod.rs`: opening the database, the messages the writer takes, its counters.
//! - [`writer`]: the writer task: readings buffered per series, one transaction per
//!   flush, the merge of blocks into chunks.
//! - `alerts`: alert events, alert state and their notifications, in one transaction.
//! - `maintenance`: merging small chunks, retention.
//! - [`queries`]: what the CLI, the TUI and the engine read back.

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::chunk;
use crate::engine::{AlertRecord, SilenceRecord};
use crate::model::{AlertEvent, Reading};

mod alerts;
mod maintenance;
pub mod queries;
pub mod startup;
pub mod writer;

pub use queries::*;
pub use startup::{open_for_writing, DbLock};
pub use writer::{run_writer, Writer};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database {0}")]
    Backup(#[from] crate::store::backup::BackupError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("outbox: {0}")]
    Outbox(String),
    #[error("corrupt chunk {id}: {source}")]
    Chunk { id: i64, source: chunk::ChunkError },
    #[error("corrupt block {id}: {source}")]
    Block { id: i64, source: chunk::ChunkError },
    #[error(
        "database {db} is in use by another process (pid {pid}, see {lock}): stop it first, \
         or give this instance its own [storage.sqlite] path"
    )]
    InUse {
        db: String,
        lock: String,
        pid: String,
    },
    #[error("{path} cannot be written ({source}): a read-only file system, `chattr +i` or permissions; refusing to start")]
    NotWritable {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "database {path} is damaged: {detail}. Stop here and keep a copy; `centinela db check --db {path}` \
         lists the damage and README \"A damaged database\" shows how to recover what is readable"
    )]
    Damaged { path: String, detail: String },
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
        .after_release(|conn, _| {
            Box::pin(async move {
                // A statement that failed inside a transaction (disk full, I/O error)
                // can leave the connection in it: SQLite may have rolled back already,
                // so sqlx's own ROLLBACK fails and its transaction depth stays up; the
                // next `begin` then opens a savepoint inside the dead transaction, which
                // holds the write lock forever and commits nothing. Such a connection
                // is closed (closing rolls back) and a fresh one opened when needed.
                // A connection opened while the file could not be written (`chattr +i`,
                // a read-only remount) stays read-only after the file is writable again:
                // closed too, so the next one opens read-write.
                use sqlx::Connection;
                conn.ping().await?; // runs after any queued rollback
                let depth = conn.is_in_transaction();
                let (in_tx, read_only) = {
                    let mut h = conn.lock_handle().await?;
                    let db = h.as_raw_handle().as_ptr();
                    // SAFETY: the handle is locked (exclusive) for the duration of these
                    // two calls; both only read connection state; the name is a C string.
                    unsafe {
                        (
                            libsqlite3_sys::sqlite3_get_autocommit(db) == 0,
                            libsqlite3_sys::sqlite3_db_readonly(db, c"main".as_ptr()) == 1,
                        )
                    }
                };
                if depth || in_tx || read_only {
                    tracing::warn!(
                        in_transaction = depth || in_tx,
                        read_only,
                        "closing a database connection left unusable by a failed write"
                    );
                    return Ok(false);
                }
                Ok(true)
            })
        })
        .connect_with(opts)
        .await
        .map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
    let migrator = sqlx::migrate!();
    if crate::store::backup::migration_pending(&pool, &migrator).await? {
        // Copying a large database aside and migrating it can outlast systemd's
        // TimeoutStartSec: ask for more time until both are done.
        crate::systemd::status("copying the database aside and migrating its schema");
        crate::systemd::extending_timeout(async {
            crate::store::backup::before_migrating(&pool, path, &migrator).await?;
            migrator.run(&pool).await?;
            Ok::<_, StoreError>(())
        })
        .await?;
    } else {
        migrator.run(&pool).await?;
    }
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

/// Counters the writer keeps; read by the status line, `/metrics`, `/healthz`, the
/// systemd watchdog and the bench.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub stored: AtomicU64,
    pub flushes: AtomicU64,
    pub chunks_written: AtomicU64,
    /// Failed writes (flushes and alert batches), since the start.
    pub errors: AtomicU64,
    pub events: AtomicU64,
    /// Readings held in memory, not yet written.
    pub pending: AtomicU64,
    /// Alert batches held in memory, not yet written.
    pub alerts_pending: AtomicU64,
    /// Readings refused because the in-memory buffer was full while writes failed.
    pub dropped: AtomicU64,
    /// Failed writes in a row; 0 once a write succeeds again.
    pub failing: AtomicU64,
    /// Wall time (ms) the writer last had nothing older than a flush left to write:
    /// stops moving while a write fails or a flush takes too long.
    pub progress_ms: AtomicI64,
    /// How long without progress makes the writer "behind" (ms).
    pub behind_after_ms: AtomicI64,
}

impl StoreStats {
    /// Whether the writer keeps up at `now`, and why not: `/healthz` and the watchdog.
    pub fn health(&self, now: crate::model::Timestamp) -> (bool, String) {
        let pending = self.pending.load(Ordering::Relaxed);
        let dropped = self.dropped.load(Ordering::Relaxed);
        let failing = self.failing.load(Ordering::Relaxed);
        let progress = self.progress_ms.load(Ordering::Relaxed);
        let behind_after = self.behind_after_ms.load(Ordering::Relaxed);
        let age = if progress == 0 { 0 } else { now - progress };
        let lost = if dropped > 0 {
            format!(", {dropped} readings dropped (buffer full)")
        } else {
            String::new()
        };
        if failing > 0 {
            (
                false,
                format!(
                    "writes failing ({failing} in a row, last success {} ms ago); {pending} readings and {} alert batches held in memory{lost}",
                    age,
                    self.alerts_pending.load(Ordering::Relaxed)
                ),
            )
        } else if behind_after > 0 && age > behind_after {
            (
                false,
                format!(
                    "writer behind: last caught up {age} ms ago, {pending} readings waiting{lost}"
                ),
            )
        } else {
            (
                true,
                format!(
                    "{pending} readings waiting, {} flush errors so far{lost}",
                    self.errors.load(Ordering::Relaxed)
                ),
            )
        }
    }
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub flush_interval: Duration,
    pub retention: Duration,
    pub rollup_retention: Duration,
    /// How often small chunks are merged and old rows deleted.
    pub maintenance_interval: Duration,
}
