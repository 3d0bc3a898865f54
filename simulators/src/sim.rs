//! The simulator core: a scenario, a seed and a start time in; the MQTT messages due at
//! a given time out.
//!
//! Pure: no clock, no I/O. Time drives everything — every sensor samples at fixed
//! offsets from the start (`start + phase + k·period`), draws from its own ChaCha8
//! stream (the seed, stream = the sensor's index), and faults are windows in scenario
//! time. The same scenario, seed and `tick` times give byte-identical messages, however
//! the ticks are spaced. The async shell in [`crate::publish`] sends what `tick` returns.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::models::{round_to, Deplete, Model, Params};
use crate::scenario::{FaultKind, Format, Malformed, Scenario, ScenarioError};

/// One MQTT message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// Sample time (epoch ms): the `ts` in JSON payloads.
    pub ts: i64,
    /// The fault that shaped this message, if any (the strongest when several did).
    pub fault: Option<FaultKind>,
}

/// A scheduled fault, resolved against the scenario, for logs and displays.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultWindow {
    pub kind: FaultKind,
    /// Series names (topic after the prefix) the fault touches.
    pub series: Vec<String>,
    pub start_ms: i64,
    pub end_ms: i64,
    /// `by +15`, `0.5/min`, `payload utf8`, `to 3`…
    pub detail: String,
}

/// Past this many missed periods a sensor skips ahead instead of catching up.
const MAX_CATCH_UP: i64 = 1000;

/// Payload of a default `oversized` fault: just over centinela's default `max_payload`
/// (64 KiB = 65,536 bytes), so its decoder refuses and counts it, and under the
/// embedded broker's transport limit (`max_payload` + 1 KiB), which would otherwise
/// drop the publisher's connection instead.
pub const DEFAULT_OVERSIZED: usize = 65_600;

#[derive(Debug, Clone)]
struct Sensor {
    metric: String,
    unit: String,
    model: Model,
    rng: ChaCha8Rng,
    /// Value frozen by a stuck fault: (fault index, value).
    frozen: Option<(usize, f64)>,
}

#[derive(Debug, Clone)]
struct Emitter {
    topic: String,
    format: Format,
    /// Indices into `Simulator::sensors`; one unless the format is Object.
    sensors: Vec<usize>,
    period_ms: i64,
    next_due: i64,
}

#[derive(Debug, Clone)]
struct Fault {
    kind: FaultKind,
    sensors: Vec<usize>,
    start_ms: i64,
    end_ms: i64,
    by: f64,
    per_minute: f64,
    payload: Malformed,
    size: usize,
    to: f64,
}

impl Fault {
    fn active(&self, t: i64) -> bool {
        t >= self.start_ms && t < self.end_ms
    }
}

/// Generates the messages of one scenario run.
#[derive(Debug, Clone)]
pub struct Simulator {
    start_ms: i64,
    /// Model time (epoch ms) at `start_ms`: where the daily cycles begin.
    model_origin_ms: f64,
    time_scale: f64,
    retain: bool,
    sensors: Vec<Sensor>,
    emitters: Vec<Emitter>,
    faults: Vec<Fault>,
    windows: Vec<FaultWindow>,
}

fn join_topic(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}/{rest}")
    }
}

