//! `[source.kafka]` and `[output.kafka]`: where readings come from and go to on Apache
//! Kafka. Parsed and validated in every build, so a file that names Kafka is understood
//! everywhere; running it needs a binary built with `--features kafka` (validation
//! says so otherwise). The runtime is `source::kafka` and `store::kafka`.

use std::path::PathBuf;

use serde::Deserialize;

use super::{key, Duration, Invalid, PathPart};

/// How a Kafka client reaches the brokers: TLS and SASL, the same keys in
/// `[source.kafka]` and `[output.kafka]`. The password is never in the file: it is read
/// from the environment variable `sasl_password_env` names.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: String,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: Option<String>,
    pub username: Option<String>,
    pub password_env: String,
    /// CA certificates (PEM) the brokers' certificates are checked against; default:
    /// the system's.
    pub ca_file: Option<PathBuf>,
}

/// The environment variable the SASL password is read from unless said otherwise.
pub const DEFAULT_PASSWORD_ENV: &str = "CENTINELA_KAFKA_PASSWORD";

impl KafkaSecurity {
    fn uses_sasl(&self) -> bool {
        self.protocol.starts_with("sasl_")
    }

    fn validate(&self, path: &dyn Fn(&str) -> Vec<PathPart>) -> Vec<Invalid> {
        let mut out = Vec::new();
        if !matches!(
            self.protocol.as_str(),
            "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl"
        ) {
            out.push(Invalid::new(
                &path("security_protocol"),
                format!(
                    "{:?}: expected \"plaintext\", \"ssl\", \"sasl_plaintext\" or \"sasl_ssl\"",
                    self.protocol
                ),
            ));
            return out;
        }
        if self.uses_sasl() {
            match self.mechanism.as_deref() {
                Some("PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") => {}
                Some(m) => out.push(Invalid::new(
                    &path("sasl_mechanism"),
                    format!("{m:?}: expected \"PLAIN\", \"SCRAM-SHA-256\" or \"SCRAM-SHA-512\""),
                )),
                None => out.push(Invalid::new(
                    &path("sasl_mechanism"),
                    format!("needed with security_protocol = {:?}", self.protocol),
                )),
            }
            if self.username.as_deref().is_none_or(|u| u.is_empty()) {
                out.push(Invalid::new(
                    &path("sasl_username"),
                    format!("needed with security_protocol = {:?}", self.protocol),
                ));
            }
            if self.password_env.trim().is_empty() {
                out.push(Invalid::new(
                    &path("sasl_password_env"),
                    "must name the environment variable that holds the password",
                ));
            }
        } else {
            for (f, set) in [
                ("sasl_mechanism", self.mechanism.is_some()),
                ("sasl_username", self.username.is_some()),
            ] {
                if set {
                    out.push(Invalid::new(
                        &path(f),
                        format!(
                            "has no effect with security_protocol = {:?} (use sasl_plaintext or sasl_ssl)",
                            self.protocol
                        ),
                    ));
                }
            }
        }
        if self.ca_file.is_some() && !self.protocol.ends_with("ssl") {
            out.push(Invalid::new(
                &path("ca_file"),
                format!(
                    "has no effect with security_protocol = {:?} (use ssl or sasl_ssl)",
                    self.protocol
                ),
            ));
        }
        out
    }
}

/// Whether this binary can talk to Kafka.
pub const BUILT_WITH_KAFKA: bool = cfg!(feature = "kafka");

/// Checks across sections: `[notify] from_kafka = true` needs an alerts topic, the one
/// of `[source.kafka]` or else of `[output.kafka]` (what
/// `crate::notify::from_kafka::settings` reads). Without Kafka in the build
/// `from_kafka` is refused already.
pub(super) fn cross_checks(cfg: &super::Config) -> Vec<Invalid> {
    if !cfg.notify.from_kafka || !BUILT_WITH_KAFKA {
        return Vec::new();
    }
    let source = cfg
        .source
        .kafka
        .as_ref()
        .and_then(|s| s.alerts_topic.as_deref())
        .is_some_and(|t| !t.is_empty());
    let output = cfg
        .output
        .kafka
        .as_ref()
        .is_some_and(|o| !o.alerts_topic.is_empty());
    if source || output {
        return Vec::new();
    }
    vec![Invalid::new(
        &[key("notify"), key("from_kafka")],
        "needs an alerts topic to read: set alerts_topic in [source.kafka] (or in \
         [output.kafka]); without one this instance's alerts would reach no one",
    )]
}

