//! The Grafana dashboards (grafana/dashboards/*.json) as a user meets them, checked
//! offline since no Grafana server runs here:
//!
//! - they import through Grafana's UI as well as by provisioning: every panel, query,
//!   variable and annotation takes its InfluxDB from the dashboard's `datasource`
//!   variable, whose default is the provisioned data source;
//! - every time series and stat panel says what unit its values are in, and a reading's
//!   own unit (the `unit` tag) picks Grafana's unit for the usual ones (°C, %, hPa, W…);
//! - every query asks for measurements, tags and fields that centinela's InfluxDB sink
//!   writes (encoded here with `store::influx::line`, as the sink does);
//! - Grafana's own dashboard model (python package grafana-foundation-sdk,
//!   `.ci/install-grafana.sh`) reads them back without losing a key
//!   (grafana/check-dashboards.py); without python3 or the package that check prints
//!   SKIPPED and passes.
//!
//! tests/influx.rs runs every query against a real InfluxDB filled by the sink.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use centinela::model::{AlertEvent, AlertState, Reading, Severity};
use centinela::store::influx::line::{encode_event, encode_reading};
use serde_json::Value;
use support::grafana::grafana_dir;

fn dashboards() -> Vec<(String, Value)> {
    let out = support::grafana::dashboards();
    assert!(out.len() >= 2, "dashboards: {out:?}");
    out
}

/// The uid the provisioned data source gets (provisioning/datasources/influxdb.yaml).
fn provisioned_uid() -> String {
    let yaml =
        std::fs::read_to_string(grafana_dir().join("provisioning/datasources/influxdb.yaml"))
            .unwrap();
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix("uid: "))
        .expect("uid in influxdb.yaml")
        .trim()
        .to_string()
}

/// Every `datasource` value anywhere in `v`, with where it is.
fn datasource_refs<'a>(v: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{path}.{k}");
                if k == "datasource" {
                    out.push((p.clone(), x));
                }
                datasource_refs(x, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                datasource_refs(x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn panels(d: &Value) -> impl Iterator<Item = &Value> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
}

#[test]
fn every_dashboard_takes_its_influxdb_from_a_datasource_variable() {
    let uid = provisioned_uid();
    for (name, d) in dashboards() {
        let vars = d["templating"]["list"].as_array().unwrap();
        // First, so the query variables after it can use it.
        let v = &vars[0];
        assert_eq!(v["type"], "datasource", "{name}: first variable {v}");
        assert_eq!(v["name"], "datasource", "{name}: {v}");
        assert_eq!(
            v["query"], "influxdb",
            "{name}: a choice among InfluxDB sources: {v}"
        );
        assert_eq!(v["multi"], false, "{name}: {v}");
        assert_eq!(v["includeAll"], false, "{name}: {v}");
        // Provisioned next to the data source, the dashboard starts on it; imported
        // elsewhere, Grafana offers the InfluxDB sources there are.
        assert_eq!(v["current"]["value"], uid.as_str(), "{name}: {v}");
        assert_eq!(
            vars.iter().filter(|v| v["type"] == "datasource").count(),
            1,
            "{name}"
        );

        let mut refs = Vec::new();
        datasource_refs(&d, "", &mut refs);
        for (path, r) in &refs {
            let builtin = r["uid"] == "-- Grafana --" && r["type"] == "grafana";
            assert!(
                builtin || (r["type"] == "influxdb" && r["uid"] == "${datasource}"),
                "{name}: {path} = {r}: not the dashboard's data source variable"
            );
        }
        // Nothing names the provisioned source but the variable's default.
        let text = d.to_string();
        assert_eq!(
            text.matches(&uid).count(),
            1,
            "{name}: {uid} named outside the variable"
        );
        // Each panel, each of its queries, each query variable and each InfluxDB
        // annotation says where it reads.
        for p in panels(&d) {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: panel {}",
                p["title"]
            );
            for t in p["targets"].as_array().unwrap() {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {t}");
            }
        }
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}: {v}");
        }
        for a in d["annotations"]["list"].as_array().unwrap() {
            if a.get("query").is_some() {
                assert_eq!(a["datasource"]["uid"], "${datasource}", "{name}: {a}");
            }
        }
        assert!(
            d.get("__inputs").is_none(),
            "{name}: __inputs would break provisioning"
        );
    }
}

/// Units devices send and the Grafana unit each one must be shown in.
const DEVICE_UNITS: &[(&str, &str)] = &[
    ("°C", "celsius"),
    ("°F", "fahrenheit"),
    ("%", "percent"),
    ("hPa", "pressurehpa"),
    ("W", "watt"),
    ("kW", "kwatt"),
    ("kWh", "kwatth"),
    ("Wh", "watth"),
    ("V", "volt"),
    ("A", "amp"),
    ("lx", "lux"),
    ("ppm", "ppm"),
    ("µg/m³", "conμgm3"),
];

