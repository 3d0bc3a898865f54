//! Alert events, the engine state they leave behind and their notifications, written
//! in one transaction so a crash never separates an event from its state.

use std::sync::atomic::Ordering;

use super::writer::{Writer, ROWS_PER_STATEMENT};
use super::{AlertBatch, StoreError};
use crate::model::Timestamp;

impl Writer {
    /// Appends alert events to the history and saves the engine state, in one
    /// transaction.
    pub async fn write_alerts(&self, batch: &AlertBatch, now: Timestamp) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for part in batch.events.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO alerts (rule, series, state, severity, value, unit, ts, message, notify) ",
            );
            q.push_values(part, |mut b, e| {
                b.push_bind(&e.rule)
                    .push_bind(&e.series)
                    .push_bind(e.state.as_str())
                    .push_bind(e.severity.as_str())
                    .push_bind(e.value)
                    .push_bind(e.unit.as_deref())
                    .push_bind(e.ts)
                    .push_bind(&e.message)
                    .push_bind(e.notify.join(","));
            });
            q.build().execute(&mut *tx).await?;
        }
        for part in batch.state.chunks(ROWS_PER_STATEMENT) {
            let mut q =
                sqlx::QueryBuilder::new("INSERT INTO alert_state (rule, series, record, updated) ");
            q.push_values(part, |mut b, r| {
                // Plain data with string keys: serialising cannot fail.
                let json = serde_json::to_string(r).unwrap_or_default();
                b.push_bind(&r.rule)
                    .push_bind(&r.series)
                    .push_bind(json)
                    .push_bind(now);
            });
            q.push(" ON CONFLICT(rule, series) DO UPDATE SET record = excluded.record, updated = excluded.updated");
            q.build().execute(&mut *tx).await?;
        }
        if let Some(silences) = &batch.silences {
            sqlx::query("DELETE FROM silences")
                .execute(&mut *tx)
                .await?;
            for s in silences {
                sqlx::query("INSERT OR REPLACE INTO silences (id, record) VALUES (?, ?)")
                    .bind(&s.pattern)
                    .bind(serde_json::to_string(s).unwrap_or_default())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let notified = match &self.outbox {
            Some(_) => crate::notify::outbox::enqueue_in(&mut tx, &batch.events, now)
                .await
                .map_err(|e| StoreError::Outbox(e.to_string()))?,
            None => 0,
        };
        tx.commit().await?;
        if let (Some(outbox), true) = (&self.outbox, notified > 0) {
            outbox.wake();
        }
        self.stats
            .events
            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
