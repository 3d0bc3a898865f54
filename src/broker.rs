//! The embedded MQTT broker (rumqttd): sensors publish to it over TCP (or TLS); the
//! pipeline reads from it through an in-process link, without a TCP hop.
//!
//! ```text
//!  clients ──► broker.listen / tls_listen ──► front (users, ACLs, limits) ──► rumqttd on
//!              127.0.0.1:<internal>, which only the front's random credential opens
//!  pipeline ◄── in-process links (the service's own, trusted) ◄──┘
//! ```
//!
//! The public addresses are bound before anything else starts, so a taken port is an
//! error that names the address (and says how to use the broker already there).

mod acl;
mod flow;
mod front;
mod viewer;

pub use acl::{covers, Rights, Users, UsersError, ANONYMOUS, RESERVED_PREFIX};
pub use flow::{entry_size, Flow};
pub use front::{Door, FrontStats};
pub use viewer::{read_viewer_login, viewer_file, write_viewer_login, VIEWER_USER};

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::config::BrokerConfig;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot listen on {addr}: {source}. Is another MQTT broker (Mosquitto?) already \
         running there? To use it instead, set in [broker]: mode = \"external\" and \
         url = \"mqtt://127.0.0.1:1883\" (its address); or move the embedded broker with \
         broker.listen"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the embedded broker did not start listening on {addr} within {waited:?}")]
    NotListening { addr: SocketAddr, waited: Duration },
    #[error(transparent)]
    Users(#[from] UsersError),
    #[error("broker TLS listener: {0}")]
    Tls(String),
    #[error("in-process link to the broker failed: {0}")]
    Link(String),
}

impl BrokerError {
    /// A problem of the configuration or the machine's setup (exit code 2), not a
    /// failure at run time.
    pub fn is_setup(&self) -> bool {
        matches!(
            self,
            BrokerError::Bind { .. } | BrokerError::Users(_) | BrokerError::Tls(_)
        )
    }
}

/// In-process connections to the broker, taken before it starts.
pub struct Link {
    pub tx: LinkTx,
    pub rx: LinkRx,
    /// What the link reads is counted here ([`Flow::taken`]), so the front can hold
    /// publishers back while the pipeline lags.
    pub flow: Arc<Flow>,
}

/// Starts rumqttd on `cfg.listen`, opens one in-process link per (name, filters) in
/// `links` and subscribes it to its filters before the listener opens — so no message
/// published by a sensor can arrive before the pipeline listens — and waits until the
/// listener accepts connections. The broker runs on its own threads until the process
/// exits.
pub fn start(cfg: &BrokerConfig, links: &[(&str, Vec<String>)]) -> Result<Vec<Link>, BrokerError> {
    Ok(start_broker(cfg, links, None)?.0)
}

