//! `centinela export --parquet DIR`: the readings SQLite holds, written in the layout
//! the live output writes (one part file per hour, numbered after the parts already
//! there, so an export beside a running lake adds files and replaces none).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use sqlx::Row;

use super::file::{hour_of, write_part, PartError};
use crate::model::{Reading, Timestamp};
use crate::store::sqlite::{self, StoreError};

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub rows: u64,
    pub files: u64,
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("while reading the series catalogue: {0}")]
    Catalogue(#[from] sqlx::Error),
    #[error(transparent)]
    Part(#[from] PartError),
    #[error("the writer thread failed: {0}")]
    Thread(#[from] tokio::task::JoinError),
}

/// Writes the readings of the series matching `pattern` since `since` under `root`.
pub async fn export(
    pool: &sqlx::SqlitePool,
    root: &Path,
    pattern: &str,
    since: Timestamp,
) -> Result<ExportSummary, ExportError> {
    let units: HashMap<String, Option<Arc<str>>> = sqlx::query("SELECT name, unit FROM series")
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| {
            let name: String = r.try_get("name")?;
            let unit: Option<String> = r.try_get("unit")?;
            Ok((name, unit.map(Arc::from)))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let rows = sqlite::query_readings(pool, pattern, since).await?;
    let mut hours: BTreeMap<Timestamp, Vec<Reading>> = BTreeMap::new();
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    for (series, ts, value) in rows {
        let unit = units.get(&series).cloned().flatten();
        let series = names
            .entry(series)
            .or_insert_with_key(|k| Arc::from(k.as_str()))
            .clone();
        hours.entry(hour_of(ts)).or_default().push(Reading {
            series,
            value,
            ts,
            unit,
        });
    }
    let root = root.to_path_buf();
    let summary = tokio::task::spawn_blocking(move || {
        let mut s = ExportSummary::default();
        for (h, mut rows) in hours {
            write_part(&root, h, &mut rows)?;
            s.rows += rows.len() as u64;
            s.files += 1;
        }
        Ok::<_, PartError>(s)
    })
    .await??;
    Ok(summary)
}
