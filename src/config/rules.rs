//! `[[rules]]`: what a user writes; the engine compiles it (see `engine`).

use serde::Deserialize;

use super::{key, Duration, IngestConfig, Invalid, PathPart};
use crate::model::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    Threshold,
    Rate,
    Window,
    Deadman,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Agg {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    /// max − min: a stuck sensor has a spread of (nearly) zero.
    Spread,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique; with the series it identifies an alert.
    pub name: String,
    /// Series pattern with MQTT wildcards, relative to the ingest prefix.
    pub series: String,
    pub kind: RuleKind,
    pub above: Option<f64>,
    pub below: Option<f64>,
    /// Hysteresis: the value that resolves (default: the threshold itself).
    pub clear: Option<f64>,
    /// The condition must hold this long (event time) before firing.
    #[serde(rename = "for")]
    pub for_: Option<Duration>,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default)]
    pub notify: Vec<String>,
    /// Re-notify while firing and not acknowledged.
    pub repeat: Option<Duration>,
    /// Template of pending, firing and repeat events: `{series}`, `{value}`, `{unit}`,
    /// `{threshold}`, `{clear}`, `{duration}`, `{lasted}`, `{rule}`, `{state}`, `{severity}`.
    pub message: Option<String>,
    /// Template of the resolved event (same placeholders; `{lasted}` is how long it
    /// fired). Default per kind: "… is back to 21.8 °C (clear below 33) after 4m firing".
    pub message_resolved: Option<String>,
    /// rate and window rules: how far back to look.
    pub window: Option<Duration>,
    /// rate: on when the value rose by more than this over the window.
    pub rise: Option<f64>,
    /// rate: on when the value fell by more than this over the window.
    pub fall: Option<f64>,
    /// window: the aggregate compared with `above`/`below`.
    pub agg: Option<Agg>,
    /// deadman: no reading for this long (wall clock) fires.
    pub silence: Option<Duration>,
    /// deadman: series that must report even if never seen.
    #[serde(default)]
    pub expect: Vec<String>,
}

