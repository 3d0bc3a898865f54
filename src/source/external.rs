//! The connection of the external-broker source, in MQTT 3.1.1 or MQTT 5
//! (`[broker] protocol`): rumqttc's two clients behind one small surface, so the
//! source loop in [`super::mqtt`] is written once.
//!
//! ```text
//!  [broker] url, protocol, TLS files ─► Connection::new ─► rumqttc (v3.1.1 | v5)
//!  Connection::poll ─► Incoming::{Connected, Publish(Message), DisconnectSent, Other}
//!  Message::ack_token ─► Client::try_ack       (manual acks: after the hand-off)
//! ```
//!
//! Acknowledgements are manual: a QoS 1 message is acknowledged only once its readings
//! are handed downstream, so what the broker saw acknowledged is never lost on a stop.
//! The session is persistent (`clean_session = false`; in MQTT 5 `clean_start = false`
//! with a session that does not expire), so what was not acknowledged is delivered
//! again after a restart.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5;

use super::mqtt::SourceError;
use crate::config::{BrokerConfig, BrokerUrl, MqttProtocol, Tls};

/// Requests (subscriptions, acknowledgements) queued for rumqttc's event loop at most.
const REQUESTS: usize = 10_000;

/// A connection to the external broker in either MQTT version: the event loop, and
/// the client handle that queues requests for it (shareable across awaits).
pub(crate) struct Connection {
    pub client: Client,
    events: Events,
}

/// The handle that queues subscriptions, acknowledgements and the DISCONNECT.
pub(crate) enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

enum Events {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// What one poll of the connection brought.
pub(crate) enum Incoming {
    /// The broker accepted the connection.
    Connected {
        session_present: bool,
    },
    Publish(Message),
    /// Our DISCONNECT went out: everything queued before it (acknowledgements) too.
    DisconnectSent,
    Other,
}

/// A message from the broker.
pub(crate) struct Message {
    topic: Topic,
    pub payload: Bytes,
    /// Set only on what the broker delivers from its store at subscribe time.
    pub retain: bool,
    ack: Option<AckToken>,
}

enum Topic {
    Text(String),
    Bytes(Bytes),
}

impl Message {
    /// The topic; a topic that is not UTF-8 (MQTT 5 sends bytes) reads as empty and
    /// is refused by the decoder like any bad topic.
    pub fn topic(&self) -> &str {
        match &self.topic {
            Topic::Text(t) => t,
            Topic::Bytes(b) => std::str::from_utf8(b).unwrap_or(""),
        }
    }

    /// What acknowledges this message later; `None` for QoS 0.
    pub fn ack_token(&mut self) -> Option<AckToken> {
        self.ack.take()
    }
}

/// Enough of a received publish to acknowledge it: its packet id, and whether it was
/// QoS 2 (answered with PUBREC) rather than QoS 1 (PUBACK).
pub(crate) struct AckToken {
    pkid: u16,
    exactly_once: bool,
}

/// A failed poll.
pub(crate) enum PollError {
    /// The broker answered CONNACK with a refusal; the reason in words.
    Refused(String),
    /// The connection failed or was lost. `closed_early`: closed before any CONNACK
    /// (how some brokers refuse a login).
    Lost {
        error: Box<dyn std::error::Error + Send + Sync + 'static>,
        closed_early: bool,
    },
}

impl Connection {
    /// A connection for `[broker]` (not yet connected: the first poll connects).
    pub fn new(cfg: &BrokerConfig) -> Result<(Connection, BrokerUrl, Tls), SourceError> {
        let url = cfg.broker_url().map_err(SourceError::Url)?;
        let tls = cfg.tls();
        let password = password(cfg)?;
        let conn = match cfg.protocol {
            MqttProtocol::V311 => {
                let (mut opts, _, _) = super::mqtt::external_options(cfg, &cfg.client_id)?;
                opts.set_manual_acks(true);
                let (client, events) = rumqttc::AsyncClient::new(opts, REQUESTS);
                Connection {
                    client: Client::V4(client),
                    events: Events::V4(Box::new(events)),
                }
            }
            MqttProtocol::V5 => {
                let transport = centinela_sim::broker_url::transport(&url, &tls)
                    .map_err(|e| SourceError::Certificate(format!("{url}: {e}")))?;
                let mut opts = v5::MqttOptions::new(&cfg.client_id, url.host.clone(), url.port);
                opts.set_transport(transport);
                opts.set_clean_start(false);
                // The session outlives the connection (MQTT 5 ends it at disconnect
                // unless told otherwise): the broker keeps what we did not acknowledge.
                opts.set_session_expiry_interval(Some(u32::MAX));
                opts.set_keep_alive(Duration::from_secs(30));
                opts.set_max_packet_size(Some((cfg.max_payload + 4096) as u32));
                opts.set_manual_acks(true);
                if let (Some(user), Some(pass)) = (&cfg.username, password) {
                    opts.set_credentials(user.clone(), pass);
                }
                let (client, events) = v5::AsyncClient::new(opts, REQUESTS);
                Connection {
                    client: Client::V5(client),
                    events: Events::V5(Box::new(events)),
                }
            }
        };
        Ok((conn, url, tls))
    }

    /// `"3.1.1"` or `"5"`, for the log.
    pub fn protocol(&self) -> &'static str {
        match self.events {
            Events::V4(_) => "3.1.1",
            Events::V5(_) => "5",
        }
    }

