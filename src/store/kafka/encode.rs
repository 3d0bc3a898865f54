//! What the Kafka output writes, as pure functions: a reading as normalised JSON (key =
//! series) and an alert event with the fields of `centinela alerts --json` (key = alert
//! id), plus what a notifier needs to deliver it: the channels the engine chose
//! (`notify`, after silences and flapping) and the exact time (`ts_ms`). The Kafka
//! source decodes the reading form back (`value` and `ts` fields), so an edge can
//! forward into a central Kafka that another centinela consumes; [`decode_alert`]
//! reads the alert form back for `[notify] from_kafka`.

use serde::{Deserialize, Serialize};

use crate::model::{format_ts, AlertEvent, AlertState, Reading, Severity, Timestamp};
use crate::store::sqlite::AlertRow;

#[derive(Serialize)]
struct ReadingJson<'a> {
    series: &'a str,
    ts: String,
    value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
}

/// `{"series":"greenhouse/node1/temperature","ts":"2026-…Z","value":21.5,"unit":"°C"}`
/// (`unit` only when known), appended to `out`.
pub fn reading(r: &Reading, out: &mut Vec<u8>) {
    let j = ReadingJson {
        series: &r.series,
        ts: format_ts(r.ts),
        value: r.value,
        unit: r.unit.as_deref(),
    };
    // Serialising plain strings and a finite f64 into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &j);
}

#[derive(Serialize)]
struct AlertJson<'a> {
    #[serde(flatten)]
    row: AlertRow,
    /// Event time in epoch milliseconds: `ts` as a number, so the notification id a
    /// notifier derives is the one the raising instance would have used.
    ts_ms: Timestamp,
    /// The channels to tell; empty when silenced, flapping or pending.
    notify: &'a [String],
}

/// The alert event as a row of `alerts --json` plus `ts_ms` and `notify`, appended to
/// `out`.
pub fn alert(e: &AlertEvent, out: &mut Vec<u8>) {
    let j = AlertJson {
        row: AlertRow::from_event(e),
        ts_ms: e.ts,
        notify: &e.notify,
    };
    let _ = serde_json::to_writer(out, &j);
}

#[derive(Deserialize)]
struct AlertIn {
    rule: String,
    series: String,
    state: String,
    severity: String,
    value: Option<f64>,
    unit: Option<String>,
    ts: Option<String>,
    ts_ms: Option<Timestamp>,
    #[serde(default)]
    message: String,
    /// Missing in events written before the field existed: nothing to deliver.
    #[serde(default)]
    notify: Vec<String>,
}

/// Why a message of the alerts topic is not an alert event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlertDecodeError {
    #[error("not an alert event: {0}")]
    Json(String),
    #[error("unknown alert state {0:?}")]
    State(String),
    #[error("unknown severity {0:?}")]
    Severity(String),
    #[error("no usable time: ts_ms missing and ts {0:?} is not RFC 3339")]
    Time(Option<String>),
}

/// An alert event back from what [`alert`] wrote.
pub fn decode_alert(bytes: &[u8]) -> Result<AlertEvent, AlertDecodeError> {
    let a: AlertIn =
        serde_json::from_slice(bytes).map_err(|e| AlertDecodeError::Json(e.to_string()))?;
    let state = AlertState::parse(&a.state).ok_or(AlertDecodeError::State(a.state))?;
    let severity = Severity::parse(&a.severity).ok_or(AlertDecodeError::Severity(a.severity))?;
    let ts = match a.ts_ms {
        Some(t) => t,
        None => {
            a.ts.as_deref()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.timestamp_millis())
                .ok_or(AlertDecodeError::Time(a.ts))?
        }
    };
    Ok(AlertEvent {
        rule: a.rule,
        series: a.series,
        state,
        severity,
        value: a.value,
        unit: a.unit,
        ts,
        message: a.message,
        notify: a.notify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertState, Severity};

    #[test]
    fn a_reading_is_its_series_time_value_and_unit() {
        let mut out = Vec::new();
        let r = Reading {
            series: "gh/n1/temp".into(),
            value: 21.5,
            ts: 1_700_000_000_123,
            unit: Some("°C".into()),
        };
        reading(&r, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"series":"gh/n1/temp","ts":"2023-11-14T22:13:20.123Z","value":21.5,"unit":"°C"})
        );
        out.clear();
        reading(&Reading { unit: None, ..r }, &mut out);
        assert!(!String::from_utf8(out).unwrap().contains("unit"));
    }

    #[test]
    fn an_alert_has_the_fields_of_alerts_json() {
        let e = AlertEvent {
            rule: "hot".into(),
            series: "gh/n1/temp".into(),
            state: AlertState::Firing,
            severity: Severity::Critical,
            value: Some(40.0),
            unit: None,
            ts: 1_700_000_000_000,
            message: "too hot".into(),
            notify: vec!["email".into()],
        };
        let mut out = Vec::new();
        alert(&e, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let row = serde_json::to_value(AlertRow::from_event(&e)).unwrap();
        for (k, x) in row.as_object().unwrap() {
            assert_eq!(&v[k], x, "{k}");
        }
        assert_eq!(v["state"], "firing");
        assert_eq!(v["rule"], "hot");
        assert_eq!(v["notify"], serde_json::json!(["email"]));
        assert_eq!(v["ts_ms"], 1_700_000_000_000_i64);
        // A notifier reads back the very event, so its notification ids match.
        assert_eq!(decode_alert(&out).unwrap(), e);
    }

    #[test]
    fn alert_events_decode_from_older_and_bad_messages_say_why_not() {
        let old = br#"{"rule":"hot","series":"a/b","state":"resolved","severity":"info","value":null,"unit":null,"ts":"2023-11-14T22:13:20.123Z","message":"m"}"#;
        let e = decode_alert(old).unwrap();
        assert_eq!(e.ts, 1_700_000_000_123);
        assert_eq!(e.state, AlertState::Resolved);
        assert!(e.notify.is_empty(), "older events name no channel");
        let bad = |b: &[u8]| decode_alert(b).unwrap_err().to_string();
        assert!(
            bad(b"21.5").starts_with("not an alert event"),
            "{}",
            bad(b"21.5")
        );
        let st = br#"{"rule":"r","series":"s","state":"boiling","severity":"info","ts_ms":1}"#;
        assert_eq!(bad(st), "unknown alert state \"boiling\"");
        let ts =
            br#"{"rule":"r","series":"s","state":"firing","severity":"info","ts":"yesterday"}"#;
        assert!(bad(ts).contains("\"yesterday\""), "{}", bad(ts));
    }
}
