//! The engine's decisions, back to the Kafka consumer: an [`Output`] in the fan-out
//! like any other, so it sees readings and alert batches in the order the engine sent
//! them. An empty batch of readings is the consumer's barrier (no source sends an
//! empty batch): when it arrives, every alert batch the engine made of the readings
//! sent before it has arrived too.

use std::sync::{mpsc as std_mpsc, Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::shutdown::Shutdown;
use crate::store::sqlite::AlertBatch;
use crate::store::{BoxFuture, Context, Output, OutputMsg, StartError};

/// What the tap hands the consumer.
#[derive(Debug)]
pub enum TapMsg {
    Alerts(Arc<AlertBatch>),
    /// The consumer's empty batch has gone through the engine.
    Barrier,
}

/// The tap output; [`Tap::new`] also gives the consumer's end.
pub struct Tap {
    tx: Mutex<Option<std_mpsc::Sender<TapMsg>>>,
}

impl Tap {
    pub fn new() -> (Tap, std_mpsc::Receiver<TapMsg>) {
        let (tx, rx) = std_mpsc::channel();
        (
            Tap {
                tx: Mutex::new(Some(tx)),
            },
            rx,
        )
    }
}

impl Output for Tap {
    fn name(&self) -> &'static str {
        "kafka-tap"
    }

    fn start<'a>(
        &'a self,
        _ctx: &'a Context<'a>,
        mut input: mpsc::Receiver<OutputMsg>,
        shutdown: Shutdown,
    ) -> BoxFuture<'a, Result<JoinHandle<()>, StartError>> {
        let tx = self.tx.lock().ok().and_then(|mut t| t.take());
        Box::pin(async move {
            let tx = tx.ok_or(StartError {
                output: "kafka-tap",
                message: "started twice".into(),
            })?;
            Ok(tokio::spawn(async move {
                let _shutdown = shutdown;
                while let Some(msg) = input.recv().await {
                    let m = match msg {
                        OutputMsg::Readings(r) if r.is_empty() => TapMsg::Barrier,
                        OutputMsg::Readings(_) => continue,
                        OutputMsg::Alerts(a) => TapMsg::Alerts(a),
                    };
                    // The consumer has stopped: nothing is waiting for this any more.
                    let _ = tx.send(m);
                }
            }))
        })
    }
}
