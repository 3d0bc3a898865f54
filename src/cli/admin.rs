//! `centinela validate`, `centinela doctor` and `centinela db check`: is the
//! configuration valid, are the channels and outputs reachable, is the database whole.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{db_path, load, ConfigArg};
use crate::config::{self, Config};
use crate::store::sqlite;

pub(super) fn validate(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(path) = config::resolve_path(path) else {
        Config::parse_all(config::DEFAULT_TOML, "<embedded default>")?;
        println!("ok: embedded default configuration");
        return Ok(ExitCode::SUCCESS);
    };
    let cfg = config::load_all(&path)?;
    println!(
        "ok: {} ({} rules, channels: {})",
        path.display(),
        cfg.rules.len(),
        {
            let c = cfg.notify.channels();
            if c.is_empty() {
                "none".to_string()
            } else {
                c.join(", ")
            }
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn doctor(path: Option<&Path>, send_test: bool) -> anyhow::Result<ExitCode> {
    let (cfg, source) = load(path)?;
    println!("configuration: {source}");
    let mut bad = 0;
    let mut checked = 0;
    for r in crate::notify::doctor::doctor(&cfg.notify, send_test).await {
        checked += 1;
        bad += usize::from(!r.ok);
        println!(
            "{} {:<9} {:<32} {}",
            r.mark(),
            r.channel,
            r.target,
            r.message
        );
    }
    for o in crate::store::configured(&cfg) {
        let Some(c) = o.check().await else { continue };
        checked += 1;
        bad += usize::from(c.result.is_err());
        let (word, message) = match c.result {
            Ok(m) => ("ok  ", m),
            Err(m) => ("FAIL", m),
        };
        // Credentials in a URL never reach the terminal.
        println!(
            "{word} {:<9} {:<32} {}",
            o.name(),
            crate::notify::redact_urls(&c.target),
            crate::notify::redact_urls(&message)
        );
    }
    if checked == 0 {
        println!("nothing to check: no [notify.*] channel and no output besides SQLite configured");
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `centinela db check`: a full integrity check of the database file.
pub(super) async fn db_check(config: &ConfigArg, db: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path = db_path(config, db)?;
    match sqlite::startup::check(&path, true, None).await? {
        sqlite::startup::Checked::Missing => {
            anyhow::bail!("{}: no such database", path.display())
        }
        _ => println!("ok: {} has no damage", path.display()),
    }
    Ok(ExitCode::SUCCESS)
}