/// [`start`], also adding a local viewer user (name, password) with the rights of
/// `centinela tui` when given; returns the front's figures too, and the door that
/// closes it when the service stops.
pub fn start_broker(
    cfg: &BrokerConfig,
    links: &[(&str, Vec<String>)],
    viewer: Option<(String, String)>,
) -> Result<(Vec<Link>, Arc<FrontStats>, Door), BrokerError> {
    let mut users = Users::from_config(cfg)?;
    if let Some((name, pass)) = viewer {
        let rights = Users::viewer_rights(&name);
        users.insert(&name, pass, rights);
    }
    // The public addresses first: a taken port fails here, clearly, before any thread.
    let mut public = Vec::new();
    if !cfg.tls_only {
        let addr = cfg.listen;
        let l = TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
        public.push((l, None));
    }
    if let Some(files) = cfg.tls_files() {
        let acceptor = tls_acceptor(&files)?;
        let addr = cfg.tls_listen.unwrap_or(cfg.listen);
        let l = TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
        public.push((l, Some(acceptor)));
    }
    for (l, _) in &public {
        l.set_nonblocking(true)
            .map_err(|e| BrokerError::Link(e.to_string()))?;
    }

    // rumqttd on a loopback port that only the front's credential opens.
    let internal_port = free_port().map_err(|e| BrokerError::Link(e.to_string()))?;
    let internal = SocketAddr::from(([127, 0, 0, 1], internal_port));
    let internal_login = ("centinela-front".to_string(), random_secret()?);
    let server = ServerSettings {
        name: "centinela-v4".into(),
        listen: internal,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: cfg.max_payload.max(1024) + 1024,
            max_inflight_count: 500,
            auth: Some(HashMap::from([internal_login.clone()])),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    // The commit log is the buffer between publishers and the pipeline: the configured
    // size, in 8 segments. rumqttd keeps every message until its segment rotates out
    // (read or not) and counts only 4 + topic + payload bytes of each, while an entry
    // costs 8–15× that in memory for small sensor messages (its PublishData with the
    // v5 properties, the Vec's spare room, and the read buffer its Bytes keep alive):
    // 32 MiB measured ~350 MB resident flat out, 2 MiB ~85 MB. It acknowledges QoS 1 on
    // append, so the front holds publishers back before the log could overwrite what
    // the pipeline has not read (broker/flow.rs): the log is a buffer, not a store.
    let segment = (cfg.buffer_mib * 1024 * 1024 / 8).max(1024);
    // Unread entries stay clear of the oldest two segments, the ones a rotation drops:
    // the front stops reading from clients above six segments unread.
    let flow = Arc::new(Flow::new(
        links.iter().flat_map(|(_, f)| f.iter().cloned()).collect(),
        6 * segment as u64,
    ));
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: cfg.max_connections,
            // Messages the router hands a subscriber per read at QoS 0. rumqttd's usual
            // 1,000 bounded the pipeline at 70–80k msgs/s flat out; 10,000 reads
            // ~300k/s. Each read is copied into the link's buffer before the pipeline
            // takes it, so this is also memory: ~2 MB of small messages (50,000 cost
            // ~60 MB more at the peak and read no faster).
            max_outgoing_packet_count: 10_000,
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
        out.push(Link {
            tx,
            rx,
            flow: flow.clone(),
        });
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
    while TcpStream::connect_timeout(&internal, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening {
                addr: internal,
                waited,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let front = Arc::new(front::Front::new(
        users,
        internal,
        internal_login,
        cfg.max_payload.max(1024) + 1024,
        cfg.max_keepalive.std(),
        cfg.max_connections_per_ip,
        cfg.max_connections,
        Duration::from_secs(10),
        closing_rx,
        flow,
    ));
    let door = front.door(closing);
    let stats = front.stats.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("broker-front")
        .enable_all()
        .build()
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    let mut addrs = Vec::new();
    for (l, tls) in public {
        addrs.push((l.local_addr().ok(), tls.is_some()));
        let front = front.clone();
        runtime.spawn(async move {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => front::serve(l, tls, front).await,
                Err(e) => tracing::error!(error = %e, "broker: cannot listen"),
            }
        });
    }
    std::thread::Builder::new()
        .name("broker-front".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    for (addr, tls) in addrs {
        let addr = addr.map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(
            %addr,
            tls,
            users = cfg.users.len() + cfg.username.iter().count(),
            anonymous = cfg.anonymous_allowed(),
            "embedded MQTT broker listening"
        );
    }
    Ok((out, stats, door))
}

/// A random credential (hex), from the operating system's generator.
pub fn random_secret() -> Result<String, BrokerError> {
    let mut b = [0u8; 24];
    getrandom::getrandom(&mut b).map_err(|e| BrokerError::Link(format!("no randomness: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The TLS acceptor of `tls_listen`: the certificate chain and key from PEM files.
fn tls_acceptor(files: &crate::config::TlsFiles) -> Result<tokio_rustls::TlsAcceptor, BrokerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| BrokerError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let pem = read(&files.cert_file)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            BrokerError::Tls(format!(
                "{}: not a PEM certificate chain: {e}",
                files.cert_file.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(BrokerError::Tls(format!(
            "{}: no certificate in it (PEM \"BEGIN CERTIFICATE\" expected)",
            files.cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key_file)?).map_err(|e| {
        BrokerError::Tls(format!(
            "{}: not a PEM private key: {e}",
            files.key_file.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            BrokerError::Tls(format!(
                "{} and {} do not make a usable certificate and key: {e}",
                files.cert_file.display(),
                files.key_file.display()
            ))
        })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
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
        assert!(msg.contains("mode = \"external\""), "{msg}");
        assert!(err.is_setup());
    }
}
