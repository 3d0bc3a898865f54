//! What the CLI, the TUI and the engine read back: readings, alerts history, the
//! persisted engine state and the catalogue.

use std::collections::HashMap;

use sqlx::{Row, SqlitePool};

use super::{chunk, StoreError};
use crate::engine::{AlertRecord, SilenceRecord};
use crate::model::{format_ts, AlertEvent, AlertState, Severity, Timestamp};
use crate::store::block;

/// One stored reading, as `centinela readings` prints it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredReading {
    pub series: String,
    pub ts: String,
    pub value: f64,
}

/// Readings of the series matching `pattern` (MQTT wildcards) since `since`, ordered by
/// series then time.
pub async fn query_readings(
    pool: &SqlitePool,
    pattern: &str,
    since: Timestamp,
) -> Result<Vec<(String, Timestamp, f64)>, StoreError> {
    let series = sqlx::query("SELECT id, name FROM series")
        .fetch_all(pool)
        .await?;
    let mut names: HashMap<i64, String> = HashMap::new();
    for s in series {
        let name: String = s.try_get("name")?;
        if crate::model::topic_matches(pattern, &name) {
            names.insert(s.try_get("id")?, name);
        }
    }
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut points: HashMap<i64, Vec<(Timestamp, f64)>> = HashMap::new();
    let rows = sqlx::query("SELECT id, series_id, data FROM chunks WHERE last_ts >= ?")
        .bind(since)
        .fetch_all(pool)
        .await?;
    for row in rows {
        let series_id: i64 = row.try_get("series_id")?;
        if !names.contains_key(&series_id) {
            continue;
        }
        let id: i64 = row.try_get("id")?;
        let data: Vec<u8> = row.try_get("data")?;
        let decoded = chunk::decode(&data).map_err(|source| StoreError::Chunk { id, source })?;
        points
            .entry(series_id)
            .or_default()
            .extend(decoded.into_iter().filter(|p| p.0 >= since));
    }
    // Recent readings not merged into chunks yet.
    let rows = sqlx::query("SELECT id, data FROM blocks WHERE last_ts >= ?")
        .bind(since)
        .fetch_all(pool)
        .await?;
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let data: &[u8] = row.try_get("data")?;
        block::for_each(data, |series_id, blob| {
            if names.contains_key(&series_id) {
                points
                    .entry(series_id)
                    .or_default()
                    .extend(chunk::decode(blob)?.into_iter().filter(|p| p.0 >= since));
            }
            Ok(())
        })
        .map_err(|source| StoreError::Block { id, source })?;
    }
    let mut by_name: Vec<(String, Vec<(Timestamp, f64)>)> = points
        .into_iter()
        .map(|(id, pts)| (names.remove(&id).unwrap_or_default(), pts))
        .collect();
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (name, mut pts) in by_name {
        pts.sort_by_key(|p| p.0);
        out.extend(pts.into_iter().map(|(ts, v)| (name.clone(), ts, v)));
    }
    Ok(out)
}

/// A row of the alerts history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertRow {
    pub rule: String,
    pub series: String,
    pub state: String,
    pub severity: String,
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub ts: String,
    pub message: String,
}

impl AlertRow {
    /// The row an event becomes in the history.
    pub fn from_event(e: &AlertEvent) -> Self {
        AlertRow {
            rule: e.rule.clone(),
            series: e.series.clone(),
            state: e.state.as_str().to_string(),
            severity: e.severity.as_str().to_string(),
            value: e.value,
            unit: e.unit.clone(),
            ts: format_ts(e.ts),
            message: e.message.clone(),
        }
    }
}

pub async fn query_alerts(
    pool: &SqlitePool,
    since: Timestamp,
    state: Option<AlertState>,
) -> Result<Vec<AlertRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT rule, series, state, severity, value, unit, ts, message FROM alerts \
         WHERE ts >= ? AND (? IS NULL OR state = ?) ORDER BY ts, id",
    )
    .bind(since)
    .bind(state.map(AlertState::as_str))
    .bind(state.map(AlertState::as_str))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AlertRow {
                rule: r.try_get("rule")?,
                series: r.try_get("series")?,
                state: r.try_get("state")?,
                severity: r.try_get("severity")?,
                value: r.try_get("value")?,
                unit: r.try_get("unit")?,
                ts: format_ts(r.try_get("ts")?),
                message: r.try_get("message")?,
            })
        })
        .collect()
}

