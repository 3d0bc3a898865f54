//! The durable backlog of the InfluxDB sink: batches that could not be written yet,
//! kept in their own SQLite file (`<db>.influx-backlog.db`) until InfluxDB takes them.
//!
//! One row per batch, body gzipped (a few bytes a point on the SD card), oldest first.
//! The total is bounded by `backlog_max` points: to make room, the oldest batches are
//! deleted and their points returned to the caller, who counts them as dropped. A batch
//! being replayed is never the one deleted, so a point is never counted both written
//! and dropped.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection};

/// A failure of the backlog file.
#[derive(Debug, thiserror::Error)]
pub enum BacklogError {
    #[error("InfluxDB backlog {path}: {source}")]
    Sqlite { path: String, source: sqlx::Error },
}

/// One stored batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub id: i64,
    pub points: u64,
    /// Gzipped line protocol.
    pub gz: Vec<u8>,
}

/// The open backlog file.
#[derive(Debug)]
pub struct Backlog {
    conn: SqliteConnection,
    path: String,
    /// Points stored, kept in step with the table.
    points: u64,
    max: u64,
}

impl Backlog {
    /// Opens (creating when missing) the backlog at `path`, bounded to `max` points.
    pub async fn open(path: &Path, max: u64) -> Result<Self, BacklogError> {
        let shown = path.display().to_string();
        let err = |source| BacklogError::Sqlite {
            path: shown.clone(),
            source,
        };
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let mut conn = SqliteConnection::connect_with(&opts).await.map_err(err)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS influx_backlog (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                created_ms INTEGER NOT NULL,
                points INTEGER NOT NULL,
                gz BLOB NOT NULL
            )",
        )
        .execute(&mut conn)
        .await
        .map_err(err)?;
        let points: i64 = sqlx::query("SELECT COALESCE(SUM(points), 0) FROM influx_backlog")
            .fetch_one(&mut conn)
            .await
            .map_err(err)?
            .get(0);
        Ok(Self {
            conn,
            path: shown,
            points: u64::try_from(points).unwrap_or(0),
            max,
        })
    }

    /// Points waiting.
    pub fn points(&self) -> u64 {
        self.points
    }

    pub fn is_empty(&self) -> bool {
        self.points == 0
    }

    /// Stores a batch of `points` points, deleting the oldest batches (never `keep`) to
    /// stay within the bound. Returns how many points were dropped, the new batch's
    /// included when it alone is larger than the bound.
    pub async fn push(
        &mut self,
        points: u64,
        gz: &[u8],
        keep: Option<i64>,
    ) -> Result<u64, BacklogError> {
        if points > self.max {
            return Ok(points);
        }
        let path = self.path.clone();
        let err = |source| BacklogError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut tx = self.conn.begin().await.map_err(err)?;
        let mut dropped = 0u64;
        let mut total = self.points;
        while total + points > self.max {
            let row = sqlx::query(
                "SELECT id, points FROM influx_backlog WHERE id IS NOT ? ORDER BY id LIMIT 1",
            )
            .bind(keep)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
            let Some(row) = row else { break };
            let (id, n): (i64, i64) = (row.get(0), row.get(1));
            sqlx::query("DELETE FROM influx_backlog WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            let n = u64::try_from(n).unwrap_or(0);
            dropped += n;
            total -= n.min(total);
        }
        if total + points > self.max {
            // Only the batch being replayed is left and there is no room beside it.
            tx.commit().await.map_err(err)?;
            self.points = total;
            return Ok(dropped + points);
        }
        sqlx::query("INSERT INTO influx_backlog (created_ms, points, gz) VALUES (?, ?, ?)")
            .bind(crate::model::now_ms())
            .bind(i64::try_from(points).unwrap_or(i64::MAX))
            .bind(gz)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        self.points = total + points;
        Ok(dropped)
    }

    /// The oldest batch, left in place until [`remove`](Self::remove).
    pub async fn oldest(&mut self) -> Result<Option<Chunk>, BacklogError> {
        let row = sqlx::query("SELECT id, points, gz FROM influx_backlog ORDER BY id LIMIT 1")
            .fetch_optional(&mut self.conn)
            .await
            .map_err(|source| BacklogError::Sqlite {
                path: self.path.clone(),
                source,
            })?;
        if row.is_none() {
            // Nothing stored: keep the count honest even if it had drifted.
            self.points = 0;
        }
        Ok(row.map(|r| Chunk {
            id: r.get(0),
            points: u64::try_from(r.get::<i64, _>(1)).unwrap_or(0),
            gz: r.get(2),
        }))
    }

    /// Deletes a batch once written. Returns whether it was still there.
    pub async fn remove(&mut self, id: i64) -> Result<bool, BacklogError> {
        let path = self.path.clone();
        let err = |source| BacklogError::Sqlite {
            path: path.clone(),
            source,
        };
        let row = sqlx::query("DELETE FROM influx_backlog WHERE id = ? RETURNING points")
            .bind(id)
            .fetch_optional(&mut self.conn)
            .await
            .map_err(err)?;
        match row {
            Some(r) => {
                let n = u64::try_from(r.get::<i64, _>(0)).unwrap_or(0);
                self.points -= n.min(self.points);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Closes the file cleanly (checkpointing the WAL).
    pub async fn close(self) -> Result<(), BacklogError> {
        let path = self.path;
        self.conn
            .close()
            .await
            .map_err(|source| BacklogError::Sqlite { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_fifo_that_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let mut b = Backlog::open(&path, 250).await.unwrap();
        assert_eq!(b.push(100, b"one", None).await.unwrap(), 0);
        assert_eq!(b.push(100, b"two", None).await.unwrap(), 0);
        // 300 > 250: the oldest batch goes.
        assert_eq!(b.push(100, b"three", None).await.unwrap(), 100);
        assert_eq!(b.points(), 200);
        // Larger than the whole bound: refused outright.
        assert_eq!(b.push(300, b"huge", None).await.unwrap(), 300);
        let first = b.oldest().await.unwrap().unwrap();
        assert_eq!((first.points, first.gz.as_slice()), (100, &b"two"[..]));
        // The batch in flight is kept; the next oldest makes room.
        assert_eq!(b.push(100, b"four", Some(first.id)).await.unwrap(), 100);
        b.close().await.unwrap();

        let mut b = Backlog::open(&path, 250).await.unwrap();
        assert_eq!(b.points(), 200);
        assert!(b.remove(first.id).await.unwrap());
        assert!(!b.remove(first.id).await.unwrap());
        assert_eq!(b.oldest().await.unwrap().unwrap().gz, b"four");
        assert_eq!(b.points(), 100);
    }
}