/// Whether Grafana's `byRegexp` matcher with `pattern` (no slashes: anchored at both
/// ends) matches `name`. Only the form the dashboards use, `.* <literal>`.
fn by_regexp(pattern: &str, name: &str) -> bool {
    let literal = pattern
        .strip_prefix(".* ")
        .unwrap_or_else(|| panic!("override pattern {pattern:?} is not `.* <unit>`"));
    assert!(
        !literal.contains(['.', '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\']),
        "override pattern {pattern:?}: the unit is not a plain literal"
    );
    name.ends_with(&format!(" {literal}"))
}

#[test]
fn every_time_series_and_stat_panel_has_a_unit() {
    let mut per_series = 0;
    for (name, d) in dashboards() {
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap();
            if p["type"] != "timeseries" && p["type"] != "stat" {
                continue;
            }
            let unit = p["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .unwrap_or_default();
            assert!(!unit.is_empty(), "{name}: panel {title:?} has no unit");

            // Readings of several metrics: each series is shown in its own unit.
            let targets = p["targets"].as_array().unwrap();
            let by_unit = targets.iter().any(|t| {
                t["query"].as_str().unwrap().contains("GROUP BY")
                    && t["query"].as_str().unwrap().contains("\"unit\"")
            });
            if !by_unit {
                continue;
            }
            per_series += 1;
            for t in targets {
                assert!(
                    t["alias"]
                        .as_str()
                        .is_some_and(|a| a.ends_with(" $tag_unit")),
                    "{name}: panel {title:?}: the series name ends with its unit: {t}"
                );
            }
            let overrides = p["fieldConfig"]["overrides"].as_array().unwrap();
            for (device_unit, grafana_unit) in DEVICE_UNITS {
                let shown = format!("greenhouse/node 2/metric {device_unit}");
                let units: Vec<&Value> = overrides
                    .iter()
                    .filter(|o| {
                        o["matcher"]["id"] == "byRegexp"
                            && by_regexp(o["matcher"]["options"].as_str().unwrap(), &shown)
                    })
                    .flat_map(|o| o["properties"].as_array().unwrap())
                    .filter(|prop| prop["id"] == "unit")
                    .map(|prop| &prop["value"])
                    .collect();
                assert_eq!(
                    units,
                    [&Value::from(*grafana_unit)],
                    "{name}: panel {title:?}: a reading in {device_unit}"
                );
            }
            // No unit tag, or one Grafana has no unit for: the plain number.
            assert_eq!(unit, "none", "{name}: panel {title:?}");
        }
    }
    assert!(
        per_series >= 3,
        "panels of readings with their units: {per_series}"
    );
}

/// What the sink writes into one measurement: its tag keys and field keys.
#[derive(Debug, Default)]
struct Written {
    tags: BTreeSet<String>,
    fields: BTreeSet<String>,
}

/// Tag and field keys of one line of line protocol (no escaped characters in keys).
fn parse_line(line: &str) -> (String, Written) {
    let (series, rest) = line.split_once(' ').unwrap();
    let mut parts = series.split(',');
    let measurement = parts.next().unwrap().to_string();
    let tags = parts
        .map(|kv| kv.split_once('=').unwrap().0.to_string())
        .collect();
    // Fields: up to the timestamp; string fields here hold no commas or spaces.
    let fields_part = rest.rsplit_once(' ').unwrap().0;
    let fields = fields_part
        .split(',')
        .map(|kv| kv.split_once('=').unwrap().0.to_string())
        .collect();
    (measurement, Written { tags, fields })
}

/// The schema of a reading (any measurement: the metric) and of an alert event.
fn written() -> (Written, (String, Written)) {
    let mut out = String::new();
    encode_reading(
        &mut out,
        &Reading {
            series: "greenhouse/node1/temperature".into(),
            value: 21.5,
            ts: 1_700_000_000_000,
            unit: Some("°C".into()),
        },
    )
    .unwrap();
    encode_event(
        &mut out,
        &AlertEvent {
            rule: "hot".into(),
            series: "greenhouse/node1/temperature".into(),
            state: AlertState::Firing,
            severity: Severity::Critical,
            value: Some(31.0),
            unit: Some("°C".into()),
            ts: 1_700_000_000_001,
            message: "hot".into(),
            notify: vec![],
        },
    )
    .unwrap();
    let mut lines = out.lines();
    let (metric, reading) = parse_line(lines.next().unwrap());
    assert_eq!(metric, "temperature");
    let alerts = parse_line(lines.next().unwrap());
    (reading, alerts)
}

/// The double-quoted identifiers of an InfluxQL query, in order.
fn identifiers(q: &str) -> Vec<&str> {
    q.split('"').skip(1).step_by(2).collect()
}

/// Whether a query reads alert events (`FROM "alerts"`) rather than readings (a regex
/// over the measurements, or SHOW without FROM).
fn reads_alerts(q: &str, alerts: &str) -> bool {
    q.contains(&format!("FROM \"{alerts}\""))
}

/// Every query of a dashboard, with where it is and whether its panel repeats.
fn queries(d: &Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            out.push((
                format!("variable {}", v["name"]),
                v["query"].as_str().unwrap().to_string(),
                false,
            ));
        }
    }
    for p in panels(d) {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                format!("panel {}", p["title"]),
                t["query"].as_str().unwrap().to_string(),
                p.get("repeat").is_some_and(|r| r.is_string()),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        for q in [&a["query"], &a["target"]["query"]] {
            if let Some(q) = q.as_str() {
                out.push((format!("annotation {}", a["name"]), q.to_string(), false));
            }
        }
    }
    out
}