/// Persisted engine state. A row that does not parse (written by another version) is
/// skipped with a warning rather than stopping the start.
pub async fn load_engine_state(
    pool: &SqlitePool,
) -> Result<(Vec<AlertRecord>, Vec<SilenceRecord>), StoreError> {
    let rows = sqlx::query("SELECT rule, series, record FROM alert_state")
        .fetch_all(pool)
        .await?;
    let mut alerts = Vec::with_capacity(rows.len());
    for r in &rows {
        let record: String = r.try_get("record")?;
        match serde_json::from_str(&record) {
            Ok(a) => alerts.push(a),
            Err(e) => {
                let (rule, series): (String, String) = (r.try_get("rule")?, r.try_get("series")?);
                tracing::warn!(rule, series, error = %e, "stored alert state unreadable: skipped");
            }
        }
    }
    let rows = sqlx::query("SELECT id, record FROM silences")
        .fetch_all(pool)
        .await?;
    let mut silences = Vec::with_capacity(rows.len());
    for r in &rows {
        let record: String = r.try_get("record")?;
        match serde_json::from_str(&record) {
            Ok(s) => silences.push(s),
            Err(e) => {
                tracing::warn!(id = r.try_get::<String, _>("id")?, error = %e, "stored silence unreadable: skipped")
            }
        }
    }
    Ok((alerts, silences))
}

/// Last seen time of every series in the catalogue (deadman rules start from it).
pub async fn last_seen(
    pool: &SqlitePool,
) -> Result<Vec<(String, Timestamp, Option<f64>)>, StoreError> {
    let rows = sqlx::query("SELECT name, last_seen, last_value FROM series")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("name")?,
                r.try_get("last_seen")?,
                r.try_get("last_value")?,
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(Into::into)
}

/// What a database holds, in the words of `centinela demo`'s last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Readings stored, in chunks and in blocks not merged yet.
    pub readings: i64,
    /// Series in the catalogue.
    pub series: i64,
    /// Alert events in the history.
    pub alert_events: i64,
}

/// Counts the readings, series and alert events stored.
pub async fn totals(pool: &SqlitePool) -> Result<Totals, StoreError> {
    let (readings, series, alert_events): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT coalesce(sum(count), 0) FROM chunks) + (SELECT coalesce(sum(count), 0) FROM blocks), \
                (SELECT count(*) FROM series), \
                (SELECT count(*) FROM alerts)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Totals {
        readings,
        series,
        alert_events,
    })
}

/// The unit of every series that has one in the catalogue.
pub async fn series_units(pool: &SqlitePool) -> Result<HashMap<String, String>, StoreError> {
    let rows = sqlx::query("SELECT name, unit FROM series WHERE unit IS NOT NULL")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("name")?, r.try_get("unit")?)))
        .collect::<Result<HashMap<_, _>, sqlx::Error>>()
        .map_err(Into::into)
}

/// Severity as stored, for readers that need the type back.
pub fn parse_severity(s: &str) -> Severity {
    Severity::parse(s).unwrap_or_default()
}

/// History for the terminal's detail chart, read from the database. Called from a
/// blocking thread (the TUI runs it in `spawn_blocking`).
pub struct SqliteHistory {
    pub pool: SqlitePool,
    pub runtime: tokio::runtime::Handle,
}

impl crate::tui::HistorySource for SqliteHistory {
    fn history(&self, series: &str, since: Timestamp) -> Vec<(Timestamp, f64)> {
        match self
            .runtime
            .block_on(query_series(&self.pool, series, since))
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(series, error = %e, "cannot read history");
                Vec::new()
            }
        }
    }
}

/// Points of one series since `since`, ascending.
pub async fn query_series(
    pool: &SqlitePool,
    series: &str,
    since: Timestamp,
) -> Result<Vec<(Timestamp, f64)>, StoreError> {
    let Some(series_id): Option<i64> = sqlx::query_scalar("SELECT id FROM series WHERE name = ?")
        .bind(series)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(Vec::new());
    };
    // Merged chunks through the series index, recent ones through the time index.
    let rows = sqlx::query(
        "SELECT id, data FROM chunks WHERE compacted = 1 AND series_id = ?1 AND last_ts >= ?2 \
         UNION ALL SELECT id, data FROM chunks WHERE compacted = 0 AND last_ts >= ?2 AND series_id = ?1",
    )
    .bind(series_id)
    .bind(since)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let data: Vec<u8> = row.try_get("data")?;
        out.extend(
            chunk::decode(&data)
                .map_err(|source| StoreError::Chunk { id, source })?
                .into_iter()
                .filter(|p| p.0 >= since),
        );
    }
    let rows = sqlx::query("SELECT id, data FROM blocks WHERE last_ts >= ?")
        .bind(since)
        .fetch_all(pool)
        .await?;
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let data: &[u8] = row.try_get("data")?;
        block::for_each(data, |s, blob| {
            if s == series_id {
                out.extend(chunk::decode(blob)?.into_iter().filter(|p| p.0 >= since));
            }
            Ok(())
        })
        .map_err(|source| StoreError::Block { id, source })?;
    }
    // Stable: readings with equal timestamps keep the order they were written in.
    out.sort_by_key(|p| p.0);
    Ok(out)
}
