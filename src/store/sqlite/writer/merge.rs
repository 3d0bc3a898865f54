//! Merging blocks (one row holding every series' points of a flush) into per-series
//! chunks, once they hold enough points or their hour is over.

use std::collections::HashMap;

use sqlx::Row;

use super::{Blocks, Writer, HOUR_MS, MERGE_POINTS, ROWS_PER_STATEMENT};
use crate::model::Timestamp;
use crate::store::block;
use crate::store::chunk;
use crate::store::sqlite::StoreError;

impl Writer {
    /// Merges blocks into per-series chunks when they are due: once they hold
    /// [`MERGE_POINTS`] points, or once the hour the oldest was written in (wall time
    /// `now`) is over. Merges at most about [`MERGE_POINTS`] points per call; returns
    /// the chunk rows written.
    pub async fn merge_if_due(&mut self, now: Timestamp) -> Result<usize, StoreError> {
        let b = match self.blocks {
            Some(b) => b,
            None => {
                let (n, points): (i64, i64) =
                    sqlx::query_as("SELECT count(*), coalesce(sum(count), 0) FROM blocks")
                        .fetch_one(&self.pool)
                        .await?;
                let b = Blocks {
                    points: u64::try_from(points).unwrap_or(0),
                    oldest: (n > 0).then_some(now),
                };
                self.blocks = Some(b);
                b
            }
        };
        let hour_over = b
            .oldest
            .is_some_and(|t| t.div_euclid(HOUR_MS) < now.div_euclid(HOUR_MS));
        if b.points < MERGE_POINTS && !hour_over {
            return Ok(0);
        }
        let (rows, merged, left) = self.merge_blocks(MERGE_POINTS).await?;
        self.blocks = Some(Blocks {
            points: b.points.saturating_sub(merged),
            oldest: if left { b.oldest } else { None },
        });
        Ok(rows)
    }

    /// Merges the oldest blocks, about `max_points` points of them (at least one
    /// block), into one chunk per series and hour, in one transaction that also
    /// deletes them. Returns (chunk rows written, points merged, whether blocks are left).
    pub async fn merge_blocks(&self, max_points: u64) -> Result<(usize, u64, bool), StoreError> {
        let heads: Vec<(i64, i64)> = sqlx::query_as("SELECT id, count FROM blocks ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let mut take = 0usize;
        let mut merged = 0u64;
        for &(_, count) in &heads {
            if take > 0 && merged + count.max(0) as u64 > max_points {
                break;
            }
            take += 1;
            merged += count.max(0) as u64;
        }
        let Some(&(last_id, _)) = take.checked_sub(1).and_then(|i| heads.get(i)) else {
            return Ok((0, 0, false));
        };
        let rows = sqlx::query("SELECT id, data FROM blocks WHERE id <= ? ORDER BY id")
            .bind(last_id)
            .fetch_all(&self.pool)
            .await?;
        // (series, hour) → points, in the order written.
        let mut groups: HashMap<(i64, i64), Vec<(Timestamp, f64)>> = HashMap::new();
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let data: &[u8] = row.try_get("data")?;
            block::for_each(data, |series, blob| {
                for p in chunk::decode(blob)? {
                    groups
                        .entry((series, p.0.div_euclid(HOUR_MS)))
                        .or_default()
                        .push(p);
                }
                Ok(())
            })
            .map_err(|source| StoreError::Block { id, source })?;
        }
        let chunks: Vec<(i64, Timestamp, Timestamp, i64, Vec<u8>)> = groups
            .into_iter()
            .map(|((series, _), mut points)| {
                // Stable: readings with equal timestamps keep their arrival order.
                points.sort_by_key(|p| p.0);
                let (first, last) = (points[0].0, points[points.len() - 1].0);
                (
                    series,
                    first,
                    last,
                    points.len() as i64,
                    chunk::encode(&points),
                )
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        for part in chunks.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO chunks (series_id, first_ts, last_ts, count, data) ",
            );
            q.push_values(part, |mut b, (id, first, last, count, data)| {
                b.push_bind(id)
                    .push_bind(first)
                    .push_bind(last)
                    .push_bind(count)
                    .push_bind(data.as_slice());
            });
            q.build().execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM blocks WHERE id <= ?")
            .bind(last_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((chunks.len(), merged, take < heads.len()))
    }
}
