//! InfluxDB as an output (`[storage.influxdb]`): the sink behind the
//! [`Output`](crate::store::Output) seam, with its figures for `/metrics`, the header
//! (`influx backlog N`), `/healthz` and `doctor`.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{backlog_path_for, health_check, InfluxSink, InfluxStats, Secrets};
use crate::config::{Config, InfluxConfig};
use crate::http::{Sample, StageHealth};
use crate::model::OutputStatus;
use crate::shutdown::Shutdown;
use crate::store::{BoxFuture, Check, Context, Output, OutputMsg, StartError};

/// The InfluxDB output when `[storage.influxdb]` is configured.
pub fn output(cfg: &Config) -> Option<Arc<dyn Output>> {
    let icfg = cfg.storage.influxdb.as_ref()?;
    Some(Arc::new(InfluxOutput {
        cfg: icfg.clone(),
        stats: Arc::default(),
    }))
}

pub struct InfluxOutput {
    cfg: InfluxConfig,
    stats: Arc<InfluxStats>,
}

impl InfluxOutput {
    /// The sink's counters (points accepted, written, in the backlog, …).
    pub fn stats(&self) -> Arc<InfluxStats> {
        self.stats.clone()
    }
}

impl Output for InfluxOutput {
    fn name(&self) -> &'static str {
        "influxdb"
    }

    fn start<'a>(
        &'a self,
        ctx: &'a Context<'a>,
        input: mpsc::Receiver<OutputMsg>,
        shutdown: Shutdown,
    ) -> BoxFuture<'a, Result<JoinHandle<()>, StartError>> {
        Box::pin(async move {
            if let Err(e) = health_check(&self.cfg).await {
                // Not fatal: points wait in the backlog until InfluxDB is right.
                tracing::error!("InfluxDB: {e}; points are kept in the backlog meanwhile");
            }
            let backlog = backlog_path_for(ctx.db_path);
            let sink = InfluxSink::new(
                &self.cfg,
                Secrets::from_env(&self.cfg),
                &backlog,
                self.stats.clone(),
            )
            .await
            .map_err(|e| StartError {
                output: "influxdb",
                message: format!("while opening the backlog {}: {e}", backlog.display()),
            })?;
            Ok(tokio::spawn(async move {
                // The sink ends when the engine stage closes its input, after the last
                // batch; memory then goes to InfluxDB or to the backlog.
                let _shutdown = shutdown;
                if let Err(e) = sink.run_to_end(input).await {
                    tracing::error!(error = %e, "InfluxDB sink stopped");
                }
            }))
        })
    }

    fn metrics(&self) -> Vec<Sample> {
        let s = self.stats.snapshot();
        vec![
            Sample::counter(
                "centinela_influx_points_accepted_total",
                "Points handed to the InfluxDB sink.",
                s.accepted,
            ),
            Sample::counter(
                "centinela_influx_points_written_total",
                "Points InfluxDB acknowledged.",
                s.written,
            ),
            Sample::gauge(
                "centinela_influx_backlog_points",
                "Points waiting in the durable InfluxDB backlog.",
                s.backlog,
            ),
            Sample::counter(
                "centinela_influx_points_dropped_total",
                "Points dropped because the InfluxDB backlog was full.",
                s.dropped,
            ),
            Sample::counter(
                "centinela_influx_points_rejected_total",
                "Points InfluxDB refused; not retried.",
                s.rejected,
            ),
        ]
    }

    fn status(&self) -> Option<OutputStatus> {
        let backlog = self.stats.snapshot().backlog;
        Some(OutputStatus {
            name: "influx".into(),
            label: "backlog".into(),
            value: backlog,
            warn: backlog > 0,
        })
    }

    fn health(&self) -> Option<StageHealth> {
        let ok = self.stats.snapshot().dropped == 0;
        Some(StageHealth::new(
            "influxdb",
            ok,
            if ok {
                "nothing dropped"
            } else {
                "points dropped past the backlog bound"
            },
        ))
    }

    fn check(&self) -> BoxFuture<'_, Option<Check>> {
        Box::pin(async move {
            let result = match health_check(&self.cfg).await {
                Ok(()) => Ok("writes are accepted".to_string()),
                Err(e) => Err(e.to_string()),
            };
            Some(Check {
                target: self.cfg.url.clone(),
                result,
            })
        })
    }
}
