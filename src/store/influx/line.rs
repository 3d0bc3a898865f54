//! Line protocol encoding: readings and alert events as InfluxDB lines. Pure functions,
//! no I/O; the sink calls them as data arrives.
//!
//! Schema: a reading of series `site/dev/ice/metric` becomes
//! `metric,device=dev/ice,series=site/dev/ice/metric,site=site,unit=°C value=21.5 <ms>`
//! (tags sorted by key, as InfluxDB prefers; `device`, `site` and `unit` are left out
//! when the series has no such part). An alert event becomes a point in measurement
//! `alerts` with tags `rule`, `series`, `severity`, `state` and fields `value` (when
//! known) and `message`. Timestamps are milliseconds (`precision=ms`).
//!
//! Escaping follows what InfluxDB's parser (the same in 1.x and 2.x) reads back:
//! - tag keys and values: `,` `=` and space are escaped with a backslash; other
//!   backslashes are written as they are and read back unchanged;
//! - measurements: `,` and space are escaped; a backslash right before one of them is
//!   left out: InfluxDB 1.x stores such a measurement but can never select it again;
//! - string fields: `"` and `\` are escaped; newlines are kept;
//! - line breaks in names cannot be written: they become spaces; a name cannot end in a
//!   backslash (the parser would read it as escaping the delimiter): trailing
//!   backslashes are left out. A tag whose value ends up empty is left out.
//!
//! Values that line protocol cannot carry (NaN, ±∞) and series whose metric part is
//! empty are refused with an [`EncodeError`]; the sink counts them as rejected.

use std::fmt::Write;

use crate::model::{AlertEvent, Reading, Timestamp};

/// The measurement alert events are written to.
pub const ALERTS_MEASUREMENT: &str = "alerts";

/// Why a point was not encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("value {value} of {series:?} cannot be stored (line protocol has no NaN or infinity)")]
    NotFinite { series: String, value: f64 },
    #[error("series {0:?} has no metric name (its last segment is empty)")]
    NoMeasurement(String),
}

/// The parts of a series id that become the measurement and tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesParts<'a> {
    /// First segment, when there are at least two.
    pub site: Option<&'a str>,
    /// The segments between the first and the last, joined with `/`, when any.
    pub device: Option<&'a str>,
    /// Last segment: the measurement.
    pub metric: &'a str,
}

/// Splits `site/device…/metric`: one segment is a bare metric, two are site and metric.
pub fn split_series(series: &str) -> SeriesParts<'_> {
    let Some((head, metric)) = series.rsplit_once('/') else {
        return SeriesParts {
            site: None,
            device: None,
            metric: series,
        };
    };
    let (site, device) = match head.split_once('/') {
        Some((site, device)) => (site, Some(device)),
        None => (head, None),
    };
    SeriesParts {
        site: Some(site),
        device: device.filter(|d| !d.is_empty()),
        metric,
    }
}

/// Appends `s` as a measurement name.
pub fn escape_measurement(out: &mut String, s: &str) {
    let s = s.trim_end_matches('\\');
    if s.starts_with('#') {
        // A line starting with `#` is a comment.
        out.push('\\');
    }
    // Backslashes are held back until the next character: before a space or a comma
    // they are left out (see the module doc), elsewhere written as they are.
    let mut run = 0usize;
    for c in s.chars() {
        match c {
            '\\' => run += 1,
            ',' | ' ' | '\n' | '\r' => {
                run = 0;
                out.push('\\');
                out.push(if c == ',' { ',' } else { ' ' });
            }
            _ => {
                out.extend(std::iter::repeat_n('\\', run));
                run = 0;
                out.push(c);
            }
        }
    }
}

