//! Every problem of a configuration file at once, each with its line and field, in
//! words a person can act on.
//!
//! serde stops at the first wrong value. To go on, the typed pass is repeated: each
//! time the wrong key-value (or, for a missing field, the whole table) is blanked out
//! of a working copy of the text, byte for byte, so offsets, lines and columns stay
//! those of the file. Meaning checks ([`Config::validate`]) then run on what parsed,
//! leaving out tables that already had a problem (their defaults would only add
//! noise).

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

use super::{dotted, key, line_col, place, Config, ConfigError, PathPart};

/// Most typed-pass problems collected from one file.
const MAX_PROBLEMS: usize = 64;

/// Where an offset of the file falls: the deepest field, and what to blank so the
/// next pass gets past it.
#[derive(Debug, Clone)]
struct Hit {
    path: Vec<PathPart>,
    /// Bytes to blank: the key-value, or the whole table for a table-level problem.
    blank: Range<usize>,
    /// The hit is a table header (a problem of the table as a whole).
    table: bool,
    /// Where the key of the key-value is in `path`.
    key_at: usize,
}

/// Every problem of `text`, or the configuration when there is none.
pub(super) fn parse_all(text: &str, file: &str) -> Result<Config, Vec<ConfigError>> {
    let original = match ImDocument::parse(text.to_string()) {
        Ok(d) => d,
        // A syntax error: nothing past it can be trusted.
        Err(_) => {
            return Err(vec![match toml::from_str::<Config>(text) {
                Err(e) => super::from_toml_error(&e, text, file),
                Ok(_) => ConfigError {
                    file: file.into(),
                    line: None,
                    col: None,
                    field: None,
                    message: "not valid TOML".into(),
                },
            }])
        }
    };
    let mut work = text.to_string();
    let mut errors: Vec<ConfigError> = Vec::new();
    // Original-numbering positions of array-of-tables elements blanked out whole.
    let mut removed: Vec<(Vec<PathPart>, usize)> = Vec::new();
    // What was blanked: (table, Some(key)) for a key-value, (table, None) for a whole
    // table. Meaning checks about what is gone are left out.
    let mut spoiled: Vec<(Vec<PathPart>, Option<String>)> = Vec::new();
    let cfg = loop {
        let e = match toml::from_str::<Config>(&work) {
            Ok(cfg) => break Some(cfg),
            Err(e) => e,
        };
        let at = e.span().map(|s| s.start);
        let hit = at.and_then(|o| locate(original.as_table(), Vec::new(), o));
        let mut err = super::from_toml_error(&e, text, file);
        // A table whose problem was already reported (its wrong key blanked out)
        // now misses that key: not a second problem.
        let known = hit
            .as_ref()
            .is_some_and(|h| h.table && spoiled.iter().any(|(t, _)| *t == h.path));
        if let Some(h) = &hit {
            let mut path = h.path.clone();
            if h.table {
                if let Some(m) = missing_field(e.message()) {
                    path.push(key(&m));
                }
                // On the table's header.
                let (l, c) = line_col(text, h.blank.start);
                (err.line, err.col) = (Some(l), Some(c));
            }
            err.field = Some(dotted(&path));
            err.message = in_words(e.message(), &h.path);
        }
        if !known {
            errors.push(err);
        }
        let Some(h) = hit else { break None };
        if errors.len() >= MAX_PROBLEMS || h.blank.is_empty() {
            break None;
        }
        if h.table {
            if let Some((PathPart::Index(i), array)) = h.path.split_last() {
                removed.push((array.to_vec(), *i));
            }
            spoiled.push((h.path.clone(), None));
        } else if let Some(PathPart::Key(k)) = h.path.get(h.key_at) {
            spoiled.push((h.path[..h.key_at].to_vec(), Some(k.clone())));
        }
        let before = work.clone();
        blank(&mut work, h.blank);
        if work == before || ImDocument::parse(work.clone()).is_err() {
            break None;
        }
    };
    let Some(cfg) = cfg else { return Err(errors) };
    let typed_ok = errors.is_empty();
    for problem in cfg
        .validate()
        .into_iter()
        .chain(super::kafka::cross_checks(&cfg))
    {
        let path = to_original(&problem.path, &removed);
        let gone = spoiled.iter().any(|(table, k)| {
            path.starts_with(table)
                && match k {
                    None => !table.is_empty(),
                    Some(k) => {
                        path.get(table.len()) == Some(&key(k))
                            || problem.message.contains(&format!("`{k}`"))
                    }
                }
        });
        if gone {
            continue;
        }
        // Placed in the working copy (it matches the reduced configuration); offsets
        // and lines are the file's.
        let mut e = place(problem, &work, file);
        e.field = Some(dotted(&path));
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        if !typed_ok {
            errors.sort_by_key(|e| (e.line.unwrap_or(usize::MAX), e.col.unwrap_or(0)));
        }
        Err(errors)
    }
}

