//! SQLite as an output: the always-on store behind the [`Output`] seam. The writer
//! itself is [`super::sqlite::run_writer`]; this file only feeds it from the fan-out
//! and reports its figures.
//!
//! It is essential (alert state and the outbox live in it: the engine stops when it
//! has gone) and it waits when full, so the engine waits for it: back-pressure up to
//! the broker's buffer, as before the seam.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::sqlite::{self, StoreMsg, StoreStats, Writer, WriterConfig};
use super::{BoxFuture, Context, Output, OutputMsg, StartError};
use crate::http::StageHealth;
use crate::shutdown::Shutdown;

/// The SQLite writer, ready to start.
pub struct SqliteOutput {
    /// Taken by `start` (an output starts once).
    writer: Mutex<Option<Writer>>,
    cfg: WriterConfig,
    stats: Arc<StoreStats>,
}

impl SqliteOutput {
    pub fn new(writer: Writer, cfg: WriterConfig) -> Self {
        let stats = writer.stats.clone();
        Self {
            writer: Mutex::new(Some(writer)),
            cfg,
            stats,
        }
    }

    /// The writer's counters (readings stored, flush errors).
    pub fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }
}

impl Output for SqliteOutput {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn essential(&self) -> bool {
        true
    }

    fn start<'a>(
        &'a self,
        _ctx: &'a Context<'a>,
        mut input: mpsc::Receiver<OutputMsg>,
        shutdown: Shutdown,
    ) -> BoxFuture<'a, Result<JoinHandle<()>, StartError>> {
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        let cfg = self.cfg.clone();
        Box::pin(async move {
            let writer = writer.ok_or(StartError {
                output: "sqlite",
                message: "already started".into(),
            })?;
            // The writer takes its own messages; one slot between keeps the engine's
            // wait for it as it was.
            let (tx, rx) = mpsc::channel::<StoreMsg>(1);
            let task = tokio::spawn(sqlite::run_writer(writer, rx, cfg));
            Ok(tokio::spawn(async move {
                let _shutdown = shutdown;
                while let Some(msg) = input.recv().await {
                    let msg = match msg {
                        OutputMsg::Readings(r) => StoreMsg::Readings(r),
                        // Unshared by the time it gets here, unless another output is
                        // still holding it: then a copy (alert batches are small).
                        OutputMsg::Alerts(a) => StoreMsg::Alerts(
                            Arc::try_unwrap(a).unwrap_or_else(|a| a.as_ref().clone()),
                        ),
                    };
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
                drop(tx);
                if let Err(e) = task.await {
                    if e.is_panic() {
                        // Seen by the service's shutdown as this task's panic.
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }))
        })
    }

    fn health(&self) -> Option<StageHealth> {
        let (ok, detail) = self.stats.health(crate::model::now_ms());
        Some(StageHealth::essential("sqlite", ok, detail))
    }
}
