//! Topic mappings: which series a device's topic and payload become. Pure: the
//! decoder asks a [`Mapping`] whether it takes a topic, renders the series template
//! from the matched levels and walks the JSON with [`flatten`] or [`pick`].
//!
//! A mapping comes from one `[[ingest.map]]` entry: an MQTT filter, a series template
//! (`{1}`, `{2}`, …: the levels matched by the filter's `+`, in order; `{#}`: what its
//! `#` matched), a format, an optional list of dotted field paths, an optional dotted
//! path of a timestamp field and an optional unit.

use std::sync::Arc;

use serde_json::Value;

use crate::config::{MapConfig, MapFormat};

/// One level of an MQTT filter.
#[derive(Debug, Clone, PartialEq)]
enum FilterLevel {
    Literal(String),
    Plus,
    Hash,
}

/// A parsed MQTT filter that can say what its wildcards matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    levels: Vec<FilterLevel>,
}

/// What a filter's wildcards matched in one topic, as byte ranges into the topic.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Captures {
    levels: Vec<(usize, usize)>,
    rest: Option<(usize, usize)>,
}

impl Filter {
    /// Parses a filter already checked by the configuration (`+` and `#` whole levels,
    /// `#` last).
    pub fn parse(filter: &str) -> Filter {
        let levels = filter
            .split('/')
            .map(|l| match l {
                "+" => FilterLevel::Plus,
                "#" => FilterLevel::Hash,
                l => FilterLevel::Literal(l.to_string()),
            })
            .collect();
        Filter { levels }
    }

    /// Whether `topic` matches; fills `caps` with what the wildcards matched.
    pub fn matches(&self, topic: &str, caps: &mut Captures) -> bool {
        caps.levels.clear();
        caps.rest = None;
        // Topics starting with `$` are not matched by a leading wildcard (MQTT-4.7.2-1).
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(FilterLevel::Literal(_))) {
            return false;
        }
        let mut pos = 0;
        let mut at_end = topic.is_empty();
        for level in &self.levels {
            if let FilterLevel::Hash = level {
                // `a/#` matches `a` too: the rest is then empty.
                caps.rest = Some(if at_end {
                    (topic.len(), topic.len())
                } else {
                    (pos, topic.len())
                });
                return true;
            }
            if at_end {
                return false;
            }
            let end = topic[pos..].find('/').map_or(topic.len(), |i| pos + i);
            match level {
                FilterLevel::Literal(l) if &topic[pos..end] != l => return false,
                FilterLevel::Plus => caps.levels.push((pos, end)),
                _ => {}
            }
            if end == topic.len() {
                at_end = true;
                pos = end;
            } else {
                pos = end + 1;
            }
        }
        at_end
    }
}

/// One piece of a series template.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    /// `{n}`: the n-th `+` level (0-based here, 1-based in the template).
    Level(usize),
    /// `{#}`
    Rest,
}

