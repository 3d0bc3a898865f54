//! The notification workers as a set that a reload can replace: one worker per
//! configured `[notify.*]` channel, reading the outbox. On a reload whose `[notify]`
//! differs from the running one, the new channels are built first (a channel that
//! cannot be built, e.g. a missing secret variable, keeps the running set and says
//! why); then the running workers stop (a delivery in progress gets
//! [`crate::notify::worker::DRAIN`], then stays pending) and the new set starts.
//! Nothing is lost across a reload: a worker marks a notification only after its send,
//! and notifications written for a channel that had no worker yet wait in the outbox.
//!
//! The Telegram bot (`[notify.telegram] bot = true`) is not part of this set: it starts
//! and stops with the service.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::NotifyConfig;
use crate::notify::{Outbox, Sender};
use crate::shutdown::Shutdown;

/// Where the workers raise a failing channel's alert: the engine's system input.
type EngineInput = Option<mpsc::Sender<crate::engine::SystemAlert>>;

/// Workers of one configuration, stopped together.
struct Running {
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    cfg: NotifyConfig,
}

impl Running {
    fn start(
        outbox: &Outbox,
        cfg: NotifyConfig,
        senders: Vec<Arc<dyn Sender>>,
        engine: &EngineInput,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let workers = crate::notify::spawn_workers(outbox, &cfg, senders, stopped, engine.clone());
        Running { stop, workers, cfg }
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        for w in self.workers {
            if let Err(e) = w.await {
                tracing::error!(error = %e, "a notification worker panicked");
            }
        }
    }
}

/// Each channel's section as text, to tell which changed (secrets are read from the
/// environment, so the sections hold none; the shared `[notify.outbox]` policy counts
/// as a change to every channel).
fn sections(cfg: &NotifyConfig) -> Vec<(&'static str, String)> {
    let outbox = format!("{:?}", cfg.outbox);
    let mut out = Vec::new();
    if let Some(e) = &cfg.email {
        out.push(("email", format!("{e:?}{outbox}")));
    }
    if let Some(t) = &cfg.telegram {
        out.push(("telegram", format!("{t:?}{outbox}")));
    }
    if let Some(w) = &cfg.webhook {
        out.push(("webhook", format!("{w:?}{outbox}")));
    }
    if let Some(m) = &cfg.mqtt {
        out.push(("mqtt", format!("{m:?}{outbox}")));
    }
    out
}

/// What a reload changes: channels added, changed and removed, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<&'static str>,
    pub changed: Vec<&'static str>,
    pub removed: Vec<&'static str>,
}

impl Changes {
    pub fn between(old: &NotifyConfig, new: &NotifyConfig) -> Self {
        let (old, new) = (sections(old), sections(new));
        let find = |set: &[(&'static str, String)], name: &str| {
            set.iter().find(|(n, _)| *n == name).map(|(_, s)| s.clone())
        };
        let mut c = Changes::default();
        for (name, text) in &new {
            match find(&old, name) {
                None => c.added.push(name),
                Some(t) if t != *text => c.changed.push(name),
                Some(_) => {}
            }
        }
        for (name, _) in &old {
            if find(&new, name).is_none() {
                c.removed.push(name);
            }
        }
        c
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// Builds the senders of `cfg` (`publish` carries `[notify.mqtt]` through the live
/// task).
pub type Build =
    Box<dyn Fn(&NotifyConfig) -> Result<Vec<Arc<dyn Sender>>, crate::notify::BuildError> + Send>;

/// Starts the workers of `cfg` with the `senders` already built from it, and a task
/// that replaces them on each configuration sent to the returned channel, until
/// shutdown begins; then it stops them and ends.
pub fn spawn(
    outbox: Outbox,
    cfg: NotifyConfig,
    senders: Vec<Arc<dyn Sender>>,
    build: Build,
    mut shutdown: Shutdown,
    engine: EngineInput,
) -> (mpsc::Sender<NotifyConfig>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<NotifyConfig>(4);
    let mut running = Running::start(&outbox, cfg, senders, &engine);
    let task = tokio::spawn(async move {
        loop {
            let new = tokio::select! {
                _ = shutdown.recv() => break,
                new = rx.recv() => match new {
                    Some(new) => new,
                    None => {
                        // The service is gone without a shutdown: wait for it anyway.
                        shutdown.recv().await;
                        break;
                    }
                },
            };
            let changes = Changes::between(&running.cfg, &new);
            if changes.is_empty() {
                tracing::info!("notification channels unchanged");
                continue;
            }
            match build(&new) {
                Err(e) => tracing::error!(
                    "reload: {e}; keeping the running notification channels ({:?})",
                    running.cfg.channels()
                ),
                Ok(senders) => {
                    running.stop().await;
                    running = Running::start(&outbox, new, senders, &engine);
                    tracing::info!(
                        added = ?changes.added,
                        changed = ?changes.changed,
                        removed = ?changes.removed,
                        channels = ?running.cfg.channels(),
                        "notification channels reloaded"
                    );
                }
            }
        }
        running.stop().await;
    });
    (tx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> NotifyConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn changes_name_what_was_added_changed_and_removed() {
        let old = cfg(
            "[webhook]\nurl = \"http://127.0.0.1:1/a\"\n[mqtt]\ntopic = \"centinela/events\"\n",
        );
        assert!(Changes::between(&old, &old).is_empty());
        let new = cfg("[webhook]\nurl = \"http://127.0.0.1:1/b\"\n[email]\nsmtp = \"127.0.0.1:25\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n");
        let c = Changes::between(&old, &new);
        assert_eq!(c.added, ["email"]);
        assert_eq!(c.changed, ["webhook"]);
        assert_eq!(c.removed, ["mqtt"]);
        // The shared retry policy changes every channel.
        let slower = cfg(
            "[webhook]\nurl = \"http://127.0.0.1:1/a\"\n[mqtt]\ntopic = \"centinela/events\"\n[outbox]\nmax_attempts = 3\n",
        );
        assert_eq!(Changes::between(&old, &slower).changed, ["webhook", "mqtt"]);
    }
}
