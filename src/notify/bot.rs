//! The Telegram bot: answers people by long polling (`getUpdates`) and turns their
//! commands and button presses into [`Control`] requests for the engine.
//!
//! ```text
//!  Telegram ──getUpdates──► TelegramBot ──BotBackend──► engine (status, last values, ack, silence)
//!                               └─sendMessage / answerCallbackQuery──► Telegram
//! ```
//!
//! Commands: `/help`, `/status`, `/alerts`, `/last <series>`, `/ack <alert>`,
//! `/silence <pattern> <duration> [reason]`, `/unsilence [pattern]`; and the inline
//! buttons under each firing alert (Ack, Silence 1h). Only chats in `chat_ids` are
//! served: any other chat gets a refusal that reveals nothing, and is logged.
//!
//! Parsing and rendering are pure ([`parse_command`], [`render_status`], …); the rest
//! of the service is reached only through the [`BotBackend`] trait.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use teloxide::payloads::{AnswerCallbackQuerySetters, GetUpdatesSetters, SendMessageSetters};
use teloxide::requests::Requester;
use teloxide::types::{AllowedUpdate, CallbackQuery, ChatId, Message, ParseMode, UpdateKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::outbox::{self, ChannelCounts};
use super::render::{escape_html, utf16_len, value, TELEGRAM_LIMIT};
use super::telegram::{make_bot, TelegramError, CB_ACK, CB_SILENCE_1H};
use super::{redact, BoxFuture, Secret};
use crate::config::TelegramConfig;
use crate::model::{now_ms, AlertState, Control, Severity, Timestamp};

/// One alert as the bot shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    /// `rule/series`.
    pub alert_id: String,
    pub state: AlertState,
    pub severity: Severity,
    pub value: Option<f64>,
    pub unit: Option<String>,
    /// When it entered its state.
    pub since: Timestamp,
    pub message: String,
}

/// The latest value of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct LastValue {
    pub series: String,
    pub value: f64,
    pub unit: Option<String>,
    pub ts: Timestamp,
}

/// What `/status` shows: the firing alerts and the latest values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatusView {
    pub firing: Vec<AlertView>,
    pub last: Vec<LastValue>,
}

/// How the bot reaches the rest of the service (the engine implements it).
pub trait BotBackend: Send + Sync + 'static {
    /// Firing alerts and latest values.
    fn status(&self) -> BoxFuture<'_, StatusView>;
    /// Alerts that are firing (or acknowledged but not resolved).
    fn alerts(&self) -> BoxFuture<'_, Vec<AlertView>>;
    /// Latest values of the series matching `pattern` (MQTT wildcards).
    fn last(&self, pattern: String) -> BoxFuture<'_, Vec<LastValue>>;
    /// Carries out an ack or a silence; `Ok` holds the words to answer with.
    fn control(&self, control: Control) -> BoxFuture<'_, Result<String, String>>;
}

/// A command a person typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Help,
    Status,
    Alerts,
    Last(String),
    Ack(String),
    Silence {
        pattern: String,
        duration: crate::config::Duration,
        reason: String,
    },
    Unsilence(Option<String>),
}

pub const HELP: &str = "<b>centinela</b> commands:\n\
/status: firing alerts and latest values\n\
/alerts: firing alerts\n\
/last &lt;series&gt;: latest values (wildcards + and # work)\n\
/ack &lt;alert&gt;: acknowledge (rule/series, or a rule name for all of its alerts)\n\
/silence &lt;pattern&gt; &lt;duration&gt; [reason]: hold notifications, e.g. <code>/silence greenhouse/# 2h watering</code>\n\
/unsilence [pattern]: lift silences (all without a pattern)\n\
/help: this text";

