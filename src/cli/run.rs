//! `centinela run`: the service until SIGINT/SIGTERM, SIGHUP reloading the rules, the
//! systemd watchdog fed while the pipeline keeps up.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{init_logging, load, ConfigArg};
use crate::config::{self, Config};
use crate::service::{Options, Service};

/// `centinela run`: loads the configuration, says what is missing, runs the service.
pub(super) async fn run(config: &ConfigArg) -> anyhow::Result<ExitCode> {
    let (cfg, source) = load(config.config.as_deref())?;
    init_logging(&cfg, false);
    tracing::info!(config = %source, "starting");
    if cfg.broker.mode == config::BrokerMode::Embedded {
        crate::limits::check_open_files(cfg.broker.max_connections);
    }
    if cfg.rules.is_empty() {
        tracing::warn!(config = %source, "no [[rules]] configured: readings are stored, but nothing is watched and no alert can fire (`centinela config` shows starter rules to uncomment)");
    }
    run_service(cfg, config.config.clone()).await
}

/// `centinela run`: the service until SIGINT/SIGTERM; SIGHUP reloads the rules from
/// the same file (an invalid file keeps the running rules and says why).
async fn run_service(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};
    // Before starting: a SIGTERM while the service starts stops it cleanly once started.
    let mut term =
        signal(SignalKind::terminate()).context("while installing the SIGTERM handler")?;
    let mut service = Service::start(cfg, Options::default()).await?;
    let mut hup = signal(SignalKind::hangup()).context("while installing the SIGHUP handler")?;
    crate::systemd::ready();
    crate::systemd::status("running");
    // The watchdog is fed only while the engine stage keeps ticking and the database
    // writer keeps up: a stuck pipeline gets restarted by systemd.
    let watchdog = crate::systemd::watchdog_interval().map(|interval| {
        let beat = service.heartbeat.clone();
        let store = service.store_stats.clone();
        let limit = i64::try_from(interval.as_millis() * 2).unwrap_or(i64::MAX);
        tokio::spawn(crate::systemd::run_watchdog(interval, move || {
            let now = crate::model::now_ms();
            now - beat.load(std::sync::atomic::Ordering::Relaxed) < limit && store.health(now).0
        }))
    });
    let outcome = loop {
        tokio::select! {
            r = wait_for_stop(&mut service, &mut term, None) => break r,
            _ = hup.recv() => match config::resolve_path(path.as_deref()) {
                None => tracing::warn!("SIGHUP: running on the embedded default, nothing to reload"),
                Some(p) => match config::load(&p) {
                    Ok(new) => {
                        crate::systemd::reloading();
                        tracing::info!(config = %p.display(), "SIGHUP: reloading rules and engine settings \
                            (changes to [broker], [ingest], [storage] and [notify] take effect at the next restart)");
                        if service.reload.send(new).await.is_err() {
                            tracing::error!("SIGHUP: the engine has stopped");
                        }
                        crate::systemd::ready();
                    }
                    Err(e) => tracing::error!("SIGHUP: {e}; keeping the running configuration"),
                },
            },
        }
    };
    crate::systemd::stopping();
    if let Some(w) = watchdog {
        w.abort();
    }
    service.shutdown().await?;
    outcome.map(|()| ExitCode::SUCCESS)
}

pub(super) async fn wait_for_stop(
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
