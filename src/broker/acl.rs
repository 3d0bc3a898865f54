//! Who may connect to the embedded broker, and what each user may publish and
//! subscribe to.
//!
//! Every client but the service itself is a [`Rights`]: a configured user, the
//! `broker.username` shorthand (every right), or anonymous (when allowed: publish
//! outside `centinela/`, subscribe anywhere, never control). Nobody but the service,
//! which publishes through its in-process link, writes under `centinela/` — except
//! `centinela/control`, for users with the control right.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::BrokerConfig;
use crate::model::topic_matches;

/// The topic namespace the service owns.
pub const RESERVED_PREFIX: &str = "centinela/";
/// Control requests (ack, silence): only users with `control = true`.
pub const CONTROL_TOPIC: &str = "centinela/control";

/// The name refusals of anonymous clients are counted under.
pub const ANONYMOUS: &str = "(anonymous)";

/// What one client may do, with its refusal counters.
#[derive(Debug)]
pub struct Rights {
    pub name: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub control: bool,
    pub refused_publish: AtomicU64,
    pub refused_subscribe: AtomicU64,
}

impl Rights {
    fn new(name: &str, publish: Vec<String>, subscribe: Vec<String>, control: bool) -> Self {
        Self {
            name: name.to_string(),
            publish,
            subscribe,
            control,
            refused_publish: AtomicU64::new(0),
            refused_subscribe: AtomicU64::new(0),
        }
    }

    /// May this client publish to `topic` (a valid topic name, no wildcards)?
    pub fn may_publish(&self, topic: &str) -> bool {
        if topic == CONTROL_TOPIC {
            return self.control;
        }
        if topic.starts_with(RESERVED_PREFIX) {
            return false;
        }
        self.publish.iter().any(|f| topic_matches(f, topic))
    }

    /// May this client subscribe to `filter`: does every topic it matches lie inside
    /// one of the user's filters?
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe.iter().any(|allowed| covers(allowed, filter))
    }

    pub fn refused_publish(&self) -> u64 {
        self.refused_publish.load(Ordering::Relaxed)
    }

    pub fn refused_subscribe(&self) -> u64 {
        self.refused_subscribe.load(Ordering::Relaxed)
    }
}

/// Whether every topic `filter` matches also matches `allowed` (both valid filters).
pub fn covers(allowed: &str, filter: &str) -> bool {
    let mut a = allowed.split('/');
    let mut f = filter.split('/');
    loop {
        match (a.next(), f.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(x), Some(y)) if x == y && x != "+" && x != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Why a login was refused: answered with CONNACK code 4 or 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    /// A username that is unknown, or a wrong password (code 4).
    BadCredentials,
    /// No credentials where they are required (code 5).
    NotAuthorised,
}

/// Every user of the broker, with passwords read from the environment at start-up.
#[derive(Debug)]
pub struct Users {
    users: HashMap<String, (String, Arc<Rights>)>,
    anonymous: Option<Arc<Rights>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("broker user {user:?}: ${var} (the password) is not set")]
    MissingPassword { user: String, var: String },
    #[error("broker user {user:?}: ${var} (the password) is empty")]
    EmptyPassword { user: String, var: String },
}

impl Users {
    /// Reads the passwords; an unset or empty variable is an error.
    pub fn from_config(cfg: &BrokerConfig) -> Result<Users, UsersError> {
        let password = |user: &str, var: &str| match std::env::var(var) {
            Ok(p) if p.is_empty() => Err(UsersError::EmptyPassword {
                user: user.into(),
                var: var.into(),
            }),
            Ok(p) => Ok(p),
            Err(_) => Err(UsersError::MissingPassword {
                user: user.into(),
                var: var.into(),
            }),
        };
        let mut users = HashMap::new();
        if let Some(name) = &cfg.username {
            let pass = password(name, &cfg.password_env)?;
            let all = vec!["#".to_string()];
            users.insert(
                name.clone(),
                (pass, Arc::new(Rights::new(name, all.clone(), all, true))),
            );
        }
        for u in &cfg.users {
            let pass = password(&u.name, &u.password_env)?;
            let rights = Rights::new(&u.name, u.publish.clone(), u.subscribe.clone(), u.control);
            users.insert(u.name.clone(), (pass, Arc::new(rights)));
        }
        let anonymous = cfg.anonymous_allowed().then(|| {
            let all = vec!["#".to_string()];
            Arc::new(Rights::new(ANONYMOUS, all.clone(), all, false))
        });
        Ok(Users { users, anonymous })
    }

    /// Adds a user (the local viewer's generated credential).
    pub fn insert(&mut self, name: &str, password: String, rights: Rights) {
        self.users
            .insert(name.to_string(), (password, Arc::new(rights)));
    }

    pub fn viewer_rights(name: &str) -> Rights {
        Rights::new(name, Vec::new(), vec!["#".to_string()], true)
    }

    /// The rights of a client that logs in with `login` (username, password).
    pub fn login(&self, login: Option<(&str, &str)>) -> Result<Arc<Rights>, LoginRefused> {
        match login {
            None => self.anonymous.clone().ok_or(LoginRefused::NotAuthorised),
            Some((user, pass)) => match self.users.get(user) {
                Some((p, rights)) if constant_time_eq(p.as_bytes(), pass.as_bytes()) => {
                    Ok(rights.clone())
                }
                _ => Err(LoginRefused::BadCredentials),
            },
        }
    }

    /// Refusals so far per user: (name, publishes, subscriptions).
    pub fn refusals(&self) -> Vec<(String, u64, u64)> {
        let mut out: Vec<_> = self
            .users
            .values()
            .map(|(_, r)| r)
            .chain(self.anonymous.iter())
            .map(|r| (r.name.clone(), r.refused_publish(), r.refused_subscribe()))
            .collect();
        out.sort();
        out
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Equal-length digests: the comparison does not depend on where they differ.
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_filters() {
        assert!(covers("#", "a/b"));
        assert!(covers("#", "#"));
        assert!(covers("a/#", "a/b/+"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/+", "a/b"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/+", "a/b/c"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("centinela/#", "#"));
        assert!(!covers("centinela/#", "+/status"));
        assert!(covers("centinela/#", "centinela/alerts/#"));
    }

    #[test]
    fn the_service_namespace_is_reserved() {
        let all = Rights::new("u", vec!["#".into()], vec![], false);
        assert!(all.may_publish("sensors/a/b"));
        assert!(!all.may_publish("centinela/status"));
        assert!(!all.may_publish("centinela/alerts/r/s"));
        assert!(!all.may_publish("centinela/control"));
        let ctl = Rights::new("v", vec![], vec![], true);
        assert!(ctl.may_publish("centinela/control"));
        assert!(!ctl.may_publish("sensors/a"));
        assert!(!ctl.may_publish("centinela/status"));
    }
}
