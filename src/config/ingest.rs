//! `[[ingest.map]]`: topic mappings for devices that do not publish on
//! `<prefix>/<site>/<device>/<metric>` (Zigbee2MQTT, Tasmota, Shelly, ESPHome, Home
//! Assistant, Telegraf). The keys are a contract: tests and configurations outside
//! the project use them.
//!
//! ```toml
//! [[ingest.map]]
//! filter = "zigbee2mqtt/+"          # MQTT filter, subscribed like ingest.topics
//! series = "zigbee/{1}"             # {1}, {2}, …: the levels matched by +; {#}: what # matched
//! format = "auto"                   # auto | number | json | influx
//! fields = ["apower", "aenergy.total"]  # only these dotted paths
//! ts = "Time"                       # dotted path of a timestamp (epoch s/ms or RFC 3339)
//! unit = "W"                        # unit of every reading of this mapping
//! ```

use serde::Deserialize;

use super::{check_filter, key, Duration, Invalid, PathPart};
use crate::source::map::Template;
use crate::source::name::{check_series, check_unit, UnitProblem, MAX_UNIT_LEN};

/// How a mapping reads payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MapFormat {
    /// JSON when it starts with `{`, a plain value when it is one (a number,
    /// `true`/`false`, `ON`/`OFF`), line protocol when it looks like it.
    #[default]
    Auto,
    /// A plain value: the series is the template itself.
    Number,
    /// A JSON object flattened to one reading per numeric leaf, or a JSON number.
    Json,
    /// InfluxDB line protocol: series = template + `/<measurement>/<field>`.
    Influx,
}

/// One `[[ingest.map]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// MQTT filter whose topics this mapping reads.
    pub filter: String,
    /// Series template.
    pub series: String,
    #[serde(default)]
    pub format: MapFormat,
    /// Only these dotted paths into the JSON (for line protocol: `measurement.field`);
    /// empty means every numeric leaf.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Dotted path of the field that holds the reading's timestamp.
    pub ts: Option<String>,
    /// Unit of every reading of this mapping.
    pub unit: Option<String>,
}

impl IngestConfig {
    /// Every filter to subscribe to for ingest: `topics`, then each mapping's filter,
    /// without one that another already covers (a broker may deliver a message once
    /// per matching subscription).
    pub fn filters(&self) -> Vec<String> {
        let all: Vec<&str> = self
            .topics
            .iter()
            .chain(self.map.iter().map(|m| &m.filter))
            .map(String::as_str)
            .collect();
        let mut out: Vec<String> = Vec::new();
        for (i, f) in all.iter().enumerate() {
            let covered = all
                .iter()
                .enumerate()
                .any(|(j, g)| j != i && covers(g, f) && (!covers(f, g) || j < i));
            if !covered {
                out.push(f.to_string());
            }
        }
        out
    }
}

/// Whether every topic matching `f` also matches `g`.
pub fn covers(g: &str, f: &str) -> bool {
    let mut g = g.split('/');
    let mut f = f.split('/');
    loop {
        match (g.next(), f.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(x)) if x != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            _ => return false,
        }
    }
}

impl MapConfig {
    /// The series pattern this mapping can produce, for checking that a rule can
    /// match: the template with `+`/`#` for its placeholders, and `/#` below it for
    /// the formats that add field levels.
    pub fn series_pattern(&self) -> Option<String> {
        let base = Template::parse(&self.series).ok()?.pattern();
        Some(if self.format == MapFormat::Number || base.ends_with('#') {
            base
        } else {
            format!("{base}/#")
        })
    }

