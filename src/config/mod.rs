//! Configuration: serde structs with defaults in one place, the annotated default file
//! embedded in the binary, and validation whose errors name the file, the line and the
//! field.
//!
//! Loading is two passes: serde (types, unknown fields) and [`Config::validate`]
//! (meaning: durations, thresholds, channel names). Both report through
//! [`ConfigError`], which carries a position found from the TOML source.
//!
//! # Layout
//! - this file: [`Config`], its parsing and [`Config::validate`];
//! - `broker`, `ingest`, `rules`, `notify`, `influx`, `kafka`, `trust`: one section
//!   each (`trust`: the broker's users and TLS files); `sections`: the small ones
//!   (`[storage]`, `[engine]`, `[log]`, `[http]`, `[homeassistant]`);
//! - `duration`: the `"10s"` durations;
//! - `error`: [`ConfigError`] and how a problem is placed on its line and field;
//! - `file`: where the configuration file is found and reading it;
//! - `check`: every problem of a file at once, each with its line and field.

mod broker;
mod check;
mod duration;
mod error;
mod file;
mod influx;
mod ingest;
mod kafka;
mod notify;
mod rules;
mod sections;
mod trust;

pub use broker::{BrokerConfig, BrokerMode, MqttProtocol};
pub use centinela_sim::broker_url::{BrokerUrl, Tls};
pub use duration::Duration;
pub use error::{key, ConfigError, ConfigErrors, Invalid, PathPart};
pub use file::{
    load, load_all, load_or_default, load_or_default_all, permission_hint, resolve_path, user_path,
};
pub use influx::{InfluxApi, InfluxConfig};
pub use ingest::{covers as filter_covers, IngestConfig, MapConfig, MapFormat};
pub use kafka::{
    KafkaOutputConfig, KafkaSecurity, KafkaSourceConfig, KeyFrom, SourcesConfig, BUILT_WITH_KAFKA,
};
pub use notify::{
    EmailConfig, MqttNotifyConfig, NotifyConfig, OutboxConfig, SmtpTls, TelegramConfig,
    WebhookConfig,
};
pub use rules::{Agg, RuleConfig, RuleKind};
pub use sections::{
    DeadbandConfig, EngineConfig, HomeAssistantConfig, HttpConfig, LogConfig, SqliteConfig,
    StorageConfig,
};
pub use trust::{BrokerUser, TlsFiles};

use error::{dotted, from_toml_error, line_col, place};

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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let cfg = Config::parse(DEFAULT_TOML, "default").unwrap();
        assert_eq!(cfg.ingest.prefix, "sensors");
        assert_eq!(cfg.storage.sqlite.flush_interval, Duration::from_secs(2));
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
