//! `[notify.*]`: the delivery channels (email, Telegram, webhook, MQTT republish) and
//! the outbox's retry and storm policy. Secrets are never here: each section names
//! the environment variable that holds them, read when the channel is built.

use serde::Deserialize;

use super::{key, Duration, Invalid, PathPart};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub email: Option<EmailConfig>,
    pub telegram: Option<TelegramConfig>,
    pub webhook: Option<WebhookConfig>,
    pub mqtt: Option<MqttNotifyConfig>,
    /// Retry, expiry and storm grouping, shared by every channel.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Notifications come from the Kafka alerts topic, not from this instance's own
    /// engine (`crate::notify::from_kafka`).
    #[serde(default)]
    pub from_kafka: bool,
    /// The notifiers' consumer group; default [`DEFAULT_KAFKA_GROUP`].
    pub kafka_group: Option<String>,
    /// With `from_kafka`: whether this instance delivers (joins the notifiers' group);
    /// `false` leaves delivery to the others. Default `true`.
    pub kafka_deliver: Option<bool>,
}

/// The consumer group of the instances that deliver from the alerts topic.
pub const DEFAULT_KAFKA_GROUP: &str = "centinela-notify";

/// Every kind of channel there is: the `[notify.*]` sections a rule's `notify` names.
pub const CHANNEL_TYPES: &[&str] = &["email", "telegram", "webhook", "mqtt"];

impl NotifyConfig {
    /// The notifiers' consumer group.
    pub fn kafka_group(&self) -> &str {
        self.kafka_group.as_deref().unwrap_or(DEFAULT_KAFKA_GROUP)
    }

    /// Whether this instance consumes the alerts topic and delivers.
    pub fn delivers_from_kafka(&self) -> bool {
        self.from_kafka && self.kafka_deliver.unwrap_or(true)
    }

    /// Names of the configured channels, as rules refer to them in `notify`.
    pub fn channels(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.email.is_some() {
            v.push("email");
        }
        if self.telegram.is_some() {
            v.push("telegram");
        }
        if self.webhook.is_some() {
            v.push("webhook");
        }
        if self.mqtt.is_some() {
            v.push("mqtt");
        }
        v
    }

    /// Every problem in the `[notify.*]` sections.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        if let Some(e) = &self.email {
            e.validate(&mut out);
        }
        if let Some(t) = &self.telegram {
            t.validate(&mut out);
        }
        if let Some(w) = &self.webhook {
            match (&w.url, &w.url_env) {
                (Some(u), None) => {
                    if let Err(e) = check_http_url(u) {
                        out.push(Invalid::new(&at("webhook", "url"), e));
                    }
                }
                (None, Some(v)) if v.trim().is_empty() => out.push(Invalid::new(
                    &at("webhook", "url_env"),
                    "name the environment variable that holds the webhook address",
                )),
                (None, Some(_)) => {}
                (Some(_), Some(_)) => out.push(Invalid::new(
                    &at("webhook", "url_env"),
                    "set url or url_env, not both",
                )),
                (None, None) => out.push(Invalid::new(
                    &at("webhook", "url"),
                    "the receiver's address is needed: url = \"https://…\", or url_env naming the variable that holds it",
                )),
            }
            if let Some(v) = &w.secret_env {
                if v.trim().is_empty() {
                    out.push(Invalid::new(
                        &at("webhook", "secret_env"),
                        "name the environment variable that holds the webhook secret",
                    ));
                }
            }
            if let Some(h) = &w.secret_header {
                if w.secret_env.is_none() {
                    out.push(Invalid::new(
                        &at("webhook", "secret_header"),
                        "goes with secret_env, the variable whose value is sent in this header",
                    ));
                }
                if reqwest::header::HeaderName::from_bytes(h.trim().as_bytes()).is_err() {
                    out.push(Invalid::new(
                        &at("webhook", "secret_header"),
                        format!("{h:?} is not an HTTP header name"),
                    ));
                }
            }
            if w.timeout.is_zero() {
                out.push(Invalid::new(
                    &at("webhook", "timeout"),
                    "must be longer than zero",
                ));
            }
        }
        if let Some(m) = &self.mqtt {
            if m.topic.trim().is_empty() || m.topic.contains(['+', '#']) || m.topic.ends_with('/') {
                out.push(Invalid::new(
                    &at("mqtt", "topic"),
                    format!("{:?} must be a plain topic path such as \"{DEFAULT_MQTT_TOPIC}\" (no wildcards, no trailing '/')", m.topic),
                ));
            } else if let Some(live) = overlaps_live_topic(&m.topic) {
                out.push(Invalid::new(
                    &at("mqtt", "topic"),
                    format!(
                        "{:?} overlaps {live}, where the service publishes its own live state: \
                         every event would show twice in `centinela tui`; use a topic of its own such as \"{DEFAULT_MQTT_TOPIC}\"",
                        m.topic
                    ),
                ));
            }
        }
        self.outbox.validate(&mut out);
        self.validate_kafka(&mut out);
        out
    }

    fn validate_kafka(&self, out: &mut Vec<Invalid>) {
        let path = |f: &str| vec![key("notify"), key(f)];
        if self.from_kafka && !super::kafka::BUILT_WITH_KAFKA {
            out.push(Invalid::new(
                &path("from_kafka"),
                "this centinela was built without Kafka support: build it with \
                 `cargo build --release --features kafka`, or remove from_kafka",
            ));
        }
        for (f, set) in [
            ("kafka_group", self.kafka_group.is_some()),
            ("kafka_deliver", self.kafka_deliver.is_some()),
        ] {
            if set && !self.from_kafka {
                out.push(Invalid::new(
                    &path(f),
                    "has an effect only with from_kafka = true",
                ));
            }
        }
        if let Some(g) = &self.kafka_group {
            if g.trim().is_empty() {
                out.push(Invalid::new(
                    &path("kafka_group"),
                    "name the consumer group, e.g. \"centinela-notify\"",
                ));
            }
        }
    }
}

