//! The command line: every subcommand and its arguments, as clap parses them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::{export, kafka};
use crate::config;
use crate::model::AlertState;

#[derive(Debug, Parser)]
#[command(
    name = "centinela",
    version = crate::build_info::LONG_VERSION,
    about = "IoT monitoring and alerting: MQTT in, rules, SQLite, alerts out"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log level or filter, e.g. debug or centinela=debug,rumqttd=info (wins over
    /// RUST_LOG and the config's [log] level).
    #[arg(long, global = true, value_name = "FILTER", value_parser = crate::logging::parse_filter)]
    pub log_level: Option<String>,
    /// Log lines as text or as one JSON object each.
    #[arg(long, global = true, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Configuration file (default: $XDG_CONFIG_HOME/centinela/centinela.toml, else
    /// /etc/centinela/centinela.toml, else ./config/centinela.toml, else the embedded
    /// default).
    #[arg(long, short = 'c', env = "CENTINELA_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: broker, pipeline, storage (what systemd starts).
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Everything in one process on the embedded defaults, with simulated sensors.
    Demo(DemoArgs),
    /// Publish simulated sensor data to an MQTT broker.
    Simulate(centinela_sim::SimulateArgs),
    /// Check a configuration file; exit 2 with file:line:col and the field when invalid.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print the annotated default configuration.
    Config,
    /// The terminal UI attached to a running service, through its broker (live readings
    /// and alerts) and, when reachable, its database (history).
    Tui(TuiArgs),
    /// Print stored readings.
    Readings(ReadingsArgs),
    /// Print the alerts history.
    Alerts(AlertsArgs),
    /// Check every configured notification channel (SMTP login, Telegram bot and chats,
    /// webhook) and InfluxDB, and say what is wrong.
    Doctor {
        #[command(flatten)]
        config: ConfigArg,
        /// Also send a test message through each channel.
        #[arg(long)]
        send_test: bool,
    },
    /// Backtest: run the configured rules over recorded readings and print what they
    /// would have done. Sends nothing.
    Replay(ReplayArgs),
    /// Measure the pipeline end to end: MQTT over TCP → broker → decode → SQLite.
    Bench(BenchArgs),
    /// The database: `db check` looks for damage (exit 1 when damaged).
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Print the shell completion script, e.g.
    /// `centinela completions bash > /etc/bash_completion.d/centinela`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `centinela man | man -l -`.
    Man,
    /// Write the stored readings and alert events as Parquet files (the layout of
    /// [output.parquet]), for DuckDB, pandas or Spark.
    Export(export::ExportArgs),
    /// Kafka: `kafka status` shows the brokers, topics, consumer group and lag of
    /// [source.kafka].
    Kafka(kafka::KafkaArgs),
}

#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Full `PRAGMA integrity_check` (reads the whole file); prints "ok" or the damage.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Database file (default: storage.sqlite.path of the config).
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Readings from this database.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "csv",
        conflicts_with = "csv"
    )]
    pub db: Option<PathBuf>,
    /// Readings from a CSV file with the header `series,ts,value` (ts in epoch ms, RFC
    /// 3339, or as spreadsheets write it: `2026-11-20 10:00:00`).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// The zone of CSV times written without one: UTC, local, or an offset (+01:00).
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub tz: crate::engine::Zone,
    /// Only series matching this pattern (MQTT wildcards).
    #[arg(long, default_value = "#")]
    pub series: String,
    /// Only readings newer than this (from the database), e.g. 7d.
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Print each transition as a JSON object a line, and nothing else.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Configuration to benchmark (rules, broker buffer, flush interval); its broker
    /// address and database path are replaced by a free port and a temporary file.
    /// Without rules, one rule of every kind over all bench series is added.
    #[command(flatten)]
    pub config: ConfigArg,
    /// How long to publish, e.g. 30s.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Publish this many messages instead of for a duration.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Distinct series.
    #[arg(long, default_value_t = 1_000)]
    pub series: usize,
    /// Messages per second in all.
    #[arg(long, conflicts_with = "flat_out")]
    pub rate: Option<f64>,
    /// Publish as fast as the connections take it (the default without --rate).
    #[arg(long)]
    pub flat_out: bool,
    /// Publishing TCP connections.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// QoS of the published messages (1: every message acknowledged, nothing lost).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Run the load through an external broker, mqtt://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// The broker alone: publish → a raw subscriber, no pipeline (the baseline).
    #[arg(long)]
    pub raw: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Only logs, no live summary.
    #[arg(long)]
    pub headless: bool,
    /// Stop after this long (e.g. 30s, 5m), everything flushed.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Keep the database here (DIR/centinela.db); a temporary directory otherwise.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Scenario name or file (see `centinela simulate --list`).
    #[arg(long, default_value = "demo")]
    pub scenario: String,
    /// Seed for the simulated sensors.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Broker address for the demo (default 127.0.0.1:1883, or a free port when taken).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct TuiArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The service's broker, mqtt:// or mqtts:// (default: the config's external url,
    /// else its embedded listener).
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// With an mqtts:// broker: the CA certificate (PEM) to check it against (default:
    /// the config's broker.ca_file, else the system's roots).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// The service's database, for history in the detail view.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// MQTT username (default: broker.username of the config, else the local viewer
    /// login of the embedded broker's service); the password comes from that user's
    /// password_env in [[broker.users]], else broker.password_env.
    #[arg(long)]
    pub username: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct ReadingsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Database file (default: storage.sqlite.path of the config).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Series pattern with MQTT wildcards.
    #[arg(long, default_value = "#")]
    pub series: String,
    /// Only readings newer than this (e.g. 10m, 24h).
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// One JSON object a line.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV with a header: series,ts,value.
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Only events newer than this (e.g. 1h, 7d).
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Only events of this state (pending, cancelled, firing, resolved, acknowledged, repeat, flapping).
    #[arg(long, value_parser = parse_state)]
    pub state: Option<AlertState>,
    /// One JSON object a line.
    #[arg(long)]
    pub json: bool,
    /// Instead of the history: notifications that could not be delivered, with the
    /// last error, and the outbox counts per channel.
    #[arg(long)]
    pub outbox: bool,
}

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<config::Duration>().map(|d| d.std())
}

fn parse_state(s: &str) -> Result<AlertState, String> {
    AlertState::parse(s).ok_or_else(|| {
        format!("{s:?} is not a state (pending, cancelled, firing, resolved, acknowledged, repeat, flapping)")
    })
}
