//! `centinela readings` and `centinela alerts`: what the database holds, as a table,
//! JSON lines or CSV; `alerts --outbox`: the notifications that could not be delivered.

use std::process::ExitCode;

use anyhow::Context;

use super::{db_path, AlertsArgs, ReadingsArgs};
use crate::model::{format_ts, now_ms};
use crate::store::sqlite;

pub(super) async fn readings(args: ReadingsArgs) -> anyhow::Result<ExitCode> {
    let path = db_path(&args.config, args.db)?;
    let pool = sqlite::open_existing(&path)
        .await
        .with_context(|| format!("while opening {}", path.display()))?;
    let since = args
        .since
        .map_or(i64::MIN, |d| now_ms() - d.as_millis() as i64);
    let rows = sqlite::query_readings(&pool, &args.series, since).await?;
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.csv {
        writeln!(out, "series,ts,value")?;
    }
    if !args.json && !args.csv {
        let units = sqlite::series_units(&pool).await?;
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|(series, ts, value)| {
                vec![
                    format_ts(*ts),
                    // Names come from the network: control characters are shown escaped.
                    crate::tui::format::printable(series).into_owned(),
                    crate::format::num(*value),
                    units.get(series).cloned().unwrap_or_default(),
                ]
            })
            .collect();
        if !cells.is_empty() {
            use crate::format::Align::{Left, Right};
            let header = ["TIME", "SERIES", "VALUE", "UNIT"];
            write!(
                out,
                "{}",
                crate::format::table(&header, &[Left, Left, Right, Left], &cells)
            )?;
        }
    }
    for (series, ts, value) in rows.iter().filter(|_| args.json || args.csv) {
        if args.json {
            let row = sqlite::StoredReading {
                series: series.clone(),
                ts: format_ts(*ts),
                value: *value,
            };
            writeln!(out, "{}", serde_json::to_string(&row)?)?;
        } else {
            writeln!(out, "{},{},{}", csv_field(series), format_ts(*ts), value)?;
        }
    }
    out.flush()?;
    if rows.is_empty() && !args.json && !args.csv {
        eprintln!("no readings match {:?} in {}", args.series, path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub(super) async fn alerts(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let path = db_path(&args.config, args.db)?;
    let pool = sqlite::open_existing(&path)
        .await
        .with_context(|| format!("while opening {}", path.display()))?;
    if args.outbox {
        return outbox(&pool, args.json).await;
    }
    let since = args
        .since
        .map_or(i64::MIN, |d| now_ms() - d.as_millis() as i64);
    let rows = sqlite::query_alerts(&pool, since, args.state).await?;
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        for r in &rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
    } else if !rows.is_empty() {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.ts.clone(),
                    r.state.clone(),
                    r.severity.clone(),
                    format!("{}/{}", r.rule, r.series),
                    r.value.map(crate::format::num).unwrap_or_default(),
                    r.unit.clone().unwrap_or_default(),
                    r.message.clone(),
                ]
            })
            .collect();
        write!(out, "{}", event_table(&cells))?;
    }
    out.flush()?;
    if rows.is_empty() && !args.json {
        eprintln!("no alert events in {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Alert events as a table: time, state, severity, alert, value, unit, message.
fn event_table(cells: &[Vec<String>]) -> String {
    use crate::format::Align::{Left, Right};
    let header = [
        "TIME", "STATE", "SEVERITY", "ALERT", "VALUE", "UNIT", "MESSAGE",
    ];
    let align = [Left, Left, Left, Left, Right, Left, Left];
    crate::format::table(&header, &align, cells)
}

async fn outbox(pool: &sqlx::SqlitePool, json: bool) -> anyhow::Result<ExitCode> {
    let dead = crate::notify::dead(pool).await?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for r in &dead {
        if json {
            let row = serde_json::json!({
                "id": r.id,
                "channel": r.channel,
                "status": r.status.as_str(),
                "rule": r.event.rule,
                "series": r.event.series,
                "state": r.event.state,
                "ts": format_ts(r.event.ts),
                "attempts": r.attempts,
                "last_error": r.last_error.as_deref().map(crate::notify::redact_urls),
            });
            writeln!(out, "{row}")?;
        } else {
            writeln!(
                out,
                "{}  {:<9} {:<40} {:<10} {} attempts  {}",
                format_ts(r.updated_at),
                r.channel,
                r.event.alert_id(),
                r.event.state,
                r.attempts,
                crate::notify::redact_urls(r.last_error.as_deref().unwrap_or(""))
            )?;
        }
    }
    if !json {
        for c in crate::notify::counts(pool).await? {
            writeln!(
                out,
                "{:<9} pending {:>6}  delivered {:>8}  dead {:>6}",
                c.channel, c.pending, c.delivered, c.dead
            )?;
        }
        if dead.is_empty() {
            writeln!(out, "no dead notifications")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