/// `[source.*]`: optional sources beside MQTT.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    pub kafka: Option<KafkaSourceConfig>,
}

impl SourcesConfig {
    pub fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        if let Some(k) = &self.kafka {
            out.extend(k.validate(&[key("source"), key("kafka")]));
        }
        out
    }
}

/// Where the series of a Kafka message comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFrom {
    /// The message key (the default): `greenhouse/node1/temperature`.
    Key,
    /// A header of the message: `header:NAME`.
    Header(String),
    /// A string field of a JSON value: `json:PATH` (dotted).
    Json(String),
}

impl KeyFrom {
    pub fn parse(s: &str) -> Result<KeyFrom, String> {
        let bad =
            || format!("{s:?}: expected \"key\", \"header:NAME\" or \"json:PATH\" (a dotted path)");
        if s == "key" {
            return Ok(KeyFrom::Key);
        }
        if let Some(h) = s.strip_prefix("header:") {
            return if h.is_empty() {
                Err(bad())
            } else {
                Ok(KeyFrom::Header(h.to_string()))
            };
        }
        if let Some(p) = s.strip_prefix("json:") {
            return if p.is_empty() || p.split('.').any(str::is_empty) {
                Err(bad())
            } else {
                Ok(KeyFrom::Json(p.to_string()))
            };
        }
        Err(bad())
    }
}

/// `[source.kafka]`: readings consumed as a member of a consumer group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Consumer group: instances with the same group split the partitions.
    pub group_id: String,
    /// Where the series comes from: `key` | `header:NAME` | `json:PATH`.
    pub key: String,
    /// Compacted topic of alert state; default `<group_id>-state`.
    pub changelog_topic: Option<String>,
    /// Alert events, one JSON object each (the fields of `alerts --json`).
    pub alerts_topic: Option<String>,
    /// Where a group without committed offsets starts: `earliest` or `latest`.
    pub start: String,
    /// How often offsets of stored readings are committed, at most.
    pub commit_interval: Duration,
    /// TLS and SASL ([`KafkaSecurity`]).
    pub security_protocol: String,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password_env: String,
    pub ca_file: Option<PathBuf>,
    /// The consumer group protocol: `classic` (cooperative-sticky, assigned by a
    /// member) or `consumer` (KIP-848: the brokers assign; Kafka 4 and later).
    pub group_protocol: String,
}

impl Default for KafkaSourceConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            topics: Vec::new(),
            group_id: "centinela".into(),
            key: "key".into(),
            changelog_topic: None,
            alerts_topic: None,
            start: "earliest".into(),
            commit_interval: Duration::from_secs(1),
            security_protocol: "plaintext".into(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_env: DEFAULT_PASSWORD_ENV.into(),
            ca_file: None,
            group_protocol: "classic".into(),
        }
    }
}

impl KafkaSourceConfig {
    /// TLS and SASL to the brokers.
    pub fn security(&self) -> KafkaSecurity {
        KafkaSecurity {
            protocol: self.security_protocol.clone(),
            mechanism: self.sasl_mechanism.clone(),
            username: self.sasl_username.clone(),
            password_env: self.sasl_password_env.clone(),
            ca_file: self.ca_file.clone(),
        }
    }

    /// The parsed `key` (validated).
    pub fn key_from(&self) -> KeyFrom {
        KeyFrom::parse(&self.key).unwrap_or(KeyFrom::Key)
    }

    /// `changelog_topic`, or `<group_id>-state`.
    pub fn changelog_topic(&self) -> String {
        self.changelog_topic
            .clone()
            .unwrap_or_else(|| format!("{}-state", self.group_id))
    }

