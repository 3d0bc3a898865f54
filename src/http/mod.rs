//! Self-monitoring over HTTP: `/healthz` (each stage's health as JSON) and `/metrics`
//! (Prometheus text format), on a local address (`[http] listen`, loopback by default).
//!
//! It sits beside the stream and only reads it: the caller passes a `snapshot` function
//! that collects a [`Metrics`] and a [`Health`] from the stages' counters.
//!
//! - `mod.rs`: what is served ([`Metrics`], [`Health`]) and what `/healthz` decides.
//! - `render.rs`: the Prometheus text format and the `/healthz` JSON (pure).
//! - `histogram.rs`: latency histograms the stages fill (flush, alert, delivery).
//! - `process.rs`: the `process_*` figures, read from `/proc/self`.
//! - `server.rs`: axum on hyper's HTTP/1.1 server, with a request size limit, read
//!   and write timeouts and a bound on connections served at once.

pub mod histogram;
mod process;
mod render;
mod server;

use std::time::Duration;

use serde::Serialize;

pub use histogram::{Histogram, HistogramSnapshot};
pub use process::{
    disk_bytes_written, parse_proc_io_write_bytes, parse_proc_limits_max_files,
    parse_proc_stat_cpu_ticks, parse_proc_status_rss, resident_memory_bytes, Process,
};
pub use render::{escape_label, render_health, render_metrics};
pub use server::{bind, serve, serve_on, HttpError};

/// Largest request head accepted, in bytes; larger requests get 431.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request, and to read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 16;

/// The figures `/metrics` shows: a plain snapshot of the stages' counters. Counters
/// (`_total`) only grow from start; Prometheus derives rates (`rate(...[1m])`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Readings decoded from MQTT messages.
    pub readings_received: u64,
    /// Readings written to SQLite.
    pub readings_stored: u64,
    /// Messages that could not be decoded, by reason (`not_a_number`, `too_large`, …).
    pub decode_errors: Vec<(String, u64)>,
    /// Messages the broker accepted but the pipeline never received (the broker's
    /// buffer overran): published minus received.
    pub broker_lost: u64,
    /// JSON and line-protocol fields that were not numbers (strings, arrays): skipped,
    /// never an error.
    pub skipped_fields: u64,
    /// Items waiting in each bounded channel between stages.
    pub queues: Vec<QueueDepth>,
    /// The notification outbox, per channel.
    pub outbox: Vec<OutboxCounts>,
    /// The outputs' own figures ([`crate::store::Output::metrics`]), in their order.
    pub outputs: Vec<Sample>,
    /// The embedded broker's front: connections, refusals (empty with an external broker).
    pub broker: Vec<Sample>,
    /// The outputs' labelled families ([`crate::store::Output::families`]).
    pub families: Vec<Family>,
    /// Alerts currently firing, by severity (`info`, `warning`, `critical`).
    pub alerts_firing: Vec<(String, u64)>,
    /// Bytes this process caused to be written to storage (`write_bytes` of
    /// `/proc/self/io`, see [`disk_bytes_written`]): the SQLite database and its WAL are
    /// nearly all of it. `None` where the kernel does not say.
    pub disk_bytes_written: Option<u64>,
    /// Resident memory of the process, see [`resident_memory_bytes`].
    pub resident_memory_bytes: Option<u64>,
    /// CPU time, open files and start time of the process (`None` off Linux).
    pub process: Option<Process>,
    /// Latency histograms ([`histogram::all`]).
    pub histograms: Vec<HistogramSnapshot>,
    /// Time since the service started.
    pub uptime: Duration,
}

/// Depth of one bounded channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueDepth {
    /// The channel, named after the stage that reads it (`readings` for the engine, then each output: `sqlite`, `influxdb`, …).
    pub queue: String,
    pub depth: u64,
    pub capacity: u64,
}

/// Notifications of one channel in the outbox.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxCounts {
    /// `email`, `telegram`, `webhook`, `mqtt`.
    pub channel: String,
    /// Waiting for a first attempt or a retry.
    pub pending: u64,
    /// Delivered since the service started (a counter).
    pub delivered: u64,
    /// Given up on after the last retry (in the outbox now).
    pub dead: u64,
}

/// A metric family of one sample, as an output reports it: `centinela_<output>_…`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The full name; a counter's ends in `_total`.
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub value: u64,
}

/// A metric family with labels (one sample per label set), as an output reports it:
/// the Kafka source's lag per partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub samples: Vec<(Vec<(&'static str, String)>, u64)>,
}

/// The Prometheus type of a [`Sample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Sample {
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Self {
            name,
            kind: Kind::Counter,
            help,
            value,
        }
    }

    pub fn gauge(name: &'static str, help: &'static str, value: u64) -> Self {
        Self {
            name,
            kind: Kind::Gauge,
            help,
            value,
        }
    }
}

/// The health of each stage, as `/healthz` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Health {
    pub stages: Vec<StageHealth>,
}

/// One stage: whether it is alive and doing its job, and a word on why.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageHealth {
    pub name: String,
    pub ok: bool,
    /// Whether the service is down without it (the broker connection, the engine,
    /// SQLite) rather than degraded (InfluxDB, the lake, a notification channel).
    pub essential: bool,
    pub detail: String,
}

impl StageHealth {
    /// A stage the service works without, degraded, while it is down.
    pub fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok,
            essential: false,
            detail: detail.into(),
        }
    }

    /// A stage the service cannot work without.
    pub fn essential(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            essential: true,
            ..Self::new(name, ok, detail)
        }
    }
}

/// What `/healthz` says as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every stage is ok.
    Ok,
    /// The stream runs, but a stage it can do without is down (InfluxDB, a
    /// notification channel, the lake): answered 200, with the reasons.
    Degraded,
    /// An essential stage is down: answered 503.
    Down,
}

impl Health {
    /// True when every stage is ok (and vacuously when there are none).
    pub fn healthy(&self) -> bool {
        self.stages.iter().all(|s| s.ok)
    }

    pub fn verdict(&self) -> Verdict {
        if self.healthy() {
            Verdict::Ok
        } else if self.stages.iter().any(|s| s.essential && !s.ok) {
            Verdict::Down
        } else {
            Verdict::Degraded
        }
    }

    /// `name: detail` of every stage that is not ok.
    pub fn problems(&self) -> Vec<String> {
        self.stages
            .iter()
            .filter(|s| !s.ok)
            .map(|s| format!("{}: {}", s.name, s.detail))
            .collect()
    }
}
