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
//!
//! # Layout
//! - this file: the [`Decoder`] and the prefix path (plain and JSON payloads);
//! - `mapped`: messages through `[[ingest.map]]` mappings;
//! - `admit`: the checks each reading passes before it is emitted;
//! - `value`: numbers and timestamps inside payloads;
//! - `error`: [`DecodeError`] and its reasons.

use std::cell::Cell;
use std::sync::Arc;

use serde_json::Value;

use super::map::{Captures, Mapping};
use super::name::{check_series, check_unit, printable};
use crate::config::MapConfig;
use crate::model::{Reading, SeriesId, Timestamp};

mod admit;
mod error;
mod mapped;
#[cfg(test)]
mod tests;
mod value;

pub use error::DecodeError;
use value::{json_number, parse_plain, parse_ts};

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
}
