//! Webhook channel: each alert event as an HTTP POST of its JSON (the `AlertEvent`
//! fields plus `alert_id` and the notification `id`), through the project's one reqwest
//! client. 2xx is delivered; 408, 429 and 5xx and connection errors are retried (a
//! `Retry-After` header in seconds is honoured); any other 4xx ends the notification
//! as dead.

use std::time::Duration;

use super::outbox::OutboxRow;
use super::{BoxFuture, SendError, Sender};
use crate::config::WebhookConfig;

/// The webhook channel.
pub struct WebhookSender {
    client: reqwest::Client,
    url: String,
}

#[derive(Debug, thiserror::Error)]
#[error("notify.webhook: cannot build the HTTP client: {0}")]
pub struct WebhookError(#[from] reqwest::Error);

impl WebhookSender {
    pub fn from_config(cfg: &WebhookConfig) -> Result<Self, WebhookError> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout.std())
            .user_agent(concat!("centinela/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(WebhookSender {
            client,
            url: cfg.url.clone(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
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
                    .client
                    .post(&self.url)
                    .header("Idempotency-Key", &row.id)
                    .json(&body(row))
                    .send()
                    .await
                    .map_err(|e| SendError::retry(format!("{}: {}", self.url, e.without_url())))?;
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                classify(resp.status().as_u16(), retry_after.as_deref(), &self.url)?;
            }
            Ok(())
        })
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
