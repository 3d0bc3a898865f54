//! The writer task: messages in, timed flushes, alert batches and maintenance between
//! them, failed writes retried with a growing wait.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Writer, FINAL_TRIES_FOR, RETRY_FIRST};
use crate::store::sqlite::{StoreMsg, WriterConfig};

/// Runs the writer until `rx` closes, then writes what is left and returns.
///
/// Every slow step (the timed flush, alert batches, maintenance) runs while the writer
/// keeps taking messages: what arrives meanwhile is queued (up to [`HELD_MAX`]
/// readings) and applied afterwards, alert batches first, so a large transaction never
/// stalls the stream behind it.
///
/// A failed write (disk full, I/O error, a read-only file) keeps everything in memory
/// (at most [`MAX_BUFFERED`] readings; more are refused and counted) and is tried again
/// after a wait doubling from 0.5 s to 8 s. What cannot be written by the end is
/// logged and left in [`StoreStats::pending`] for the caller to report.
pub async fn run_writer(mut w: Writer, mut rx: mpsc::Receiver<StoreMsg>, cfg: WriterConfig) {
    let behind = (cfg.flush_interval * 3 + Duration::from_secs(5)).as_millis();
    w.stats
        .behind_after_ms
        .store(i64::try_from(behind).unwrap_or(i64::MAX), Ordering::Relaxed);
    w.stats
        .progress_ms
        .store(crate::model::now_ms(), Ordering::Relaxed);
    let mut flush = tokio::time::interval(cfg.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maintenance = tokio::time::interval(cfg.maintenance_interval);
    maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    maintenance.tick().await;
    let mut queue = VecDeque::new();
    let mut merge_failed = crate::logging::Throttle::new(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = std::future::ready(()), if !queue.is_empty() => {
                // What is queued now, alert batches first; what arrives meanwhile waits
                // for the next round, so the timers get their turn.
                let (alerts, rest): (VecDeque<StoreMsg>, VecDeque<StoreMsg>) =
                    queue.drain(..).partition(|m| matches!(m, StoreMsg::Alerts(_)));
                let mut had_alerts = false;
                for msg in alerts {
                    if let StoreMsg::Alerts(batch) = msg {
                        w.add_alerts(batch);
                        had_alerts = true;
                    }
                }
                if had_alerts && !w.backing_off() {
                    receiving(write_alerts_logged(&mut w), &mut rx, &mut queue).await;
                }
                for msg in rest {
                    match msg {
                        StoreMsg::Readings(r) => w.add(&r),
                        StoreMsg::Flush(done) => {
                            receiving(write_logged(&mut w), &mut rx, &mut queue).await;
                            let _ = done.send(());
                        }
                        StoreMsg::Alerts(batch) => w.add_alerts(batch),
                    }
                }
            }
            msg = rx.recv(), if queue.is_empty() => match msg {
                Some(msg) => queue.push_back(msg),
                None => break,
            },
            _ = flush.tick() => {
                if !w.backing_off() {
                    receiving(write_logged(&mut w), &mut rx, &mut queue).await;
                }
                if !w.backing_off() {
                    receiving(merge_logged(&mut w, &mut merge_failed), &mut rx, &mut queue).await;
                }
            }
            _ = maintenance.tick() => {
                if !w.backing_off() {
                    receiving(crate::store::sqlite::maintenance::maintain(&mut w, &cfg), &mut rx, &mut queue).await;
                }
            }
        }
    }
    // The stream has ended: write everything held, trying for a bounded time.
    w.force = true;
    let deadline = Instant::now() + FINAL_TRIES_FOR;
    loop {
        let r = w.write_all().await;
        if w.record(r) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(RETRY_FIRST).await;
    }
    let (readings, alert_batches) = w.unwritten();
    if readings > 0 || alert_batches > 0 {
        tracing::error!(
            readings,
            alert_batches,
            dropped_earlier = w.stats.dropped.load(Ordering::Relaxed),
            "stopping with data the database did not take: these are lost"
        );
    }
}

/// Readings the writer queues while a slow step runs, at most (~6 MB); past that the
/// input waits, as it does when the writer falls behind.
const HELD_MAX: usize = 131_072;

/// Runs `step` while taking messages from `rx` into `queue` (applied after it).
async fn receiving(
    step: impl std::future::Future<Output = ()>,
    rx: &mut mpsc::Receiver<StoreMsg>,
    queue: &mut VecDeque<StoreMsg>,
) {
    let size = |m: &StoreMsg| match m {
        StoreMsg::Readings(r) => r.len(),
        _ => 1,
    };
    let mut n: usize = queue.iter().map(size).sum();
    let mut open = true;
    tokio::pin!(step);
    loop {
        tokio::select! {
            _ = &mut step => break,
            msg = rx.recv(), if open && n < HELD_MAX => match msg {
                Some(m) => {
                    n += size(&m);
                    queue.push_back(m);
                }
                None => open = false,
            },
        }
    }
}

/// Writes alert batches, then readings, recording the outcome.
pub(in crate::store::sqlite) async fn write_logged(w: &mut Writer) {
    let r = w.write_all().await;
    w.record(r);
}

/// Merges blocks into chunks when due. A failure keeps the blocks (every query reads
/// them) and is tried again after the next flush; it is logged once a minute at most.
async fn merge_logged(w: &mut Writer, failed: &mut crate::logging::Throttle) {
    if let Err(e) = w.merge_if_due(crate::model::now_ms()).await {
        if let Some(held_back) = failed.ready() {
            tracing::warn!(error = %e, held_back, "merging blocks into chunks failed; they stay readable and are merged later");
        }
    }
}

/// Writes the queued alert batches only (readings wait for their flush).
async fn write_alerts_logged(w: &mut Writer) {
    let r = w.write_pending_alerts().await.map(|()| 0);
    w.record(r);
}