/// `missing field `kind`` → `kind`.
fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// A path of the reduced configuration (elements blanked out) in the file's numbering.
fn to_original(path: &[PathPart], removed: &[(Vec<PathPart>, usize)]) -> Vec<PathPart> {
    let mut out: Vec<PathPart> = Vec::with_capacity(path.len());
    for part in path {
        match part {
            PathPart::Index(i) => {
                let mut gone: Vec<usize> = removed
                    .iter()
                    .filter(|(a, _)| *a == out)
                    .map(|(_, r)| *r)
                    .collect();
                gone.sort_unstable();
                let mut i = *i;
                for r in gone {
                    if r <= i {
                        i += 1;
                    }
                }
                out.push(PathPart::Index(i));
            }
            k => out.push(k.clone()),
        }
    }
    out
}

/// Replaces every byte of `range` but line ends with a space (lengths, lines and
/// columns elsewhere stay as they are).
fn blank(text: &mut String, range: Range<usize>) {
    let mut bytes = std::mem::take(text).into_bytes();
    let end = range.end.min(bytes.len());
    for b in &mut bytes[range.start.min(end)..end] {
        if *b != b'\n' && *b != b'\r' {
            *b = b' ';
        }
    }
    // Multi-byte characters are replaced by as many spaces: still UTF-8.
    *text = String::from_utf8(bytes).unwrap_or_default();
}

/// The end of everything a table holds (its header when empty).
fn table_end(t: &Table) -> usize {
    let mut end = t.span().map_or(0, |s| s.end);
    for (k, item) in t.iter() {
        if let Some((key, _)) = t.get_key_value(k) {
            end = end.max(key.span().map_or(0, |s| s.end));
        }
        end = end.max(item_end(item));
    }
    end
}

fn item_end(item: &Item) -> usize {
    match item {
        Item::Value(v) => v.span().map_or(0, |s| s.end),
        Item::Table(t) => table_end(t),
        Item::ArrayOfTables(a) => a.iter().map(table_end).max().unwrap_or(0),
        Item::None => 0,
    }
}

/// The deepest field of `t` (at `path`) whose text holds `offset`.
fn locate(t: &Table, path: Vec<PathPart>, offset: usize) -> Option<Hit> {
    let within = |r: &Option<Range<usize>>| r.as_ref().is_some_and(|r| r.contains(&offset));
    for (k, item) in t.iter() {
        let mut here = path.clone();
        here.push(key(k));
        let key_span = t.get_key_value(k).and_then(|(key, _)| key.span());
        match item {
            Item::Value(v) => {
                let (Some(ks), Some(vs)) = (key_span.clone(), v.span()) else {
                    continue;
                };
                let whole = ks.start..vs.end;
                if whole.contains(&offset) {
                    let key_at = here.len() - 1;
                    return Some(Hit {
                        path: deepest_in_value(v, here, offset),
                        blank: whole,
                        table: false,
                        key_at,
                    });
                }
            }
            Item::Table(sub) => {
                // A field inside wins over the table as a whole.
                if let Some(h) = locate(sub, here.clone(), offset) {
                    return Some(h);
                }
                if within(&sub.span()) {
                    let start = sub.span().map_or(0, |s| s.start);
                    return Some(Hit {
                        path: here,
                        blank: start..table_end(sub),
                        table: true,
                        key_at: 0,
                    });
                }
            }
            Item::ArrayOfTables(a) => {
                for (i, sub) in a.iter().enumerate() {
                    let mut at = here.clone();
                    at.push(PathPart::Index(i));
                    if let Some(h) = locate(sub, at.clone(), offset) {
                        return Some(h);
                    }
                    if within(&sub.span()) {
                        let start = sub.span().map_or(0, |s| s.start);
                        return Some(Hit {
                            path: at,
                            blank: start..table_end(sub),
                            table: true,
                            key_at: 0,
                        });
                    }
                }
            }
            Item::None => {}
        }
    }
    None
}

