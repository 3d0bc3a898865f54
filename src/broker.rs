//! The embedded MQTT broker (rumqttd): sensors publish to it over TCP; the pipeline
//! reads from it through an in-process link, without a TCP hop.
//!
//! rumqttd's `Broker::start` blocks for ever and only logs a failed bind, so the
//! address is checked before and after starting it: a taken port is an error that
//! names the address, not a broker that silently never listens.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::config::BrokerConfig;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot listen on {addr}: {source} (is another broker running there? set broker.listen)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the embedded broker did not start listening on {addr} within {waited:?}")]
    NotListening { addr: SocketAddr, waited: Duration },
    #[error("broker.username is set but ${var} (the password) is not")]
    MissingPassword { var: String },
    #[error("in-process link to the broker failed: {0}")]
    Link(String),
}

/// In-process connections to the broker, taken before it starts.
pub struct Link {
    pub tx: LinkTx,
    pub rx: LinkRx,
}

/// Starts rumqttd on `cfg.listen`, opens one in-process link per (name, filters) in
/// `links` and subscribes it to its filters before the listener opens — so no message
/// published by a sensor can arrive before the pipeline listens — and waits until the
/// listener accepts connections. The broker runs on its own threads until the process
/// exits.
pub fn start(cfg: &BrokerConfig, links: &[(&str, Vec<String>)]) -> Result<Vec<Link>, BrokerError> {
    let addr = cfg.listen;
    // Fails fast and clearly when the port is taken; released before rumqttd binds.
    drop(TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?);

    let auth = match &cfg.username {
        Some(user) => {
            let pass =
                std::env::var(&cfg.password_env).map_err(|_| BrokerError::MissingPassword {
                    var: cfg.password_env.clone(),
                })?;
            Some(HashMap::from([(user.clone(), pass)]))
        }
        None => None,
    };
    let server = ServerSettings {
        name: "centinela-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: cfg.max_payload.max(1024) + 1024,
            max_inflight_count: 500,
            auth,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    // The commit log is the buffer between publishers and the pipeline: the configured
    // size, in 8 segments. rumqttd keeps every message until its segment rotates out
    // (read or not) and counts only 4 + topic + payload bytes of each, while an entry
    // costs about 8× that in memory for small sensor messages (its PublishData and the
    // read buffer its Bytes keep alive): 32 MiB measured ~290 MB resident at 400k
    // msgs/s. It also acknowledges QoS 1 on append, so a smaller log loses acknowledged
    // messages when the pipeline lags (docs/PERFORMANCE.md has the figures).
    let segment = (cfg.buffer_mib * 1024 * 1024 / 8).max(1024);
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: cfg.max_connections,
            // Messages the router hands a subscriber per read at QoS 0. With rumqttd's
            // usual 1,000 the router's per-read work bounded the pipeline under a flood
            // (70–80k msgs/s read flat out, the rest overwritten in the log); 50,000
            // lets it read ~550k/s and keep up. At a sensor's pace reads stay small, and
            // a lagging subscriber holds at most one read (~6 MB of small messages)
            // before the router pauses it.
            max_outgoing_packet_count: 50_000,
            max_segment_size: segment,
            max_segment_count: 8,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let mut broker = Broker::new(config);
    let mut out = Vec::with_capacity(links.len());
    for (name, filters) in links {
        let (mut tx, rx) = broker
            .link(name)
            .map_err(|e| BrokerError::Link(e.to_string()))?;
        for f in filters {
            tx.subscribe(f.clone())
                .map_err(|e| BrokerError::Link(format!("subscribe {f}: {e}")))?;
        }
        out.push(Link { tx, rx });
    }
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(|e| BrokerError::Link(e.to_string()))?;

    let waited = Duration::from_secs(5);
    let deadline = Instant::now() + waited;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening { addr, waited });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(%addr, auth = cfg.username.is_some(), "embedded MQTT broker listening");
    Ok(out)
}

/// A free loopback port, for tests and `demo` (bound, then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_an_error_naming_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let cfg = BrokerConfig {
            listen: taken.local_addr().unwrap(),
            ..Default::default()
        };
        let err = start(&cfg, &[]).err().expect("must fail");
        let msg = err.to_string();
        assert!(msg.contains(&cfg.listen.to_string()), "{msg}");
        assert!(msg.starts_with("cannot listen on"), "{msg}");
    }
}
