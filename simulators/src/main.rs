//! `centinela-sim`: publishes a scenario's simulated sensors to an MQTT broker.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "centinela-sim",
    version,
    about = "Simulated IoT sensors with scheduled faults, published over MQTT"
)]
struct Cli {
    #[command(flatten)]
    args: centinela_sim::SimulateArgs,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = centinela_sim::run(cli.args).await {
        eprintln!("error: {e:#}");
        std::process::exit(centinela_sim::exit_code(&e));
    }
}
