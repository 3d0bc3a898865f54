//! The embedded broker's public listeners: a thin MQTT 3.1.1 front that checks every
//! client before rumqttd sees it.
//!
//! ```text
//!  sensor ──TCP/TLS──► front ── CONNECT: credentials → Rights (CONNACK 4/5 when refused)
//!                        │      PUBLISH: topic name valid, inside the user's filters
//!                        │      SUBSCRIBE: each filter inside the user's (0x80 when not)
//!                        └──TCP 127.0.0.1:internal──► rumqttd (internal credential only)
//! ```
//!
//! rumqttd listens only on a loopback port that requires a random credential the front
//! substitutes for the client's, so nobody reaches it but through the front. Accepted
//! packets are forwarded byte for byte; only a SUBSCRIBE with refused filters and its
//! SUBACK are rewritten. A refused QoS 0 publish is dropped; a refused QoS 1/2 publish
//! closes the connection without an acknowledgement (MQTT-3.3.5-2), as does a topic
//! name with `+`, `#` or NUL (MQTT-3.3.2-2). Idle clients are dropped after 1.5 × their
//! keepalive, capped by `broker.max_keepalive`, and each IP address has a connection
//! limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Login, SubAck, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{check, Error as CodecError, PacketType, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::acl::{Rights, Users};
use super::flow::Flow;
use crate::logging::Throttle;

/// How long a new connection may take to send its CONNECT (and finish TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of the front, for the log and `/metrics`.
#[derive(Debug)]
pub struct FrontStats {
    /// The users, with their refusal counters.
    pub users: Arc<Users>,
    /// Connections open now.
    pub open: AtomicU64,
    /// Logins refused (bad credentials, not authorised, protocol).
    pub refused_logins: AtomicU64,
    /// Publishes refused by the ACLs.
    pub refused_publishes: AtomicU64,
    /// Subscription filters refused by the ACLs.
    pub refused_subscriptions: AtomicU64,
    /// Publishes whose topic name holds `+`, `#`, NUL, is empty or not UTF-8.
    pub bad_topics: AtomicU64,
    /// Connections closed for saying nothing within their keepalive.
    pub idle_closed: AtomicU64,
    /// Connections turned away by the per-IP or total limit.
    pub over_limit: AtomicU64,
    /// Sessions still reading their client's packets (all but the paused ones, once
    /// the front is closing).
    pub reading: AtomicU64,
    /// What the pipeline has not read yet; the front waits on it.
    pub flow: Arc<Flow>,
}

impl FrontStats {
    /// The front's figures for `/metrics` (`centinela_broker_…`).
    pub fn metrics(&self) -> Vec<crate::http::Sample> {
        use crate::http::Sample;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            Sample::gauge(
                "centinela_broker_connections",
                "Client connections open on the embedded broker.",
                n(&self.open),
            ),
            Sample::counter(
                "centinela_broker_refused_logins_total",
                "Logins refused: unknown user, wrong password, anonymous, protocol.",
                n(&self.refused_logins),
            ),
            Sample::counter(
                "centinela_broker_refused_publishes_total",
                "Publishes refused by the users' ACLs.",
                n(&self.refused_publishes),
            ),
            Sample::counter(
                "centinela_broker_refused_subscriptions_total",
                "Subscription filters refused by the users' ACLs.",
                n(&self.refused_subscriptions),
            ),
            Sample::counter(
                "centinela_broker_bad_topics_total",
                "Publishes to a topic name with '+', '#' or NUL, empty or not UTF-8 (the connection closes).",
                n(&self.bad_topics),
            ),
            Sample::counter(
                "centinela_broker_idle_closed_total",
                "Connections closed for saying nothing within 1.5 times their keepalive.",
                n(&self.idle_closed),
            ),
            Sample::counter(
                "centinela_broker_over_limit_total",
                "Connections turned away by broker.max_connections_per_ip or max_connections.",
                n(&self.over_limit),
            ),
            Sample::counter(
                "centinela_broker_held_back_total",
                "Times a client's reads waited because the pipeline had not read the broker's buffer down (back-pressure).",
                n(&self.flow.holds),
            ),
            Sample::gauge(
                "centinela_broker_unread_bytes",
                "Bytes in the embedded broker's buffer the pipeline has not read yet (as the broker counts them).",
                self.flow.in_flight(),
            ),
        ]
    }
}

