//! Configuration: serde structs with defaults in one place, the annotated default file
//! embedded in the binary, and validation whose errors name the file, the line and the
//! field.
//!
//! Loading is two passes: serde (types, unknown fields) and [`Config::validate`]
//! (meaning: durations, thresholds, channel names). Both report through
//! [`ConfigError`], which carries a position found from the TOML source.

mod check;
mod duration;
mod influx;
mod ingest;
mod kafka;
mod notify;
mod rules;
mod trust;

pub use centinela_sim::broker_url::{BrokerUrl, Tls};
pub use duration::Duration;
pub use influx::{InfluxApi, InfluxConfig};
pub use ingest::{covers as filter_covers, MapConfig, MapFormat};
pub use kafka::{
    KafkaOutputConfig, KafkaSecurity, KafkaSourceConfig, KeyFrom, SourcesConfig, BUILT_WITH_KAFKA,
};
pub use notify::{
    EmailConfig, MqttNotifyConfig, NotifyConfig, OutboxConfig, SmtpTls, TelegramConfig,
    WebhookConfig,
};
pub use rules::{Agg, RuleConfig, RuleKind};
pub use trust::{BrokerUser, TlsFiles};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The annotated default configuration, printed by `centinela config`.
pub const DEFAULT_TOML: &str = include_str!("../../config/centinela.toml");

/// The configuration `centinela demo` runs with: the defaults plus rules made for the
/// simulators' faults.
pub const DEMO_TOML: &str = include_str!("../../config/examples/demo.toml");

/// Where `--config` points when it is not given and `CENTINELA_CONFIG` is not set.
pub const SYSTEM_PATH: &str = "/etc/centinela/centinela.toml";
pub const LOCAL_PATH: &str = "config/centinela.toml";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub notify: NotifyConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// The `/metrics` and `/healthz` endpoint; absent means off.
    pub http: Option<HttpConfig>,
    /// `[output.*]`: the optional outputs registered in `store` (each absent means off).
    #[serde(default)]
    pub output: crate::store::OutputsConfig,
    /// `[source.*]`: sources beside MQTT (Kafka); each absent means off.
    #[serde(default)]
    pub source: SourcesConfig,
    /// Home Assistant MQTT discovery; absent means off.
    pub homeassistant: Option<HomeAssistantConfig>,
}

/// `[homeassistant]`: alert states as Home Assistant entities, by MQTT discovery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantConfig {
    /// Publish the discovery messages (one `binary_sensor` per rule and per alert).
    pub discovery: bool,
    /// Home Assistant's discovery prefix.
    pub prefix: String,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        Self {
            discovery: true,
            prefix: "homeassistant".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BrokerMode {
    #[default]
    Embedded,
    External,
}

/// The MQTT version spoken to an external broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum MqttProtocol {
    /// MQTT 3.1.1, which every broker accepts.
    #[default]
    #[serde(rename = "v3.1.1", alias = "v3", alias = "v4", alias = "3.1.1")]
    V311,
    /// MQTT 5.
    #[serde(rename = "v5", alias = "5")]
    V5,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    pub mode: BrokerMode,
    /// Embedded listener address.
    pub listen: SocketAddr,
    /// External broker: `mqtt://host[:port]`, or `mqtts://host[:port]` for TLS.
    pub url: Option<String>,
    /// MQTT version spoken to the external broker: `"v3.1.1"` (default) or `"v5"`.
    pub protocol: MqttProtocol,
    /// With `mqtts://`: the CA certificate(s) (PEM) the broker's certificate must be
    /// signed by; the system's root certificates when unset.
    pub ca_file: Option<PathBuf>,
    /// With `mqtts://`: a client certificate (PEM) for brokers that authenticate
    /// clients by certificate; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The private key (PEM) of `client_cert`.
    pub client_key: Option<PathBuf>,
    pub username: Option<String>,
    /// Name of the environment variable that holds the password.
    pub password_env: String,
    /// Listening on a non-loopback address without credentials must be asked for.
    pub allow_anonymous: bool,
    /// Client id used with an external broker; fixed so the session survives reconnects.
    pub client_id: String,
    /// Largest payload accepted, in bytes.
    pub max_payload: usize,
    /// Most MQTT connections the embedded broker accepts at once.
    pub max_connections: usize,
    /// Size of the embedded broker's buffer between publishers and the pipeline, in
    /// MiB of message bytes. rumqttd keeps every message until its buffer rotates, at
    /// 8–15× its bytes in memory for small messages (measured flat out: 32 → ~350 MB
    /// peak, 2 → ~94 MB). It is not a store: once the pipeline has three quarters of it
    /// unread, the broker front stops reading from publishers until it catches up.
    pub buffer_mib: usize,
    /// `[[broker.users]]`: who may connect to the embedded broker and what each may do.
    pub users: Vec<BrokerUser>,
    /// A TLS listener of the embedded broker (beside `listen`, or alone with `tls_only`).
    pub tls_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) of the TLS listener.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of the TLS listener.
    pub key_file: Option<PathBuf>,
    /// Only the TLS listener: no plain `listen`.
    pub tls_only: bool,
    /// Longest keepalive the broker honours: a client silent for 1.5 × this (or its own
    /// shorter keepalive) is disconnected.
    pub max_keepalive: Duration,
    /// Most connections from one IP address at once.
    pub max_connections_per_ip: usize,
}