    pub fn validate(&self, at: &[PathPart]) -> Vec<Invalid> {
        let path = |f: &str| {
            let mut p = at.to_vec();
            p.push(key(f));
            p
        };
        let mut out = Vec::new();
        if !BUILT_WITH_KAFKA {
            out.push(Invalid::new(at, NOT_BUILT));
            return out;
        }
        out.extend(check_brokers(&self.brokers, &path("brokers")));
        out.extend(self.security().validate(&path));
        if self.topics.is_empty() {
            out.push(Invalid::new(
                &path("topics"),
                "at least one topic is needed",
            ));
        }
        for (i, t) in self.topics.iter().enumerate() {
            let mut p = path("topics");
            p.push(PathPart::Index(i));
            if let Err(e) = check_topic(t) {
                out.push(Invalid::new(&p, e));
            }
        }
        if self.group_id.trim().is_empty() {
            out.push(Invalid::new(&path("group_id"), "must not be empty"));
        }
        if let Err(e) = KeyFrom::parse(&self.key) {
            out.push(Invalid::new(&path("key"), e));
        }
        for (f, t) in [
            ("changelog_topic", &self.changelog_topic),
            ("alerts_topic", &self.alerts_topic),
        ] {
            if let Some(Err(e)) = t.as_deref().map(check_topic) {
                out.push(Invalid::new(&path(f), e));
            }
        }
        if !matches!(self.group_protocol.as_str(), "classic" | "consumer") {
            out.push(Invalid::new(
                &path("group_protocol"),
                format!(
                    "{:?}: expected \"classic\" or \"consumer\"",
                    self.group_protocol
                ),
            ));
        }
        if !matches!(self.start.as_str(), "earliest" | "latest") {
            out.push(Invalid::new(
                &path("start"),
                format!("{:?}: expected \"earliest\" or \"latest\"", self.start),
            ));
        }
        if self.commit_interval.is_zero() {
            out.push(Invalid::new(
                &path("commit_interval"),
                "must be longer than zero",
            ));
        }
        out
    }
}

/// `[output.kafka]`: readings and alert events to topics, for other apps.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaOutputConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Readings as JSON (`{"series":…,"ts":…,"value":…}`), key = series; `""` sends none.
    pub readings_topic: String,
    /// Alert events as JSON (the fields of `alerts --json`), key = alert id; `""` sends
    /// none.
    pub alerts_topic: String,
    /// A message the brokers have not acknowledged by then is counted as failed.
    pub message_timeout: Duration,
    /// How long stopping waits for messages still in flight (then they count as failed).
    pub flush_timeout: Duration,
    /// TLS and SASL ([`KafkaSecurity`]).
    pub security_protocol: String,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password_env: String,
    pub ca_file: Option<PathBuf>,
}

impl Default for KafkaOutputConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            readings_topic: "centinela-readings".into(),
            alerts_topic: "centinela-alerts".into(),
            message_timeout: Duration::from_secs(30),
            flush_timeout: Duration::from_secs(5),
            security_protocol: "plaintext".into(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_env: DEFAULT_PASSWORD_ENV.into(),
            ca_file: None,
        }
    }
}

impl KafkaOutputConfig {
    /// TLS and SASL to the brokers.
    pub fn security(&self) -> KafkaSecurity {
        KafkaSecurity {
            protocol: self.security_protocol.clone(),
            mechanism: self.sasl_mechanism.clone(),
            username: self.sasl_username.clone(),
            password_env: self.sasl_password_env.clone(),
            ca_file: self.ca_file.clone(),
        }
    }

    pub fn validate(&self, at: &[PathPart]) -> Vec<Invalid> {
        let path = |f: &str| {
            let mut p = at.to_vec();
            p.push(key(f));
            p
        };
        let mut out = Vec::new();
        if !BUILT_WITH_KAFKA {
            out.push(Invalid::new(at, NOT_BUILT));
            return out;
        }
        out.extend(check_brokers(&self.brokers, &path("brokers")));
        out.extend(self.security().validate(&path));
        for (f, t) in [
            ("readings_topic", &self.readings_topic),
            ("alerts_topic", &self.alerts_topic),
        ] {
            if !t.is_empty() {
                if let Err(e) = check_topic(t) {
                    out.push(Invalid::new(&path(f), e));
                }
            }
        }
        if self.readings_topic.is_empty() && self.alerts_topic.is_empty() {
            out.push(Invalid::new(
                &path("readings_topic"),
                "readings_topic and alerts_topic are both empty: nothing to send",
            ));
        }
        for (f, d) in [
            ("message_timeout", self.message_timeout),
            ("flush_timeout", self.flush_timeout),
        ] {
            if d.is_zero() {
                out.push(Invalid::new(&path(f), "must be longer than zero"));
            }
        }
        out
    }
}

