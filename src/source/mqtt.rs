//! MQTT in: reads messages from the embedded broker's in-process link (a thread that
//! never crosses TCP) or from an external broker (rumqttc, MQTT 3.1.1 or 5, with a
//! fixed client id, a persistent session and QoS 1 acknowledged only after the
//! hand-off, so neither a reconnect nor a stop loses anything), decodes them and
//! sends batches of readings downstream. Control requests on `centinela/control` are
//! parsed here too and sent to the engine.
//!
//! Falling behind: the batch channel is bounded; when it is full this stage waits and
//! stops reading the embedded broker's log, and past three quarters of the log unread
//! the broker front stops reading from publishers (broker/flow.rs): TCP holds them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::MqttOptions;
use tokio::sync::mpsc;

use super::decode::{DecodeError, Decoder, Limits};
use super::external::{AckToken, Client, Connection, Incoming, PollError};
use crate::backoff::Backoff;
use crate::broker::Link;
use crate::config::{BrokerConfig, BrokerUrl, Config, IngestConfig, Tls};
use crate::control::ControlRequest;
use crate::model::{now_ms, Control, Reading, Timestamp};
use crate::shutdown::Shutdown;

/// Topic on which `Control` requests (JSON) reach the engine.
pub const CONTROL_TOPIC: &str = "centinela/control";

/// Readings per batch handed downstream at most.
const BATCH: usize = 2048;
/// How long the link must have nothing to read, while the front forwards nothing,
/// before the front's count of unread bytes is reset (see `broker::Flow::idle`). A
/// router that is merely slow to hand over a batch must not look idle: 5 ms did under a
/// flood, and 1 s did on two cores shared with eight compilers (85,000 acknowledged
/// messages overwritten). Drift is rare (a message the router drops), so clearing it
/// late costs little.
const FLOW_RESYNC: Duration = Duration::from_secs(10);
/// At shutdown the embedded link is read until this many polls in a row (5 ms each)
/// found nothing, or for this long at most.
const DRAIN_QUIET: u32 = 20;
const DRAIN_MAX: Duration = Duration::from_secs(5);

/// Counters of the source stage.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub messages: AtomicU64,
    pub readings: AtomicU64,
    pub errors: [AtomicU64; DecodeError::REASONS.len()],
    /// Messages the embedded broker dropped before we read them (gaps in its log).
    pub lost: AtomicU64,
    /// Messages on the control topic that are not a control request.
    pub bad_control: AtomicU64,
    /// JSON fields and line-protocol fields that were not numbers (strings, arrays):
    /// skipped without a reading, never an error.
    pub skipped_fields: AtomicU64,
    pub connected: AtomicBool,
}

impl SourceStats {
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().map(|e| e.load(Ordering::Relaxed)).sum()
    }

    /// (reason, count) for every reason.
    pub fn errors_by_reason(&self) -> Vec<(&'static str, u64)> {
        DecodeError::REASONS
            .iter()
            .zip(&self.errors)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{url}: the broker refused the connection: {reason}")]
    Refused { url: String, reason: String },
    #[error("bad broker address: {0}")]
    Url(String),
    /// A TLS file that cannot be used, or a certificate the broker or we refused.
    #[error("{0}")]
    Certificate(String),
    #[error("broker.username is set but ${0} (the password) is unset or empty")]
    MissingPassword(String),
}

/// What the source stage needs from the configuration and the store.
#[derive(Debug, Clone)]
pub struct SourceSetup {
    pub ingest: IngestConfig,
    /// `broker.max_payload`.
    pub max_payload: usize,
    /// Readings older than this are refused (`storage.sqlite.retention`).
    pub retention: crate::config::Duration,
    /// The newest stored timestamp per series: a retained message must be newer.
    pub stored: Arc<Vec<(String, Timestamp)>>,
}

impl SourceSetup {
    pub fn new(cfg: &Config, stored: Vec<(String, Timestamp)>) -> Self {
        Self {
            ingest: cfg.ingest.clone(),
            max_payload: cfg.broker.max_payload,
            retention: cfg.storage.sqlite.retention,
            stored: Arc::new(stored),
        }
    }

    /// The decoder this setup describes, primed with what is stored.
    pub fn decoder(&self) -> Decoder {
        let limits = Limits {
            max_future_ms: Some(self.ingest.max_clock_skew.as_millis()),
            max_past_ms: Some(self.retention.as_millis()),
            max_series: Some(self.ingest.max_series),
        };
        let mut d = Decoder::with_mappings(
            &self.ingest.prefix,
            self.max_payload,
            &self.ingest.map,
            limits,
        );
        for (series, ts) in self.stored.iter() {
            d.remember(series, *ts);
        }
        d
    }
}

