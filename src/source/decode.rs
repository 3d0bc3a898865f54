//! Decode: MQTT topic and payload → readings. Pure: no I/O, the receive time comes in
//! as an argument.
//!
//! Accepted payloads, on `sensors/<site>/<device>/<metric>` (prefix configurable):
//! - a plain number: `21.5` (also `true`/`false` as 1/0);
//! - JSON with a value: `{"value":21.5,"ts":1700000000000,"unit":"°C"}`; `ts` is epoch
//!   milliseconds (a number below 10^11 is taken as epoch seconds) or RFC 3339, and the
//!   receive time when missing;
//! - a JSON object of several fields: `{"humidity":40.5,"co2":612}` on
//!   `sensors/lab/node7` yields `lab/node7/humidity` and `lab/node7/co2` (non-numeric
//!   fields are skipped, a `ts` field stamps them all).
//!
//! Everything else is a [`DecodeError`], whose [`DecodeError::reason`] is the label
//! the source stage counts by.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::model::{Reading, SeriesId, Timestamp};

/// Why a message gave no reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {size} bytes is larger than the limit of {max}")]
    Oversized { size: usize, max: usize },
    #[error("topic is outside the prefix {prefix:?}")]
    OutsidePrefix { prefix: String },
    #[error("payload is not valid UTF-8")]
    InvalidUtf8,
    #[error("payload {0:?} is not a number")]
    NotANumber(String),
    #[error("value {0} is not finite")]
    NotFinite(String),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("JSON object has no numeric field")]
    NoNumericFields,
    #[error("bad timestamp {0:?}: expected epoch milliseconds or RFC 3339")]
    BadTimestamp(String),
}

impl DecodeError {
    /// Every reason, in the order metrics list them.
    pub const REASONS: [&'static str; 8] = [
        "oversized",
        "outside_prefix",
        "invalid_utf8",
        "not_a_number",
        "not_finite",
        "malformed_json",
        "no_numeric_fields",
        "bad_timestamp",
    ];

    /// Short label used for counting and metrics.
    pub fn reason(&self) -> &'static str {
        Self::REASONS[self.index()]
    }

    /// Index into [`Self::REASONS`].
    pub fn index(&self) -> usize {
        match self {
            DecodeError::Oversized { .. } => 0,
            DecodeError::OutsidePrefix { .. } => 1,
            DecodeError::InvalidUtf8 => 2,
            DecodeError::NotANumber(_) => 3,
            DecodeError::NotFinite(_) => 4,
            DecodeError::MalformedJson(_) => 5,
            DecodeError::NoNumericFields => 6,
            DecodeError::BadTimestamp(_) => 7,
        }
    }
}

/// Turns messages into readings; keeps an interner so a series name is allocated once.
pub struct Decoder {
    prefix: String,
    max_payload: usize,
    names: HashMap<Box<str>, SeriesId>,
    units: HashMap<Box<str>, Arc<str>>,
}

/// Past this many distinct series the interner stops growing (a flood of random
/// topics must not eat the memory); names are then allocated per reading.
const MAX_INTERNED: usize = 200_000;

