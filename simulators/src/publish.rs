//! The async shell: runs a [`Simulator`] against the wall clock and publishes what it
//! returns to an MQTT broker over TCP (rumqttc).
//!
//! One task drives rumqttc's event loop and counts what reaches the network (QoS 0) or
//! is acknowledged (QoS 1); the caller's task ticks the simulator and hands messages to
//! the client, whose bounded request channel applies back-pressure. A broker that
//! refuses the connection or the credentials is an error before anything is sent, not a
//! silent retry loop.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Outgoing, Packet, QoS,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::scenario::{Scenario, MAX_OVERSIZED};
use crate::sim::Simulator;

/// How long to wait for the broker's CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait at the end for the last messages to be written or acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What to publish, where, and for how long.
pub struct PublishOptions {
    pub host: String,
    pub port: u16,
    /// TLS (`mqtts://`) with these files; `None` for plain MQTT.
    pub tls: Option<crate::broker_url::Tls>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_id: String,
    pub scenario: Scenario,
    /// Messages per second per sensor; None = the scenario's own periods.
    pub rate: Option<f64>,
    /// Overrides the scenario's `time_scale` (model clock speed).
    pub time_scale: Option<f64>,
    /// Stop after this long; None = until `shutdown`.
    pub duration: Option<Duration>,
    pub seed: u64,
    /// 0 or 1.
    pub qos: u8,
    /// Stop when this turns true (or its sender is dropped).
    pub shutdown: Option<watch::Receiver<bool>>,
}

impl PublishOptions {
    /// Options with the defaults of the command line: client id `centinela-sim`, seed 1,
    /// QoS 0, the scenario's own rate and clock, no credentials, no end.
    pub fn new(host: impl Into<String>, port: u16, scenario: Scenario) -> PublishOptions {
        PublishOptions {
            host: host.into(),
            port,
            tls: None,
            username: None,
            password: None,
            client_id: "centinela-sim".into(),
            scenario,
            rate: None,
            time_scale: None,
            duration: None,
            seed: 1,
            qos: 0,
            shutdown: None,
        }
    }
}

impl fmt::Debug for PublishOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("client_id", &self.client_id)
            .field("scenario", &self.scenario.name)
            .field("rate", &self.rate)
            .field("time_scale", &self.time_scale)
            .field("duration", &self.duration)
            .field("seed", &self.seed)
            .field("qos", &self.qos)
            .finish_non_exhaustive()
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Messages the simulator produced and handed to the MQTT client (those cut off by
    /// a shutdown in the middle of a batch are not counted).
    pub generated: u64,
    /// Messages written to the broker (QoS 0) or acknowledged by it (QoS 1).
    pub published: u64,
    /// Payload bytes of the generated messages.
    pub bytes: u64,
    /// Generated messages by the fault that shaped them; `none` for healthy ones.
    pub by_fault: BTreeMap<String, u64>,
    /// Times the connection was lost and made again.
    pub reconnects: u32,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Epoch ms the run started at: with the seed, the scenario and the rate this
    /// reproduces every message (`Simulator::new(&scenario, seed, start_ms)`).
    pub start_ms: i64,
}

impl fmt::Display for PublishStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} published of {} generated ({} bytes) in {:.1}s",
            self.published,
            self.generated,
            self.bytes,
            self.elapsed.as_secs_f64()
        )?;
        let faults: Vec<String> = self
            .by_fault
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !faults.is_empty() {
            write!(f, "; by fault: {}", faults.join(" "))?;
        }
        if self.reconnects > 0 {
            write!(f, "; {} reconnects", self.reconnects)?;
        }
        Ok(())
    }
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot reach the MQTT broker at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("the MQTT broker at {addr} refused the connection: {reason}")]
    Refused { addr: String, reason: String },
    #[error("the MQTT broker at {addr} closed the connection before accepting it (CONNACK); most brokers do that for a wrong username or password")]
    ClosedBeforeConnAck { addr: String },
    #[error("the MQTT broker at {addr} did not answer within {secs}s")]
    Timeout { addr: String, secs: u64 },
    #[error("invalid option: {0}")]
    Options(String),
    /// A TLS file that cannot be used, or the broker's certificate refused: not retried.
    #[error("{0}")]
    Certificate(String),
    #[error(transparent)]
    Scenario(#[from] crate::scenario::ScenarioError),
    #[error("the connection to the MQTT broker ended: {0}")]
    Lost(String),
}

fn refused_reason(code: ConnectReturnCode) -> String {
    match code {
        ConnectReturnCode::BadUserNamePassword => "bad username or password".into(),
        ConnectReturnCode::NotAuthorized => {
            "not authorised (check the username and password)".into()
        }
        ConnectReturnCode::BadClientId => "client id rejected".into(),
        ConnectReturnCode::ServiceUnavailable => "service unavailable".into(),
        ConnectReturnCode::RefusedProtocolVersion => "MQTT 3.1.1 not supported".into(),
        ConnectReturnCode::Success => "success (unexpected)".into(),
    }
}

