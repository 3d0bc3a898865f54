//! The remote feed of `centinela tui --broker URL`: the live bus rebuilt from a
//! running service's broker, and the viewer's actions sent back through it.
//!
//! ```text
//!  broker ── sensors/…           ──► decode ──► LiveEvent::Readings ─┐
//!         ── centinela/alerts/#  (retained JSON AlertEvent) ─────────┼─► broadcast ─► tui::run
//!         ── centinela/status    (JSON PipelineStatus) ──────────────┘
//!         ── centinela/series    (retained catalogue) ──► the viewer's first screen
//!  tui::run ─► Control ─► JSON on centinela/control (QoS 1, with the credentials)
//! ```
//!
//! A lost broker is reported as a [`PipelineStatus`] with `broker_up = false`, and the
//! connection is retried with exponential backoff. The viewer connects with the
//! configured username and password, so a broker that requires them refuses an
//! anonymous viewer and its actions.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use centinela_sim::broker_url::connect_options;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, Packet, QoS};

use crate::config::{BrokerUrl, IngestConfig, MapConfig, Tls};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::model::{now_ms, AlertEvent, Control, LiveEvent, LogLevel, PipelineStatus, Reading};
use crate::source::decode::{Decoder, Limits};

/// Retained alert events, one topic per alert.
pub const ALERTS_TOPIC: &str = "centinela/alerts/#";
/// The pipeline's figures, about once a second.
pub const STATUS_TOPIC: &str = "centinela/status";
/// Where acknowledgements and silences go.
pub const CONTROL_TOPIC: &str = "centinela/control";
/// The service's retained catalogue of series and last values.
pub const CATALOGUE_TOPIC: &str = crate::live::CATALOGUE_TOPIC;
/// How long `attach` waits for the catalogue before showing the screen.
const CATALOGUE_WAIT: Duration = Duration::from_millis(1500);

/// Readings are handed on in batches at least this often.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
const FLUSH_READINGS: usize = 1_000;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How to reach the service's broker.
#[derive(Clone)]
pub struct RemoteOptions {
    /// `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]` (see [`BrokerUrl`]).
    pub url: String,
    /// With `mqtts://`: the CA and client certificate files.
    pub tls: Tls,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Topic prefix of the readings (`sensors`): series are named relative to it.
    pub prefix: String,
    /// Reading topics to subscribe to (`sensors/#`).
    pub topics: Vec<String>,
    /// `[[ingest.map]]`: the service's topic mappings, subscribed to and decoded as the
    /// service does, so mapped series (`zigbee2mqtt/+` …) are live here too.
    pub map: Vec<MapConfig>,
    pub max_payload: usize,
}

impl fmt::Debug for RemoteOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteOptions")
            .field("url", &self.url)
            .field("tls", &self.tls)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("prefix", &self.prefix)
            .field("topics", &self.topics)
            .field("map", &self.map.len())
            .field("max_payload", &self.max_payload)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("--broker: {0}")]
    BadUrl(String),
    /// A TLS file that cannot be used, or a certificate refused: not retried.
    #[error("{0}")]
    Certificate(String),
}

/// The broker address of `opts`, parsed.
pub fn parse_url(url: &str) -> Result<BrokerUrl, RemoteError> {
    BrokerUrl::parse(url).map_err(RemoteError::BadUrl)
}

/// What the polling task tells the feed.
enum Incoming {
    Connected,
    Lost { error: String, retry_in: Duration },
    Publish(rumqttc::Publish),
}

/// Runs the remote feed until `control` closes (the viewer quit): publishes what the
/// broker says on `live`, sends what arrives on `control` to [`CONTROL_TOPIC`].
pub async fn feed(
    opts: RemoteOptions,
    live: broadcast::Sender<LiveEvent>,
    control: mpsc::Receiver<Control>,
) -> Result<(), RemoteError> {
    feed_with_catalogue(opts, live, control, None).await
}