/// Into arrays and inline tables, for the field's name (`rules[0].notify[1]`).
fn deepest_in_value(v: &Value, path: Vec<PathPart>, offset: usize) -> Vec<PathPart> {
    match v {
        Value::Array(a) => {
            for (i, el) in a.iter().enumerate() {
                if el.span().is_some_and(|s| s.contains(&offset)) {
                    let mut p = path;
                    p.push(PathPart::Index(i));
                    return deepest_in_value(el, p, offset);
                }
            }
            path
        }
        Value::InlineTable(t) => {
            for (k, el) in t.iter() {
                let key_start = t
                    .get_key_value(k)
                    .and_then(|(key, _)| key.span())
                    .map(|s| s.start);
                let end = el.span().map(|s| s.end);
                if let (Some(s), Some(e)) = (key_start, end) {
                    if (s..e).contains(&offset) {
                        let mut p = path;
                        p.push(key(k));
                        return deepest_in_value(el, p, offset);
                    }
                }
            }
            path
        }
        _ => path,
    }
}

/// serde's words for a type, as a person says them.
fn expected_words(what: &str) -> String {
    let w = what.trim();
    let plain = match w {
        "f64" | "f32" => "a number (such as 35 or 35.5)",
        "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize" => {
            "a whole number (such as 10)"
        }
        "a boolean" => "true or false",
        "a string" | "a borrowed string" => "text in quotes",
        "a sequence" => "a list in brackets, such as [\"a\", \"b\"]",
        "a map" => "a table",
        _ if w.starts_with("struct ") => "a table",
        _ if w.starts_with("a duration") => return w.to_string(),
        _ => return w.to_string(),
    };
    plain.to_string()
}

/// serde's words for what was found.
fn found_words(what: &str) -> String {
    let w = what.trim();
    let strip = |p: &str| {
        w.strip_prefix(p)
            .map(|r| r.trim().trim_matches('`').to_string())
    };
    if let Some(s) = strip("string") {
        return format!("the text {s}");
    }
    if let Some(n) = strip("integer").or_else(|| strip("floating point")) {
        return format!("the number {n}");
    }
    if let Some(b) = strip("boolean") {
        return b;
    }
    match w {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        _ => w.to_string(),
    }
}

/// serde's message in words, with a hint where the fix is plain.
fn in_words(msg: &str, path: &[PathPart]) -> String {
    let msg = msg.trim();
    let field = path.iter().rev().find_map(|p| match p {
        PathPart::Key(k) => Some(k.as_str()),
        PathPart::Index(_) => None,
    });
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let want = expected_words(expected);
            let got = found_words(found);
            let mut s = format!("expected {want}, found {got}");
            if let (Some(f), Some(text)) = (field, found.trim().strip_prefix("string ")) {
                let inner = text.trim().trim_matches('"');
                if want.starts_with("a number") || want.starts_with("a whole number") {
                    if inner.parse::<f64>().is_ok() {
                        s.push_str(&format!(": write it without quotes, {f} = {inner}"));
                    }
                } else if want == "true or false" && matches!(inner, "true" | "false") {
                    s.push_str(&format!(": write it without quotes, {f} = {inner}"));
                }
            }
            if let (Some(f), true) = (field, want.starts_with("a duration")) {
                if let Some(n) = found.split('`').nth(1).filter(|n| n.parse::<f64>().is_ok()) {
                    s.push_str(&format!(": write it with a unit, {f} = \"{n}s\""));
                }
            }
            if let (Some(f), true) = (field, want == "text in quotes") {
                let inner = found.split('`').nth(1).unwrap_or("");
                if !inner.is_empty() {
                    s.push_str(&format!(": write it in quotes, {f} = \"{inner}\""));
                }
            }
            return s;
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        if let Some((got, one_of)) = rest.split_once(", expected ") {
            let got = got.trim().trim_matches('`');
            let choices = one_of.trim_start_matches("one of ").replace('`', "\"");
            return format!("unknown value \"{got}\": expected {choices}");
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        if let Some((got, one_of)) = rest.split_once(", expected ") {
            let here = if path.len() > 1 {
                dotted(&path[..path.len() - 1])
            } else {
                "this table".into()
            };
            let fields = one_of.trim_start_matches("one of ").replace('`', "");
            return format!("unknown field {got}: the fields of {here} are {fields}");
        }
    }
    if let Some(m) = missing_field(msg) {
        let here = dotted(path);
        return format!("`{m}` is missing: every {} needs it", table_words(&here));
    }
    msg.to_string()
}

