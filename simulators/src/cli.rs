//! Command line of the simulator, shared by the `centinela-sim` binary and the
//! `centinela simulate` subcommand: parse the options, load the scenario, and run the
//! publisher until the duration passes or Ctrl-C.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::broker_url::{BrokerUrl, Tls};
use crate::publish::{publish, PublishOptions};
use crate::scenario::{check_topic_path, Scenario, ScenarioError, DEFAULT_SCENARIO};
use crate::sim::Simulator;

/// Options of `centinela-sim` and `centinela simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Broker to publish to: mqtt://HOST[:PORT], or mqtts://HOST[:PORT] for TLS.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883", value_name = "URL")]
    pub broker: String,
    /// With mqtts://: the CA certificate (PEM) the broker's certificate is checked
    /// against; the system's roots when not given.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<std::path::PathBuf>,
    /// With mqtts://: a client certificate (PEM), for brokers that ask for one.
    #[arg(long, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<std::path::PathBuf>,
    /// With mqtts://: the client certificate's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<std::path::PathBuf>,
    /// Embedded scenario name (see --list) or path to a scenario .toml file.
    #[arg(long, default_value = DEFAULT_SCENARIO, value_name = "NAME|PATH")]
    pub scenario: String,
    /// Messages per second per sensor (default: the scenario's own periods).
    #[arg(long, value_name = "HZ")]
    pub rate: Option<f64>,
    /// Stop after this long ("90s", "5m"); default: until Ctrl-C.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of every random choice: the same seed gives the same readings.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
    /// MQTT QoS of the published messages.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Speed of the model clock: 60 runs a day's cycle in 24 minutes.
    #[arg(long, value_name = "X")]
    pub time_scale: Option<f64>,
    /// Replace the scenario's topic prefix ("sensors").
    #[arg(long)]
    pub prefix: Option<String>,
    /// MQTT username; the password is read from the variable named by --password-env.
    #[arg(long)]
    pub username: Option<String>,
    /// Environment variable that holds the MQTT password.
    #[arg(long, default_value = "CENTINELA_MQTT_PASSWORD", value_name = "VAR")]
    pub password_env: String,
    /// MQTT client id.
    #[arg(long, default_value = "centinela-sim")]
    pub client_id: String,
    /// List the embedded scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Print the messages of the first --duration (default 60s) of the scenario, without
    /// a broker and without waiting, as `TOPIC PAYLOAD` lines.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like \"90s\" or \"5m\": {e}"))
}

/// Usage errors (bad scenario or option) exit with 2, everything else with 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    let usage = err
        .chain()
        .any(|e| e.is::<ScenarioError>() || e.is::<UsageError>());
    if usage {
        2
    } else {
        1
    }
}

/// A bad command-line value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Writes the embedded scenarios, one per line: name, then description.
pub fn write_list(out: &mut impl Write) -> std::io::Result<()> {
    for (name, desc) in Scenario::embedded() {
        writeln!(out, "{name:<12} {desc}")?;
    }
    Ok(())
}

/// Loads the scenario named in `args`, with the command-line overrides applied.
pub fn load_scenario(args: &SimulateArgs) -> anyhow::Result<Scenario> {
    let mut scenario = Scenario::load(&args.scenario)?;
    if let Some(p) = &args.prefix {
        check_topic_path(p, true).map_err(|m| UsageError(format!("--prefix: {m}")))?;
        scenario.prefix = p.clone();
    }
    if let Some(hz) = args.rate {
        scenario.set_rate(hz)?;
    }
    if let Some(ts) = args.time_scale {
        if !(ts.is_finite() && ts > 0.0) {
            return Err(UsageError(format!("--time-scale {ts}: must be a positive number")).into());
        }
        scenario.time_scale = ts;
    }
    Ok(scenario)
}

/// Runs the simulator as the command line asks: `--list`, `--dry-run`, or publishing.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if args.list {
        write_list(&mut std::io::stdout().lock())?;
        return Ok(());
    }
    let scenario = load_scenario(&args)?;
    if args.dry_run {
        return dry_run(
            &scenario,
            args.seed,
            args.duration.unwrap_or(Duration::from_secs(60)),
        );
    }
    let url = BrokerUrl::parse(&args.broker).map_err(|e| UsageError(format!("--broker: {e}")))?;
    let files = Tls {
        ca_file: args.ca_file.clone(),
        client_cert: args.client_cert.clone(),
        client_key: args.client_key.clone(),
    };
    if !url.tls && files.is_set() {
        return Err(UsageError(format!(
            "--broker {url} is not TLS but --ca-file/--client-cert are given: use mqtts://"
        ))
        .into());
    }
    let password = match &args.username {
        Some(_) => std::env::var(&args.password_env).ok(),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        } else {
            // No signal handling here: keep the sender alive so the run is not stopped.
            std::future::pending::<()>().await;
        }
    });
    let name = scenario.name.clone();
    let stats = publish(PublishOptions {
        host: url.host.clone(),
        port: url.port,
        tls: url.tls.then_some(files),
        username: args.username.clone(),
        password,
        client_id: args.client_id.clone(),
        scenario,
        rate: None, // already applied by load_scenario
        time_scale: None,
        duration: args.duration,
        seed: args.seed,
        qos: args.qos,
        shutdown: Some(stop_rx),
    })
    .await
    .with_context(|| format!("while running scenario {name:?} against {}", args.broker))?;
    writeln!(std::io::stdout().lock(), "scenario {name}: {stats}")?;
    Ok(())
}

/// Prints the first `span` of a scenario without a broker, as fast as it can.
fn dry_run(scenario: &Scenario, seed: u64, span: Duration) -> anyhow::Result<()> {
    // A fixed start (2026-01-01T00:00:00Z) so the output is the same on every run.
    let start_ms = 1_767_225_600_000;
    let mut sim = Simulator::new(scenario, seed, start_ms)?;
    let end = start_ms + i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for w in sim.faults() {
        writeln!(
            out,
            "# fault {} on {} from {}s to {}s {}",
            w.kind,
            w.series.join(","),
            (w.start_ms - start_ms) / 1000,
            (w.end_ms - start_ms) / 1000,
            w.detail
        )?;
    }
    // In steps, so a long span is not cut short by the simulator's catch-up limit.
    let mut now = start_ms;
    loop {
        for m in sim.tick(now) {
            let payload = String::from_utf8_lossy(&m.payload);
            let shown = if payload.len() > 120 {
                format!(
                    "{}… ({} bytes)",
                    &payload[..payload.floor_char_boundary(120)],
                    m.payload.len()
                )
            } else {
                payload.into_owned()
            };
            let fault = m.fault.map(|f| format!("  [{f}]")).unwrap_or_default();
            writeln!(
                out,
                "{:>8.1}s {} {}{}",
                (m.ts - start_ms) as f64 / 1000.0,
                m.topic,
                shown,
                fault
            )?;
        }
        if now >= end {
            break;
        }
        now = now.saturating_add(60_000).min(end);
    }
    out.flush()?;
    Ok(())
}