/// Counts a session in [`FrontStats::reading`] while it reads from its client.
struct Reading(Arc<FrontStats>);

impl Reading {
    fn new(stats: &Arc<FrontStats>) -> Reading {
        stats.reading.fetch_add(1, Ordering::Relaxed);
        Reading(stats.clone())
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.reading.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The rate-limited warnings, one throttle per kind.
struct Warnings {
    login: Mutex<Throttle>,
    publish: Mutex<Throttle>,
    subscribe: Mutex<Throttle>,
    topic: Mutex<Throttle>,
    limit: Mutex<Throttle>,
    tls: Mutex<Throttle>,
}

fn ready(t: &Mutex<Throttle>) -> Option<u64> {
    t.lock().map(|mut t| t.ready()).unwrap_or(None)
}

/// Everything a connection needs.
pub struct Front {
    pub users: Arc<Users>,
    pub stats: Arc<FrontStats>,
    /// rumqttd's internal listener and the credential it requires.
    pub upstream: SocketAddr,
    pub upstream_login: (String, String),
    pub max_packet: usize,
    pub max_keepalive: Duration,
    pub max_per_ip: usize,
    pub max_connections: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    warnings: Warnings,
    next_id: AtomicU64,
    /// Becomes true when the service stops: listeners close, sessions end.
    closing: watch::Receiver<bool>,
}

/// Closes the front when the service stops, before the pipeline drains: no new
/// connection, and no packet read from a client (so no publish acknowledged) after
/// [`Door::close`], while what rumqttd sends still reaches the clients. A client's
/// unacknowledged QoS 1/2 publishes are its to send again; everything acknowledged
/// before is in rumqttd's log for the source to read.
pub struct Door {
    closing: watch::Sender<bool>,
    stats: Arc<FrontStats>,
}

impl Door {
    /// Stops accepting and reading; returns once no session reads, or after `max`.
    pub async fn close(&self, max: Duration) {
        self.closing.send_replace(true);
        let deadline = tokio::time::Instant::now() + max;
        while self.stats.reading.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Resolves once the front is closing (never, when its door was dropped unused).
async fn closed(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Front {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        users: Users,
        upstream: SocketAddr,
        upstream_login: (String, String),
        max_packet: usize,
        max_keepalive: Duration,
        max_per_ip: usize,
        max_connections: usize,
        warn_every: Duration,
        closing: watch::Receiver<bool>,
        flow: Arc<Flow>,
    ) -> Front {
        let t = || Mutex::new(Throttle::new(warn_every));
        let users = Arc::new(users);
        Front {
            users: users.clone(),
            stats: Arc::new(FrontStats {
                users,
                open: AtomicU64::new(0),
                refused_logins: AtomicU64::new(0),
                refused_publishes: AtomicU64::new(0),
                refused_subscriptions: AtomicU64::new(0),
                bad_topics: AtomicU64::new(0),
                idle_closed: AtomicU64::new(0),
                over_limit: AtomicU64::new(0),
                reading: AtomicU64::new(0),
                flow,
            }),
            upstream,
            upstream_login,
            max_packet,
            max_keepalive,
            max_per_ip,
            max_connections,
            per_ip: Mutex::new(HashMap::new()),
            warnings: Warnings {
                login: t(),
                publish: t(),
                subscribe: t(),
                topic: t(),
                limit: t(),
                tls: t(),
            },
            next_id: AtomicU64::new(0),
            closing,
        }
    }

    /// The door that closes this front.
    pub fn door(&self, closing: watch::Sender<bool>) -> Door {
        Door {
            closing,
            stats: self.stats.clone(),
        }
    }

    /// Takes a connection slot for `ip`, or `None` when its limit (or the total) is
    /// reached.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut map = self.per_ip.lock().ok()?;
        let total: usize = map.values().sum();
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_ip || total >= self.max_connections {
            return None;
        }
        *n += 1;
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            front: self.clone(),
            ip,
        })
    }
}

/// A connection slot, given back when the connection ends.
struct Slot {
    front: Arc<Front>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.front.per_ip.lock() {
            if let Some(n) = map.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.ip);
                }
            }
        }
        self.front.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections on `listener` for ever (plain TCP, or TLS with `tls`).
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    front: Arc<Front>,
) {
    let mut closing = front.closing.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = closed(&mut closing) => return,
        };
        let (sock, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "broker: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = front.admit(peer.ip()) else {
            front.stats.over_limit.fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = ready(&front.warnings.limit) {
                tracing::warn!(
                    %peer,
                    per_ip = front.max_per_ip,
                    total = front.max_connections,
                    held_back,
                    "broker: connection refused: too many connections from this address \
                     (broker.max_connections_per_ip) or in all (broker.max_connections)"
                );
            }
            drop(sock);
            continue;
        };
        let _ = sock.set_nodelay(true);
        let front = front.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => session(&front, sock, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(s)) => session(&front, s, peer).await,
                        Ok(Err(e)) => {
                            if let Some(held_back) = ready(&front.warnings.tls) {
                                tracing::warn!(%peer, error = %e, held_back, "broker: TLS handshake failed");
                            }
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "broker: TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
}