impl BrokerConfig {
    /// The external broker's address (`url`), parsed.
    pub fn broker_url(&self) -> Result<BrokerUrl, String> {
        BrokerUrl::parse(self.url.as_deref().unwrap_or(""))
    }

    /// The TLS files of the external connection.
    pub fn tls(&self) -> Tls {
        Tls {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }

    /// TLS files only with `mqtts://`, certificate and key together, and readable.
    fn validate_tls(&self, url: &BrokerUrl, out: &mut Vec<Invalid>) {
        let at = |f: &str| [key("broker"), key(f)];
        let files = [
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ];
        if !url.tls {
            if let Some((field, _)) = files.iter().find(|(_, p)| p.is_some()) {
                out.push(Invalid::new(
                    &at(field),
                    format!("{url} is plain MQTT; TLS files need an mqtts:// url"),
                ));
            }
            return;
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => out.push(Invalid::new(
                &at("client_key"),
                "client_cert needs client_key (the certificate's private key, PEM)",
            )),
            (None, Some(_)) => out.push(Invalid::new(
                &at("client_cert"),
                "client_key needs client_cert (the client certificate, PEM)",
            )),
            _ => {}
        }
        for (field, path) in files {
            if let Some(p) = path {
                if let Err(e) = std::fs::File::open(p) {
                    out.push(Invalid::new(
                        &at(field),
                        format!("cannot read {}: {e}", p.display()),
                    ));
                }
            }
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            mode: BrokerMode::Embedded,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            url: None,
            protocol: MqttProtocol::V311,
            ca_file: None,
            client_cert: None,
            client_key: None,
            username: None,
            password_env: "CENTINELA_MQTT_PASSWORD".into(),
            allow_anonymous: false,
            client_id: "centinela".into(),
            max_payload: 64 * 1024,
            max_connections: 1000,
            buffer_mib: 2,
            users: Vec::new(),
            tls_listen: None,
            cert_file: None,
            key_file: None,
            tls_only: false,
            max_keepalive: Duration::from_secs(300),
            max_connections_per_ip: 100,
        }
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

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub sqlite: SqliteConfig,
    /// Optional second store; absent means no InfluxDB.
    pub influxdb: Option<InfluxConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub flush_interval: Duration,
    /// Raw readings older than this are deleted.
    pub retention: Duration,
    /// Per-minute rollups are kept this long.
    pub rollup_retention: Duration,
    /// Store a reading only when it moved enough or enough time passed (first match
    /// wins); rollups and rules still see every reading.
    pub deadband: Vec<DeadbandConfig>,
}

/// `[[storage.sqlite.deadband]]`: spares the SD card readings that say nothing new.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadbandConfig {
    /// Series pattern (MQTT wildcards).
    pub series: String,
    /// Store when the value moved more than this from the last stored one…
    pub delta: f64,
    /// …or when this long passed since it (so a flat line still shows).
    #[serde(default = "default_max_interval")]
    pub max_interval: Duration,
}

fn default_max_interval() -> Duration {
    Duration::from_secs(300)
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: "/var/lib/centinela/centinela.db".into(),
            flush_interval: Duration::from_secs(1),
            retention: Duration::from_secs(30 * 86_400),
            rollup_retention: Duration::from_secs(365 * 86_400),
            deadband: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// More than `flap_transitions` transitions within `flap_window` make an alert flap
    /// (0 turns flapping detection off).
    pub flap_transitions: u32,
    pub flap_window: Duration,
    /// How often wall-clock checks run: deadman, repeat, the end of silences and of
    /// flapping. (`for` runs on event time, when readings arrive.)
    pub tick: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            flap_transitions: 6,
            flap_window: Duration::from_secs(600),
            tick: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `centinela=debug`, …; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the `/metrics` and `/healthz` endpoint.
    pub listen: SocketAddr,
    /// Listening on a non-loopback address must be asked for: the figures tell a lot
    /// about the site and the endpoint has no authentication.
    pub allow_remote: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9184)),
            allow_remote: false,
        }
    }
}