impl Simulator {
    /// A run of `scenario` starting at `start_ms` (epoch ms), randomness from `seed`.
    /// The scenario is checked again here, so a hand-built one cannot panic later.
    pub fn new(scenario: &Scenario, seed: u64, start_ms: i64) -> Result<Simulator, ScenarioError> {
        scenario.validate(&scenario.name)?;
        let model_origin_ms = match scenario.start_hour {
            Some(h) => (start_ms - start_ms.rem_euclid(86_400_000)) as f64 + h * 3_600_000.0,
            None => start_ms as f64,
        };
        let mut sensors = Vec::new();
        let mut emitters = Vec::new();
        // (site, device, metric) → sensor index, for resolving faults.
        let mut index = Vec::new();
        for d in &scenario.devices {
            let format = scenario.device_format(d);
            let mut group = Vec::new();
            for s in &d.sensors {
                // validate() guarantees a kind for every sensor.
                let Some(kind) = s.model_kind() else { continue };
                let i = sensors.len();
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(i as u64);
                sensors.push(Sensor {
                    metric: s.metric.clone(),
                    unit: s
                        .unit
                        .clone()
                        .unwrap_or_else(|| kind.default_unit().to_string()),
                    model: Model::new(Params::from_config(kind, s), model_origin_ms),
                    rng,
                    frozen: None,
                });
                index.push((d.site.clone(), d.name.clone(), s.metric.clone(), i));
                let period_ms = scenario.period(d, s).as_millis().max(1);
                if format == Format::Object {
                    group.push(i);
                } else {
                    let topic = join_topic(
                        &scenario.prefix,
                        &format!("{}/{}/{}", d.site, d.name, s.metric),
                    );
                    emitters.push(Emitter {
                        topic,
                        format,
                        sensors: vec![i],
                        period_ms,
                        next_due: 0,
                    });
                }
            }
            if format == Format::Object {
                let period_ms = d.every.unwrap_or(scenario.every).as_millis().max(1);
                let topic = join_topic(&scenario.prefix, &format!("{}/{}", d.site, d.name));
                emitters.push(Emitter {
                    topic,
                    format,
                    sensors: group,
                    period_ms,
                    next_due: 0,
                });
            }
        }
        // Spread the sensors over their period so they do not all report at once.
        let n = emitters.len() as i64;
        for (k, e) in emitters.iter_mut().enumerate() {
            e.next_due = start_ms + e.period_ms * k as i64 / n.max(1);
        }
        let mut faults = Vec::new();
        let mut windows = Vec::new();
        for f in &scenario.faults {
            let targets: Vec<usize> = index
                .iter()
                .filter(|(site, dev, metric, _)| {
                    *dev == f.device
                        && f.site.as_ref().is_none_or(|s| s == site)
                        && f.metric.as_ref().is_none_or(|m| m == metric)
                })
                .map(|(_, _, _, i)| *i)
                .collect();
            let series = index
                .iter()
                .filter(|(_, _, _, i)| targets.contains(i))
                .map(|(site, dev, metric, _)| format!("{site}/{dev}/{metric}"))
                .collect();
            let fault = Fault {
                kind: f.kind,
                sensors: targets,
                start_ms: start_ms + f.at.as_millis(),
                end_ms: start_ms + f.at.as_millis() + f.duration.as_millis(),
                by: f.by.unwrap_or(0.0),
                per_minute: f.per_minute.unwrap_or(0.0),
                payload: f.payload.unwrap_or_default(),
                size: f.size.unwrap_or(DEFAULT_OVERSIZED),
                to: f.to.unwrap_or(0.0),
            };
            let detail = match f.kind {
                FaultKind::Spike => format!("by {:+}", fault.by),
                FaultKind::Drift => format!("{:+}/min", fault.per_minute),
                FaultKind::Malformed if fault.payload == Malformed::Oversized => {
                    format!("payload oversized ({} bytes)", fault.size)
                }
                FaultKind::Malformed => format!("payload {}", fault.payload.as_str()),
                FaultKind::Deplete => format!("to {}", fault.to),
                FaultKind::Stuck | FaultKind::Silence => String::new(),
            };
            windows.push(FaultWindow {
                kind: f.kind,
                series,
                start_ms: fault.start_ms,
                end_ms: fault.end_ms,
                detail,
            });
            faults.push(fault);
        }
        Ok(Simulator {
            start_ms,
            model_origin_ms,
            time_scale: scenario.time_scale,
            retain: scenario.retain,
            sensors,
            emitters,
            faults,
            windows,
        })
    }

    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// The faults of the run, in scenario order, with absolute times.
    pub fn faults(&self) -> &[FaultWindow] {
        &self.windows
    }

    /// Every topic this run publishes on.
    pub fn topics(&self) -> Vec<String> {
        self.emitters.iter().map(|e| e.topic.clone()).collect()
    }

    /// The earliest time at which `tick` will return something.
    pub fn next_due(&self) -> Option<i64> {
        self.emitters.iter().map(|e| e.next_due).min()
    }

    /// Shortest sampling period of the run, in ms.
    pub fn min_period_ms(&self) -> i64 {
        self.emitters
            .iter()
            .map(|e| e.period_ms)
            .min()
            .unwrap_or(1000)
    }