/// Rate-limited warnings, one clock per reason.
struct Warnings {
    every: Duration,
    last: [Option<Instant>; DecodeError::REASONS.len()],
    suppressed: [u64; DecodeError::REASONS.len()],
}

impl Warnings {
    fn warn(&mut self, topic: &str, e: &DecodeError) {
        let i = e.index();
        let now = Instant::now();
        if self.last[i].is_none_or(|t| now.duration_since(t) >= self.every) {
            let suppressed = std::mem::take(&mut self.suppressed[i]);
            let topic = super::name::printable(topic);
            tracing::warn!(
                topic,
                reason = e.reason(),
                suppressed,
                "bad message skipped: {e}"
            );
            self.last[i] = Some(now);
        } else {
            self.suppressed[i] += 1;
        }
    }
}

/// Decodes messages and keeps the counting and the rate-limited warnings in one place.
struct Ingest {
    decoder: Decoder,
    stats: Arc<SourceStats>,
    warn_every: Duration,
    warnings: Warnings,
    batch: Vec<Reading>,
    control: mpsc::Sender<ControlRequest>,
    control_warn: crate::logging::Throttle,
}

impl Ingest {
    fn new(
        setup: &SourceSetup,
        stats: Arc<SourceStats>,
        control: mpsc::Sender<ControlRequest>,
    ) -> Self {
        let every = setup.ingest.warn_interval.std();
        Self {
            decoder: setup.decoder(),
            stats,
            warn_every: every,
            warnings: Warnings {
                every,
                last: Default::default(),
                suppressed: [0; DecodeError::REASONS.len()],
            },
            batch: Vec::with_capacity(BATCH),
            control,
            control_warn: crate::logging::Throttle::new(every),
        }
    }

    fn message(&mut self, topic: &str, payload: &[u8], retained: bool, now: i64) {
        if topic == CONTROL_TOPIC {
            match serde_json::from_slice::<Control>(payload) {
                Ok(control) => {
                    if self
                        .control
                        .try_send(ControlRequest {
                            control,
                            reply: None,
                        })
                        .is_err()
                    {
                        tracing::warn!("control request dropped: the engine is busy");
                    }
                }
                Err(e) => {
                    self.stats.bad_control.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = self.control_warn.ready() {
                        tracing::warn!(
                            topic,
                            error = %e,
                            held_back,
                            "ignoring a malformed control request"
                        );
                    }
                }
            }
            return;
        }
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        let before = self.batch.len();
        let result = self
            .decoder
            .decode_message(topic, payload, retained, now, &mut self.batch);
        self.stats
            .readings
            .fetch_add((self.batch.len() - before) as u64, Ordering::Relaxed);
        let skipped = self.decoder.skipped();
        if skipped > 0 {
            self.stats
                .skipped_fields
                .fetch_add(skipped as u64, Ordering::Relaxed);
        }
        if let Err(e) = result {
            self.stats.errors[e.index()].fetch_add(1, Ordering::Relaxed);
            self.warnings.warn(topic, &e);
        }
        for e in self.decoder.refused() {
            self.stats.errors[e.index()].fetch_add(1, Ordering::Relaxed);
            self.warnings.warn(topic, e);
        }
    }

    /// The batch so far, in a vector of its own size; the buffer is kept. Handing on
    /// the full-capacity buffer instead made every small batch (a few readings at a
    /// time at low rates) a fresh 96 KiB allocation, and its free a heap trim.
    fn take(&mut self) -> Vec<Reading> {
        self.batch.drain(..).collect()
    }
}

/// Tells, at most every `ingest.warn_interval` (like bad input), how many messages the
/// broker's buffer overwrote before the pipeline read them.
struct Overrun {
    every: Duration,
    unreported: u64,
    last: Option<Instant>,
}

impl Overrun {
    fn new(every: Duration) -> Self {
        Self {
            every,
            unreported: 0,
            last: None,
        }
    }

    fn lost(&mut self, n: u64) {
        self.unreported += n;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= self.every)
        {
            self.report();
            self.last = Some(now);
        }
    }

    fn report(&mut self) {
        if self.unreported > 0 {
            tracing::warn!(
                lost = self.unreported,
                "the embedded broker's buffer overran: messages lost before the pipeline \
                 read them (raise broker.buffer_mib)"
            );
            self.unreported = 0;
        }
    }
}