#[test]
fn every_query_reads_measurements_tags_and_fields_the_sink_writes() {
    let (reading, (alerts, event)) = written();
    assert_eq!(
        reading.tags,
        ["device", "series", "site", "unit"]
            .map(String::from)
            .into()
    );
    assert_eq!(reading.fields, ["value"].map(String::from).into());
    let exclusion = "\"rule\" = ''";
    let mut checked = 0;
    for (name, d) in dashboards() {
        for (what, q, repeated) in queries(&d) {
            let of_alerts = reads_alerts(&q, &alerts);
            let schema = if of_alerts { &event } else { &reading };
            let mut known: BTreeSet<&str> = schema.tags.iter().map(String::as_str).collect();
            known.extend(schema.fields.iter().map(String::as_str));
            if of_alerts {
                known.insert(&alerts);
            }
            let mut q_rest = q.clone();
            if !of_alerts && q.starts_with("SELECT") {
                // A regex over the measurements matches `alerts` too: readings queries
                // leave alert events out by their `rule` tag (readings have none). A
                // repeated panel gets one measurement per copy, from SHOW MEASUREMENTS.
                if !repeated {
                    assert!(
                        q.contains(exclusion),
                        "{name}: {what}: counts alert events too:\n{q}"
                    );
                }
                q_rest = q.replace(exclusion, "");
            }
            for id in identifiers(&q_rest) {
                assert!(
                    known.contains(id),
                    "{name}: {what}: {id:?} is not a tag or field centinela writes{}:\n{q}",
                    if of_alerts {
                        " in alerts"
                    } else {
                        " with readings"
                    }
                );
            }
            // What an aggregate or a SHOW TAG VALUES reads must be a field or a tag.
            for f in ["count", "mean", "last", "max", "min", "sum"] {
                for (i, _) in q.match_indices(&format!("{f}(\"")) {
                    let arg = q[i + f.len() + 2..].split('"').next().unwrap();
                    assert!(
                        schema.fields.contains(arg),
                        "{name}: {what}: {f}({arg:?}) is not a field:\n{q}"
                    );
                }
            }
            if let Some(rest) = q.split_once("WITH KEY = \"").map(|x| x.1) {
                let key = rest.split('"').next().unwrap();
                assert!(
                    schema.tags.contains(key),
                    "{name}: {what}: {key:?} is not a tag:\n{q}"
                );
            }
            checked += 1;
        }
        // Annotations show columns their query selects.
        for a in d["annotations"]["list"].as_array().unwrap() {
            let Some(q) = a["query"].as_str() else {
                continue;
            };
            let selected: BTreeSet<&str> = identifiers(q.split(" FROM ").next().unwrap())
                .into_iter()
                .collect();
            for key in ["textColumn", "titleColumn", "tagsColumn"] {
                for c in a[key]
                    .as_str()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|c| !c.is_empty())
                {
                    assert!(
                        selected.contains(c),
                        "{name}: annotation {}: {key} {c:?} is not selected:\n{q}",
                        a["name"]
                    );
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} queries");
}

#[test]
fn dashboards_read_back_unchanged_through_grafanas_dashboard_model() {
    let import = Command::new("python3")
        .args(["-c", "import grafana_foundation_sdk"])
        .output();
    if !import.is_ok_and(|o| o.status.success()) {
        println!(
            "SKIPPED: python3 with grafana-foundation-sdk not found (.ci/install-grafana.sh installs it)"
        );
        return;
    }
    let out = Command::new("python3")
        .arg(grafana_dir().join("check-dashboards.py"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grafana/check-dashboards.py: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("ok: ").count(),
        dashboards().len(),
        "{stdout}"
    );
}
