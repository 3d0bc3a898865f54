//! MQTT republish channel: each alert event, as JSON, on `<topic>/<rule>/<series>`,
//! retained (the topic holds the alert's current state) and QoS 1, for other apps and
//! remote terminals. The publishing itself is a function handed in by the service, so
//! it can be an external-broker client or one connected to the embedded broker.

use std::sync::Arc;

use super::outbox::OutboxRow;
use super::{BoxFuture, SendError, Sender};

/// Publishes `payload` on `topic`, retained, QoS 1.
pub type PublishFn =
    Arc<dyn Fn(String, Vec<u8>) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The MQTT republish channel.
pub struct MqttSender {
    topic: String,
    publish: PublishFn,
}

impl MqttSender {
    pub fn new(topic: impl Into<String>, publish: PublishFn) -> Self {
        MqttSender {
            topic: topic.into().trim_end_matches('/').to_string(),
            publish,
        }
    }

    /// Publishes through a rumqttc client (its event loop must be polled elsewhere).
    pub fn with_client(topic: impl Into<String>, client: rumqttc::AsyncClient) -> Self {
        let publish: PublishFn = Arc::new(move |t, payload| {
            let client = client.clone();
            Box::pin(async move {
                client
                    .publish(t, rumqttc::QoS::AtLeastOnce, true, payload)
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        Self::new(topic, publish)
    }
}

/// `<topic>/<rule>/<series>`, with MQTT wildcards in names replaced so the topic is
/// publishable. Pure.
pub fn topic_for(base: &str, rule: &str, series: &str) -> String {
    let clean = |s: &str| s.replace(['+', '#'], "_");
    format!("{base}/{}/{}", clean(rule), clean(series))
}

impl Sender for MqttSender {
    fn channel(&self) -> &str {
        "mqtt"
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
                let topic = topic_for(&self.topic, &row.event.rule, &row.event.series);
                let payload = serde_json::to_vec(&super::webhook::body(row)).unwrap_or_default();
                (self.publish)(topic.clone(), payload)
                    .await
                    .map_err(|e| SendError::retry(format!("publish on {topic}: {e}")))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_rule_and_series() {
        assert_eq!(
            topic_for("centinela/alerts", "hot", "greenhouse/node1/t"),
            "centinela/alerts/hot/greenhouse/node1/t"
        );
        assert_eq!(topic_for("a", "r", "x/+/#"), "a/r/x/_/_");
    }
}
