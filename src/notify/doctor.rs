//! `centinela doctor`: checks every configured notification channel for real (SMTP
//! handshake and login, Telegram getMe and each chat, webhook reachable), optionally
//! sends a test message, and says what is wrong in words a person can act on.
//!
//! The Telegram checks call the Bot API with plain reqwest and read only the fields
//! they need, so a Bot API server that adds fields never makes the doctor itself fail.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use serde_json::Value;

use super::email::EmailSender;
use super::{redact, Secret};
use crate::config::{EmailConfig, NotifyConfig, SmtpTls, TelegramConfig, WebhookConfig};

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// `email`, `telegram`, `webhook`.
    pub channel: &'static str,
    /// What was checked: `smtp.example.org:587`, `chat 123456789`, a URL.
    pub target: String,
    pub ok: bool,
    /// What was found and, when something is wrong, what to do.
    pub message: String,
}

impl CheckResult {
    fn ok(channel: &'static str, target: impl Into<String>, message: impl Into<String>) -> Self {
        CheckResult {
            channel,
            target: target.into(),
            ok: true,
            message: message.into(),
        }
    }

    fn fail(channel: &'static str, target: impl Into<String>, message: impl Into<String>) -> Self {
        CheckResult {
            channel,
            target: target.into(),
            ok: false,
            message: message.into(),
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(
            f,
            "{mark} {:<8} {}: {}",
            self.channel, self.target, self.message
        )
    }
}

/// Checks every configured channel; with `send_test`, also sends a test message
/// through each. No channel configured gives one finding that says so.
pub async fn doctor(cfg: &NotifyConfig, send_test: bool) -> Vec<CheckResult> {
    let mut out = Vec::new();
    if let Some(e) = &cfg.email {
        out.extend(check_email(e, send_test).await);
    }
    if let Some(t) = &cfg.telegram {
        out.extend(check_telegram(t, send_test).await);
    }
    if let Some(w) = &cfg.webhook {
        out.push(check_webhook(w, send_test).await);
    }
    if out.is_empty() && cfg.mqtt.is_none() {
        out.push(CheckResult::fail(
            "notify",
            "[notify]",
            "no channel is configured: alerts are only recorded; add [notify.email] or [notify.telegram]",
        ));
    }
    out
}

fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

async fn check_email(cfg: &EmailConfig, send_test: bool) -> Vec<CheckResult> {
    const CH: &str = "email";
    let target = cfg.smtp.clone();
    let password = match &cfg.username {
        Some(_) => match Secret::from_env(&cfg.password_env) {
            Ok(p) => Some(p),
            Err(e) => {
                return vec![CheckResult::fail(
                    CH,
                    target,
                    format!("{e}: put the SMTP password for {:?} there (e.g. in the service's environment file)", cfg.username.as_deref().unwrap_or_default()),
                )]
            }
        },
        None => None,
    };
    let sender = match EmailSender::with_password(cfg, password) {
        Ok(s) => s,
        Err(e) => return vec![CheckResult::fail(CH, target, e.to_string())],
    };
    let server = sender.server().to_string();
    let mode = match cfg.tls {
        SmtpTls::Starttls => "STARTTLS",
        SmtpTls::Tls => "TLS",
        SmtpTls::None => "no encryption",
    };
    let mut out = Vec::new();
    match sender.check().await {
        Ok(()) => {
            let login = match &cfg.username {
                Some(u) => format!("logged in as {u}"),
                None => "no login configured".to_string(),
            };
            out.push(CheckResult::ok(
                CH,
                &server,
                format!("connected ({mode}), {login}"),
            ));
        }
        Err(e) => {
            out.push(CheckResult::fail(
                CH,
                &server,
                explain_smtp(&e, cfg, &server),
            ));
            return out;
        }
    }
    if send_test {
        match sender.send_test().await {
            Ok(()) => out.push(CheckResult::ok(
                CH,
                &server,
                format!("test mail sent to {}", cfg.to.join(", ")),
            )),
            Err(e) => out.push(CheckResult::fail(
                CH,
                &server,
                format!("the test mail was not accepted: {e}"),
            )),
        }
    }
    out
}

fn explain_smtp(e: &lettre::transport::smtp::Error, cfg: &EmailConfig, server: &str) -> String {
    let code = e.status().map(|c| c.to_string());
    if matches!(code.as_deref(), Some("530" | "534" | "535" | "538")) {
        return format!(
            "the server refused the login for {:?} ({e}): check notify.email.username and the password in ${}",
            cfg.username.as_deref().unwrap_or_default(),
            cfg.password_env
        );
    }
    if e.is_timeout() {
        return format!("no answer from {server} within {}: a firewall may drop the connection, or the port is wrong", cfg.timeout);
    }
    if e.is_tls() {
        return format!(
            "TLS with {server} failed ({}): tls = \"starttls\" goes with port 587, tls = \"tls\" with port 465; \
             the certificate must name the host in notify.email.smtp",
            e.source().map_or_else(|| e.to_string(), |s| s.to_string())
        );
    }
    match io_kind(e) {
        Some(std::io::ErrorKind::ConnectionRefused) => {
            format!("cannot connect to {server}: connection refused; is the mail server running, and are host and port in notify.email.smtp right?")
        }
        Some(kind) => format!(
            "cannot talk to {server} ({kind}: {e}); check notify.email.smtp and the network"
        ),
        None if e.is_client() && cfg.username.is_some() => {
            format!("{e}: the server offers no login this client can use; check notify.email.tls (most servers allow AUTH only after STARTTLS)")
        }
        None => format!("{server}: {e}"),
    }
}

/// What the Bot API answered: `ok` with `result`, or an error code and description.
enum Answer {
    Ok(Value),
    Err(u16, String),
}

async fn call(
    client: &reqwest::Client,
    base: &str,
    token: &Secret,
    method: &str,
    body: Value,
) -> Result<Answer, String> {
    let url = format!(
        "{}/bot{}/{method}",
        base.trim_end_matches('/'),
        token.expose()
    );
    let resp = client
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| redact(&e.without_url().to_string(), token))?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.map_err(|e| {
        format!(
            "the answer (HTTP {status}) is not Bot API JSON: {}",
            e.without_url()
        )
    })?;
    if v["ok"].as_bool() == Some(true) {
        Ok(Answer::Ok(v["result"].clone()))
    } else {
        let code = v["error_code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(status);
        Ok(Answer::Err(
            code,
            v["description"]
                .as_str()
                .unwrap_or("no description")
                .to_string(),
        ))
    }
}

async fn check_telegram(cfg: &TelegramConfig, send_test: bool) -> Vec<CheckResult> {
    const CH: &str = "telegram";
    let api = cfg.api_url.clone();
    let token = match Secret::from_env(&cfg.token_env) {
        Ok(t) => t,
        Err(e) => {
            return vec![CheckResult::fail(
                CH,
                api,
                format!("{e}: put the bot token from @BotFather there"),
            )]
        }
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return vec![CheckResult::fail(
                CH,
                api,
                format!("cannot build the HTTP client: {e}"),
            )]
        }
    };
    let mut out = Vec::new();
    let bot_name = match call(&client, &api, &token, "getMe", Value::Null).await {
        Err(e) => {
            out.push(CheckResult::fail(
                CH,
                &api,
                format!(
                    "cannot reach the Bot API ({e}): check the network or notify.telegram.api_url"
                ),
            ));
            return out;
        }
        Ok(Answer::Err(401 | 404, _)) => {
            out.push(CheckResult::fail(
                CH,
                &api,
                format!("Telegram refuses the token in ${} (401 Unauthorized): copy it again from @BotFather", cfg.token_env),
            ));
            return out;
        }
        Ok(Answer::Err(code, d)) => {
            out.push(CheckResult::fail(
                CH,
                &api,
                format!("getMe failed: {code} {d}"),
            ));
            return out;
        }
        Ok(Answer::Ok(me)) => {
            let name = me["username"].as_str().unwrap_or("?").to_string();
            out.push(CheckResult::ok(
                CH,
                &api,
                format!("the token is valid: this is bot @{name}"),
            ));
            name
        }
    };
    for chat in &cfg.chat_ids {
        let target = format!("chat {chat}");
        match call(&client, &api, &token, "getChat", serde_json::json!({ "chat_id": chat })).await {
            Err(e) => out.push(CheckResult::fail(CH, &target, format!("cannot reach the Bot API: {e}"))),
            Ok(Answer::Ok(c)) => {
                let name = c["title"].as_str().or(c["username"].as_str()).or(c["first_name"].as_str()).unwrap_or("?");
                let kind = c["type"].as_str().unwrap_or("chat");
                let found = format!("found ({kind} \"{name}\")");
                if send_test {
                    let text = format!("✅ centinela test message: alerts will arrive in this chat (bot @{bot_name})");
                    match call(&client, &api, &token, "sendMessage", serde_json::json!({ "chat_id": chat, "text": text })).await {
                        Ok(Answer::Ok(_)) => out.push(CheckResult::ok(CH, &target, format!("{found}; test message sent"))),
                        Ok(Answer::Err(code, d)) => out.push(CheckResult::fail(CH, &target, format!("{found}, but the test message failed: {code} {d}"))),
                        Err(e) => out.push(CheckResult::fail(CH, &target, format!("{found}, but the test message failed: {e}"))),
                    }
                } else {
                    out.push(CheckResult::ok(CH, &target, found));
                }
            }
            Ok(Answer::Err(403, d)) => out.push(CheckResult::fail(
                CH,
                &target,
                format!("{d}: unblock @{bot_name} in that chat (or add it back to the group), or remove {chat} from notify.telegram.chat_ids"),
            )),
            Ok(Answer::Err(400, d)) if d.contains("chat not found") => out.push(CheckResult::fail(
                CH,
                &target,
                format!(
                    "chat not found: @{bot_name} has never been in chat {chat}; open Telegram, send /start to @{bot_name} \
                     (or add it to the group), then check the id"
                ),
            )),
            Ok(Answer::Err(code, d)) => out.push(CheckResult::fail(CH, &target, format!("getChat failed: {code} {d}"))),
        }
    }
    out
}

