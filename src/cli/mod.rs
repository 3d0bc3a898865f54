//! The `centinela` command: argument parsing and the subcommands' top level. Exit
//! codes: 0 ok, 1 runtime failure, 2 usage or invalid config.
//!
//! # Layout
//! - `args`: the clap definitions of every subcommand.
//! - `run`: `centinela run`, the service until a signal.
//! - `demo`: everything in one process with simulated sensors.
//! - `query`: `readings` and `alerts` (history and outbox) read from the database.
//! - `replay`: backtesting the rules over recorded readings.
//! - `bench`: the `bench` report around [`crate::bench`].
//! - `tui`: the terminal UI attached to a running service.
//! - `admin`: `validate`, `doctor` and `db check`.
//! - `export`: the Parquet export.
//! - `kafka`: `kafka status`.
//!
//! This module parses nothing itself: it dispatches, loads the configuration and maps
//! failures to exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{self, Config};

mod admin;
mod args;
mod bench;
mod demo;
mod export;
mod kafka;
mod query;
mod replay;
mod run;
mod tui;

use args::parse_duration;
pub use args::{
    AlertsArgs, BenchArgs, Cli, Command, ConfigArg, DbAction, DemoArgs, Format, ReadingsArgs,
    ReplayArgs, TuiArgs,
};

/// Runs the parsed command and maps failures to exit codes.
pub fn main(cli: Cli) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    crate::logging::set_overrides(crate::logging::Overrides {
        level: cli.log_level.clone(),
        format: cli.log_format,
    });
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            if let Some(ce) = e.downcast_ref::<config::ConfigError>() {
                eprintln!("error: {ce}");
                return ExitCode::from(2);
            }
            if let Some(all) = e.downcast_ref::<config::ConfigErrors>() {
                for ce in &all.0 {
                    eprintln!("error: {ce}");
                }
                if all.0.len() > 1 {
                    eprintln!("{} problems", all.0.len());
                }
                return ExitCode::from(2);
            }
            if let Some(be) = e.downcast_ref::<crate::broker::BrokerError>() {
                if be.is_setup() {
                    eprintln!("error: {be}");
                    return ExitCode::from(2);
                }
            }
            eprintln!("error: {}", error_text(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line, each said once: a cause whose text is
/// already part of what was said (errors that print their source) is left out.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Config => {
            print!("{}", config::DEFAULT_TOML);
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { config } => admin::validate(config.config.as_deref()),
        Command::Completions { shell } => {
            crate::clidoc::print(&crate::clidoc::completions(shell))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            crate::clidoc::print(&crate::clidoc::man())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => Box::pin(run::run(&config)).await,
        Command::Demo(args) => demo::demo(args).await,
        Command::Simulate(args) => {
            init_logging(&Config::default(), false);
            match centinela_sim::run(args).await {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    Ok(ExitCode::from(centinela_sim::exit_code(&e) as u8))
                }
            }
        }
        Command::Readings(args) => query::readings(args).await,
        Command::Export(args) => export::export(args).await,
        Command::Kafka(args) => kafka::kafka(args).await,
        Command::Tui(args) => tui::tui(args).await,
        Command::Doctor { config, send_test } => {
            admin::doctor(config.config.as_deref(), send_test).await
        }
        Command::Alerts(args) => query::alerts(args).await,
        Command::Bench(args) => Box::pin(bench::bench(args)).await,
        Command::Replay(args) => replay::replay(args).await,
        Command::Db {
            action: DbAction::Check { config, db },
        } => admin::db_check(&config, db).await,
    }
}

fn load(path: Option<&Path>) -> anyhow::Result<(Config, String)> {
    Ok(config::load_or_default_all(path)?)
}

/// Logs go to stderr: compact, no colours unless stderr is a terminal (journald-friendly).
/// `quiet` lowers the level to warnings unless `--log-level` or `RUST_LOG` says otherwise.
pub fn init_logging(cfg: &Config, quiet: bool) {
    let level = if quiet {
        "warn"
    } else {
        cfg.log.level.as_str()
    };
    crate::logging::init(level, None);
}

/// Logs at the configured level to `file` (appending), or to stderr when `None`.
pub fn init_logging_to(cfg: &Config, file: Option<&Path>) {
    crate::logging::init(&cfg.log.level, file);
}

fn db_path(config: &ConfigArg, db: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match db {
        Some(p) => p,
        None => load(config.config.as_deref())?.0.storage.sqlite.path,
    };
    if !path.exists() {
        anyhow::bail!(
            "no database at {} (is storage.sqlite.path right? `centinela demo` keeps its \
             database only with --data-dir DIR)",
            path.display()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod error_text_tests {
    use super::error_text;

    #[test]
    fn an_error_chain_says_each_thing_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("database x.db: {source}")]
        struct Open {
            source: std::io::Error,
        }
        let io = std::io::Error::other("no such file");
        let e = anyhow::Error::new(Open { source: io }).context("while reading");
        assert_eq!(error_text(&e), "while reading: database x.db: no such file");
    }
}