/// Appends `s` as a tag key or tag value.
pub fn escape_tag(out: &mut String, s: &str) {
    for c in s.trim_end_matches('\\').chars() {
        match c {
            ',' | '=' | ' ' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
}

/// Whether `s` survives as a tag value (not empty once trailing backslashes are gone).
fn tag_value_ok(s: &str) -> bool {
    !s.trim_end_matches('\\').is_empty()
}

/// Appends `s` as a quoted string field value, quotes included.
pub fn escape_field_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `,key=value` for each tag whose value is usable; `tags` sorted by key.
fn push_tags(out: &mut String, tags: &[(&str, Option<&str>)]) {
    for (k, v) in tags {
        if let Some(v) = v.filter(|v| tag_value_ok(v)) {
            out.push(',');
            escape_tag(out, k);
            out.push('=');
            escape_tag(out, v);
        }
    }
}

fn push_float(out: &mut String, v: f64) {
    // `Display` of a finite f64 is the shortest text that reads back as the same number,
    // without exponent, which line protocol takes as a float. Writing to a String cannot fail.
    let _ = write!(out, "{v}");
}

fn push_ts(out: &mut String, ts: Timestamp) {
    let _ = writeln!(out, " {ts}");
}

/// Appends one line for `r`, newline included. On error nothing is appended.
pub fn encode_reading(out: &mut String, r: &Reading) -> Result<(), EncodeError> {
    if !r.value.is_finite() {
        return Err(EncodeError::NotFinite {
            series: r.series.to_string(),
            value: r.value,
        });
    }
    let parts = split_series(&r.series);
    if parts.metric.trim_end_matches('\\').is_empty() {
        return Err(EncodeError::NoMeasurement(r.series.to_string()));
    }
    escape_measurement(out, parts.metric);
    push_tags(
        out,
        &[
            ("device", parts.device),
            ("series", Some(&r.series)),
            ("site", parts.site),
            ("unit", r.unit.as_deref()),
        ],
    );
    out.push_str(" value=");
    push_float(out, r.value);
    push_ts(out, r.ts);
    Ok(())
}

/// Appends one line for `e` in measurement `alerts`, newline included. On error nothing
/// is appended.
pub fn encode_event(out: &mut String, e: &AlertEvent) -> Result<(), EncodeError> {
    let value = match e.value {
        Some(v) if !v.is_finite() => {
            return Err(EncodeError::NotFinite {
                series: e.series.clone(),
                value: v,
            })
        }
        v => v,
    };
    out.push_str(ALERTS_MEASUREMENT);
    push_tags(
        out,
        &[
            ("rule", Some(&e.rule)),
            ("series", Some(&e.series)),
            ("severity", Some(e.severity.as_str())),
            ("state", Some(e.state.as_str())),
        ],
    );
    out.push_str(" message=");
    escape_field_string(out, &e.message);
    if let Some(v) = value {
        out.push_str(",value=");
        push_float(out, v);
    }
    push_ts(out, e.ts);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertState, Severity};

    fn reading(series: &str, value: f64, unit: Option<&str>) -> Reading {
        Reading {
            series: series.into(),
            value,
            ts: 1_700_000_000_123,
            unit: unit.map(Into::into),
        }
    }

    fn line(r: &Reading) -> String {
        let mut s = String::new();
        encode_reading(&mut s, r).unwrap();
        s
    }

    #[test]
    fn series_splits_into_site_device_metric() {
        let p = split_series("greenhouse/node1/temperature");
        assert_eq!(
            (p.site, p.device, p.metric),
            (Some("greenhouse"), Some("node1"), "temperature")
        );
        let p = split_series("farm/barn/rack 2/co2");
        assert_eq!(
            (p.site, p.device, p.metric),
            (Some("farm"), Some("barn/rack 2"), "co2")
        );
        let p = split_series("home/power");
        assert_eq!((p.site, p.device, p.metric), (Some("home"), None, "power"));
        let p = split_series("uptime");
        assert_eq!((p.site, p.device, p.metric), (None, None, "uptime"));
        let p = split_series("a//m");
        assert_eq!((p.site, p.device, p.metric), (Some("a"), None, "m"));
    }

    #[test]
    fn plain_reading() {
        assert_eq!(
            line(&reading("greenhouse/node1/temperature", 21.5, Some("°C"))),
            "temperature,device=node1,series=greenhouse/node1/temperature,site=greenhouse,unit=°C value=21.5 1700000000123\n"
        );
        assert_eq!(
            line(&reading("uptime", 3.0, None)),
            "uptime,series=uptime value=3 1700000000123\n"
        );
        assert_eq!(
            line(&reading("h/power", -0.000_1, None)),
            "power,series=h/power,site=h value=-0.0001 1700000000123\n"
        );
    }

    #[test]
    fn nasty_names_are_escaped() {
        assert_eq!(
            line(&reading("my site/dev,1=a/rel hum", 1.0, Some("g/m 3"))),
            "rel\\ hum,device=dev\\,1\\=a,series=my\\ site/dev\\,1\\=a/rel\\ hum,site=my\\ site,unit=g/m\\ 3 value=1 1700000000123\n"
        );
        // Quotes are ordinary characters in names.
        assert_eq!(
            line(&reading("s/\"q\"", 2.0, None)),
            "\"q\",series=s/\"q\",site=s value=2 1700000000123\n"
        );
        // Backslashes stay as they are in tags; in a measurement one before an escaped
        // character is left out.
        assert_eq!(
            line(&reading("a\\b/c\\ d\\,e\\f", 2.0, None)),
            "c\\ d\\,e\\f,series=a\\b/c\\\\ d\\\\,e\\f,site=a\\b value=2 1700000000123\n"
        );
        // Line breaks become spaces, trailing backslashes go.
        assert_eq!(
            line(&reading("x\ny/m\\", 2.0, Some("\\"))),
            "m,series=x\\ y/m,site=x\\ y value=2 1700000000123\n"
        );
        // A leading `#` would make a comment.
        assert_eq!(
            line(&reading("#m", 2.0, None)),
            "\\#m,series=#m value=2 1700000000123\n"
        );
    }

    #[test]
    fn values_keep_full_precision() {
        for v in [0.1 + 0.2, 1e-300, 123_456_789.123_456_78, -0.0, f64::MAX] {
            let l = line(&reading("s/m", v, None));
            let text = l
                .split(" value=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            assert_eq!(text.parse::<f64>().unwrap(), v, "{l}");
            assert!(!text.contains('e') && !text.ends_with('i'), "{l}");
        }
    }

    #[test]
    fn bad_points_are_refused_and_leave_nothing() {
        let mut s = String::from("keep\n");
        assert!(matches!(
            encode_reading(&mut s, &reading("s/m", f64::NAN, None)),
            Err(EncodeError::NotFinite { .. })
        ));
        assert!(encode_reading(&mut s, &reading("s/m", f64::INFINITY, None)).is_err());
        assert_eq!(
            encode_reading(&mut s, &reading("s/", 1.0, None)),
            Err(EncodeError::NoMeasurement("s/".into()))
        );
        assert_eq!(s, "keep\n");
    }

    fn event(message: &str, value: Option<f64>) -> AlertEvent {
        AlertEvent {
            rule: "too hot, really".into(),
            series: "g h/n=1/temperature".into(),
            state: AlertState::Firing,
            severity: Severity::Critical,
            value,
            unit: None,
            ts: 1_700_000_000_000,
            message: message.into(),
            notify: vec![],
        }
    }

    #[test]
    fn alert_event_line() {
        let mut s = String::new();
        encode_event(&mut s, &event("it is \"hot\"\nC:\\temp", Some(31.5))).unwrap();
        assert_eq!(
            s,
            "alerts,rule=too\\ hot\\,\\ really,series=g\\ h/n\\=1/temperature,severity=critical,state=firing \
             message=\"it is \\\"hot\\\"\nC:\\\\temp\",value=31.5 1700000000000\n"
        );
        let mut s = String::new();
        encode_event(&mut s, &event("silent", None)).unwrap();
        assert!(s.ends_with(" message=\"silent\" 1700000000000\n"), "{s}");
        assert!(encode_event(&mut String::new(), &event("x", Some(f64::NAN))).is_err());
    }
}