/// What the event loop task tells the publisher.
#[derive(Debug)]
enum LoopNews {
    Connected,
    /// The first connection failed: fatal.
    Failed(PublishError),
}

/// Counters the event loop task keeps; the publisher reads them to know when the last
/// messages are out.
#[derive(Debug, Default)]
struct LoopCounts {
    written: AtomicU64,
    acked: AtomicU64,
    reconnects: AtomicU32,
}

/// Runs a scenario against a broker until `duration` passes or `shutdown` turns true.
pub async fn publish(opts: PublishOptions) -> anyhow::Result<PublishStats> {
    Ok(publish_inner(opts).await?)
}

async fn publish_inner(opts: PublishOptions) -> Result<PublishStats, PublishError> {
    let qos = match opts.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        q => {
            return Err(PublishError::Options(format!(
                "QoS {q} is not supported (use 0 or 1)"
            )))
        }
    };
    let mut scenario = opts.scenario;
    if let Some(hz) = opts.rate {
        scenario.set_rate(hz)?;
    }
    if let Some(ts) = opts.time_scale {
        if !(ts.is_finite() && ts > 0.0) {
            return Err(PublishError::Options(format!(
                "time scale {ts} must be a positive number"
            )));
        }
        scenario.time_scale = ts;
    }
    let addr = format!("{}:{}", opts.host, opts.port);
    let start_ms = wall_ms();
    let mut sim = Simulator::new(&scenario, opts.seed, start_ms)?;

    let url = crate::broker_url::BrokerUrl {
        tls: opts.tls.is_some(),
        host: opts.host.clone(),
        port: opts.port,
    };
    let tls = opts.tls.clone().unwrap_or_default();
    let mut mqtt = crate::broker_url::connect_options(&opts.client_id, &url, &tls)
        .map_err(|e| PublishError::Certificate(e.to_string()))?;
    mqtt.set_keep_alive(Duration::from_secs(30));
    // Room for an oversized fault plus topic and header.
    mqtt.set_max_packet_size(MAX_OVERSIZED + 64 * 1024, MAX_OVERSIZED + 64 * 1024);
    mqtt.set_inflight(100);
    if let Some(user) = &opts.username {
        mqtt.set_credentials(user.clone(), opts.password.clone().unwrap_or_default());
    }
    let (client, eventloop) = AsyncClient::new(mqtt, 1024);
    let (news_tx, mut news_rx) = mpsc::channel(4);
    let (done_tx, done_rx) = watch::channel(false);
    let counts = Arc::new(LoopCounts::default());
    let loop_task = tokio::spawn(drive(
        eventloop,
        (url, tls),
        news_tx,
        done_rx,
        counts.clone(),
    ));

    let mut shutdown = opts.shutdown;
    let first = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, news_rx.recv()) => r,
        _ = wait_shutdown(&mut shutdown) => {
            // Asked to stop before the broker answered: nothing was sent.
            loop_task.abort();
            return Ok(PublishStats { start_ms, ..PublishStats::default() });
        }
    };
    match first {
        Ok(Some(LoopNews::Connected)) => {
            info!(broker = %addr, scenario = %scenario.name, seed = opts.seed, "connected")
        }
        Ok(Some(LoopNews::Failed(e))) => {
            let _ = loop_task.await;
            return Err(e);
        }
        Ok(None) => return Err(PublishError::Lost("the MQTT event loop stopped".into())),
        Err(_) => {
            loop_task.abort();
            return Err(PublishError::Timeout {
                addr,
                secs: CONNECT_TIMEOUT.as_secs(),
            });
        }
    }
    for w in sim.faults() {
        debug!(
            fault = %w.kind,
            series = %w.series.join(","),
            at_s = (w.start_ms - start_ms) / 1000,
            for_s = (w.end_ms - w.start_ms) / 1000,
            detail = %w.detail,
            "fault scheduled"
        );
    }

    let mut stats = PublishStats {
        start_ms,
        ..PublishStats::default()
    };
    let started = Instant::now();
    let tick_every = Duration::from_millis((sim.min_period_ms() / 2).clamp(10, 250) as u64);
    let mut ticker = tokio::time::interval(tick_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = opts.duration.map(|d| started + d);
    let mut announced = vec![false; sim.faults().len()];
    'run: loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = wait_shutdown(&mut shutdown) => break 'run,
        }
        // Decided once per tick: the last tick stops exactly at the deadline, so a run
        // of D has exactly D of data (what `Simulator::tick(start + D)` gives).
        let at_end = deadline.is_some_and(|d| Instant::now() >= d);
        let now_ms = match opts.duration {
            Some(d) if at_end => start_ms + i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            _ => start_ms + i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        };
        for (k, w) in sim.faults().iter().enumerate() {
            if !announced[k] && now_ms >= w.start_ms {
                announced[k] = true;
                info!(fault = %w.kind, series = %w.series.join(","), detail = %w.detail, "fault begins");
            }
        }
        for m in sim.tick(now_ms) {
            let (len, fault) = (m.payload.len() as u64, m.fault);
            let sent = tokio::select! {
                r = client.publish(m.topic, qos, m.retain, m.payload) => r,
                _ = wait_shutdown(&mut shutdown) => break 'run,
            };
            if sent.is_err() {
                // The event loop ended: it has the reason.
                break 'run;
            }
            // Counted once handed over, so the drain below waits only for real messages.
            stats.generated += 1;
            stats.bytes += len;
            *stats
                .by_fault
                .entry(fault.map_or("none", |f| f.as_str()).to_string())
                .or_default() += 1;
        }
        if at_end || loop_task.is_finished() {
            break;
        }
    }

    // Let the event loop write (or get acknowledged) what was handed to it, then leave.
    let out = |c: &LoopCounts| {
        if qos == QoS::AtMostOnce {
            c.written.load(Ordering::Relaxed)
        } else {
            c.acked.load(Ordering::Relaxed)
        }
    };
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    while out(&counts) < stats.generated && !loop_task.is_finished() && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = done_tx.send(true);
    let ended = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let _ = client.disconnect().await;
        loop_task.await
    })
    .await;
    match ended {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e),
        Ok(Err(join)) => {
            return Err(PublishError::Lost(format!(
                "the MQTT event loop panicked: {join}"
            )))
        }
        Err(_) => warn!(
            "the broker did not take the last messages within {}s",
            DRAIN_TIMEOUT.as_secs()
        ),
    }
    stats.published = out(&counts);
    if stats.published < stats.generated {
        warn!(
            generated = stats.generated,
            published = stats.published,
            "not every message reached the broker"
        );
    }
    stats.reconnects = counts.reconnects.load(Ordering::Relaxed);
    stats.elapsed = started.elapsed();
    info!(%stats, "simulation finished");
    Ok(stats)
}

