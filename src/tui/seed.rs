//! What a viewer knows before the live feed says anything, read from the service's
//! SQLite file: every series with its last value, unit and time, and the engine's
//! silences (kept fresh while the viewer runs, since silences send no event).
//!
//! ```text
//!  centinela.db ── series (name, unit, last_seen, last_value) ──► LiveEvent::Readings ─► App::apply_initial
//!               └─ silences (engine records) ─────────────────► App::set_engine_silences (every few s)
//! ```

use std::sync::Arc;

use sqlx::{Row, SqlitePool};

use crate::model::{LiveEvent, Reading, Timestamp};

use super::state::Silence;

/// Series read from the catalogue at most: a viewer shows the newest this many.
const SEED_SERIES_MAX: i64 = 100_000;

/// The last value of every series in the catalogue, as one batch of readings stamped
/// with their own time (so ages are right from the first screen).
pub async fn last_values(pool: &SqlitePool) -> Result<Vec<LiveEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT name, unit, last_seen, last_value FROM series \
         WHERE last_value IS NOT NULL ORDER BY last_seen DESC LIMIT ?",
    )
    .bind(SEED_SERIES_MAX)
    .fetch_all(pool)
    .await?;
    let mut readings = Vec::with_capacity(rows.len());
    for r in &rows {
        let name: String = r.try_get("name")?;
        let unit: Option<String> = r.try_get("unit")?;
        let ts: Timestamp = r.try_get("last_seen")?;
        let value: f64 = r.try_get("last_value")?;
        readings.push(Reading {
            series: Arc::from(name.as_str()),
            value,
            ts,
            unit: unit
                .filter(|u| !u.is_empty())
                .map(|u| Arc::from(u.as_str())),
        });
    }
    readings.sort_by_key(|r| r.ts);
    Ok(if readings.is_empty() {
        Vec::new()
    } else {
        vec![LiveEvent::Readings(readings.into())]
    })
}

/// The engine's silences still in force at `now`.
pub async fn silences(pool: &SqlitePool, now: Timestamp) -> Result<Vec<Silence>, String> {
    let (_, records) = crate::store::sqlite::load_engine_state(pool)
        .await
        .map_err(|e| e.to_string())?;
    Ok(records
        .into_iter()
        .filter(|s| s.until > now)
        .map(|s| Silence {
            pattern: s.pattern,
            until: s.until,
        })
        .collect())
}
