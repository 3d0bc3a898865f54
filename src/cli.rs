//! The `centinela` command: argument parsing and the subcommands' top level. Exit
//! codes: 0 ok, 1 runtime failure, 2 usage or invalid config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};
use crate::model::{format_ts, now_ms, AlertState, LiveEvent};
use crate::service::{Options, Service};
use crate::store::sqlite;

mod export;

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

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<config::Duration>().map(|d| d.std())
}

fn parse_state(s: &str) -> Result<AlertState, String> {
    AlertState::parse(s).ok_or_else(|| {
        format!("{s:?} is not a state (pending, cancelled, firing, resolved, acknowledged, repeat, flapping)")
    })
}

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
        Command::Validate { config } => validate(config.config.as_deref()),
        Command::Completions { shell } => {
            crate::clidoc::print(&crate::clidoc::completions(shell))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            crate::clidoc::print(&crate::clidoc::man())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
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
        Command::Demo(args) => demo(args).await,
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
        Command::Readings(args) => readings(args).await,
        Command::Export(args) => export::export(args).await,
        Command::Tui(args) => tui(args).await,
        Command::Doctor { config, send_test } => doctor(config.config.as_deref(), send_test).await,
        Command::Alerts(args) => alerts(args).await,
        Command::Bench(args) => bench(args).await,
        Command::Replay(args) => replay(args).await,
        Command::Db {
            action: DbAction::Check { config, db },
        } => {
            let path = db_path(&config, db)?;
            match sqlite::startup::check(&path, true, None).await? {
                sqlite::startup::Checked::Missing => {
                    anyhow::bail!("{}: no such database", path.display())
                }
                _ => println!("ok: {} has no damage", path.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: Option<&Path>) -> anyhow::Result<(Config, String)> {
    Ok(config::load_or_default_all(path)?)
}

fn validate(path: Option<&Path>) -> anyhow::Result<ExitCode> {
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

/// Runs the service until SIGINT/SIGTERM (or `limit`), then shuts it down cleanly.
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

async fn wait_for_stop(
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

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::parse(config::DEMO_TOML, "<demo config>")?;
    use std::io::IsTerminal;
    let interactive = !args.headless && std::io::stdout().is_terminal();
    let tmp;
    let dir = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("while creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("while creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    cfg.broker.listen = match args.listen {
        Some(a) => a,
        None if std::net::TcpListener::bind(cfg.broker.listen).is_ok() => cfg.broker.listen,
        None => std::net::SocketAddr::from(([127, 0, 0, 1], crate::broker::free_port()?)),
    };
    let db = dir.join("centinela.db");
    if interactive {
        // Logs would draw over the screen: they go to a file beside the database.
        init_logging_to(&cfg, Some(&dir.join("centinela.log")));
    } else {
        init_logging(&cfg, !args.headless);
    }
    let mut service = Service::start(
        cfg.clone(),
        Options {
            db_path: Some(db.clone()),
        },
    )
    .await?;
    let addr = service
        .broker_addr
        .context("the demo needs the embedded broker")?;
    eprintln!(
        "centinela demo: broker mqtt://{addr}, database {}",
        db.display()
    );
    eprintln!(
        "  try: mosquitto_sub -h {} -p {} -t 'sensors/#' -v",
        addr.ip(),
        addr.port()
    );

    let scenario = centinela_sim::Scenario::load(&args.scenario)
        .with_context(|| format!("while loading scenario {:?}", args.scenario))?;
    let (sim_stop_tx, sim_stop_rx) = tokio::sync::watch::channel(false);
    let mut sim_opts =
        centinela_sim::PublishOptions::new(addr.ip().to_string(), addr.port(), scenario);
    sim_opts.seed = args.seed;
    sim_opts.client_id = "centinela-demo-sensors".into();
    sim_opts.shutdown = Some(sim_stop_rx);
    let sim = tokio::spawn(centinela_sim::publish(sim_opts));

    let summary = (!args.headless && !interactive)
        .then(|| tokio::spawn(print_summary(service.live.subscribe())));
    let outcome = if interactive {
        let view = service.view.borrow().clone();
        let pool = sqlite::open_existing(&db).await.ok();
        let mut about = vec![
            ("broker".to_string(), format!("mqtt://{addr}")),
            ("database".to_string(), db.display().to_string()),
        ];
        if args.data_dir.is_none() {
            about.push((
                String::new(),
                "deleted on quit; keep it with --data-dir DIR".to_string(),
            ));
        }
        about.push((
            "try".to_string(),
            format!(
                "mosquitto_sub -h {} -p {} -t 'sensors/#' -v",
                addr.ip(),
                addr.port()
            ),
        ));
        let opts = crate::tui::RunOptions {
            app: crate::tui::Options {
                about,
                ..Default::default()
            },
            thresholds: crate::tui::thresholds_from_rules(&cfg.rules),
            initial: view.initial_events(),
            db: pool.clone(),
        };
        let history = pool.map(|pool| {
            std::sync::Arc::new(sqlite::SqliteHistory {
                pool,
                runtime: tokio::runtime::Handle::current(),
            }) as std::sync::Arc<dyn crate::tui::HistorySource>
        });
        let ui = crate::tui::run(
            service.live.subscribe(),
            service.control.clone(),
            history,
            opts,
        );
        let limit = async {
            match args.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = ui => r.map_err(anyhow::Error::from),
            _ = limit => Ok(()),
            e = service.failed() => Err(e),
        }
    } else {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("while installing the SIGTERM handler")?;
        wait_for_stop(&mut service, &mut term, args.duration).await
    };
    let _ = sim_stop_tx.send(true);
    match sim.await {
        Ok(Ok(stats)) => tracing::info!(published = stats.published, "simulators stopped"),
        Ok(Err(e)) => tracing::error!(error = %e, "simulators failed"),
        Err(e) => tracing::error!(error = %e, "simulators panicked"),
    }
    // Give the broker a moment to hand over what the simulators just sent.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(s) = summary {
        s.abort();
    }
    service.shutdown().await?;
    outcome?;
    let pool = sqlite::open_existing(&db).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT coalesce(sum(count), 0) FROM chunks) + (SELECT coalesce(sum(count), 0) FROM blocks)",
    )
        .fetch_one(&pool)
        .await?;
    let s: i64 = sqlx::query_scalar("SELECT count(*) FROM series")
        .fetch_one(&pool)
        .await?;
    let a: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts")
        .fetch_one(&pool)
        .await?;
    let kept = if args.data_dir.is_some() {
        ""
    } else {
        " (a temporary directory, deleted now; keep it with --data-dir DIR)"
    };
    eprintln!(
        "centinela demo: stored {n} readings of {s} series and {a} alert events in {}{kept}",
        db.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn print_summary(mut rx: tokio::sync::broadcast::Receiver<LiveEvent>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut firing = std::collections::BTreeMap::new();
    let mut last_print = std::time::Instant::now();
    loop {
        match rx.recv().await {
            Ok(LiveEvent::Alert(e)) => {
                println!(
                    "{}  {:<12} {:<9} {}  {}",
                    &format_ts(e.ts)[11..19],
                    e.state,
                    e.severity,
                    e.alert_id(),
                    e.message
                );
                match e.state {
                    AlertState::Firing | AlertState::Repeat | AlertState::Acknowledged => {
                        firing.insert(e.alert_id(), e.severity);
                    }
                    AlertState::Resolved => {
                        firing.remove(&e.alert_id());
                    }
                    _ => {}
                }
            }
            Ok(LiveEvent::Status(s)) if last_print.elapsed() >= Duration::from_secs(5) => {
                last_print = std::time::Instant::now();
                println!(
                    "{}  {:>8.0} readings/s  received {}  stored {}  bad {}  firing {}",
                    &format_ts(now_ms())[11..19],
                    s.readings_per_s,
                    s.received_total,
                    s.stored_total,
                    s.decode_errors_total,
                    firing.len()
                );
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => break,
        }
    }
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

async fn readings(args: ReadingsArgs) -> anyhow::Result<ExitCode> {
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

async fn alerts(args: AlertsArgs) -> anyhow::Result<ExitCode> {
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

async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (cfg, source) = load(args.config.config.as_deref())?;
    init_logging(&cfg, true);
    let opts = crate::bench::BenchOptions {
        load: crate::bench::Load {
            publishers: args.publishers.max(1),
            series: args.series.max(1),
            rate: if args.flat_out { None } else { args.rate },
            qos: args.qos,
            messages: args.messages,
        },
        duration: args.duration,
        broker: args.broker.clone(),
        raw: args.raw,
    };
    let what = match (&args.broker, args.raw) {
        (None, false) => "pipeline, embedded broker".to_string(),
        (Some(b), false) => format!("pipeline through {b}"),
        (None, true) => "embedded broker alone (raw)".to_string(),
        (Some(b), true) => format!("{b} alone (raw)"),
    };
    let length = match args.messages {
        Some(m) => format!("{m} messages"),
        None => format!("{}", humantime::format_duration(args.duration)),
    };
    let rate = opts
        .load
        .rate
        .map_or("flat out".to_string(), |r| format!("{r:.0} msg/s"));
    eprintln!(
        "bench: {what}; {length}, {rate}, QoS {}, {} series, {} connections; config {source}",
        args.qos, opts.load.series, opts.load.publishers
    );
    let mut progress = |p: &crate::bench::Progress| {
        let stored = p
            .stored
            .map_or(String::new(), |s| format!("  stored {s:>11}"));
        eprintln!(
            "  {:>5.1}s  published {:>11}  received {:>11}{stored}  {:>9.0}/s",
            p.elapsed_s, p.published, p.received, p.rate
        );
    };
    let r = crate::bench::run(cfg, &opts, &mut progress).await?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        println!("mode             {:>12}   broker {}", r.mode, r.broker);
        println!(
            "published        {:>12}   {:>10.0} msg/s (load generator, {:.1} s)",
            r.published, r.publish_rate, r.publish_seconds
        );
        if let Some(a) = r.acked {
            println!("acknowledged     {a:>12}");
        }
        println!(
            "received         {:>12}   {:>10.0} msg/s end to end",
            r.received, r.received_rate
        );
        if r.readings.is_some() {
            println!("readings         {:>12}", opt(r.readings));
            println!(
                "stored           {:>12}   {:>10.0} readings/s end to end",
                opt(r.stored),
                r.stored_rate.unwrap_or(0.0)
            );
        }
        println!(
            "lost             {:>12}   (published − received){}",
            r.lost,
            r.lost_in_broker
                .map_or(String::new(), |l| format!("; broker log overran by {l}"))
        );
        println!("decode errors    {:>12}", r.decode_errors);
        if let Some(l) = &r.latency {
            println!(
                "publish→alert    p50 {:.3} ms   p99 {:.3} ms   max {:.3} ms   ({} samples, {} missed)",
                l.p50_ms, l.p99_ms, l.max_ms, l.samples, l.missed
            );
        }
        println!("elapsed          {:>12.2} s", r.end_to_end_seconds);
        println!("peak RSS         {:>12.1} MiB", r.peak_rss_mib);
        println!(
            "CPU              {:>12.2} s per million messages (process {:.1} s − load generator {:.1} s)",
            r.cpu_s_per_million, r.process_cpu_s, r.loadgen_cpu_s
        );
        if let Some(b) = r.db_bytes_per_reading {
            println!("database         {b:>12.1} bytes/reading");
        }
    }
    let lossless = r.lost == 0 && r.stored.is_none_or(|s| Some(s) == r.readings);
    if !lossless {
        eprintln!(
            "bench: messages were lost: {} of {} published did not arrive{}",
            r.lost,
            r.published,
            match (r.stored, r.readings) {
                (Some(s), Some(n)) if s != n => format!("; {} readings not stored", n - s),
                _ => String::new(),
            }
        );
    }
    Ok(if lossless {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
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

/// Alert events as a table: time, state, severity, alert, value, unit, message.
fn event_table(cells: &[Vec<String>]) -> String {
    use crate::format::Align::{Left, Right};
    let header = [
        "TIME", "STATE", "SEVERITY", "ALERT", "VALUE", "UNIT", "MESSAGE",
    ];
    let align = [Left, Left, Left, Left, Right, Left, Left];
    crate::format::table(&header, &align, cells)
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

async fn tui(args: TuiArgs) -> anyhow::Result<ExitCode> {
    let (cfg, _) = load(args.config.config.as_deref())?;
    if args.config.config.is_none() && config::resolve_path(None).is_none() {
        eprintln!(
            "note: no configuration file ({}, {} or ./{}): using the embedded default's broker \
             and database; pass --config PATH",
            config::user_path().map_or("$XDG_CONFIG_HOME/centinela/centinela.toml".into(), |p| p
                .display()
                .to_string()),
            config::SYSTEM_PATH,
            config::LOCAL_PATH
        );
    }
    // No logging: lines would draw over the screen; the UI shows what matters.
    let url = match (&args.broker, cfg.broker.mode) {
        (Some(u), _) => u.clone(),
        (None, config::BrokerMode::External) => cfg.broker.url.clone().unwrap_or_default(),
        (None, config::BrokerMode::Embedded) => format!("mqtt://{}", cfg.broker.listen),
    };
    let mut username = args.username.clone().or(cfg.broker.username.clone());
    // A user of [[broker.users]] has its own password variable.
    let mut password = username.as_ref().and_then(|u| {
        let var = cfg
            .broker
            .users
            .iter()
            .find(|x| &x.name == u)
            .map_or(&cfg.broker.password_env, |x| &x.password_env);
        std::env::var(var).ok()
    });
    if username.is_none()
        && args.broker.is_none()
        && cfg.broker.mode == config::BrokerMode::Embedded
    {
        // The service on this machine: its local viewer login, when readable.
        let db = args.db.clone().unwrap_or(cfg.storage.sqlite.path.clone());
        if let Some((u, p)) = crate::broker::read_viewer_login(&db) {
            (username, password) = (Some(u), Some(p));
        }
    }
    let mut tls = cfg.broker.tls();
    if args.ca_file.is_some() {
        tls.ca_file = args.ca_file.clone();
    }
    let remote = crate::tui::remote::RemoteOptions {
        url,
        tls,
        client_id: format!("centinela-tui-{}", std::process::id()),
        username,
        password,
        prefix: cfg.ingest.prefix.clone(),
        topics: cfg.ingest.topics.clone(),
        max_payload: cfg.broker.max_payload,
    };
    let db = args.db.clone().unwrap_or(cfg.storage.sqlite.path.clone());
    let pool = match sqlite::open_existing(&db).await {
        Ok(pool) => Some(pool),
        Err(e) => {
            let why = match std::fs::File::open(&db) {
                Err(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                    format!("{}: {io}; {}", db.display(), config::permission_hint(&db))
                }
                _ => e.to_string(),
            };
            eprintln!("note: no history ({why})");
            None
        }
    };
    let history = pool.clone().map(|pool| {
        std::sync::Arc::new(sqlite::SqliteHistory {
            pool,
            runtime: tokio::runtime::Handle::current(),
        }) as std::sync::Arc<dyn crate::tui::HistorySource>
    });
    // Every series the service knows, with its last value, before the feed says
    // anything: the list is whole from the first screen.
    let initial = match &pool {
        Some(p) => crate::tui::seed::last_values(p).await.unwrap_or_else(|e| {
            eprintln!("note: series not read from {} ({e})", db.display());
            Vec::new()
        }),
        None => Vec::new(),
    };
    let opts = crate::tui::RunOptions {
        app: crate::tui::Options::default(),
        thresholds: crate::tui::thresholds_from_rules(&cfg.rules),
        initial,
        db: pool,
    };
    crate::tui::remote::attach(remote, history, opts).await?;
    Ok(ExitCode::SUCCESS)
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

async fn doctor(path: Option<&Path>, send_test: bool) -> anyhow::Result<ExitCode> {
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