/// Reads until `buf` holds one whole packet; its fixed header.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> std::io::Result<rumqttc::mqttbytes::FixedHeader> {
    loop {
        match check(buf.iter(), max) {
            Ok(h) => return Ok(h),
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
        if r.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn connack<W: AsyncWrite + Unpin>(w: &mut W, code: ConnectReturnCode) {
    let mut b = BytesMut::with_capacity(4);
    if ConnAck::new(code, false).write(&mut b).is_ok() {
        let _ = w.write_all(&b).await;
        let _ = w.flush().await;
    }
}

/// One client, from its CONNECT to the end of the connection.
async fn session<S>(front: &Arc<Front>, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut cr, mut cw) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let header = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        read_frame(&mut cr, &mut buf, front.max_packet),
    )
    .await
    {
        Ok(Ok(h)) => h,
        _ => return,
    };
    if !matches!(header.packet_type(), Ok(PacketType::Connect)) {
        return;
    }
    let frame = buf.split_to(header.frame_length()).freeze();
    let refuse = |code: ConnectReturnCode, user: Option<&str>, why: &str| {
        front.stats.refused_logins.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = ready(&front.warnings.login) {
            tracing::warn!(%peer, user, held_back, "broker: login refused: {why}");
        }
        code
    };
    let connect = match Connect::read(header, frame) {
        Ok(c) if c.protocol == Protocol::V4 => c,
        Ok(_) | Err(CodecError::InvalidProtocolLevel(_)) => {
            let code = refuse(
                ConnectReturnCode::RefusedProtocolVersion,
                None,
                "only MQTT 3.1.1 is spoken here",
            );
            connack(&mut cw, code).await;
            return;
        }
        Err(_) => return,
    };
    let user = connect.login.as_ref().map(|l| l.username.as_str());
    let rights = match front.users.login(
        connect
            .login
            .as_ref()
            .map(|l| (l.username.as_str(), l.password.as_str())),
    ) {
        Ok(r) => r,
        Err(super::acl::LoginRefused::BadCredentials) => {
            let code = refuse(
                ConnectReturnCode::BadUserNamePassword,
                user,
                "unknown user or wrong password",
            );
            connack(&mut cw, code).await;
            return;
        }
        Err(super::acl::LoginRefused::NotAuthorised) => {
            let code = refuse(
                ConnectReturnCode::NotAuthorized,
                None,
                "no credentials, and anonymous clients are not allowed",
            );
            connack(&mut cw, code).await;
            return;
        }
    };
    if let Some(will) = &connect.last_will {
        if bad_topic(will.topic.as_bytes()) || !rights.may_publish(&will.topic) {
            let code = refuse(
                ConnectReturnCode::NotAuthorized,
                user,
                "the last will's topic is not one this user may publish to",
            );
            connack(&mut cw, code).await;
            return;
        }
    }
    if connect.client_id.is_empty() && !connect.clean_session {
        connack(&mut cw, ConnectReturnCode::BadClientId).await;
        return;
    }

    // Keepalive 0 (none) or longer than the cap: the cap.
    let cap = front.max_keepalive.as_secs().clamp(1, u16::MAX as u64) as u16;
    let keepalive = if connect.keep_alive == 0 || connect.keep_alive > cap {
        cap
    } else {
        connect.keep_alive
    };
    let idle = Duration::from_millis(keepalive as u64 * 1500);

    // Upstream: the user's name in the client id keeps one user from taking over
    // another's session.
    let mut up_connect = connect.clone();
    // rumqttd's own keepalive check is only a backstop: the front drops idle clients
    // first (and counts them).
    up_connect.keep_alive = keepalive.saturating_mul(2);
    up_connect.client_id = if connect.client_id.is_empty() {
        format!(
            "{}:~{}",
            rights.name,
            front.next_id.fetch_add(1, Ordering::Relaxed)
        )
    } else {
        format!("{}:{}", rights.name, connect.client_id)
    };
    up_connect.login = Some(Login::new(
        front.upstream_login.0.clone(),
        front.upstream_login.1.clone(),
    ));
    let Ok(up) = TcpStream::connect(front.upstream).await else {
        connack(&mut cw, ConnectReturnCode::ServiceUnavailable).await;
        return;
    };
    let _ = up.set_nodelay(true);
    let (mut ur, mut uw) = up.into_split();
    let mut out = BytesMut::with_capacity(256);
    if up_connect.write(&mut out).is_err() || uw.write_all(&out).await.is_err() {
        return;
    }
    out.clear();
    // rumqttd's CONNACK goes to the client as it is.
    let mut ubuf = BytesMut::with_capacity(64 * 1024);
    let Ok(Ok(h)) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        read_frame(&mut ur, &mut ubuf, front.max_packet),
    )
    .await
    else {
        connack(&mut cw, ConnectReturnCode::ServiceUnavailable).await;
        return;
    };
    let ack = ubuf.split_to(h.frame_length());
    if cw.write_all(&ack).await.is_err() {
        return;
    }
    tracing::debug!(%peer, user = rights.name, keepalive, "broker: client connected");

    let pending = Arc::new(Mutex::new(HashMap::<u16, Vec<bool>>::new()));
    let (reply_tx, reply_rx) = mpsc::channel::<Bytes>(16);
    let inbound = client_to_broker(
        front,
        &rights,
        peer,
        cr,
        buf,
        uw,
        idle,
        pending.clone(),
        reply_tx,
    );
    let outbound = broker_to_client(ur, ubuf, cw, pending, reply_rx, front.max_packet);
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}

