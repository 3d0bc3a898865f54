//! Telegram channel: sends notifications to every configured chat through the Bot API
//! (teloxide, `api_url` overridable for a self-hosted server or a test stand-in).
//!
//! Messages use HTML parse mode with escaped text ([`super::render`]); a digest longer
//! than 4096 characters is split between alerts. Each chat is a separate target, so a
//! retry never repeats a message to a chat that already has it. A 429 is retried after
//! exactly the `retry_after` Telegram asked for; a chat that blocked or removed the bot
//! (403, chat not found) ends as dead with a log line saying what to do. Between the
//! parts of a split digest a short `retry_after` is waited out in place, so a rate
//! limit in the middle does not repeat the parts already sent. A single
//! firing alert carries inline buttons (Ack, Silence 1h) answered by [`super::bot`].

use teloxide::payloads::SendMessageSetters;
use teloxide::requests::Requester;
use teloxide::types::{ChatId, InlineKeyboardButton, InlineKeyboardMarkup, ParseMode};
use teloxide::{ApiError, Bot, RequestError};
use tracing::debug;

use super::outbox::OutboxRow;
use super::{redact, render, BoxFuture, Secret, SendError, Sender};
use crate::config::TelegramConfig;
use crate::model::{AlertEvent, AlertState};

/// Longest `retry_after` waited out inside one send (between parts of a digest).
const MAX_INLINE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Callback data prefixes of the inline buttons: `<prefix><notification id>`.
pub const CB_ACK: &str = "ack:";
pub const CB_SILENCE_1H: &str = "s1h:";

#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    #[error("notify.telegram.token_env: {0}")]
    Token(String),
    #[error("notify.telegram.api_url: {0:?} is not an address")]
    ApiUrl(String),
    #[error("notify.telegram: cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Builds a teloxide `Bot` for `api_url` with the project's HTTP client settings.
/// `poll_timeout` is added to the request timeout so long polls are not cut short.
pub fn make_bot(
    token: &Secret,
    api_url: &str,
    poll_timeout: std::time::Duration,
) -> Result<Bot, TelegramError> {
    let url =
        reqwest::Url::parse(api_url).map_err(|_| TelegramError::ApiUrl(api_url.to_string()))?;
    let client = teloxide::net::default_reqwest_settings()
        .timeout(std::time::Duration::from_secs(17) + poll_timeout)
        .build()?;
    Ok(Bot::with_client(token.expose(), client).set_api_url(url))
}

/// The Telegram channel.
pub struct TelegramSender {
    bot: Bot,
    token: Secret,
    chat_ids: Vec<i64>,
}

impl TelegramSender {
    /// Reads the token from `token_env`.
    pub fn from_config(cfg: &TelegramConfig) -> Result<Self, TelegramError> {
        let token = Secret::from_env(&cfg.token_env).map_err(TelegramError::Token)?;
        Self::new(token, &cfg.api_url, cfg.chat_ids.clone())
    }

    pub fn new(token: Secret, api_url: &str, chat_ids: Vec<i64>) -> Result<Self, TelegramError> {
        let bot = make_bot(&token, api_url, std::time::Duration::ZERO)?;
        Ok(TelegramSender {
            bot,
            token,
            chat_ids,
        })
    }

    async fn send_one(
        &self,
        chat: i64,
        text: String,
        buttons: Option<InlineKeyboardMarkup>,
    ) -> Result<(), SendError> {
        let mut req = self
            .bot
            .send_message(ChatId(chat), text)
            .parse_mode(ParseMode::Html);
        if let Some(b) = buttons {
            req = req.reply_markup(b);
        }
        req.await
            .map(|_| ())
            .map_err(|e| classify(e, chat, &self.token))
    }
}

/// The inline buttons under a single firing alert. Pure.
pub fn buttons(row: &OutboxRow) -> Option<InlineKeyboardMarkup> {
    if !matches!(row.event.state, AlertState::Firing | AlertState::Repeat) {
        return None;
    }
    Some(InlineKeyboardMarkup::new([[
        InlineKeyboardButton::callback("✔ Ack", format!("{CB_ACK}{}", row.id)),
        InlineKeyboardButton::callback("🔕 Silence 1h", format!("{CB_SILENCE_1H}{}", row.id)),
    ]]))
}

