//! The flush: every buffered reading in one transaction — one block row holding every
//! series' new points, or one chunk row per series when they hold many each — with the
//! rollups of the minutes that are over and the catalogue's upserts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use sqlx::Row;

use super::{
    Pending, Rollup, Seen, Writer, CATALOGUE_EVERY_MS, CHUNK_POINTS_MIN, ROLLUPS_EVERY_MS,
    ROLLUP_ROWS_PER_FLUSH, ROWS_PER_STATEMENT,
};
use crate::model::{SeriesId, Timestamp};
use crate::store::block;
use crate::store::chunk;
use crate::store::sqlite::StoreError;

impl Writer {
    /// Writes every buffered reading in one transaction. On error the readings stay
    /// buffered and the next flush tries again.
    pub async fn flush(&mut self) -> Result<usize, StoreError> {
        self.flush_at(crate::model::now_ms()).await
    }

    /// [`Writer::flush`] at wall time `now` (which minutes are over, whether the
    /// catalogue is due): a fixed `now` makes a run repeatable.
    pub async fn flush_at(&mut self, now: Timestamp) -> Result<usize, StoreError> {
        if self.pending_count == 0 {
            return Ok(0);
        }
        let mut batch: Vec<(SeriesId, Pending)> = self
            .pending
            .drain()
            .filter(|(_, p)| !p.points.is_empty() || !p.skipped.is_empty())
            .collect();
        for (_, p) in &mut batch {
            // Stable: readings with equal timestamps keep their arrival order.
            p.points.sort_by_key(|pt| pt.0);
            p.skipped.sort_by_key(|pt| pt.0);
        }
        let started = std::time::Instant::now();
        let written = self.write_batch(&batch, now).await;
        crate::http::histogram::SQLITE_FLUSH.observe(started.elapsed());
        match written {
            Ok(rows) => {
                let n = self.pending_count;
                self.pending_count = 0;
                self.stats.stored.fetch_add(n as u64, Ordering::Relaxed);
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .chunks_written
                    .fetch_add(rows as u64, Ordering::Relaxed);
                // Keep the buffers' capacity for the next flush.
                for (s, mut p) in batch {
                    p.points.clear();
                    p.skipped.clear();
                    self.pending.insert(s, p);
                }
                Ok(n)
            }
            Err(e) => {
                for (s, p) in batch {
                    self.pending.insert(s, p);
                }
                Err(e)
            }
        }
    }