/// Parses a message text. `Ok(None)`: not a command (ignored). `Err`: a usage hint.
pub fn parse_command(text: &str) -> Result<Option<Command>, String> {
    let text = text.trim();
    let Some(rest) = text.strip_prefix('/') else {
        return Ok(None);
    };
    let mut words = rest.split_whitespace();
    let head = words.next().unwrap_or_default();
    // `/ack@centinela_bot x` in groups.
    let name = head.split('@').next().unwrap_or_default().to_lowercase();
    let args: Vec<&str> = words.collect();
    let one = |usage: &str| -> Result<String, String> {
        match args.as_slice() {
            [a] => Ok((*a).to_string()),
            _ => Err(format!("usage: {usage}")),
        }
    };
    Ok(Some(match name.as_str() {
        "help" | "start" => Command::Help,
        "status" => Command::Status,
        "alerts" => Command::Alerts,
        "last" => Command::Last(one("/last <series>, e.g. /last greenhouse/+/temperature")?),
        "ack" => Command::Ack(one(
            "/ack <alert>, e.g. /ack greenhouse-hot/greenhouse/node1/temperature",
        )?),
        "silence" => {
            let [pattern, duration, reason @ ..] = args.as_slice() else {
                return Err("usage: /silence <pattern> <duration> [reason], e.g. /silence greenhouse/# 2h watering".into());
            };
            let duration: crate::config::Duration = duration.parse()?;
            if duration.is_zero() {
                return Err("the duration must be longer than zero".into());
            }
            Command::Silence {
                pattern: (*pattern).to_string(),
                duration,
                reason: reason.join(" "),
            }
        }
        "unsilence" => match args.as_slice() {
            [] => Command::Unsilence(None),
            [p] => Command::Unsilence(Some((*p).to_string())),
            _ => return Err("usage: /unsilence [pattern]".into()),
        },
        other => return Err(format!("unknown command /{other}: send /help")),
    }))
}