/// A configuration problem, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column, when the position is known.
    pub line: Option<usize>,
    pub col: Option<usize>,
    /// Dotted path of the field: `rules[1].clear`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        match (self.line, self.col) {
            (Some(l), Some(c)) => write!(f, ":{l}:{c}")?,
            (Some(l), None) => write!(f, ":{l}")?,
            _ => {}
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem of a file, in file order (at least one).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A validation problem before it is placed in the file: the field path as a list of
/// keys and indices, and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub path: Vec<PathPart>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathPart {
    Key(String),
    Index(usize),
}

impl Invalid {
    pub fn new(path: &[PathPart], message: impl Into<String>) -> Self {
        Self {
            path: path.to_vec(),
            message: message.into(),
        }
    }
}

pub fn key(k: &str) -> PathPart {
    PathPart::Key(k.to_string())
}

fn dotted(path: &[PathPart]) -> String {
    let mut s = String::new();
    for p in path {
        match p {
            PathPart::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathPart::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

impl Config {
    /// Parses and validates `text`, read from `file` (used in messages only); the
    /// first problem in the file when there are some.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        Self::parse_all(text, file).map_err(|mut v| v.0.swap_remove(0))
    }

    /// Parses and validates `text`, reporting every problem at once (file order).
    pub fn parse_all(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        check::parse_all(text, file).map_err(ConfigErrors)
    }

    /// Every validation problem, in file order of the sections.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        if self.broker.mode == BrokerMode::External {
            match &self.broker.url {
                None => out.push(Invalid::new(
                    &[key("broker"), key("mode")],
                    "mode = \"external\" needs broker.url (mqtt://host:port)",
                )),
                Some(u) => match BrokerUrl::parse(u) {
                    Err(e) => out.push(Invalid::new(&[key("broker"), key("url")], e)),
                    Ok(url) => self.broker.validate_tls(&url, &mut out),
                },
            }
        }
        if self.broker.mode == BrokerMode::Embedded && self.broker.protocol != MqttProtocol::V311 {
            out.push(Invalid::new(
                &[key("broker"), key("protocol")],
                "protocol is the MQTT version spoken to an external broker (mode = \"external\"); \
                 the embedded broker's clients choose their own",
            ));
        }
        if self.broker.mode == BrokerMode::Embedded
            && !self.broker.listen.ip().is_loopback()
            && !self.broker.tls_only
            && self.broker.username.is_none()
            && self.broker.users.is_empty()
            && !self.broker.allow_anonymous
        {
            out.push(Invalid::new(
                &[key("broker"), key("listen")],
                format!(
                    "{} is reachable from the network and no username is set: set broker.username \
                     (password from ${}) or allow_anonymous = true",
                    self.broker.listen, self.broker.password_env
                ),
            ));
        }
        out.extend(self.broker.validate_trust());
        if self.broker.buffer_mib == 0 {
            out.push(Invalid::new(
                &[key("broker"), key("buffer_mib")],
                "must be at least 1 MiB",
            ));
        }
        if self.broker.max_payload == 0 {
            out.push(Invalid::new(
                &[key("broker"), key("max_payload")],
                "must be at least 1 byte",
            ));
        }
        if self.ingest.topics.is_empty() {
            out.push(Invalid::new(
                &[key("ingest"), key("topics")],
                "at least one topic filter is needed",
            ));
        }
        for (i, t) in self.ingest.topics.iter().enumerate() {
            if let Err(e) = check_filter(t) {
                out.push(Invalid::new(
                    &[key("ingest"), key("topics"), PathPart::Index(i)],
                    e,
                ));
            }
        }
        if self.ingest.prefix.contains(['+', '#']) {
            out.push(Invalid::new(
                &[key("ingest"), key("prefix")],
                "the prefix is a plain topic path, without wildcards",
            ));
        }
        out.extend(ingest::validate(&self.ingest));
        let s = &self.storage.sqlite;
        for (name, d) in [
            ("flush_interval", s.flush_interval),
            ("retention", s.retention),
            ("rollup_retention", s.rollup_retention),
        ] {
            if d.is_zero() {
                out.push(Invalid::new(
                    &[key("storage"), key("sqlite"), key(name)],
                    "must be longer than zero",
                ));
            }
        }
        if let Some(i) = &self.storage.influxdb {
            out.extend(i.validate(&[key("storage"), key("influxdb")]));
        }
        for (i, d) in s.deadband.iter().enumerate() {
            let at = |f: &str| {
                [
                    key("storage"),
                    key("sqlite"),
                    key("deadband"),
                    PathPart::Index(i),
                    key(f),
                ]
            };
            if let Err(e) = check_filter(&d.series) {
                out.push(Invalid::new(&at("series"), e));
            }
            if !(d.delta.is_finite() && d.delta >= 0.0) {
                out.push(Invalid::new(&at("delta"), "must be a number ≥ 0"));
            }
            if d.max_interval.is_zero() {
                out.push(Invalid::new(
                    &at("max_interval"),
                    "must be longer than zero",
                ));
            }
        }
        if self.engine.tick.is_zero() {
            out.push(Invalid::new(
                &[key("engine"), key("tick")],
                "must be longer than zero",
            ));
        }
        if self.engine.flap_window.is_zero() {
            out.push(Invalid::new(
                &[key("engine"), key("flap_window")],
                "must be longer than zero",
            ));
        }
        out.extend(self.notify.validate());
        out.extend(self.output.validate());
        out.extend(self.source.validate());
        if let Some(h) = &self.http {
            if !h.listen.ip().is_loopback() && !h.allow_remote {
                out.push(Invalid::new(
                    &[key("http"), key("listen")],
                    format!(
                        "{} is reachable from the network and the endpoint has no \
                         authentication: listen on 127.0.0.1 or set allow_remote = true",
                        h.listen
                    ),
                ));
            }
        }
        let channels = self.notify.channels();
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = [key("rules"), PathPart::Index(i)];
            if !names.insert(r.name.as_str()) {
                out.push(Invalid::new(
                    &[at[0].clone(), at[1].clone(), key("name")],
                    format!("duplicate rule name {:?}", r.name),
                ));
            }
            out.extend(r.validate(&at, &channels, &self.ingest));
        }
        out
    }

    /// The MQTT filter a series pattern becomes under the prefix.
    pub fn topic_for(&self, series_pattern: &str) -> String {
        if self.ingest.prefix.is_empty() {
            series_pattern.to_string()
        } else {
            format!("{}/{}", self.ingest.prefix, series_pattern)
        }
    }
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_all(path).map_err(|mut e| e.0.swap_remove(0))
}

