//! Several instances as one Kafka consumer group, the way Kafka Streams runs a
//! topology (built with `--features kafka`):
//!
//! - [`tap`]: an output that hands the consumer what the engine decided (alert events
//!   and the alert state they leave), in the engine's order, with a barrier that says
//!   "everything for the readings sent so far is in".
//! - [`changelog`]: alert state as records of a compacted topic (key = alert id, one
//!   partition per input partition), and the restore that reads a partition to its end.
//! - [`refill`]: the readings of rate and window rules, read again from the input
//!   partition (up to the committed offset) when it moves here.
//! - [`status`]: `centinela kafka status`, from the brokers' point of view.
//!
//! The consumer itself ([`crate::source::kafka`]) commits, per batch of readings, the
//! alert events, the changelog records and the consumed offsets in one transaction.

pub mod changelog;
pub mod refill;
pub mod status;
pub mod tap;
