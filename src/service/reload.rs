//! The service under its signals, as `centinela run` runs it: SIGTERM and SIGINT stop
//! it, SIGHUP reloads the configuration file, systemd hears about each step
//! ([`crate::systemd`]) and its watchdog is fed while the pipeline keeps up.
//!
//! What a reload changes (the rest is read once, at start):
//! - `[[rules]]` and `[engine]`: the engine is rebuilt from the new rules, alert state
//!   kept ([`crate::engine::stage`]);
//! - `[notify.*]` channels added, changed or removed, and `[notify.outbox]`
//!   ([`super::channels`]);
//! - everything else (`[broker]`, `[ingest]`, `[storage]` with InfluxDB, `[output.*]`,
//!   `[source.*]`, `[http]`, `[homeassistant]`, `[log]`, the Telegram bot's `bot`
//!   switch) needs a restart: a reload that changes one of them says which, and keeps
//!   running with the old values.
//!
//! An invalid file changes nothing and says why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;

use super::{Options, Service};
use crate::config::{self, Config};

/// Starts the service, runs it until SIGTERM or SIGINT (or until an external source
/// fails), reloading on SIGHUP from the file `path` names (resolved as at start), then
/// shuts it down.
pub async fn run_until_stopped(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Before starting: a SIGTERM while the service starts stops it cleanly once started.
    let mut term =
        signal(SignalKind::terminate()).context("while installing the SIGTERM handler")?;
    let mut running = cfg.clone();
    let mut service = Service::start(cfg, Options::default()).await?;
    let mut hup = signal(SignalKind::hangup()).context("while installing the SIGHUP handler")?;
    crate::systemd::ready();
    crate::systemd::status("running");
    let watchdog = spawn_watchdog(&service);
    let outcome = loop {
        tokio::select! {
            r = wait_for_stop(&mut service, &mut term, None) => break r,
            _ = hup.recv() => {
                if let Some(new) = reload_from(&service, &running, path.as_deref()).await {
                    running = new;
                }
            }
        }
    };
    crate::systemd::stopping();
    if let Some(w) = watchdog {
        w.abort();
    }
    service.shutdown().await?;
    outcome
}

/// Waits for SIGINT, SIGTERM (`term`), `limit` or the external source failing.
pub async fn wait_for_stop(
    service: &mut Service,
    term: &mut tokio::signal::unix::Signal,
    limit: Option<Duration>,
) -> anyhow::Result<()> {
    let sleep = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = sleep => {}
        e = service.failed() => return Err(e),
    }
    Ok(())
}

/// Feeds systemd's watchdog (when `WatchdogSec=` asks for it) only while the engine
/// stage keeps ticking and the database writer keeps up: a stuck pipeline gets
/// restarted by systemd.
fn spawn_watchdog(service: &Service) -> Option<JoinHandle<()>> {
    let interval = crate::systemd::watchdog_interval()?;
    let beat = service.heartbeat.clone();
    let store = service.store_stats.clone();
    let limit = i64::try_from(interval.as_millis() * 2).unwrap_or(i64::MAX);
    Some(tokio::spawn(crate::systemd::run_watchdog(
        interval,
        move || {
            let now = crate::model::now_ms();
            now - beat.load(std::sync::atomic::Ordering::Relaxed) < limit && store.health(now).0
        },
    )))
}

/// One SIGHUP: reads the file again and hands what can change to the running service.
/// Returns the configuration now running (`None`: nothing was reloaded).
async fn reload_from(service: &Service, running: &Config, path: Option<&Path>) -> Option<Config> {
    let Some(p) = config::resolve_path(path) else {
        tracing::warn!("SIGHUP: running on the embedded default, nothing to reload");
        return None;
    };
    let new = match config::load(&p) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!("SIGHUP: {e}; keeping the running configuration");
            return None;
        }
    };
    crate::systemd::reloading();
    tracing::info!(config = %p.display(), "SIGHUP: reloading rules, engine settings and notification channels");
    let later = needs_restart(running, &new);
    if !later.is_empty() {
        tracing::warn!(
            sections = ?later,
            "SIGHUP: these sections changed and take effect at the next restart (systemctl restart centinela); running with their old values"
        );
    }
    if let Err(e) = service.reload(new.clone()).await {
        tracing::error!("SIGHUP: {e}");
    }
    crate::systemd::ready();
    Some(new)
}

/// The sections of `new` that differ from `old` and are read only at start.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let bot = |c: &Config| c.notify.telegram.as_ref().is_some_and(|t| t.bot);
    let mut out = Vec::new();
    for (name, changed) in [
        ("[broker]", differs(&old.broker, &new.broker)),
        ("[ingest]", differs(&old.ingest, &new.ingest)),
        ("[storage]", differs(&old.storage, &new.storage)),
        ("[output]", differs(&old.output, &new.output)),
        ("[source]", differs(&old.source, &new.source)),
        ("[http]", differs(&old.http, &new.http)),
        (
            "[homeassistant]",
            differs(&old.homeassistant, &new.homeassistant),
        ),
        ("[log]", differs(&old.log, &new.log)),
        ("[notify.telegram] bot", bot(old) != bot(new)),
    ] {
        if changed {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_sections_are_named_rules_and_channels_are_not() {
        let old: Config = toml::from_str("").unwrap();
        let mut new = old.clone();
        new.notify = toml::from_str("[webhook]\nurl = \"http://127.0.0.1:1/\"\n").unwrap();
        assert!(needs_restart(&old, &new).is_empty());
        new.storage.sqlite.flush_interval = "5s".parse().unwrap();
        new.http = None;
        assert_eq!(
            needs_restart(&old, &new),
            if old.http.is_some() {
                vec!["[storage]", "[http]"]
            } else {
                vec!["[storage]"]
            }
        );
    }
}