/// Reads and validates the file at `path`, reporting every problem.
pub fn load_all(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: None,
            col: None,
            field: None,
            message: match e.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    format!("cannot read: {e}; {}", permission_hint(path))
                }
                _ => format!("cannot read: {e}"),
            },
        }])
    })?;
    Config::parse_all(&text, &file)
}

/// How to get read access to `path`: which directory or file stops this user, who may
/// read it, and the fixes (group membership, sudo, `--config`).
pub fn permission_hint(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    // The outermost of the file's ancestors (or the file) this user cannot read.
    let mut chain: Vec<&Path> = path
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    chain.reverse();
    let blocking = chain
        .into_iter()
        .find(|p| {
            if p.is_dir() {
                std::fs::read_dir(p).is_err()
            } else {
                std::fs::File::open(p).is_err()
            }
        })
        .unwrap_or(path);
    let what = match std::fs::metadata(blocking) {
        Ok(m) => {
            let group = group_name(m.gid()).unwrap_or_else(|| m.gid().to_string());
            format!(
                "{} is mode {:o}, for its owner and the group {group}: add yourself to that \
                 group (sudo usermod -aG {group} $USER, then log in again)",
                blocking.display(),
                m.mode() & 0o777
            )
        }
        Err(_) => format!("{} cannot be read by this user", blocking.display()),
    };
    format!("{what}, run the command with sudo, or pass --config with a file you can read")
}

