//! `centinela doctor`: checks every configured notification channel for real (SMTP
//! handshake and login, Telegram getMe and each chat, webhook reachable), optionally
//! sends a test message, and says what is wrong in words a person can act on.
//!
//! The Telegram checks call the Bot API with plain reqwest and read only the fields
//! they need, so a Bot API server that adds fields never makes the doctor itself fail.

use std::error::Error as _;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::email::EmailSender;
use super::redact::redact_urls;
use super::smtp::{Step, StepError};
use super::webhook::WebhookSender;
use super::{redact, Secret};
use crate::config::{EmailConfig, NotifyConfig, SmtpTls, TelegramConfig, WebhookConfig};

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Fail,
    /// The doctor could not find out without doing what it must not (sending an alert)
    /// or what it cannot (reach the service's own MQTT connection).
    NotChecked,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// `email`, `telegram`, `webhook`, `mqtt`.
    pub channel: &'static str,
    /// What was checked: `smtp.example.org:587`, `chat 123456789`, a URL (redacted).
    pub target: String,
    /// False only when something is wrong ([`Verdict::Fail`]).
    pub ok: bool,
    pub verdict: Verdict,
    /// What was found and, when something is wrong, what to do.
    pub message: String,
}

impl CheckResult {
    fn new(
        channel: &'static str,
        verdict: Verdict,
        target: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        // Targets and messages may quote an address that carries a secret.
        CheckResult {
            channel,
            target: redact_urls(&target.into()),
            ok: verdict != Verdict::Fail,
            verdict,
            message: redact_urls(&message.into()),
        }
    }

    fn ok(channel: &'static str, target: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(channel, Verdict::Ok, target, message)
    }

    fn fail(channel: &'static str, target: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(channel, Verdict::Fail, target, message)
    }

    fn not_checked(
        channel: &'static str,
        target: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(channel, Verdict::NotChecked, target, message)
    }

    /// The first column `doctor` prints: `ok`, `FAIL` or `----` (not checked).
    pub fn mark(&self) -> &'static str {
        match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Fail => "FAIL",
            Verdict::NotChecked => "----",
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:<8} {}: {}",
            self.mark(),
            self.channel,
            self.target,
            self.message
        )
    }
}

/// The whole doctor's deadline: past it, the check in progress is reported with the
/// step it was waiting for, and the rest as not checked.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Findings so far and the step in progress, kept outside the checks so that an
/// overall deadline loses neither.
#[derive(Default)]
struct Progress {
    findings: Mutex<Vec<CheckResult>>,
    /// Channel, target and step of what is being waited for.
    current: Mutex<Option<(&'static str, String, String)>>,
}

impl Progress {
    fn push(&self, r: CheckResult) {
        if let Ok(mut f) = self.findings.lock() {
            f.push(r);
        }
    }

