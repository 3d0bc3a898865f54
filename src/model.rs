//! Core types of the stream: plain data, no I/O.
//!
//! A [`Reading`] is what the source stage makes of one MQTT message (or of one
//! field of a JSON object); an [`AlertEvent`] is what the engine makes of readings
//! and of the passing of time. Both flow downstream to the stores, the notifiers
//! and the live bus.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC. Event time for readings, wall time elsewhere.
pub type Timestamp = i64;

/// A series is the topic path after the configured prefix:
/// `sensors/greenhouse/node1/temperature` → `greenhouse/node1/temperature`.
///
/// Cheap to clone: the source stage interns the names so a reading carries a pointer.
pub type SeriesId = Arc<str>;

/// A hash map for the per-reading paths (keys are series names and ids): ahash with
/// keys drawn at random per process, so names a client picks cannot be made to
/// collide, at a fraction of SipHash's cost on short strings.
pub type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// One measured value of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub series: SeriesId,
    pub value: f64,
    /// Event time: the timestamp in the payload, or the receive time when it had none.
    pub ts: Timestamp,
    pub unit: Option<Arc<str>>,
}

/// How loud an alert is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state an alert is in after an event. An alert is identified by (rule, series).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Condition off. Only seen as the state of a fresh alert, never as an event.
    Ok,
    /// Condition on, waiting for `for` to pass.
    Pending,
    /// Condition held long enough: people are told.
    Firing,
    /// Condition went away after firing.
    Resolved,
    /// Condition went away while pending, before `for` had passed: it never fired, and
    /// nobody is told.
    Cancelled,
    /// A person acknowledged a firing alert: no more repeats until it resolves.
    Acknowledged,
    /// Still firing, repeated notification (`repeat`).
    Repeat,
    /// Too many transitions in the flapping window: notifications held until stable.
    Flapping,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Ok => "ok",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
            AlertState::Cancelled => "cancelled",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Repeat => "repeat",
            AlertState::Flapping => "flapping",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => AlertState::Ok,
            "pending" => AlertState::Pending,
            "firing" => AlertState::Firing,
            "resolved" => AlertState::Resolved,
            "cancelled" => AlertState::Cancelled,
            "acknowledged" => AlertState::Acknowledged,
            "repeat" => AlertState::Repeat,
            "flapping" => AlertState::Flapping,
            _ => return None,
        })
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One transition of one alert, as stored in the alerts history and handed to the
/// notifiers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub rule: String,
    pub series: String,
    pub state: AlertState,
    pub severity: Severity,
    /// The value that caused the transition (the aggregate for window rules, the
    /// delta for rate rules); NaN-free: deadman events carry the last value seen.
    pub value: Option<f64>,
    pub unit: Option<String>,
    /// When the transition happened (event time, or the clock for deadman/repeat).
    pub ts: Timestamp,
    /// Rendered from the rule's `message` template.
    pub message: String,
    /// Channels to tell; empty when silenced, flapping or for pending.
    pub notify: Vec<String>,
}

impl AlertEvent {
    /// `rule/series`: the id people type in `/ack` and the TUI shows.
    pub fn alert_id(&self) -> String {
        format!("{}/{}", self.rule, self.series)
    }
}

/// A request from a person (Telegram bot, TUI, `centinela/control/…` topic) to the
/// engine. `by` says who, for the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Control {
    /// Acknowledge the alert `rule/series` (or every firing alert of a rule when
    /// `alert` is a rule name).
    Ack { alert: String, by: String },
    /// Hold notifications of alerts whose rule or series matches `pattern` (MQTT
    /// wildcards) until `until`.
    Silence {
        pattern: String,
        until: Timestamp,
        reason: String,
        by: String,
    },
    /// Lift the silences whose pattern is `pattern` (all when `None`).
    Unsilence { pattern: Option<String>, by: String },
}

/// What the live bus carries to viewers (the in-process TUI; remote viewers get the
/// same through `centinela/…` topics).
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// A batch of decoded readings, in arrival order.
    Readings(Arc<[Reading]>),
    /// An alert transition (also stored and notified).
    Alert(AlertEvent),
    /// Pipeline figures, about once a second.
    Status(PipelineStatus),
    /// A line for the event log: ingest errors, notification outcomes and failures.
    Log {
        ts: Timestamp,
        level: LogLevel,
        text: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

/// Health and throughput of the stages, as the header of the TUI and `/healthz` show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineStatus {
    /// "embedded 127.0.0.1:1883", "external mqtt://…", with "(down)" when lost.
    pub broker: String,
    pub broker_up: bool,
    /// "sqlite /var/lib/centinela/centinela.db".
    pub storage: String,
    pub storage_ok: bool,
    pub readings_per_s: f64,
    pub received_total: u64,
    pub stored_total: u64,
    pub decode_errors_total: u64,
    /// Undecodable messages by reason (`not_a_number`, `malformed_json`, …): only the
    /// reasons seen, in the order of `DecodeError::REASONS`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decode_errors: Vec<(String, u64)>,
    pub outbox_pending: u64,
    pub outbox_dead: u64,
    /// The optional outputs' figures (`influx backlog 17`), in their order.
    #[serde(default)]
    pub outputs: Vec<OutputStatus>,
    /// The service said it stopped (its last will, or its goodbye on a clean stop):
    /// the figures are its last ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
}

/// One output's figure in the status line and the TUI header: `influx backlog 17`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputStatus {
    /// The short name shown: `influx`, `parquet`.
    pub name: String,
    /// What `value` counts (`backlog`, `files`); left out when the header is compact.
    pub label: String,
    pub value: u64,
    /// Shown as a warning (a backlog that is not empty, a write that failed).
    pub warn: bool,
}

/// Formats a timestamp as RFC 3339 UTC with milliseconds: `2026-11-26T05:00:00.000Z`.
pub fn format_ts(ts: Timestamp) -> String {
    match chrono::DateTime::from_timestamp_millis(ts) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ts.to_string(),
    }
}

/// Wall-clock now in epoch milliseconds.
pub fn now_ms() -> Timestamp {
    chrono::Utc::now().timestamp_millis()
}

/// Whether `series` matches the MQTT-style filter `pattern` (`+` one level, `#` the rest).
pub fn topic_matches(pattern: &str, series: &str) -> bool {
    let mut p = pattern.split('/');
    let mut s = series.split('/');
    loop {
        match (p.next(), s.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_mqtt() {
        assert!(topic_matches("#", "a/b/c"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/d"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(!topic_matches("a/b/c/d", "a/b/c"));
        assert!(topic_matches("a/b", "a/b"));
    }

    #[test]
    fn timestamps_format_as_rfc3339_millis() {
        assert_eq!(format_ts(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_ts(0), "1970-01-01T00:00:00.000Z");
    }
}