/// [`feed`], handing the first retained catalogue (every series with its last value
/// and time) to `catalogue`.
pub async fn feed_with_catalogue(
    opts: RemoteOptions,
    live: broadcast::Sender<LiveEvent>,
    mut control: mpsc::Receiver<Control>,
    mut catalogue: Option<tokio::sync::oneshot::Sender<Vec<Reading>>>,
) -> Result<(), RemoteError> {
    let url = parse_url(&opts.url)?;
    let mut mqtt = connect_options(&opts.client_id, &url, &opts.tls)
        .map_err(|e| RemoteError::Certificate(format!("{url}: {e}")))?;
    mqtt.set_keep_alive(Duration::from_secs(10));
    mqtt.set_clean_session(true);
    mqtt.set_max_packet_size(opts.max_payload.max(64 * 1024) + 1024, 64 * 1024);
    if let Some(user) = &opts.username {
        mqtt.set_credentials(user.clone(), opts.password.clone().unwrap_or_default());
    }
    let (client, eventloop) = AsyncClient::new(mqtt, 64);
    // The same filters as the service: the topics and each mapping's, without those
    // another one covers (a broker would deliver such a message twice).
    let mut subs: Vec<String> = IngestConfig {
        topics: opts.topics.clone(),
        map: opts.map.clone(),
        ..IngestConfig::default()
    }
    .filters();
    subs.extend([ALERTS_TOPIC.to_string(), STATUS_TOPIC.to_string()]);
    if catalogue.is_some() {
        subs.push(CATALOGUE_TOPIC.to_string());
    }
    let (tx, mut rx) = mpsc::channel::<Incoming>(1024);
    let poller = tokio::spawn(poll(eventloop, client.clone(), subs, tx));

    let mut decoder =
        Decoder::with_mappings(&opts.prefix, opts.max_payload, &opts.map, Limits::default());
    let mut batch: Vec<Reading> = Vec::new();
    let mut last_status: Option<PipelineStatus> = None;
    let mut up: Option<bool> = None;
    let mut decode_errors = 0u64;
    let mut last_error_log: Option<Instant> = None;
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let send = |ev: LiveEvent| {
        // No receiver means the viewer is shutting down: nothing to do.
        let _ = live.send(ev);
    };
    let log = |level: LogLevel, text: String| {
        send(LiveEvent::Log {
            ts: now_ms(),
            level,
            text,
        })
    };

    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                match msg {
                    Incoming::Connected => {
                        if up != Some(true) {
                            log(LogLevel::Info, format!("connected to {}", opts.url));
                        }
                        up = Some(true);
                        if let Some(s) = &last_status {
                            send(LiveEvent::Status(PipelineStatus { broker_up: true, ..s.clone() }));
                        }
                    }
                    Incoming::Lost { error, retry_in } => {
                        if up != Some(false) {
                            tracing::warn!(url = %opts.url, %error, "lost the broker");
                            log(LogLevel::Error, format!("no connection to {}: {error}; retrying every {}s at most", opts.url, BACKOFF_MAX.as_secs()));
                        }
                        up = Some(false);
                        let base = last_status.clone().unwrap_or_default();
                        send(LiveEvent::Status(PipelineStatus {
                            broker: format!(
                                "{} ({error}; retry in {})",
                                opts.url,
                                humantime::format_duration(retry_in)
                            ),
                            broker_up: false,
                            ..base
                        }));
                    }
                    Incoming::Publish(rumqttc::Publish { topic, payload, .. }) => {
                        if topic == STATUS_TOPIC {
                            match serde_json::from_slice::<PipelineStatus>(&payload) {
                                Ok(s) => {
                                    let was = last_status.as_ref().map(|l| l.offline);
                                    if s.offline && was != Some(true) {
                                        log(LogLevel::Error, "the service is offline: its last status says it stopped".to_string());
                                    } else if !s.offline && was == Some(true) {
                                        log(LogLevel::Info, "the service is back".to_string());
                                    }
                                    last_status = Some(s.clone());
                                    send(LiveEvent::Status(s));
                                }
                                Err(e) => log(LogLevel::Warn, format!("unreadable status on {topic}: {e}")),
                            }
                        } else if topic == CATALOGUE_TOPIC {
                            if let Some(tx) = catalogue.take() {
                                type Row = (String, f64, i64, Option<String>);
                                match serde_json::from_slice::<Vec<Row>>(&payload) {
                                    Ok(rows) => {
                                        let _ = tx.send(rows.into_iter().map(|(s, value, ts, unit)| Reading {
                                            series: Arc::from(s.as_str()),
                                            value,
                                            ts,
                                            unit: unit.map(|u| Arc::from(u.as_str())),
                                        }).collect());
                                    }
                                    Err(e) => log(LogLevel::Warn, format!("unreadable catalogue on {topic}: {e}")),
                                }
                            }
                        } else if topic.starts_with("centinela/alerts/") {
                            if payload.is_empty() {
                                continue;
                            }
                            match serde_json::from_slice::<AlertEvent>(&payload) {
                                Ok(ev) => send(LiveEvent::Alert(ev)),
                                Err(e) => log(LogLevel::Warn, format!("unreadable alert on {topic}: {e}")),
                            }
                        } else if !topic.starts_with("centinela/") {
                            if let Err(e) = decoder.decode(&topic, &payload, now_ms(), &mut batch) {
                                decode_errors += 1;
                                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                                    last_error_log = Some(Instant::now());
                                    let topic = super::format::printable(&topic);
                                    log(LogLevel::Warn, format!("{topic}: {e} ({decode_errors} undecodable so far)"));
                                }
                            }
                            if batch.len() >= FLUSH_READINGS {
                                send(LiveEvent::Readings(Arc::from(std::mem::take(&mut batch))));
                            }
                        }
                    }
                }
            }
            c = control.recv() => {
                let Some(c) = c else { break };
                match serde_json::to_vec(&c) {
                    Ok(json) => {
                        if let Err(e) = client.try_publish(CONTROL_TOPIC, QoS::AtLeastOnce, false, json) {
                            log(LogLevel::Error, format!("could not send {}: {e}", describe(&c)));
                        } else {
                            log(LogLevel::Info, format!("sent {}", describe(&c)));
                        }
                    }
                    Err(e) => log(LogLevel::Error, format!("could not encode {}: {e}", describe(&c))),
                }
            }
            _ = flush.tick() => {
                if !batch.is_empty() {
                    send(LiveEvent::Readings(Arc::from(std::mem::take(&mut batch))));
                }
            }
        }
    }
    let _ = client.try_disconnect();
    // Give the disconnect (and a just-sent control) a moment to leave.
    tokio::time::sleep(Duration::from_millis(50)).await;
    poller.abort();
    Ok(())
}