async fn check_webhook(cfg: &WebhookConfig, send_test: bool) -> CheckResult {
    const CH: &str = "webhook";
    let url = cfg.url.clone();
    let client = match reqwest::Client::builder()
        .timeout(cfg.timeout.std())
        .build()
    {
        Ok(c) => c,
        Err(e) => return CheckResult::fail(CH, url, format!("cannot build the HTTP client: {e}")),
    };
    if send_test {
        let event = crate::model::AlertEvent {
            rule: "centinela-test".into(),
            series: "doctor/test".into(),
            state: crate::model::AlertState::Firing,
            severity: crate::model::Severity::Info,
            value: None,
            unit: None,
            ts: crate::model::now_ms(),
            message: "centinela doctor --send-test".into(),
            notify: vec!["webhook".into()],
        };
        return match client.post(&url).json(&event).send().await {
            Ok(r) if r.status().is_success() => CheckResult::ok(CH, url, format!("test event accepted (HTTP {})", r.status().as_u16())),
            Ok(r) => CheckResult::fail(
                CH,
                url,
                format!("the receiver answered HTTP {} to a test event: check the URL path and what the receiver expects", r.status().as_u16()),
            ),
            Err(e) => CheckResult::fail(CH, url, unreachable(&e)),
        };
    }
    match client.head(&url).send().await {
        Ok(r) => CheckResult::ok(
            CH,
            url,
            format!(
                "reachable (HTTP {} to HEAD; events are POSTed)",
                r.status().as_u16()
            ),
        ),
        Err(e) => CheckResult::fail(CH, url, unreachable(&e)),
    }
}

fn unreachable(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time: is the receiver up, and is the address right?".into()
    } else if matches!(io_kind(e), Some(std::io::ErrorKind::ConnectionRefused)) || e.is_connect() {
        "cannot connect: is the receiver running, and are host and port in notify.webhook.url right?".into()
    } else {
        format!("cannot reach it: {e}")
    }
}
