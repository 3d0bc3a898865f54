//! Scenario files: which devices and sensors exist, how often they report, and which
//! faults happen when.
//!
//! A scenario is TOML (`deny_unknown_fields` everywhere). The ones shipped in
//! `simulators/scenarios/` are embedded in the binary, so `--scenario greenhouse` works
//! without any file; a path to a `.toml` file works too. This module only parses and
//! checks; [`crate::sim`] turns a scenario into messages.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The scenarios shipped with the crate, as (name, TOML text). `demo` comes first and is
/// the default.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("demo", include_str!("../scenarios/demo.toml")),
    ("greenhouse", include_str!("../scenarios/greenhouse.toml")),
    ("cold-room", include_str!("../scenarios/cold-room.toml")),
    ("inventory", include_str!("../scenarios/inventory.toml")),
];

/// Name of the scenario used when none is given.
pub const DEFAULT_SCENARIO: &str = "demo";

/// Largest payload the `oversized` fault may ask for, in bytes.
pub const MAX_OVERSIZED: usize = 1024 * 1024;

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(
        "no scenario named {name:?} (embedded: {}); give a path to a .toml file for your own",
        list_names()
    )]
    Unknown { name: String },
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {source}")]
    Parse {
        origin: String,
        source: toml::de::Error,
    },
    #[error("{origin}: {field}: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
}

