//! `centinela kafka status`: the brokers, topics, consumer group, owners and lag of the
//! configured `[source.kafka]`, as the brokers see them (see [`crate::kafka::status`]).

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{load, ConfigArg};

#[derive(Debug, Args)]
pub struct KafkaArgs {
    #[command(subcommand)]
    pub action: KafkaAction,
}

#[derive(Debug, Subcommand)]
pub enum KafkaAction {
    /// Brokers reachable, topics with their partition counts (input, changelog,
    /// alerts), the group's members and the partitions each owns, committed offsets
    /// and lag per partition. Exit 1 when the brokers do not answer or a topic is
    /// missing.
    Status {
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub(super) async fn kafka(args: KafkaArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        KafkaAction::Status { config } => status(config.config.as_deref()).await,
    }
}

async fn status(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (cfg, source) = load(path)?;
    let Some(k) = cfg.source.kafka.clone() else {
        eprintln!("error: {source} has no [source.kafka] section");
        return Ok(ExitCode::from(2));
    };
    #[cfg(feature = "kafka")]
    {
        let st = tokio::task::spawn_blocking(move || crate::kafka::status::status(&k)).await?;
        match st {
            Ok(st) => {
                print!("{}", st.render());
                Ok(if st.ok() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(1))
            }
        }
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = k;
        eprintln!("error: this centinela is built without Kafka; build it with `--features kafka`");
        Ok(ExitCode::from(2))
    }
}
