//! Kafka as an output (`[output.kafka]`): every reading as normalised JSON on
//! `readings_topic` (key = series, so a series stays in one partition and in order) and
//! every alert event on `alerts_topic` (key = alert id, the fields of `alerts --json`),
//! for other apps, Kafka Connect and data lakes. [`encode`] is the pure part; the
//! producer (librdkafka) is built only with `--features kafka`.
//!
//! Falling behind: librdkafka queues messages in memory (`QUEUE_MESSAGES` at most) and
//! retries until `message_timeout`; a message the brokers did not acknowledge by then
//! counts as failed. When that queue is full (the brokers are away or slower than the
//! stream) the output waits a moment, then drops and counts, so an unreachable Kafka
//! never holds up SQLite and the rest of the pipeline. Stopping waits at most
//! `flush_timeout` for what is in flight; what is left then counts as failed.

pub mod encode;
#[cfg(feature = "kafka")]
mod sink;

use std::sync::Arc;

use crate::config::Config;
use crate::store::Output;

#[cfg(feature = "kafka")]
pub use sink::{client_config, KafkaOutput, KafkaOutputStats};

/// The Kafka output when `[output.kafka]` is configured. (`[source.kafka]
/// alerts_topic` is written by the source itself, in its transactions.) Validation
/// refuses the section in a binary built without Kafka.
pub fn output(cfg: &Config) -> Option<Arc<dyn Output>> {
    let k = cfg.output.kafka.clone()?;
    #[cfg(feature = "kafka")]
    {
        Some(Arc::new(KafkaOutput::new(k)))
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = k;
        None
    }
}
