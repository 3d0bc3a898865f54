//! The engine's decisions, back to the Kafka consumer: an [`Output`] in the fan-out
//! like any other, so it sees readings and alert batches in the order the engine sent
//! them. An empty batch of readings is the consumer's barrier (no source sends an
//! empty batch): when it arrives, every alert batch the engine made of the readings
//! sent before it has arrived too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::http::{Family, Kind, Sample};
use crate::model::OutputStatus;
use crate::shutdown::Shutdown;
use crate::source::kafka::KafkaSourceStats;
use crate::store::sqlite::AlertBatch;
use crate::store::{BoxFuture, Context, Output, OutputMsg, StartError};

/// What the tap hands the consumer.
#[derive(Debug)]
pub enum TapMsg {
    Alerts(Arc<AlertBatch>),
    /// The consumer's empty batch has gone through the engine.
    Barrier,
}

/// The tap output; [`Tap::new`] also gives the consumer's end. It also reports the
/// Kafka source's figures in `/metrics` (it is the source's one place among the
/// outputs).
pub struct Tap {
    tx: Mutex<Option<std_mpsc::Sender<TapMsg>>>,
    stats: Arc<KafkaSourceStats>,
}

impl Tap {
    pub fn new() -> (Tap, std_mpsc::Receiver<TapMsg>) {
        let (tx, rx) = std_mpsc::channel();
        (
            Tap {
                tx: Mutex::new(Some(tx)),
                stats: Arc::default(),
            },
            rx,
        )
    }

    /// The source's counters (the consumer fills them).
    pub fn stats(&self) -> Arc<KafkaSourceStats> {
        self.stats.clone()
    }
}

impl Output for Tap {
    fn name(&self) -> &'static str {
        "kafka-tap"
    }

    fn metrics(&self) -> Vec<Sample> {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            Sample::counter(
                "centinela_kafka_source_messages_total",
                "Messages consumed from Kafka.",
                get(&s.messages),
            ),
            Sample::counter(
                "centinela_kafka_source_no_series_total",
                "Kafka messages skipped because no series could be found in them.",
                get(&s.no_series),
            ),
            Sample::gauge(
                "centinela_kafka_source_assigned_partitions",
                "Input partitions this instance owns now.",
                get(&s.assigned),
            ),
            Sample::counter(
                "centinela_kafka_source_rebalances_total",
                "Consumer group rebalances this instance took part in.",
                get(&s.rebalances),
            ),
            Sample::counter(
                "centinela_kafka_transactions_total",
                "Transactions committed (alert events, changelog records and offsets).",
                get(&s.commits),
            ),
            Sample::counter(
                "centinela_kafka_transactions_failed_total",
                "Transactions that failed and were aborted (the group is rejoined).",
                get(&s.commit_errors),
            ),
            Sample::counter(
                "centinela_kafka_alert_events_produced_total",
                "Alert events written to the alerts topic in committed transactions.",
                get(&s.events_produced),
            ),
            Sample::counter(
                "centinela_kafka_changelog_records_produced_total",
                "Alert state records written to the changelog in committed transactions.",
                get(&s.changelog_produced),
            ),
            Sample::counter(
                "centinela_kafka_restores_total",
                "Changelog restores (one per assignment).",
                get(&s.restores),
            ),
            Sample::counter(
                "centinela_kafka_restore_records_total",
                "Changelog records read by restores.",
                get(&s.restored_records),
            ),
            Sample::counter(
                "centinela_kafka_restored_alerts_total",
                "Alerts taken over from the changelog.",
                get(&s.restored_alerts),
            ),
            Sample::counter(
                "centinela_kafka_restore_milliseconds_total",
                "Time spent restoring alert state from the changelog.",
                get(&s.restore_ms_total),
            ),
            Sample::gauge(
                "centinela_kafka_restore_last_milliseconds",
                "How long the last changelog restore took.",
                get(&s.restore_ms_last),
            ),
            Sample::counter(
                "centinela_kafka_window_refills_total",
                "Window refills from the input partitions (one per assignment with rate or window rules).",
                get(&s.refills),
            ),
            Sample::counter(
                "centinela_kafka_window_refill_readings_total",
                "Readings read again from the input partitions to refill rate and window rules.",
                get(&s.refilled_readings),
            ),
            Sample::counter(
                "centinela_kafka_window_refill_milliseconds_total",
                "Time spent refilling rate and window rules from the input partitions.",
                get(&s.refill_ms_total),
            ),
        ]
    }

    /// `cluster NAME partitions N`: this instance in the group and what it owns (the
    /// TUI's owner column reads it).
    fn status(&self) -> Option<OutputStatus> {
        let instance = self.stats.instance.lock().ok()?.clone();
        if instance.is_empty() {
            return None;
        }
        let n = self.stats.assigned.load(Ordering::Relaxed);
        Some(OutputStatus {
            name: "cluster".into(),
            label: format!("{instance} partitions"),
            value: n,
            warn: n == 0,
        })
    }

    fn families(&self) -> Vec<Family> {
        let parts = self
            .stats
            .partitions
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        vec![Family {
            name: "centinela_kafka_source_lag",
            kind: Kind::Gauge,
            help: "Messages of an owned partition not yet read (end minus position).",
            samples: parts
                .iter()
                .filter_map(|p| {
                    let labels = vec![
                        ("topic", p.topic.clone()),
                        ("partition", p.partition.to_string()),
                    ];
                    Some((labels, p.lag()? as u64))
                })
                .collect(),
        }]
    }

    fn start<'a>(
        &'a self,
        _ctx: &'a Context<'a>,
        mut input: mpsc::Receiver<OutputMsg>,
        shutdown: Shutdown,
    ) -> BoxFuture<'a, Result<JoinHandle<()>, StartError>> {
        let tx = self.tx.lock().ok().and_then(|mut t| t.take());
        Box::pin(async move {
            let tx = tx.ok_or(StartError {
                output: "kafka-tap",
                message: "started twice".into(),
            })?;
            Ok(tokio::spawn(async move {
                let _shutdown = shutdown;
                while let Some(msg) = input.recv().await {
                    let m = match msg {
                        OutputMsg::Readings(r) if r.is_empty() => TapMsg::Barrier,
                        OutputMsg::Readings(_) => continue,
                        OutputMsg::Alerts(a) => TapMsg::Alerts(a),
                    };
                    // The consumer has stopped: nothing is waiting for this any more.
                    let _ = tx.send(m);
                }
            }))
        })
    }
}
