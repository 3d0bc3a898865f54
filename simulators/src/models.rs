//! Sensor models: what a healthy sensor of each kind would read at a given time.
//!
//! Pure and deterministic: a model is advanced with the sample time and draws its
//! randomness from its own ChaCha8 stream, so the same seed and the same sample times
//! give the same values. Faults are applied on top by [`crate::sim`]; only the stock
//! model knows about its one fault (depletion), because a drained shelf changes when the
//! next restock comes.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::scenario::{SensorConfig, SensorKind};

const MS_PER_DAY: f64 = 86_400_000.0;
const MS_PER_MINUTE: f64 = 60_000.0;
/// Correlation time of the slow wander, in model milliseconds.
const WANDER_TAU_MS: f64 = 10.0 * MS_PER_MINUTE;

/// Parameters of one sensor, with the kind's defaults filled in.
#[derive(Debug, Clone)]
pub struct Params {
    pub kind: SensorKind,
    pub mean: f64,
    pub amplitude: f64,
    pub peak_hour: f64,
    pub noise: f64,
    pub wander: f64,
    pub min: f64,
    pub max: f64,
    pub decimals: u32,
    pub burst_chance: f64,
    pub burst: f64,
    pub start: f64,
    pub decay_per_day: f64,
    pub capacity: f64,
    pub reorder_at: f64,
    pub restock_delay_ms: f64,
    pub purchases_per_minute: f64,
    pub purchase_max: u32,
}

impl Params {
    /// The defaults of each kind, in one place, overridden by what the scenario gives.
    pub fn from_config(kind: SensorKind, c: &SensorConfig) -> Params {
        let base = match kind {
            SensorKind::Temperature => Params {
                mean: 21.0,
                amplitude: 4.0,
                peak_hour: 15.0,
                noise: 0.1,
                wander: 0.3,
                min: -60.0,
                max: 90.0,
                decimals: 2,
                ..Params::zero(kind)
            },
            SensorKind::Humidity => Params {
                mean: 55.0,
                amplitude: 10.0,
                peak_hour: 5.0,
                noise: 0.5,
                wander: 1.5,
                min: 0.0,
                max: 100.0,
                decimals: 1,
                ..Params::zero(kind)
            },
            SensorKind::Pressure => Params {
                mean: 1013.25,
                noise: 0.05,
                wander: 1.5,
                min: 870.0,
                max: 1085.0,
                decimals: 2,
                ..Params::zero(kind)
            },
            SensorKind::Co2 => Params {
                mean: 650.0,
                amplitude: 200.0,
                peak_hour: 13.0,
                noise: 12.0,
                wander: 40.0,
                min: 400.0,
                max: 10_000.0,
                decimals: 0,
                ..Params::zero(kind)
            },
            SensorKind::Vibration => Params {
                mean: 1.2,
                noise: 0.08,
                wander: 0.15,
                burst_chance: 0.02,
                burst: 1.5,
                min: 0.0,
                max: 100.0,
                decimals: 3,
                ..Params::zero(kind)
            },
            SensorKind::Battery => Params {
                start: 4.15,
                decay_per_day: 0.02,
                noise: 0.003,
                min: 3.0,
                max: 5.0,
                decimals: 3,
                ..Params::zero(kind)
            },
            SensorKind::Stock => Params {
                start: 120.0,
                capacity: 120.0,
                reorder_at: 25.0,
                restock_delay_ms: 2.0 * MS_PER_MINUTE,
                purchases_per_minute: 6.0,
                purchase_max: 3,
                min: 0.0,
                max: f64::MAX,
                decimals: 0,
                ..Params::zero(kind)
            },
        };
        Params {
            mean: c.mean.unwrap_or(base.mean),
            amplitude: c.amplitude.unwrap_or(base.amplitude),
            peak_hour: c.peak_hour.unwrap_or(base.peak_hour),
            noise: c.noise.unwrap_or(base.noise).abs(),
            wander: c.wander.unwrap_or(base.wander).abs(),
            min: c.min.unwrap_or(base.min),
            max: c.max.unwrap_or(base.max),
            decimals: c.decimals.unwrap_or(base.decimals),
            burst_chance: c.burst_chance.unwrap_or(base.burst_chance),
            burst: c.burst.unwrap_or(base.burst),
            start: c.start.unwrap_or(base.start),
            decay_per_day: c.decay_per_day.unwrap_or(base.decay_per_day),
            capacity: c.capacity.or(c.start).unwrap_or(base.capacity),
            reorder_at: c.reorder_at.unwrap_or(base.reorder_at),
            restock_delay_ms: c
                .restock_delay
                .map_or(base.restock_delay_ms, |d| d.0.as_secs_f64() * 1000.0),
            purchases_per_minute: c.purchases_per_minute.unwrap_or(base.purchases_per_minute),
            purchase_max: c.purchase_max.unwrap_or(base.purchase_max),
            kind,
        }
    }

    fn zero(kind: SensorKind) -> Params {
        Params {
            kind,
            mean: 0.0,
            amplitude: 0.0,
            peak_hour: 0.0,
            noise: 0.0,
            wander: 0.0,
            min: f64::MIN,
            max: f64::MAX,
            decimals: 2,
            burst_chance: 0.0,
            burst: 0.0,
            start: 0.0,
            decay_per_day: 0.0,
            capacity: 0.0,
            reorder_at: 0.0,
            restock_delay_ms: 0.0,
            purchases_per_minute: 0.0,
            purchase_max: 1,
        }
    }
}