fn list_names() -> String {
    EMBEDDED
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A duration written as humantime text (`"90s"`, `"2m"`, `"1h 30m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span(pub Duration);

impl Span {
    pub fn as_millis(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Span).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration like \"90s\" or \"2m\": {e}"
            ))
        })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// How a device's readings are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `21.5` on `<prefix>/<site>/<device>/<metric>`.
    #[default]
    Plain,
    /// `{"value":21.5,"ts":<epoch ms>,"unit":"°C"}` on `<prefix>/<site>/<device>/<metric>`.
    Json,
    /// `{"humidity":40.5,"co2":612}` on `<prefix>/<site>/<device>`: every sensor of the
    /// device in one message.
    Object,
}

/// What a sensor measures, which decides its model and its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorKind {
    /// Daily cycle (peak in the afternoon) + slow wander + noise.
    Temperature,
    /// Daily cycle opposite to temperature (peak at dawn), kept within 0–100 %.
    Humidity,
    /// Slow wander around sea-level pressure.
    Pressure,
    /// Daily cycle (occupancy / plants) above an outdoor floor.
    Co2,
    /// RMS vibration: a steady base with occasional bursts.
    Vibration,
    /// Battery voltage decaying slowly with (scaled) time.
    Battery,
    /// Items on a shelf: random purchases deplete it, a restock fills it again.
    Stock,
}

impl SensorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SensorKind::Temperature => "temperature",
            SensorKind::Humidity => "humidity",
            SensorKind::Pressure => "pressure",
            SensorKind::Co2 => "co2",
            SensorKind::Vibration => "vibration",
            SensorKind::Battery => "battery",
            SensorKind::Stock => "stock",
        }
    }

    /// Unit used when the scenario gives none.
    pub fn default_unit(self) -> &'static str {
        match self {
            SensorKind::Temperature => "°C",
            SensorKind::Humidity => "%",
            SensorKind::Pressure => "hPa",
            SensorKind::Co2 => "ppm",
            SensorKind::Vibration => "mm/s",
            SensorKind::Battery => "V",
            SensorKind::Stock => "units",
        }
    }

    /// The model parameters that mean something for this kind.
    fn params(self) -> &'static [&'static str] {
        match self {
            SensorKind::Temperature | SensorKind::Humidity | SensorKind::Co2 => &[
                "mean",
                "amplitude",
                "peak_hour",
                "noise",
                "wander",
                "min",
                "max",
                "decimals",
            ],
            SensorKind::Pressure => &["mean", "noise", "wander", "min", "max", "decimals"],
            SensorKind::Vibration => &[
                "mean",
                "noise",
                "wander",
                "burst_chance",
                "burst",
                "min",
                "max",
                "decimals",
            ],
            SensorKind::Battery => &["start", "decay_per_day", "noise", "min", "decimals"],
            SensorKind::Stock => &[
                "start",
                "capacity",
                "reorder_at",
                "restock_delay",
                "purchases_per_minute",
                "purchase_max",
            ],
        }
    }
}

impl fmt::Display for SensorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of fault a scenario can schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// The value jumps by `by` while the fault lasts.
    Spike,
    /// The value freezes: the same bytes are published again and again.
    Stuck,
    /// Nothing is published.
    Silence,
    /// `per_minute` is added for every minute since the fault began.
    Drift,
    /// The payload is not a valid reading (see [`Malformed`]).
    Malformed,
    /// A stock level is drained to `to` (below its minimum) over the first three
    /// quarters of the window and held there; restocking waits until the fault ends.
    Deplete,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Spike => "spike",
            FaultKind::Stuck => "stuck",
            FaultKind::Silence => "silence",
            FaultKind::Drift => "drift",
            FaultKind::Malformed => "malformed",
            FaultKind::Deplete => "deplete",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a `malformed` fault publishes instead of a good payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Malformed {
    /// Text that is not a number: `ERR sensor fault`.
    #[default]
    Text,
    /// `NaN` (which `str::parse::<f64>` accepts, so a decoder must reject it itself).
    Nan,
    /// Bytes that are not valid UTF-8.
    Utf8,
    /// JSON cut off in the middle.
    Json,
    /// A well-formed JSON reading padded to `size` bytes.
    Oversized,
}

impl Malformed {
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::Text => "text",
            Malformed::Nan => "nan",
            Malformed::Utf8 => "utf8",
            Malformed::Json => "json",
            Malformed::Oversized => "oversized",
        }
    }
}

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// First topic level; series names are what follows it.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Default sampling period of every sensor (overridden by device/sensor `every`, or
    /// by a rate given on the command line).
    #[serde(default = "default_every")]
    pub every: Span,
    /// How fast the model clock runs: 60 makes an hour of daily cycle pass in a minute.
    /// Faults and timestamps always use real time.
    #[serde(default = "default_time_scale")]
    pub time_scale: f64,
    /// Hour of the day (UTC, 0–24) the model clock starts at; default: the real start time.
    pub start_hour: Option<f64>,
    /// Publish with the MQTT retain flag.
    #[serde(default)]
    pub retain: bool,
    /// Default payload format of every device.
    #[serde(default)]
    pub format: Format,
    pub devices: Vec<DeviceConfig>,
    #[serde(default)]
    pub faults: Vec<FaultConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub site: String,
    pub name: String,
    pub format: Option<Format>,
    pub every: Option<Span>,
    pub sensors: Vec<SensorConfig>,
}

/// One sensor. Model parameters that do not apply to its kind are refused.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// Last topic level (or the field name in an object payload).
    pub metric: String,
    /// The model; defaults to the kind named like the metric (`temperature`, `co2`…).
    pub kind: Option<SensorKind>,
    pub unit: Option<String>,
    pub every: Option<Span>,
    /// Level the value moves around (temperature, humidity, pressure, co2, vibration).
    pub mean: Option<f64>,
    /// Half the swing of the daily cycle.
    pub amplitude: Option<f64>,
    /// Hour of the day (0–24) at which the daily cycle peaks.
    pub peak_hour: Option<f64>,
    /// Standard deviation of the white noise added to every sample.
    pub noise: Option<f64>,
    /// Standard deviation of the slow wander (an Ornstein–Uhlenbeck process, τ = 10 min).
    pub wander: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Digits after the decimal point in the payload.
    pub decimals: Option<u32>,
    /// vibration: chance per sample of a burst.
    pub burst_chance: Option<f64>,
    /// vibration: largest burst added to the base level.
    pub burst: Option<f64>,
    /// battery: voltage at the start; stock: items at the start.
    pub start: Option<f64>,
    /// battery: volts lost per (model) day.
    pub decay_per_day: Option<f64>,
    /// stock: a restock fills the shelf to this.
    pub capacity: Option<f64>,
    /// stock: at or below this level a restock is ordered.
    pub reorder_at: Option<f64>,
    /// stock: how long (real time) an ordered restock takes to arrive.
    pub restock_delay: Option<Span>,
    /// stock: purchases per (real) minute on average.
    pub purchases_per_minute: Option<f64>,
    /// stock: the largest purchase, in items (each takes 1..=purchase_max).
    pub purchase_max: Option<u32>,
}

impl SensorConfig {
    /// The model, from `kind` or else from the metric name.
    pub fn model_kind(&self) -> Option<SensorKind> {
        self.kind.or(match self.metric.as_str() {
            "temperature" | "temp" => Some(SensorKind::Temperature),
            "humidity" => Some(SensorKind::Humidity),
            "pressure" => Some(SensorKind::Pressure),
            "co2" => Some(SensorKind::Co2),
            "vibration" => Some(SensorKind::Vibration),
            "battery" => Some(SensorKind::Battery),
            "stock" => Some(SensorKind::Stock),
            _ => None,
        })
    }

    fn given_params(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut add = |name: &'static str, set: bool| {
            if set {
                out.push(name);
            }
        };
        add("mean", self.mean.is_some());
        add("amplitude", self.amplitude.is_some());
        add("peak_hour", self.peak_hour.is_some());
        add("noise", self.noise.is_some());
        add("wander", self.wander.is_some());
        add("min", self.min.is_some());
        add("max", self.max.is_some());
        add("decimals", self.decimals.is_some());
        add("burst_chance", self.burst_chance.is_some());
        add("burst", self.burst.is_some());
        add("start", self.start.is_some());
        add("decay_per_day", self.decay_per_day.is_some());
        add("capacity", self.capacity.is_some());
        add("reorder_at", self.reorder_at.is_some());
        add("restock_delay", self.restock_delay.is_some());
        add("purchases_per_minute", self.purchases_per_minute.is_some());
        add("purchase_max", self.purchase_max.is_some());
        out
    }
}

/// One scheduled fault, in scenario time (offsets from the start).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    pub device: String,
    /// The sensor; omitted = every sensor of the device.
    pub metric: Option<String>,
    /// When the device has the same name at several sites.
    pub site: Option<String>,
    pub kind: FaultKind,
    /// Offset from the start of the run.
    pub at: Span,
    pub duration: Span,
    /// spike: added to the value.
    pub by: Option<f64>,
    /// drift: added per minute since the fault began.
    pub per_minute: Option<f64>,
    /// malformed: which kind of bad payload.
    pub payload: Option<Malformed>,
    /// malformed oversized: payload size in bytes.
    pub size: Option<usize>,
    /// deplete: the stock level reached at the end of the fault.
    pub to: Option<f64>,
}

fn default_prefix() -> String {
    "sensors".into()
}
fn default_every() -> Span {
    Span(Duration::from_secs(2))
}
fn default_time_scale() -> f64 {
    1.0
}

impl Scenario {
    /// Parses and checks TOML text; `origin` names it in errors (a path or `<embedded demo>`).
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|source| ScenarioError::Parse {
            origin: origin.to_string(),
            source,
        })?;
        s.validate(origin)?;
        Ok(s)
    }

    /// An embedded scenario by name, or a file when `name_or_path` is not one (or has a
    /// `/` or ends in `.toml`).
    pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
        if let Some((name, text)) = EMBEDDED.iter().find(|(n, _)| {
            *n == name_or_path || (name_or_path == "default" && *n == DEFAULT_SCENARIO)
        }) {
            return Scenario::parse(text, &format!("<embedded {name}>"));
        }
        let path = Path::new(name_or_path);
        let looks_like_path = name_or_path.contains(['/', '\\']) || name_or_path.ends_with(".toml");
        if !looks_like_path && !path.exists() {
            return Err(ScenarioError::Unknown {
                name: name_or_path.to_string(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: name_or_path.to_string(),
            source,
        })?;
        Scenario::parse(&text, name_or_path)
    }

    /// The embedded scenarios as (name, description).
    pub fn embedded() -> Vec<(&'static str, String)> {
        EMBEDDED
            .iter()
            .map(|(n, text)| {
                let desc = Scenario::parse(text, n)
                    .map(|s| s.description)
                    .unwrap_or_else(|e| format!("(invalid: {e})"));
                (*n, desc)
            })
            .collect()
    }

    /// Every sensor reports `hz` times a second (a command-line `--rate`).
    pub fn set_rate(&mut self, hz: f64) -> Result<(), ScenarioError> {
        if !(hz.is_finite() && hz > 0.0 && hz <= 1000.0) {
            return Err(self.invalid(
                "<command line>",
                "rate",
                format!(
                    "{hz} Hz: give more than 0 and at most 1000 messages per second per sensor"
                ),
            ));
        }
        let every = Span(Duration::from_secs_f64(1.0 / hz));
        self.every = every;
        for d in &mut self.devices {
            d.every = None;
            for s in &mut d.sensors {
                s.every = None;
            }
        }
        Ok(())
    }

    /// The sampling period of one sensor: sensor, then device, then scenario `every`.
    pub fn period(&self, device: &DeviceConfig, sensor: &SensorConfig) -> Span {
        sensor.every.or(device.every).unwrap_or(self.every)
    }

    pub fn device_format(&self, device: &DeviceConfig) -> Format {
        device.format.unwrap_or(self.format)
    }

    fn invalid(
        &self,
        origin: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ScenarioError {
        ScenarioError::Invalid {
            origin: origin.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// Checks what serde cannot: names usable as topic levels, parameters that fit the
    /// model, faults that point at something.
    pub fn validate(&self, origin: &str) -> Result<(), ScenarioError> {
        let bad = |field: String, message: String| Err(self.invalid(origin, field, message));
        if let Err(m) = check_topic_path(&self.prefix, true) {
            return bad("prefix".into(), m);
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return bad("time_scale".into(), "must be a positive number".into());
        }
        if let Some(h) = self.start_hour.filter(|h| !(0.0..24.0).contains(h)) {
            return bad(
                "start_hour".into(),
                format!("{h} is not an hour between 0 and 24"),
            );
        }
        if self.every.0.is_zero() {
            return bad("every".into(), "must be longer than zero".into());
        }
        if self.devices.is_empty() {
            return bad(
                "devices".into(),
                "a scenario needs at least one device".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            let at = format!("devices[{i}]");
            for (f, v) in [("site", &d.site), ("name", &d.name)] {
                if let Err(m) = check_level(v) {
                    return bad(format!("{at}.{f}"), m);
                }
            }
            if !seen.insert((d.site.as_str(), d.name.as_str())) {
                return bad(
                    format!("{at}.name"),
                    format!("device {}/{} is listed twice", d.site, d.name),
                );
            }
            if d.every.is_some_and(|e| e.0.is_zero()) {
                return bad(format!("{at}.every"), "must be longer than zero".into());
            }
            if d.sensors.is_empty() {
                return bad(
                    format!("{at}.sensors"),
                    "a device needs at least one sensor".into(),
                );
            }
            let object = self.device_format(d) == Format::Object;
            let mut metrics = std::collections::HashSet::new();
            for (j, s) in d.sensors.iter().enumerate() {
                let at = format!("{at}.sensors[{j}]");
                if let Err(m) = check_level(&s.metric) {
                    return bad(format!("{at}.metric"), m);
                }
                if !metrics.insert(s.metric.as_str()) {
                    return bad(
                        format!("{at}.metric"),
                        format!("metric {:?} is listed twice on this device", s.metric),
                    );
                }
                let Some(kind) = s.model_kind() else {
                    return bad(format!("{at}.kind"), format!("metric {:?} needs a `kind` (temperature, humidity, pressure, co2, vibration, battery, stock)", s.metric));
                };
                for p in s.given_params() {
                    if !kind.params().contains(&p) {
                        return bad(
                            format!("{at}.{p}"),
                            format!(
                                "`{p}` has no meaning for a {kind} sensor (it takes: {})",
                                kind.params().join(", ")
                            ),
                        );
                    }
                }
                if object && s.every.is_some() {
                    return bad(format!("{at}.every"), "sensors of an object-format device report together: set `every` on the device".into());
                }
                if s.every.is_some_and(|e| e.0.is_zero()) {
                    return bad(format!("{at}.every"), "must be longer than zero".into());
                }
                if let Some(p) = s
                    .purchases_per_minute
                    .filter(|p| !(p.is_finite() && *p >= 0.0))
                {
                    return bad(
                        format!("{at}.purchases_per_minute"),
                        format!("{p} is not a rate ≥ 0"),
                    );
                }
                if let Some(c) = s.burst_chance.filter(|c| !(0.0..=1.0).contains(c)) {
                    return bad(
                        format!("{at}.burst_chance"),
                        format!("{c} is not a probability between 0 and 1"),
                    );
                }
                if s.decimals.is_some_and(|d| d > 9) {
                    return bad(format!("{at}.decimals"), "at most 9".into());
                }
                if s.purchase_max == Some(0) {
                    return bad(format!("{at}.purchase_max"), "must be at least 1".into());
                }
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("faults[{i}]");
            let devices: Vec<&DeviceConfig> = self
                .devices
                .iter()
                .filter(|d| d.name == f.device && f.site.as_ref().is_none_or(|s| *s == d.site))
                .collect();
            let Some(device) = devices.first() else {
                return bad(
                    format!("{at}.device"),
                    format!("no device named {:?}", f.device),
                );
            };
            if devices.len() > 1 {
                return bad(
                    format!("{at}.site"),
                    format!(
                        "device {:?} exists at several sites: say which with `site`",
                        f.device
                    ),
                );
            }
            let sensors: Vec<&SensorConfig> = match &f.metric {
                Some(m) => match device.sensors.iter().find(|s| &s.metric == m) {
                    Some(s) => vec![s],
                    None => {
                        return bad(
                            format!("{at}.metric"),
                            format!("device {:?} has no sensor {m:?}", f.device),
                        )
                    }
                },
                None => device.sensors.iter().collect(),
            };
            if f.duration.0.is_zero() {
                return bad(format!("{at}.duration"), "must be longer than zero".into());
            }
            let need = |name: &str, v: bool| {
                if v {
                    Ok(())
                } else {
                    bad(
                        format!("{at}.kind"),
                        format!("a {} fault needs `{name}`", f.kind),
                    )
                }
            };
            let refuse = |name: &str, v: bool| {
                if v {
                    bad(
                        format!("{at}.{name}"),
                        format!("`{name}` has no meaning for a {} fault", f.kind),
                    )
                } else {
                    Ok(())
                }
            };
            need("by", f.by.is_some() || f.kind != FaultKind::Spike)?;
            need(
                "per_minute",
                f.per_minute.is_some() || f.kind != FaultKind::Drift,
            )?;
            need("to", f.to.is_some() || f.kind != FaultKind::Deplete)?;
            refuse("by", f.by.is_some() && f.kind != FaultKind::Spike)?;
            refuse(
                "per_minute",
                f.per_minute.is_some() && f.kind != FaultKind::Drift,
            )?;
            refuse("to", f.to.is_some() && f.kind != FaultKind::Deplete)?;
            refuse(
                "payload",
                f.payload.is_some() && f.kind != FaultKind::Malformed,
            )?;
            refuse(
                "size",
                f.size.is_some() && f.payload != Some(Malformed::Oversized),
            )?;
            if let Some(s) = f.size.filter(|s| *s > MAX_OVERSIZED || *s < 64) {
                return bad(
                    format!("{at}.size"),
                    format!("{s} bytes: give between 64 and {MAX_OVERSIZED}"),
                );
            }
            if f.kind == FaultKind::Deplete
                && sensors
                    .iter()
                    .any(|s| s.model_kind() != Some(SensorKind::Stock))
            {
                return bad(
                    format!("{at}.kind"),
                    "a deplete fault applies to stock sensors only".into(),
                );
            }
            if f.kind == FaultKind::Malformed
                && f.metric.is_some()
                && self.device_format(device) == Format::Object
            {
                return bad(format!("{at}.metric"), "an object-format device sends one payload: a malformed fault applies to the whole device".into());
            }
        }
        Ok(())
    }
}

/// One topic level: not empty, no `/`, no wildcards, no NUL.
pub fn check_level(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.contains(['/', '+', '#', '\0']) {
        return Err(format!(
            "{s:?} cannot be a topic level ('/', '+', '#' and NUL are not allowed)"
        ));
    }
    Ok(())
}

/// A topic path of one or more levels, each valid per [`check_level`].
pub fn check_topic_path(s: &str, allow_empty: bool) -> Result<(), String> {
    if s.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err("must not be empty".into())
        };
    }
    for l in s.split('/') {
        check_level(l).map_err(|e| format!("{s:?}: level {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Scenario::parse(text, "s.toml").unwrap_err().to_string()
    }

    const BASE: &str = "name = \"x\"\n[[devices]]\nsite = \"s\"\nname = \"d\"\n";

    #[test]
    fn unknown_fields_are_refused() {
        let e = err(&format!(
            "{BASE}sensors = [{{ metric = \"temperature\", colour = \"red\" }}]"
        ));
        assert!(e.contains("s.toml") && e.contains("colour"), "{e}");
        let e = err(&format!(
            "speed = 2\n{BASE}sensors = [{{ metric = \"temperature\" }}]"
        ));
        assert!(e.contains("speed"), "{e}");
    }

    #[test]
    fn parameters_must_fit_the_model() {
        let e = err(&format!(
            "{BASE}sensors = [{{ metric = \"temperature\", capacity = 3.0 }}]"
        ));
        assert!(
            e.contains("devices[0].sensors[0].capacity") && e.contains("temperature sensor"),
            "{e}"
        );
        let e = err(&format!("{BASE}sensors = [{{ metric = \"level\" }}]"));
        assert!(e.contains("needs a `kind`"), "{e}");
        let e = err(&format!(
            "{BASE}sensors = [{{ metric = \"a/b\", kind = \"co2\" }}]"
        ));
        assert!(e.contains("devices[0].sensors[0].metric"), "{e}");
    }

    #[test]
    fn faults_must_point_at_something_and_carry_their_amounts() {
        let ok = format!("{BASE}sensors = [{{ metric = \"temperature\" }}]\n[[faults]]\n");
        let e = err(&format!(
            "{ok}device = \"nope\"\nkind = \"silence\"\nat = \"1s\"\nduration = \"1s\""
        ));
        assert!(e.contains("faults[0].device"), "{e}");
        let e = err(&format!(
            "{ok}device = \"d\"\nkind = \"spike\"\nat = \"1s\"\nduration = \"1s\""
        ));
        assert!(e.contains("needs `by`"), "{e}");
        let e = err(&format!(
            "{ok}device = \"d\"\nkind = \"deplete\"\nto = 1.0\nat = \"1s\"\nduration = \"1s\""
        ));
        assert!(e.contains("stock sensors only"), "{e}");
        let e = err(&format!(
            "{ok}device = \"d\"\nkind = \"silence\"\nat = \"soon\"\nduration = \"1s\""
        ));
        assert!(e.contains("\"soon\" is not a duration"), "{e}");
    }

    #[test]
    fn names_and_paths() {
        assert!(matches!(
            Scenario::load("nonesuch"),
            Err(ScenarioError::Unknown { .. })
        ));
        assert!(Scenario::load("nonesuch")
            .unwrap_err()
            .to_string()
            .contains("greenhouse"));
        assert!(matches!(
            Scenario::load("/nonexistent/x.toml"),
            Err(ScenarioError::Read { .. })
        ));
        let dir = std::env::temp_dir().join(format!("centinela-sim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mine.toml");
        std::fs::write(&path, format!("{BASE}sensors = [{{ metric = \"co2\" }}]")).unwrap();
        let s = Scenario::load(path.to_str().unwrap()).unwrap();
        assert_eq!(s.devices[0].sensors[0].model_kind(), Some(SensorKind::Co2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