    /// All messages due at or before `now_ms` and not yet returned, in time order.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Message> {
        let mut out = Vec::new();
        for e in 0..self.emitters.len() {
            let (period, mut due) = (self.emitters[e].period_ms, self.emitters[e].next_due);
            if now_ms - due > MAX_CATCH_UP * period {
                due += ((now_ms - due) / period - MAX_CATCH_UP) * period;
            }
            while due <= now_ms {
                if let Some(m) = self.sample(e, due) {
                    out.push(m);
                }
                due += period;
            }
            self.emitters[e].next_due = due;
        }
        out.sort_by_key(|m| m.ts); // stable: emitters stay in scenario order at equal times
        out
    }

    fn sample(&mut self, e: usize, t: i64) -> Option<Message> {
        let model_ms = self.model_origin_ms + (t - self.start_ms) as f64 * self.time_scale;
        let emitter = &self.emitters[e];
        let mut fields: Vec<(usize, f64)> = Vec::with_capacity(emitter.sensors.len());
        let mut label: Option<FaultKind> = None;
        let mut note = |k: FaultKind| {
            // Stronger labels win: what a reader of the stream would notice first.
            let rank = |k: FaultKind| match k {
                FaultKind::Malformed => 5,
                FaultKind::Silence => 4,
                FaultKind::Deplete => 3,
                FaultKind::Stuck => 2,
                FaultKind::Spike => 1,
                FaultKind::Drift => 0,
            };
            if label.is_none_or(|l| rank(k) > rank(l)) {
                label = Some(k);
            }
        };
        let mut malformed: Option<(Malformed, usize)> = None;
        for &i in &emitter.sensors {
            let active: Vec<(usize, &Fault)> = self
                .faults
                .iter()
                .enumerate()
                .filter(|(_, f)| f.active(t) && f.sensors.contains(&i))
                .collect();
            // The shelf empties over the first three quarters of the window and stays
            // low for the last quarter, so a threshold rule with `for` has time to fire.
            let deplete = active
                .iter()
                .find(|(_, f)| f.kind == FaultKind::Deplete)
                .map(|(_, f)| Deplete {
                    progress: ((t - f.start_ms) as f64 / (0.75 * (f.end_ms - f.start_ms) as f64))
                        .min(1.0),
                    to: f.to,
                });
            let s = &mut self.sensors[i];
            // Always sample, even when silent or malformed: the values after a fault
            // are the ones the run would have had without it.
            let mut v = s.model.sample(t as f64, model_ms, &mut s.rng, deplete);
            let mut silent = false;
            let mut stuck = None;
            for (fi, f) in &active {
                match f.kind {
                    FaultKind::Spike => v += f.by,
                    FaultKind::Drift => v += f.per_minute * (t - f.start_ms) as f64 / 60_000.0,
                    FaultKind::Silence => silent = true,
                    FaultKind::Stuck => stuck = Some(*fi),
                    FaultKind::Malformed => malformed = Some((f.payload, f.size)),
                    FaultKind::Deplete => {}
                }
                note(f.kind);
            }
            let mut v = round_to(v, s.model.params.decimals) + 0.0; // + 0.0 turns -0 into 0
            if let Some(fi) = stuck {
                match s.frozen {
                    Some((f, frozen)) if f == fi => v = frozen,
                    _ => s.frozen = Some((fi, v)),
                }
            }
            if !silent {
                fields.push((i, v));
            }
        }
        if fields.is_empty() {
            return None;
        }
        let payload = match malformed {
            Some((kind, size)) => self.malformed(emitter, &fields, t, kind, size),
            None => self.render(emitter, &fields, t),
        };
        Some(Message {
            topic: emitter.topic.clone(),
            payload,
            retain: self.retain,
            ts: t,
            fault: label,
        })
    }

    fn render(&self, emitter: &Emitter, fields: &[(usize, f64)], t: i64) -> Vec<u8> {
        match emitter.format {
            Format::Plain => fields[0].1.to_string().into_bytes(),
            Format::Json => {
                let s = &self.sensors[fields[0].0];
                format!(
                    "{{\"value\":{},\"ts\":{t},\"unit\":{}}}",
                    fields[0].1,
                    json_str(&s.unit)
                )
                .into_bytes()
            }
            Format::Object => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(i, v)| format!("{}:{v}", json_str(&self.sensors[*i].metric)))
                    .collect();
                format!("{{{}}}", parts.join(",")).into_bytes()
            }
        }
    }

    fn malformed(
        &self,
        emitter: &Emitter,
        fields: &[(usize, f64)],
        t: i64,
        kind: Malformed,
        size: usize,
    ) -> Vec<u8> {
        let value = fields[0].1;
        let not_a_number = |text: &str| -> Vec<u8> {
            match emitter.format {
                Format::Plain => text.as_bytes().to_vec(),
                Format::Json => format!("{{\"value\":{},\"ts\":{t}}}", json_str(text)).into_bytes(),
                Format::Object => {
                    let parts: Vec<String> = fields
                        .iter()
                        .map(|(i, _)| {
                            format!("{}:{}", json_str(&self.sensors[*i].metric), json_str(text))
                        })
                        .collect();
                    format!("{{{}}}", parts.join(",")).into_bytes()
                }
            }
        };
        match kind {
            Malformed::Text => not_a_number("ERR sensor fault"),
            Malformed::Nan => not_a_number("NaN"),
            Malformed::Utf8 => {
                let mut b = vec![0xff, 0xfe];
                b.extend_from_slice(value.to_string().as_bytes());
                b.extend_from_slice(&[0xc3, 0x28]);
                b
            }
            Malformed::Json => format!("{{\"value\":{value},\"ts\":{}", t / 1000).into_bytes(),
            Malformed::Oversized => {
                let head = format!("{{\"value\":{value},\"ts\":{t},\"pad\":\"");
                let tail = "\"}";
                let pad = size.saturating_sub(head.len() + tail.len());
                let mut b = Vec::with_capacity(size);
                b.extend_from_slice(head.as_bytes());
                b.resize(head.len() + pad, b'x');
                b.extend_from_slice(tail.as_bytes());
                b
            }
        }
    }
}

