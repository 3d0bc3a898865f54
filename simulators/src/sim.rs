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

/// Payload of a default `oversized` fault: above the 64 KiB a broker usually accepts.
pub const DEFAULT_OVERSIZED: usize = 70_000;

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
            let deplete = active
                .iter()
                .find(|(_, f)| f.kind == FaultKind::Deplete)
                .map(|(_, f)| Deplete {
                    progress: (t - f.start_ms) as f64 / (f.end_ms - f.start_ms) as f64,
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
