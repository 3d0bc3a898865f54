//! Email channel: renders notifications ([`super::render`]) into a multipart
//! text + HTML mail and sends it over SMTP with lettre (STARTTLS, implicit TLS, or plain
//! for a local relay; AUTH when a username is set). One mail per notification, or one
//! digest mail for a storm, sent to each recipient separately (one envelope each, the
//! same message) so that one bad address costs only its own copy.

use lettre::address::Envelope;
use lettre::message::{header, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::TlsParameters;
use lettre::{Address, Message};

use super::outbox::OutboxRow;
use super::smtp::{self, OnStep, Smtp, StepError};
use super::{render, BoxFuture, Secret, SendError, Sender};
use crate::config::{EmailConfig, SmtpTls};
use crate::model::AlertEvent;

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("notify.email.smtp: {0}")]
    Address(String),
    #[error("notify.email: {0}")]
    Mailbox(String),
    #[error("notify.email.password_env: {0}")]
    Password(String),
    #[error("notify.email: TLS setup for {host}: {source}")]
    Tls {
        host: String,
        source: lettre::transport::smtp::Error,
    },
}

/// The email channel.
pub struct EmailSender {
    smtp: Smtp,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// For log lines: `host:port`.
    server: String,
}

impl EmailSender {
    /// Builds the transport from the config; the password is read from `password_env`.
    pub fn from_config(cfg: &EmailConfig) -> Result<Self, EmailError> {
        let password = match &cfg.username {
            Some(_) => Some(Secret::from_env(&cfg.password_env).map_err(EmailError::Password)?),
            None => None,
        };
        Self::with_password(cfg, password)
    }

    /// As [`EmailSender::from_config`], with the password given (tests, `doctor`).
    pub fn with_password(cfg: &EmailConfig, password: Option<Secret>) -> Result<Self, EmailError> {
        let (host, port) = cfg.host_port().map_err(EmailError::Address)?;
        let tls = match cfg.tls {
            SmtpTls::None => None,
            SmtpTls::Starttls | SmtpTls::Tls => {
                let params =
                    TlsParameters::new(host.clone()).map_err(|source| EmailError::Tls {
                        host: host.clone(),
                        source,
                    })?;
                Some((cfg.tls, params))
            }
        };
        let credentials = match (&cfg.username, password) {
            (Some(user), Some(pw)) => Some(Credentials::new(user.clone(), pw.expose().to_string())),
            _ => None,
        };
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| EmailError::Mailbox(format!("from {:?}: {e}", cfg.from)))?;
        let to = cfg
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| EmailError::Mailbox(format!("to {t:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EmailSender {
            smtp: Smtp::new(host.clone(), port, tls, credentials, cfg.timeout.std()),
            from,
            to,
            server: format!("{host}:{port}"),
        })
    }

    /// Connects, says EHLO, upgrades to TLS and authenticates, as a send would; each
    /// step under `timeout`, each told to `on` as it starts.
    pub async fn check(&self, on: OnStep<'_>) -> Result<(), StepError> {
        self.smtp.check(on).await
    }

    /// Sends a test mail to every recipient (one envelope).
    pub async fn send_test(&self, on: OnStep<'_>) -> Result<(), SendError> {
        let msg = Message::builder()
            .from(self.from.clone())
            .subject("[TEST] centinela can send mail")
            .header(header::ContentType::TEXT_PLAIN);
        let msg = self.to.iter().fold(msg, |m, to| m.to(to.clone()));
        let msg = msg
            .body("This is a test from `centinela doctor --send-test`. Alerts will arrive like this.\n".to_string())
            .map_err(|e| SendError::Refused(format!("cannot build the test mail: {e}")))?;
        self.smtp
            .send(msg.envelope(), &msg.formatted(), on)
            .await
            .map_err(|e| classify(&e, &self.server, "the recipients"))
    }

    pub fn server(&self) -> &str {
        &self.server
    }
}

/// Builds the mail for `events` (one, or a digest): subject a phone shows well, text and
/// HTML parts, and a Message-ID derived from the notification id so that a repeat after
/// a crash is recognisable as the same mail. Pure.
pub fn message(
    from: &Mailbox,
    to: &[Mailbox],
    id: &str,
    events: &[&AlertEvent],
) -> Result<Message, lettre::error::Error> {
    let subject = match events {
        [one] => render::subject(one),
        many => render::digest_subject(many),
    };
    let msg = Message::builder()
        .from(from.clone())
        .subject(subject)
        .message_id(Some(format!("<{id}.{}@centinela>", events.len())))
        .header(header::MIME_VERSION_1_0);
    let msg = to.iter().fold(msg, |m, t| m.to(t.clone()));
    msg.multipart(MultiPart::alternative_plain_html(
        render::email_text(events),
        render::email_html(events),
    ))
}