/// `rules[2]` → `[[rules]] entry`, `storage.influxdb` → `[storage.influxdb] table`.
fn table_words(dotted_path: &str) -> String {
    match dotted_path.rsplit_once('[') {
        Some((array, _)) => format!("[[{array}]] entry"),
        None if dotted_path.is_empty() => "configuration".into(),
        None => format!("[{dotted_path}] table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<ConfigError> {
        parse_all(text, "c.toml").unwrap_err()
    }

    const RULE: &str = "[[rules]]\nname = \"hot\"\nseries = \"#\"\nkind = \"threshold\"\n";

    #[test]
    fn a_quoted_number_names_field_line_and_the_fix() {
        let e = all(&format!("{RULE}above = \"35\"\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field.as_deref(), Some("rules[0].above"));
        assert_eq!(e[0].line, Some(5));
        assert_eq!(
            e[0].message,
            "expected a number (such as 35 or 35.5), found the text \"35\": write it without quotes, above = 35"
        );
        assert_eq!(
            e[0].to_string(),
            "c.toml:5:9: rules[0].above: expected a number (such as 35 or 35.5), found the text \"35\": write it without quotes, above = 35"
        );
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let text = format!(
            "[broker]\nlisten_on = \"x\"\n\n[engine]\ntick = \"soon\"\n\n{RULE}above = \"35\"\n\n\
             [[rules]]\nname = \"b\"\nseries = \"#\"\nkind = \"thresold\"\nabove = 1.0\n\n\
             [[rules]]\nname = \"c\"\nseries = \"#\"\nkind = \"threshold\"\nabove = 1.0\nclear = 2.0\n\n\
             [[rules]]\nname = \"d\"\nseries = \"#\"\nabove = 1.0\n\n\
             [[rules]]\nname = \"e\"\nseries = \"#\"\nkind = \"threshold\"\nabove = 1.0\nnotify = [\"slack\"]\n"
        );
        let e = all(&text);
        let got: Vec<(Option<&str>, Option<usize>)> =
            e.iter().map(|e| (e.field.as_deref(), e.line)).collect();
        assert_eq!(
            got,
            [
                (Some("broker.listen_on"), Some(2)),
                (Some("engine.tick"), Some(5)),
                (Some("rules[0].above"), Some(11)),
                (Some("rules[1].kind"), Some(16)),
                (Some("rules[2].clear"), Some(24)),
                (Some("rules[3].kind"), Some(26)),
                (Some("rules[4].notify[0]"), Some(36)),
            ],
            "{e:#?}"
        );
        assert!(e[1].message.contains("soon"), "{}", e[1]);
        assert_eq!(
            e[3].message,
            "unknown value \"thresold\": expected \"threshold\", \"rate\", \"window\", \"deadman\""
        );
        assert_eq!(
            e[5].message,
            "`kind` is missing: every [[rules]] entry needs it"
        );
        assert!(
            e[0].message
                .contains("the fields of broker are mode, listen"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn wrong_types_in_words() {
        let e = all("[broker]\nallow_anonymous = \"true\"\nmax_payload = 1.5\nclient_id = 7\n");
        let m: Vec<&str> = e.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            m,
            [
                "expected true or false, found the text \"true\": write it without quotes, allow_anonymous = true",
                "expected a whole number (such as 10), found the number 1.5",
                "expected text in quotes, found the number 7: write it in quotes, client_id = \"7\"",
            ],
            "{e:#?}"
        );
    }

    #[test]
    fn a_syntax_error_is_reported_alone() {
        let e = all("[broker\nlisten = 1\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(1));
    }

    #[test]
    fn a_valid_file_parses() {
        assert!(parse_all(&format!("{RULE}above = 35\n"), "c.toml").is_ok());
    }
}
