//! Notifications: the last stage of the alert stream. Alert events from the engine are
//! written to a durable SQLite outbox ([`outbox`]) before any attempt; one worker per
//! channel ([`worker`]) sends them with backoff and ends each as delivered or dead.
//!
//! ```text
//!  engine ──AlertEvent──► outbox::enqueue (one row per event × channel, one transaction)
//!                              │ SQLite table `outbox`
//!                              ▼
//!               worker (per channel: backoff, storm digest, failing-channel alert)
//!                 ├─► email     (lettre, SMTP)
//!                 ├─► telegram  (Bot API) ◄─► bot (long polling: commands, buttons) ─► BotBackend
//!                 ├─► webhook   (JSON POST)
//!                 └─► mqtt      (retained republish)
//! ```
//!
//! Rendering ([`render`]) is pure and unit-tested; the channel modules are thin shells
//! around it. [`doctor`] checks each configured channel in words a person can act on.
//!
//! # Wiring
//! - Run the migrations (`sqlx::migrate!()`, which includes `0003_outbox.sql`), then
//!   `let outbox = Outbox::new(pool)`.
//! - The engine's events go through [`Outbox::enqueue`] (it wakes the workers; the
//!   free [`enqueue`] does the same write without waking them, they then poll).
//! - `spawn_workers(&outbox, &cfg.notify, senders(&cfg.notify, mqtt_publish)?, shutdown, engine)`:
//!   with `engine`, a channel that keeps failing is an alert of the engine
//!   ([`crate::engine::SystemAlert`]), listed and acknowledged like any other.
//! - With `[notify.telegram] bot = true`: `bot::TelegramBot::from_config(t, backend,
//!   Some(pool))?.spawn(shutdown)`, where `backend` implements [`bot::BotBackend`].
//! - With `[notify] from_kafka = true` the store writes no outbox rows; `from_kafka`
//!   (built with `--features kafka`) fills the outbox from the Kafka alerts topic.
//! - `centinela alerts --outbox`: [`dead`]; metrics and the TUI: [`counts`];
//!   `centinela doctor`: [`doctor::doctor`].

pub mod bot;
pub mod doctor;
pub mod email;
#[cfg(feature = "kafka")]
pub mod from_kafka;
pub mod mqtt;
pub mod outbox;
pub mod redact;
pub mod render;
pub mod smtp;
pub mod telegram;
pub mod webhook;
pub mod worker;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use outbox::{counts, dead, enqueue, ChannelCounts, Outbox, OutboxError, OutboxRow, Status};
pub use redact::redact_urls;
pub use worker::Worker;

use crate::config::NotifyConfig;

/// A boxed future, so channel and backend traits stay object-safe without macros.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why one attempt failed, and what the worker should do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Worth another try: the server is down, busy, or rate-limits us (`after`: the
    /// delay it asked for, e.g. Telegram's `retry_after`).
    #[error("{message}")]
    Retry {
        message: String,
        after: Option<std::time::Duration>,
    },
    /// The receiver refused for good (bot blocked, chat gone, message rejected): the
    /// notification ends as dead for this target. The message names the target.
    #[error("{0}")]
    Refused(String),
}

impl SendError {
    pub fn retry(message: impl Into<String>) -> Self {
        SendError::Retry {
            message: message.into(),
            after: None,
        }
    }
}

/// One delivery channel, as the worker drives it.
pub trait Sender: Send + Sync + 'static {
    /// The channel's name as rules write it in `notify` (`email`, `telegram`, …).
    fn channel(&self) -> &str;
    /// Who receives each notification, tracked separately so a retry skips those
    /// already served (Telegram chat ids); one empty string for single-target channels.
    fn targets(&self) -> Vec<String>;
    /// Whether several notifications may go out as one digest message.
    fn digests(&self) -> bool;
    /// Sends `rows` (one notification, or a digest when [`Sender::digests`]) to `target`.
    fn send<'a>(
        &'a self,
        target: &'a str,
        rows: &'a [OutboxRow],
    ) -> BoxFuture<'a, Result<(), SendError>>;
    /// The longest one [`Sender::send`] of `rows` notifications may take; past it the
    /// worker gives up the attempt and retries later. Channels bound each network
    /// step themselves: this is the last line, for a peer that trickles.
    fn deadline(&self, rows: usize) -> std::time::Duration {
        std::time::Duration::from_secs(60) * u32::try_from(rows.clamp(1, 10)).unwrap_or(10)
    }
}