/// A topic name a client may not publish to: empty, not UTF-8, or with a wildcard or
/// NUL (MQTT-3.3.2-2, MQTT-1.5.3-2).
fn bad_topic(t: &[u8]) -> bool {
    t.is_empty()
        || t.iter().any(|&b| b == b'+' || b == b'#' || b == 0)
        || std::str::from_utf8(t).is_err()
}

/// The topic name of a PUBLISH frame (fixed header `hl` bytes long).
fn publish_topic(frame: &[u8], hl: usize) -> Option<&[u8]> {
    let len = u16::from_be_bytes([*frame.get(hl)?, *frame.get(hl + 1)?]) as usize;
    frame.get(hl + 2..hl + 2 + len)
}

/// Client → broker: checks each packet, forwards what is allowed.
#[allow(clippy::too_many_arguments)]
async fn client_to_broker<R, W>(
    front: &Front,
    rights: &Rights,
    peer: SocketAddr,
    mut r: R,
    mut buf: BytesMut,
    mut w: W,
    idle: Duration,
    pending: Arc<Mutex<HashMap<u16, Vec<bool>>>>,
    replies: mpsc::Sender<Bytes>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = BytesMut::with_capacity(64 * 1024);
    let reading = Reading::new(&front.stats);
    let mut closing = front.closing.clone();
    loop {
        let mut close = false;
        // Bytes forwarded into the pipeline's log by this round.
        let mut forwarded = 0;
        loop {
            let h = match check(buf.iter(), front.max_packet) {
                Ok(h) => h,
                Err(CodecError::InsufficientBytes(_)) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "broker: malformed packet; closing");
                    close = true;
                    break;
                }
            };
            let len = h.frame_length();
            let hl = fixed_header_len(&buf);
            match h.packet_type() {
                Ok(PacketType::Publish) => {
                    let frame = &buf[..len];
                    let qos = (frame[0] >> 1) & 3;
                    let Some(topic) = publish_topic(frame, hl) else {
                        close = true;
                        break;
                    };
                    if bad_topic(topic) {
                        front.stats.bad_topics.fetch_add(1, Ordering::Relaxed);
                        if let Some(held_back) = ready(&front.warnings.topic) {
                            tracing::warn!(
                                %peer,
                                user = rights.name,
                                topic = %String::from_utf8_lossy(topic).escape_debug(),
                                held_back,
                                "broker: publish refused: a topic name may not be empty or hold \
                                 '+', '#' or NUL; closing the connection"
                            );
                        }
                        close = true;
                        break;
                    }
                    // bad_topic checked UTF-8.
                    let topic = std::str::from_utf8(topic).unwrap_or_default();
                    if rights.may_publish(topic) {
                        // Topic length (2) and, from QoS 1, the packet id (2).
                        let head = hl + 2 + topic.len() + if qos > 0 { 2 } else { 0 };
                        forwarded += front.stats.flow.cost(topic, len.saturating_sub(head));
                        out.extend_from_slice(frame);
                    } else {
                        front
                            .stats
                            .refused_publishes
                            .fetch_add(1, Ordering::Relaxed);
                        let n = rights.refused_publish.fetch_add(1, Ordering::Relaxed) + 1;
                        if let Some(held_back) = ready(&front.warnings.publish) {
                            tracing::warn!(
                                %peer,
                                user = rights.name,
                                topic = %topic.escape_debug(),
                                refused_for_user = n,
                                held_back,
                                "broker: publish refused: not a topic this user may publish to"
                            );
                        }
                        if qos > 0 {
                            // Not acknowledged: the connection closes (MQTT-3.3.5-2).
                            close = true;
                            break;
                        }
                    }
                }
                Ok(PacketType::Subscribe) => {
                    let frame = Bytes::copy_from_slice(&buf[..len]);
                    let Ok(sub) = Subscribe::read(h, frame.clone()) else {
                        close = true;
                        break;
                    };
                    let mask: Vec<bool> = sub
                        .filters
                        .iter()
                        .map(|f| rights.may_subscribe(&f.path))
                        .collect();
                    let refused = mask.iter().filter(|ok| !**ok).count();
                    if refused == 0 {
                        out.extend_from_slice(&frame);
                    } else {
                        front
                            .stats
                            .refused_subscriptions
                            .fetch_add(refused as u64, Ordering::Relaxed);
                        let n = rights
                            .refused_subscribe
                            .fetch_add(refused as u64, Ordering::Relaxed)
                            + refused as u64;
                        if let Some(held_back) = ready(&front.warnings.subscribe) {
                            let filters: Vec<&str> = sub
                                .filters
                                .iter()
                                .zip(&mask)
                                .filter(|(_, ok)| !**ok)
                                .map(|(f, _)| f.path.as_str())
                                .collect();
                            tracing::warn!(
                                %peer,
                                user = rights.name,
                                ?filters,
                                refused_for_user = n,
                                held_back,
                                "broker: subscription refused: not inside this user's filters"
                            );
                        }
                        if refused == mask.len() {
                            let codes = vec![SubscribeReasonCode::Failure; mask.len()];
                            let mut b = BytesMut::new();
                            if SubAck::new(sub.pkid, codes).write(&mut b).is_ok() {
                                // The SUBACK goes out in order with what is already
                                // on its way.
                                if !out.is_empty() {
                                    if w.write_all(&out).await.is_err() {
                                        return;
                                    }
                                    out.clear();
                                }
                                if replies.send(b.freeze()).await.is_err() {
                                    return;
                                }
                            }
                        } else {
                            let mut allowed = sub.clone();
                            allowed.filters = sub
                                .filters
                                .iter()
                                .zip(&mask)
                                .filter(|(_, ok)| **ok)
                                .map(|(f, _)| f.clone())
                                .collect();
                            if let Ok(mut p) = pending.lock() {
                                p.insert(sub.pkid, mask);
                            }
                            if allowed.write(&mut out).is_err() {
                                close = true;
                                break;
                            }
                        }
                    }
                }
                Ok(PacketType::Connect) => {
                    // A second CONNECT is a protocol violation (MQTT-3.1.0-2).
                    close = true;
                    break;
                }
                Ok(PacketType::Disconnect) => {
                    out.extend_from_slice(&buf[..len]);
                    close = true;
                    break;
                }
                Ok(_) => out.extend_from_slice(&buf[..len]),
                Err(_) => {
                    close = true;
                    break;
                }
            }
            buf.advance(len);
        }
        if !out.is_empty() {
            front.stats.flow.sent(forwarded);
            if w.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if close {
            let _ = w.shutdown().await;
            return;
        }
        if front.stats.flow.full() {
            // The pipeline lags: read nothing more from this client until it has caught
            // up, so the client waits on TCP instead of the broker overwriting its log.
            tokio::select! {
                _ = front.stats.flow.room() => {}
                _ = closed(&mut closing) => {
                    drop(reading);
                    std::future::pending::<()>().await;
                    return;
                }
            }
        }
        let read = tokio::select! {
            read = tokio::time::timeout(idle, r.read_buf(&mut buf)) => read,
            _ = closed(&mut closing) => {
                // Nothing half forwarded: stop reading from the client, keep the way
                // back open (its acknowledgements, the service's last status).
                drop(reading);
                std::future::pending::<()>().await;
                return;
            }
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => {
                front.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, user = rights.name, ?idle, "broker: idle client disconnected");
                return;
            }
        }
    }
}

