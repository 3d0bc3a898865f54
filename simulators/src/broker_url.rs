//! Where an MQTT broker is and how to reach it: the one broker address type of the
//! project (the service's `[broker] url`, `simulate --broker`, `tui --broker`,
//! `bench --broker`), and the TLS settings that go with `mqtts://`.
//!
//! ```text
//!  "mqtts://broker.lan:8883" ─► BrokerUrl ─┐
//!  ca_file, client_cert, client_key ─► Tls ─┴─► connect_options() ─► rumqttc::MqttOptions
//! ```
//!
//! Rules, the same everywhere: `mqtt://` (plain, port 1883 by default) or `mqtts://`
//! (TLS, port 8883 by default); `tcp://` and `ssl://` are accepted as their synonyms.
//! A URL must not carry `user:password@` — secrets come from the environment — and has
//! no path. TLS uses rustls with the ring provider; without `ca_file` the system's root
//! certificates are trusted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// An MQTT broker's address: `mqtt://host:port` or `mqtts://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// `mqtts://`: the connection is TLS.
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    /// Parses `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]`; the error says what is wrong
    /// in words a person can act on.
    pub fn parse(text: &str) -> Result<BrokerUrl, String> {
        let text = text.trim();
        let Some((scheme, _)) = text.split_once("://") else {
            return Err(format!(
                "{text:?} has no scheme: write mqtt://{text} (or mqtts://{text} for TLS)"
            ));
        };
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(format!(
                    "{text:?}: scheme {other}:// is not MQTT; use mqtt:// or mqtts://"
                ))
            }
        };
        let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{}: credentials do not belong in the URL; set username = \"…\" and \
                 put the password in the environment variable named by password_env",
                redact(&url)
            ));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{text:?}: an MQTT broker URL has no path or query"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err(format!("{text:?} has no host")),
        };
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        Ok(BrokerUrl { tls, host, port })
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

impl std::str::FromStr for BrokerUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BrokerUrl::parse(s)
    }
}

fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// The TLS files of an `mqtts://` connection. All optional: without `ca_file` the
/// system roots are trusted; `client_cert` and `client_key` go together, for brokers
/// that authenticate clients by certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// A TLS setting that cannot be used, found before connecting.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {what} {path}: {error}")]
    Read {
        what: &'static str,
        path: PathBuf,
        error: String,
    },
    #[error("{what} {path} holds no {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("client_cert and client_key go together: {0} is missing")]
    Half(&'static str),
    #[error("the client certificate {cert} and key {key} do not fit together: {error}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        error: String,
    },
    #[error("no root certificates: the system has none readable and no ca_file is set")]
    NoRoots,
    #[error("{0}")]
    Tls(String),
}

impl Tls {
    /// Whether any TLS file is configured (an error with a plain `mqtt://` URL).
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }

    /// The rustls client configuration (ring provider) these files describe.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in read_certs(path, "ca_file")? {
                    roots.add(cert).map_err(|e| TlsSetupError::Read {
                        what: "ca_file",
                        path: path.clone(),
                        error: e.to_string(),
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(TlsSetupError::NoRoots);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        match (&self.client_cert, &self.client_key) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(_), None) => Err(TlsSetupError::Half("client_key")),
            (None, Some(_)) => Err(TlsSetupError::Half("client_cert")),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "client_cert")?;
                let pk = read_key(key)?;
                builder
                    .with_client_auth_cert(chain, pk)
                    .map_err(|e| TlsSetupError::Mismatch {
                        cert: cert.clone(),
                        key: key.clone(),
                        error: e.to_string(),
                    })
            }
        }
    }
}

fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes = std::fs::read(path).map_err(|e| TlsSetupError::Read {
        what,
        path: path.to_path_buf(),
        error: e.to_string(),
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsSetupError::Read {
            what,
            path: path.to_path_buf(),
            error: format!("not PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "PEM certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let bytes = std::fs::read(path).map_err(|e| TlsSetupError::Read {
        what: "client_key",
        path: path.to_path_buf(),
        error: e.to_string(),
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsSetupError::Empty {
        what: "client_key",
        path: path.to_path_buf(),
        expected: "PEM private key",
    })
}

/// `MqttOptions` for `url` with the transport it needs (TLS for `mqtts://`).
pub fn connect_options(
    client_id: &str,
    url: &BrokerUrl,
    tls: &Tls,
) -> Result<MqttOptions, TlsSetupError> {
    let mut opts = MqttOptions::new(client_id, url.host.clone(), url.port);
    opts.set_transport(transport(url, tls)?);
    Ok(opts)
}

/// The transport `url` needs: TLS with `tls`'s files for `mqtts://`, plain TCP for
/// `mqtt://` (where TLS files are an error). Shared by MQTT 3.1.1 and 5 options.
pub fn transport(url: &BrokerUrl, tls: &Tls) -> Result<Transport, TlsSetupError> {
    if url.tls {
        let config = tls.client_config()?;
        Ok(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )))
    } else if tls.is_set() {
        Err(TlsSetupError::Tls(format!(
            "{url} is not TLS but ca_file/client_cert/client_key are set: use mqtts://"
        )))
    } else {
        Ok(Transport::Tcp)
    }
}

/// When a connection error is a certificate or TLS handshake problem, what to tell a
/// person: which host, which file, and that it is about certificates. `None` for
/// errors of other kinds (refused, unreachable, …), which may be retried.
pub fn certificate_problem(
    error: &(dyn std::error::Error + 'static),
    url: &BrokerUrl,
    tls: &Tls,
) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut found = None;
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            found = Some(r.clone());
            break;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                found = Some(r.clone());
                break;
            }
        }
        cur = e.source();
    }
    let err = found?;
    let ca = match &tls.ca_file {
        Some(p) => format!("ca_file {}", p.display()),
        None => "the system's root certificates".to_string(),
    };
    let client = tls
        .client_cert
        .as_ref()
        .map(|p| format!("client_cert {}", p.display()))
        .unwrap_or_else(|| "no client certificate (set client_cert and client_key)".into());
    use rustls::{AlertDescription as A, CertificateError as C};
    let why = match &err {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            format!("the broker's certificate is not signed by a CA in {ca}")
        }
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => format!(
            "the broker's certificate is not valid for the host name {:?}",
            url.host
        ),
        rustls::Error::InvalidCertificate(C::Expired)
        | rustls::Error::InvalidCertificate(C::ExpiredContext { .. }) => {
            "the broker's certificate has expired (or this machine's clock is wrong)".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidYet)
        | rustls::Error::InvalidCertificate(C::NotValidYetContext { .. }) => {
            "the broker's certificate is not valid yet (or this machine's clock is wrong)".into()
        }
        rustls::Error::InvalidCertificate(other) => {
            format!("the broker's certificate was refused: {other:?} (checked against {ca})")
        }
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::CertificateRequired
            | A::UnknownCA
            | A::CertificateUnknown
            | A::AccessDenied
            | A::CertificateRevoked
            | A::CertificateExpired,
        ) => format!("the broker refused the client certificate ({err}; {client})"),
        rustls::Error::AlertReceived(a) => format!("the broker ended the TLS handshake: {a:?}"),
        other => format!("TLS failed: {other}"),
    };
    Some(format!(
        "certificate problem with the broker {}: {why}",
        url.authority()
    ))
}

/// Connects once with `opts` to find out whether TLS works: `Err` with what to tell a
/// person when the handshake fails over a certificate; `Ok` once the broker answered
/// (whatever it said) or for problems of other kinds, which the caller's own
/// connection reports and retries. Gives up after 10 s.
pub async fn check_tls(opts: MqttOptions, url: &BrokerUrl, tls: &Tls) -> Result<(), String> {
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 4);
    let probe = async {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    return match certificate_problem(&e, url, tls) {
                        Some(problem) => Err(problem),
                        None => Ok(()),
                    }
                }
            }
        }
    };
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), probe)
        .await
        .unwrap_or(Ok(()));
    let _ = client.try_disconnect();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (bool, String, u16) {
        let u = BrokerUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (u.tls, u.host, u.port)
    }

    #[test]
    fn the_same_rules_for_every_broker_address() {
        let table = [
            ("mqtt://localhost:1884", (false, "localhost", 1884)),
            ("mqtt://10.0.0.2", (false, "10.0.0.2", 1883)),
            ("tcp://10.0.0.2", (false, "10.0.0.2", 1883)),
            (
                "mqtts://broker.example.org",
                (true, "broker.example.org", 8883),
            ),
            (
                "mqtts://broker.example.org:9883/",
                (true, "broker.example.org", 9883),
            ),
            ("ssl://h:1", (true, "h", 1)),
            ("mqtt://[::1]:1883", (false, "::1", 1883)),
        ];
        for (text, (tls, host, port)) in table {
            assert_eq!(ok(text), (tls, host.to_string(), port), "{text}");
        }
        assert_eq!(
            BrokerUrl::parse("mqtt://[::1]:1883").unwrap().authority(),
            "[::1]:1883"
        );
        assert_eq!(
            BrokerUrl::parse("mqtts://h").unwrap().to_string(),
            "mqtts://h:8883"
        );
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        let table = [
            ("localhost:1883", "no scheme: write mqtt://localhost:1883"),
            ("http://x", "scheme http:// is not MQTT"),
            ("mqtt://host:abc", "is not a URL"),
            ("mqtt://", "no host"),
            ("mqtt://host/sensors", "no path"),
            (
                "mqtt://user:secret@host",
                "credentials do not belong in the URL",
            ),
        ];
        for (text, want) in table {
            let e = BrokerUrl::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = BrokerUrl::parse("mqtts://user:hunter2@host").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn tls_files_are_checked_before_connecting() {
        let dir = std::env::temp_dir().join(format!("centinela-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let tls = Tls {
            ca_file: Some(empty.clone()),
            ..Tls::default()
        };
        let e = tls.client_config().unwrap_err().to_string();
        assert!(
            e.contains("empty.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let tls = Tls {
            ca_file: Some(dir.join("missing.pem")),
            ..Tls::default()
        };
        let e = tls.client_config().unwrap_err().to_string();
        assert!(
            e.contains("cannot read ca_file") && e.contains("missing.pem"),
            "{e}"
        );
        let url = BrokerUrl::parse("mqtt://h").unwrap();
        let e = connect_options("x", &url, &tls).unwrap_err().to_string();
        assert!(e.contains("use mqtts://"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
