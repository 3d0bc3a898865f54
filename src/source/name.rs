//! Series names and units as decoding makes them: the checks every name passes before
//! a reading carrying it goes downstream. Pure.
//!
//! A series name is a topic-like path: `/`-separated levels, none empty, without the
//! MQTT wildcards `+` and `#` (a rule pattern or a republished alert topic built from
//! such a name would mean something else), without NUL or other control characters
//! (they corrupt terminals and logs), and at most [`MAX_SERIES_LEN`] bytes. A unit is
//! short text without control characters, at most [`MAX_UNIT_LEN`] bytes.

/// Longest series name accepted, in bytes.
pub const MAX_SERIES_LEN: usize = 256;

/// Longest unit accepted, in bytes.
pub const MAX_UNIT_LEN: usize = 32;

/// Why a series name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    /// Contains `+` or `#`.
    Wildcard,
    /// Contains a NUL byte.
    Nul,
    /// Contains another control character (ESC, BEL, newline, DEL, C1 controls).
    ControlChar,
    /// Empty, or a level between two `/` (or at either end) is empty.
    EmptyLevel,
    /// Longer than [`MAX_SERIES_LEN`] bytes.
    TooLong,
}

impl NameProblem {
    pub fn describe(self) -> &'static str {
        match self {
            NameProblem::Wildcard => "contains an MQTT wildcard (+ or #)",
            NameProblem::Nul => "contains a NUL character",
            NameProblem::ControlChar => "contains a control character",
            NameProblem::EmptyLevel => "has an empty level",
            NameProblem::TooLong => "is longer than 256 bytes",
        }
    }
}

/// Why a unit is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitProblem {
    ControlChar,
    TooLong,
}

/// Checks a series name; `Ok` when it may be stored.
pub fn check_series(name: &str) -> Result<(), NameProblem> {
    if name.len() > MAX_SERIES_LEN {
        return Err(NameProblem::TooLong);
    }
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err(NameProblem::EmptyLevel);
    }
    for c in name.chars() {
        match c {
            '+' | '#' => return Err(NameProblem::Wildcard),
            '\0' => return Err(NameProblem::Nul),
            c if c.is_control() => return Err(NameProblem::ControlChar),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a unit; `Ok` when it may be stored.
pub fn check_unit(unit: &str) -> Result<(), UnitProblem> {
    if unit.len() > MAX_UNIT_LEN {
        return Err(UnitProblem::TooLong);
    }
    if unit.chars().any(char::is_control) {
        return Err(UnitProblem::ControlChar);
    }
    Ok(())
}

/// A name as it may be printed in a log line: control characters escaped, clipped.
pub fn printable(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().take(80) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if name.chars().nth(80).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_names() {
        let long = "a/".repeat(128) + "b";
        let just = "a".repeat(MAX_SERIES_LEN);
        let cases: &[(&str, Result<(), NameProblem>)] = &[
            ("greenhouse/node1/temperature", Ok(())),
            ("zigbee/living room/temperature", Ok(())),
            ("shelly/switch:0/aenergy/total", Ok(())),
            ("küche/temperatur", Ok(())),
            ("a", Ok(())),
            (&just, Ok(())),
            ("", Err(NameProblem::EmptyLevel)),
            ("/a", Err(NameProblem::EmptyLevel)),
            ("a/", Err(NameProblem::EmptyLevel)),
            ("a//b", Err(NameProblem::EmptyLevel)),
            ("a/+/b", Err(NameProblem::Wildcard)),
            ("a/b+c", Err(NameProblem::Wildcard)),
            ("a/#", Err(NameProblem::Wildcard)),
            ("a/\0/b", Err(NameProblem::Nul)),
            ("a/\u{1b}[31m", Err(NameProblem::ControlChar)),
            ("a/b\nc", Err(NameProblem::ControlChar)),
            ("a/\u{7}", Err(NameProblem::ControlChar)),
            ("a/\u{7f}", Err(NameProblem::ControlChar)),
            ("a/\u{9b}", Err(NameProblem::ControlChar)),
            (&long, Err(NameProblem::TooLong)),
        ];
        for (name, want) in cases {
            assert_eq!(check_series(name), *want, "{name:?}");
        }
    }

    #[test]
    fn units() {
        assert_eq!(check_unit("°C"), Ok(()));
        assert_eq!(check_unit("kWh"), Ok(()));
        assert_eq!(check_unit(""), Ok(()));
        assert_eq!(check_unit("µg/m³"), Ok(()));
        assert_eq!(check_unit("\u{1b}[2J"), Err(UnitProblem::ControlChar));
        assert_eq!(check_unit("a\nb"), Err(UnitProblem::ControlChar));
        assert_eq!(check_unit(&"x".repeat(33)), Err(UnitProblem::TooLong));
        assert_eq!(check_unit(&"x".repeat(10_000)), Err(UnitProblem::TooLong));
    }

    #[test]
    fn printable_escapes_and_clips() {
        assert_eq!(printable("a\u{1b}b"), "a\\u{1b}b");
        assert_eq!(printable(&"x".repeat(100)), "x".repeat(80) + "…");
    }
}