impl RuleConfig {
    pub(super) fn validate(
        &self,
        at: &[PathPart],
        channels: &[&str],
        ingest: &IngestConfig,
    ) -> Vec<Invalid> {
        let mut out = Vec::new();
        let field = |name: &str| {
            let mut p = at.to_vec();
            p.push(key(name));
            p
        };
        let mut bad = |name: &str, msg: String| out.push(Invalid::new(&field(name), msg));

        if self.name.trim().is_empty() {
            bad("name", "a rule needs a name".into());
        }
        if let Err(e) = super::check_filter(&self.series) {
            bad("series", e);
        } else if !ingest
            .topics
            .iter()
            .any(|t| filters_overlap(t, &under_prefix(&ingest.prefix, &self.series)))
            && !ingest
                .map
                .iter()
                .filter_map(|m| m.series_pattern())
                .any(|p| filters_overlap(&p, &self.series))
        {
            bad(
                "series",
                format!(
                    "{:?} can never match: under prefix {:?} it is {:?}, which no ingest topic ({}) covers",
                    self.series,
                    ingest.prefix,
                    under_prefix(&ingest.prefix, &self.series),
                    ingest.topics.join(", ")
                ),
            );
        }
        for (name, d) in [
            ("for", self.for_),
            ("repeat", self.repeat),
            ("window", self.window),
            ("silence", self.silence),
        ] {
            if d.is_some_and(Duration::is_zero) {
                bad(name, "must be longer than zero".into());
            }
        }
        for (name, v) in [
            ("above", self.above),
            ("below", self.below),
            ("clear", self.clear),
            ("rise", self.rise),
            ("fall", self.fall),
        ] {
            if v.is_some_and(|v| !v.is_finite()) {
                bad(name, "must be a finite number".into());
            }
        }
        let configured = if channels.is_empty() {
            "none".to_string()
        } else {
            channels.join(", ")
        };
        for (i, ch) in self.notify.iter().enumerate() {
            let mut p = field("notify");
            p.push(PathPart::Index(i));
            if !super::notify::CHANNEL_TYPES.contains(&ch.as_str()) {
                out.push(Invalid::new(
                    &p,
                    format!(
                        "there is no channel type {ch:?}: the channel types are {} (configured here: {configured})",
                        super::notify::CHANNEL_TYPES.join(", ")
                    ),
                ));
            } else if !channels.contains(&ch.as_str()) {
                out.push(Invalid::new(
                    &p,
                    format!(
                        "channel {ch:?} is not configured (configured: {configured}); add a [notify.{ch}] section"
                    ),
                ));
            }
        }
        let mut bad = |name: &str, msg: String| out.push(Invalid::new(&field(name), msg));
        let uses_threshold = matches!(self.kind, RuleKind::Threshold | RuleKind::Window);
        if uses_threshold {
            match (self.above, self.below) {
                (None, None) => bad(
                    "kind",
                    format!("a {} rule needs `above` or `below`", self.kind_name()),
                ),
                (Some(_), Some(_)) => bad(
                    "below",
                    "give `above` or `below`, not both (write two rules)".into(),
                ),
                (Some(a), None) => {
                    if let Some(c) = self.clear.filter(|c| *c > a) {
                        bad("clear", format!("clear = {c} is above the threshold {a}: for `above` it must be ≤ {a}"));
                    }
                }
                (None, Some(b)) => {
                    if let Some(c) = self.clear.filter(|c| *c < b) {
                        bad("clear", format!("clear = {c} is below the threshold {b}: for `below` it must be ≥ {b}"));
                    }
                }
            }
        } else {
            for (name, v) in [
                ("above", self.above),
                ("below", self.below),
                ("clear", self.clear),
            ] {
                if v.is_some() {
                    bad(
                        name,
                        format!("`{name}` has no meaning for a {} rule", self.kind_name()),
                    );
                }
            }
        }
        match self.kind {
            RuleKind::Threshold => {
                if self.window.is_some() {
                    bad(
                        "window",
                        "`window` has no meaning for a threshold rule (use kind = \"window\")"
                            .into(),
                    );
                }
            }
            RuleKind::Window => {
                if self.window.is_none() {
                    bad("kind", "a window rule needs `window`".into());
                }
                if self.agg.is_none() {
                    bad(
                        "kind",
                        "a window rule needs `agg` (avg, min, max, sum, count or spread)".into(),
                    );
                }
            }
            RuleKind::Rate => {
                if self.window.is_none() {
                    bad("kind", "a rate rule needs `window`".into());
                }
                if self.rise.is_none() && self.fall.is_none() {
                    bad("kind", "a rate rule needs `rise` and/or `fall`".into());
                }
                for (name, v) in [("rise", self.rise), ("fall", self.fall)] {
                    if v.is_some_and(|v| v < 0.0) {
                        bad(
                            name,
                            format!("`{name}` is a size of change and must be ≥ 0"),
                        );
                    }
                }
            }
            RuleKind::Deadman => {
                if self.silence.is_none() {
                    bad("kind", "a deadman rule needs `silence`".into());
                }
                for (i, s) in self.expect.iter().enumerate() {
                    if s.contains(['+', '#']) || !crate::model::topic_matches(&self.series, s) {
                        let mut p = field("expect");
                        p.push(PathPart::Index(i));
                        out.push(Invalid::new(
                            &p,
                            format!(
                                "{s:?} must be a plain series that `series` ({}) matches",
                                self.series
                            ),
                        ));
                    }
                }
            }
        }
        if self.kind != RuleKind::Deadman && !self.expect.is_empty() {
            out.push(Invalid::new(
                &field("expect"),
                "`expect` is for deadman rules",
            ));
        }
        if self.kind != RuleKind::Deadman && self.silence.is_some() {
            out.push(Invalid::new(
                &field("silence"),
                "`silence` is for deadman rules",
            ));
        }
        if self.kind != RuleKind::Window && self.agg.is_some() {
            out.push(Invalid::new(&field("agg"), "`agg` is for window rules"));
        }
        if self.kind != RuleKind::Rate && (self.rise.is_some() || self.fall.is_some()) {
            let name = if self.rise.is_some() { "rise" } else { "fall" };
            out.push(Invalid::new(
                &field(name),
                format!("`{name}` is for rate rules"),
            ));
        }
        out
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            RuleKind::Threshold => "threshold",
            RuleKind::Rate => "rate",
            RuleKind::Window => "window",
            RuleKind::Deadman => "deadman",
        }
    }
}