/// Maps a Bot API error to what the worker does, in words a person can act on.
pub fn classify(e: RequestError, chat: i64, token: &Secret) -> SendError {
    match e {
        RequestError::RetryAfter(s) => SendError::Retry {
            message: format!("Telegram rate limit (429) for chat {chat}: retry after {} s", s.seconds()),
            after: Some(s.duration()),
        },
        RequestError::Api(ApiError::InvalidToken) => {
            SendError::retry("Telegram refused the bot token (401): check the token variable (notify.telegram.token_env)")
        }
        RequestError::Api(
            api @ (ApiError::BotBlocked
            | ApiError::UserDeactivated
            | ApiError::BotKicked
            | ApiError::BotKickedFromSupergroup
            | ApiError::BotKickedFromChannel
            | ApiError::CantInitiateConversation
            | ApiError::ChatNotFound),
        ) => SendError::Refused(format!(
            "chat {chat}: {api}: the bot cannot write there; unblock or re-add the bot (send it /start), \
             or remove {chat} from notify.telegram.chat_ids"
        )),
        RequestError::Api(api) => SendError::Refused(format!("chat {chat}: Telegram refused the message: {api}")),
        RequestError::MigrateToChatId(new) => SendError::Refused(format!(
            "chat {chat} became a supergroup: replace it by {} in notify.telegram.chat_ids",
            new.0
        )),
        RequestError::Network(e) => SendError::retry(redact(&format!("Telegram unreachable: {e}"), token)),
        other => SendError::retry(redact(&format!("Telegram: {other}"), token)),
    }
}

impl Sender for TelegramSender {
    fn channel(&self) -> &str {
        "telegram"
    }

    fn targets(&self) -> Vec<String> {
        self.chat_ids.iter().map(i64::to_string).collect()
    }

    fn digests(&self) -> bool {
        true
    }

    fn send<'a>(
        &'a self,
        target: &'a str,
        rows: &'a [OutboxRow],
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let chat: i64 = target
                .parse()
                .map_err(|_| SendError::Refused(format!("{target:?} is not a chat id")))?;
            let events: Vec<&AlertEvent> = rows.iter().map(|r| &r.event).collect();
            let messages = render::telegram_messages(&events);
            let markup = match rows {
                [one] => buttons(one),
                _ => None,
            };
            for (i, text) in messages.into_iter().enumerate() {
                loop {
                    match self.send_one(chat, text.clone(), markup.clone()).await {
                        // Later parts of a split digest wait out a short rate limit here:
                        // giving up would send the first parts again on the retry.
                        Err(SendError::Retry {
                            after: Some(d),
                            message,
                        }) if i > 0 && d <= MAX_INLINE_WAIT => {
                            debug!(chat, wait_s = d.as_secs(), error = %message, "rate limited between parts of a digest");
                            tokio::time::sleep(d).await;
                        }
                        r => {
                            r?;
                            break;
                        }
                    }
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;
    use crate::notify::outbox::Status;
    use teloxide::types::Seconds;

    #[test]
    fn api_errors_map_to_retry_or_dead_with_advice() {
        let t = Secret::new("1:tok");
        assert_eq!(
            classify(RequestError::RetryAfter(Seconds::from_seconds(3)), 5, &t),
            SendError::Retry {
                message: "Telegram rate limit (429) for chat 5: retry after 3 s".into(),
                after: Some(std::time::Duration::from_secs(3))
            }
        );
        let SendError::Refused(m) = classify(RequestError::Api(ApiError::BotBlocked), 5, &t) else {
            panic!()
        };
        assert!(
            m.starts_with("chat 5: ") && m.contains("remove 5 from notify.telegram.chat_ids"),
            "{m}"
        );
        let SendError::Refused(m) = classify(RequestError::Api(ApiError::ChatNotFound), 5, &t)
        else {
            panic!()
        };
        assert!(m.contains("send it /start"), "{m}");
        assert!(matches!(
            classify(RequestError::Api(ApiError::InvalidToken), 5, &t),
            SendError::Retry { after: None, .. }
        ));
        let SendError::Refused(m) =
            classify(RequestError::MigrateToChatId(ChatId(-100_123)), -5, &t)
        else {
            panic!()
        };
        assert!(m.contains("replace it by -100123"), "{m}");
        assert!(matches!(
            classify(RequestError::Api(ApiError::MessageIsTooLong), 5, &t),
            SendError::Refused(_)
        ));
    }

    #[test]
    fn only_firing_alerts_get_buttons_and_their_data_fits() {
        let mut row = OutboxRow {
            id: "0123456789abcdef0123456789abcdef".into(),
            channel: "telegram".into(),
            event: AlertEvent {
                rule: "r".into(),
                series: "s".into(),
                state: AlertState::Firing,
                severity: Severity::Critical,
                value: None,
                unit: None,
                ts: 0,
                message: String::new(),
                notify: vec![],
            },
            status: Status::Pending,
            created_at: 0,
            attempts: 0,
            next_at: 0,
            done: vec![],
            refused: vec![],
            last_error: None,
            updated_at: 0,
        };
        let v = serde_json::to_value(buttons(&row).unwrap()).unwrap();
        let data: Vec<&str> = v["inline_keyboard"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["callback_data"].as_str().unwrap())
            .collect();
        assert_eq!(
            data,
            vec![
                "ack:0123456789abcdef0123456789abcdef",
                "s1h:0123456789abcdef0123456789abcdef"
            ]
        );
        assert!(data.iter().all(|d| d.len() <= 64));
        row.event.state = AlertState::Resolved;
        assert!(buttons(&row).is_none());
    }
}
