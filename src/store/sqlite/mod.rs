//! SQLite store: readings as per-series chunks, per-minute rollups, the series
//! catalogue, the alerts history and the alert state that survives a restart.
//!
//! The writer is one task that owns its connection. Readings are buffered per series
//! and written once per `flush_interval` in a single transaction: one chunk row per
//! series, one rollup upsert per series-minute, one catalogue upsert per series —
//! writes grow with the number of series, not of readings, which spares SD cards.
//! Small chunks are later merged per series and hour ([`Writer::compact`]); retention
//! deletes old rows in small steps so no statement holds the database for long.
//!
//! # Layout
//!
//! - `mod.rs`: opening the database, the messages the writer takes, its counters.
//! - [`writer`]: the writer task: readings buffered per series, one transaction per flush.
//! - `alerts`: alert events, alert state and their notifications, in one transaction.
//! - `maintenance`: merging small chunks, retention.
//! - [`queries`]: what the CLI, the TUI and the engine read back.

use std::path::Path;
use std::sync::atomic::AtomicU64;
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
pub mod writer;

pub use queries::*;
pub use writer::{run_writer, Writer};

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