fn under_prefix(prefix: &str, pattern: &str) -> String {
    if prefix.is_empty() {
        pattern.to_string()
    } else {
        format!("{prefix}/{pattern}")
    }
}

/// Whether some topic matches both filters.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('/');
    let mut b = b.split('/');
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn err(rules: &str) -> crate::config::ConfigError {
        Config::parse(rules, "r.toml").unwrap_err()
    }

    #[test]
    fn clear_on_the_wrong_side_is_refused_with_line() {
        let e = err("[[rules]]\nname = \"hot\"\nseries = \"#\"\nkind = \"threshold\"\nabove = 30.0\nclear = 31.0\n");
        assert_eq!(e.field.as_deref(), Some("rules[0].clear"));
        assert_eq!(e.line, Some(6));
    }

    #[test]
    fn unknown_kind_is_refused_with_line() {
        let e = err("[[rules]]\nname = \"hot\"\nseries = \"#\"\nkind = \"thresold\"\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("thresold"), "{e}");
    }

    #[test]
    fn threshold_needs_above_or_below() {
        let e = err("[[rules]]\nname = \"hot\"\nseries = \"#\"\nkind = \"threshold\"\n");
        assert_eq!(e.field.as_deref(), Some("rules[0].kind"));
    }

    #[test]
    fn duplicate_names_are_refused() {
        let r = "[[rules]]\nname = \"a\"\nseries = \"#\"\nkind = \"threshold\"\nabove = 1.0\n";
        let e = err(&format!("{r}{r}"));
        assert_eq!(e.field.as_deref(), Some("rules[1].name"));
        assert_eq!(e.line, Some(7));
    }

    #[test]
    fn zero_for_is_refused() {
        let e = err("[[rules]]\nname = \"a\"\nseries = \"#\"\nkind = \"threshold\"\nabove = 1.0\nfor = \"0s\"\n");
        assert_eq!(e.field.as_deref(), Some("rules[0].for"));
    }

    #[test]
    fn unconfigured_channel_is_refused() {
        let e = err("[[rules]]\nname = \"a\"\nseries = \"#\"\nkind = \"threshold\"\nabove = 1.0\nnotify = [\"telegram\"]\n");
        assert_eq!(e.field.as_deref(), Some("rules[0].notify[0]"));
        assert!(e.message.contains("[notify.telegram]"), "{e}");
    }

    #[test]
    fn a_channel_type_that_does_not_exist_lists_those_that_do() {
        let e = err("[[rules]]\nname = \"a\"\nseries = \"#\"\nkind = \"threshold\"\nabove = 1.0\nnotify = [\"slack\"]\n");
        assert_eq!(e.field.as_deref(), Some("rules[0].notify[0]"));
        assert_eq!(
            e.message,
            "there is no channel type \"slack\": the channel types are email, telegram, webhook, mqtt (configured here: none)"
        );
    }

    #[test]
    fn pattern_outside_the_topics_is_refused() {
        let e = err("[ingest]\ntopics = [\"sensors/greenhouse/#\"]\n[[rules]]\nname = \"a\"\nseries = \"coldroom/+/t\"\nkind = \"threshold\"\nabove = 1.0\n");
        assert_eq!(e.field.as_deref(), Some("rules[0].series"));
        assert_eq!(e.line, Some(5));
    }

    #[test]
    fn rate_and_window_and_deadman_need_their_fields() {
        let e = err("[[rules]]\nname = \"a\"\nseries = \"#\"\nkind = \"rate\"\nwindow = \"1m\"\n");
        assert!(e.message.contains("rise"), "{e}");
        let e = err("[[rules]]\nname = \"a\"\nseries = \"#\"\nkind = \"window\"\nabove = 1.0\nwindow = \"1m\"\n");
        assert!(e.message.contains("agg"), "{e}");
        let e = err("[[rules]]\nname = \"a\"\nseries = \"#\"\nkind = \"deadman\"\n");
        assert!(e.message.contains("silence"), "{e}");
    }

    #[test]
    fn overlap_of_filters() {
        use super::filters_overlap as o;
        assert!(o("sensors/#", "sensors/a/+/t"));
        assert!(o("sensors/+/x", "sensors/a/#"));
        assert!(!o("sensors/a/#", "sensors/b/c"));
        assert!(!o("sensors/a", "sensors/a/b"));
    }
}
