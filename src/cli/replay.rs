//! `centinela replay`: the configured rules over recorded readings (from the database or
//! a CSV file), printing what they would have done.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::{init_logging, load, ReplayArgs};
use crate::model::{format_ts, now_ms};
use crate::store::sqlite;

pub(super) async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let (cfg, source) = load(args.config.config.as_deref())?;
    init_logging(&cfg, true);
    let readings: Vec<crate::model::Reading> = match (&args.db, &args.csv) {
        (Some(db), _) => {
            let pool = sqlite::open_existing(db)
                .await
                .with_context(|| format!("while opening {}", db.display()))?;
            let since = args
                .since
                .map_or(i64::MIN, |d| now_ms() - d.as_millis() as i64);
            let mut names: std::collections::HashMap<String, crate::model::SeriesId> =
                std::collections::HashMap::new();
            sqlite::query_readings(&pool, &args.series, since)
                .await?
                .into_iter()
                .map(|(s, ts, value)| {
                    let series = names
                        .entry(s)
                        .or_insert_with_key(|k| std::sync::Arc::from(k.as_str()))
                        .clone();
                    crate::model::Reading {
                        series,
                        value,
                        ts,
                        unit: None,
                    }
                })
                .collect()
        }
        (None, Some(csv)) => read_csv(csv, &args.series, args.tz)?,
        (None, None) => anyhow::bail!("give --db PATH or --csv FILE"),
    };
    if cfg.rules.is_empty() {
        eprintln!("warning: {source} has no [[rules]]: nothing to replay");
    }
    let report = crate::engine::replay(&cfg.rules, &cfg.engine, readings);
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        for e in &report.events {
            writeln!(
                out,
                "{}",
                serde_json::to_string(&sqlite::AlertRow::from_event(e))?
            )?;
        }
    } else if !report.events.is_empty() {
        let cells: Vec<Vec<String>> = report
            .events
            .iter()
            .map(|e| {
                vec![
                    format_ts(e.ts),
                    if e.notify.is_empty() { "" } else { "✉" }.to_string(),
                    e.state.to_string(),
                    e.severity.to_string(),
                    e.alert_id(),
                    e.value.map(crate::format::num).unwrap_or_default(),
                    e.unit.clone().unwrap_or_default(),
                    e.message.clone(),
                ]
            })
            .collect();
        use crate::format::Align::{Left, Right};
        let header = [
            "TIME", "SENT", "STATE", "SEVERITY", "ALERT", "VALUE", "UNIT", "MESSAGE",
        ];
        let align = [Left, Left, Left, Left, Left, Right, Left, Left];
        write!(out, "{}", crate::format::table(&header, &align, &cells))?;
    }
    if !args.json {
        if !report.events.is_empty() {
            writeln!(out)?;
        }
        write!(out, "{}", crate::engine::render_summary(&report))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Reads a `series,ts,value` file; a bad row is an error naming the file and line.
fn read_csv(
    path: &Path,
    pattern: &str,
    zone: crate::engine::Zone,
) -> anyhow::Result<Vec<crate::model::Reading>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("while reading {}", path.display()))?;
    Ok(crate::source::csv::parse(
        &text,
        &path.display().to_string(),
        pattern,
        zone,
    )?)
}
