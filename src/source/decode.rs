//! Decode: MQTT topic and payload → readings. Pure: no I/O, the receive time comes in
//! as an argument.
//!
//! A topic is read by the first `[[ingest.map]]` mapping whose filter matches it (see
//! [`super::map`]); otherwise by the prefix. Accepted payloads under the prefix
//! (`sensors/<site>/<device>/<metric>` by default):
//! - a plain number: `21.5` (also `true`/`false` and `ON`/`OFF` as 1/0);
//! - JSON with a value: `{"value":21.5,"ts":1700000000000,"unit":"°C"}`; `ts` is epoch
//!   milliseconds (a number below 10^11 is taken as epoch seconds) or RFC 3339, and the
//!   receive time when missing;
//! - a JSON object of several fields: `{"humidity":40.5,"co2":612}` on
//!   `sensors/lab/node7` yields `lab/node7/humidity` and `lab/node7/co2` (non-numeric
//!   fields are skipped, a `ts` field stamps them all).
//!
//! Through a mapping: plain values, JSON flattened to one reading per numeric leaf
//! (booleans 1/0; strings, arrays and nulls are skipped fields, counted, never
//! errors), or InfluxDB line protocol ([`super::line`]), one reading per field.
//!
//! A message that gives nothing is a [`DecodeError`], whose [`DecodeError::reason`] is
//! the label the source stage counts by. A message may also give some readings and
//! refuse others — a series name that is not valid ([`super::name`]), a timestamp
//! outside the accepted window, a retained message that is not newer than what is
//! known: those are listed in [`Decoder::refused`] after each call.

use std::cell::Cell;
use std::sync::Arc;

use serde_json::Value;

use super::line::{self, FieldValue};
use super::map::{self, Captures, Leaf, Mapping};
use super::name::{check_series, check_unit, printable, NameProblem, UnitProblem};
use crate::config::{MapConfig, MapFormat};
use crate::model::{Reading, SeriesId, Timestamp};

/// Why a message, or one reading of it, gave no reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {size} bytes is larger than the limit of {max}")]
    Oversized { size: usize, max: usize },
    #[error("topic is outside the prefix {prefix:?} and no ingest.map matches it")]
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
    #[error("series {series:?} {}: reading refused", problem.describe())]
    InvalidSeries {
        problem: NameProblem,
        series: String,
    },
    #[error("unit of {series:?} {}: stored without it", match problem { UnitProblem::ControlChar => "contains a control character", UnitProblem::TooLong => "is longer than 32 bytes" })]
    BadUnit {
        problem: UnitProblem,
        series: String,
    },
    #[error("timestamp {ts} of {series:?} is too far in the future (ingest.max_clock_skew; is the device's clock wrong?): reading refused")]
    FutureTimestamp { series: String, ts: String },
    #[error("timestamp {ts} of {series:?} is older than the retention: reading refused")]
    TooOld { series: String, ts: String },
    #[error("retained message for {series:?} carries no timestamp of its own: not stored again with the receive time")]
    RetainedWithoutTs { series: String },
    #[error("retained reading of {series:?} at {ts} is not newer than the last one known: not stored again")]
    RetainedNotNewer { series: String, ts: String },
    #[error("line protocol: {0}")]
    BadLineProtocol(String),
    #[error("new series {series:?} refused: {max} series are known already (ingest.max_series)")]
    TooManySeries { series: String, max: usize },
}

impl DecodeError {
    /// Every reason, in the order metrics list them.
    pub const REASONS: [&'static str; 21] = [
        "oversized",
        "outside_prefix",
        "invalid_utf8",
        "not_a_number",
        "not_finite",
        "malformed_json",
        "no_numeric_fields",
        "bad_timestamp",
        "series_wildcard",
        "series_nul",
        "series_control_char",
        "series_empty_level",
        "series_too_long",
        "unit_control_char",
        "unit_too_long",
        "future_timestamp",
        "too_old",
        "retained_without_ts",
        "retained_not_newer",
        "bad_line_protocol",
        "too_many_series",
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
            DecodeError::InvalidSeries { problem, .. } => match problem {
                NameProblem::Wildcard => 8,
                NameProblem::Nul => 9,
                NameProblem::ControlChar => 10,
                NameProblem::EmptyLevel => 11,
                NameProblem::TooLong => 12,
            },
            DecodeError::BadUnit { problem, .. } => match problem {
                UnitProblem::ControlChar => 13,
                UnitProblem::TooLong => 14,
            },
            DecodeError::FutureTimestamp { .. } => 15,
            DecodeError::TooOld { .. } => 16,
            DecodeError::RetainedWithoutTs { .. } => 17,
            DecodeError::RetainedNotNewer { .. } => 18,
            DecodeError::BadLineProtocol(_) => 19,
            DecodeError::TooManySeries { .. } => 20,
        }
    }
}