/// Reads from the embedded broker's in-process link on the calling thread until
/// shutdown begins or the broker goes away. The link is already subscribed to the ingest topics
/// and [`CONTROL_TOPIC`] (see `broker::start`). Blocking: run it on its own thread.
pub fn run_embedded(
    mut link: Link,
    setup: &SourceSetup,
    stats: Arc<SourceStats>,
    out: mpsc::Sender<Vec<Reading>>,
    control: mpsc::Sender<ControlRequest>,
    stop: Shutdown,
) {
    stats.connected.store(true, Ordering::Relaxed);
    let mut ing = Ingest::new(setup, stats.clone(), control);
    let mut next_offset: Option<u64> = None;
    let track_gaps = setup.ingest.filters().len() == 1;
    let mut overrun = Overrun::new(ing.warn_every);
    let mut draining: Option<Instant> = None;
    // Since when the link has had nothing to read, and the front's count then.
    let mut idle_since: Option<(Instant, u64)> = None;
    let mut quiet = 0;
    loop {
        // A batch goes downstream as soon as the link has nothing more ready (or it is
        // full): batches grow with the load, and a lone reading waits for nobody.
        let deadline = if ing.batch.is_empty() {
            Instant::now() + Duration::from_millis(5)
        } else {
            Instant::now()
        };
        let mut idle = false;
        match link.rx.recv_deadline(deadline) {
            Ok(Some(rumqttd::Notification::Forward(f))) => {
                let topic = std::str::from_utf8(&f.publish.topic).unwrap_or("");
                link.flow
                    .taken(crate::broker::entry_size(topic, f.publish.payload.len()));
                // Each filter has its own log in the router; with one ingest filter its
                // offsets run without gaps unless the log overran us.
                if let (Some((_, off)), true) = (f.cursor, track_gaps && topic != CONTROL_TOPIC) {
                    if let Some(expected) = next_offset {
                        if off > expected {
                            stats.lost.fetch_add(off - expected, Ordering::Relaxed);
                            overrun.lost(off - expected);
                        }
                    }
                    next_offset = Some(off + 1);
                }
                // The router clears `retain` on what it forwards live: a set flag means
                // the message came from its store when the link subscribed.
                ing.message(topic, &f.publish.payload, f.publish.retain, now_ms());
            }
            Ok(Some(rumqttd::Notification::Unschedule)) => {
                if link.rx.ready().is_err() {
                    break;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => idle = true,
            Err(rumqttd::local::LinkError::RecvTimeout(_)) => idle = true,
            Err(e) => {
                tracing::error!(error = %e, "in-process link to the broker closed");
                break;
            }
        }
        if !idle {
            idle_since = None;
        } else {
            let sent = link.flow.sent_total();
            match idle_since {
                Some((since, then)) if then == sent => {
                    if since.elapsed() >= FLOW_RESYNC {
                        // Nothing read and nothing forwarded for that long: what the
                        // front counted and the router never appended stops counting.
                        let cleared = link.flow.idle(then);
                        if cleared > 0 {
                            tracing::info!(
                                bytes = cleared,
                                "broker: bytes counted as forwarded never reached the pipeline; count cleared"
                            );
                        }
                        idle_since = Some((Instant::now(), sent));
                    }
                }
                _ => idle_since = Some((Instant::now(), sent)),
            }
        }
        if (ing.batch.len() >= BATCH || (idle && !ing.batch.is_empty()))
            && out.blocking_send(ing.take()).is_err()
        {
            break;
        }
        if stop.is_shutdown() {
            // The front has stopped acknowledging publishes: read what the router still
            // holds until the link stays quiet, so nothing acknowledged is left behind.
            let until = *draining.get_or_insert_with(|| Instant::now() + DRAIN_MAX);
            quiet = if idle { quiet + 1 } else { 0 };
            if quiet >= DRAIN_QUIET || Instant::now() >= until {
                break;
            }
        }
    }
    if !ing.batch.is_empty() {
        let _ = out.blocking_send(ing.take());
    }
    overrun.report();
    stats.connected.store(false, Ordering::Relaxed);
}

/// MQTT 3.1.1 options for an external broker connection, from `[broker]`.
pub fn external_options(
    cfg: &BrokerConfig,
    client_id: &str,
) -> Result<(MqttOptions, BrokerUrl, Tls), SourceError> {
    let url = cfg.broker_url().map_err(SourceError::Url)?;
    let tls = cfg.tls();
    let mut opts = centinela_sim::broker_url::connect_options(client_id, &url, &tls)
        .map_err(|e| SourceError::Certificate(format!("{url}: {e}")))?;
    opts.set_clean_session(false);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(cfg.max_payload + 4096, cfg.max_payload + 4096);
    opts.set_inflight(1000);
    if let (Some(user), Some(pass)) = (&cfg.username, super::external::password(cfg)?) {
        opts.set_credentials(user.clone(), pass);
    }
    Ok((opts, url, tls))
}

/// Subscribes to an external broker and runs until shutdown begins. Reconnects with
/// backoff; a refusal before the first successful connection (bad credentials, not
/// authorised) is returned as an error instead of retried for ever.
///
/// QoS 1 messages are acknowledged by hand, after the readings they carry were handed
/// downstream (a batch goes as soon as the connection has nothing more ready). At
/// shutdown the batch is handed on, its acknowledgements go out before the DISCONNECT,
/// and what arrives after that is left unacknowledged: the broker keeps it in our
/// persistent session and delivers it again on the next start.
pub async fn run_external(
    cfg: &BrokerConfig,
    setup: &SourceSetup,
    stats: Arc<SourceStats>,
    out: mpsc::Sender<Vec<Reading>>,
    control: mpsc::Sender<ControlRequest>,
    mut stop: Shutdown,
) -> Result<(), SourceError> {
    let (mut conn, url, tls) = Connection::new(cfg)?;
    let protocol = conn.protocol();
    let mut ing = Ingest::new(setup, stats.clone(), control);
    let filters = setup.ingest.filters();
    let mut ever_connected = false;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut acks = Acks::default();
    loop {
        let due = !ing.batch.is_empty() || acks.due();
        tokio::select! {
            biased;
            _ = stop.recv() => break,
            ev = conn.poll() => match ev {
                Ok(Incoming::Connected { session_present }) => {
                    ever_connected = true;
                    backoff.reset();
                    stats.connected.store(true, Ordering::Relaxed);
                    tracing::info!(%url, protocol, session_present, "connected to the MQTT broker");
                    // Subscribing again is harmless and covers a broker that lost our session.
                    for t in filters.iter().map(String::as_str).chain([CONTROL_TOPIC]) {
                        if let Err(e) = conn.client.subscribe(t).await {
                            tracing::error!(topic = t, error = %e, "subscribe failed");
                        }
                    }
                }
                Ok(Incoming::Publish(mut m)) => {
                    // A broker sets `retain` only on what it delivers from its store
                    // at subscribe time; live messages arrive with it cleared.
                    ing.message(m.topic(), &m.payload, m.retain, now_ms());
                    acks.received(m.ack_token());
                    if ing.batch.len() >= BATCH && !hand_off(&mut ing, &out, &mut acks, &conn.client).await {
                        break;
                    }
                }
                Ok(_) => {}
                Err(PollError::Refused(reason)) => {
                    stats.connected.store(false, Ordering::Relaxed);
                    if !ever_connected {
                        return Err(SourceError::Refused { url: url.to_string(), reason });
                    }
                    tracing::error!(%url, reason, retry_in = ?backoff.current(), "the MQTT broker refused the connection");
                    if !hand_off(&mut ing, &out, &mut acks, &conn.client).await {
                        break;
                    }
                    sleep_or_stop(&mut backoff, &mut stop).await;
                }
                Err(PollError::Lost { error, closed_early }) => {
                    stats.connected.store(false, Ordering::Relaxed);
                    if let Some(problem) = centinela_sim::broker_url::certificate_problem(error.as_ref(), &url, &tls) {
                        // A certificate does not fix itself: at start-up this is an error,
                        // later (a certificate replaced on the broker) a loud retry.
                        if !ever_connected {
                            return Err(SourceError::Certificate(problem));
                        }
                        tracing::error!(%url, retry_in = ?backoff.current(), "{problem}");
                    } else if !ever_connected && closed_early {
                        // A broker that closes the connection before CONNACK is refusing us.
                        return Err(SourceError::Refused { url: url.to_string(), reason: format!("connection closed before CONNACK ({error}); check username and password") });
                    } else {
                        tracing::warn!(%url, error = %error, retry_in = ?backoff.current(), "MQTT connection lost; reconnecting");
                    }
                    // What was read before the loss is handed on; its acknowledgements
                    // go out on the next connection (the broker delivers it again with
                    // the same packet ids until then).
                    if !hand_off(&mut ing, &out, &mut acks, &conn.client).await {
                        break;
                    }
                    sleep_or_stop(&mut backoff, &mut stop).await;
                }
            },
            _ = std::future::ready(()), if due => {
                if !hand_off(&mut ing, &out, &mut acks, &conn.client).await {
                    break;
                }
            }
        }
    }
    let connected = stats.connected.load(Ordering::Relaxed);
    if hand_off(&mut ing, &out, &mut acks, &conn.client).await && connected {
        drain(&mut conn, &mut acks).await;
    }
    stats.connected.store(false, Ordering::Relaxed);
    Ok(())
}

/// Acknowledgements of messages read, in order.
#[derive(Default)]
struct Acks {
    /// Read, their readings not yet handed downstream.
    held: Vec<AckToken>,
    /// Handed downstream; not yet queued for rumqttc (its queue was full).
    ready: std::collections::VecDeque<AckToken>,
}

impl Acks {
    fn received(&mut self, token: Option<AckToken>) {
        self.held.extend(token);
    }

    fn due(&self) -> bool {
        !self.held.is_empty() || !self.ready.is_empty()
    }

    /// Queues what may be acknowledged; stops at the first that does not fit.
    fn queue(&mut self, client: &Client) {
        while let Some(t) = self.ready.front() {
            if !client.try_ack(t) {
                break;
            }
            self.ready.pop_front();
        }
    }
}

/// Hands the batch downstream, then lets its messages be acknowledged. `false` when
/// downstream is gone.
async fn hand_off(
    ing: &mut Ingest,
    out: &mpsc::Sender<Vec<Reading>>,
    acks: &mut Acks,
    client: &Client,
) -> bool {
    if !ing.batch.is_empty() && out.send(ing.take()).await.is_err() {
        return false;
    }
    acks.ready.extend(acks.held.drain(..));
    acks.queue(client);
    true
}

/// At a stop: sends the queued acknowledgements and a DISCONNECT behind them, then
/// reads (and drops, unacknowledged) what still arrives until the broker closes the
/// connection, for 5 s at most. Closing our side first while the broker's messages sit
/// unread in our socket would reset the connection, and a reset can make the broker
/// throw away the acknowledgements it had not read yet.
async fn drain(conn: &mut Connection, acks: &mut Acks) {
    let deadline = tokio::time::Instant::now() + DRAIN_MAX;
    let mut disconnecting = false;
    let mut sent = false;
    let mut left_unacked = 0u64;
    loop {
        acks.queue(&conn.client);
        if acks.ready.is_empty() && !disconnecting {
            conn.client.try_disconnect();
            disconnecting = true;
        }
        match tokio::time::timeout_at(deadline, conn.poll()).await {
            Ok(Ok(Incoming::DisconnectSent)) => sent = true,
            Ok(Ok(Incoming::Publish(_))) => left_unacked += 1,
            Ok(Ok(_)) => {}
            // The broker closed the connection after our DISCONNECT: all was read.
            Ok(Err(_)) if sent => break,
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(
                    unsent = acks.ready.len(),
                    disconnect_sent = sent,
                    "the MQTT connection did not close cleanly at the stop; the broker \
                     may deliver the last messages again"
                );
                break;
            }
        }
    }
    if left_unacked > 0 {
        tracing::info!(
            messages = left_unacked,
            "messages that arrived during the stop were left to the broker's session"
        );
    }
}

async fn sleep_or_stop(backoff: &mut Backoff, stop: &mut Shutdown) {
    tokio::select! {
        _ = tokio::time::sleep(backoff.failed()) => {}
        _ = stop.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_password_variable_is_an_error_not_an_empty_password() {
        let cfg = BrokerConfig {
            mode: crate::config::BrokerMode::External,
            url: Some("mqtt://127.0.0.1:1883".into()),
            username: Some("centinela".into()),
            password_env: "CENTINELA_TEST_EMPTY_EXTERNAL_PASSWORD".into(),
            ..BrokerConfig::default()
        };
        std::env::set_var("CENTINELA_TEST_EMPTY_EXTERNAL_PASSWORD", "");
        let e = external_options(&cfg, "c")
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("$CENTINELA_TEST_EMPTY_EXTERNAL_PASSWORD") && e.contains("empty"),
            "{e}"
        );
        std::env::set_var("CENTINELA_TEST_EMPTY_EXTERNAL_PASSWORD", "s3cret");
        assert!(external_options(&cfg, "c").is_ok());
    }
}