    pub(super) fn validate(&self, at: &[PathPart]) -> Vec<Invalid> {
        let mut out = Vec::new();
        let field = |name: &str| {
            let mut p = at.to_vec();
            p.push(key(name));
            p
        };
        let filter_ok = match check_filter(&self.filter) {
            Ok(()) => true,
            Err(e) => {
                out.push(Invalid::new(&field("filter"), e));
                false
            }
        };
        if self.series.is_empty() {
            out.push(Invalid::new(
                &field("series"),
                "the series template is empty",
            ));
        }
        match Template::parse(&self.series) {
            Err(e) => out.push(Invalid::new(&field("series"), e)),
            Ok(t) if filter_ok && !self.series.is_empty() => {
                let levels: Vec<&str> = self.filter.split('/').collect();
                let plus = levels.iter().filter(|l| **l == "+").count();
                if t.max_level() > plus {
                    out.push(Invalid::new(
                        &field("series"),
                        format!(
                            "{{{}}} is used but the filter {:?} has {plus} '+' level(s)",
                            t.max_level(),
                            self.filter
                        ),
                    ));
                } else if t.uses_rest() && levels.last() != Some(&"#") {
                    out.push(Invalid::new(
                        &field("series"),
                        format!(
                            "{{#}} is used but the filter {:?} does not end in '#'",
                            self.filter
                        ),
                    ));
                } else {
                    // The fixed text must make a valid series with any level filled in.
                    let sample = t.sample();
                    if let Err(p) = check_series(&sample) {
                        out.push(Invalid::new(
                            &field("series"),
                            format!("{:?} would make series that {}", self.series, p.describe()),
                        ));
                    }
                }
            }
            Ok(_) => {}
        }
        for (i, f) in self.fields.iter().enumerate() {
            if f.is_empty() || f.split('.').any(str::is_empty) {
                let mut p = field("fields");
                p.push(PathPart::Index(i));
                out.push(Invalid::new(
                    &p,
                    format!("{f:?} is not a dotted path (like \"aenergy.total\")"),
                ));
            }
        }
        if let Some(ts) = &self.ts {
            if ts.is_empty() || ts.split('.').any(str::is_empty) {
                out.push(Invalid::new(
                    &field("ts"),
                    format!("{ts:?} is not a dotted path (like \"Time\" or \"meta.ts\")"),
                ));
            }
            if self.format == MapFormat::Influx || self.format == MapFormat::Number {
                out.push(Invalid::new(
                    &field("ts"),
                    "only JSON payloads have a timestamp field (line protocol carries its own)",
                ));
            }
        }
        if let Some(u) = &self.unit {
            match check_unit(u) {
                Ok(()) => {}
                Err(UnitProblem::TooLong) => out.push(Invalid::new(
                    &field("unit"),
                    format!("longer than {MAX_UNIT_LEN} bytes"),
                )),
                Err(UnitProblem::ControlChar) => {
                    out.push(Invalid::new(&field("unit"), "contains a control character"))
                }
            }
        }
        out
    }
}