const NOT_BUILT: &str = "this centinela was built without Kafka support: build it with \
                         `cargo build --release --features kafka`, or remove this section";

fn check_brokers(brokers: &[String], at: &[PathPart]) -> Vec<Invalid> {
    if brokers.is_empty() {
        return vec![Invalid::new(
            at,
            "at least one broker is needed (\"host:port\")",
        )];
    }
    let mut out = Vec::new();
    for (i, b) in brokers.iter().enumerate() {
        let ok = b
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && !h.contains(',') && p.parse::<u16>().is_ok());
        if !ok {
            let mut p = at.to_vec();
            p.push(PathPart::Index(i));
            out.push(Invalid::new(&p, format!("{b:?}: expected \"host:port\"")));
        }
    }
    out
}

/// Kafka's own rule for topic names: 1–249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 249 || t == "." || t == ".." {
        return Err(format!("{t:?} is not a valid Kafka topic name"));
    }
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{t:?} is not a valid Kafka topic name ({c:?}: only letters, digits, '.', '_' and '-')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_needs_a_mechanism_and_a_user_and_tls_keys_need_tls() {
        let path = |f: &str| vec![key("source"), key("kafka"), key(f)];
        let sec = |p: &str, m: Option<&str>, u: Option<&str>, ca: bool| KafkaSecurity {
            protocol: p.into(),
            mechanism: m.map(str::to_string),
            username: u.map(str::to_string),
            password_env: DEFAULT_PASSWORD_ENV.into(),
            ca_file: ca.then(|| PathBuf::from("/etc/ca.pem")),
        };
        let fields = |s: KafkaSecurity| -> Vec<String> {
            s.validate(&path)
                .iter()
                .map(|e| format!("{:?}: {}", e.path.last(), e.message))
                .collect()
        };
        assert!(fields(sec("plaintext", None, None, false)).is_empty());
        assert!(fields(sec("sasl_ssl", Some("SCRAM-SHA-512"), Some("u"), true)).is_empty());
        assert!(fields(sec("ssl", None, None, true)).is_empty());
        let e = fields(sec("sasl_plaintext", None, None, false));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("sasl_mechanism") && e[1].contains("sasl_username"),
            "{e:?}"
        );
        let e = fields(sec("sasl_plaintext", Some("GSSAPI"), Some("u"), false));
        assert!(e[0].contains("GSSAPI"), "{e:?}");
        let e = fields(sec("plaintext", Some("PLAIN"), None, true));
        assert!(
            e[0].contains("has no effect") && e[1].contains("ca_file"),
            "{e:?}"
        );
        assert!(fields(sec("tls", None, None, false))[0].contains("security_protocol"));
    }

    #[test]
    fn key_from_parses_the_three_forms() {
        assert_eq!(KeyFrom::parse("key"), Ok(KeyFrom::Key));
        assert_eq!(
            KeyFrom::parse("header:series"),
            Ok(KeyFrom::Header("series".into()))
        );
        assert_eq!(
            KeyFrom::parse("json:meta.series"),
            Ok(KeyFrom::Json("meta.series".into()))
        );
        for bad in ["", "header:", "json:", "json:a..b", "value"] {
            assert!(KeyFrom::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_names_follow_kafka() {
        assert!(check_topic("centinela-readings.v1_x").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", &"x".repeat(250)] {
            assert!(check_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_section_is_refused_without_the_feature_and_checked_with_it() {
        let cfg = KafkaOutputConfig {
            brokers: vec!["nohost".into()],
            ..Default::default()
        };
        let errs = cfg.validate(&[key("output"), key("kafka")]);
        if BUILT_WITH_KAFKA {
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(errs[0].message.contains("host:port"), "{errs:?}");
        } else {
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(errs[0].message.contains("--features kafka"), "{errs:?}");
        }
    }
}