/// The length of the fixed header (2–5 bytes) of the frame at the start of `buf`,
/// which `check` found whole.
fn fixed_header_len(buf: &[u8]) -> usize {
    buf.iter()
        .skip(1)
        .take(4)
        .position(|b| b & 0x80 == 0)
        .map_or(5, |i| i + 2)
}

/// Broker → client: forwards everything, merging the refusals into SUBACKs.
async fn broker_to_client<R, W>(
    mut r: R,
    mut buf: BytesMut,
    mut w: W,
    pending: Arc<Mutex<HashMap<u16, Vec<bool>>>>,
    mut replies: mpsc::Receiver<Bytes>,
    max_packet: usize,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // What rumqttd sends a subscriber may be larger than what a client may send.
    let max = max_packet.saturating_mul(4).max(1 << 20);
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            let h = match check(buf.iter(), max) {
                Ok(h) => h,
                Err(CodecError::InsufficientBytes(_)) => break,
                Err(_) => return,
            };
            let len = h.frame_length();
            let rewritten = if matches!(h.packet_type(), Ok(PacketType::SubAck)) {
                merge_suback(&pending, h, &buf[..len])
            } else {
                None
            };
            match rewritten {
                Some(b) => out.extend_from_slice(&b),
                None => out.extend_from_slice(&buf[..len]),
            }
            buf.advance(len);
        }
        if !out.is_empty() {
            if w.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        tokio::select! {
            n = r.read_buf(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            reply = replies.recv() => match reply {
                Some(b) => out.extend_from_slice(&b),
                None => return,
            },
        }
    }
}

