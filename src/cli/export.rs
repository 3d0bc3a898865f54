//! `centinela export --parquet DIR [--since 7d] [--series PATTERN]`: what the SQLite
//! database holds, written as the Parquet data lake's layout (see
//! [`crate::store::parquet`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::{db_path, load, parse_duration, ConfigArg};
use crate::model::now_ms;
use crate::store::{parquet, sqlite};

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Database file (default: storage.sqlite.path of the config).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Write Parquet part files under this folder: DIR/readings/date=YYYY-MM-DD/hour=HH/
    /// and DIR/alerts/… (partition and compression as in [output.parquet], if set).
    #[arg(long, value_name = "DIR")]
    pub parquet: PathBuf,
    /// Series pattern with MQTT wildcards.
    #[arg(long, default_value = "#")]
    pub series: String,
    /// Only readings and alert events newer than this (e.g. 24h, 7d).
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
}

pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let (cfg, _) = load(args.config.config.as_deref())?;
    let path = db_path(&args.config, args.db)?;
    let pool = sqlite::open_existing(&path)
        .await
        .with_context(|| format!("while opening {}", path.display()))?;
    let since = args
        .since
        .map_or(i64::MIN, |d| now_ms().saturating_sub(d.as_millis() as i64));
    let layout = cfg.output.parquet.as_ref().map_or_else(
        || parquet::ParquetConfig::default().layout(),
        parquet::ParquetConfig::layout,
    );
    let s = parquet::export(&pool, &args.parquet, layout, &args.series, since)
        .await
        .with_context(|| format!("while exporting to {}", args.parquet.display()))?;
    println!(
        "wrote {} readings and {} alert events in {} files ({} bytes) under {}",
        s.readings,
        s.events,
        s.files,
        s.bytes,
        args.parquet.display()
    );
    if s.readings_present + s.events_present > 0 {
        let complete = &s.partitions_complete;
        let mut names = complete
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if complete.len() > 5 {
            names.push_str(&format!(", … {} more", complete.len() - 5));
        }
        println!(
            "skipped {} readings and {} alert events the lake already held; {} partitions complete already: {names}",
            s.readings_present,
            s.events_present,
            complete.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