/// The window a reading's own timestamp must fall in, relative to the receive time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// At most this many ms after the receive time (`ingest.max_clock_skew`).
    pub max_future_ms: Option<i64>,
    /// At most this many ms before it (`storage.sqlite.retention`).
    pub max_past_ms: Option<i64>,
    /// At most this many distinct series (`ingest.max_series`): readings of a new
    /// series past it are refused, so a flood of new names cannot exhaust memory.
    pub max_series: Option<usize>,
}

/// An interned series and the newest timestamp known for it.
struct Known {
    id: SeriesId,
    last: Cell<Timestamp>,
}

/// Turns messages into readings; keeps an interner so a series name is allocated once,
/// and the newest timestamp of each series (so a retained message can be told apart
/// from news).
pub struct Decoder {
    prefix: String,
    max_payload: usize,
    maps: Vec<Mapping>,
    limits: Limits,
    names: crate::model::FastMap<Box<str>, Known>,
    units: crate::model::FastMap<Box<str>, Arc<str>>,
    refused: Vec<DecodeError>,
    skipped: usize,
    caps: Captures,
    path: String,
}

/// Past this many distinct series the interner stops growing (a flood of random
/// topics must not eat the memory); names are then allocated per reading.
const MAX_INTERNED: usize = 200_000;

/// How a reading is stamped and where it came from, for the checks of [`Decoder::emit`].
#[derive(Clone, Copy)]
struct Stamp {
    ts: Timestamp,
    /// The payload carried the timestamp (rather than the receive time).
    own: bool,
    now: Timestamp,
    retained: bool,
}

impl Decoder {
    /// A decoder for the prefix only, with no time window: what a viewer needs.
    pub fn new(prefix: &str, max_payload: usize) -> Self {
        Self::with_mappings(prefix, max_payload, &[], Limits::default())
    }

