//! `[[broker.users]]` and the embedded broker's listeners: who may connect, and what
//! each user may publish and subscribe to.

use std::path::PathBuf;

use serde::Deserialize;

use super::{check_filter, key, BrokerConfig, BrokerMode, Invalid, PathPart};

/// One user of the embedded broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerUser {
    pub name: String,
    /// Name of the environment variable that holds the password.
    pub password_env: String,
    /// Topic filters this user may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic filters this user may subscribe to (a subscription must lie inside one).
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// May publish to `centinela/control` (acknowledge, silence).
    #[serde(default)]
    pub control: bool,
}

/// Where the TLS listener finds its certificate chain and key (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl BrokerConfig {
    /// The TLS listener's files, when `tls_listen` is set (validated beforehand).
    pub fn tls_files(&self) -> Option<TlsFiles> {
        self.tls_listen?;
        Some(TlsFiles {
            cert_file: self.cert_file.clone()?,
            key_file: self.key_file.clone()?,
        })
    }

    /// Whether clients without credentials are let in: when no user is configured
    /// (the loopback default), or when asked for.
    pub fn anonymous_allowed(&self) -> bool {
        (self.users.is_empty() && self.username.is_none()) || self.allow_anonymous
    }

    /// Problems with the users, listeners and connection limits.
    pub(super) fn validate_trust(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        let at = |i: usize, f: &str| vec![key("broker"), key("users"), PathPart::Index(i), key(f)];
        let mut names: Vec<&str> = self.username.iter().map(String::as_str).collect();
        for (i, u) in self.users.iter().enumerate() {
            if u.name.is_empty()
                || u.name.len() > 64
                || !u
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
            {
                out.push(Invalid::new(
                    &at(i, "name"),
                    format!(
                        "{:?}: a user name is 1 to 64 letters, digits, '-', '_', '.' or '@'",
                        u.name
                    ),
                ));
            }
            if names.contains(&u.name.as_str()) {
                out.push(Invalid::new(
                    &at(i, "name"),
                    format!("user {:?} is defined twice", u.name),
                ));
            }
            names.push(&u.name);
            if u.password_env.is_empty() {
                out.push(Invalid::new(
                    &at(i, "password_env"),
                    "the name of the variable that holds the password is needed",
                ));
            }
            for (field, filters) in [("publish", &u.publish), ("subscribe", &u.subscribe)] {
                for (j, f) in filters.iter().enumerate() {
                    if let Err(e) = check_filter(f) {
                        let mut p = at(i, field);
                        p.push(PathPart::Index(j));
                        out.push(Invalid::new(&p, e));
                    }
                }
            }
        }
        if self.mode == BrokerMode::Embedded {
            match (&self.tls_listen, &self.cert_file, &self.key_file) {
                (Some(_), Some(_), Some(_)) | (None, None, None) => {}
                (Some(_), _, _) => out.push(Invalid::new(
                    &[key("broker"), key("tls_listen")],
                    "the TLS listener needs broker.cert_file and broker.key_file (PEM)",
                )),
                (None, _, _) => out.push(Invalid::new(
                    &[key("broker"), key("tls_listen")],
                    "broker.cert_file and broker.key_file are set but tls_listen is not",
                )),
            }
            if self.tls_only && self.tls_listen.is_none() {
                out.push(Invalid::new(
                    &[key("broker"), key("tls_only")],
                    "tls_only = true needs tls_listen",
                ));
            }
            if let Some(tls) = self.tls_listen {
                if !self.tls_only && tls == self.listen {
                    out.push(Invalid::new(
                        &[key("broker"), key("tls_listen")],
                        format!("{tls} is also broker.listen: give TLS its own port"),
                    ));
                }
                if !tls.ip().is_loopback()
                    && self.users.is_empty()
                    && self.username.is_none()
                    && !self.allow_anonymous
                {
                    out.push(Invalid::new(
                        &[key("broker"), key("tls_listen")],
                        format!(
                            "{tls} is reachable from the network and no user is set: add \
                             [[broker.users]] or set allow_anonymous = true"
                        ),
                    ));
                }
            }
            if self.max_keepalive.std() < std::time::Duration::from_secs(1) {
                out.push(Invalid::new(
                    &[key("broker"), key("max_keepalive")],
                    "must be at least 1s",
                ));
            }
            if self.max_connections_per_ip == 0 {
                out.push(Invalid::new(
                    &[key("broker"), key("max_connections_per_ip")],
                    "must be at least 1",
                ));
            }
        }
        out
    }
}
