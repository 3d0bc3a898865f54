//! Webhook channel: each alert event as an HTTP POST of its JSON (the `AlertEvent`
//! fields plus `alert_id` and the notification `id`), through the project's one reqwest
//! client. 2xx is delivered; 408, 429 and 5xx and connection errors are retried (a
//! `Retry-After` header in seconds is honoured); any other 4xx ends the notification
//! as dead.
//!
//! Secrets: the URL may come from an environment variable (`url_env`) and a secret
//! may go in a header (`secret_env`, as `Authorization: Bearer …` or in
//! `secret_header`); whatever the URL holds, it is printed only through
//! [`super::redact::redact_url`].

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};

use super::outbox::OutboxRow;
use super::redact::redact_url;
use super::{BoxFuture, Secret, SendError, Sender};
use crate::config::WebhookConfig;

/// The webhook channel.
pub struct WebhookSender {
    client: reqwest::Client,
    /// The real address, secrets included: only ever handed to reqwest.
    url: Secret,
    /// The address as it may be printed.
    shown: String,
    /// The header that carries the secret, when one is configured.
    auth: Option<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("notify.webhook: cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("notify.webhook.url_env: {0}")]
    UrlEnv(String),
    #[error("notify.webhook.url_env: the address in ${0} is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("notify.webhook: set url or url_env")]
    NoUrl,
    #[error("notify.webhook.secret_env: {0}")]
    SecretEnv(String),
    #[error("notify.webhook.secret_header: {0}")]
    Header(String),
}

impl WebhookSender {
    /// Reads `url_env` and `secret_env` when set; errors name the variable, never a value.
    pub fn from_config(cfg: &WebhookConfig) -> Result<Self, WebhookError> {
        let url = match (&cfg.url, &cfg.url_env) {
            (_, Some(var)) => {
                let url = Secret::from_env(var).map_err(WebhookError::UrlEnv)?;
                match reqwest::Url::parse(url.expose()) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                        url
                    }
                    _ => return Err(WebhookError::BadUrl(var.clone())),
                }
            }
            (Some(u), None) => Secret::new(u.clone()),
            (None, None) => return Err(WebhookError::NoUrl),
        };
        let auth = match &cfg.secret_env {
            None => None,
            Some(var) => {
                let secret = Secret::from_env(var).map_err(WebhookError::SecretEnv)?;
                let (name, value) = match &cfg.secret_header {
                    None => (AUTHORIZATION, format!("Bearer {}", secret.expose())),
                    Some(h) => (
                        HeaderName::from_bytes(h.trim().as_bytes()).map_err(|_| {
                            WebhookError::Header(format!("{h:?} is not a header name"))
                        })?,
                        secret.expose().to_string(),
                    ),
                };
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    WebhookError::SecretEnv(format!(
                        "the value of ${var} cannot be sent in a header"
                    ))
                })?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout.std())
            .connect_timeout(cfg.timeout.std())
            .user_agent(concat!("centinela/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(WebhookSender {
            client,
            shown: redact_url(url.expose()),
            url,
            auth,
            timeout: cfg.timeout.std(),
        })
    }

    /// The address as it may be printed (credentials, query values and tokens cut).
    pub fn url(&self) -> &str {
        &self.shown
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A request to the webhook with the secret header, when one is configured.
    pub fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        let req = self.client.request(method, self.url.expose());
        match &self.auth {
            Some((name, value)) => req.header(name.clone(), value.clone()),
            None => req,
        }
    }
}

/// The JSON body for one notification. Pure.
pub fn body(row: &OutboxRow) -> serde_json::Value {
    let mut v = serde_json::to_value(&row.event).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("alert_id".into(), row.event.alert_id().into());
        obj.insert("id".into(), row.id.clone().into());
    }
    v
}

/// What an HTTP answer means for the worker. Pure.
pub fn classify(status: u16, retry_after: Option<&str>, url: &str) -> Result<(), SendError> {
    match status {
        200..=299 => Ok(()),
        408 | 425 | 429 | 500..=599 => Err(SendError::Retry {
            message: format!("{url} answered HTTP {status}"),
            after: retry_after
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        }),
        _ => Err(SendError::Refused(format!(
            "{url} refused the event with HTTP {status}"
        ))),
    }
}

impl Sender for WebhookSender {
    fn channel(&self) -> &str {
        "webhook"
    }

    fn targets(&self) -> Vec<String> {
        vec![String::new()]
    }

    fn digests(&self) -> bool {
        false
    }

    fn send<'a>(
        &'a self,
        _target: &'a str,
        rows: &'a [OutboxRow],
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            for row in rows {
                let resp = self
                    .request(reqwest::Method::POST)
                    .header("Idempotency-Key", &row.id)
                    .json(&body(row))
                    .send()
                    .await
                    .map_err(|e| {
                        SendError::retry(format!("{}: {}", self.shown, e.without_url()))
                    })?;
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                classify(resp.status().as_u16(), retry_after.as_deref(), &self.shown)?;
            }
            Ok(())
        })
    }

    fn deadline(&self, rows: usize) -> Duration {
        // One request per notification, each bounded by `timeout`.
        self.timeout * u32::try_from(rows.max(1)).unwrap_or(u32::MAX / 2) + Duration::from_secs(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_retry_or_dead() {
        assert_eq!(classify(204, None, "u"), Ok(()));
        assert!(matches!(
            classify(503, None, "u"),
            Err(SendError::Retry { after: None, .. })
        ));
        assert!(
            matches!(classify(429, Some("7"), "u"), Err(SendError::Retry { after: Some(d), .. }) if d == Duration::from_secs(7))
        );
        assert!(
            matches!(classify(404, None, "u"), Err(SendError::Refused(m)) if m.contains("HTTP 404"))
        );
    }
}