/// `centinela tui --broker URL`: runs the terminal UI on the remote feed until the
/// person quits, then ends the feed.
pub async fn attach(
    remote: RemoteOptions,
    history: Option<Arc<dyn super::HistorySource>>,
    opts: super::RunOptions,
) -> Result<(), AttachError> {
    let url = parse_url(&remote.url)?;
    if url.tls {
        // A certificate problem is said before the screen opens, not retried behind it.
        let mut mqtt = connect_options(&remote.client_id, &url, &remote.tls)
            .map_err(|e| RemoteError::Certificate(format!("{url}: {e}")))?;
        mqtt.set_clean_session(true);
        if let Some(user) = &remote.username {
            mqtt.set_credentials(user.clone(), remote.password.clone().unwrap_or_default());
        }
        if let Err(problem) = centinela_sim::broker_url::check_tls(mqtt, &url, &remote.tls).await {
            return Err(RemoteError::Certificate(problem).into());
        }
    }
    let (live_tx, live_rx) = broadcast::channel(4096);
    let (control_tx, control_rx) = mpsc::channel(16);
    let (cat_tx, cat_rx) = tokio::sync::oneshot::channel();
    let feed = tokio::spawn(feed_with_catalogue(
        remote,
        live_tx,
        control_rx,
        Some(cat_tx),
    ));
    // The service's catalogue, retained on the broker, arrives right after the
    // connect; a service without one (or a slow broker) only delays the first screen.
    let mut opts = opts;
    if let Ok(Ok(rows)) = tokio::time::timeout(CATALOGUE_WAIT, cat_rx).await {
        if !rows.is_empty() {
            opts.initial.insert(0, LiveEvent::Readings(Arc::from(rows)));
        }
    }
    let result = super::run(live_rx, control_tx, history, opts).await;
    // run() has dropped the control sender: the feed disconnects and returns.
    match tokio::time::timeout(Duration::from_secs(2), feed).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => tracing::warn!(error = %e, "remote feed task failed"),
        Err(_) => tracing::warn!("remote feed did not stop in time"),
    }
    Ok(result?)
}

/// Why `centinela tui --broker` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Tui(#[from] super::TuiError),
}

fn describe(c: &Control) -> String {
    match c {
        Control::Ack { alert, .. } => format!("acknowledgement of {alert}"),
        Control::Silence { pattern, .. } => format!("silence of {pattern}"),
        Control::Unsilence { pattern, .. } => format!(
            "unsilence of {}",
            pattern.as_deref().unwrap_or("everything")
        ),
    }
}

/// Drives the MQTT connection: subscribes after every connect, hands messages on,
/// and backs off between failed connects.
async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    subs: Vec<String>,
    tx: mpsc::Sender<Incoming>,
) {
    let mut backoff = crate::backoff::Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                backoff.reset();
                // The request channel is empty right after a connect, so this fits.
                let filters = subs
                    .iter()
                    .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtMostOnce));
                if let Err(e) = client.try_subscribe_many(filters) {
                    tracing::warn!(error = %e, "subscribe failed");
                }
                if tx.send(Incoming::Connected).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send(Incoming::Publish(p)).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let error = match &e {
                    rumqttc::ConnectionError::ConnectionRefused(
                        ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
                    ) => "refused: wrong or missing username/password".to_string(),
                    rumqttc::ConnectionError::ConnectionRefused(code) => {
                        format!("refused ({code:?})")
                    }
                    e => e.to_string(),
                };
                if tx
                    .send(Incoming::Lost {
                        error,
                        retry_in: backoff.current(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(backoff.failed()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("mqtts://pi.local").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "pi.local", 8883));
        let e = parse_url("broker:99").unwrap_err().to_string();
        assert!(e.contains("mqtt://broker:99"), "{e}");
        assert!(parse_url("mqtt://user:pw@host:1").is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let o = RemoteOptions {
            url: "mqtt://h:1".into(),
            tls: Tls::default(),
            client_id: "v".into(),
            username: Some("u".into()),
            password: Some("hunter2".into()),
            prefix: "sensors".into(),
            topics: vec![],
            map: vec![],
            max_payload: 1024,
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}