/// The name of group `gid` from /etc/group.
fn group_name(gid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?;
        (id.parse::<u32>().ok()? == gid).then(|| name.to_string())
    })
}

/// The user's own configuration: `$XDG_CONFIG_HOME/centinela/centinela.toml`, else
/// `~/.config/centinela/centinela.toml`.
pub fn user_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("centinela").join("centinela.toml"))
}

/// `--config`, else `$CENTINELA_CONFIG` (clap fills it), else the first that exists of
/// the user's file ([`user_path`]), the system file and `./config/centinela.toml`;
/// `None` means the embedded default. A file this user may not even look at (inside a
/// directory without access, like /etc/centinela at mode 750 for a user outside its
/// group) counts as existing, so that loading it says why instead of quietly running
/// on the default.
pub fn resolve_path(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    user_path()
        .into_iter()
        .chain([SYSTEM_PATH, LOCAL_PATH].iter().map(PathBuf::from))
        .find(|p| match std::fs::metadata(p) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
        })
}

/// Loads the resolved file, or the embedded default when there is none.
pub fn load_or_default(given: Option<&Path>) -> Result<(Config, String), ConfigError> {
    load_or_default_all(given).map_err(|mut e| e.0.swap_remove(0))
}

/// [`load_or_default`], reporting every problem of the file.
pub fn load_or_default_all(given: Option<&Path>) -> Result<(Config, String), ConfigErrors> {
    match resolve_path(given) {
        Some(p) => Ok((load_all(&p)?, p.display().to_string())),
        None => Ok((
            Config::parse_all(DEFAULT_TOML, "<embedded default>")?,
            "<embedded default>".into(),
        )),
    }
}

fn check_filter(f: &str) -> Result<(), String> {
    if f.is_empty() {
        return Err("empty topic filter".into());
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i != levels.len() - 1) {
            return Err(format!("{f:?}: '#' must be a whole level and the last one"));
        }
        if l.contains('+') && *l != "+" {
            return Err(format!("{f:?}: '+' must be a whole level"));
        }
    }
    Ok(())
}

