//! The live bus: what viewers see as it happens, in-process (the TUI of `run` and
//! `demo`) and over MQTT: alert events (retained, one topic per alert) and pipeline
//! status for remote viewers (`centinela tui --broker …`) and other apps.
//!
//! ```text
//!  engine ─Fanout─► LiveOutput ──► live bus (broadcast) ──► viewers in-process
//!                                        └► this task ──► centinela/alerts/<rule>/<series>  retained JSON AlertEvent
//!  status (1/s) ──────────────────► live bus          ├► centinela/status                  retained JSON PipelineStatus
//!                                                     └► centinela/series                  retained catalogue, every 10 s
//! ```
//!
//! The bus is an output like any other ([`LiveOutput`]), one that drops rather than
//! wait: a slow viewer never holds up the stream.
//!
//! With the embedded broker it publishes through an in-process link; with an external
//! broker through its own client. Falling behind: the live bus is lossy; a lagged
//! receiver skips to the newest events (status is refreshed every second anyway).
//!
//! On a clean stop the last status is published once more with `offline = true`, and
//! the external client leaves the same as its last will, so a viewer attached to a
//! broker that outlives the service says "service offline" instead of showing the
//! retained figures as if they were current.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::config::BrokerConfig;
use crate::model::{AlertEvent, LiveEvent, PipelineStatus, SeriesId, Timestamp};
use crate::shutdown::Shutdown;
use crate::store::{BoxFuture, Context, Output, OutputMsg, StartError, WhenFull};
use rumqttd::local::{LinkRx, LinkTx};

/// The live bus as an output: readings and alert events from the engine onto the bus.
pub struct LiveOutput {
    pub bus: broadcast::Sender<LiveEvent>,
}

impl Output for LiveOutput {
    fn name(&self) -> &'static str {
        "live"
    }

    fn capacity(&self) -> usize {
        256
    }

    fn when_full(&self) -> WhenFull {
        WhenFull::Drop
    }

    fn start<'a>(
        &'a self,
        _ctx: &'a Context<'a>,
        mut input: mpsc::Receiver<OutputMsg>,
        shutdown: Shutdown,
    ) -> BoxFuture<'a, Result<JoinHandle<()>, StartError>> {
        let bus = self.bus.clone();
        Box::pin(async move {
            Ok(tokio::spawn(async move {
                let _shutdown = shutdown;
                while let Some(msg) = input.recv().await {
                    // No viewer is not an error: the bus is there for those who come.
                    match msg {
                        OutputMsg::Readings(r) if r.is_empty() => {}
                        OutputMsg::Readings(r) => {
                            let _ = bus.send(LiveEvent::Readings(r));
                        }
                        OutputMsg::Alerts(a) => {
                            for e in &a.events {
                                let _ = bus.send(LiveEvent::Alert(e.clone()));
                            }
                        }
                    }
                }
            }))
        })
    }
}

pub const STATUS_TOPIC: &str = "centinela/status";
pub const ALERTS_PREFIX: &str = "centinela/alerts";
/// The last value of every series, newest first, as a JSON array of
/// `[series, value, ts, unit]`: a viewer that attaches lists them at once.
pub const CATALOGUE_TOPIC: &str = "centinela/series";
/// The catalogue is published at most this often, when something changed.
const CATALOGUE_EVERY: Duration = Duration::from_secs(10);
/// And this long after the first change, so a burst of new series (a service that
/// starts, sensors that come back) lands in one catalogue rather than the first of them.
const CATALOGUE_SETTLE: Duration = Duration::from_secs(1);
/// And kept under this size (about a thousand series), so it fits in any viewer's
/// packet limit; the newest series are kept.
pub const CATALOGUE_MAX_BYTES: usize = 60_000;

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
        // Plain data with string keys: serialising cannot fail.
        if let Ok(will) = serde_json::to_vec(&offline(PipelineStatus {
            broker: format!("external {}", cfg.url.as_deref().unwrap_or_default()),
            ..Default::default()
        })) {
            opts.set_last_will(rumqttc::LastWill::new(
                STATUS_TOPIC,
                will,
                QoS::AtLeastOnce,
                true,
            ));
        }
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

