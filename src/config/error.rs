//! [`ConfigError`]: a configuration problem with its file, line, column and dotted
//! field path; how a serde error and a validation problem ([`Invalid`]) are placed in
//! the TOML source.

use std::fmt;

/// A configuration problem, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column, when the position is known.
    pub line: Option<usize>,
    pub col: Option<usize>,
    /// Dotted path of the field: `rules[1].clear`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        match (self.line, self.col) {
            (Some(l), Some(c)) => write!(f, ":{l}:{c}")?,
            (Some(l), None) => write!(f, ":{l}")?,
            _ => {}
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem of a file, in file order (at least one).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A validation problem before it is placed in the file: the field path as a list of
/// keys and indices, and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub path: Vec<PathPart>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathPart {
    Key(String),
    Index(usize),
}

impl Invalid {
    pub fn new(path: &[PathPart], message: impl Into<String>) -> Self {
        Self {
            path: path.to_vec(),
            message: message.into(),
        }
    }
}

pub fn key(k: &str) -> PathPart {
    PathPart::Key(k.to_string())
}

pub(super) fn dotted(path: &[PathPart]) -> String {
    let mut s = String::new();
    for p in path {
        match p {
            PathPart::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathPart::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

pub(super) fn from_toml_error(e: &toml::de::Error, text: &str, file: &str) -> ConfigError {
    let (line, col) = position(text, e.span());
    ConfigError {
        file: file.into(),
        line,
        col,
        field: None,
        message: e.message().to_string(),
    }
}

/// 1-based line and column of a byte offset.
/// Line and column (from 1) where `span` starts in `text`, when there is a span.
fn position(text: &str, span: Option<std::ops::Range<usize>>) -> (Option<usize>, Option<usize>) {
    match span.map(|s| line_col(text, s.start)) {
        Some((l, c)) => (Some(l), Some(c)),
        None => (None, None),
    }
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Finds where `problem.path` is in the TOML source; falls back to its nearest parent.
pub(super) fn place(problem: Invalid, text: &str, file: &str) -> ConfigError {
    let span = toml_edit::ImDocument::parse(text.to_string())
        .ok()
        .and_then(|doc| {
            let mut best = None;
            let mut item: &toml_edit::Item = doc.as_item();
            for part in &problem.path {
                let next = match part {
                    PathPart::Key(k) => item.get(k.as_str()),
                    PathPart::Index(i) => match item {
                        toml_edit::Item::ArrayOfTables(a) => {
                            if let Some(t) = a.get(*i) {
                                best = t.span().or(best);
                            }
                            item.get(*i)
                        }
                        toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
                            // Values inside an array are not items: take the value's span and stop.
                            if let Some(v) = a.get(*i) {
                                best = v.span().or(best);
                            }
                            None
                        }
                        _ => None,
                    },
                };
                match next {
                    Some(n) => {
                        item = n;
                        if let Some(s) = item.span() {
                            best = Some(s);
                        } else if let toml_edit::Item::Table(t) = item {
                            best = t.span().or(best);
                        }
                    }
                    None => break,
                }
            }
            best
        });
    let (line, col) = position(text, span);
    ConfigError {
        file: file.into(),
        line,
        col,
        field: Some(dotted(&problem.path)),
        message: problem.message,
    }
}