    fn at(&self, channel: &'static str, target: &str, step: impl Into<String>) {
        if let Ok(mut c) = self.current.lock() {
            *c = Some((channel, target.to_string(), step.into()));
        }
    }
}

/// Checks every configured channel; with `send_test`, also sends a test message
/// through each. No channel configured gives one finding that says so. Returns
/// within [`DEADLINE`].
pub async fn doctor(cfg: &NotifyConfig, send_test: bool) -> Vec<CheckResult> {
    doctor_within(cfg, send_test, DEADLINE).await
}

/// [`doctor`] with its overall deadline given.
pub async fn doctor_within(
    cfg: &NotifyConfig,
    send_test: bool,
    deadline: Duration,
) -> Vec<CheckResult> {
    let progress = Progress::default();
    let mut todo: Vec<&'static str> = cfg.channels();
    let all = async {
        if let Some(e) = &cfg.email {
            check_email(e, send_test, &progress).await;
            todo.retain(|c| *c != "email");
        }
        if let Some(t) = &cfg.telegram {
            check_telegram(t, send_test, &progress).await;
            todo.retain(|c| *c != "telegram");
        }
        if let Some(w) = &cfg.webhook {
            check_webhook(w, send_test, &progress).await;
            todo.retain(|c| *c != "webhook");
        }
        if let Some(m) = &cfg.mqtt {
            progress.push(CheckResult::not_checked(
                "mqtt",
                &m.topic,
                "not checked: events are published through the service's own MQTT connection \
                 while it runs (see `centinela tui` or mosquitto_sub)",
            ));
            todo.retain(|c| *c != "mqtt");
        }
    };
    let timed_out = tokio::time::timeout(deadline, all).await.is_err();
    let mut out = progress.findings.into_inner().unwrap_or_default();
    if timed_out {
        let current = progress.current.into_inner().ok().flatten();
        let hung = current.as_ref().map(|c| c.0);
        if let Some((channel, target, step)) = current {
            out.push(CheckResult::fail(
                channel,
                target,
                format!(
                    "the doctor stopped after {}: no answer to {step}",
                    crate::config::Duration(deadline)
                ),
            ));
        }
        for channel in todo.into_iter().filter(|c| Some(*c) != hung) {
            out.push(CheckResult::not_checked(
                channel,
                format!("[notify.{channel}]"),
                format!(
                    "not checked: the doctor's deadline ({}) passed before it got here",
                    crate::config::Duration(deadline)
                ),
            ));
        }
    }
    if out.is_empty() {
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

async fn check_email(cfg: &EmailConfig, send_test: bool, p: &Progress) {
    const CH: &str = "email";
    let target = cfg.smtp.clone();
    p.at(CH, &target, "reading the configuration");
    let password = match &cfg.username {
        Some(_) => match Secret::from_env(&cfg.password_env) {
            Ok(p) => Some(p),
            Err(e) => {
                return p.push(CheckResult::fail(
                    CH,
                    target,
                    format!("{e}: put the SMTP password for {:?} there (e.g. in the service's environment file)", cfg.username.as_deref().unwrap_or_default()),
                ))
            }
        },
        None => None,
    };
    let sender = match EmailSender::with_password(cfg, password) {
        Ok(s) => s,
        Err(e) => return p.push(CheckResult::fail(CH, target, e.to_string())),
    };
    let server = sender.server().to_string();
    let mode = match cfg.tls {
        SmtpTls::Starttls => "STARTTLS",
        SmtpTls::Tls => "TLS",
        SmtpTls::None => "no encryption",
    };
    let on_step = |s: Step| p.at(CH, &server, format!("SMTP {s} from {server}"));
    match sender.check(&on_step).await {
        Ok(()) => {
            let login = match &cfg.username {
                Some(u) => format!("logged in as {u}"),
                None => "no login configured".to_string(),
            };
            p.push(CheckResult::ok(
                CH,
                &server,
                format!("connected ({mode}), {login}"),
            ));
        }
        Err(e) => {
            return p.push(CheckResult::fail(
                CH,
                &server,
                explain_smtp(&e, cfg, &server),
            ));
        }
    }
    if send_test {
        match sender.send_test(&on_step).await {
            Ok(()) => p.push(CheckResult::ok(
                CH,
                &server,
                format!("test mail sent to {}", cfg.to.join(", ")),
            )),
            Err(e) => p.push(CheckResult::fail(
                CH,
                &server,
                format!("the test mail was not accepted: {e}"),
            )),
        }
    }
}

fn explain_smtp(e: &StepError, cfg: &EmailConfig, server: &str) -> String {
    let code = e.smtp().and_then(|s| s.status()).map(|c| c.to_string());
    if matches!(code.as_deref(), Some("530" | "534" | "535" | "538")) {
        return format!(
            "the server refused the login for {:?} ({e}): check notify.email.username and the password in ${}",
            cfg.username.as_deref().unwrap_or_default(),
            cfg.password_env
        );
    }
    if e.is_timeout() {
        return match e.step {
            Step::Connect => format!(
                "no answer from {server} within {} (connect): a firewall may drop the connection, or host or port is wrong",
                cfg.timeout
            ),
            Step::Greeting => format!(
                "{e}: {server} takes connections but does not speak SMTP; is it the mail server's port (587, 465 or 25)? \
                 A port for TLS from the first byte (465) needs tls = \"tls\""
            ),
            Step::TlsConnect => format!(
                "no TLS handshake or greeting from {server} within {}: tls = \"tls\" goes with port 465, \
                 tls = \"starttls\" with port 587",
                cfg.timeout
            ),
            _ => format!("{server} stopped answering: {e}"),
        };
    }
    if e.smtp().is_some_and(lettre::transport::smtp::Error::is_tls) {
        return format!(
            "TLS with {server} failed ({}): tls = \"starttls\" goes with port 587, tls = \"tls\" with port 465; \
             the certificate must name the host in notify.email.smtp",
            e.source().and_then(|s| s.source()).map_or_else(|| e.to_string(), |s| s.to_string())
        );
    }
    match io_kind(e) {
        Some(std::io::ErrorKind::ConnectionRefused) => {
            format!("cannot connect to {server}: connection refused; is the mail server running, and are host and port in notify.email.smtp right?")
        }
        Some(kind) => format!(
            "cannot talk to {server} ({kind}: {e}); check notify.email.smtp and the network"
        ),
        None if e
            .smtp()
            .is_some_and(lettre::transport::smtp::Error::is_client)
            && cfg.username.is_some() =>
        {
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

async fn check_telegram(cfg: &TelegramConfig, send_test: bool, p: &Progress) {
    const CH: &str = "telegram";
    let api = cfg.api_url.clone();
    let token = match Secret::from_env(&cfg.token_env) {
        Ok(t) => t,
        Err(e) => {
            return p.push(CheckResult::fail(
                CH,
                api,
                format!("{e}: put the bot token from @BotFather there"),
            ))
        }
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return p.push(CheckResult::fail(
                CH,
                api,
                format!("cannot build the HTTP client: {e}"),
            ))
        }
    };
    p.at(CH, &api, "getMe from the Bot API");
    let bot_name = match call(&client, &api, &token, "getMe", Value::Null).await {
        Err(e) => {
            p.push(CheckResult::fail(
                CH,
                &api,
                format!(
                    "cannot reach the Bot API ({e}): check the network or notify.telegram.api_url"
                ),
            ));
            return;
        }
        Ok(Answer::Err(401 | 404, _)) => {
            p.push(CheckResult::fail(
                CH,
                &api,
                format!("Telegram refuses the token in ${} (401 Unauthorized): copy it again from @BotFather", cfg.token_env),
            ));
            return;
        }
        Ok(Answer::Err(code, d)) => {
            p.push(CheckResult::fail(
                CH,
                &api,
                format!("getMe failed: {code} {d}"),
            ));
            return;
        }
        Ok(Answer::Ok(me)) => {
            let name = me["username"].as_str().unwrap_or("?").to_string();
            p.push(CheckResult::ok(
                CH,
                &api,
                format!("the token is valid: this is bot @{name}"),
            ));
            name
        }
    };
    for chat in &cfg.chat_ids {
        let target = format!("chat {chat}");
        p.at(CH, &target, format!("getChat {chat} from the Bot API"));
        match call(&client, &api, &token, "getChat", serde_json::json!({ "chat_id": chat })).await {
            Err(e) => p.push(CheckResult::fail(CH, &target, format!("cannot reach the Bot API: {e}"))),
            Ok(Answer::Ok(c)) => {
                let name = c["title"].as_str().or(c["username"].as_str()).or(c["first_name"].as_str()).unwrap_or("?");
                let kind = c["type"].as_str().unwrap_or("chat");
                let found = format!("found ({kind} \"{name}\")");
                if send_test {
                    p.at(CH, &target, format!("sendMessage to chat {chat}"));
                    let text = format!("✅ centinela test message: alerts will arrive in this chat (bot @{bot_name})");
                    match call(&client, &api, &token, "sendMessage", serde_json::json!({ "chat_id": chat, "text": text })).await {
                        Ok(Answer::Ok(_)) => p.push(CheckResult::ok(CH, &target, format!("{found}; test message sent"))),
                        Ok(Answer::Err(code, d)) => p.push(CheckResult::fail(CH, &target, format!("{found}, but the test message failed: {code} {d}"))),
                        Err(e) => p.push(CheckResult::fail(CH, &target, format!("{found}, but the test message failed: {e}"))),
                    }
                } else {
                    p.push(CheckResult::ok(CH, &target, found));
                }
            }
            Ok(Answer::Err(403, d)) => p.push(CheckResult::fail(
                CH,
                &target,
                format!("{d}: unblock @{bot_name} in that chat (or add it back to the group), or remove {chat} from notify.telegram.chat_ids"),
            )),
            Ok(Answer::Err(400, d)) if d.contains("chat not found") => p.push(CheckResult::fail(
                CH,
                &target,
                format!(
                    "chat not found: @{bot_name} has never been in chat {chat}; open Telegram, send /start to @{bot_name} \
                     (or add it to the group), then check the id"
                ),
            )),
            Ok(Answer::Err(code, d)) => p.push(CheckResult::fail(CH, &target, format!("getChat failed: {code} {d}"))),
        }
    }
}

async fn check_webhook(cfg: &WebhookConfig, send_test: bool, p: &Progress) {
    const CH: &str = "webhook";
    let shown = match (&cfg.url, &cfg.url_env) {
        (_, Some(var)) => format!("${var}"),
        (Some(u), None) => u.clone(),
        (None, None) => "[notify.webhook]".into(),
    };
    let hook = match WebhookSender::from_config(cfg) {
        Ok(h) => h,
        Err(e) => return p.push(CheckResult::fail(CH, shown, e.to_string())),
    };
    let url = hook.url().to_string();
    let tls = if url.starts_with("https://") {
        ", TLS ok"
    } else {
        ""
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
        p.at(CH, &url, format!("POST of a test event to {url}"));
        let r = match hook.request(reqwest::Method::POST).json(&event).send().await {
            Ok(r) if r.status().is_success() => CheckResult::ok(CH, &url, format!("test event accepted (HTTP {})", r.status().as_u16())),
            Ok(r) => CheckResult::fail(
                CH,
                &url,
                format!("the receiver answered HTTP {} to a test event: check the URL path and what the receiver expects", r.status().as_u16()),
            ),
            Err(e) => CheckResult::fail(CH, &url, unreachable(&e, cfg)),
        };
        return p.push(r);
    }
    // Without sending an event: reachable, TLS, and an answer that is not a server error
    // to HEAD or, failing that, OPTIONS.
    p.at(CH, &url, format!("HEAD {url}"));
    let head = match hook.request(reqwest::Method::HEAD).send().await {
        Ok(r) => r.status().as_u16(),
        Err(e) => return p.push(CheckResult::fail(CH, &url, unreachable(&e, cfg))),
    };
    if head < 500 {
        return p.push(CheckResult::ok(
            CH,
            &url,
            format!("reachable{tls} (HTTP {head} to HEAD; events are POSTed, and whether the receiver takes them is known only with --send-test)"),
        ));
    }
    p.at(CH, &url, format!("OPTIONS {url}"));
    let options = match hook.request(reqwest::Method::OPTIONS).send().await {
        Ok(r) => r.status().as_u16(),
        Err(e) => return p.push(CheckResult::fail(CH, &url, unreachable(&e, cfg))),
    };
    let r = if options < 500 {
        CheckResult::ok(
            CH,
            &url,
            format!("reachable{tls} (HTTP {head} to HEAD, {options} to OPTIONS; events are POSTed, and whether the receiver takes them is known only with --send-test)"),
        )
    } else if head == 501 && options == 501 {
        CheckResult::not_checked(
            CH,
            &url,
            format!("not checked: reachable{tls}, but the receiver answers neither HEAD nor OPTIONS (HTTP 501); `centinela doctor --send-test` sends it a test event"),
        )
    } else {
        CheckResult::fail(
            CH,
            &url,
            format!("the receiver is up but failing: HTTP {head} to HEAD, {options} to OPTIONS; events would be retried until it recovers"),
        )
    };
    p.push(r);
}

fn unreachable(e: &reqwest::Error, cfg: &WebhookConfig) -> String {
    let field = if cfg.url_env.is_some() {
        "the address in notify.webhook.url_env"
    } else {
        "notify.webhook.url"
    };
    let mut chain = String::new();
    let mut innermost = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        innermost = err.to_string();
        chain.push_str(&innermost.to_lowercase());
        chain.push(' ');
        cur = err.source();
    }
    if e.is_timeout() {
        format!(
            "no answer within {}: is the receiver up, and is {field} right?",
            cfg.timeout
        )
    } else if chain.contains("certificate") || chain.contains("handshake") || chain.contains("tls")
    {
        format!(
            "TLS with the receiver failed ({innermost}): its certificate must be valid for the host in {field}"
        )
    } else if matches!(io_kind(e), Some(std::io::ErrorKind::ConnectionRefused)) || e.is_connect() {
        format!("cannot connect: is the receiver running, and are host and port in {field} right?")
    } else {
        format!("cannot reach it: {e}")
    }
}
