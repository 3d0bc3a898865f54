//! Compact text for the terminal: values, ages, durations and text sparklines. Pure.

use std::borrow::Cow;

use crate::model::Timestamp;

/// `text` safe to print on a terminal: control characters (ESC, BEL, newlines, tabs,
/// DEL, C1 codes) and the invisible direction overrides are shown as escapes (`\n`,
/// `\u{1b}`), so a name from the network cannot move the cursor, change colours or
/// hide part of itself. Everything else is kept as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    let odd = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(odd) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if odd(c) {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Width of the value column: a value is written in at most this many characters.
pub const VALUE_WIDTH: usize = 8;

/// A value as everywhere else ([`crate::format`]), in at most [`VALUE_WIDTH`]
/// characters: `612`, `21.5`, `1013.68`, `0.00042`, `1.2346e8`.
pub fn value(v: f64) -> String {
    crate::format::num_within(v, VALUE_WIDTH)
}

/// A value with its unit after a space, for places where they are not in separate
/// columns: `3.901 V`.
pub fn value_unit(v: f64, unit: Option<&str>) -> String {
    crate::format::join_unit(value(v), unit)
}

/// A span of milliseconds as people say it: `0s`, `3s`, `2m`, `1h05m`, `3d`.
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m", s / 60)
    } else if s < 86_400 {
        let (h, m) = (s / 3600, (s % 3600) / 60);
        if m == 0 || h >= 10 {
            format!("{h}h")
        } else {
            format!("{h}h{m:02}m")
        }
    } else {
        format!("{}d", s / 86_400)
    }
}

/// The age of `ts` at `now`, or `-` when never.
pub fn age_since(ts: Option<Timestamp>, now: Timestamp) -> String {
    ts.map_or_else(|| "-".to_string(), |t| age(now - t))
}

/// Wall-clock time of day of `ts` in the local time zone, `HH:MM:SS`.
pub fn clock(ts: Timestamp) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_millis_opt(ts) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.format("%H:%M:%S").to_string()
        }
        chrono::LocalResult::None => ts.to_string(),
    }
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The last `width` values as block characters scaled between their min and max,
/// right-aligned (older values to the left), padded with spaces.
pub fn sparkline<I>(values: I, len: usize, width: usize) -> String
where
    I: Iterator<Item = f64> + Clone,
{
    let skip = len.saturating_sub(width);
    let vals = values.skip(skip);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.clone() {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let n = len - skip;
    let mut out = String::with_capacity(width * 3);
    out.extend(std::iter::repeat_n(' ', width - n));
    let span = hi - lo;
    for v in vals {
        let i = if span > 0.0 {
            (((v - lo) / span) * 7.0).round() as usize
        } else {
            3
        };
        out.push(BARS[i.min(7)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_compact() {
        assert_eq!(value(612.0), "612");
        assert_eq!(value(21.5), "21.5");
        assert_eq!(value(-3.25), "-3.25");
        assert_eq!(value(1013.68), "1013.68");
        assert_eq!(value(73.40), "73.4");
        assert_eq!(value(123_456.0), "123456");
        assert_eq!(value(123_456_789.0), "1.2346e8");
        assert_eq!(value(0.0), "0");
        assert_eq!(value(0.001_5), "0.0015");
        assert_eq!(value_unit(21.5, Some("°C")), "21.5 °C");
        assert_eq!(value_unit(3.901, Some("V")), "3.901 V");
    }

    #[test]
    fn odd_characters_are_escaped() {
        assert_eq!(printable("lab/node7/co2"), "lab/node7/co2");
        assert!(matches!(printable("°C"), Cow::Borrowed(_)));
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("bell\u{7}"), "bell\\u{7}");
        assert_eq!(printable("two\nlines\r\t"), "two\\nlines\\r\\t");
        assert_eq!(printable("x\u{202e}y\u{9b}"), "x\\u{202e}y\\u{9b}");
    }

    #[test]
    fn ages_read_like_speech() {
        assert_eq!(age(-5), "0s");
        assert_eq!(age(3_400), "3s");
        assert_eq!(age(125_000), "2m");
        assert_eq!(age(3_900_000), "1h05m");
        assert_eq!(age(7_200_000), "2h");
        assert_eq!(age(3 * 86_400_000), "3d");
        assert_eq!(age_since(None, 0), "-");
    }

    #[test]
    fn sparklines_scale_and_pad() {
        let v = [1.0, 2.0, 3.0];
        assert_eq!(sparkline(v.iter().copied(), 3, 5), "  ▁▅█");
        let v = [9.0, 1.0, 1.0, 8.0];
        assert_eq!(sparkline(v.iter().copied(), 4, 2), "▁█");
        let v = [5.0, 5.0];
        assert_eq!(sparkline(v.iter().copied(), 2, 2), "▄▄");
        assert_eq!(sparkline(std::iter::empty(), 0, 3), "   ");
    }
}