/// Maps an SMTP error to what the worker does: a permanent refusal of the message or
/// of a recipient ends it; anything else (connection, timeouts, 4xx, and auth failures,
/// which a fixed password cures) is retried.
fn classify(e: &StepError, server: &str, rcpt: &str) -> SendError {
    let Some(smtp_error) = e.smtp() else {
        return SendError::retry(format!("{server}: {e}"));
    };
    let code = smtp_error.status().map(|c| c.to_string());
    let auth = matches!(code.as_deref(), Some("530" | "534" | "535" | "538"));
    if smtp_error.is_permanent() && !auth {
        SendError::Refused(format!("{server} refused the mail for {rcpt}: {e}"))
    } else if auth {
        SendError::retry(format!(
            "{server} refused the login ({e}): check username and the password variable"
        ))
    } else {
        SendError::retry(format!("{server}: {e}"))
    }
}

impl Sender for EmailSender {
    fn channel(&self) -> &str {
        "email"
    }

    /// Each recipient is a target: one refusing address (550) does not stop the mail
    /// to the others, and a retry goes only to those that did not get it yet.
    fn targets(&self) -> Vec<String> {
        self.to.iter().map(|m| m.email.to_string()).collect()
    }

    fn digests(&self) -> bool {
        true
    }

    fn deadline(&self, _rows: usize) -> std::time::Duration {
        // One mail whatever the number of alerts: a digest is one message.
        self.smtp.session_deadline()
    }

    fn send<'a>(
        &'a self,
        target: &'a str,
        rows: &'a [OutboxRow],
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let Some(first) = rows.first() else {
                return Ok(());
            };
            let rcpt: Address = target
                .parse()
                .map_err(|e| SendError::Refused(format!("{target}: not an address ({e})")))?;
            let events: Vec<&AlertEvent> = rows.iter().map(|r| &r.event).collect();
            // The same mail (every recipient in To:, one Message-ID), one envelope recipient.
            let msg = message(&self.from, &self.to, &first.id, &events)
                .map_err(|e| SendError::Refused(format!("cannot build the mail: {e}")))?;
            let envelope = Envelope::new(Some(self.from.email.clone()), vec![rcpt])
                .map_err(|e| SendError::Refused(format!("{target}: {e}")))?;
            self.smtp
                .send(&envelope, &msg.formatted(), &smtp::quiet)
                .await
                .map_err(|e| classify(&e, &self.server, target))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertState, Severity};

    #[test]
    fn mail_has_subject_both_parts_and_a_stable_message_id() {
        let e = AlertEvent {
            rule: "hot".into(),
            series: "greenhouse/node1/temperature".into(),
            state: AlertState::Firing,
            severity: Severity::Critical,
            value: Some(31.2),
            unit: Some("°C".into()),
            ts: 0,
            message: "greenhouse/node1/temperature 31.2 °C > 30".into(),
            notify: vec!["email".into()],
        };
        let from: Mailbox = "centinela <alerts@example.org>".parse().unwrap();
        let to: Vec<Mailbox> = vec![
            "ops@example.org".parse().unwrap(),
            "b@example.org".parse().unwrap(),
        ];
        let m = message(&from, &to, "abc123", &[&e]).unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        // The subject is encoded (it has a non-ASCII °): check through the parsed headers.
        assert_eq!(
            m.headers()
                .get::<header::Subject>()
                .map(|s| s.as_ref().to_string())
                .as_deref(),
            Some("[CRITICAL] greenhouse/node1/temperature 31.2 °C > 30")
        );
        assert!(raw.contains("Message-ID: <abc123.1@centinela>"), "{raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(
            raw.contains("text/plain") && raw.contains("text/html"),
            "{raw}"
        );
        assert!(raw.contains("To: ops@example.org, b@example.org"), "{raw}");
        let d = message(&from, &to, "abc123", &[&e, &e]).unwrap();
        assert_eq!(
            d.headers()
                .get::<header::Subject>()
                .map(|s| s.as_ref().to_string())
                .as_deref(),
            Some("[DIGEST] 2 alerts: 2 critical")
        );
    }
}
