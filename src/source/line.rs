//! InfluxDB line protocol in: what Telegraf's MQTT output (and anything else speaking
//! line protocol) publishes, parsed into points. Pure: text in, points out.
//!
//! `measurement[,tag=value…] field=value[,field=value…] [timestamp]`, one point a line,
//! several lines a message. Escaping as InfluxDB reads it: in measurements `\,` and
//! `\ `; in tag keys, tag values and field keys also `\=`; a backslash before anything
//! else is kept as it is. Field values: floats (`97.5`, `-1e3`), integers (`12i`),
//! unsigned integers (`12u`), booleans (`t`, `true`, `True`, `TRUE`, `f`, …) and
//! double-quoted strings (`\"` and `\\` escaped; they may span lines). The timestamp is
//! nanoseconds since the epoch. Empty lines and `#` comments are skipped.
//!
//! A line that does not parse makes the whole message a [`LineError`] naming the line
//! and what was wrong; nothing of it is kept.

use std::borrow::Cow;

/// One field's value, as readings see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue {
    /// Floats, integers, unsigned integers; booleans as 1/0.
    Number(f64),
    /// A string field: no reading, counted as a skipped field.
    Text,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Point<'a> {
    pub measurement: Cow<'a, str>,
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub fields: Vec<(Cow<'a, str>, FieldValue)>,
    /// Nanoseconds since the epoch, when the line has a timestamp.
    pub ts_ns: Option<i64>,
}

/// Why a message is not line protocol.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    /// 1-based line number within the message.
    pub line: usize,
    pub message: String,
}

/// Parses every line of `text`.
pub fn parse(text: &str) -> Result<Vec<Point<'_>>, LineError> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        i: 0,
        line: 1,
    };
    let mut out = Vec::new();
    loop {
        p.skip_blank_and_comments();
        if p.i >= p.s.len() {
            break;
        }
        out.push(p.point()?);
    }
    Ok(out)
}

/// Whether `text` looks like line protocol rather than a plain value: a measurement,
/// a space, then `key=`. Used by `format = "auto"`.
pub fn looks_like(text: &str) -> bool {
    let first = text.lines().next().unwrap_or("");
    let b = first.as_bytes();
    if b.is_empty() || !(b[0].is_ascii_alphabetic() || b[0] == b'_') {
        return false;
    }
    // The first unescaped space ends measurement and tags; a `=` must follow it.
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b' ' => return b[i + 1..].contains(&b'='),
            _ => i += 1,
        }
    }
    false
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    line: usize,
}

/// Which characters end a name and which may be escaped in it.
#[derive(Clone, Copy)]
enum Name {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl<'a> Parser<'a> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, LineError> {
        Err(LineError {
            line: self.line,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_blank_and_comments(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b'\n' => {
                    self.line += 1;
                    self.i += 1;
                }
                b' ' | b'\t' | b'\r' => self.i += 1,
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn point(&mut self) -> Result<Point<'a>, LineError> {
        let measurement = self.name(Name::Measurement);
        if measurement.is_empty() {
            return self.err("missing measurement");
        }
        let mut tags = Vec::new();
        while self.peek() == Some(b',') {
            self.i += 1;
            let k = self.name(Name::TagKey);
            if self.peek() != Some(b'=') {
                return self.err(format!("tag {k:?} has no '='"));
            }
            self.i += 1;
            let v = self.name(Name::TagValue);
            if k.is_empty() || v.is_empty() {
                return self.err("empty tag key or value");
            }
            tags.push((k, v));
        }
        if self.peek() != Some(b' ') {
            return self.err(format!("no fields after {measurement:?}"));
        }
        self.i += 1;
        let mut fields = Vec::new();
        loop {
            let k = self.name(Name::FieldKey);
            if k.is_empty() {
                return self.err("empty field key");
            }
            if self.peek() != Some(b'=') {
                return self.err(format!("field {k:?} has no '='"));
            }
            self.i += 1;
            let v = self.field_value(&k)?;
            fields.push((k, v));
            match self.peek() {
                Some(b',') => self.i += 1,
                _ => break,
            }
        }
        let mut ts_ns = None;
        if self.peek() == Some(b' ') {
            while self.peek() == Some(b' ') {
                self.i += 1;
            }
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'-') {
                self.i += 1;
            }
            if self.i > start {
                let t = &self.text[start..self.i];
                match t.parse::<i64>() {
                    Ok(v) => ts_ns = Some(v),
                    Err(_) => return self.err(format!("bad timestamp {t:?}")),
                }
            }
        }
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.i += 1;
        }
        match self.peek() {
            None | Some(b'\n') => {}
            Some(_) => {
                let rest: String = self.text[self.i..].chars().take(20).collect();
                return self.err(format!("unexpected {rest:?} after the fields"));
            }
        }
        Ok(Point {
            measurement,
            tags,
            fields,
            ts_ns,
        })
    }