/// A standard normal sample (Box–Muller).
pub fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]: ln is finite
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// cos-shaped daily cycle in [-1, 1], 1 at `peak_hour`, for a model time in epoch ms.
pub fn daily_cycle(model_ms: f64, peak_hour: f64) -> f64 {
    let hour = model_ms.rem_euclid(MS_PER_DAY) / 3_600_000.0;
    (std::f64::consts::TAU * (hour - peak_hour) / 24.0).cos()
}

/// Rounds to `decimals` digits, as the payload will show it.
pub fn round_to(v: f64, decimals: u32) -> f64 {
    let f = 10f64.powi(decimals as i32);
    (v * f).round() / f
}

/// State of one sensor's model between samples.
#[derive(Debug, Clone)]
pub struct Model {
    pub params: Params,
    /// Ornstein–Uhlenbeck wander, in the sensor's unit.
    wander: f64,
    /// Model time of the previous sample (None before the first).
    last_model_ms: Option<f64>,
    /// Real (scenario) time of the previous sample.
    last_real_ms: Option<f64>,
    /// Model time the run started at (battery decay counts from here).
    origin_model_ms: f64,
    /// stock: items on the shelf.
    level: f64,
    /// stock: real time a restock arrives, when one is ordered.
    restock_at: Option<f64>,
    /// stock: level when the current deplete fault began.
    deplete_from: Option<f64>,
}

/// What a stock sensor is told by an active deplete fault.
#[derive(Debug, Clone, Copy)]
pub struct Deplete {
    /// Fraction of the fault's duration elapsed, 0–1.
    pub progress: f64,
    /// Level at the end of the fault.
    pub to: f64,
}

impl Model {
    pub fn new(params: Params, origin_model_ms: f64) -> Model {
        let level = if params.kind == SensorKind::Stock {
            params.start
        } else {
            0.0
        };
        Model {
            params,
            wander: 0.0,
            last_model_ms: None,
            last_real_ms: None,
            origin_model_ms,
            level,
            restock_at: None,
            deplete_from: None,
        }
    }

    /// The healthy value at real time `real_ms` and model time `model_ms` (both epoch
    /// ms, non-decreasing between calls). Daily cycles, wander and battery decay follow
    /// the model clock; shoppers and deliveries follow the real one. Every call draws the
    /// same amount of randomness whatever the outcome, so a fault never shifts the
    /// values that follow it.
    pub fn sample(
        &mut self,
        real_ms: f64,
        model_ms: f64,
        rng: &mut ChaCha8Rng,
        deplete: Option<Deplete>,
    ) -> f64 {
        let real_dt = self
            .last_real_ms
            .map_or(0.0, |last| (real_ms - last).max(0.0));
        self.last_real_ms = Some(real_ms);
        let first = self.last_model_ms.is_none();
        let dt = self
            .last_model_ms
            .map_or(0.0, |last| (model_ms - last).max(0.0));
        self.last_model_ms = Some(model_ms);
        let p = &self.params;
        // Exact OU update: the spread does not depend on the sampling rate.
        let keep = (-dt / WANDER_TAU_MS).exp();
        let step = gaussian(rng);
        self.wander = if first {
            p.wander * step // first sample: start somewhere in the stationary spread
        } else {
            self.wander * keep + p.wander * (1.0 - keep * keep).sqrt() * step
        };
        let noise = p.noise * gaussian(rng);
        let u: f64 = rng.gen();
        let u2: f64 = rng.gen();
        let v = match p.kind {
            SensorKind::Temperature | SensorKind::Humidity | SensorKind::Co2 => {
                p.mean + p.amplitude * daily_cycle(model_ms, p.peak_hour) + self.wander + noise
            }
            SensorKind::Pressure => p.mean + self.wander + noise,
            SensorKind::Vibration => {
                let burst = if u < p.burst_chance {
                    p.burst * u2
                } else {
                    0.0
                };
                (p.mean + self.wander).max(p.mean * 0.2) + noise.abs() + burst
            }
            SensorKind::Battery => {
                let days = (model_ms - self.origin_model_ms) / MS_PER_DAY;
                p.start - p.decay_per_day * days + noise
            }
            SensorKind::Stock => return self.stock(real_ms, real_dt, u, u2, deplete),
        };
        v.clamp(p.min, p.max)
    }

    fn stock(&mut self, now_ms: f64, dt: f64, u: f64, u2: f64, deplete: Option<Deplete>) -> f64 {
        let p = &self.params;
        if let Some(d) = deplete {
            // Drain along a straight line from where the fault found the shelf to `to`;
            // no restock arrives while the shelf is being emptied.
            let from = *self.deplete_from.get_or_insert(self.level);
            let to = d.to.min(from).max(0.0);
            self.restock_at = None;
            self.level = (from + (to - from) * d.progress.clamp(0.0, 1.0)).round();
            return self.level;
        }
        self.deplete_from = None;
        if let Some(at) = self.restock_at {
            if now_ms >= at {
                self.level = p.capacity;
                self.restock_at = None;
            }
        }
        // Purchases in dt: the whole expected count plus one more with the remaining chance.
        let expected = p.purchases_per_minute * dt / MS_PER_MINUTE;
        let mut n = expected.floor();
        if u < expected - n {
            n += 1.0;
        }
        let each = 1.0
            + (u2 * f64::from(p.purchase_max))
                .floor()
                .min(f64::from(p.purchase_max) - 1.0);
        self.level = (self.level - n * each).max(0.0);
        if self.level <= p.reorder_at && self.restock_at.is_none() {
            self.restock_at = Some(now_ms + p.restock_delay_ms);
        }
        self.level
    }
}