/// A series template: literal text with `{1}`, `{2}`, … and `{#}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `zigbee/{1}`; an error says what is wrong with the braces.
    pub fn parse(template: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(format!("{template:?}: '}}' without '{{'"));
            }
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("{template:?}: '{{' without '}}'"))?;
            let inner = &after[..close];
            parts.push(match inner {
                "#" => Part::Rest,
                n => match n.parse::<usize>() {
                    Ok(i) if i >= 1 => Part::Level(i - 1),
                    _ => {
                        return Err(format!(
                        "{template:?}: {{{inner}}} is not a placeholder; use {{1}}, {{2}}, … for \
                             the levels matched by + and {{#}} for what # matched"
                    ))
                    }
                },
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The highest `{n}` used (1-based), 0 when none.
    pub fn max_level(&self) -> usize {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Level(i) => Some(i + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    pub fn uses_rest(&self) -> bool {
        self.parts.contains(&Part::Rest)
    }

    /// Appends the series for `topic` (with what the filter captured) to `out`.
    pub fn render(&self, topic: &str, caps: &Captures, out: &mut String) {
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Level(i) => {
                    if let Some(&(a, b)) = caps.levels.get(*i) {
                        out.push_str(&topic[a..b]);
                    }
                }
                Part::Rest => {
                    if let Some((a, b)) = caps.rest {
                        out.push_str(&topic[a..b]);
                    }
                }
            }
        }
    }

    /// The template with every placeholder filled with `x`: what configuration
    /// checks the fixed text with.
    pub fn sample(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.as_str(),
                Part::Level(_) | Part::Rest => "x",
            })
            .collect()
    }

    /// The template as a series pattern: a level holding `{n}` becomes `+`, one holding
    /// `{#}` becomes `#` (and ends the pattern). Rule validation uses it.
    pub fn pattern(&self) -> String {
        let mut text = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => text.push_str(l),
                Part::Level(_) => text.push('\u{1}'),
                Part::Rest => text.push('\u{2}'),
            }
        }
        let mut levels = Vec::new();
        for l in text.split('/') {
            if l.contains('\u{2}') {
                levels.push("#".to_string());
                break;
            }
            levels.push(if l.contains('\u{1}') {
                "+".into()
            } else {
                l.to_string()
            });
        }
        levels.join("/")
    }
}

/// A dotted path into a JSON object: `aenergy.total` → `["aenergy", "total"]`.
pub type Path = Vec<String>;

pub fn parse_path(dotted: &str) -> Path {
    dotted.split('.').map(str::to_string).collect()
}

/// One `[[ingest.map]]` entry, ready to use.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub filter: Filter,
    pub series: Template,
    pub format: MapFormat,
    /// Only these paths, when not empty.
    pub fields: Vec<Path>,
    /// The same paths as series suffixes (`aenergy/total`).
    pub field_suffixes: Vec<String>,
    pub ts: Option<Path>,
    pub unit: Option<Arc<str>>,
}

impl Mapping {
    /// From a validated configuration entry.
    pub fn from_config(m: &MapConfig) -> Mapping {
        let fields: Vec<Path> = m.fields.iter().map(|f| parse_path(f)).collect();
        Mapping {
            filter: Filter::parse(&m.filter),
            // Validation parsed it already; a template that did not parse is literal.
            series: Template::parse(&m.series).unwrap_or(Template {
                parts: vec![Part::Literal(m.series.clone())],
            }),
            format: m.format,
            field_suffixes: fields.iter().map(|p| p.join("/")).collect(),
            fields,
            ts: m.ts.as_deref().map(parse_path),
            unit: m.unit.as_deref().filter(|u| !u.is_empty()).map(Arc::from),
        }
    }
}

/// The value at `path` in `v`, if there is one.
pub fn get<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(k.as_str()))
}

/// What a leaf of a JSON document becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Leaf {
    /// A number, or a boolean as 1/0.
    Number(f64),
    /// A string, an array or null: no reading, counted as a skipped field.
    Skipped,
}

fn leaf(v: &Value) -> Leaf {
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map_or(Leaf::Skipped, Leaf::Number),
        Value::Bool(b) => Leaf::Number(if *b { 1.0 } else { 0.0 }),
        _ => Leaf::Skipped,
    }
}

/// Walks every leaf of `v`, calling `emit` with its path (levels joined with `/`,
/// appended to what `path` holds) and what it is. Nested objects are walked; `except`
/// (the timestamp field) is left out.
pub fn flatten(
    v: &Value,
    path: &mut String,
    except: Option<&[String]>,
    emit: &mut impl FnMut(&str, Leaf),
) {
    walk(v, path, except, 0, emit);
}

fn walk(
    v: &Value,
    path: &mut String,
    except: Option<&[String]>,
    depth: usize,
    emit: &mut impl FnMut(&str, Leaf),
) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let except = except.and_then(|e| {
                    (e.get(depth).map(String::as_str) == Some(k.as_str())).then_some(e)
                });
                if except.is_some_and(|e| e.len() == depth + 1) {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(k);
                walk(child, path, except, depth + 1, emit);
                path.truncate(len);
            }
        }
        other => emit(path, leaf(other)),
    }
}

