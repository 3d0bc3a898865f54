//! Outputs: where the stream goes after the engine.
//!
//! ```text
//!  engine stage ──OutputMsg──► Fanout ─┬─[64]──► sqlite    (always on; waits)
//!   Readings(Arc<[Reading]>)           ├─[256]─► live bus  (viewers; drops when full)
//!   Alerts(Arc<AlertBatch>)            ├─[64]──► influxdb  ([storage.influxdb]; waits)
//!                                      └─[64]──► parquet   ([output.parquet]; waits)
//! ```
//!
//! Every output implements one small trait, [`Output`]: a name; `start`, which takes
//! its input channel and the shared [`Shutdown`] token and spawns its task; its figures
//! for `/metrics` ([`Output::metrics`]), for the status line and the TUI header
//! ([`Output::status`]); its health for `/healthz` ([`Output::health`]) and a check
//! against what it writes to for `centinela doctor` ([`Output::check`]). The service
//! creates one bounded channel per output and hands the senders to the engine stage as
//! a [`Fanout`]; the loops in `/metrics`, the status line, the header and the doctor go
//! over the outputs and name none of them.
//!
//! An output's task ends when its input closes (the engine stage has stopped, after
//! the last batch), writing what it holds first: shutdown runs front to back, so an
//! output never stops while the engine may still send. It keeps its [`Shutdown`]
//! token until it returns, so the service's wait for completion includes it.
//!
//! # Adding an output
//! 1. A folder `src/store/<name>/` with `mod.rs` (the runtime and the [`Output`] impl)
//!    and `config.rs` (its `[output.<name>]` table: serde struct, defaults, `validate`).
//! 2. One registration line in this file: the `pub mod`, the field of
//!    [`OutputsConfig`] and the line in [`configured`] (they sit together below).
//!
//! Nothing else names it: SQLite is the one output the service builds itself (it holds
//! alert state and the outbox), and the live bus lives in [`crate::live`].
//!
//! # Layout
//! - [`sqlite`]: always on: readings as blocks and chunks ([`block`], [`chunk`]: the pure
//!   codecs), rollups,
//!   the series catalogue, alerts history and alert state; [`SqliteOutput`] is its seam.
//! - [`influx`]: the optional InfluxDB sink (line protocol over HTTP, durable backlog).
//! - [`parquet`]: the optional data lake (hourly Parquet files, `date=/hour=` folders).

pub mod backup;
pub mod block;
pub mod chunk;
pub mod influx;
pub mod kafka;
pub mod parquet;
pub mod sqlite;
mod sqlite_output;

use std::any::Any;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use sqlite_output::SqliteOutput;

use crate::config::{Config, Invalid};
use crate::http::{Sample, StageHealth};
use crate::model::{OutputStatus, Reading};
use crate::shutdown::Shutdown;
use sqlite::AlertBatch;

/// A boxed future, for the async methods of [`Output`] (it is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `[output.*]`: one optional table per registered output.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// `[output.kafka]`: readings and alert events to Kafka topics.
    pub kafka: Option<crate::config::KafkaOutputConfig>,
    /// `[output.parquet]`: the data lake.
    pub parquet: Option<parquet::ParquetConfig>,
}

impl OutputsConfig {
    /// Each configured table's errors, named `output.<name>.<field>`.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        if let Some(k) = &self.kafka {
            out.extend(k.validate(&[crate::config::key("output"), crate::config::key("kafka")]));
        }
        out.extend(
            self.parquet
                .iter()
                .flat_map(parquet::ParquetConfig::validate),
        );
        out
    }
}

/// The optional outputs the configuration asks for, in the order they are fed.
pub fn configured(cfg: &Config) -> Vec<Arc<dyn Output>> {
    let mut out: Vec<Arc<dyn Output>> = Vec::new();
    out.extend(influx::output(cfg));
    out.extend(kafka::output(cfg));
    out.extend(parquet::output(cfg));
    out
}

/// The output of type `T` among `outputs`, to reach its own counters.
pub fn find<T: Output>(outputs: &[Arc<dyn Output>]) -> Option<&T> {
    outputs
        .iter()
        .find_map(|o| (o.as_ref() as &dyn Any).downcast_ref::<T>())
}

/// What the engine stage hands every output.
#[derive(Debug, Clone)]
pub enum OutputMsg {
    /// A batch of readings, shared by every output (never copied).
    Readings(Arc<[Reading]>),
    /// Alert events and the engine state they leave behind, written together by SQLite;
    /// other outputs take the events, if any, and ignore the rest.
    Alerts(Arc<AlertBatch>),
}

/// What the engine does when an output's input channel is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Waits: back-pressure up to the source and the broker's buffer. For outputs that
    /// must not lose anything (they absorb bursts themselves, as InfluxDB's backlog).
    Wait,
    /// Drops the message for this output and counts it (the live bus: viewers only).
    Drop,
}

/// What an output needs from the service when it starts.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The SQLite database: outputs keep their own state files beside it.
    pub db_path: &'a Path,
}