    async fn write_batch(
        &mut self,
        batch: &[(SeriesId, Pending)],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        // What the catalogue and the rollups will get, kept in memory between writes.
        for (s, p) in batch {
            // The catalogue sees every reading, stored or kept out by a deadband.
            let first = [p.points.first(), p.skipped.first()]
                .into_iter()
                .flatten()
                .map(|x| x.0)
                .min();
            let last = [p.points.last(), p.skipped.last()]
                .into_iter()
                .flatten()
                .max_by_key(|x| x.0)
                .copied();
            let (Some(first), Some(last)) = (first, last) else {
                continue;
            };
            let e = self.seen.entry(s.clone()).or_insert(Seen {
                first,
                last: last.0,
                value: last.1,
                unit: None,
            });
            e.first = e.first.min(first);
            if last.0 >= e.last {
                (e.last, e.value) = last;
            }
            if p.unit.is_some() {
                e.unit.clone_from(&p.unit);
            }
        }
        let catalogue_due = self.force
            || self
                .catalogue_written
                .is_none_or(|t| now - t >= CATALOGUE_EVERY_MS);
        let mut tx = self.pool.begin().await?;
        // Catalogue: new series at once (their ids are needed); the others' last seen
        // and last value once a minute, to spare the disk a page write per flush.
        let rows: Vec<(&SeriesId, &Seen)> = self
            .seen
            .iter()
            .filter(|(s, _)| catalogue_due || !self.ids.contains_key(*s))
            .collect();
        // Hash lookups only: a burst of new series (64,000 in one flush) must cost
        // O(series), not O(series²).
        let mut new_ids: HashMap<SeriesId, i64> = HashMap::new();
        for part in rows.chunks(ROWS_PER_STATEMENT) {
            let by_name: HashMap<&str, &SeriesId> =
                part.iter().map(|(s, _)| (s.as_ref(), *s)).collect();
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO series (name, unit, first_seen, last_seen, last_value) ",
            );
            q.push_values(part, |mut b, (s, e)| {
                b.push_bind(s.as_ref())
                    .push_bind(e.unit.as_deref())
                    .push_bind(e.first)
                    .push_bind(e.last)
                    .push_bind(e.value);
            });
            q.push(
                " ON CONFLICT(name) DO UPDATE SET \
                 last_value = CASE WHEN excluded.last_seen >= last_seen THEN excluded.last_value ELSE last_value END, \
                 last_seen = max(last_seen, excluded.last_seen), \
                 first_seen = min(first_seen, excluded.first_seen), \
                 unit = coalesce(excluded.unit, unit) RETURNING id, name",
            );
            for row in q.build().fetch_all(&mut *tx).await? {
                let name: String = row.try_get("name")?;
                if let Some(s) = by_name.get(name.as_str()) {
                    if !self.ids.contains_key(*s) {
                        new_ids.insert((*s).clone(), row.try_get("id")?);
                    }
                }
            }
        }
        let id_of = |s: &SeriesId| self.ids.get(s).copied().or_else(|| new_ids.get(s).copied());
        let with_points: Vec<(i64, &[(Timestamp, f64)])> = batch
            .iter()
            .filter(|(_, p)| !p.points.is_empty())
            .filter_map(|(s, p)| Some((id_of(s)?, p.points.as_slice())))
            .collect();
        let points: usize = with_points.iter().map(|(_, p)| p.len()).sum();
        let as_block = points < CHUNK_POINTS_MIN * with_points.len();
        if as_block {
            // One row for the whole flush, appended at the end of its table.
            let first = with_points.iter().map(|(_, p)| p[0].0).min();
            let last = with_points.iter().map(|(_, p)| p[p.len() - 1].0).max();
            if let (Some(first), Some(last)) = (first, last) {
                sqlx::query(
                    "INSERT INTO blocks (first_ts, last_ts, count, data) VALUES (?, ?, ?, ?)",
                )
                .bind(first)
                .bind(last)
                .bind(points as i64)
                .bind(block::encode(with_points.iter().copied()))
                .execute(&mut *tx)
                .await?;
            }
        }
        // Otherwise chunks: one row per series, appended (see the migration on why
        // unindexed by series).
        let blobs: Vec<(i64, Timestamp, Timestamp, i64, Vec<u8>)> = batch
            .iter()
            .filter(|_| !as_block)
            .filter_map(|(s, p)| {
                let id = id_of(s)?;
                let first = p.points.first()?.0;
                let last = p.points.last()?.0;
                Some((
                    id,
                    first,
                    last,
                    p.points.len() as i64,
                    chunk::encode(&p.points),
                ))
            })
            .collect();
        for part in blobs.chunks(ROWS_PER_STATEMENT) {
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
        // Rollups: accumulated per series and minute; a minute is written once it is
        // over (a late reading merges into the stored row). What this batch adds is
        // kept apart until the commit, so a failed write leaves the totals as they were
        // and the work follows the readings, not the series held.
        let mut delta: HashMap<(i64, i64), Rollup> = HashMap::new();
        for (s, p) in batch {
            let Some(id) = id_of(s) else { continue };
            for &(ts, v) in p.points.iter().chain(&p.skipped) {
                delta
                    .entry((id, ts.div_euclid(60_000) * 60_000))
                    .and_modify(|r| r.add(v))
                    .or_insert_with(|| Rollup::of(v));
            }
        }
        let open_minute = now.div_euclid(60_000) * 60_000 - 60_000;
        let rollups_due = self
            .rollups_written
            .is_none_or(|t| now - t >= ROLLUPS_EVERY_MS);
        // Minutes before `upto` are written now.
        let mut upto = if self.force {
            i64::MAX
        } else if rollups_due {
            open_minute
        } else {
            i64::MIN
        };
        let mut capped = false;
        if !self.force {
            let mut rows = 0;
            for (&minute, r) in self.rollups.range(..upto) {
                if rows > 0 && rows + r.len() > ROLLUP_ROWS_PER_FLUSH {
                    upto = minute;
                    capped = true;
                    break;
                }
                rows += r.len();
            }
        }
        let mut closed: Vec<((i64, i64), Rollup)> = Vec::new();
        for (&minute, r) in self.rollups.range(..upto) {
            for (&id, r) in r {
                let mut r = *r;
                if let Some(d) = delta.remove(&(id, minute)) {
                    r.merge(&d);
                }
                closed.push(((id, minute), r));
            }
        }
        let mut open: Vec<((i64, i64), Rollup)> = Vec::with_capacity(delta.len());
        for (k, d) in delta {
            if k.1 < upto {
                closed.push((k, d));
            } else {
                open.push((k, d));
            }
        }
        for part in closed.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO rollups (series_id, minute, min, max, avg, count) ",
            );
            q.push_values(part, |mut b, ((id, minute), r)| {
                b.push_bind(id)
                    .push_bind(minute)
                    .push_bind(r.min)
                    .push_bind(r.max)
                    .push_bind(r.sum / r.count as f64)
                    .push_bind(r.count);
            });
            q.push(
                " ON CONFLICT(series_id, minute) DO UPDATE SET \
                 min = min(min, excluded.min), max = max(max, excluded.max), \
                 avg = (avg * count + excluded.avg * excluded.count) / (count + excluded.count), \
                 count = count + excluded.count",
            );
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        // Only now is what was written true.
        self.ids.extend(new_ids);
        if as_block && points > 0 {
            if let Some(b) = &mut self.blocks {
                b.points += points as u64;
                b.oldest.get_or_insert(now);
            }
        }
        if upto != i64::MIN {
            self.rollups = if upto == i64::MAX {
                BTreeMap::new()
            } else {
                self.rollups.split_off(&upto)
            };
            if !capped {
                self.rollups_written = Some(now);
            }
        }
        for ((id, minute), d) in open {
            self.rollups
                .entry(minute)
                .or_default()
                .entry(id)
                .and_modify(|r| r.merge(&d))
                .or_insert(d);
        }
        if catalogue_due {
            self.seen.clear();
            self.catalogue_written = Some(now);
        }
        Ok(if as_block { 1 } else { blobs.len() })
    }
}