fn json_str(s: &str) -> String {
    // Serialising a &str to JSON cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::EMBEDDED;

    /// 2026-01-01T00:00:00Z: a midnight, so model hours are easy to read.
    const T0: i64 = 1_767_225_600_000;

    fn scenario(text: &str) -> Scenario {
        Scenario::parse(text, "test").unwrap()
    }

    fn run(s: &Scenario, seed: u64, until_s: i64) -> Vec<Message> {
        let mut sim = Simulator::new(s, seed, T0).unwrap();
        sim.tick(T0 + until_s * 1000)
    }

    fn on<'a>(msgs: &'a [Message], topic: &str) -> Vec<&'a Message> {
        msgs.iter().filter(|m| m.topic == topic).collect()
    }

    fn num(m: &Message) -> f64 {
        std::str::from_utf8(&m.payload).unwrap().parse().unwrap()
    }

    fn secs(m: &Message) -> f64 {
        (m.ts - T0) as f64 / 1000.0
    }

    const ONE_TEMP: &str = r#"
name = "t"
every = "1s"
[[devices]]
site = "lab"
name = "n1"
sensors = [{ metric = "temperature" }, { metric = "humidity" }]
"#;

    fn with_fault(fault: &str) -> Scenario {
        scenario(&format!("{ONE_TEMP}\n[[faults]]\ndevice = \"n1\"\n{fault}"))
    }

    #[test]
    fn same_seed_same_bytes_however_ticked() {
        let s = Scenario::load("demo").unwrap();
        let all_at_once = run(&s, 7, 200);
        let mut sim = Simulator::new(&s, 7, T0).unwrap();
        let mut stepped = Vec::new();
        let mut t = T0;
        while t < T0 + 200_000 {
            t = (t + 3_719).min(T0 + 200_000);
            stepped.extend(sim.tick(t));
        }
        assert!(all_at_once.len() > 500, "{}", all_at_once.len());
        // Same messages; only the order between ticks may differ, so compare per topic.
        for topic in sim.topics() {
            let a: Vec<_> = on(&all_at_once, &topic);
            let b: Vec<_> = on(&stepped, &topic);
            assert_eq!(a, b, "{topic}");
        }
        assert_eq!(all_at_once.len(), stepped.len());
    }

    #[test]
    fn different_seed_different_bytes() {
        let s = Scenario::load("demo").unwrap();
        let a = run(&s, 1, 60);
        let b = run(&s, 2, 60);
        assert_eq!(a.len(), b.len());
        let differing = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.payload != y.payload)
            .count();
        assert!(differing > a.len() / 2, "{differing} of {} differ", a.len());
    }

    #[test]
    fn topics_and_formats() {
        let s = scenario(
            r#"
name = "f"
prefix = "site-a/sensors"
[[devices]]
site = "gh"
name = "plain"
sensors = [{ metric = "temperature" }]
[[devices]]
site = "gh"
name = "json"
format = "json"
sensors = [{ metric = "temperature", unit = "degC" }]
[[devices]]
site = "gh"
name = "obj"
format = "object"
sensors = [{ metric = "humidity" }, { metric = "co2" }]
"#,
        );
        let msgs = run(&s, 1, 10);
        let plain = on(&msgs, "site-a/sensors/gh/plain/temperature");
        assert_eq!(plain.len(), 6); // every 2 s by default: 0, 2, 4, 6, 8, 10
        assert!(num(plain[0]).is_finite());
        let json = on(&msgs, "site-a/sensors/gh/json/temperature");
        let v: serde_json::Value = serde_json::from_slice(&json[0].payload).unwrap();
        assert_eq!(v["ts"].as_i64(), Some(json[0].ts));
        assert_eq!(v["unit"], "degC");
        assert!(v["value"].as_f64().unwrap() > 5.0);
        let obj = on(&msgs, "site-a/sensors/gh/obj");
        let v: serde_json::Value = serde_json::from_slice(&obj[0].payload).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["co2", "humidity"]); // serde_json sorts; the payload has both
        assert!(std::str::from_utf8(&obj[0].payload)
            .unwrap()
            .starts_with("{\"humidity\":"));
        // co2 has 0 decimals: written as an integer.
        assert!(v["co2"].is_u64(), "{v}");
    }

    #[test]
    fn stuck_repeats_the_exact_bytes() {
        let s = with_fault(
            "metric = \"temperature\"\nkind = \"stuck\"\nat = \"20s\"\nduration = \"30s\"",
        );
        let msgs = run(&s, 3, 80);
        let temp = on(&msgs, "sensors/lab/n1/temperature");
        let inside: Vec<_> = temp
            .iter()
            .filter(|m| (20.0..50.0).contains(&secs(m)))
            .collect();
        assert_eq!(inside.len(), 30);
        assert!(inside
            .iter()
            .all(|m| m.payload == inside[0].payload && m.fault == Some(FaultKind::Stuck)));
        let before: std::collections::HashSet<_> = temp
            .iter()
            .filter(|m| secs(m) < 20.0)
            .map(|m| m.payload.clone())
            .collect();
        assert!(before.len() > 5, "a healthy sensor varies: {before:?}");
        let after: std::collections::HashSet<_> = temp
            .iter()
            .filter(|m| secs(m) >= 50.0)
            .map(|m| m.payload.clone())
            .collect();
        assert!(after.len() > 5);
    }

    #[test]
    fn silence_publishes_nothing_and_leaves_the_rest_alone() {
        let healthy = run(&scenario(ONE_TEMP), 5, 90);
        let s = with_fault(
            "metric = \"temperature\"\nkind = \"silence\"\nat = \"30s\"\nduration = \"40s\"",
        );
        let msgs = run(&s, 5, 90);
        let temp = on(&msgs, "sensors/lab/n1/temperature");
        assert!(temp.iter().all(|m| !(30.0..70.0).contains(&secs(m))));
        assert_eq!(temp.len(), 91 - 40); // 0..=90 s, less the 40 s gap
                                         // Before and after the gap, and on the other sensor, the bytes are those of a
                                         // run without the fault.
        let healthy_temp: Vec<_> = on(&healthy, "sensors/lab/n1/temperature")
            .into_iter()
            .filter(|m| !(30.0..70.0).contains(&secs(m)))
            .collect();
        assert_eq!(temp, healthy_temp);
        assert_eq!(
            on(&msgs, "sensors/lab/n1/humidity"),
            on(&healthy, "sensors/lab/n1/humidity")
        );
    }

    #[test]
    fn spike_adds_its_amount_while_it_lasts() {
        let healthy = run(&scenario(ONE_TEMP), 9, 60);
        let s = with_fault("metric = \"temperature\"\nkind = \"spike\"\nat = \"10s\"\nduration = \"20s\"\nby = 15.0");
        let msgs = run(&s, 9, 60);
        let (h, f) = (
            on(&healthy, "sensors/lab/n1/temperature"),
            on(&msgs, "sensors/lab/n1/temperature"),
        );
        assert_eq!(h.len(), f.len());
        for (h, f) in h.iter().zip(&f) {
            let d = num(f) - num(h);
            if (10.0..30.0).contains(&secs(f)) {
                assert!((d - 15.0).abs() < 0.011, "at {}s: {d}", secs(f));
                assert!(num(f) > 30.0, "a 21 °C room plus 15 exceeds 30: {}", num(f));
                assert_eq!(f.fault, Some(FaultKind::Spike));
            } else {
                assert_eq!(d, 0.0);
                assert_eq!(f.fault, None);
            }
        }
    }

    #[test]
    fn drift_grows_by_the_slope() {
        let healthy = run(&scenario(ONE_TEMP), 11, 400);
        let s = with_fault("metric = \"temperature\"\nkind = \"drift\"\nat = \"60s\"\nduration = \"5m\"\nper_minute = 2.0");
        let msgs = run(&s, 11, 400);
        let (h, f) = (
            on(&healthy, "sensors/lab/n1/temperature"),
            on(&msgs, "sensors/lab/n1/temperature"),
        );
        let mut last = -1.0;
        for (h, f) in h.iter().zip(&f) {
            let t = secs(f);
            let d = num(f) - num(h);
            if (60.0..360.0).contains(&t) {
                let want = 2.0 * (t - 60.0) / 60.0;
                assert!((d - want).abs() < 0.011, "at {t}s: {d} vs {want}");
                assert!(d >= last - 0.011);
                last = d;
            } else {
                assert!(d.abs() < 1e-9);
            }
        }
        assert!(last > 9.9, "5 minutes at 2/min: {last}");
    }

    fn malformed(kind: &str, format: &str) -> Vec<Message> {
        let s = scenario(&format!(
            "name = \"m\"\nevery = \"1s\"\n[[devices]]\nsite = \"s\"\nname = \"d\"\nformat = \"{format}\"\nsensors = [{{ metric = \"temperature\" }}, {{ metric = \"co2\" }}]\n[[faults]]\ndevice = \"d\"\nkind = \"malformed\"\npayload = \"{kind}\"\nat = \"5s\"\nduration = \"3s\""
        ));
        let msgs = run(&s, 1, 20);
        let bad: Vec<Message> = msgs
            .into_iter()
            .filter(|m| m.fault == Some(FaultKind::Malformed))
            .collect();
        assert!(!bad.is_empty());
        assert!(bad.iter().all(|m| (5.0..8.0).contains(&secs(m))));
        bad
    }

    fn as_number(payload: &[u8]) -> Option<f64> {
        let text = std::str::from_utf8(payload).ok()?;
        let v: f64 = text.trim().parse().ok()?;
        v.is_finite().then_some(v)
    }

    fn json_value(payload: &[u8]) -> Option<f64> {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        v.get("value").and_then(|v| v.as_f64())
    }

    #[test]
    fn malformed_payloads_are_malformed() {
        for format in ["plain", "json", "object"] {
            for m in malformed("text", format) {
                assert!(
                    as_number(&m.payload).is_none() && json_value(&m.payload).is_none(),
                    "{format}: {:?}",
                    String::from_utf8_lossy(&m.payload)
                );
                assert!(String::from_utf8_lossy(&m.payload).contains("ERR"));
            }
            for m in malformed("nan", format) {
                assert!(as_number(&m.payload).is_none() && json_value(&m.payload).is_none());
                assert!(String::from_utf8_lossy(&m.payload).contains("NaN"));
            }
            for m in malformed("utf8", format) {
                assert!(std::str::from_utf8(&m.payload).is_err());
            }
            for m in malformed("json", format) {
                assert!(serde_json::from_slice::<serde_json::Value>(&m.payload).is_err());
                assert!(as_number(&m.payload).is_none());
            }
            for m in malformed("oversized", format) {
                assert_eq!(m.payload.len(), DEFAULT_OVERSIZED);
                assert!(m.payload.len() > 64 * 1024);
            }
        }
        // Plain "NaN" is what str::parse accepts: the decoder has to refuse it itself.
        let nan = malformed("nan", "plain");
        assert_eq!(nan[0].payload, b"NaN");
        assert!(std::str::from_utf8(&nan[0].payload)
            .unwrap()
            .parse::<f64>()
            .unwrap()
            .is_nan());
    }

    #[test]
    fn daily_cycle_peaks_in_the_afternoon() {
        // An hour of model time per second, no noise: one sample per model hour.
        let s = scenario(
            r#"
name = "d"
every = "1s"
time_scale = 3600.0
[[devices]]
site = "s"
name = "d"
sensors = [
  { metric = "temperature", mean = 20.0, amplitude = 5.0, noise = 0.0, wander = 0.0 },
  { metric = "humidity", mean = 60.0, amplitude = 10.0, noise = 0.0, wander = 0.0 },
]
"#,
        );
        let msgs = run(&s, 1, 47);
        let temp: Vec<f64> = on(&msgs, "sensors/s/d/temperature")
            .iter()
            .map(|m| num(m))
            .collect();
        assert_eq!(temp.len(), 48);
        let argmax = |v: &[f64]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap()
        };
        let argmin = |v: &[f64]| {
            v.iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap()
        };
        assert_eq!(argmax(&temp[..24]), 15, "{temp:?}");
        assert_eq!(argmin(&temp[..24]), 3);
        assert_eq!(temp[15], 25.0);
        assert_eq!(temp[3], 15.0);
        assert_eq!(temp[..24], temp[24..], "the cycle repeats every day");
        // Humidity is highest at dawn, when it is coldest.
        let hum: Vec<f64> = on(&msgs, "sensors/s/d/humidity")
            .iter()
            .map(|m| num(m))
            .collect();
        let hour_of = |i: usize| (i as f64 + 0.5) % 24.0; // humidity samples half a period later
        assert!((hour_of(argmax(&hum[..24])) - 5.0).abs() <= 0.5, "{hum:?}");
    }

    #[test]
    fn start_hour_sets_the_model_clock() {
        let s = scenario(
            "name = \"d\"\nstart_hour = 15.0\n[[devices]]\nsite = \"s\"\nname = \"d\"\nsensors = [{ metric = \"temperature\", mean = 20.0, amplitude = 5.0, noise = 0.0, wander = 0.0 }]",
        );
        let msgs = run(&s, 1, 0);
        assert_eq!(num(&msgs[0]), 25.0);
    }

    #[test]
    fn battery_decays_slowly() {
        let s = scenario(
            "name = \"b\"\nevery = \"1m\"\ntime_scale = 1440.0\n[[devices]]\nsite = \"s\"\nname = \"d\"\nsensors = [{ metric = \"battery\", start = 4.0, decay_per_day = 0.1 }]",
        );
        // 1440× : a model day per real minute; ten days.
        let v: Vec<f64> = run(&s, 1, 600).iter().map(num).collect();
        assert_eq!(v.len(), 11);
        assert!((v[0] - 4.0).abs() < 0.02);
        assert!((v[10] - 3.0).abs() < 0.02, "{v:?}");
        assert!(v.windows(2).all(|w| w[1] < w[0]), "{v:?}");
    }

    const SHELF: &str = r#"