/// Problems of `[ingest]` beyond topics and prefix: the mappings and the clock skew.
pub(super) fn validate(ingest: &IngestConfig) -> Vec<Invalid> {
    let mut out = Vec::new();
    for (i, m) in ingest.map.iter().enumerate() {
        out.extend(m.validate(&[key("ingest"), key("map"), PathPart::Index(i)]));
    }
    if ingest.max_clock_skew.is_zero() {
        out.push(Invalid::new(
            &[key("ingest"), key("max_clock_skew")],
            "must be longer than zero (a device clock a moment ahead would lose every reading)",
        ));
    }
    if ingest.max_series == 0 {
        out.push(Invalid::new(
            &[key("ingest"), key("max_series")],
            "must be at least 1 (every reading would be refused)",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn err(text: &str) -> crate::config::ConfigError {
        Config::parse(text, "c.toml").unwrap_err()
    }

    #[test]
    fn a_mapping_parses_with_every_key() {
        let cfg = Config::parse(
            "[[ingest.map]]\nfilter = \"shellies/+/status/switch:0\"\nseries = \"shelly/{1}\"\n\
             format = \"json\"\nfields = [\"apower\", \"aenergy.total\"]\nts = \"aenergy.minute_ts\"\nunit = \"W\"\n\
             [[ingest.map]]\nfilter = \"zigbee2mqtt/+\"\nseries = \"zigbee/{1}\"\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(cfg.ingest.map.len(), 2);
        assert_eq!(cfg.ingest.map[0].format, MapFormat::Json);
        assert_eq!(cfg.ingest.map[0].fields, vec!["apower", "aenergy.total"]);
        assert_eq!(cfg.ingest.map[1].format, MapFormat::Auto);
        assert_eq!(cfg.ingest.topics, vec!["sensors/#"]);
        assert_eq!(
            cfg.ingest.filters(),
            vec!["sensors/#", "shellies/+/status/switch:0", "zigbee2mqtt/+"]
        );
    }

    #[test]
    fn bad_mappings_are_placed() {
        let cases: &[(&str, &str, usize, &str)] = &[
            (
                "filter = \"a/#/b\"\nseries = \"x\"\n",
                "ingest.map[0].filter",
                2,
                "'#' must be",
            ),
            (
                "filter = \"a/+\"\nseries = \"x/{2}\"\n",
                "ingest.map[0].series",
                3,
                "{2} is used",
            ),
            (
                "filter = \"a/+\"\nseries = \"x/{#}\"\n",
                "ingest.map[0].series",
                3,
                "does not end in '#'",
            ),
            (
                "filter = \"a/+\"\nseries = \"x/{one}\"\n",
                "ingest.map[0].series",
                3,
                "not a placeholder",
            ),
            (
                "filter = \"a/+\"\nseries = \"x//{1}\"\n",
                "ingest.map[0].series",
                3,
                "empty level",
            ),
            (
                "filter = \"a/+\"\nseries = \"x/+/{1}\"\n",
                "ingest.map[0].series",
                3,
                "wildcard",
            ),
            (
                "filter = \"a/+\"\nseries = \"\"\n",
                "ingest.map[0].series",
                3,
                "empty",
            ),
            (
                "filter = \"a/+\"\nseries = \"x\"\nfields = [\"a\", \"b..c\"]\n",
                "ingest.map[0].fields[1]",
                4,
                "dotted path",
            ),
            (
                "filter = \"a/+\"\nseries = \"x\"\nts = \"\"\n",
                "ingest.map[0].ts",
                4,
                "dotted path",
            ),
            (
                "filter = \"a/+\"\nseries = \"x\"\nformat = \"influx\"\nts = \"t\"\n",
                "ingest.map[0].ts",
                5,
                "only JSON",
            ),
            (
                "filter = \"a/+\"\nseries = \"x\"\nunit = \"\\u001b[2J\"\n",
                "ingest.map[0].unit",
                4,
                "control",
            ),
        ];
        for (body, field, line, msg) in cases {
            let e = err(&format!("[[ingest.map]]\n{body}"));
            assert_eq!(e.field.as_deref(), Some(*field), "{body}: {e}");
            assert_eq!(e.line, Some(*line), "{body}: {e}");
            assert!(e.message.contains(msg), "{body}: {e}");
        }
        let e = err("[[ingest.map]]\nfilter = \"a/+\"\nseries = \"x\"\nformat = \"xml\"\n");
        assert_eq!(e.line, Some(4), "{e}");
        let e = err("[[ingest.map]]\nfilter = \"a/+\"\nseries = \"x\"\nfield = [\"a\"]\n");
        assert!(e.message.contains("field"), "{e}");
        let e = err("[ingest]\nmax_clock_skew = \"0s\"\n");
        assert_eq!(e.field.as_deref(), Some("ingest.max_clock_skew"));
    }

    #[test]
    fn filters_covered_by_another_are_subscribed_once() {
        let mut ingest = IngestConfig::default();
        for f in [
            "sensors/special/+",
            "zigbee2mqtt/+",
            "zigbee2mqtt/+",
            "a/#",
            "a/b/+",
        ] {
            ingest.map.push(MapConfig {
                filter: f.into(),
                series: "x".into(),
                format: MapFormat::Auto,
                fields: vec![],
                ts: None,
                unit: None,
            });
        }
        assert_eq!(ingest.filters(), vec!["sensors/#", "zigbee2mqtt/+", "a/#"]);
        assert!(covers("+/+", "a/b"));
        assert!(covers("a/#", "a"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a", "a/b"));
    }

    #[test]
    fn rules_may_name_series_a_mapping_makes() {
        let base = "[ingest]\ntopics = [\"sensors/greenhouse/#\"]\n[[ingest.map]]\nfilter = \"zigbee2mqtt/+\"\nseries = \"zigbee/{1}\"\n\
                    [[ingest.map]]\nfilter = \"+/sensor/+/state\"\nseries = \"esphome/{1}/{2}\"\nformat = \"number\"\n";
        let rule = |series: &str| {
            format!("{base}[[rules]]\nname = \"r\"\nseries = \"{series}\"\nkind = \"threshold\"\nabove = 1.0\n")
        };
        for ok in [
            "zigbee/+/temperature",
            "zigbee/#",
            "esphome/+/temperature",
            "greenhouse/+/t",
        ] {
            assert!(Config::parse(&rule(ok), "c.toml").is_ok(), "{ok}");
        }
        let e = err(&rule("esphome/+/temperature/extra"));
        assert_eq!(e.field.as_deref(), Some("rules[0].series"), "{e}");
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub topics: Vec<String>,
    pub prefix: String,
    /// How often a warning about bad input is logged per reason at most.
    pub warn_interval: Duration,
    /// `[[ingest.map]]`: topic layouts of devices, tried in order before the prefix.
    pub map: Vec<MapConfig>,
    /// How far into the future a reading's own timestamp may be (the past is bounded by
    /// `storage.sqlite.retention`); readings outside are refused and counted.
    pub max_clock_skew: Duration,
    /// How many distinct series are accepted at most (those already stored count);
    /// readings of new series past it are refused, counted and warned about.
    pub max_series: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            topics: vec!["sensors/#".into()],
            prefix: "sensors".into(),
            warn_interval: Duration::from_secs(10),
            map: Vec::new(),
            max_clock_skew: Duration::from_secs(300),
            max_series: 100_000,
        }
    }
}
