//! Message rendering for alert events: the rule's `message` and `message_resolved`
//! templates (or a default per kind), human durations, and the log line of each
//! event. Numbers are written by [`crate::format`]. Only runs when an event is
//! emitted, never per reading.

use super::rule::{agg_name, Dir, Kind};
use crate::format::num as fmt_num;
use crate::model::{AlertEvent, AlertState, Severity};

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
    /// The value that resolves a firing alert, threshold and window rules.
    Clear,
    /// How long the alert was firing (or pending) before this event.
    Lasted,
    Duration,
    Rule,
    State,
    Severity,
}

impl Template {
    /// Parses `{series}`, `{value}`, `{unit}`, `{threshold}`, `{clear}`, `{lasted}`,
    /// `{duration}`, `{rule}`, `{state}`, `{severity}`; anything else in braces stays
    /// as written.
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
                    "clear" => Var::Clear,
                    "lasted" => Var::Lasted,
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
                        // After a space, as everywhere: "21.8 °C", "3.901 V".
                        if let Some(u) = c.unit.map(str::trim).filter(|u| !u.is_empty()) {
                            out.push(' ');
                            out.push_str(u);
                        }
                    }
                    Var::Threshold => out.push_str(&threshold_text(c.kind, c.value)),
                    Var::Clear => out.push_str(&clear_text(c.kind)),
                    Var::Lasted => {
                        out.push_str(&c.lasted.map_or_else(|| "a while".into(), human_ms))
                    }
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
    /// How long the alert was in its previous state (firing, or pending), when known.
    pub lasted: Option<i64>,
}

/// `{clear}`: where a firing alert resolves.
fn clear_text(kind: &Kind) -> String {
    match kind {
        Kind::Threshold { clear, .. } | Kind::Window { clear, .. } => fmt_num(*clear),
        Kind::Rate { .. } | Kind::Deadman { .. } => String::new(),
    }
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

/// The default texts of a rule without `message` / `message_resolved`.
pub(crate) struct Defaults {
    pub active: String,
    /// Rate rules, when the value fell.
    pub active_down: String,
    pub resolved: String,
    /// A pending alert whose condition went away before `for` passed.
    pub cancelled: String,
}

/// The default texts per kind: "gh/n1/t is 35.2 °C, above 35 for 20s", and once
/// resolved "gh/n1/t is back to 21.8 °C (clear below 33) after 4m firing".
pub(crate) fn default_templates(kind: &Kind, for_ms: i64) -> Defaults {
    let held = if for_ms > 0 { " for {duration}" } else { "" };
    let clear_word = |dir: &Dir| match dir {
        Dir::Above => "clear below {clear}",
        Dir::Below => "clear above {clear}",
    };
    let cancelled =
        "{series} is back to {value}{unit} after {lasted} pending: cancelled, never fired";
    match kind {
        Kind::Threshold { dir, .. } => {
            let a = format!(
                "{{series}} is {{value}}{{unit}}, {} {{threshold}}{held}",
                dir.word()
            );
            Defaults {
                active: a.clone(),
                active_down: a,
                resolved: format!(
                    "{{series}} is back to {{value}}{{unit}} ({}) after {{lasted}} firing",
                    clear_word(dir)
                ),
                cancelled: cancelled.into(),
            }
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
            Defaults {
                active: a.clone(),
                active_down: a,
                resolved: format!(
                    "{name} of {{series}} over {{duration}} is back to {{value}}{unit} ({}) after {{lasted}} firing",
                    clear_word(dir)
                ),
                cancelled: format!(
                    "{name} of {{series}} over {{duration}} is back to {{value}}{unit} after {{lasted}} pending: cancelled, never fired"
                ),
            }
        }
        Kind::Rate { .. } => Defaults {
            active: "{series} rose by {abs_value}{unit} within {duration}, more than {threshold}"
                .into(),
            active_down:
                "{series} fell by {abs_value}{unit} within {duration}, more than {threshold}".into(),
            resolved:
                "{series} is steady again: changed by {value}{unit} within {duration}, after {lasted} firing"
                    .into(),
            cancelled:
                "{series} is steady again: changed by {value}{unit} within {duration}, after {lasted} pending: cancelled, never fired"
                    .into(),
        },
        Kind::Deadman { .. } => Defaults {
            active: "{series} has sent nothing for {duration}".into(),
            active_down: "{series} has sent nothing for {duration}".into(),
            resolved: "{series} reports again: {value}{unit}, after {lasted} firing".into(),
            cancelled: cancelled.into(),
        },
    }
}

/// Writes one alert event to the log as one line, with the rule, series, value and
/// state as fields, so the journal tells the story without any channel configured.
/// Firing (and repeat, flapping) of a critical rule is a warning; pending and
/// cancelled, which nobody is told about, are debug; everything else is info.
pub fn log_event(e: &AlertEvent) {
    let value = crate::format::opt_with_unit(e.value, e.unit.as_deref());
    let value = if value.is_empty() {
        "-".to_string()
    } else {
        value
    };
    let notify = if e.notify.is_empty() {
        "-".to_string()
    } else {
        e.notify.join(",")
    };
    let (rule, series, state, severity) = (&e.rule, &e.series, e.state, e.severity);
    let text = e.message.split_whitespace().collect::<Vec<_>>().join(" ");
    match e.state {
        AlertState::Firing | AlertState::Repeat | AlertState::Flapping
            if e.severity == Severity::Critical =>
        {
            tracing::warn!(target: "centinela::alert", %rule, %series, %value, %state, %severity, %notify, "alert {state}: {text}");
        }
        AlertState::Pending | AlertState::Cancelled | AlertState::Ok => {
            tracing::debug!(target: "centinela::alert", %rule, %series, %value, %state, %severity, %notify, "alert {state}: {text}");
        }
        _ => {
            tracing::info!(target: "centinela::alert", %rule, %series, %value, %state, %severity, %notify, "alert {state}: {text}");
        }
    }
}

/// Logs that a new silence holds the notifications of an alert that is not ok: one
/// line per alert, like [`log_event`].
pub(crate) fn log_silenced(
    rule: &str,
    series: &str,
    state: AlertState,
    value: Option<f64>,
    unit: Option<&str>,
    until: &str,
    by: &str,
) {
    let value = crate::format::opt_with_unit(value, unit);
    let value = if value.is_empty() {
        "-".to_string()
    } else {
        value
    };
    tracing::info!(target: "centinela::alert", %rule, %series, %value, %state, %until, %by, "alert silenced: {rule}/{series} ({state}) held until {until}");
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
            lasted: None,
        };
        assert_eq!(
            t.render(&c),
            "hot: gh/a/t {nope} 31.2 °C > 30 (critical, firing) {"
        );
    }
}
