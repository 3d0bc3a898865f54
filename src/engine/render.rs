//! Message rendering for alert events: the rule's `message` template (or a default
//! per kind), compact numbers and human durations. Only runs when an event is
//! emitted, never per reading.

use super::rule::{agg_name, Kind};
use crate::model::AlertState;

/// A parsed `message` template: literal text and `{placeholders}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template(Vec<Seg>);

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    Var(Var),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Var {
    Series,
    Value,
    /// |value|: for the default "fell by" message of rate rules.
    AbsValue,
    Unit,
    Threshold,
    Duration,
    Rule,
    State,
    Severity,
}

impl Template {
    /// Parses `{series}`, `{value}`, `{unit}`, `{threshold}`, `{duration}`, `{rule}`,
    /// `{state}`, `{severity}`; anything else in braces stays as written.
    pub(crate) fn parse(s: &str) -> Template {
        let mut segs = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            lit.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let var = after.find('}').and_then(|close| {
                let v = match &after[..close] {
                    "series" => Var::Series,
                    "value" => Var::Value,
                    "abs_value" => Var::AbsValue,
                    "unit" => Var::Unit,
                    "threshold" => Var::Threshold,
                    "duration" => Var::Duration,
                    "rule" => Var::Rule,
                    "state" => Var::State,
                    "severity" => Var::Severity,
                    _ => return None,
                };
                Some((v, close))
            });
            match var {
                Some((v, close)) => {
                    if !lit.is_empty() {
                        segs.push(Seg::Lit(std::mem::take(&mut lit)));
                    }
                    segs.push(Seg::Var(v));
                    rest = &after[close + 1..];
                }
                None => {
                    lit.push('{');
                    rest = after;
                }
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            segs.push(Seg::Lit(lit));
        }
        Template(segs)
    }

    pub(crate) fn render(&self, c: &Ctx<'_>) -> String {
        let mut out = String::with_capacity(64);
        for seg in &self.0 {
            match seg {
                Seg::Lit(s) => out.push_str(s),
                Seg::Var(v) => match v {
                    Var::Series => out.push_str(c.series),
                    Var::Value => out.push_str(&c.value.map_or_else(|| "n/a".to_string(), fmt_num)),
                    Var::AbsValue => out.push_str(
                        &c.value
                            .map_or_else(|| "n/a".to_string(), |v| fmt_num(v.abs())),
                    ),
                    Var::Unit => {
                        if let Some(u) = c.unit.filter(|u| !u.is_empty()) {
                            // "31.2°C", "40%", but "1013 hPa".
                            if !(u.starts_with('°') || u == "%") {
                                out.push(' ');
                            }
                            out.push_str(u);
                        }
                    }
                    Var::Threshold => out.push_str(&threshold_text(c.kind, c.value)),
                    Var::Duration => out.push_str(&human_ms(duration_of(c.kind, c.for_ms))),
                    Var::Rule => out.push_str(c.rule),
                    Var::State => out.push_str(c.state.as_str()),
                    Var::Severity => out.push_str(c.severity),
                },
            }
        }
        out
    }
}

/// What a template is rendered with.
pub(crate) struct Ctx<'a> {
    pub rule: &'a str,
    pub series: &'a str,
    pub kind: &'a Kind,
    pub for_ms: i64,
    pub state: AlertState,
    pub severity: &'a str,
    pub value: Option<f64>,
    pub unit: Option<&'a str>,
}

fn threshold_text(kind: &Kind, value: Option<f64>) -> String {
    match kind {
        Kind::Threshold { threshold, .. } | Kind::Window { threshold, .. } => fmt_num(*threshold),
        Kind::Rate { rise, fall, .. } => {
            let falling = value.is_some_and(|v| v < 0.0);
            match (rise, fall) {
                (Some(r), Some(f)) => fmt_num(if falling { *f } else { *r }),
                (Some(x), None) | (None, Some(x)) => fmt_num(*x),
                (None, None) => String::new(),
            }
        }
        Kind::Deadman { silence, .. } => human_ms(*silence),
    }
}

/// `{duration}`: `for` for threshold rules, the window for rate and window rules, the
/// silence for deadman rules.
fn duration_of(kind: &Kind, for_ms: i64) -> i64 {
    match kind {
        Kind::Threshold { .. } => for_ms,
        Kind::Window { window, .. } | Kind::Rate { window, .. } => *window,
        Kind::Deadman { silence, .. } => *silence,
    }
}