/// Like [`flatten`] but only for the listed paths; a listed path that is an object is
/// flattened below it, one that is missing is ignored.
pub fn pick(
    v: &Value,
    fields: &[Path],
    suffixes: &[String],
    path: &mut String,
    emit: &mut impl FnMut(&str, Leaf),
) {
    for (f, suffix) in fields.iter().zip(suffixes) {
        let Some(found) = get(v, f) else { continue };
        let len = path.len();
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(suffix);
        walk(found, path, None, 0, emit);
        path.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(filter: &str, template: &str, topic: &str) -> Option<String> {
        let f = Filter::parse(filter);
        let t = Template::parse(template).unwrap();
        let mut caps = Captures::default();
        if !f.matches(topic, &mut caps) {
            return None;
        }
        let mut out = String::new();
        t.render(topic, &caps, &mut out);
        Some(out)
    }

    #[test]
    fn templates() {
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            (
                "zigbee2mqtt/+",
                "zigbee/{1}",
                "zigbee2mqtt/living_room",
                Some("zigbee/living_room"),
            ),
            (
                "zigbee2mqtt/+",
                "zigbee/{1}",
                "zigbee2mqtt/bridge/state",
                None,
            ),
            ("zigbee2mqtt/+", "zigbee/{1}", "zigbee2mqtt", None),
            (
                "tele/+/SENSOR",
                "tasmota/{1}",
                "tele/kitchen/SENSOR",
                Some("tasmota/kitchen"),
            ),
            ("tele/+/SENSOR", "tasmota/{1}", "tele/kitchen/STATE", None),
            (
                "+/status/+",
                "shelly/{1}/{2}",
                "shellyplus1pm-a8032ab12345/status/switch:0",
                Some("shelly/shellyplus1pm-a8032ab12345/switch:0"),
            ),
            (
                "+/sensor/+/state",
                "esphome/{1}/{2}",
                "livingroom/sensor/temperature/state",
                Some("esphome/livingroom/temperature"),
            ),
            ("+/+/x", "{2}-{1}", "a/b/x", Some("b-a")),
            (
                "homeassistant/+/+/state",
                "ha/{2}",
                "homeassistant/sensor/outside_temp/state",
                Some("ha/outside_temp"),
            ),
            (
                "telegraf/#",
                "telegraf/{#}",
                "telegraf/host1/cpu",
                Some("telegraf/host1/cpu"),
            ),
            ("telegraf/#", "t/{#}", "telegraf", Some("t/")),
            ("a/#", "x", "a/b/c", Some("x")),
            ("#", "all/{#}", "a/b", Some("all/a/b")),
            ("#", "all/{#}", "$SYS/x", None),
            ("+/x", "{1}", "$SYS/x", None),
            ("$SYS/+", "sys/{1}", "$SYS/load", Some("sys/load")),
            ("a/+", "{1}", "a/", Some("")),
            ("a/+/c", "{1}", "a//c", Some("")),
            ("a/b", "lit", "a/b", Some("lit")),
            ("a/b", "lit", "a/b/c", None),
            ("a/b", "lit", "a", None),
        ];
        for (filter, template, topic, want) in cases {
            assert_eq!(
                render(filter, template, topic).as_deref(),
                *want,
                "{filter} {template} {topic}"
            );
        }
    }

    #[test]
    fn bad_templates_say_why() {
        for (t, want) in [
            ("zigbee/{1", "'{' without '}'"),
            ("zigbee/1}", "'}' without '{'"),
            ("zigbee/{0}", "not a placeholder"),
            ("zigbee/{name}", "not a placeholder"),
            ("zigbee/{}", "not a placeholder"),
        ] {
            let e = Template::parse(t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
        let t = Template::parse("a/{2}/{#}/{1}").unwrap();
        assert_eq!(t.max_level(), 2);
        assert!(t.uses_rest());
    }

    #[test]
    fn patterns() {
        for (t, want) in [
            ("zigbee/{1}", "zigbee/+"),
            ("shelly/{1}/{2}", "shelly/+/+"),
            ("dev_{1}/x", "+/x"),
            ("t/{#}", "t/#"),
            ("t/{#}/more", "t/#"),
            ("fixed", "fixed"),
        ] {
            assert_eq!(Template::parse(t).unwrap().pattern(), want, "{t}");
        }
    }

    fn flat(json: &str, except: Option<&str>) -> Vec<(String, Leaf)> {
        let v: Value = serde_json::from_str(json).unwrap();
        let except = except.map(parse_path);
        let mut out = Vec::new();
        let mut path = String::new();
        flatten(&v, &mut path, except.as_deref(), &mut |p, l| {
            out.push((p.to_string(), l))
        });
        out
    }

    fn num(p: &str, v: f64) -> (String, Leaf) {
        (p.to_string(), Leaf::Number(v))
    }

    fn skip(p: &str) -> (String, Leaf) {
        (p.to_string(), Leaf::Skipped)
    }

    #[test]
    fn flattening() {
        type Case<'a> = (&'a str, Option<&'a str>, Vec<(String, Leaf)>);
        let cases: Vec<Case> = vec![
            (
                r#"{"temperature":21.5}"#,
                None,
                vec![num("temperature", 21.5)],
            ),
            (
                r#"{"contact":false,"occupancy":true}"#,
                None,
                vec![num("contact", 0.0), num("occupancy", 1.0)],
            ),
            (
                r#"{"aenergy":{"total":12.5,"by_minute":[1,2,3],"minute_ts":1700000000},"id":0}"#,
                None,
                vec![
                    skip("aenergy/by_minute"),
                    num("aenergy/minute_ts", 1_700_000_000.0),
                    num("aenergy/total", 12.5),
                    num("id", 0.0),
                ],
            ),
            (
                r#"{"Time":"2026-11-20T10:00:00","AM2301":{"Temperature":22.3,"Humidity":40.1},"TempUnit":"C"}"#,
                Some("Time"),
                vec![
                    num("AM2301/Humidity", 40.1),
                    num("AM2301/Temperature", 22.3),
                    skip("TempUnit"),
                ],
            ),
            (
                r#"{"a":{"ts":5,"v":1},"ts":7}"#,
                Some("a.ts"),
                vec![num("a/v", 1.0), num("ts", 7.0)],
            ),
            (
                r#"{"state":"idle","n":null,"e":{}}"#,
                None,
                vec![skip("n"), skip("state")],
            ),
            ("42", None, vec![num("", 42.0)]),
            (
                r#"{"big":18446744073709551615}"#,
                None,
                vec![num("big", 18_446_744_073_709_551_615.0)],
            ),
        ];
        for (json, except, want) in cases {
            assert_eq!(flat(json, except), want, "{json}");
        }
    }

    #[test]
    fn picking_fields() {
        let v: Value = serde_json::from_str(
            r#"{"id":0,"apower":8.9,"voltage":237.5,"aenergy":{"total":6.532,"by_minute":[45.9,47.1]},"temperature":{"tC":23.5,"tF":74.4}}"#,
        )
        .unwrap();
        let fields: Vec<Path> = [
            "apower",
            "aenergy.total",
            "temperature.tC",
            "missing.x",
            "aenergy",
        ]
        .iter()
        .map(|f| parse_path(f))
        .collect();
        let suffixes: Vec<String> = fields.iter().map(|p| p.join("/")).collect();
        let mut out = Vec::new();
        let mut path = String::from("shelly/plug");
        pick(&v, &fields, &suffixes, &mut path, &mut |p, l| {
            out.push((p.to_string(), l))
        });
        assert_eq!(
            out,
            vec![
                num("shelly/plug/apower", 8.9),
                num("shelly/plug/aenergy/total", 6.532),
                num("shelly/plug/temperature/tC", 23.5),
                skip("shelly/plug/aenergy/by_minute"),
                num("shelly/plug/aenergy/total", 6.532),
            ]
        );
        assert_eq!(path, "shelly/plug");
    }
}
