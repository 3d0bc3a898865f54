//! Maintenance between flushes: merging the flush-sized chunks of past hours into one
//! chunk per series and hour, and retention in small steps so no statement holds the
//! database for long.

use sqlx::Row;

use super::writer::{write_logged, Writer};
use super::{chunk, StoreError, WriterConfig};
use crate::model::Timestamp;

impl Writer {
    /// one chunk per series and hour, indexed by series. Works on at most `max_rows`
    /// chunks per call; returns how many merged chunks it wrote.
    pub async fn compact(&self, before: Timestamp, max_rows: i64) -> Result<usize, StoreError> {
        let rows = sqlx::query(
            "SELECT id, series_id, first_ts, data FROM chunks WHERE compacted = 0 AND last_ts < ? LIMIT ?",
        )
        .bind(before)
        .bind(max_rows)
        .fetch_all(&self.pool)
        .await?;
        // (series, hour) → (chunk ids, points)
        // (chunk ids, their points)
        type Group = (Vec<i64>, Vec<(Timestamp, f64)>);
        let mut groups: std::collections::BTreeMap<(i64, i64), Group> =
            std::collections::BTreeMap::new();
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let series_id: i64 = row.try_get("series_id")?;
            let first: i64 = row.try_get("first_ts")?;
            let data: Vec<u8> = row.try_get("data")?;
            let g = groups
                .entry((series_id, first.div_euclid(3_600_000)))
                .or_default();
            g.0.push(id);
            g.1.extend(chunk::decode(&data).map_err(|source| StoreError::Chunk { id, source })?);
        }
        let written = groups.len();
        let mut tx = self.pool.begin().await?;
        for ((series_id, _), (ids, mut points)) in groups {
            if points.is_empty() {
                continue;
            }
            points.sort_by_key(|p| p.0);
            let (first, last) = (points[0].0, points[points.len() - 1].0);
            sqlx::query(
                "INSERT INTO chunks (series_id, first_ts, last_ts, count, compacted, data) VALUES (?, ?, ?, ?, 1, ?)",
            )
            .bind(series_id)
            .bind(first)
            .bind(last)
            .bind(points.len() as i64)
            .bind(chunk::encode(&points))
            .execute(&mut *tx)
            .await?;
            for part in ids.chunks(500) {
                let mut q = sqlx::QueryBuilder::new("DELETE FROM chunks WHERE id IN (");
                let mut sep = q.separated(", ");
                for id in part {
                    sep.push_bind(*id);
                }
                sep.push_unseparated(")");
                q.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Deletes raw chunks and blocks that ended before `raw_before` and rollups before
    /// `rollup_before`, at most `step` rows per statement; returns rows deleted.
    pub async fn retention(
        &self,
        raw_before: Timestamp,
        rollup_before: Timestamp,
        step: i64,
    ) -> Result<u64, StoreError> {
        let mut a = 0;
        // Literal `compacted` values, so each statement can use its partial index.
        for sql in [
            "DELETE FROM chunks WHERE id IN (SELECT id FROM chunks WHERE compacted = 1 AND last_ts < ?1 LIMIT ?2)",
            "DELETE FROM chunks WHERE id IN (SELECT id FROM chunks WHERE compacted = 0 AND last_ts < ?1 LIMIT ?2)",
            "DELETE FROM blocks WHERE id IN (SELECT id FROM blocks WHERE last_ts < ?1 LIMIT ?2)",
        ] {
            a += sqlx::query(sql)
            .bind(raw_before)
            .bind(step)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        let b = sqlx::query(
            "DELETE FROM rollups WHERE (series_id, minute) IN \
             (SELECT series_id, minute FROM rollups WHERE minute < ? LIMIT ?)",
        )
        .bind(rollup_before)
        .bind(step)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let c = sqlx::query(
            "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE ts < ? LIMIT ?)",
        )
        .bind(rollup_before)
        .bind(step)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(a + b + c)
    }
}

/// The hourly merge of chunks, then retention, in small steps.
pub(super) async fn maintain(w: &mut Writer, cfg: &WriterConfig) {
    write_logged(w).await;
    if w.backing_off() {
        return;
    }
    let now = crate::model::now_ms();
    let retention = i64::try_from(cfg.retention.as_millis()).unwrap_or(i64::MAX);
    let rollup_retention = i64::try_from(cfg.rollup_retention.as_millis()).unwrap_or(i64::MAX);
    // Merge the flush-sized chunks of every hour that is over, in steps.
    let hour_start = now - now.rem_euclid(3_600_000);
    for _ in 0..20 {
        match w.compact(hour_start, 20_000).await {
            Ok(0) => break,
            Ok(n) => tracing::debug!(chunks = n, "merged an hour's chunks"),
            Err(e) => {
                tracing::warn!(error = %e, "chunk compaction failed");
                break;
            }
        }
    }
    match w
        .retention(
            now.saturating_sub(retention),
            now.saturating_sub(rollup_retention),
            5_000,
        )
        .await
    {
        Ok(n) if n > 0 => tracing::info!(rows = n, "retention deleted old rows"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "retention failed"),
    }
}
