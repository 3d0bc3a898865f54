//! What the Kafka output writes, as pure functions: a reading as normalised JSON (key =
//! series) and an alert event with the fields of `centinela alerts --json` (key = alert
//! id). The Kafka source decodes the reading form back (`value` and `ts` fields), so an
//! edge can forward into a central Kafka that another centinela consumes.

use serde::Serialize;

use crate::model::{format_ts, AlertEvent, Reading};
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

/// The alert event as a row of `alerts --json`, appended to `out`.
pub fn alert(e: &AlertEvent, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(out, &AlertRow::from_event(e));
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
        assert_eq!(v, row);
        assert_eq!(v["state"], "firing");
        assert_eq!(v["rule"], "hot");
    }
}
