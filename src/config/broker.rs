//! `[broker]`: the embedded MQTT broker (listeners, limits, users, TLS) or an external
//! one (its URL, protocol version and TLS files), with the checks of its TLS settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{key, BrokerUrl, BrokerUser, Duration, Invalid, Tls};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BrokerMode {
    #[default]
    Embedded,
    External,
}

/// The MQTT version spoken to an external broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum MqttProtocol {
    /// MQTT 3.1.1, which every broker accepts.
    #[default]
    #[serde(rename = "v3.1.1", alias = "v3", alias = "v4", alias = "3.1.1")]
    V311,
    /// MQTT 5.
    #[serde(rename = "v5", alias = "5")]
    V5,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    pub mode: BrokerMode,
    /// Embedded listener address.
    pub listen: SocketAddr,
    /// External broker: `mqtt://host[:port]`, or `mqtts://host[:port]` for TLS.
    pub url: Option<String>,
    /// MQTT version spoken to the external broker: `"v3.1.1"` (default) or `"v5"`.
    pub protocol: MqttProtocol,
    /// With `mqtts://`: the CA certificate(s) (PEM) the broker's certificate must be
    /// signed by; the system's root certificates when unset.
    pub ca_file: Option<PathBuf>,
    /// With `mqtts://`: a client certificate (PEM) for brokers that authenticate
    /// clients by certificate; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The private key (PEM) of `client_cert`.
    pub client_key: Option<PathBuf>,
    pub username: Option<String>,
    /// Name of the environment variable that holds the password.
    pub password_env: String,
    /// Listening on a non-loopback address without credentials must be asked for.
    pub allow_anonymous: bool,
    /// Client id used with an external broker; fixed so the session survives reconnects.
    pub client_id: String,
    /// Largest payload accepted, in bytes.
    pub max_payload: usize,
    /// Most MQTT connections the embedded broker accepts at once.
    pub max_connections: usize,
    /// Size of the embedded broker's buffer between publishers and the pipeline, in
    /// MiB of message bytes. rumqttd keeps every message until its buffer rotates, at
    /// 8–15× its bytes in memory for small messages (measured flat out: 32 → ~350 MB
    /// peak, 2 → ~94 MB). It is not a store: once the pipeline has three quarters of it
    /// unread, the broker front stops reading from publishers until it catches up.
    pub buffer_mib: usize,
    /// `[[broker.users]]`: who may connect to the embedded broker and what each may do.
    pub users: Vec<BrokerUser>,
    /// A TLS listener of the embedded broker (beside `listen`, or alone with `tls_only`).
    pub tls_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) of the TLS listener.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of the TLS listener.
    pub key_file: Option<PathBuf>,
    /// Only the TLS listener: no plain `listen`.
    pub tls_only: bool,
    /// Longest keepalive the broker honours: a client silent for 1.5 × this (or its own
    /// shorter keepalive) is disconnected.
    pub max_keepalive: Duration,
    /// Most connections from one IP address at once.
    pub max_connections_per_ip: usize,
}

impl BrokerConfig {
    /// The external broker's address (`url`), parsed.
    pub fn broker_url(&self) -> Result<BrokerUrl, String> {
        BrokerUrl::parse(self.url.as_deref().unwrap_or(""))
    }

    /// The TLS files of the external connection.
    pub fn tls(&self) -> Tls {
        Tls {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }

    /// TLS files only with `mqtts://`, certificate and key together, and readable.
    pub(super) fn validate_tls(&self, url: &BrokerUrl, out: &mut Vec<Invalid>) {
        let at = |f: &str| [key("broker"), key(f)];
        let files = [
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ];
        if !url.tls {
            if let Some((field, _)) = files.iter().find(|(_, p)| p.is_some()) {
                out.push(Invalid::new(
                    &at(field),
                    format!("{url} is plain MQTT; TLS files need an mqtts:// url"),
                ));
            }
            return;
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => out.push(Invalid::new(
                &at("client_key"),
                "client_cert needs client_key (the certificate's private key, PEM)",
            )),
            (None, Some(_)) => out.push(Invalid::new(
                &at("client_cert"),
                "client_key needs client_cert (the client certificate, PEM)",
            )),
            _ => {}
        }
        for (field, path) in files {
            if let Some(p) = path {
                if let Err(e) = std::fs::File::open(p) {
                    out.push(Invalid::new(
                        &at(field),
                        format!("cannot read {}: {e}", p.display()),
                    ));
                }
            }
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            mode: BrokerMode::Embedded,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            url: None,
            protocol: MqttProtocol::V311,
            ca_file: None,
            client_cert: None,
            client_key: None,
            username: None,
            password_env: "CENTINELA_MQTT_PASSWORD".into(),
            allow_anonymous: false,
            client_id: "centinela".into(),
            max_payload: 64 * 1024,
            max_connections: 1000,
            buffer_mib: 2,
            users: Vec::new(),
            tls_listen: None,
            cert_file: None,
            key_file: None,
            tls_only: false,
            max_keepalive: Duration::from_secs(300),
            max_connections_per_ip: 100,
        }
    }
}