fn at(section: &str, field: &str) -> Vec<PathPart> {
    vec![key("notify"), key(section), key(field)]
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on this machine or a trusted network.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `host:port`; the port defaults to 587 (starttls), 465 (tls) or 25 (none).
    pub smtp: String,
    #[serde(default)]
    pub tls: SmtpTls,
    /// SMTP AUTH user; no AUTH when absent.
    pub username: Option<String>,
    /// Name of the environment variable that holds the SMTP password.
    #[serde(default = "default_smtp_password_env")]
    pub password_env: String,
    /// `"centinela <alerts@example.org>"` or a bare address.
    pub from: String,
    pub to: Vec<String>,
    /// Connect and per-command timeout.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

fn default_smtp_password_env() -> String {
    "CENTINELA_SMTP_PASSWORD".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl EmailConfig {
    /// Host and port of `smtp`, with the default port of the TLS mode.
    pub fn host_port(&self) -> Result<(String, u16), String> {
        let default_port = match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        };
        let s = self.smtp.trim();
        if s.is_empty() || s.contains("://") {
            return Err(format!(
                "{s:?} must be host:port, e.g. \"smtp.example.org:587\""
            ));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{s:?}: port {p:?} is not a number"))?,
            ),
            _ => (s, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        Ok((host.to_string(), port))
    }

    fn validate(&self, out: &mut Vec<Invalid>) {
        match self.host_port() {
            Err(e) => out.push(Invalid::new(&at("email", "smtp"), e)),
            Ok((host, _)) => {
                let local = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if self.tls == SmtpTls::None && self.username.is_some() && !local {
                    out.push(Invalid::new(
                        &at("email", "tls"),
                        format!(
                            "tls = \"none\" would send the password for {:?} in clear to {host}: use \"starttls\" or \"tls\", \
                             or a relay on this machine (localhost)",
                            self.username.as_deref().unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        if self.username.is_some() && self.password_env.trim().is_empty() {
            out.push(Invalid::new(
                &at("email", "password_env"),
                "name the environment variable that holds the SMTP password",
            ));
        }
        if let Err(e) = self.from.parse::<lettre::message::Mailbox>() {
            out.push(Invalid::new(
                &at("email", "from"),
                format!(
                    "{:?} is not an address ({e}); write e.g. \"centinela <alerts@example.org>\"",
                    self.from
                ),
            ));
        }
        if self.to.is_empty() {
            out.push(Invalid::new(
                &at("email", "to"),
                "at least one recipient is needed, e.g. to = [\"ops@example.org\"]",
            ));
        }
        for (i, t) in self.to.iter().enumerate() {
            if let Err(e) = t.parse::<lettre::message::Mailbox>() {
                let mut p = at("email", "to");
                p.push(PathPart::Index(i));
                out.push(Invalid::new(&p, format!("{t:?} is not an address ({e})")));
            }
        }
        if self.timeout.is_zero() {
            out.push(Invalid::new(
                &at("email", "timeout"),
                "must be longer than zero",
            ));
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// Name of the environment variable that holds the bot token from @BotFather.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Chats that receive alerts and may command the bot; every other chat is refused.
    pub chat_ids: Vec<i64>,
    /// Bot API server: the public one, a self-hosted one, or a test stand-in.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Answer commands (`/status`, `/ack`, …) by long polling.
    #[serde(default = "default_true")]
    pub bot: bool,
}

fn default_token_env() -> String {
    "CENTINELA_TELEGRAM_TOKEN".into()
}

fn default_api_url() -> String {
    "https://api.telegram.org".into()
}

fn default_true() -> bool {
    true
}

impl TelegramConfig {
    fn validate(&self, out: &mut Vec<Invalid>) {
        if self.token_env.trim().is_empty() {
            out.push(Invalid::new(
                &at("telegram", "token_env"),
                "name the environment variable that holds the bot token",
            ));
        }
        if self.chat_ids.is_empty() {
            out.push(Invalid::new(
                &at("telegram", "chat_ids"),
                "at least one chat id is needed: send the bot a message, then read the id with `centinela doctor`",
            ));
        }
        for (i, id) in self.chat_ids.iter().enumerate() {
            if *id == 0 {
                let mut p = at("telegram", "chat_ids");
                p.push(PathPart::Index(i));
                out.push(Invalid::new(&p, "0 is not a chat id"));
            }
        }
        if let Err(e) = check_http_url(&self.api_url) {
            out.push(Invalid::new(&at("telegram", "api_url"), e));
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receives each alert event as a JSON POST.
    #[serde(default)]
    pub url: Option<String>,
    /// Instead of `url`: the environment variable that holds the address, for a URL
    /// that carries its own secret (a key in the query, a token in the path).
    #[serde(default)]
    pub url_env: Option<String>,
    /// The environment variable whose value is sent with every request, as
    /// `Authorization: Bearer <value>` or in `secret_header`.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The header that carries the secret instead of `Authorization` (e.g. `X-Api-Key`).
    #[serde(default)]
    pub secret_header: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

impl WebhookConfig {
    /// A webhook to `url` with the default timeout and no secret.
    pub fn new(url: impl Into<String>) -> Self {
        WebhookConfig {
            url: Some(url.into()),
            url_env: None,
            secret_env: None,
            secret_header: None,
            timeout: default_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttNotifyConfig {
    /// Events are published retained, QoS 1, on `<topic>/<rule>/<series>`.
    #[serde(default = "default_mqtt_topic")]
    pub topic: String,
}

/// Where `[notify.mqtt]` publishes by default: apart from the live state.
pub const DEFAULT_MQTT_TOPIC: &str = "centinela/events";

/// Topics the service itself publishes or listens on (the live alert state, its status
/// and the control requests); `[notify.mqtt]` must stay clear of them.
pub const LIVE_TOPICS: [&str; 3] = ["centinela/alerts", "centinela/status", "centinela/control"];

fn default_mqtt_topic() -> String {
    DEFAULT_MQTT_TOPIC.into()
}

/// The live topic that `<topic>/<rule>/<series>` could land on or under, if any. Pure.
pub fn overlaps_live_topic(topic: &str) -> Option<String> {
    let t = topic.trim().trim_end_matches('/');
    LIVE_TOPICS.iter().find_map(|live| {
        let under = t == *live || t.starts_with(&format!("{live}/"));
        let above = live.starts_with(&format!("{t}/"));
        (under || above).then(|| {
            if *live == "centinela/alerts" {
                "centinela/alerts/#".to_string()
            } else {
                (*live).to_string()
            }
        })
    })
}

/// Retry, expiry and storm grouping of the outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// A notification is dead after this many failed attempts…
    pub max_attempts: u32,
    /// …or when it has waited this long.
    pub max_age: Duration,
    /// First retry delay; doubles per attempt up to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// More than this many notifications waiting for a channel are sent as one digest.
    pub storm_threshold: usize,
    /// While more than `storm_threshold` were enqueued within this window, notifications
    /// wait up to this long to be grouped into one digest.
    pub storm_window: Duration,
    /// Most alerts in one digest.
    pub digest_max: usize,
    /// A channel failing this long raises an alert of its own through the other channels.
    pub failing_after: Duration,
    /// How often an idle worker looks for new notifications (enqueueing also wakes it).
    pub poll_interval: Duration,
    /// Delivered notifications are deleted after this long.
    pub keep_delivered: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: 30,
            max_age: Duration::from_secs(24 * 3600),
            backoff_min: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            storm_threshold: 5,
            storm_window: Duration::from_secs(30),
            digest_max: 50,
            failing_after: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            keep_delivered: Duration::from_secs(7 * 86_400),
        }
    }
}

impl OutboxConfig {
    fn validate(&self, out: &mut Vec<Invalid>) {
        let f = |name: &str| at("outbox", name);
        if self.max_attempts == 0 {
            out.push(Invalid::new(&f("max_attempts"), "must be at least 1"));
        }
        for (name, d) in [
            ("max_age", self.max_age),
            ("backoff_min", self.backoff_min),
            ("backoff_max", self.backoff_max),
            ("storm_window", self.storm_window),
            ("failing_after", self.failing_after),
            ("poll_interval", self.poll_interval),
            ("keep_delivered", self.keep_delivered),
        ] {
            if d.is_zero() {
                out.push(Invalid::new(&f(name), "must be longer than zero"));
            }
        }
        if self.backoff_min > self.backoff_max {
            out.push(Invalid::new(
                &f("backoff_min"),
                format!(
                    "{} is longer than backoff_max ({})",
                    self.backoff_min, self.backoff_max
                ),
            ));
        }
        if self.digest_max < 2 {
            out.push(Invalid::new(
                &f("digest_max"),
                "a digest holds at least 2 alerts",
            ));
        }
    }
}

fn check_http_url(u: &str) -> Result<(), String> {
    // The address may carry a secret: it is quoted only redacted.
    let shown = crate::notify::redact::redact_url(u);
    match reqwest::Url::parse(u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(()),
        Ok(_) => Err(format!("{shown:?} must be an http:// or https:// address")),
        Err(e) => Err(format!("{shown:?} is not an address ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn err(text: &str) -> crate::config::ConfigError {
        Config::parse(text, "n.toml").unwrap_err()
    }

    const EMAIL: &str = "[notify.email]\nsmtp = \"smtp.example.org:587\"\nfrom = \"centinela <alerts@example.org>\"\n";

    #[test]
    fn kafka_keys_need_from_kafka() {
        let e = err("[notify]\nkafka_group = \"n\"\n");
        assert_eq!(e.field.as_deref(), Some("notify.kafka_group"));
        assert!(e.to_string().contains("only with from_kafka = true"), "{e}");
        let e = err("[notify]\nkafka_deliver = false\n");
        assert_eq!(e.field.as_deref(), Some("notify.kafka_deliver"));
        let text = "[notify]\nfrom_kafka = true\nkafka_deliver = false\n\n\
                    [output.kafka]\nbrokers = [\"127.0.0.1:9092\"]\n";
        match Config::parse(text, "n.toml") {
            Ok(cfg) => {
                let built = crate::config::BUILT_WITH_KAFKA;
                assert!(built);
                assert!(cfg.notify.from_kafka && !cfg.notify.delivers_from_kafka());
                assert_eq!(cfg.notify.kafka_group(), "centinela-notify");
            }
            Err(e) => {
                let built = crate::config::BUILT_WITH_KAFKA;
                assert!(!built);
                assert_eq!(e.field.as_deref(), Some("notify.from_kafka"), "{e}");
            }
        }
        let e = err("[notify]\nfrom_kafka = true\nkafka_group = \" \"\n");
        if crate::config::BUILT_WITH_KAFKA {
            assert_eq!(e.field.as_deref(), Some("notify.kafka_group"), "{e}");
        }
    }

    #[test]
    fn contract_keys_parse() {
        let text = format!(
            "{EMAIL}tls = \"starttls\"\nusername = \"alerts@example.org\"\npassword_env = \"CENTINELA_SMTP_PASSWORD\"\n\
             to = [\"ops@example.org\"]\n\
             [notify.telegram]\ntoken_env = \"CENTINELA_TELEGRAM_TOKEN\"\nchat_ids = [123456789]\napi_url = \"https://api.telegram.org\"\n\
             [notify.webhook]\nurl = \"http://127.0.0.1:9000/alerts\"\n[notify.mqtt]\ntopic = \"centinela/events\"\n\
             [notify.outbox]\nmax_attempts = 5\nstorm_threshold = 3\n"
        );
        let cfg = Config::parse(&text, "n.toml").unwrap();
        assert_eq!(
            cfg.notify.channels(),
            vec!["email", "telegram", "webhook", "mqtt"]
        );
        let e = cfg.notify.email.unwrap();
        assert_eq!(e.host_port().unwrap(), ("smtp.example.org".into(), 587));
        assert_eq!(cfg.notify.telegram.unwrap().chat_ids, vec![123456789]);
        assert_eq!(cfg.notify.outbox.max_attempts, 5);
        assert_eq!(cfg.notify.outbox.storm_threshold, 3);
    }

    #[test]
    fn empty_to_is_refused_with_its_line() {
        let e = err(&format!("{EMAIL}to = []\n"));
        assert_eq!(e.field.as_deref(), Some("notify.email.to"));
        assert_eq!(e.line, Some(4), "{e}");
    }

    #[test]
    fn bad_address_is_placed_in_the_array() {
        let e = err(&format!(
            "{EMAIL}to = [\"ops@example.org\", \"not an address\"]\n"
        ));
        assert_eq!(e.field.as_deref(), Some("notify.email.to[1]"));
        assert!(e.message.contains("not an address"), "{e}");
        let e = err("[notify.email]\nsmtp = \"s:25\"\nfrom = \"nobody\"\nto = [\"a@b.c\"]\n");
        assert_eq!(e.field.as_deref(), Some("notify.email.from"));
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn clear_password_to_a_remote_relay_is_refused() {
        let e = err(&format!(
            "{EMAIL}to = [\"a@b.c\"]\ntls = \"none\"\nusername = \"u\"\n"
        ));
        assert_eq!(e.field.as_deref(), Some("notify.email.tls"));
        let ok = "[notify.email]\nsmtp = \"127.0.0.1:2525\"\ntls = \"none\"\nusername = \"u\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]\n";
        let cfg = Config::parse(ok, "n.toml").unwrap();
        assert_eq!(
            cfg.notify.email.unwrap().host_port().unwrap(),
            ("127.0.0.1".into(), 2525)
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let e = err("[notify.telegram]\ntoken = \"123:abc\"\nchat_ids = [1]\n");
        assert!(e.message.contains("token"), "{e}");
        assert_eq!(e.line, Some(2));
        let e = err("[notify.telegram]\nchat_ids = []\n");
        assert_eq!(e.field.as_deref(), Some("notify.telegram.chat_ids"));
        let e = err("[notify.webhook]\nurl = \"ftp://x/y\"\n");
        assert_eq!(e.field.as_deref(), Some("notify.webhook.url"));
        let e = err("[notify.mqtt]\ntopic = \"alerts/#\"\n");
        assert_eq!(e.field.as_deref(), Some("notify.mqtt.topic"));
        let e = err("[notify.outbox]\nbackoff_min = \"10m\"\nbackoff_max = \"1m\"\n");
        assert_eq!(e.field.as_deref(), Some("notify.outbox.backoff_min"));
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn the_annotated_default_documents_every_key() {
        // Uncomment the [notify.*] examples of config/centinela.toml: they must parse.
        let d = crate::config::DEFAULT_TOML;
        let start = d
            .find("# [notify.email]")
            .expect("notify examples in the default file");
        let end = d[start..].find("\n\n").map_or(d.len(), |e| start + e);
        let text: String = d[start..end]
            .lines()
            .map(|l| l.trim_start_matches('#').trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let cfg = Config::parse(&text, "default").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            cfg.notify.channels(),
            vec!["email", "telegram", "webhook", "mqtt"]
        );
        let d = crate::config::OutboxConfig::default();
        let o = &cfg.notify.outbox;
        assert_eq!(
            (
                o.max_attempts,
                o.max_age,
                o.backoff_min,
                o.backoff_max,
                o.storm_threshold,
                o.storm_window
            ),
            (
                d.max_attempts,
                d.max_age,
                d.backoff_min,
                d.backoff_max,
                d.storm_threshold,
                d.storm_window
            ),
            "the documented values are the defaults"
        );
        assert_eq!(
            (
                o.digest_max,
                o.failing_after,
                o.poll_interval,
                o.keep_delivered
            ),
            (
                d.digest_max,
                d.failing_after,
                d.poll_interval,
                d.keep_delivered
            )
        );
    }

    #[test]
    fn mqtt_channel_stays_off_the_live_topics() {
        let cfg = Config::parse("[notify.mqtt]\n", "n.toml").unwrap();
        assert_eq!(cfg.notify.mqtt.unwrap().topic, "centinela/events");
        for (topic, live) in [
            ("centinela/alerts", "centinela/alerts/#"),
            ("centinela/alerts/mine", "centinela/alerts/#"),
            ("centinela", "centinela/alerts/#"),
            ("centinela/status", "centinela/status"),
            ("centinela/control/x", "centinela/control"),
        ] {
            let e = err(&format!("[notify.mqtt]\ntopic = \"{topic}\"\n"));
            assert_eq!(
                e.field.as_deref(),
                Some("notify.mqtt.topic"),
                "{topic}: {e}"
            );
            assert_eq!(e.line, Some(2), "{e}");
            assert!(
                e.message.contains(&format!("overlaps {live}")),
                "{topic}: {e}"
            );
        }
        for ok in ["centinela/events", "centinela/alertsx", "home/alerts"] {
            let text = format!("[notify.mqtt]\ntopic = \"{ok}\"\n");
            assert!(Config::parse(&text, "n.toml").is_ok(), "{ok}");
        }
    }

    #[test]
    fn webhook_address_and_secret_come_from_the_config_or_the_environment() {
        let text = "[notify.webhook]\nurl_env = \"HOOK_URL\"\nsecret_env = \"HOOK_SECRET\"\nsecret_header = \"X-Api-Key\"\n";
        let w = Config::parse(text, "n.toml")
            .unwrap()
            .notify
            .webhook
            .unwrap();
        assert_eq!(w.url, None);
        assert_eq!(w.url_env.as_deref(), Some("HOOK_URL"));
        let e = err("[notify.webhook]\nurl = \"http://a/x\"\nurl_env = \"HOOK_URL\"\n");
        assert_eq!(e.field.as_deref(), Some("notify.webhook.url_env"));
        let e = err("[notify.webhook]\ntimeout = \"3s\"\n");
        assert_eq!(e.field.as_deref(), Some("notify.webhook.url"));
        let e = err("[notify.webhook]\nurl = \"http://a/x\"\nsecret_header = \"X-Key\"\n");
        assert_eq!(e.field.as_deref(), Some("notify.webhook.secret_header"));
        // A bad address is quoted without the secret it carries.
        let e = err("[notify.webhook]\nurl = \"ftp://u:hunter2@h/x?key=k3y\"\n");
        assert!(
            !e.to_string().contains("hunter2") && !e.to_string().contains("k3y"),
            "{e}"
        );
    }

    #[test]
    fn rules_may_name_configured_channels() {
        let text = format!(
            "{EMAIL}to = [\"a@b.c\"]\n[[rules]]\nname = \"hot\"\nseries = \"#\"\nkind = \"threshold\"\nabove = 1.0\nnotify = [\"email\"]\n"
        );
        assert!(Config::parse(&text, "n.toml").is_ok());
    }
}