/// How long ago, in a few characters: `42s`, `5m`, `3h`, `2d`.
pub fn ago(ts: Timestamp, now: Timestamp) -> String {
    let s = (now - ts).max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn alert_line(a: &AlertView, now: Timestamp) -> String {
    let icon = match (a.state, a.severity) {
        (AlertState::Acknowledged, _) => "👍",
        (_, Severity::Critical) => "🔥",
        (_, Severity::Warning) => "⚠️",
        (_, Severity::Info) => "ℹ️",
    };
    let v = value(a.value, a.unit.as_deref());
    let v = if v.is_empty() {
        String::new()
    } else {
        format!(" {}", escape_html(&v))
    };
    format!(
        "{icon} <code>{}</code>{v} · {} {} ago",
        escape_html(&a.alert_id),
        a.state,
        ago(a.since, now)
    )
}

fn last_line(l: &LastValue, now: Timestamp) -> String {
    format!(
        "<code>{}</code> {} ({} ago)",
        escape_html(&l.series),
        escape_html(&value(Some(l.value), l.unit.as_deref())),
        ago(l.ts, now)
    )
}

/// The `/alerts` answer. Pure.
pub fn render_alerts(alerts: &[AlertView], now: Timestamp) -> Vec<String> {
    if alerts.is_empty() {
        return vec!["✅ No alert is firing.".into()];
    }
    let mut blocks = vec![format!("<b>{} alert(s) firing</b>", alerts.len())];
    blocks.extend(alerts.iter().map(|a| alert_line(a, now)));
    split_lines(&blocks)
}

/// The `/status` answer: firing alerts, latest values, and the outbox. Pure.
pub fn render_status(s: &StatusView, outbox: &[ChannelCounts], now: Timestamp) -> Vec<String> {
    let mut blocks = Vec::new();
    if s.firing.is_empty() {
        blocks.push("✅ <b>No alert is firing.</b>".to_string());
    } else {
        blocks.push(format!("<b>{} alert(s) firing</b>", s.firing.len()));
        blocks.extend(s.firing.iter().map(|a| alert_line(a, now)));
    }
    if !s.last.is_empty() {
        blocks.push("\n<b>Latest values</b>".into());
        blocks.extend(s.last.iter().map(|l| last_line(l, now)));
    }
    if !outbox.is_empty() {
        blocks.push("\n<b>Notifications</b> (waiting / sent / dead)".into());
        blocks.extend(outbox.iter().map(|c| {
            format!(
                "{}: {} / {} / {}",
                escape_html(&c.channel),
                c.pending,
                c.delivered,
                c.dead
            )
        }));
    }
    split_lines(&blocks)
}

/// The `/last` answer. Pure.
pub fn render_last(pattern: &str, values: &[LastValue], now: Timestamp) -> Vec<String> {
    if values.is_empty() {
        return vec![format!(
            "No series matches <code>{}</code>.",
            escape_html(pattern)
        )];
    }
    let blocks: Vec<String> = values.iter().map(|l| last_line(l, now)).collect();
    split_lines(&blocks)
}

fn split_lines(lines: &[String]) -> Vec<String> {
    // Lines joined by one newline, cut between lines under Telegram's limit.
    let mut out = Vec::new();
    let mut cur = String::new();
    for l in lines {
        if !cur.is_empty() && utf16_len(&cur) + 1 + utf16_len(l) > TELEGRAM_LIMIT {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push('\n');
        }
        cur.push_str(l);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The words sent to a chat that is not allowed: nothing about the system.
pub fn refusal(chat: i64) -> String {
    format!(
        "This chat is not allowed to use this bot. If it should be, add {chat} to notify.telegram.chat_ids \
         in the centinela configuration."
    )
}

/// The bot. Build with [`TelegramBot::new`] or [`TelegramBot::from_config`], start
/// with [`TelegramBot::spawn`].
pub struct TelegramBot {
    bot: teloxide::Bot,
    token: Secret,
    allowed: HashSet<i64>,
    backend: Arc<dyn BotBackend>,
    /// The outbox, to find the alert behind a button and show delivery counts.
    pool: Option<SqlitePool>,
    poll_timeout: Duration,
}

impl TelegramBot {
    pub fn from_config(
        cfg: &TelegramConfig,
        backend: Arc<dyn BotBackend>,
        pool: Option<SqlitePool>,
    ) -> Result<Self, TelegramError> {
        let token = Secret::from_env(&cfg.token_env).map_err(TelegramError::Token)?;
        Self::new(token, &cfg.api_url, cfg.chat_ids.clone(), backend, pool)
    }

    pub fn new(
        token: Secret,
        api_url: &str,
        chat_ids: Vec<i64>,
        backend: Arc<dyn BotBackend>,
        pool: Option<SqlitePool>,
    ) -> Result<Self, TelegramError> {
        Self::build(
            token,
            api_url,
            chat_ids,
            backend,
            pool,
            Duration::from_secs(25),
        )
    }

    fn build(
        token: Secret,
        api_url: &str,
        chat_ids: Vec<i64>,
        backend: Arc<dyn BotBackend>,
        pool: Option<SqlitePool>,
        poll_timeout: Duration,
    ) -> Result<Self, TelegramError> {
        let bot = make_bot(&token, api_url, poll_timeout)?;
        Ok(TelegramBot {
            bot,
            token,
            allowed: chat_ids.into_iter().collect(),
            backend,
            pool,
            poll_timeout,
        })
    }

    /// How long one getUpdates waits for news (25 s by default).
    pub fn with_poll_timeout(self, d: Duration) -> Result<Self, TelegramError> {
        let api_url = self.bot.api_url().to_string();
        Self::build(
            self.token,
            &api_url,
            self.allowed.into_iter().collect(),
            self.backend,
            self.pool,
            d,
        )
    }

    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Polls until `shutdown` becomes true (or its sender is dropped).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut offset: i32 = 0;
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        info!(chats = self.allowed.len(), "telegram bot listening");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let req = self
                .bot
                .get_updates()
                .offset(offset)
                .timeout(self.poll_timeout.as_secs().try_into().unwrap_or(u32::MAX))
                .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery]);
            let updates = tokio::select! {
                r = req => r,
                r = shutdown.changed() => { if r.is_err() { break } continue }
            };
            let updates = match updates {
                Ok(u) => {
                    backoff.reset();
                    u
                }
                Err(e) => {
                    let msg = redact(&e.to_string(), &self.token);
                    warn!(error = %msg, retry_in_s = backoff.current().as_secs(), "telegram getUpdates failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.failed()) => {}
                        r = shutdown.changed() => if r.is_err() { break },
                    }
                    continue;
                }
            };
            for u in updates {
                offset = offset.max(i32::try_from(u.id.0).unwrap_or(i32::MAX).saturating_add(1));
                match u.kind {
                    UpdateKind::Message(m) => self.on_message(&m).await,
                    UpdateKind::CallbackQuery(q) => self.on_callback(&q).await,
                    _ => debug!("update ignored"),
                }
            }
        }
        info!("telegram bot stopped");
    }

    async fn reply(&self, chat: i64, parts: Vec<String>) {
        for text in parts {
            if let Err(e) = self
                .bot
                .send_message(ChatId(chat), text)
                .parse_mode(ParseMode::Html)
                .await
            {
                warn!(chat, error = %redact(&e.to_string(), &self.token), "telegram reply failed");
            }
        }
    }

    fn who(user: Option<&teloxide::types::User>, chat: i64) -> String {
        match user {
            Some(u) => match &u.username {
                Some(name) => format!("telegram:@{name}"),
                None => format!("telegram:{}", u.id.0),
            },
            None => format!("telegram:chat {chat}"),
        }
    }

    async fn on_message(&self, m: &Message) {
        let chat = m.chat.id.0;
        let Some(text) = m.text() else { return };
        if !self.allowed.contains(&chat) {
            warn!(
                chat,
                user = %Self::who(m.from.as_ref(), chat),
                "telegram message from a chat not in notify.telegram.chat_ids refused"
            );
            self.reply(chat, vec![refusal(chat)]).await;
            return;
        }
        let by = Self::who(m.from.as_ref(), chat);
        let cmd = match parse_command(text) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(usage) => {
                self.reply(chat, vec![escape_html(&usage)]).await;
                return;
            }
        };
        info!(chat, by = %by, command = ?cmd, "telegram command");
        let now = now_ms();
        let answer = match cmd {
            Command::Help => vec![HELP.to_string()],
            Command::Status => {
                let status = self.backend.status().await;
                let counts = match &self.pool {
                    Some(p) => outbox::counts(p).await.unwrap_or_default(),
                    None => vec![],
                };
                // Ages are counted from when the data was read, not from before.
                render_status(&status, &counts, now_ms())
            }
            Command::Alerts => {
                let alerts = self.backend.alerts().await;
                render_alerts(&alerts, now_ms())
            }
            Command::Last(p) => {
                let values = self.backend.last(p.clone()).await;
                render_last(&p, &values, now_ms())
            }
            Command::Ack(alert) => self.control(Control::Ack { alert, by }).await,
            Command::Silence {
                pattern,
                duration,
                reason,
            } => {
                self.control(Control::Silence {
                    pattern,
                    until: now + duration.as_millis(),
                    reason,
                    by,
                })
                .await
            }
            Command::Unsilence(pattern) => self.control(Control::Unsilence { pattern, by }).await,
        };
        self.reply(chat, answer).await;
    }

    async fn control(&self, c: Control) -> Vec<String> {
        match self.backend.control(c).await {
            Ok(words) => vec![format!("✔ {}", escape_html(&words))],
            Err(words) => vec![format!("✖ {}", escape_html(&words))],
        }
    }

    async fn on_callback(&self, q: &CallbackQuery) {
        let chat = q.message.as_ref().map(|m| m.chat().id.0);
        let answer = |text: String| {
            let bot = self.bot.clone();
            let id = q.id.clone();
            async move {
                let _ = bot.answer_callback_query(id).text(text).await;
            }
        };
        let Some(chat) = chat.filter(|c| self.allowed.contains(c)) else {
            warn!(
                chat = ?chat,
                user = %Self::who(Some(&q.from), chat.unwrap_or_default()),
                "telegram button press from a chat not in notify.telegram.chat_ids refused"
            );
            answer("Not allowed.".into()).await;
            return;
        };
        let by = Self::who(Some(&q.from), chat);
        let data = q.data.as_deref().unwrap_or_default();
        let (kind, id) = if let Some(id) = data.strip_prefix(CB_ACK) {
            ("ack", id)
        } else if let Some(id) = data.strip_prefix(CB_SILENCE_1H) {
            ("silence", id)
        } else {
            answer("Unknown button.".into()).await;
            return;
        };
        let row = match &self.pool {
            Some(p) => outbox::get(p, id).await.ok().flatten(),
            None => None,
        };
        let Some(row) = row else {
            answer("This alert is no longer known.".into()).await;
            return;
        };
        let control = if kind == "ack" {
            Control::Ack {
                alert: row.event.alert_id(),
                by,
            }
        } else {
            Control::Silence {
                pattern: row.event.series.clone(),
                until: now_ms() + 3_600_000,
                reason: format!("silenced from Telegram ({})", row.event.alert_id()),
                by,
            }
        };
        info!(chat, control = ?control, "telegram button");
        let words = match self.backend.control(control).await {
            Ok(w) => {
                // Done: take the buttons off the alert so nobody presses them again.
                if let Some(m) = &q.message {
                    if let Err(e) = self
                        .bot
                        .edit_message_reply_markup(ChatId(chat), m.id())
                        .await
                    {
                        debug!(chat, error = %redact(&e.to_string(), &self.token), "could not remove the buttons");
                    }
                }
                format!("✔ {w}")
            }
            Err(w) => format!("✖ {w}"),
        };
        answer(words.clone()).await;
        self.reply(chat, vec![escape_html(&words)]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command("hello"), Ok(None));
        assert_eq!(parse_command("/help"), Ok(Some(Command::Help)));
        assert_eq!(
            parse_command("/status@centinela_bot"),
            Ok(Some(Command::Status))
        );
        assert_eq!(
            parse_command("/last a/+/t"),
            Ok(Some(Command::Last("a/+/t".into())))
        );
        assert_eq!(
            parse_command("/ack hot/a/b"),
            Ok(Some(Command::Ack("hot/a/b".into())))
        );
        assert_eq!(
            parse_command("/silence greenhouse/# 2h watering the plants"),
            Ok(Some(Command::Silence {
                pattern: "greenhouse/#".into(),
                duration: crate::config::Duration::from_secs(7200),
                reason: "watering the plants".into()
            }))
        );
        assert_eq!(
            parse_command("/unsilence"),
            Ok(Some(Command::Unsilence(None)))
        );
        assert_eq!(
            parse_command("/unsilence a/#"),
            Ok(Some(Command::Unsilence(Some("a/#".into()))))
        );
        assert!(parse_command("/ack")
            .unwrap_err()
            .starts_with("usage: /ack"));
        assert!(parse_command("/silence a/#")
            .unwrap_err()
            .starts_with("usage: /silence"));
        assert!(parse_command("/silence a/# soon")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_command("/frobnicate").unwrap_err().contains("/help"));
    }

    #[test]
    fn status_shows_alerts_values_and_outbox() {
        let now = 1_700_000_100_000;
        let s = StatusView {
            firing: vec![AlertView {
                alert_id: "hot/greenhouse/node1/temperature".into(),
                state: AlertState::Firing,
                severity: Severity::Critical,
                value: Some(31.2),
                unit: Some("°C".into()),
                since: now - 300_000,
                message: String::new(),
            }],
            last: vec![LastValue {
                series: "a<b".into(),
                value: 1.5,
                unit: None,
                ts: now - 12_000,
            }],
        };
        let counts = [ChannelCounts {
            channel: "email".into(),
            pending: 1,
            delivered: 5,
            dead: 0,
        }];
        let out = render_status(&s, &counts, now).join("\n");
        assert!(out.contains("<b>1 alert(s) firing</b>"), "{out}");
        assert!(
            out.contains(
                "🔥 <code>hot/greenhouse/node1/temperature</code> 31.2 °C · firing 5m ago"
            ),
            "{out}"
        );
        assert!(out.contains("<code>a&lt;b</code> 1.5 (12s ago)"), "{out}");
        assert!(out.contains("email: 1 / 5 / 0"), "{out}");
        assert_eq!(render_alerts(&[], now), vec!["✅ No alert is firing."]);
    }

    #[test]
    fn many_values_split_under_the_limit() {
        let last: Vec<LastValue> = (0..500)
            .map(|i| LastValue {
                series: format!("site/node{i}/temperature"),
                value: 20.0,
                unit: None,
                ts: 0,
            })
            .collect();
        let parts = render_last("#", &last, 0);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| utf16_len(p) <= TELEGRAM_LIMIT));
        assert_eq!(parts.iter().map(|p| p.lines().count()).sum::<usize>(), 500);
    }

    #[test]
    fn the_refusal_gives_nothing_away() {
        let r = refusal(-99);
        assert!(r.contains("not allowed") && r.contains("-99"));
    }
}