impl Decoder {
    pub fn new(prefix: &str, max_payload: usize) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
            max_payload,
            names: HashMap::new(),
            units: HashMap::new(),
        }
    }

    /// The series id of `topic`, or `None` when it is outside the prefix.
    pub fn series_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = if self.prefix.is_empty() {
            topic
        } else {
            topic
                .strip_prefix(self.prefix.as_str())?
                .strip_prefix('/')?
        };
        (!rest.is_empty() && !rest.split('/').any(str::is_empty)).then_some(rest)
    }

    /// Decodes one message, appending its readings to `out`. `now` stamps readings
    /// whose payload carries no timestamp.
    pub fn decode(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
        out: &mut Vec<Reading>,
    ) -> Result<(), DecodeError> {
        if payload.len() > self.max_payload {
            return Err(DecodeError::Oversized {
                size: payload.len(),
                max: self.max_payload,
            });
        }
        let series = self
            .series_of(topic)
            .ok_or_else(|| DecodeError::OutsidePrefix {
                prefix: self.prefix.clone(),
            })?;
        let text = std::str::from_utf8(payload)
            .map_err(|_| DecodeError::InvalidUtf8)?
            .trim();
        if text.starts_with('{') {
            return self.decode_json(series, text, now, out);
        }
        let value = parse_plain(text)?;
        let series = self.intern(series);
        out.push(Reading {
            series,
            value,
            ts: now,
            unit: None,
        });
        Ok(())
    }

    fn decode_json(
        &mut self,
        series: &str,
        text: &str,
        now: Timestamp,
        out: &mut Vec<Reading>,
    ) -> Result<(), DecodeError> {
        let obj: serde_json::Map<String, Value> =
            serde_json::from_str(text).map_err(|e| DecodeError::MalformedJson(e.to_string()))?;
        let ts = match obj.get("ts").or_else(|| obj.get("timestamp")) {
            None | Some(Value::Null) => now,
            Some(v) => parse_ts(v)?,
        };
        if let Some(v) = obj.get("value") {
            let value = json_number(v)?.ok_or_else(|| DecodeError::NotANumber(v.to_string()))?;
            let unit = match obj.get("unit") {
                Some(Value::String(u)) if !u.is_empty() => Some(self.intern_unit(u)),
                _ => None,
            };
            let series = self.intern(series);
            out.push(Reading {
                series,
                value,
                ts,
                unit,
            });
            return Ok(());
        }
        let start = out.len();
        for (field, v) in &obj {
            if matches!(field.as_str(), "ts" | "timestamp" | "unit")
                || field.is_empty()
                || field.contains(['/', '+', '#'])
            {
                continue;
            }
            match json_number(v) {
                Ok(Some(value)) => {
                    let name = format!("{series}/{field}");
                    let series = self.intern(&name);
                    out.push(Reading {
                        series,
                        value,
                        ts,
                        unit: None,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    out.truncate(start);
                    return Err(e);
                }
            }
        }
        if out.len() == start {
            return Err(DecodeError::NoNumericFields);
        }
        Ok(())
    }

    fn intern(&mut self, name: &str) -> SeriesId {
        if let Some(id) = self.names.get(name) {
            return id.clone();
        }
        let id: SeriesId = Arc::from(name);
        if self.names.len() < MAX_INTERNED {
            self.names.insert(name.into(), id.clone());
        }
        id
    }

    fn intern_unit(&mut self, unit: &str) -> Arc<str> {
        if let Some(u) = self.units.get(unit) {
            return u.clone();
        }
        let u: Arc<str> = Arc::from(unit);
        if self.units.len() < 1024 {
            self.units.insert(unit.into(), u.clone());
        }
        u
    }
}

fn parse_plain(text: &str) -> Result<f64, DecodeError> {
    match text {
        "true" => return Ok(1.0),
        "false" => return Ok(0.0),
        _ => {}
    }
    // Rust accepts "inf", "NaN" and "infinity": tell those apart from garbage.
    let v: f64 = text
        .parse()
        .map_err(|_| DecodeError::NotANumber(clip(text)))?;
    if !v.is_finite() {
        return Err(DecodeError::NotFinite(clip(text)));
    }
    Ok(v)
}

/// A JSON value as a reading value: `Ok(None)` when it is not a number at all (a
/// string label, a nested object), an error when it is a number that is not finite.
fn json_number(v: &Value) -> Result<Option<f64>, DecodeError> {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(f)),
            _ => Err(DecodeError::NotFinite(n.to_string())),
        },
        Value::Bool(b) => Ok(Some(if *b { 1.0 } else { 0.0 })),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Some(f)),
            Ok(_) => Err(DecodeError::NotFinite(clip(s))),
            Err(_) => Ok(None),
        },
        _ => Ok(None),
    }
}