    /// Reads a name up to its unescaped delimiter; borrowed unless it had escapes.
    fn name(&mut self, kind: Name) -> Cow<'a, str> {
        let start = self.i;
        let mut owned: Option<String> = None;
        let mut from = start;
        while let Some(c) = self.peek() {
            let ends = match kind {
                Name::Measurement => c == b',' || c == b' ',
                Name::TagKey | Name::TagValue | Name::FieldKey => {
                    c == b',' || c == b' ' || c == b'='
                }
            };
            if ends || c == b'\n' {
                break;
            }
            if c == b'\\' {
                let next = self.s.get(self.i + 1).copied();
                let escapable = match kind {
                    Name::Measurement => matches!(next, Some(b',' | b' ')),
                    _ => matches!(next, Some(b',' | b' ' | b'=')),
                };
                if escapable {
                    let o = owned.get_or_insert_with(String::new);
                    o.push_str(&self.text[from..self.i]);
                    from = self.i + 1;
                    self.i += 2;
                    continue;
                }
            }
            self.i += 1;
        }
        match owned {
            None => Cow::Borrowed(&self.text[start..self.i]),
            Some(mut o) => {
                o.push_str(&self.text[from..self.i]);
                Cow::Owned(o)
            }
        }
    }

    fn field_value(&mut self, key: &str) -> Result<FieldValue, LineError> {
        if self.peek() == Some(b'"') {
            self.i += 1;
            loop {
                match self.peek() {
                    None => return self.err(format!("field {key:?}: unterminated string")),
                    Some(b'\\') => self.i += 2,
                    Some(b'"') => {
                        self.i += 1;
                        return Ok(FieldValue::Text);
                    }
                    Some(b'\n') => {
                        self.line += 1;
                        self.i += 1;
                    }
                    Some(_) => self.i += 1,
                }
            }
        }
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| !matches!(c, b',' | b' ' | b'\n'))
        {
            self.i += 1;
        }
        let v = &self.text[start..self.i];
        let n = match v {
            "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Number(1.0)),
            "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Number(0.0)),
            "" => return self.err(format!("field {key:?} has no value")),
            _ => v,
        };
        let numeric = |s: &str| {
            s.bytes()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == b'-' || c == b'+' || c == b'.')
                && !s
                    .bytes()
                    .any(|c| c.is_ascii_alphabetic() && c != b'e' && c != b'E')
        };
        let parsed = if let Some(i) = n.strip_suffix('i') {
            i.parse::<i64>().ok().map(|x| x as f64)
        } else if let Some(u) = n.strip_suffix('u') {
            u.parse::<u64>().ok().map(|x| x as f64)
        } else if numeric(n) {
            n.parse::<f64>().ok().filter(|f| f.is_finite())
        } else {
            None
        };
        match parsed {
            Some(f) => Ok(FieldValue::Number(f)),
            None => {
                let shown: String = v.chars().take(20).collect();
                self.err(format!(
                    "field {key:?}: {shown:?} is not a number, boolean or string"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Flat = Vec<(
        String,
        Vec<(String, String)>,
        Vec<(String, FieldValue)>,
        Option<i64>,
    )>;

    fn flat(text: &str) -> Result<Flat, String> {
        parse(text)
            .map(|ps| {
                ps.into_iter()
                    .map(|p| {
                        (
                            p.measurement.into_owned(),
                            p.tags
                                .into_iter()
                                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                                .collect(),
                            p.fields
                                .into_iter()
                                .map(|(k, v)| (k.into_owned(), v))
                                .collect(),
                            p.ts_ns,
                        )
                    })
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    fn n(k: &str, v: f64) -> (String, FieldValue) {
        (k.to_string(), FieldValue::Number(v))
    }

    fn tag(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn good_lines() {
        let cases: Vec<(&str, Flat)> = vec![
            (
                "cpu,host=h1 usage_idle=97.5,usage_user=1.2 1764583200000000000",
                vec![(
                    "cpu".into(),
                    vec![tag("host", "h1")],
                    vec![n("usage_idle", 97.5), n("usage_user", 1.2)],
                    Some(1_764_583_200_000_000_000),
                )],
            ),
            ("m v=1", vec![("m".into(), vec![], vec![n("v", 1.0)], None)]),
            (
                "mem total=8589934592i,free=12u,ratio=-1.5e3",
                vec![(
                    "mem".into(),
                    vec![],
                    vec![
                        n("total", 8_589_934_592.0),
                        n("free", 12.0),
                        n("ratio", -1500.0),
                    ],
                    None,
                )],
            ),
            (
                "door open=true,locked=F,x=t,y=FALSE,z=True",
                vec![(
                    "door".into(),
                    vec![],
                    vec![
                        n("open", 1.0),
                        n("locked", 0.0),
                        n("x", 1.0),
                        n("y", 0.0),
                        n("z", 1.0),
                    ],
                    None,
                )],
            ),
            (
                r#"sys uptime_format="1 day, 2:03",load1=0.5 1700000000000000000"#,
                vec![(
                    "sys".into(),
                    vec![],
                    vec![("uptime_format".into(), FieldValue::Text), n("load1", 0.5)],
                    Some(1_700_000_000_000_000_000),
                )],
            ),
            (
                r#"my\ meas\,x,tag\ key=tag\,val\=ue fi\=eld\ k=1 5"#,
                vec![(
                    "my meas,x".into(),
                    vec![tag("tag key", "tag,val=ue")],
                    vec![n("fi=eld k", 1.0)],
                    Some(5),
                )],
            ),
            (
                r"path\x,dir=C:\temp v=2",
                vec![(
                    "path\\x".into(),
                    vec![tag("dir", "C:\\temp")],
                    vec![n("v", 2.0)],
                    None,
                )],
            ),
            (
                "# a comment\n\ncpu v=1 1\n  \r\ncpu v=2 2\n",
                vec![
                    ("cpu".into(), vec![], vec![n("v", 1.0)], Some(1)),
                    ("cpu".into(), vec![], vec![n("v", 2.0)], Some(2)),
                ],
            ),
            (
                "log msg=\"two\nlines \\\" quoted\",n=3i 7\nnext v=4",
                vec![
                    (
                        "log".into(),
                        vec![],
                        vec![("msg".into(), FieldValue::Text), n("n", 3.0)],
                        Some(7),
                    ),
                    ("next".into(), vec![], vec![n("v", 4.0)], None),
                ],
            ),
            (
                "neg v=-3i -1000",
                vec![("neg".into(), vec![], vec![n("v", -3.0)], Some(-1000))],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(flat(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn bad_lines_name_the_line() {
        let cases: &[(&str, &str)] = &[
            ("cpu", "line 1: no fields"),
            ("cpu ", "line 1: empty field key"),
            ("cpu v", "line 1: field \"v\" has no '='"),
            ("cpu v=", "line 1: field \"v\" has no value"),
            ("cpu v=abc", "line 1: field \"v\": \"abc\" is not"),
            ("cpu v=NaN", "line 1: field \"v\": \"NaN\" is not"),
            ("cpu v=inf", "line 1: field \"v\": \"inf\" is not"),
            ("cpu v=1.5i", "line 1: field \"v\": \"1.5i\" is not"),
            ("cpu v=-1u", "line 1: field \"v\": \"-1u\" is not"),
            ("cpu v=\"open", "line 1: field \"v\": unterminated string"),
            ("cpu,host v=1", "line 1: tag \"host\" has no '='"),
            ("cpu,=x v=1", "line 1: empty tag key or value"),
            (
                "ok v=1\ncpu v=1 12x",
                "line 2: unexpected \"x\" after the fields",
            ),
            ("ok v=1\n\n,t=1 v=1", "line 3: missing measurement"),
            ("cpu v=1 99999999999999999999", "line 1: bad timestamp"),
        ];
        for (text, want) in cases {
            let got = flat(text).unwrap_err();
            assert!(got.starts_with(want), "{text:?}: {got}");
        }
    }

    #[test]
    fn detection() {
        assert!(looks_like("cpu,host=h1 usage_idle=97.5"));
        assert!(looks_like("weather temperature=21.5 1700000000000000000"));
        assert!(looks_like(r"my\ m v=1"));
        assert!(!looks_like("21.5"));
        assert!(!looks_like("ON"));
        assert!(!looks_like("hello world"));
        assert!(!looks_like("1cpu v=1"));
        assert!(!looks_like(""));
    }
}
