//! The values inside a payload: a plain number (or `true`/`ON`), a JSON number or
//! numeric string, a timestamp (epoch seconds or milliseconds, RFC 3339), and how a
//! timestamp and a bad value are shown in an error.

use serde_json::Value;

use super::DecodeError;
use crate::model::Timestamp;

pub(super) fn show_ts(ts: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(ts).map_or_else(
        || ts.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

pub(super) fn parse_plain(text: &str) -> Result<f64, DecodeError> {
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
pub(super) fn json_number(v: &Value) -> Result<Option<f64>, DecodeError> {
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
pub(super) fn parse_ts(v: &Value) -> Result<Timestamp, DecodeError> {
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

pub(super) fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}