    /// Drives the connection: connects, reconnects (no backoff: the caller waits),
    /// sends what is queued, and returns the next thing that happened.
    pub async fn poll(&mut self) -> Result<Incoming, PollError> {
        match &mut self.events {
            Events::V4(events) => {
                use rumqttc::{ConnectionError as E, Event, Outgoing, Packet, StateError as S};
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => Ok(Incoming::Connected {
                        session_present: a.session_present,
                    }),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let ack = (p.qos != rumqttc::QoS::AtMostOnce).then_some(AckToken {
                            pkid: p.pkid,
                            exactly_once: p.qos == rumqttc::QoS::ExactlyOnce,
                        });
                        Ok(Incoming::Publish(Message {
                            topic: Topic::Text(p.topic),
                            payload: p.payload,
                            retain: p.retain,
                            ack,
                        }))
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(Incoming::DisconnectSent),
                    Ok(_) => Ok(Incoming::Other),
                    Err(E::ConnectionRefused(code)) => Err(PollError::Refused(refusal_v4(code))),
                    Err(e) => {
                        let closed_early = matches!(
                            e,
                            E::MqttState(S::Io(_) | S::ConnectionAborted) | E::NotConnAck(_)
                        );
                        Err(PollError::Lost {
                            error: Box::new(e),
                            closed_early,
                        })
                    }
                }
            }
            Events::V5(events) => {
                use v5::mqttbytes::v5::Packet;
                use v5::{ConnectionError as E, Event, StateError as S};
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => Ok(Incoming::Connected {
                        session_present: a.session_present,
                    }),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let ack = (p.qos != v5::mqttbytes::QoS::AtMostOnce).then_some(AckToken {
                            pkid: p.pkid,
                            exactly_once: p.qos == v5::mqttbytes::QoS::ExactlyOnce,
                        });
                        Ok(Incoming::Publish(Message {
                            topic: Topic::Bytes(p.topic),
                            payload: p.payload,
                            retain: p.retain,
                            ack,
                        }))
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                        Ok(Incoming::DisconnectSent)
                    }
                    Ok(_) => Ok(Incoming::Other),
                    Err(E::ConnectionRefused(code)) => Err(PollError::Refused(refusal_v5(code))),
                    Err(e) => {
                        let closed_early = matches!(
                            e,
                            E::MqttState(S::Io(_) | S::ConnectionAborted) | E::NotConnAck(_)
                        );
                        Err(PollError::Lost {
                            error: Box::new(e),
                            closed_early,
                        })
                    }
                }
            }
        }
    }
}

impl Client {
    /// Subscribes to `filter` at QoS 1.
    pub async fn subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V4(client) => client
                .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(client) => client
                .subscribe(filter, v5::mqttbytes::QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues the acknowledgement of a message; `false` when rumqttc's request queue
    /// is full (try again after the next poll).
    pub fn try_ack(&self, token: &AckToken) -> bool {
        match self {
            Client::V4(c) => {
                use rumqttc::QoS;
                let qos = if token.exactly_once {
                    QoS::ExactlyOnce
                } else {
                    QoS::AtLeastOnce
                };
                let mut p = rumqttc::Publish::new("", qos, Vec::new());
                p.pkid = token.pkid;
                c.try_ack(&p).is_ok()
            }
            Client::V5(c) => {
                use v5::mqttbytes::QoS;
                let qos = if token.exactly_once {
                    QoS::ExactlyOnce
                } else {
                    QoS::AtLeastOnce
                };
                let mut p = v5::mqttbytes::v5::Publish::new("", qos, Vec::new(), None);
                p.pkid = token.pkid;
                c.try_ack(&p).is_ok()
            }
        }
    }

    /// Queues a DISCONNECT behind what is already queued.
    pub fn try_disconnect(&self) {
        let _ = match self {
            Client::V4(client) => client.try_disconnect().map_err(|_| ()),
            Client::V5(client) => client.try_disconnect().map_err(|_| ()),
        };
    }
}

/// The password from `password_env` when a username is set; an empty variable is a
/// mistake, not "log in without a password".
pub(crate) fn password(cfg: &BrokerConfig) -> Result<Option<String>, SourceError> {
    match &cfg.username {
        None => Ok(None),
        Some(_) => std::env::var(&cfg.password_env)
            .ok()
            .filter(|p| !p.is_empty())
            .map(Some)
            .ok_or_else(|| SourceError::MissingPassword(cfg.password_env.clone())),
    }
}

fn refusal_v4(code: rumqttc::ConnectReturnCode) -> String {
    use rumqttc::ConnectReturnCode as C;
    match code {
        C::BadUserNamePassword => "bad username or password".into(),
        C::NotAuthorized => "not authorised (check broker.username and the password)".into(),
        C::BadClientId => "client id rejected (set broker.client_id)".into(),
        C::ServiceUnavailable => "service unavailable".into(),
        other => format!("{other:?}"),
    }
}

fn refusal_v5(code: v5::mqttbytes::v5::ConnectReturnCode) -> String {
    use v5::mqttbytes::v5::ConnectReturnCode as C;
    match code {
        C::BadUserNamePassword => "bad username or password".into(),
        C::NotAuthorized => "not authorised (check broker.username and the password)".into(),
        C::BadClientId | C::ClientIdentifierNotValid => {
            "client id rejected (set broker.client_id)".into()
        }
        C::UnsupportedProtocolVersion | C::RefusedProtocolVersion => {
            "the broker does not speak MQTT 5 (set broker.protocol = \"v3.1.1\")".into()
        }
        C::ServiceUnavailable | C::ServerUnavailable | C::ServerBusy => {
            "service unavailable".into()
        }
        C::Banned => "this client is banned by the broker".into(),
        other => format!("{other:?}"),
    }
}
