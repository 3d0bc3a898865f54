//! A message through an `[[ingest.map]]` mapping ([`super::super::map`]): plain
//! values, JSON flattened to one reading per numeric leaf, or InfluxDB line protocol
//! ([`super::super::line`]), one reading per field.

use serde_json::Value;

use super::super::line::{self, FieldValue};
use super::super::map::{self, Leaf, Mapping};
use super::value::{clip, parse_plain, parse_ts};
use super::{DecodeError, Decoder, Stamp};
use crate::config::MapFormat;
use crate::model::{Reading, Timestamp};

impl Decoder {
    /// A message through a mapping; `path` holds the rendered series and is where
    /// field levels are appended.
    pub(super) fn decode_mapped(
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
}