name = "shop"
every = "5s"
[[devices]]
site = "shop"
name = "shelf"
sensors = [{ metric = "stock", start = 100.0, capacity = 100.0, reorder_at = 30.0, restock_delay = "2m", purchases_per_minute = 6.0, purchase_max = 3 }]
"#;

    #[test]
    fn stock_depletes_then_jumps_on_restock() {
        let msgs = run(&scenario(SHELF), 4, 3600);
        let v: Vec<(f64, f64)> = msgs.iter().map(|m| (secs(m), num(m))).collect();
        assert!(v
            .iter()
            .all(|(_, x)| x.fract() == 0.0 && (0.0..=100.0).contains(x)));
        let rises: Vec<usize> = (1..v.len()).filter(|&i| v[i].1 > v[i - 1].1).collect();
        assert!(
            rises.len() >= 3,
            "an hour at ~12 items/min restocks several times: {rises:?}"
        );
        for &i in &rises {
            assert!(
                v[i].1 >= 94.0,
                "filled to capacity less this interval's purchases: {}",
                v[i].1
            );
            // The order went out when the level first reached the reorder point, 2 minutes before.
            let ordered = (0..i).rev().take_while(|&j| v[j].1 <= 30.0).last().unwrap();
            let waited = v[i].0 - v[ordered].0;
            assert!((120.0..=125.0).contains(&waited), "restock after {waited}s");
        }
        // Between restocks the level only goes down.
        let falls = (1..v.len()).filter(|&i| v[i].1 < v[i - 1].1).count();
        assert!(falls > 100);
    }

    #[test]
    fn deplete_drains_below_the_minimum_and_holds_the_restock() {
        let s = scenario(&format!("{SHELF}\n[[faults]]\ndevice = \"shelf\"\nkind = \"deplete\"\nat = \"60s\"\nduration = \"60s\"\nto = 3.0"));
        let v: Vec<(f64, f64, Option<FaultKind>)> = run(&s, 4, 400)
            .iter()
            .map(|m| (secs(m), num(m), m.fault))
            .collect();
        let during: Vec<_> = v
            .iter()
            .filter(|(t, _, _)| (60.0..120.0).contains(t))
            .collect();
        assert!(during
            .iter()
            .all(|(_, _, f)| *f == Some(FaultKind::Deplete)));
        assert!(
            during.windows(2).all(|w| w[1].1 <= w[0].1),
            "only down while depleting"
        );
        assert!(
            during
                .iter()
                .filter(|(t, _, _)| *t >= 105.0)
                .all(|(_, x, _)| *x == 3.0),
            "{during:?}"
        );
        let after: Vec<_> = v.iter().filter(|(t, _, _)| *t >= 120.0).collect();
        assert!(
            after[0].1 <= 3.0,
            "below the minimum once the fault ends: {:?}",
            after[0]
        );
        // No restock for the 2 minutes of delay after the fault; then a full shelf.
        let restock = after.iter().find(|(_, x, _)| *x > 50.0).unwrap();
        assert!(
            (240.0..=250.0).contains(&restock.0),
            "restocked at {}s",
            restock.0
        );
    }

    #[test]
    fn rate_sets_messages_per_second_per_sensor() {
        let mut s = Scenario::load("greenhouse").unwrap();
        s.set_rate(10.0).unwrap();
        let mut sim = Simulator::new(&s, 1, T0).unwrap();
        let topics = sim.topics();
        let msgs = sim.tick(T0 + 9_999);
        for t in &topics {
            let n = msgs
                .iter()
                .filter(|m| &m.topic == t && m.fault.is_none())
                .count();
            assert_eq!(n, 100, "{t}");
        }
        assert!(s.set_rate(0.0).is_err());
    }

    #[test]
    fn embedded_scenarios_parse_with_well_formed_topics_and_early_faults() {
        let mut kinds = std::collections::BTreeSet::new();
        for (name, _) in EMBEDDED {
            let s = Scenario::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.name, *name);
            let sim = Simulator::new(&s, 1, T0).unwrap();
            let topics = sim.topics();
            let unique: std::collections::HashSet<_> = topics.iter().collect();
            assert_eq!(unique.len(), topics.len(), "{name}: duplicate topics");
            for t in &topics {
                let levels: Vec<&str> = t.split('/').collect();
                assert_eq!(levels[0], "sensors", "{name}: {t}");
                assert!(levels.len() == 3 || levels.len() == 4, "{name}: {t}");
                assert!(
                    levels
                        .iter()
                        .all(|l| !l.is_empty() && !l.contains(['+', '#', ' '])),
                    "{name}: {t}"
                );
            }
            assert!(!sim.faults().is_empty(), "{name} has no faults");
            for w in sim.faults() {
                assert!(
                    w.start_ms - T0 <= 180_000,
                    "{name}: {:?} starts after 3 minutes",
                    w.kind
                );
                assert!(!w.series.is_empty());
                kinds.insert(w.kind);
            }
            // Every fault shows within the scenario's first 5 minutes of messages.
            let msgs = Simulator::new(&s, 1, T0).unwrap().tick(T0 + 300_000);
            for w in sim.faults().iter().filter(|w| w.kind != FaultKind::Silence) {
                assert!(
                    msgs.iter()
                        .any(|m| m.fault.is_some() && m.ts >= w.start_ms && m.ts < w.end_ms),
                    "{name}: {w:?} never shows"
                );
            }
        }
        assert_eq!(
            kinds.len(),
            6,
            "every fault kind is shown somewhere: {kinds:?}"
        );
        assert_eq!(Scenario::load("default").unwrap().name, "demo");
    }

    #[test]
    fn catching_up_is_bounded() {
        let s = scenario(ONE_TEMP);
        let mut sim = Simulator::new(&s, 1, T0).unwrap();
        let msgs = sim.tick(T0 + 86_400_000);
        assert_eq!(msgs.len(), 2 * (MAX_CATCH_UP as usize + 1));
        assert!(sim.tick(T0 + 86_400_000).is_empty());
        assert_eq!(sim.tick(T0 + 86_401_000).len(), 2);
    }
}