fn from_toml_error(e: &toml::de::Error, text: &str, file: &str) -> ConfigError {
    let (line, col) = match e.span() {
        Some(span) => {
            let (l, c) = line_col(text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    ConfigError {
        file: file.into(),
        line,
        col,
        field: None,
        message: e.message().to_string(),
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Finds where `problem.path` is in the TOML source; falls back to its nearest parent.
fn place(problem: Invalid, text: &str, file: &str) -> ConfigError {
    let span = toml_edit::ImDocument::parse(text.to_string())
        .ok()
        .and_then(|doc| {
            let mut best = None;
            let mut item: &toml_edit::Item = doc.as_item();
            for part in &problem.path {
                let next = match part {
                    PathPart::Key(k) => item.get(k.as_str()),
                    PathPart::Index(i) => match item {
                        toml_edit::Item::ArrayOfTables(a) => {
                            if let Some(t) = a.get(*i) {
                                best = t.span().or(best);
                            }
                            item.get(*i)
                        }
                        toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
                            // Values inside an array are not items: take the value's span and stop.
                            if let Some(v) = a.get(*i) {
                                best = v.span().or(best);
                            }
                            None
                        }
                        _ => None,
                    },
                };
                match next {
                    Some(n) => {
                        item = n;
                        if let Some(s) = item.span() {
                            best = Some(s);
                        } else if let toml_edit::Item::Table(t) = item {
                            best = t.span().or(best);
                        }
                    }
                    None => break,
                }
            }
            best
        });
    let (line, col) = match span {
        Some(s) => {
            let (l, c) = line_col(text, s.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    ConfigError {
        file: file.into(),
        line,
        col,
        field: Some(dotted(&problem.path)),
        message: problem.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let cfg = Config::parse(DEFAULT_TOML, "default").unwrap();
        assert_eq!(cfg.ingest.prefix, "sensors");
        assert_eq!(cfg.storage.sqlite.flush_interval, Duration::from_secs(1));
    }

    #[test]
    fn the_commented_starter_rules_work_once_uncommented() {
        let start = DEFAULT_TOML.find("# [[rules]]").expect("starter rules");
        let (head, rules) = DEFAULT_TOML.split_at(start);
        let uncommented: String = rules
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.starts_with("[[") || rest.contains(" = ") => rest,
                _ => "",
            })
            .collect::<Vec<_>>()
            .join("\n");
        let cfg = Config::parse(&format!("{head}{uncommented}\n"), "default").unwrap();
        let names: Vec<&str> = cfg.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "battery-low",
                "device-silent",
                "temperature-high",
                "coldroom-warming",
                "co2-average",
                "sensor-silent"
            ]
        );
        assert!(Config::parse(DEFAULT_TOML, "default")
            .unwrap()
            .rules
            .is_empty());
    }

    #[test]
    fn demo_config_is_valid() {
        let cfg = Config::parse(DEMO_TOML, "demo").unwrap();
        assert!(!cfg.rules.is_empty());
    }

    #[test]
    fn unknown_field_names_line_and_column() {
        let text = "[broker]\nmode = \"embedded\"\nlisten_on = \"0.0.0.0:1\"\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!((e.line, e.col), (Some(3), Some(1)), "{e}");
        assert!(e.to_string().starts_with("c.toml:3:1: "), "{e}");
        assert!(e.message.contains("listen_on"), "{e}");
    }

    #[test]
    fn bad_duration_is_placed_on_its_value() {
        let text = "[storage.sqlite]\nflush_interval = \"soon\"\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("soon"), "{e}");
    }

    #[test]
    fn zero_duration_names_the_field() {
        let text = "[storage.sqlite]\npath = \"x.db\"\nflush_interval = \"0s\"\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("storage.sqlite.flush_interval"));
        assert_eq!(e.line, Some(3), "{e}");
    }

    #[test]
    fn open_listener_without_auth_is_refused() {
        let text = "[broker]\nlisten = \"0.0.0.0:1883\"\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("broker.listen"));
        assert_eq!(e.line, Some(2));
        let ok = "[broker]\nlisten = \"0.0.0.0:1883\"\nallow_anonymous = true\n";
        assert!(Config::parse(ok, "c.toml").is_ok());
    }

    #[test]
    fn http_endpoint_is_off_by_default_and_loopback_only_unless_asked() {
        assert!(Config::parse("", "c.toml").unwrap().http.is_none());
        let cfg = Config::parse("[http]\n", "c.toml").unwrap();
        assert_eq!(
            cfg.http.unwrap().listen,
            SocketAddr::from(([127, 0, 0, 1], 9184))
        );
        let text = "[log]\nlevel = \"info\"\n\n[http]\nlisten = \"0.0.0.0:9184\"\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("http.listen"));
        assert_eq!(e.line, Some(5), "{e}");
        let ok = "[http]\nlisten = \"0.0.0.0:9184\"\nallow_remote = true\n";
        assert!(
            Config::parse(ok, "c.toml")
                .unwrap()
                .http
                .unwrap()
                .allow_remote
        );
    }

    #[test]
    fn external_mode_needs_a_url() {
        let e = Config::parse("[broker]\nmode = \"external\"\n", "c.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("broker.mode"));
        let e = Config::parse(
            "[broker]\nmode = \"external\"\nurl = \"http://x\"\n",
            "c.toml",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("broker.url"));
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn bad_topic_filter_is_placed_in_the_array() {
        let e = Config::parse("[ingest]\ntopics = [\"a/#\", \"b/#/c\"]\n", "c.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ingest.topics[1]"));
        assert_eq!((e.line, e.col), (Some(2), Some(18)), "{e}");
    }

    #[test]
    fn tls_settings_of_an_external_broker_are_checked() {
        let e = Config::parse(
            "[broker]\nmode = \"external\"\nurl = \"mqtt://h\"\nca_file = \"/etc/ssl/ca.pem\"\n",
            "c.toml",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("broker.ca_file"));
        assert!(e.message.contains("mqtts://"), "{e}");
        let e = Config::parse(
            "[broker]\nmode = \"external\"\nurl = \"mqtts://h\"\nclient_cert = \"/etc/passwd\"\n",
            "c.toml",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("broker.client_key"), "{e}");
        let e = Config::parse(
            "[broker]\nmode = \"external\"\nurl = \"mqtts://h\"\nca_file = \"/nonexistent/ca.pem\"\n",
            "c.toml",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("broker.ca_file"));
        assert!(e.message.contains("/nonexistent/ca.pem"), "{e}");
        let e = Config::parse(
            "[broker]\nmode = \"external\"\nurl = \"mqtt://user:pw@h\"\n",
            "c.toml",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("broker.url"));
        assert!(!e.to_string().contains("pw@"), "{e}");
        let cfg = Config::parse(
            "[broker]\nmode = \"external\"\nurl = \"mqtts://broker.lan\"\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(
            cfg.broker.broker_url().unwrap().to_string(),
            "mqtts://broker.lan:8883"
        );
    }

    #[test]
    fn the_mqtt_version_to_an_external_broker() {
        let ext = "[broker]\nmode = \"external\"\nurl = \"mqtt://h\"\n";
        let cfg = Config::parse(ext, "c.toml").unwrap();
        assert_eq!(cfg.broker.protocol, MqttProtocol::V311, "3.1.1 by default");
        for (text, want) in [("v5", MqttProtocol::V5), ("v3.1.1", MqttProtocol::V311)] {
            let cfg = Config::parse(&format!("{ext}protocol = \"{text}\"\n"), "c.toml").unwrap();
            assert_eq!(cfg.broker.protocol, want, "{text}");
        }
        let e = Config::parse(&format!("{ext}protocol = \"v6\"\n"), "c.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("broker.protocol"), "{e}");
        assert!(e.to_string().contains("v5"), "names the choices: {e}");
        let e = Config::parse("[broker]\nprotocol = \"v5\"\n", "c.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("broker.protocol"), "{e}");
        assert!(e.message.contains("external"), "{e}");
    }
}
