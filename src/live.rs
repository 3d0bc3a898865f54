//! The live bus out to MQTT: alert events (retained, one topic per alert) and pipeline
//! status for remote viewers (`centinela tui --broker …`) and other apps.
//!
//! ```text
//!  live bus (broadcast) ──► this task ──► centinela/alerts/<rule>/<series>  retained JSON AlertEvent
//!                                      └► centinela/status                  retained JSON PipelineStatus
//! ```
//!
//! With the embedded broker it publishes through an in-process link; with an external
//! broker through its own client. Falling behind: the live bus is lossy; a lagged
//! receiver skips to the newest events (status is refreshed every second anyway).

use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::{broadcast, watch};

use crate::config::BrokerConfig;
use crate::model::{AlertEvent, LiveEvent};
use rumqttd::local::{LinkRx, LinkTx};

pub const STATUS_TOPIC: &str = "centinela/status";
pub const ALERTS_PREFIX: &str = "centinela/alerts";

/// The topic of an alert's retained state.
pub fn alert_topic(e: &AlertEvent) -> String {
    format!("{ALERTS_PREFIX}/{}/{}", e.rule, e.series)
}

/// Where the publications go.
pub enum Out {
    Link(LinkTx),
    Client(AsyncClient),
}

impl Out {
    /// An in-process link of the embedded broker; what the router sends back on it is
    /// read and dropped by a task, so its queue never fills.
    pub fn link(link: crate::broker::Link) -> Out {
        tokio::spawn(drain(link.rx));
        Out::Link(link.tx)
    }

    /// A client of the external broker, with its event loop driven in a task.
    pub fn external(cfg: &BrokerConfig) -> Result<Out, crate::source::mqtt::SourceError> {
        let (mut opts, _, _) =
            crate::source::mqtt::external_options(cfg, &format!("{}-live", cfg.client_id))?;
        opts.set_clean_session(true);
        // Viewers and Home Assistant learn from the broker when the service dies.
        opts.set_last_will(rumqttc::LastWill::new(
            crate::homeassistant::AVAILABILITY_TOPIC,
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut events) = AsyncClient::new(opts, 1024);
        tokio::spawn(async move {
            loop {
                if let Err(e) = events.poll().await {
                    tracing::debug!(error = %e, "live publisher: connection lost");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        Ok(Out::Client(client))
    }

    async fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) -> bool {
        match self {
            Out::Link(tx) => {
                let p = rumqttd::protocol::Publish::new(topic.into_bytes(), payload, retain);
                tx.send(rumqttd::protocol::Packet::Publish(p, None))
                    .await
                    .is_ok()
            }
            Out::Client(c) => c
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .is_ok(),
        }
    }
}

/// A publication asked for by another stage (the `[notify.mqtt]` channel): retained,
/// answered once handed to the broker.
pub struct Request {
    pub topic: String,
    pub payload: Vec<u8>,
    pub done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Publishes alert events and status from the live bus, and `requests`, until `stop`;
/// with Home Assistant discovery, the entities and their states too. Says `online` on
/// [`crate::homeassistant::AVAILABILITY_TOPIC`] at start and `offline` at the end.
pub async fn run(
    mut out: Out,
    mut rx: broadcast::Receiver<LiveEvent>,
    mut requests: tokio::sync::mpsc::Receiver<Request>,
    mut discovery: Option<crate::homeassistant::Discovery>,
    mut stop: watch::Receiver<bool>,
) {
    use broadcast::error::RecvError;
    let hello = match &discovery {
        Some(d) => d.announce(),
        None => vec![(
            crate::homeassistant::AVAILABILITY_TOPIC.to_string(),
            b"online".to_vec(),
        )],
    };
    for (topic, payload) in hello {
        out.publish(topic, payload, true).await;
    }
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            Some(req) = requests.recv() => {
                let ok = out.publish(req.topic, req.payload, true).await;
                let _ = req.done.send(if ok { Ok(()) } else { Err("the broker is gone".into()) });
                continue;
            }
            _ = stop.changed() => break,
        };
        if let (Some(d), Ok(LiveEvent::Alert(e))) = (discovery.as_mut(), &ev) {
            for (topic, payload) in d.on_event(e) {
                out.publish(topic, payload, true).await;
            }
        }
        let (topic, payload) = match ev {
            Ok(LiveEvent::Alert(e)) => (alert_topic(&e), serde_json::to_vec(&e)),
            Ok(LiveEvent::Status(s)) => (STATUS_TOPIC.to_string(), serde_json::to_vec(&s)),
            Ok(_) => continue,
            Err(RecvError::Lagged(n)) => {
                tracing::debug!(missed = n, "live publisher fell behind");
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        // Plain data with string keys: serialising cannot fail.
        let Ok(payload) = payload else { continue };
        if !out.publish(topic, payload, true).await {
            tracing::warn!("live publisher: the broker is gone");
            return;
        }
    }
    let (topic, payload) = crate::homeassistant::Discovery::farewell();
    out.publish(topic, payload, true).await;
}

async fn drain(mut rx: LinkRx) {
    loop {
        match rx.next().await {
            Ok(Some(rumqttd::Notification::Unschedule)) => {
                if rx.wake().await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

/// A publish function for the `[notify.mqtt]` channel that goes through this task.
pub fn publish_fn(tx: tokio::sync::mpsc::Sender<Request>) -> crate::notify::mqtt::PublishFn {
    std::sync::Arc::new(move |topic: String, payload: Vec<u8>| {
        let tx = tx.clone();
        Box::pin(async move {
            let (done, answer) = tokio::sync::oneshot::channel();
            tx.send(Request {
                topic,
                payload,
                done,
            })
            .await
            .map_err(|_| "the service is stopping".to_string())?;
            answer
                .await
                .map_err(|_| "the service is stopping".to_string())?
        })
    })
}