/// rumqttd's SUBACK for a SUBSCRIBE the front trimmed, with 0x80 put back in the
/// places of the refused filters.
fn merge_suback(
    pending: &Mutex<HashMap<u16, Vec<bool>>>,
    h: rumqttc::mqttbytes::FixedHeader,
    frame: &[u8],
) -> Option<BytesMut> {
    let ack = SubAck::read(h, Bytes::copy_from_slice(frame)).ok()?;
    let mask = pending.lock().ok()?.remove(&ack.pkid)?;
    let mut given = ack.return_codes.into_iter();
    let codes = mask
        .iter()
        .map(|ok| {
            if *ok {
                given.next().unwrap_or(SubscribeReasonCode::Failure)
            } else {
                SubscribeReasonCode::Failure
            }
        })
        .collect();
    let mut b = BytesMut::new();
    SubAck::new(ack.pkid, codes).write(&mut b).ok()?;
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_nul_and_empty_names_are_bad_topics() {
        assert!(bad_topic(b"sensors/+/t"));
        assert!(bad_topic(b"sensors/#"));
        assert!(bad_topic(b"sensors/a\0b"));
        assert!(bad_topic(b""));
        assert!(bad_topic(b"\xff\xfe"));
        assert!(!bad_topic(b"sensors/a/b"));
    }

    #[test]
    fn the_topic_is_read_after_the_fixed_header() {
        let mut b = BytesMut::new();
        rumqttc::mqttbytes::v4::Publish::new("sensors/x/y", rumqttc::QoS::AtMostOnce, "1")
            .write(&mut b)
            .unwrap();
        let h = check(b.iter(), 1 << 20).unwrap();
        assert_eq!(h.frame_length(), b.len());
        let hl = fixed_header_len(&b);
        assert_eq!(hl, 2);
        assert_eq!(publish_topic(&b, hl), Some(&b"sensors/x/y"[..]));
    }
}
