//! `centinela run`: loads the configuration and hands it to the service, which runs
//! until SIGINT/SIGTERM and reloads on SIGHUP (`crate::service::reload`).

use std::path::PathBuf;
use std::process::ExitCode;

use super::{init_logging, load, ConfigArg};
use crate::config::{self, Config};

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
    Box::pin(run_service(cfg, config.config.clone())).await
}

/// `centinela run`: the service until SIGINT/SIGTERM, reloading on SIGHUP
/// ([`crate::service::reload`]).
async fn run_service(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    Box::pin(crate::service::reload::run_until_stopped(cfg, path))
        .await
        .map(|()| ExitCode::SUCCESS)
}
