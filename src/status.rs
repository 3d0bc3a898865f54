//! The pipeline's figures, read from the stages' shared counters: the status line
//! ([`PipelineStatus`], on the live bus once a second, for the TUI header and remote
//! viewers) and the snapshot that `/metrics` and `/healthz` serve ([`MetricsSource`]).
//! Outputs contribute through the [`Output`] seam; nothing here names one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, watch};

use crate::engine::stage::EngineView;
use crate::http::{Health, Metrics, OutboxCounts, QueueDepth, StageHealth};
use crate::model::{now_ms, AlertState, LiveEvent, PipelineStatus, Reading};
use crate::notify::ChannelCounts;
use crate::shutdown::Shutdown;
use crate::source::mqtt::SourceStats;
use crate::store::sqlite::StoreStats;
use crate::store::{Output, OutputMsg};

/// The outbox counts of the last status round, shared with the metrics endpoint,
/// which cannot wait for the database.
pub type SharedOutboxCounts = Arc<Mutex<Vec<ChannelCounts>>>;

/// What `/metrics` and `/healthz` read: shared counters only, never the database.
pub struct MetricsSource {
    pub started: Instant,
    pub source: Arc<SourceStats>,
    /// The embedded broker's front (users, ACLs, limits); `None` with an external broker.
    pub broker: Option<Arc<crate::broker::FrontStats>>,
    pub store: Arc<StoreStats>,
    /// Every output, SQLite first.
    pub outputs: Vec<Arc<dyn Output>>,
    pub view: watch::Receiver<Arc<EngineView>>,
    pub heartbeat: Arc<AtomicI64>,
    pub outbox: SharedOutboxCounts,
    /// The engine's input, for its depth.
    pub readings: mpsc::WeakSender<Vec<Reading>>,
    /// Each output's input, by name, for its depth (weak: the channels still close at
    /// shutdown).
    pub queues: Vec<(&'static str, mpsc::WeakSender<OutputMsg>)>,
    pub tick_ms: i64,
    /// The notification channels configured (`email`, `telegram`, …), for `/healthz`.
    pub channels: Vec<String>,
}

fn depth<T>(name: &str, w: &mpsc::WeakSender<T>) -> Option<QueueDepth> {
    let tx = w.upgrade()?;
    Some(QueueDepth {
        queue: name.to_string(),
        depth: (tx.max_capacity() - tx.capacity()) as u64,
        capacity: tx.max_capacity() as u64,
    })
}

impl MetricsSource {
    pub fn snapshot(&self) -> (Metrics, Health) {
        let view = self.view.borrow().clone();
        let mut firing: BTreeMap<String, u64> = ["info", "warning", "critical"]
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        for a in view
            .alerts
            .iter()
            .filter(|a| a.state != AlertState::Pending)
        {
            *firing.entry(a.severity.as_str().to_string()).or_default() += 1;
        }
        let outbox: Vec<OutboxCounts> = self
            .outbox
            .lock()
            .map(|c| {
                c.iter()
                    .map(|c| OutboxCounts {
                        channel: c.channel.clone(),
                        pending: c.pending,
                        delivered: c.delivered,
                        dead: c.dead,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let metrics = Metrics {
            readings_received: self.source.readings.load(Ordering::Relaxed),
            readings_stored: self.store.stored.load(Ordering::Relaxed),
            decode_errors: self
                .source
                .errors_by_reason()
                .into_iter()
                .map(|(r, n)| (r.to_string(), n))
                .collect(),
            broker_lost: self.source.lost.load(Ordering::Relaxed),
            skipped_fields: self.source.skipped_fields.load(Ordering::Relaxed),
            queues: std::iter::once(depth("readings", &self.readings))
                .chain(self.queues.iter().map(|(name, w)| depth(name, w)))
                .flatten()
                .collect(),
            outbox,
            outputs: self.outputs.iter().flat_map(|o| o.metrics()).collect(),
            families: self.outputs.iter().flat_map(|o| o.families()).collect(),
            broker: self
                .broker
                .as_ref()
                .map(|b| b.metrics())
                .unwrap_or_default(),
            alerts_firing: firing.into_iter().collect(),
            disk_bytes_written: crate::http::disk_bytes_written(),
            resident_memory_bytes: crate::http::resident_memory_bytes(),
            process: crate::http::Process::read(),
            histograms: crate::http::histogram::all(),
            uptime: self.started.elapsed(),
        };
        let beat_age = now_ms() - self.heartbeat.load(Ordering::Relaxed);
        let connected = self.source.connected.load(Ordering::Relaxed);
        let mut stages = vec![
            StageHealth::essential(
                "broker",
                connected,
                if connected {
                    "connected"
                } else {
                    "not connected"
                },
            ),
            StageHealth::essential(
                "engine",
                beat_age < 10 * self.tick_ms.max(1000),
                format!("last tick {beat_age} ms ago"),
            ),
        ];
        stages.extend(self.outputs.iter().filter_map(|o| o.health()));
        // A notification channel is down while its delivery-failure alert fires.
        stages.extend(self.channels.iter().map(|c| {
            let series = crate::notify::worker::health_series(c);
            let failing = view.alerts.iter().find(|a| {
                a.rule == crate::notify::worker::RULE_FAILING
                    && a.series == series
                    && a.state != AlertState::Pending
            });
            match failing {
                Some(a) => StageHealth::new(series, false, a.message.clone()),
                None => StageHealth::new(series, true, "delivering"),
            }
        }));
        (metrics, Health { stages })
    }
}

/// Where the status line's figures come from.
pub struct Figures {
    /// "embedded 127.0.0.1:1883", "external mqtt://…".
    pub broker: String,
    /// "sqlite /var/lib/centinela/centinela.db".
    pub storage: String,
    pub source: Arc<SourceStats>,
    pub store: Arc<StoreStats>,
    pub outputs: Vec<Arc<dyn Output>>,
    pub pool: sqlx::SqlitePool,
    /// Filled here for the metrics endpoint.
    pub outbox_counts: SharedOutboxCounts,
}

/// Publishes pipeline figures on the live bus once a second, until shutdown begins.
pub async fn run_status(f: Figures, live: broadcast::Sender<LiveEvent>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => break,
        }
        let received = f.source.readings.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (received - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, received);
        let (outbox_pending, outbox_dead) = match crate::notify::counts(&f.pool).await {
            Ok(c) => {
                let sums = (
                    c.iter().map(|c| c.pending).sum(),
                    c.iter().map(|c| c.dead).sum(),
                );
                if let Ok(mut shared) = f.outbox_counts.lock() {
                    *shared = c;
                }
                sums
            }
            Err(_) => (0, 0),
        };
        let status = PipelineStatus {
            broker: f.broker.clone(),
            broker_up: f.source.connected.load(Ordering::Relaxed),
            storage: f.storage.clone(),
            storage_ok: f.store.health(now_ms()).0,
            readings_per_s: rate,
            received_total: received,
            stored_total: f.store.stored.load(Ordering::Relaxed),
            decode_errors_total: f.source.errors_total(),
            decode_errors: f
                .source
                .errors_by_reason()
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (r.to_string(), n))
                .collect(),
            outbox_pending,
            outbox_dead,
            outputs: f.outputs.iter().filter_map(|o| o.status()).collect(),
            offline: false,
        };
        let _ = live.send(LiveEvent::Status(status));
    }
}
