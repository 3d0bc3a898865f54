//! Replay input: `series,ts,value` rows (a spreadsheet export, a logger's file) as
//! readings, for `centinela replay --csv`. Times are RFC 3339, epoch s/ms, or a local
//! `YYYY-MM-DD HH:MM[:SS]` read in the zone given.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::ConfigError;
use crate::engine::{parse_time, Zone};
use crate::model::{topic_matches, Reading, SeriesId};

/// The readings of `text` (named `file` in errors) whose series match `pattern`; the
/// first bad row is an error naming its line.
pub fn parse(
    text: &str,
    file: &str,
    pattern: &str,
    zone: Zone,
) -> Result<Vec<Reading>, ConfigError> {
    let mut lines = text.lines().enumerate();
    let header = lines
        .next()
        .map(|(_, l)| l.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if header.replace(' ', "") != "series,ts,value" {
        return Err(ConfigError {
            file: file.to_string(),
            line: Some(1),
            col: Some(1),
            field: None,
            message: format!("expected the header `series,ts,value`, found {header:?}"),
        });
    }
    let mut names: HashMap<String, SeriesId> = HashMap::new();
    let mut out = Vec::new();
    for (i, line) in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |message: String| ConfigError {
            file: file.to_string(),
            line: Some(i + 1),
            col: None,
            field: None,
            message,
        };
        let mut parts = line.rsplitn(3, ',');
        let (Some(value), Some(ts), Some(series)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(format!("expected series,ts,value, found {line:?}")));
        };
        let series = series.trim().trim_matches('"');
        if !topic_matches(pattern, series) {
            continue;
        }
        let ts = parse_time(ts.trim().trim_matches('"'), zone).map_err(bad)?;
        let value = value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| bad(format!("value {:?} is not a number", value.trim())))?;
        let id = names
            .entry(series.to_string())
            .or_insert_with_key(|k| Arc::from(k.as_str()))
            .clone();
        out.push(Reading {
            series: id,
            value,
            ts,
            unit: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_and_a_bad_one_is_named_with_its_line() {
        let text = "series,ts,value\ngh/a/t,2026-11-20T10:00:00Z,25\n\nother/x,0,1\ngh/a/t,1795169040000,29.5\n";
        let got = parse(text, "in.csv", "gh/#", Zone::Utc).unwrap();
        let rows: Vec<_> = got.iter().map(|r| (&*r.series, r.ts, r.value)).collect();
        assert_eq!(
            rows,
            vec![
                ("gh/a/t", 1_795_168_800_000, 25.0),
                ("gh/a/t", 1_795_169_040_000, 29.5)
            ]
        );
        let e = parse("series,ts,value\ngh/a/t,0,warm\n", "in.csv", "#", Zone::Utc).unwrap_err();
        assert_eq!(e.to_string(), "in.csv:2: value \"warm\" is not a number");
        // As on MQTT, NaN and infinities are not readings.
        let e = parse(
            "series,ts,value\ngh/a/t,0,1\ngh/a/t,0,NaN\n",
            "in.csv",
            "#",
            Zone::Utc,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "in.csv:3: value \"NaN\" is not a number");
        let e = parse("name,value\n", "in.csv", "#", Zone::Utc).unwrap_err();
        assert_eq!(e.line, Some(1));
    }
}