/// Epoch milliseconds (or seconds when below 10^11, i.e. before 1973 in ms) or RFC 3339.
fn parse_ts(v: &Value) -> Result<Timestamp, DecodeError> {
    match v {
        Value::Number(n) => {
            let f = n
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or_else(|| DecodeError::BadTimestamp(n.to_string()))?;
            let ms = if f < 1e11 { f * 1000.0 } else { f };
            if ms > 1e15 {
                return Err(DecodeError::BadTimestamp(n.to_string()));
            }
            Ok(ms as Timestamp)
        }
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|_| DecodeError::BadTimestamp(clip(s))),
        other => Err(DecodeError::BadTimestamp(other.to_string())),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = 1_700_000_000_000;

    type Got = Vec<(String, f64, Timestamp, Option<String>)>;

    fn run(topic: &str, payload: &[u8]) -> Result<Got, &'static str> {
        let mut d = Decoder::new("sensors", 1024);
        let mut out = Vec::new();
        d.decode(topic, payload, NOW, &mut out)
            .map_err(|e| e.reason())?;
        Ok(out
            .into_iter()
            .map(|r| {
                (
                    r.series.to_string(),
                    r.value,
                    r.ts,
                    r.unit.map(|u| u.to_string()),
                )
            })
            .collect())
    }

    fn one(series: &str, value: f64, ts: Timestamp, unit: Option<&str>) -> Got {
        vec![(series.to_string(), value, ts, unit.map(str::to_string))]
    }

    #[test]
    fn good_payloads() {
        let t = "sensors/greenhouse/node1/temperature";
        let s = "greenhouse/node1/temperature";
        let cases: &[(&str, &[u8], Got)] = &[
            (t, b"21.5", one(s, 21.5, NOW, None)),
            (t, b" -3 \n", one(s, -3.0, NOW, None)),
            (t, b"1e3", one(s, 1000.0, NOW, None)),
            (t, b"true", one(s, 1.0, NOW, None)),
            (t, br#"{"value":21.5}"#, one(s, 21.5, NOW, None)),
            (
                t,
                r#"{"value":21.5,"ts":1700000001000,"unit":"°C"}"#.as_bytes(),
                one(s, 21.5, 1_700_000_001_000, Some("°C")),
            ),
            (
                t,
                br#"{"value":21.5,"ts":1700000002}"#,
                one(s, 21.5, 1_700_000_002_000, None),
            ),
            (
                t,
                br#"{"value":"22.25","ts":"2023-11-14T22:13:20.500Z"}"#,
                one(s, 22.25, 1_700_000_000_500, None),
            ),
            (
                t,
                br#"{"value":1,"ts":"2023-11-14T23:13:20+01:00"}"#,
                one(s, 1.0, 1_700_000_000_000, None),
            ),
            (t, br#"{"value":21.5,"ts":null}"#, one(s, 21.5, NOW, None)),
        ];
        for (topic, payload, want) in cases {
            assert_eq!(
                &run(topic, payload).unwrap(),
                want,
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn object_of_fields_yields_one_reading_per_field() {
        let got = run(
            "sensors/lab/node7",
            br#"{"humidity":40.5,"co2":612,"status":"ok","ts":1700000003000}"#,
        )
        .unwrap();
        let mut got: Vec<_> = got.into_iter().map(|(s, v, ts, _)| (s, v, ts)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("lab/node7/co2".to_string(), 612.0, 1_700_000_003_000),
                ("lab/node7/humidity".to_string(), 40.5, 1_700_000_003_000)
            ]
        );
    }

    #[test]
    fn bad_payloads_are_named_by_reason() {
        let t = "sensors/a/b/c";
        let big = vec![b'1'; 2000];
        let cases: &[(&str, &[u8], &str)] = &[
            (t, b"warm", "not_a_number"),
            (t, b"", "not_a_number"),
            (t, b"NaN", "not_finite"),
            (t, b"inf", "not_finite"),
            (t, b"-infinity", "not_finite"),
            (t, b"\xff\xfe21", "invalid_utf8"),
            (t, &big, "oversized"),
            ("other/a/b", b"1", "outside_prefix"),
            ("sensors", b"1", "outside_prefix"),
            ("sensors/", b"1", "outside_prefix"),
            ("sensors/a//b", b"1", "outside_prefix"),
            ("sensorsX/a", b"1", "outside_prefix"),
            (t, br#"{"value":21.5"#, "malformed_json"),
            (t, br#"{"value":"hot"}"#, "not_a_number"),
            (t, br#"{"value":1e999}"#, "malformed_json"),
            (t, br#"{"status":"ok"}"#, "no_numeric_fields"),
            (t, br#"{"value":1,"ts":"yesterday"}"#, "bad_timestamp"),
            (t, br#"{"value":1,"ts":-5}"#, "bad_timestamp"),
            (t, br#"{"a":1,"b":"NaN"}"#, "not_finite"),
        ];
        for (topic, payload, reason) in cases {
            assert_eq!(
                run(topic, payload),
                Err(*reason),
                "{topic} {}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn a_bad_field_drops_the_whole_message() {
        let mut d = Decoder::new("sensors", 1024);
        let mut out = Vec::new();
        assert!(d
            .decode("sensors/a", br#"{"x":1,"y":"inf"}"#, NOW, &mut out)
            .is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn empty_prefix_takes_the_whole_topic() {
        let mut d = Decoder::new("", 1024);
        let mut out = Vec::new();
        d.decode("home/t", b"1", NOW, &mut out).unwrap();
        assert_eq!(&*out[0].series, "home/t");
    }

    #[test]
    fn series_names_are_interned() {
        let mut d = Decoder::new("sensors", 1024);
        let mut out = Vec::new();
        d.decode("sensors/a/b", b"1", NOW, &mut out).unwrap();
        d.decode("sensors/a/b", b"2", NOW, &mut out).unwrap();
        assert!(Arc::ptr_eq(&out[0].series, &out[1].series));
    }
}
