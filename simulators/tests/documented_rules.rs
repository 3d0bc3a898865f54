//! Each embedded scenario documents, in its header, which rules catch its faults. This
//! test takes those `[[rules]]` from the comments, runs the scenario for a few minutes,
//! decodes the messages as centinela does, evaluates the rules with the semantics of
//! DESIGN.md, and checks that every rule fires, and only because of a fault.

use std::collections::BTreeMap;

use centinela_sim::scenario::EMBEDDED;
use centinela_sim::{FaultKind, Scenario, Simulator};
use serde::Deserialize;

const T0: i64 = 1_767_225_600_000;
const RUN_MS: i64 = 6 * 60_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    name: String,
    series: String,
    kind: String,
    above: Option<f64>,
    below: Option<f64>,
    clear: Option<f64>,
    #[serde(rename = "for")]
    for_: Option<String>,
    window: Option<String>,
    rise: Option<f64>,
    fall: Option<f64>,
    agg: Option<String>,
    silence: Option<String>,
    #[expect(
        dead_code,
        reason = "read from the file so an unknown key fails, never used"
    )]
    severity: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Rules {
    rules: Vec<Rule>,
}

fn ms(d: &Option<String>) -> i64 {
    d.as_ref().map_or(0, |d| {
        humantime::parse_duration(d).unwrap().as_millis() as i64
    })
}

/// The `# [[rules]]` blocks of a scenario's header, as TOML.
fn documented_rules(text: &str) -> Vec<Rule> {
    let mut toml = String::new();
    let mut inside = false;
    for line in text.lines() {
        let Some(body) = line.strip_prefix('#').map(str::trim) else {
            inside = false;
            continue;
        };
        if body == "[[rules]]" {
            inside = true;
            toml.push_str("[[rules]]\n");
        } else if inside && body.contains(" = ") {
            toml.push_str(body);
            toml.push('\n');
        } else {
            inside = false;
        }
    }
    toml::from_str::<Rules>(&toml)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
        .rules
}

/// MQTT filter matching, on series names.
fn matches(filter: &str, series: &str) -> bool {
    let (f, s): (Vec<&str>, Vec<&str>) = (filter.split('/').collect(), series.split('/').collect());
    for (i, level) in f.iter().enumerate() {
        match *level {
            "#" => return true,
            "+" if i < s.len() => {}
            l if s.get(i) == Some(&l) => {}
            _ => return false,
        }
    }
    f.len() == s.len()
}

/// Readings as centinela's decoder makes them: series → [(ts, value)].
fn decode(
    msgs: &[centinela_sim::Message],
    max_payload: usize,
) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for m in msgs {
        let series = m.topic.strip_prefix("sensors/").unwrap();
        let Ok(text) = std::str::from_utf8(&m.payload) else {
            continue;
        };
        if m.payload.len() > max_payload {
            continue;
        }
        if text.starts_with('{') {
            let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(text) else {
                continue;
            };
            if let Some(v) = obj.get("value") {
                if let Some(v) = v.as_f64() {
                    out.entry(series.to_string()).or_default().push((m.ts, v));
                }
            } else {
                for (field, v) in &obj {
                    if let Some(v) = v.as_f64() {
                        out.entry(format!("{series}/{field}"))
                            .or_default()
                            .push((m.ts, v));
                    }
                }
            }
        } else if let Ok(v) = text.parse::<f64>() {
            if v.is_finite() {
                out.entry(series.to_string()).or_default().push((m.ts, v));
            }
        }
    }
    out
}

/// Times at which `rule` starts firing on `points` (one series).
fn firings(rule: &Rule, points: &[(i64, f64)]) -> Vec<i64> {
    let mut out = Vec::new();
    let window = ms(&rule.window);
    match rule.kind.as_str() {
        "threshold" | "window" => {
            let (mut on, mut since, mut fired) = (false, 0, false);
            for (k, &(ts, v)) in points.iter().enumerate() {
                let v = if rule.kind == "window" {
                    // Judge a window only once the series has been seen for its whole length.
                    if ts - points[0].0 < window {
                        continue;
                    }
                    let w: Vec<f64> = points[..=k]
                        .iter()
                        .filter(|(t, _)| *t >= ts - window)
                        .map(|(_, v)| *v)
                        .collect();
                    let (min, max) = w
                        .iter()
                        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
                    match rule.agg.as_deref().unwrap() {
                        "avg" => w.iter().sum::<f64>() / w.len() as f64,
                        "min" => min,
                        "max" => max,
                        "sum" => w.iter().sum(),
                        "count" => w.len() as f64,
                        "spread" => max - min,
                        a => panic!("agg {a}"),
                    }
                } else {
                    v
                };
                let now_on = match (rule.above, rule.below) {
                    (Some(a), _) => v > a || (on && v >= rule.clear.unwrap_or(a)),
                    (_, Some(b)) => v < b || (on && v <= rule.clear.unwrap_or(b)),
                    _ => panic!("{}: no threshold", rule.name),
                };
                if now_on && !on {
                    since = ts;
                }
                if !now_on {
                    fired = false;
                }
                on = now_on;
                if on && !fired && ts - since >= ms(&rule.for_) {
                    fired = true;
                    out.push(ts);
                }
            }
        }
        "rate" => {
            let mut fired = false;
            for (k, &(ts, v)) in points.iter().enumerate() {
                let oldest = points[..=k]
                    .iter()
                    .find(|(t, _)| *t >= ts - window)
                    .unwrap()
                    .1;
                let d = v - oldest;
                let on = rule.rise.is_some_and(|r| d > r) || rule.fall.is_some_and(|f| d < -f);
                if on && !fired {
                    out.push(ts);
                }
                fired = on;
            }
        }
        "deadman" => {
            let silence = ms(&rule.silence);
            for w in points.windows(2) {
                if w[1].0 - w[0].0 > silence {
                    out.push(w[0].0 + silence);
                }
            }
            if let Some(&(last, _)) = points.last() {
                if T0 + RUN_MS - last > silence {
                    out.push(last + silence);
                }
            }
        }
        k => panic!("kind {k}"),
    }
    out
}

#[test]
fn documented_rules_fire_on_the_faults_and_only_there() {
    for (name, text) in EMBEDDED {
        let rules = documented_rules(text);
        assert!(!rules.is_empty(), "{name} documents no rules");
        let scenario = Scenario::load(name).unwrap();
        for seed in 1..=4 {
            let mut sim = Simulator::new(&scenario, seed, T0).unwrap();
            let msgs = sim.tick(T0 + RUN_MS);
            let readings = decode(&msgs, 64 * 1024);
            for rule in &rules {
                let mut fired = 0;
                for (series, points) in readings.iter().filter(|(s, _)| matches(&rule.series, s)) {
                    for at in firings(rule, points) {
                        fired += 1;
                        // A fault on this series explains the firing: it began before, and
                        // ended no longer ago than the rule can remember.
                        let memory =
                            ms(&rule.window).max(ms(&rule.silence)).max(ms(&rule.for_)) + 30_000;
                        let explained = sim.faults().iter().any(|f| {
                            f.series.iter().any(|s| s == series)
                                && f.kind != FaultKind::Malformed
                                && at >= f.start_ms
                                && at <= f.end_ms + memory
                        });
                        assert!(explained, "{name} seed {seed}: {} fired on {series} at {}s with no fault to explain it", rule.name, (at - T0) / 1000);
                    }
                }
                assert!(
                    fired > 0,
                    "{name} seed {seed}: {} never fired in {} minutes",
                    rule.name,
                    RUN_MS / 60_000
                );
            }
        }
    }
}