/// (active, active when the value fell — rate rules only, resolved) default templates.
pub(crate) fn default_templates(kind: &Kind, for_ms: i64) -> (String, String, String) {
    let held = if for_ms > 0 { " for {duration}" } else { "" };
    match kind {
        Kind::Threshold { dir, .. } => {
            let a = format!(
                "{{series}} is {{value}}{{unit}}, {} {{threshold}}{held}",
                dir.word()
            );
            (a.clone(), a, "{series} is back to {value}{unit}".into())
        }
        Kind::Window { agg, dir, .. } => {
            let unit = if matches!(agg, crate::config::Agg::Count) {
                ""
            } else {
                "{unit}"
            };
            let name = agg_name(*agg);
            let a = format!(
                "{name} of {{series}} over {{duration}} is {{value}}{unit}, {} {{threshold}}",
                dir.word()
            );
            (
                a.clone(),
                a,
                format!("{name} of {{series}} over {{duration}} is back to {{value}}{unit}"),
            )
        }
        Kind::Rate { .. } => (
            "{series} rose by {abs_value}{unit} within {duration}, more than {threshold}".into(),
            "{series} fell by {abs_value}{unit} within {duration}, more than {threshold}".into(),
            "{series} is steady again: changed by {value}{unit} within {duration}".into(),
        ),
        Kind::Deadman { .. } => {
            let a = "{series} has sent nothing for {duration}".to_string();
            (a.clone(), a, "{series} reports again: {value}{unit}".into())
        }
    }
}

/// A number as a person writes it: at most 6 significant digits, no trailing zeros
/// (`31.2`, not `31.200000001`; `1013`, `0.0042`, `-3.5`).
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-4..1e15).contains(&a) {
        let s = format!("{v:.5e}");
        // "1.50000e20" → "1.5e20"
        return match s.split_once('e') {
            Some((m, e)) if m.contains('.') => {
                format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
            }
            _ => s,
        };
    }
    let int_digits = a.log10().floor() as i32 + 1;
    let decimals = (6 - int_digits).clamp(0, 10) as usize;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// A duration for people: the two largest units, `2m`, `1h 30m`, `3d 4h`, `250ms`.
pub fn human_ms(ms: i64) -> String {
    if ms <= 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let parts = [
        (s / 86_400, "d"),
        (s / 3600 % 24, "h"),
        (s / 60 % 60, "m"),
        (s % 60, "s"),
    ];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    let mut out = String::new();
    for (n, u) in parts.iter().skip(first).take(2) {
        if *n > 0 {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&format!("{n}{u}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_compact() {
        assert_eq!(fmt_num(31.200000001), "31.2");
        assert_eq!(fmt_num(30.0), "30");
        assert_eq!(fmt_num(-3.5), "-3.5");
        assert_eq!(fmt_num(1013.25), "1013.25");
        assert_eq!(fmt_num(0.0042), "0.0042");
        assert_eq!(fmt_num(1234567.8), "1234568");
        assert_eq!(fmt_num(-0.0000001), "-1e-7");
        assert_eq!(fmt_num(0.1 + 0.2), "0.3");
        assert_eq!(fmt_num(-0.0), "0");
    }

    #[test]
    fn durations_are_human() {
        assert_eq!(human_ms(120_000), "2m");
        assert_eq!(human_ms(5_400_000), "1h 30m");
        assert_eq!(human_ms(90_061_000), "1d 1h");
        assert_eq!(human_ms(45_000), "45s");
        assert_eq!(human_ms(250), "250ms");
        assert_eq!(human_ms(3_600_000 + 5_000), "1h");
        assert_eq!(human_ms(0), "0s");
    }

    #[test]
    fn unknown_placeholders_stay_as_written() {
        let k = Kind::Threshold {
            dir: super::super::rule::Dir::Above,
            threshold: 30.0,
            clear: 30.0,
        };
        let t = Template::parse(
            "{rule}: {series} {nope} {value}{unit} > {threshold} ({severity}, {state}) {",
        );
        let c = Ctx {
            rule: "hot",
            series: "gh/a/t",
            kind: &k,
            for_ms: 0,
            state: AlertState::Firing,
            severity: "critical",
            value: Some(31.2000001),
            unit: Some("°C"),
        };
        assert_eq!(
            t.render(&c),
            "hot: gh/a/t {nope} 31.2°C > 30 (critical, firing) {"
        );
    }
}