/// Why a configured channel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Email(#[from] email::EmailError),
    #[error(transparent)]
    Telegram(#[from] telegram::TelegramError),
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error("notify.mqtt is configured but the service has no MQTT connection to publish with")]
    NoMqtt,
}

/// Builds a sender for every configured channel. `mqtt` publishes for `[notify.mqtt]`
/// (see [`mqtt::MqttSender::with_client`] for a rumqttc client).
pub fn senders(
    cfg: &NotifyConfig,
    mqtt: Option<mqtt::PublishFn>,
) -> Result<Vec<Arc<dyn Sender>>, BuildError> {
    let mut out: Vec<Arc<dyn Sender>> = Vec::new();
    if let Some(e) = &cfg.email {
        out.push(Arc::new(email::EmailSender::from_config(e)?));
    }
    if let Some(t) = &cfg.telegram {
        out.push(Arc::new(telegram::TelegramSender::from_config(t)?));
    }
    if let Some(w) = &cfg.webhook {
        out.push(Arc::new(webhook::WebhookSender::from_config(w)?));
    }
    if let Some(m) = &cfg.mqtt {
        let publish = mqtt.ok_or(BuildError::NoMqtt)?;
        out.push(Arc::new(mqtt::MqttSender::new(m.topic.clone(), publish)));
    }
    Ok(out)
}

/// Starts one worker per sender; each reports its channel's trouble through the others.
pub fn spawn_workers(
    outbox: &Outbox,
    cfg: &NotifyConfig,
    senders: Vec<Arc<dyn Sender>>,
    shutdown: watch::Receiver<bool>,
    engine: Option<tokio::sync::mpsc::Sender<crate::engine::SystemAlert>>,
) -> Vec<JoinHandle<()>> {
    let names: Vec<String> = senders.iter().map(|s| s.channel().to_string()).collect();
    senders
        .into_iter()
        .map(|s| {
            let w = Worker::new(outbox.clone(), s, cfg.outbox.clone(), names.clone());
            match &engine {
                Some(tx) => w.with_engine(tx.clone()),
                None => w,
            }
            .spawn(shutdown.clone())
        })
        .collect()
}

/// A secret read from the environment: usable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// Reads the variable `name`; the error names the variable, never a value.
    pub fn from_env(name: &str) -> Result<Self, String> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_string())),
            Ok(_) => Err(format!("the environment variable {name} is empty")),
            Err(_) => Err(format!("the environment variable {name} is not set")),
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Replaces every occurrence of `secret` in `text` (error messages may quote URLs
/// that carry a bot token), then whatever else looks secret in its URLs
/// ([`redact_urls`]).
pub fn redact(text: &str, secret: &Secret) -> String {
    if secret.0.is_empty() {
        redact_urls(text)
    } else {
        redact_urls(&text.replace(&secret.0, "***"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_follow_the_config() {
        let text = "[notify.webhook]\nurl = \"http://127.0.0.1:9/x\"\n[notify.mqtt]\ntopic = \"centinela/events\"\n";
        let cfg = crate::config::Config::parse(text, "t.toml").unwrap().notify;
        assert!(matches!(senders(&cfg, None), Err(BuildError::NoMqtt)));
        let publish: mqtt::PublishFn = Arc::new(|_, _| Box::pin(async { Ok(()) }));
        let built = senders(&cfg, Some(publish)).unwrap();
        let names: Vec<&str> = built.iter().map(|s| s.channel()).collect();
        assert_eq!(names, vec!["webhook", "mqtt"]);
        let text = "[notify.telegram]\ntoken_env = \"CENTINELA_TEST_SURELY_UNSET_TOKEN\"\nchat_ids = [1]\n";
        let cfg = crate::config::Config::parse(text, "t.toml").unwrap().notify;
        let e = senders(&cfg, None).err().unwrap().to_string();
        assert!(
            e.contains("CENTINELA_TEST_SURELY_UNSET_TOKEN is not set"),
            "{e}"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("123456:ABC-token");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(
            redact("GET /bot123456:ABC-token/getMe failed", &s),
            "GET /bot***/getMe failed"
        );
        let e = Secret::from_env("CENTINELA_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert!(
            e.contains("CENTINELA_TEST_SURELY_UNSET_VAR is not set"),
            "{e}"
        );
    }
}