    /// A decoder with `[[ingest.map]]` mappings (validated) and a time window.
    pub fn with_mappings(
        prefix: &str,
        max_payload: usize,
        maps: &[MapConfig],
        limits: Limits,
    ) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
            max_payload,
            maps: maps.iter().map(Mapping::from_config).collect(),
            limits,
            names: Default::default(),
            units: Default::default(),
            refused: Vec::new(),
            skipped: 0,
            caps: Captures::default(),
            path: String::new(),
        }
    }

    /// Tells the decoder the newest stored timestamp of a series (at start-up, from
    /// the store): a retained message for it must be newer to be kept.
    pub fn remember(&mut self, series: &str, ts: Timestamp) {
        if check_series(series).is_err() {
            return;
        }
        match self.names.get(series) {
            Some(k) => k.last.set(k.last.get().max(ts)),
            None if self.names.len() < MAX_INTERNED => {
                self.names.insert(
                    series.into(),
                    Known {
                        id: Arc::from(series),
                        last: Cell::new(ts),
                    },
                );
            }
            None => {}
        }
    }

    /// Readings of the last decoded message that were refused, with why.
    pub fn refused(&self) -> &[DecodeError] {
        &self.refused
    }

    /// Fields of the last decoded message that were not numbers (strings, arrays).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The series id of `topic` under the prefix, or `None` when it is outside it.
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

    /// Decodes one live message, appending its readings to `out`. `now` stamps readings
    /// whose payload carries no timestamp.
    pub fn decode(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
        out: &mut Vec<Reading>,
    ) -> Result<(), DecodeError> {
        self.decode_message(topic, payload, false, now, out)
    }

    /// Decodes one message; `retained` when the broker delivered it from its store at
    /// subscribe time (rather than as it was published). Such a message is kept only
    /// when it carries its own timestamp, newer than the newest known for its series.
    pub fn decode_message(
        &mut self,
        topic: &str,
        payload: &[u8],
        retained: bool,
        now: Timestamp,
        out: &mut Vec<Reading>,
    ) -> Result<(), DecodeError> {
        self.refused.clear();
        self.skipped = 0;
        if payload.len() > self.max_payload {
            return Err(DecodeError::Oversized {
                size: payload.len(),
                max: self.max_payload,
            });
        }
        // Taken out for the call so the decoder can be borrowed mutably beside them.
        let mut caps = std::mem::take(&mut self.caps);
        let maps = std::mem::take(&mut self.maps);
        let result = match maps.iter().find(|m| m.filter.matches(topic, &mut caps)) {
            Some(m) => {
                let mut path = std::mem::take(&mut self.path);
                path.clear();
                m.series.render(topic, &caps, &mut path);
                let r = std::str::from_utf8(payload)
                    .map_err(|_| DecodeError::InvalidUtf8)
                    .and_then(|text| {
                        self.decode_mapped(m, text.trim(), &mut path, now, retained, out)
                    });
                self.path = path;
                r
            }
            None => self.decode_prefixed(topic, payload, now, retained, out),
        };
        self.maps = maps;
        self.caps = caps;
        result
    }

    fn decode_prefixed(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
        retained: bool,
        out: &mut Vec<Reading>,
    ) -> Result<(), DecodeError> {
        let series = self
            .series_of(topic)
            .ok_or_else(|| DecodeError::OutsidePrefix {
                prefix: self.prefix.clone(),
            })?;
        let text = std::str::from_utf8(payload)
            .map_err(|_| DecodeError::InvalidUtf8)?
            .trim();
        if text.starts_with('{') {
            return self.decode_json(series, text, now, retained, out);
        }
        let value = parse_plain(text)?;
        let stamp = Stamp {
            ts: now,
            own: false,
            now,
            retained,
        };
        self.emit(series, value, stamp, None, out);
        Ok(())
    }

    fn decode_json(
        &mut self,
        series: &str,
        text: &str,
        now: Timestamp,
        retained: bool,
        out: &mut Vec<Reading>,
    ) -> Result<(), DecodeError> {
        let obj: serde_json::Map<String, Value> =
            serde_json::from_str(text).map_err(|e| DecodeError::MalformedJson(e.to_string()))?;
        let (ts, own) = match obj.get("ts").or_else(|| obj.get("timestamp")) {
            None | Some(Value::Null) => (now, false),
            Some(v) => (parse_ts(v)?, true),
        };
        let stamp = Stamp {
            ts,
            own,
            now,
            retained,
        };
        if let Some(v) = obj.get("value") {
            let value = json_number(v)?.ok_or_else(|| DecodeError::NotANumber(v.to_string()))?;
            let unit = match obj.get("unit") {
                Some(Value::String(u)) if !u.is_empty() => match check_unit(u) {
                    Ok(()) => Some(self.intern_unit(u)),
                    Err(problem) => {
                        self.refused.push(DecodeError::BadUnit {
                            problem,
                            series: printable(series),
                        });
                        None
                    }
                },
                _ => None,
            };
            self.emit(series, value, stamp, unit, out);
            return Ok(());
        }
        let start = out.len();
        let mut name = String::with_capacity(series.len() + 16);
        for (field, v) in &obj {
            if matches!(field.as_str(), "ts" | "timestamp" | "unit") {
                continue;
            }
            match json_number(v) {
                Ok(Some(value)) => {
                    name.clear();
                    name.push_str(series);
                    name.push('/');
                    name.push_str(field);
                    self.emit(&name, value, stamp, None, out);
                }
                Ok(None) => {}
                Err(e) => {
                    out.truncate(start);
                    self.refused.clear();
                    return Err(e);
                }
            }
        }
        if out.len() == start && self.refused.is_empty() {
            return Err(DecodeError::NoNumericFields);
        }
        Ok(())
    }

    /// A message through a mapping; `path` holds the rendered series and is where
    /// field levels are appended.
    fn decode_mapped(
        &mut self,
        m: &Mapping,
        text: &str,
        path: &mut String,
        now: Timestamp,
        retained: bool,
        out: &mut Vec<Reading>,
    ) -> Result<(), DecodeError> {
        let plain = Stamp {
            ts: now,
            own: false,
            now,
            retained,
        };
        let format = match m.format {
            MapFormat::Auto if text.starts_with('{') => MapFormat::Json,
            MapFormat::Auto => match parse_plain(text) {
                Ok(v) => {
                    self.emit(path, v, plain, m.unit.clone(), out);
                    return Ok(());
                }
                Err(_) if line::looks_like(text) => MapFormat::Influx,
                Err(e) => return Err(e),
            },
            f => f,
        };
        match format {
            MapFormat::Number | MapFormat::Auto => {
                let v = parse_plain(text)?;
                self.emit(path, v, plain, m.unit.clone(), out);
                Ok(())
            }
            MapFormat::Json => {
                let v: Value = serde_json::from_str(text)
                    .map_err(|e| DecodeError::MalformedJson(e.to_string()))?;
                let stamp = match m.ts.as_deref().and_then(|p| map::get(&v, p)) {
                    None | Some(Value::Null) => plain,
                    Some(t) => Stamp {
                        ts: parse_ts(t)?,
                        own: true,
                        ..plain
                    },
                };
                match &v {
                    Value::Object(_) => {}
                    Value::Number(_) | Value::Bool(_) => {}
                    other => return Err(DecodeError::NotANumber(clip(&other.to_string()))),
                }
                let mut emit = |name: &str, l: Leaf| match l {
                    Leaf::Number(x) => self.emit(name, x, stamp, m.unit.clone(), out),
                    Leaf::Skipped => self.skipped += 1,
                };
                if m.fields.is_empty() {
                    map::flatten(&v, path, m.ts.as_deref(), &mut emit);
                } else {
                    map::pick(&v, &m.fields, &m.field_suffixes, path, &mut emit);
                }
                Ok(())
            }
            MapFormat::Influx => {
                let points =
                    line::parse(text).map_err(|e| DecodeError::BadLineProtocol(e.to_string()))?;
                let base = path.len();
                for p in &points {
                    let stamp = match p.ts_ns {
                        Some(ns) => Stamp {
                            ts: ns.div_euclid(1_000_000),
                            own: true,
                            ..plain
                        },
                        None => plain,
                    };
                    for (field, value) in &p.fields {
                        if !m.fields.is_empty()
                            && !m
                                .fields
                                .iter()
                                .any(|f| f.len() == 2 && f[0] == p.measurement && f[1] == *field)
                        {
                            continue;
                        }
                        match value {
                            FieldValue::Number(x) => {
                                path.truncate(base);
                                path.push('/');
                                path.push_str(&p.measurement);
                                path.push('/');
                                path.push_str(field);
                                self.emit(path, *x, stamp, m.unit.clone(), out);
                            }
                            FieldValue::Text => self.skipped += 1,
                        }
                    }
                }
                path.truncate(base);
                Ok(())
            }
        }
    }

    /// Checks one reading and appends it to `out`, or lists why not in `refused`.
    fn emit(
        &mut self,
        name: &str,
        value: f64,
        stamp: Stamp,
        unit: Option<Arc<str>>,
        out: &mut Vec<Reading>,
    ) {
        if let Err(problem) = check_series(name) {
            self.refused.push(DecodeError::InvalidSeries {
                problem,
                series: printable(name),
            });
            return;
        }
        let ts = stamp.ts;
        if self
            .limits
            .max_future_ms
            .is_some_and(|f| ts > stamp.now.saturating_add(f))
        {
            self.refused.push(DecodeError::FutureTimestamp {
                series: name.to_string(),
                ts: show_ts(ts),
            });
            return;
        }
        if self
            .limits
            .max_past_ms
            .is_some_and(|p| ts < stamp.now.saturating_sub(p))
        {
            self.refused.push(DecodeError::TooOld {
                series: name.to_string(),
                ts: show_ts(ts),
            });
            return;
        }
        // A retained message is news only with its own timestamp, newer than the last.
        let verdict = |last: Timestamp| match (stamp.retained, stamp.own) {
            (false, _) => None,
            (true, false) => Some(DecodeError::RetainedWithoutTs {
                series: name.to_string(),
            }),
            (true, true) if ts <= last => Some(DecodeError::RetainedNotNewer {
                series: name.to_string(),
                ts: show_ts(ts),
            }),
            (true, true) => None,
        };
        let (series, problem) = match self.names.get(name) {
            Some(k) => {
                let problem = verdict(k.last.get());
                if problem.is_none() && ts > k.last.get() {
                    k.last.set(ts);
                }
                (k.id.clone(), problem)
            }
            None => {
                if let Some(max) = self.limits.max_series.filter(|m| self.names.len() >= *m) {
                    self.refused.push(DecodeError::TooManySeries {
                        series: name.to_string(),
                        max,
                    });
                    return;
                }
                let id: SeriesId = Arc::from(name);
                let problem = verdict(Timestamp::MIN);
                if self.names.len() < MAX_INTERNED {
                    let last = if problem.is_none() {
                        ts
                    } else {
                        Timestamp::MIN
                    };
                    self.names.insert(
                        name.into(),
                        Known {
                            id: id.clone(),
                            last: Cell::new(last),
                        },
                    );
                }
                (id, problem)
            }
        };
        if let Some(p) = problem {
            self.refused.push(p);
            return;
        }
        out.push(Reading {
            series,
            value,
            ts,
            unit,
        });
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

fn show_ts(ts: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(ts).map_or_else(
        || ts.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

fn parse_plain(text: &str) -> Result<f64, DecodeError> {
    match text {
        "true" => return Ok(1.0),
        "false" => return Ok(0.0),
        t if t.eq_ignore_ascii_case("on") => return Ok(1.0),
        t if t.eq_ignore_ascii_case("off") => return Ok(0.0),
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

/// Epoch milliseconds (or seconds when below 10^11, i.e. before 1973 in ms) or RFC 3339
/// (a date and time without an offset is taken as UTC).
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
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .map(|t| t.and_utc().timestamp_millis())
            })
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

    fn mapping(filter: &str, series: &str, format: MapFormat) -> MapConfig {
        MapConfig {
            filter: filter.into(),
            series: series.into(),
            format,
            fields: vec![],
            ts: None,
            unit: None,
        }
    }

    const DAY: i64 = 86_400_000;

    fn limits() -> Limits {
        Limits {
            max_future_ms: Some(300_000),
            max_past_ms: Some(30 * DAY),
            max_series: None,
        }
    }

    /// (readings as (series, value, ts), refused reasons, skipped fields)
    type Mapped = (Vec<(String, f64, Timestamp)>, Vec<&'static str>, usize);

    fn mapped(maps: &[MapConfig], topic: &str, payload: &str) -> Result<Mapped, &'static str> {
        let mut d = Decoder::with_mappings("sensors", 64 * 1024, maps, limits());
        let mut out = Vec::new();
        d.decode(topic, payload.as_bytes(), NOW, &mut out)
            .map_err(|e| e.reason())?;
        Ok((
            out.into_iter()
                .map(|r| (r.series.to_string(), r.value, r.ts))
                .collect(),
            d.refused().iter().map(DecodeError::reason).collect(),
            d.skipped(),
        ))
    }

    fn r(s: &str, v: f64) -> (String, f64, Timestamp) {
        (s.to_string(), v, NOW)
    }

    #[test]
    fn device_payloads_through_mappings() {
        let z2m = mapping("zigbee2mqtt/+", "zigbee/{1}", MapFormat::Auto);
        let mut tasmota = mapping("tele/+/SENSOR", "tasmota/{1}", MapFormat::Json);
        tasmota.ts = Some("Time".into());
        let mut shelly = mapping("+/status/switch:0", "shelly/{1}", MapFormat::Auto);
        shelly.fields = vec![
            "apower".into(),
            "voltage".into(),
            "aenergy.total".into(),
            "temperature.tC".into(),
        ];
        let mut esphome = mapping("+/sensor/+/state", "esphome/{1}/{2}", MapFormat::Number);
        esphome.unit = Some("°C".into());
        let ha = mapping("homeassistant/+/+/state", "ha/{1}/{2}", MapFormat::Auto);
        let telegraf = mapping("telegraf/+/#", "telegraf/{1}", MapFormat::Auto);
        let maps = [z2m, tasmota, shelly, esphome, ha, telegraf];
        let t = "2023-11-14T22:10:00";
        let cases: Vec<(&str, String, Mapped)> = vec![
            (
                "zigbee2mqtt/living_room",
                r#"{"battery":100,"humidity":58.3,"linkquality":65,"temperature":21.7,"voltage":3000,"contact":false,"update":{"state":"idle"}}"#.into(),
                (
                    vec![
                        r("zigbee/living_room/battery", 100.0),
                        r("zigbee/living_room/contact", 0.0),
                        r("zigbee/living_room/humidity", 58.3),
                        r("zigbee/living_room/linkquality", 65.0),
                        r("zigbee/living_room/temperature", 21.7),
                        r("zigbee/living_room/voltage", 3000.0),
                    ],
                    vec![],
                    1,
                ),
            ),
            (
                "tele/kitchen/SENSOR",
                format!(r#"{{"Time":"{t}","AM2301":{{"Temperature":22.3,"Humidity":40.1}},"TempUnit":"C"}}"#),
                (
                    vec![
                        ("tasmota/kitchen/AM2301/Humidity".into(), 40.1, NOW - 200_000),
                        ("tasmota/kitchen/AM2301/Temperature".into(), 22.3, NOW - 200_000),
                    ],
                    vec![],
                    1,
                ),
            ),
            (
                "shellyplus1pm-441793d69718/status/switch:0",
                r#"{"id":0,"source":"init","output":true,"apower":8.9,"voltage":237.5,"current":0.04,"aenergy":{"total":6.532,"by_minute":[45.9,47.1,45.9],"minute_ts":1654511700},"temperature":{"tC":23.5,"tF":74.4}}"#.into(),
                (
                    vec![
                        r("shelly/shellyplus1pm-441793d69718/apower", 8.9),
                        r("shelly/shellyplus1pm-441793d69718/voltage", 237.5),
                        r("shelly/shellyplus1pm-441793d69718/aenergy/total", 6.532),
                        r("shelly/shellyplus1pm-441793d69718/temperature/tC", 23.5),
                    ],
                    vec![],
                    0,
                ),
            ),
            (
                "livingroom/sensor/temperature/state",
                "21.4".into(),
                (vec![r("esphome/livingroom/temperature", 21.4)], vec![], 0),
            ),
            ("homeassistant/light/porch/state", "on".into(), (vec![r("ha/light/porch", 1.0)], vec![], 0)),
            ("homeassistant/switch/pump/state", "OFF".into(), (vec![r("ha/switch/pump", 0.0)], vec![], 0)),
            (
                "telegraf/host1/cpu",
                "cpu,cpu=cpu-total,host=host1 usage_idle=97.5,usage_user=1.2 1699999990000000000\nmem,host=host1 used=5i,used_human=\"5 B\" 1699999990000000000".into(),
                (
                    vec![
                        ("telegraf/host1/cpu/usage_idle".into(), 97.5, NOW - 10_000),
                        ("telegraf/host1/cpu/usage_user".into(), 1.2, NOW - 10_000),
                        ("telegraf/host1/mem/used".into(), 5.0, NOW - 10_000),
                    ],
                    vec![],
                    1,
                ),
            ),
            // Not mapped: the prefix still reads it as before.
            ("sensors/a/b", "1".into(), (vec![r("a/b", 1.0)], vec![], 0)),
        ];
        for (topic, payload, want) in cases {
            assert_eq!(
                mapped(&maps, topic, &payload),
                Ok(want),
                "{topic} {payload}"
            );
        }
        let mut d = Decoder::with_mappings("sensors", 1024, &maps, limits());
        let mut out = Vec::new();
        d.decode(
            "livingroom/sensor/temperature/state",
            b"21.4",
            NOW,
            &mut out,
        )
        .unwrap();
        assert_eq!(out[0].unit.as_deref(), Some("°C"));
    }

    #[test]
    fn the_first_matching_mapping_decides() {
        let maps = [
            mapping("home/+/power", "power/{1}", MapFormat::Number),
            mapping("home/#", "home/{#}", MapFormat::Number),
        ];
        assert_eq!(
            mapped(&maps, "home/k/power", "5").unwrap().0,
            vec![r("power/k", 5.0)]
        );
        assert_eq!(
            mapped(&maps, "home/k/other", "6").unwrap().0,
            vec![r("home/k/other", 6.0)]
        );
        assert_eq!(mapped(&maps, "elsewhere", "6"), Err("outside_prefix"));
    }

    #[test]
    fn mapped_payloads_that_give_nothing_or_are_bad() {
        let auto = [mapping("d/+", "d/{1}", MapFormat::Auto)];
        let json = [mapping("d/+", "d/{1}", MapFormat::Json)];
        let influx = [mapping("d/+", "d/{1}", MapFormat::Influx)];
        let number = [mapping("d/+", "d/{1}", MapFormat::Number)];
        // Only strings: nothing to read, counted as skipped, not an error.
        assert_eq!(
            mapped(&auto, "d/button", r#"{"action":"single","list":[1,2]}"#),
            Ok((vec![], vec![], 2))
        );
        assert_eq!(mapped(&auto, "d/x", "idle"), Err("not_a_number"));
        assert_eq!(mapped(&auto, "d/x", "{\"a\":"), Err("malformed_json"));
        assert_eq!(mapped(&auto, "d/x", "cpu v=abc"), Err("bad_line_protocol"));
        assert_eq!(mapped(&json, "d/x", "[1,2]"), Err("not_a_number"));
        assert_eq!(
            mapped(&json, "d/x", "7"),
            Ok((vec![r("d/x", 7.0)], vec![], 0))
        );
        assert_eq!(mapped(&influx, "d/x", "21.5"), Err("bad_line_protocol"));
        assert_eq!(mapped(&number, "d/x", "{\"a\":1}"), Err("not_a_number"));
        assert_eq!(mapped(&number, "d/x", "NaN"), Err("not_finite"));
        let mut ts = mapping("d/+", "d/{1}", MapFormat::Json);
        ts.ts = Some("meta.ts".into());
        assert_eq!(
            mapped(&[ts.clone()], "d/x", r#"{"v":1,"meta":{"ts":"soon"}}"#),
            Err("bad_timestamp")
        );
        assert_eq!(
            mapped(&[ts], "d/x", r#"{"v":1,"meta":{"ts":1699999999000}}"#),
            Ok((vec![("d/x/v".into(), 1.0, NOW - 1000)], vec![], 0))
        );
    }

    #[test]
    fn bad_series_names_are_refused_one_by_one() {
        let maps = [mapping("z/+", "z/{1}", MapFormat::Json)];
        let (got, refused, _) = mapped(
            &maps,
            "z/dev",
            "{\"ok\":1,\"a+b\":2,\"c#\":3,\"\":4,\"nul\\u0000\":5,\"esc\\u001b[2J\":6}",
        )
        .unwrap();
        assert_eq!(got, vec![r("z/dev/ok", 1.0)]);
        let mut refused = refused;
        refused.sort_unstable();
        assert_eq!(
            refused,
            vec![
                "series_control_char",
                "series_empty_level",
                "series_nul",
                "series_wildcard",
                "series_wildcard"
            ]
        );
        let long = format!("{{\"{}\":1}}", "k".repeat(300));
        assert_eq!(
            mapped(&maps, "z/dev", &long).unwrap().1,
            vec!["series_too_long"]
        );
        // The prefix path checks its names the same way.
        let (got, refused, _) = mapped(&[], "sensors/a/b\u{7}", "1").unwrap();
        assert!(got.is_empty());
        assert_eq!(refused, vec!["series_control_char"]);
    }

    #[test]
    fn bad_units_are_dropped_and_counted() {
        let mut d = Decoder::new("sensors", 64 * 1024);
        let mut out = Vec::new();
        let long = format!(r#"{{"value":1,"unit":"{}"}}"#, "x".repeat(10_000));
        d.decode("sensors/a/b", long.as_bytes(), NOW, &mut out)
            .unwrap();
        assert_eq!(d.refused()[0].reason(), "unit_too_long");
        d.decode(
            "sensors/a/b",
            br#"{"value":2,"unit":"\u001b[31m"}"#,
            NOW,
            &mut out,
        )
        .unwrap();
        assert_eq!(d.refused()[0].reason(), "unit_control_char");
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|r| r.unit.is_none()));
    }

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                r#"{"value":20,"ts":"3000-01-01T00:00:00Z"}"#,
                Some("future_timestamp"),
            ),
            (
                r#"{"value":20,"ts":1700000301000}"#,
                Some("future_timestamp"),
            ),
            (r#"{"value":20,"ts":1700000299000}"#, None),
            (r#"{"value":20,"ts":0}"#, Some("too_old")),
            (
                r#"{"value":20,"ts":"0001-01-01T00:00:00Z"}"#,
                Some("too_old"),
            ),
            (
                r#"{"value":20,"ts":"1970-01-01T00:00:00Z"}"#,
                Some("too_old"),
            ),
            (r#"{"value":20,"ts":1697000000000}"#, Some("too_old")),
            (r#"{"value":20,"ts":1698000000000}"#, None),
            (
                r#"{"a":1,"b":2,"ts":"3000-01-01T00:00:00Z"}"#,
                Some("future_timestamp"),
            ),
        ];
        for (payload, want) in cases {
            let (got, refused, _) = mapped(&[], "sensors/a/b", payload).unwrap();
            match want {
                Some(reason) => {
                    assert!(got.is_empty(), "{payload}");
                    assert!(
                        !refused.is_empty() && refused.iter().all(|r| r == reason),
                        "{payload}: {refused:?}"
                    );
                }
                None => assert_eq!((got.len(), refused.len()), (1, 0), "{payload}"),
            }
        }
        let influx = [mapping("t/+", "t/{1}", MapFormat::Influx)];
        let (got, refused, _) =
            mapped(&influx, "t/h", "cpu v=1 32503680000000000000").unwrap_or_default();
        assert!(
            got.is_empty() && refused.is_empty(),
            "a timestamp past i64 ns is a parse error"
        );
        let (got, refused, _) = mapped(&influx, "t/h", "cpu v=1 7258118400000000000").unwrap();
        assert_eq!((got.len(), refused), (0, vec!["future_timestamp"]));
        // Without limits (a viewer) nothing is refused.
        let (got, _) = (run("sensors/a", br#"{"value":1,"ts":0}"#).unwrap(), ());
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn new_series_past_max_series_are_refused_and_known_ones_go_on() {
        let cap = Limits {
            max_series: Some(3),
            ..limits()
        };
        let mut d = Decoder::with_mappings("sensors", 1024, &[], cap);
        d.remember("stored/one", NOW - 60_000);
        let mut out = Vec::new();
        let mut go = |d: &mut Decoder, topic: &str| {
            out.clear();
            d.decode_message(topic, b"1", false, NOW, &mut out).unwrap();
            let refused: Vec<String> = d.refused().iter().map(|e| e.to_string()).collect();
            (out.len(), refused)
        };
        assert_eq!(go(&mut d, "sensors/a"), (1, vec![]));
        assert_eq!(go(&mut d, "sensors/b"), (1, vec![]));
        // The stored series counted: the fourth name is one too many.
        assert_eq!(
            go(&mut d, "sensors/c"),
            (
                0,
                vec![
                    r#"new series "c" refused: 3 series are known already (ingest.max_series)"#
                        .to_string()
                ]
            )
        );
        assert_eq!(d.refused()[0].reason(), "too_many_series");
        // Series already known are read as before, the stored one included.
        assert_eq!(go(&mut d, "sensors/a"), (1, vec![]));
        assert_eq!(go(&mut d, "sensors/stored/one"), (1, vec![]));
    }

    #[test]
    fn retained_messages_are_kept_only_when_newer_than_what_is_known() {
        let maps = [mapping("z/+", "z/{1}", MapFormat::Json)];
        let mut d = Decoder::with_mappings("sensors", 1024, &maps, limits());
        d.remember("a/b", NOW - 60_000);
        let mut out = Vec::new();
        let mut go = |d: &mut Decoder, topic: &str, p: &str, retained: bool| {
            out.clear();
            d.decode_message(topic, p.as_bytes(), retained, NOW, &mut out)
                .unwrap();
            (
                out.len(),
                d.refused()
                    .iter()
                    .map(DecodeError::reason)
                    .collect::<Vec<_>>(),
            )
        };
        // No timestamp of its own: a restart must not make a dead device look alive.
        assert_eq!(
            go(&mut d, "sensors/a/b", "21.5", true),
            (0, vec!["retained_without_ts"])
        );
        assert_eq!(
            go(&mut d, "z/dev", r#"{"t":1,"h":2}"#, true),
            (0, vec!["retained_without_ts"; 2])
        );
        // Its own timestamp, not newer than the stored one: already stored.
        let older = format!(r#"{{"value":1,"ts":{}}}"#, NOW - 60_000);
        assert_eq!(
            go(&mut d, "sensors/a/b", &older, true),
            (0, vec!["retained_not_newer"])
        );
        // Newer: kept, once.
        let newer = format!(r#"{{"value":1,"ts":{}}}"#, NOW - 1_000);
        assert_eq!(go(&mut d, "sensors/a/b", &newer, true), (1, vec![]));
        assert_eq!(
            go(&mut d, "sensors/a/b", &newer, true),
            (0, vec!["retained_not_newer"])
        );
        // Live messages are never held back.
        assert_eq!(go(&mut d, "sensors/a/b", "21.5", false), (1, vec![]));
        assert_eq!(go(&mut d, "sensors/a/b", &older, false), (1, vec![]));
    }
}
