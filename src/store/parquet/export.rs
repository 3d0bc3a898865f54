//! `centinela export --parquet DIR`: the readings and alert events SQLite holds, written
//! in the layout the live output writes.
//!
//! One partition at a time, so memory follows the largest partition, not the database:
//! the chunk catalogue (ids and time ranges, no data) is read first, then each
//! partition's chunks are decoded, cut to the partition and written. Everything is read
//! in one transaction, so a service compacting chunks meanwhile neither hides nor
//! doubles a reading. File names are new ones: an export next to a live lake adds
//! files and replaces none. Rows a partition's files already hold (readings by series
//! and time, alert events by time, rule, series and state) are skipped and counted, so
//! an export into a live lake fills its gaps without doubling anything; it holds
//! `dir/.lock` throughout, so the service merges no partition meanwhile. Readings the
//! service still holds in memory (its last `flush_interval`) are not in the files yet:
//! an export of that span writes them, and the service too.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::Row;

use super::compact::LakeLock;
use super::file::{partition_dir, write_all, EventRow, Layout, PartError, Table, Written};
use super::read::keys;
use crate::model::{topic_matches, Reading, Timestamp};
use crate::store::sqlite::StoreError;
use crate::store::{block, chunk};

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub readings: u64,
    pub events: u64,
    pub files: u64,
    pub bytes: u64,
    /// Rows left out because the lake holds them already.
    pub readings_present: u64,
    pub events_present: u64,
    /// Partitions (of either table) the lake held completely, nothing written there:
    /// their folders relative to the lake.
    pub partitions_complete: Vec<String>,
}