/// Resolves when shutdown is asked for; never when there is no receiver.
async fn wait_shutdown(rx: &mut Option<watch::Receiver<bool>>) {
    match rx {
        Some(rx) => {
            if rx.wait_for(|stop| *stop).await.is_err() {
                // Sender dropped without saying stop: whoever owned it is gone, so stop too.
            }
        }
        None => std::future::pending().await,
    }
}

/// Drives rumqttc: connects, reports the first CONNACK (or why there was none), counts
/// written and acknowledged publishes, reconnects with backoff after a later loss, and
/// ends after the client's DISCONNECT has been written.
async fn drive(
    mut eventloop: EventLoop,
    (url, tls): (crate::broker_url::BrokerUrl, crate::broker_url::Tls),
    news: mpsc::Sender<LoopNews>,
    mut done: watch::Receiver<bool>,
    counts: Arc<LoopCounts>,
) -> Result<(), PublishError> {
    let addr = url.authority();
    let mut connected_once = false;
    let mut backoff = Duration::from_millis(250);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(250);
                if !connected_once {
                    connected_once = true;
                    let _ = news.send(LoopNews::Connected).await;
                } else {
                    info!(broker = %addr, "reconnected");
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                counts.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                counts.written.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
            Ok(other) => debug!(event = ?other, "mqtt"),
            Err(e) => {
                let certificate = crate::broker_url::certificate_problem(&e, &url, &tls);
                let fatal = match &e {
                    _ if certificate.is_some() => certificate.map(PublishError::Certificate),
                    ConnectionError::ConnectionRefused(code) => Some(PublishError::Refused {
                        addr: addr.clone(),
                        reason: refused_reason(*code),
                    }),
                    _ if connected_once => None,
                    ConnectionError::Io(io)
                        if matches!(
                            io.kind(),
                            std::io::ErrorKind::ConnectionAborted
                                | std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::UnexpectedEof
                        ) =>
                    {
                        Some(PublishError::ClosedBeforeConnAck { addr: addr.clone() })
                    }
                    // rumqttc 0.25 reports a peer that hangs up before CONNACK this way.
                    ConnectionError::MqttState(
                        rumqttc::StateError::ConnectionAborted | rumqttc::StateError::Io(_),
                    ) => Some(PublishError::ClosedBeforeConnAck { addr: addr.clone() }),
                    ConnectionError::Io(io) => Some(PublishError::Unreachable {
                        addr: addr.clone(),
                        reason: io.to_string(),
                    }),
                    ConnectionError::NetworkTimeout => Some(PublishError::Timeout {
                        addr: addr.clone(),
                        secs: CONNECT_TIMEOUT.as_secs(),
                    }),
                    other => Some(PublishError::Unreachable {
                        addr: addr.clone(),
                        reason: other.to_string(),
                    }),
                };
                if let Some(fatal) = fatal {
                    if !connected_once {
                        let _ = news.send(LoopNews::Failed(fatal)).await;
                        return Ok(());
                    }
                    return Err(fatal);
                }
                if *done.borrow() {
                    // Leaving anyway: what is still queued is lost with the connection.
                    warn!(broker = %addr, error = %e, "connection lost while finishing");
                    return Ok(());
                }
                counts.reconnects.fetch_add(1, Ordering::Relaxed);
                warn!(broker = %addr, error = %e, retry_in_ms = backoff.as_millis() as u64, "connection lost; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = done.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