/// Publishes alert events and status from the live bus, and `requests`, until
/// shutdown begins.
pub async fn run(
    mut out: Out,
    mut rx: broadcast::Receiver<LiveEvent>,
    mut requests: tokio::sync::mpsc::Receiver<Request>,
    mut discovery: Option<crate::homeassistant::Discovery>,
    mut shutdown: Shutdown,
) {
    use broadcast::error::RecvError;
    // Home Assistant discovery: the rules' entities, once at start.
    for (topic, payload) in discovery.iter().flat_map(|d| d.announce()) {
        out.publish(topic, payload, true).await;
    }
    let mut last_status: Option<PipelineStatus> = None;
    let mut last: HashMap<SeriesId, (f64, Timestamp, Option<Arc<str>>)> = HashMap::new();
    // When the catalogue is due (something changed), and when it last went out.
    let mut due: Option<tokio::time::Instant> = None;
    let mut published: Option<tokio::time::Instant> = None;
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                due = None;
                published = Some(tokio::time::Instant::now());
                let payload = catalogue(&last);
                if !out.publish(CATALOGUE_TOPIC.to_string(), payload, true).await {
                    tracing::warn!("live publisher: the broker is gone");
                    return;
                }
                continue;
            }
            Some(req) = requests.recv() => {
                let ok = out.publish(req.topic, req.payload, true).await;
                let _ = req.done.send(if ok { Ok(()) } else { Err("the broker is gone".into()) });
                continue;
            }
            _ = shutdown.recv() => break,
        };
        if let (Some(d), Ok(LiveEvent::Alert(e))) = (discovery.as_mut(), &ev) {
            for (topic, payload) in d.on_event(e) {
                out.publish(topic, payload, true).await;
            }
        }
        let (topic, payload) = match ev {
            Ok(LiveEvent::Alert(e)) => (alert_topic(&e), serde_json::to_vec(&e)),
            Ok(LiveEvent::Status(s)) => {
                let json = serde_json::to_vec(&s);
                last_status = Some(s);
                (STATUS_TOPIC.to_string(), json)
            }
            Ok(LiveEvent::Readings(batch)) => {
                for r in batch.iter() {
                    last.insert(r.series.clone(), (r.value, r.ts, r.unit.clone()));
                }
                if due.is_none() {
                    let settled = tokio::time::Instant::now() + CATALOGUE_SETTLE;
                    due = Some(published.map_or(settled, |p| settled.max(p + CATALOGUE_EVERY)));
                }
                continue;
            }
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
    // Goodbye: the retained status says the service stopped.
    if let Some(s) = last_status {
        if let Ok(payload) = serde_json::to_vec(&offline(s)) {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                out.publish(STATUS_TOPIC.to_string(), payload, true),
            )
            .await;
            if let Out::Client(c) = &out {
                // Let the event loop send it, then leave cleanly.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = c.try_disconnect();
            }
        }
    }
}

/// The catalogue's payload: newest series first, cut at [`CATALOGUE_MAX_BYTES`].
pub fn catalogue(last: &HashMap<SeriesId, (f64, Timestamp, Option<Arc<str>>)>) -> Vec<u8> {
    let mut rows: Vec<_> = last.iter().collect();
    rows.sort_unstable_by(|a, b| b.1 .1.cmp(&a.1 .1).then_with(|| a.0.cmp(b.0)));
    let mut out = b"[".to_vec();
    for (series, (value, ts, unit)) in rows {
        // Plain data: serialising cannot fail.
        let Ok(row) = serde_json::to_vec(&(&**series, value, ts, unit.as_deref())) else {
            continue;
        };
        if out.len() + row.len() + 2 > CATALOGUE_MAX_BYTES {
            break;
        }
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(&row);
    }
    out.push(b']');
    out
}

/// The status a stopped service leaves: its last figures, marked offline.
fn offline(s: PipelineStatus) -> PipelineStatus {
    PipelineStatus {
        offline: true,
        broker_up: false,
        readings_per_s: 0.0,
        ..s
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_lists_newest_first_and_stays_under_its_size() {
        let mut last = HashMap::new();
        last.insert(Arc::from("gh/n1/t"), (21.5, 2_000, Some(Arc::from("°C"))));
        last.insert(Arc::from("gh/n2/t"), (3.0, 1_000, None));
        let text = String::from_utf8(catalogue(&last)).unwrap();
        assert_eq!(
            text,
            r#"[["gh/n1/t",21.5,2000,"°C"],["gh/n2/t",3.0,1000,null]]"#
        );
        for i in 0..5_000 {
            last.insert(
                Arc::from(format!("site/device{i}/temperature")),
                (1.0, i, None),
            );
        }
        let big = catalogue(&last);
        assert!(big.len() <= CATALOGUE_MAX_BYTES, "{}", big.len());
        let rows: Vec<(String, f64, i64, Option<String>)> = serde_json::from_slice(&big).unwrap();
        assert!(rows.len() > 500, "{}", rows.len());
        assert_eq!(rows[0].0, "site/device4999/temperature");
    }
}