impl ExportSummary {
    fn add(&mut self, written: &[Written]) -> u64 {
        let rows: u64 = written.iter().map(|w| w.rows as u64).sum();
        self.files += written.len() as u64;
        self.bytes += written.iter().map(|w| w.bytes).sum::<u64>();
        rows
    }
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Part(#[from] PartError),
    #[error("the writer thread failed: {0}")]
    Thread(#[from] tokio::task::JoinError),
}

impl From<sqlx::Error> for ExportError {
    fn from(e: sqlx::Error) -> Self {
        ExportError::Store(StoreError::Sql(e))
    }
}

/// Writes the readings of the series matching `pattern` (MQTT wildcards), and the alert
/// events of those series, since `since` under `root`.
pub async fn export(
    pool: &sqlx::SqlitePool,
    root: &Path,
    layout: Layout,
    pattern: &str,
    since: Timestamp,
) -> Result<ExportSummary, ExportError> {
    let lock_root = root.to_path_buf();
    let _lock = tokio::task::spawn_blocking(move || LakeLock::acquire(&lock_root)).await??;
    let mut tx = pool.begin().await?;
    let mut series: HashMap<i64, (Arc<str>, Option<Arc<str>>)> = HashMap::new();
    for r in sqlx::query("SELECT id, name, unit FROM series")
        .fetch_all(&mut *tx)
        .await?
    {
        let name: String = r.try_get("name")?;
        if topic_matches(pattern, &name) {
            let unit: Option<String> = r.try_get("unit")?;
            series.insert(r.try_get("id")?, (name.into(), unit.map(Arc::from)));
        }
    }
    // partition start → chunk ids with points in it (and, apart, block ids: the recent
    // readings of every series, not merged into chunks yet).
    let period = layout.partition.period_ms();
    let mut parts: BTreeMap<Timestamp, Vec<i64>> = BTreeMap::new();
    let mut block_parts: BTreeMap<Timestamp, Vec<i64>> = BTreeMap::new();
    for r in sqlx::query("SELECT id, first_ts, last_ts FROM blocks WHERE last_ts >= ?")
        .bind(since)
        .fetch_all(&mut *tx)
        .await?
    {
        let id: i64 = r.try_get("id")?;
        let first: i64 = r.try_get::<i64, _>("first_ts")?.max(since);
        let last: i64 = r.try_get("last_ts")?;
        let mut p = layout.partition.start_of(first);
        while p <= last {
            block_parts.entry(p).or_default().push(id);
            parts.entry(p).or_default();
            p += period;
        }
    }
    for r in sqlx::query("SELECT id, series_id, first_ts, last_ts FROM chunks WHERE last_ts >= ?")
        .bind(since)
        .fetch_all(&mut *tx)
        .await?
    {
        let series_id: i64 = r.try_get("series_id")?;
        if !series.contains_key(&series_id) {
            continue;
        }
        let id: i64 = r.try_get("id")?;
        let first: i64 = r.try_get::<i64, _>("first_ts")?.max(since);
        let last: i64 = r.try_get("last_ts")?;
        let mut p = layout.partition.start_of(first);
        while p <= last {
            parts.entry(p).or_default().push(id);
            p += period;
        }
    }
    let mut summary = ExportSummary::default();
    for (start, ids) in parts {
        let mut rows = Vec::new();
        let in_part = |ts: Timestamp| ts >= since && ts >= start && ts < start + period;
        for &id in block_parts.get(&start).into_iter().flatten() {
            let r = sqlx::query("SELECT data FROM blocks WHERE id = ?")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            let data: Vec<u8> = r.try_get("data")?;
            block::for_each(&data, |series_id, blob| {
                if let Some((name, unit)) = series.get(&series_id) {
                    rows.extend(
                        chunk::decode(blob)?
                            .into_iter()
                            .filter(|&(ts, _)| in_part(ts))
                            .map(|(ts, value)| Reading {
                                series: name.clone(),
                                value,
                                ts,
                                unit: unit.clone(),
                            }),
                    );
                }
                Ok(())
            })
            .map_err(|source| StoreError::Block { id, source })?;
        }
        for id in ids {
            let r = sqlx::query("SELECT series_id, data FROM chunks WHERE id = ?")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            let series_id: i64 = r.try_get("series_id")?;
            let data: Vec<u8> = r.try_get("data")?;
            // Only chunks of series in the map were listed above.
            let Some((name, unit)) = series.get(&series_id) else {
                continue;
            };
            let points = chunk::decode(&data).map_err(|source| StoreError::Chunk { id, source })?;
            rows.extend(
                points
                    .into_iter()
                    .filter(|&(ts, _)| in_part(ts))
                    .map(|(ts, value)| Reading {
                        series: name.clone(),
                        value,
                        ts,
                        unit: unit.clone(),
                    }),
            );
        }
        let (n, present) = write(root, layout, rows, &mut summary).await?;
        summary.readings += n;
        summary.readings_present += present;
    }
    let mut events = Vec::new();
    for r in sqlx::query(
        "SELECT rule, series, state, severity, value, unit, ts, message FROM alerts \
         WHERE ts >= ? ORDER BY ts, id",
    )
    .bind(since)
    .fetch_all(&mut *tx)
    .await?
    {
        let s: String = r.try_get("series")?;
        if !topic_matches(pattern, &s) {
            continue;
        }
        events.push(EventRow {
            ts: r.try_get("ts")?,
            rule: r.try_get::<String, _>("rule")?.into(),
            series: s.into(),
            state: r.try_get::<String, _>("state")?.into(),
            severity: r.try_get::<String, _>("severity")?.into(),
            value: r.try_get("value")?,
            unit: r.try_get::<Option<String>, _>("unit")?.map(Arc::from),
            message: r.try_get::<String, _>("message")?.into(),
        });
    }
    tx.rollback().await?;
    let (n, present) = write(root, layout, events, &mut summary).await?;
    summary.events += n;
    summary.events_present += present;
    Ok(summary)
}

/// Writes on a blocking thread the `rows` their partitions do not hold yet; adds the
/// files to `summary`, returns the rows written and the rows already there.
async fn write<T: Table>(
    root: &Path,
    layout: Layout,
    rows: Vec<T>,
    summary: &mut ExportSummary,
) -> Result<(u64, u64), ExportError> {
    if rows.is_empty() {
        return Ok((0, 0));
    }
    let root: PathBuf = root.to_path_buf();
    let (out, present, complete) = tokio::task::spawn_blocking(move || {
        let mut by_part: BTreeMap<Timestamp, Vec<T>> = BTreeMap::new();
        for r in rows {
            by_part
                .entry(layout.partition.start_of(r.ts()))
                .or_default()
                .push(r);
        }
        let (mut left, mut present, mut complete) = (Vec::new(), 0u64, Vec::new());
        for (start, rows) in by_part {
            let dir = partition_dir(&root, T::NAME, layout.partition, start);
            let held = keys::<T>(&dir)?;
            let (n, before) = (rows.len(), left.len());
            left.extend(rows.into_iter().filter(|r| !held.contains(&r.key())));
            let added = left.len() - before;
            present += (n - added) as u64;
            if added == 0 {
                let rel = dir.strip_prefix(&root).unwrap_or(&dir);
                complete.push(rel.display().to_string());
            }
        }
        Ok::<_, PartError>((write_all(&root, &layout, left), present, complete))
    })
    .await??;
    summary.partitions_complete.extend(complete);
    let n = summary.add(&out.written);
    match out.failed {
        Some((e, _)) => Err(e.into()),
        None => Ok((n, present)),
    }
}