/// Why an output could not start.
#[derive(Debug, thiserror::Error)]
#[error("{output}: {message}")]
pub struct StartError {
    pub output: &'static str,
    pub message: String,
}

/// One line of `centinela doctor`: what was checked and how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Where the output writes (a URL, a folder).
    pub target: String,
    /// What works, or what is wrong.
    pub result: Result<String, String>,
}

/// Where the stream goes after the engine: see the module docs.
pub trait Output: Any + Send + Sync {
    /// Short and fixed: the queue label in `/metrics`, the stage in `/healthz`, the
    /// name on a `doctor` line.
    fn name(&self) -> &'static str;

    /// Room in the input channel, in messages (a batch of readings is one). A full
    /// channel holds the engine up (or drops, see [`Output::when_full`]); batches grow
    /// with the load, so a few are enough.
    fn capacity(&self) -> usize {
        8
    }

    /// What happens when the input channel is full.
    fn when_full(&self) -> WhenFull {
        WhenFull::Wait
    }

    /// Whether the pipeline cannot go on without it: when its input closes, the engine
    /// stage stops too (SQLite: alert state and the outbox live there).
    fn essential(&self) -> bool {
        false
    }

    /// Opens what it needs and spawns its task, which takes `input` until it closes,
    /// writes what it still holds and returns, dropping `shutdown` last.
    fn start<'a>(
        &'a self,
        ctx: &'a Context<'a>,
        input: mpsc::Receiver<OutputMsg>,
        shutdown: Shutdown,
    ) -> BoxFuture<'a, Result<JoinHandle<()>, StartError>>;

    /// Its figures for `/metrics`.
    fn metrics(&self) -> Vec<Sample> {
        Vec::new()
    }

    /// Its labelled families for `/metrics` (one sample per label set).
    fn families(&self) -> Vec<crate::http::Family> {
        Vec::new()
    }

    /// Its figure for the status line and the TUI header, if it shows one.
    fn status(&self) -> Option<OutputStatus> {
        None
    }

    /// Its health for `/healthz`, if it reports one.
    fn health(&self) -> Option<StageHealth> {
        None
    }

    /// A real check of what it writes to, for `centinela doctor`; `None` when there is
    /// nothing to check.
    fn check(&self) -> BoxFuture<'_, Option<Check>> {
        Box::pin(async { None })
    }
}

/// One output's end of the fan-out.
struct Target {
    name: &'static str,
    tx: mpsc::Sender<OutputMsg>,
    when_full: WhenFull,
    essential: bool,
    /// Messages dropped because the channel was full (logged now and then).
    dropped: u64,
}

/// The engine stage's side of the outputs: one bounded sender per output.
pub struct Fanout {
    /// Outputs that drop when full come first, so a slow output that waits never
    /// delays them.
    targets: Vec<Target>,
}

/// One output's channel, as the service creates it: what the fan-out sends on, what
/// the output reads, and a weak sender for the queue-depth metrics.
pub struct Channel {
    pub tx: mpsc::Sender<OutputMsg>,
    pub rx: mpsc::Receiver<OutputMsg>,
}

impl Channel {
    pub fn for_output(output: &dyn Output) -> Self {
        let (tx, rx) = mpsc::channel(output.capacity().max(1));
        Self { tx, rx }
    }
}

impl Fanout {
    pub fn new() -> Self {
        Self {
            targets: Vec::new(),
        }
    }

    /// Adds `output`'s sender.
    pub fn add(&mut self, output: &dyn Output, tx: mpsc::Sender<OutputMsg>) {
        let t = Target {
            name: output.name(),
            tx,
            when_full: output.when_full(),
            essential: output.essential(),
            dropped: 0,
        };
        if t.when_full == WhenFull::Drop {
            let at = self
                .targets
                .iter()
                .take_while(|t| t.when_full == WhenFull::Drop)
                .count();
            self.targets.insert(at, t);
        } else {
            self.targets.push(t);
        }
    }

    /// Hands `msg` to every output. False when an essential output has gone (the
    /// engine stage then stops); an optional one that has gone is left out from then on.
    pub async fn send(&mut self, msg: OutputMsg) -> bool {
        let mut ok = true;
        let mut gone = Vec::new();
        for (i, t) in self.targets.iter_mut().enumerate() {
            let sent = match t.when_full {
                WhenFull::Wait => t.tx.send(msg.clone()).await.is_ok(),
                WhenFull::Drop => match t.tx.try_send(msg.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        t.dropped += 1;
                        if t.dropped.is_power_of_two() {
                            tracing::debug!(
                                output = t.name,
                                dropped = t.dropped,
                                "output behind; messages dropped"
                            );
                        }
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                },
            };
            if !sent {
                if t.essential {
                    tracing::error!(output = t.name, "output stopped; the engine stops too");
                    ok = false;
                } else {
                    tracing::error!(output = t.name, "output stopped; it gets nothing more");
                }
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            self.targets.remove(i);
        }
        ok
    }
}

impl Default for Fanout {
    fn default() -> Self {
        Self::new()
    }
}
