//! The topology: every stage as a task (or thread), the bounded channels between them,
//! created here and nowhere else, and the order of shutdown.
//!
//! ```text
//!  source (link thread | rumqttc task) ─[readings: 64 batches]─► engine task
//!  engine ─[store: 64 msgs]─► sqlite writer      engine ─► live bus (broadcast, lossy)
//!  control (centinela/control, bot, TUI) ─[64]─► engine
//! ```
//!
//! Falling behind: the source waits for the engine, the engine waits for the writer
//! (back-pressure down to the broker's buffer); the live bus drops for slow viewers,
//! which count what they missed. Shutdown runs front to back: the source stops taking
//! messages, each stage drains its input and closes its output, the writer flushes
//! last.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::config::{BrokerMode, Config};
use crate::engine::{AlertView, Engine};
use crate::model::{now_ms, Control, LiveEvent, PipelineStatus, Reading, SeriesId, Timestamp};
use crate::source::mqtt::{self, SourceStats};
use crate::store::influx::{self, InfluxInput, InfluxSink, InfluxStats};
use crate::store::sqlite::{self, AlertBatch, StoreMsg, StoreStats, Writer, WriterConfig};

/// A request from a person to the engine, with where to send the answer.
#[derive(Debug)]
pub struct ControlRequest {
    pub control: Control,
    /// The words to answer with, or why it was refused.
    pub reply: Option<oneshot::Sender<Result<String, String>>>,
}

/// The Telegram bot's view of the service: the engine's published view, and its
/// control channel.
struct BotBridge {
    control: mpsc::Sender<ControlRequest>,
    view: watch::Receiver<Arc<EngineView>>,
}

impl BotBridge {
    fn alert_views(&self, firing_only: bool) -> Vec<crate::notify::bot::AlertView> {
        let view = self.view.borrow().clone();
        view.alerts
            .iter()
            .filter(|a| !firing_only || a.state != crate::model::AlertState::Pending)
            .map(|a| crate::notify::bot::AlertView {
                alert_id: a.alert_id(),
                state: a.state,
                severity: a.severity,
                value: a.value,
                unit: a.unit.clone(),
                since: a.since,
                message: a.message.clone(),
            })
            .collect()
    }

    fn last_values(&self, pattern: &str) -> Vec<crate::notify::bot::LastValue> {
        let view = self.view.borrow().clone();
        let mut v: Vec<_> = view
            .last
            .iter()
            .filter(|(s, _)| crate::model::topic_matches(pattern, s))
            .map(|(s, l)| crate::notify::bot::LastValue {
                series: s.to_string(),
                value: l.value,
                unit: l.unit.as_deref().map(str::to_string),
                ts: l.ts,
            })
            .collect();
        v.sort_by(|a, b| a.series.cmp(&b.series));
        v
    }
}

impl crate::notify::bot::BotBackend for BotBridge {
    fn status(&self) -> crate::notify::BoxFuture<'_, crate::notify::bot::StatusView> {
        let view = crate::notify::bot::StatusView {
            firing: self.alert_views(true),
            last: self.last_values("#"),
        };
        Box::pin(async move { view })
    }

    fn alerts(&self) -> crate::notify::BoxFuture<'_, Vec<crate::notify::bot::AlertView>> {
        let v = self.alert_views(true);
        Box::pin(async move { v })
    }

    fn last(
        &self,
        pattern: String,
    ) -> crate::notify::BoxFuture<'_, Vec<crate::notify::bot::LastValue>> {
        let v = self.last_values(&pattern);
        Box::pin(async move { v })
    }

    fn control(&self, control: Control) -> crate::notify::BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            self.control
                .send(ControlRequest {
                    control,
                    reply: Some(reply),
                })
                .await
                .map_err(|_| "the service is stopping".to_string())?;
            answer
                .await
                .map_err(|_| "the engine did not answer".to_string())?
        })
    }
}

/// The terminal's acks and silences go to the engine, and its answer comes back.
impl crate::tui::ControlSink for mpsc::Sender<ControlRequest> {
    fn send(
        &self,
        control: Control,
        reply: oneshot::Sender<Result<String, String>>,
    ) -> Result<(), String> {
        self.try_send(ControlRequest {
            control,
            reply: Some(reply),
        })
        .map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => "the engine is busy, try again".to_string(),
            mpsc::error::TrySendError::Closed(_) => "the service has stopped".to_string(),
        })
    }
}

impl EngineView {
    /// What a viewer starting now should know: the open alerts (as the events that
    /// opened them) and the last value of every series.
    pub fn initial_events(&self) -> Vec<LiveEvent> {
        let mut out: Vec<LiveEvent> = self
            .alerts
            .iter()
            .map(|a| {
                LiveEvent::Alert(crate::model::AlertEvent {
                    rule: a.rule.clone(),
                    series: a.series.clone(),
                    state: a.state,
                    severity: a.severity,
                    value: a.value,
                    unit: a.unit.clone(),
                    ts: a.since,
                    message: a.message.clone(),
                    notify: Vec::new(),
                })
            })
            .collect();
        let mut last: Vec<Reading> = self
            .last
            .iter()
            .map(|(s, l)| Reading {
                series: s.clone(),
                value: l.value,
                ts: l.ts,
                unit: l.unit.clone(),
            })
            .collect();
        last.sort_by_key(|r| r.ts);
        if !last.is_empty() {
            out.insert(0, LiveEvent::Readings(last.into()));
        }
        out
    }
}

/// The latest value of a series, as the engine stage last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct LastValue {
    pub value: f64,
    pub ts: Timestamp,
    pub unit: Option<Arc<str>>,
}

/// What the engine stage publishes about itself once a second: the alerts that are not
/// ok and the latest value of every series (for `/status`, `/last`, the TUI).
#[derive(Debug, Clone, Default)]
pub struct EngineView {
    pub alerts: Vec<AlertView>,
    pub last: HashMap<SeriesId, LastValue>,
    /// Readings the engine ignored (older than the newest of their series, not finite).
    pub ignored: u64,
}

/// Capacity of the live bus in messages (a readings batch is one): viewers further
/// behind than this miss events (counted). Kept small: every slot may hold a batch.
const LIVE_CAPACITY: usize = 256;

/// What the caller may change about a run.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Overrides `storage.sqlite.path`.
    pub db_path: Option<PathBuf>,
}

/// A running pipeline.
pub struct Service {
    /// Where the embedded broker listens (None with an external broker).
    pub broker_addr: Option<SocketAddr>,
    /// The embedded broker's refusals and connections (None with an external broker).
    pub broker_front: Option<Arc<crate::broker::FrontStats>>,
    pub db_path: PathBuf,
    pub source_stats: Arc<SourceStats>,
    pub store_stats: Arc<StoreStats>,
    /// `None` when no InfluxDB is configured.
    pub influx_stats: Option<Arc<InfluxStats>>,
    pub live: broadcast::Sender<LiveEvent>,
    pub control: mpsc::Sender<ControlRequest>,
    /// New rules and engine settings (SIGHUP); validated before they are sent.
    pub reload: mpsc::Sender<Config>,
    /// Refreshed by the engine stage about once a second.
    pub view: watch::Receiver<Arc<EngineView>>,
    /// Wall time (ms) of the engine stage's last tick: it stops moving when the
    /// pipeline is stuck (the systemd watchdog reads it).
    pub heartbeat: Arc<std::sync::atomic::AtomicI64>,
    stop_source: Arc<AtomicBool>,
    stop_tx: watch::Sender<bool>,
    /// Held while the service runs: a second instance on the same database refuses.
    _db_lock: sqlite::DbLock,
    tasks: Vec<JoinHandle<()>>,
    source_thread: Option<std::thread::JoinHandle<()>>,
    external: Option<JoinHandle<Result<(), mqtt::SourceError>>>,
}

impl Service {
    /// Opens the database, starts the broker (embedded mode) and every stage.
    pub async fn start(cfg: Config, opts: Options) -> anyhow::Result<Service> {
        let db_path = opts
            .db_path
            .clone()
            .unwrap_or_else(|| cfg.storage.sqlite.path.clone());
        let (pool, db_lock) = sqlite::open_for_writing(&db_path)
            .await
            .with_context(|| format!("while opening {}", db_path.display()))?;

        let (readings_tx, readings_rx) = mpsc::channel::<Vec<Reading>>(64);
        let (store_tx, store_rx) = mpsc::channel::<StoreMsg>(64);
        // For the queue-depth metrics, without keeping the channels open at shutdown.
        let (readings_weak, store_weak) = (readings_tx.downgrade(), store_tx.downgrade());
        let (control_tx, control_rx) = mpsc::channel::<ControlRequest>(64);
        let (view_tx, view) = watch::channel(Arc::new(EngineView::default()));
        let (reload_tx, reload_rx) = mpsc::channel::<Config>(4);
        let heartbeat = Arc::new(std::sync::atomic::AtomicI64::new(now_ms()));
        let outbox_counts: Arc<std::sync::Mutex<Vec<crate::notify::ChannelCounts>>> =
            Arc::default();
        let (live, _) = broadcast::channel::<LiveEvent>(LIVE_CAPACITY);
        let (stop_tx, stop_rx) = watch::channel(false);

        let outbox = crate::notify::Outbox::new(pool.clone());
        let writer = Writer::new(pool.clone())
            .with_outbox(outbox.clone())
            .with_deadband(cfg.storage.sqlite.deadband.clone());
        let store_stats = writer.stats.clone();
        let sq = &cfg.storage.sqlite;
        let wcfg = WriterConfig {
            flush_interval: sq.flush_interval.std(),
            retention: sq.retention.std(),
            rollup_retention: sq.rollup_retention.std(),
            maintenance_interval: Duration::from_secs(300),
        };
        let mut tasks = vec![tokio::spawn(sqlite::run_writer(writer, store_rx, wcfg))];
        // InfluxDB (optional): its own task, fed by the engine stage.
        let mut influx_tx = None;
        let mut influx_stats = None;
        if let Some(icfg) = &cfg.storage.influxdb {
            if let Err(e) = influx::health_check(icfg).await {
                // Not fatal: points wait in the backlog until InfluxDB is right.
                tracing::error!("InfluxDB: {e}; points are kept in the backlog meanwhile");
            }
            let stats = Arc::new(InfluxStats::default());
            let backlog = influx::backlog_path_for(&db_path);
            let sink = InfluxSink::new(
                icfg,
                influx::Secrets::from_env(icfg),
                &backlog,
                stats.clone(),
            )
            .await
            .with_context(|| format!("while opening the InfluxDB backlog {}", backlog.display()))?;
            let (tx, rx) = mpsc::channel::<InfluxInput>(64);
            // The sink ends when the engine stage closes its input, after the last
            // batch: its stop signal never fires (the sender lives in the task).
            let (keep, stop) = watch::channel(false);
            tasks.push(tokio::spawn(async move {
                let _keep = keep;
                if let Err(e) = sink.run(rx, stop).await {
                    tracing::error!(error = %e, "InfluxDB sink stopped");
                }
            }));
            influx_tx = Some(tx);
            influx_stats = Some(stats);
        }

        let engine = start_engine(&cfg, &pool).await?;
        let stage = EngineStage {
            heartbeat: heartbeat.clone(),
            engine,
            influx: influx_tx,
            store: store_tx,
            live: live.clone(),
            view: view_tx,
            last: HashMap::new(),
            events: Vec::new(),
            state_saved: 0,
        };
        let tick = cfg.engine.tick.std();
        tasks.push(tokio::spawn(stage.run(
            readings_rx,
            control_rx,
            reload_rx,
            pool.clone(),
            tick,
        )));

        let source_stats = Arc::new(SourceStats::default());
        let stored = sqlite::last_seen(&pool)
            .await?
            .into_iter()
            .map(|(s, t, _)| (s, t));
        let setup = mqtt::SourceSetup::new(&cfg, stored.collect());
        let stop_source = Arc::new(AtomicBool::new(false));
        let mut source_thread = None;
        let mut external = None;
        let mut broker_addr = None;
        let mut broker_front = None;
        let broker_desc;
        let live_out;
        match cfg.broker.mode {
            BrokerMode::Embedded => {
                let filters = cfg
                    .ingest
                    .filters()
                    .into_iter()
                    .chain([mqtt::CONTROL_TOPIC.to_string()])
                    .collect();
                let viewer = crate::broker::write_viewer_login(&db_path)
                    .map_err(
                        |e| tracing::warn!(error = %e, "no local viewer login for centinela tui"),
                    )
                    .ok();
                let (mut links, front) = crate::broker::start_broker(
                    &cfg.broker,
                    &[
                        ("centinela-ingest", filters),
                        ("centinela-live", Vec::new()),
                    ],
                    viewer,
                )?;
                broker_front = Some(front);
                let link = links.remove(0);
                live_out = crate::live::Out::link(links.remove(0));
                broker_addr = Some(cfg.broker.listen);
                broker_desc = format!("embedded {}", cfg.broker.listen);
                let (stats, stop) = (source_stats.clone(), stop_source.clone());
                let control = control_tx.clone();
                source_thread = Some(
                    std::thread::Builder::new()
                        .name("ingest".into())
                        .spawn(move || {
                            mqtt::run_embedded(link, &setup, stats, readings_tx, control, stop)
                        })
                        .context("while starting the ingest thread")?,
                );
            }
            BrokerMode::External => {
                broker_desc = format!("external {}", cfg.broker.url.as_deref().unwrap_or(""));
                live_out = crate::live::Out::external(&cfg.broker)?;
                let (bcfg, icfg) = (cfg.broker.clone(), setup);
                let (stats, control) = (source_stats.clone(), control_tx.clone());
                external = Some(tokio::spawn(async move {
                    mqtt::run_external(&bcfg, &icfg, stats, readings_tx, control, stop_rx).await
                }));
            }
        }
        let (publish_tx, publish_rx) = mpsc::channel(256);
        let discovery = cfg.homeassistant.as_ref().filter(|h| h.discovery).map(|h| {
            crate::homeassistant::Discovery::new(
                &h.prefix,
                cfg.rules.iter().map(|r| r.name.clone()),
            )
        });
        tasks.push(tokio::spawn(crate::live::run(
            live_out,
            live.subscribe(),
            publish_rx,
            discovery,
            stop_tx.subscribe(),
        )));

        // Notifications: a worker per configured channel, reading the outbox the store
        // writes; the Telegram bot when asked for.
        let senders =
            crate::notify::senders(&cfg.notify, Some(crate::live::publish_fn(publish_tx)))
                .context("while setting up the notification channels")?;
        if !senders.is_empty() {
            let channels: Vec<&str> = senders.iter().map(|s| s.channel()).collect();
            tracing::info!(?channels, "notification channels ready");
        }
        tasks.extend(crate::notify::spawn_workers(
            &outbox,
            &cfg.notify,
            senders,
            stop_tx.subscribe(),
        ));
        if let Some(t) = cfg.notify.telegram.as_ref().filter(|t| t.bot) {
            let backend = Arc::new(BotBridge {
                control: control_tx.clone(),
                view: view.clone(),
            });
            let bot = crate::notify::bot::TelegramBot::from_config(t, backend, Some(pool.clone()))
                .context("while starting the Telegram bot")?;
            tasks.push(bot.spawn(stop_tx.subscribe()));
        }
        let figures = Figures {
            broker: broker_desc,
            storage: format!("sqlite {}", db_path.display()),
            source: source_stats.clone(),
            store: store_stats.clone(),
            influx: influx_stats.clone(),
            pool: pool.clone(),
            outbox_counts: outbox_counts.clone(),
        };
        tasks.push(tokio::spawn(run_status(
            figures,
            live.clone(),
            stop_tx.subscribe(),
        )));
        if let Some(h) = &cfg.http {
            let m = MetricsSource {
                started: Instant::now(),
                source: source_stats.clone(),
                store: store_stats.clone(),
                influx: influx_stats.clone(),
                view: view.clone(),
                heartbeat: heartbeat.clone(),
                outbox: outbox_counts.clone(),
                readings: readings_weak.clone(),
                store_queue: store_weak.clone(),
                tick_ms: cfg.engine.tick.as_millis(),
            };
            let listener = crate::http::bind(h.listen).await?;
            let stop = stop_tx.subscribe();
            tasks.push(tokio::spawn(crate::http::serve_on(
                listener,
                move || m.snapshot(),
                stop,
            )));
        }
        tracing::info!(db = %db_path.display(), "pipeline started");
        Ok(Service {
            broker_addr,
            broker_front,
            db_path,
            source_stats,
            store_stats,
            influx_stats,
            live,
            control: control_tx,
            reload: reload_tx,
            view,
            heartbeat,
            stop_source,
            stop_tx,
            _db_lock: db_lock,
            tasks,
            source_thread,
            external,
        })
    }

    /// Resolves when the external source stops by itself (a refused connection); never
    /// with the embedded broker.
    pub async fn failed(&mut self) -> anyhow::Error {
        match self.external.as_mut() {
            Some(h) => match h.await {
                Ok(Err(e)) => anyhow::Error::new(e),
                Ok(Ok(())) => anyhow::anyhow!("the MQTT source stopped"),
                Err(e) => anyhow::anyhow!("the MQTT source panicked: {e}"),
            },
            None => std::future::pending().await,
        }
    }

    /// Stops taking messages, drains every stage and flushes the database.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        tracing::info!("shutting down: draining the pipeline");
        self.stop_source.store(true, Ordering::Relaxed);
        let _ = self.stop_tx.send(true);
        if let Some(t) = self.source_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Some(h) = self.external.take() {
            if !h.is_finished() {
                let _ = h.await;
            }
        }
        drop(self.control);
        for t in self.tasks {
            t.await.context("a pipeline task panicked")?;
        }
        let s = &self.store_stats;
        let (readings, alerts, dropped) = (
            s.pending.load(Ordering::Relaxed),
            s.alerts_pending.load(Ordering::Relaxed),
            s.dropped.load(Ordering::Relaxed),
        );
        if readings + alerts + dropped > 0 {
            anyhow::bail!(
                "pipeline stopped, but {readings} readings and {alerts} alert batches were not \
                 written to {} ({dropped} more readings were dropped earlier while writes failed)",
                self.db_path.display()
            );
        }
        tracing::info!("pipeline stopped; everything flushed");
        Ok(())
    }
}

/// Builds the engine from the rules, restores the persisted alert state and silences,
/// and refills rate and window rules from the stored readings.
async fn start_engine(cfg: &Config, pool: &sqlx::SqlitePool) -> anyhow::Result<Engine> {
    let mut engine = Engine::new(&cfg.rules, &cfg.engine);
    let now = now_ms();
    let (alerts, silences) = sqlite::load_engine_state(pool)
        .await
        .context("while loading the alert state")?;
    let (n_alerts, n_silences) = (alerts.len(), silences.len());
    engine.restore(alerts, silences, now);
    let mut primed = 0;
    if let Some(window) = engine.max_window_ms() {
        primed = prime(&mut engine, pool, now.saturating_sub(window)).await?;
    }
    tracing::info!(
        rules = cfg.rules.len(),
        alerts = n_alerts,
        silences = n_silences,
        primed,
        "rules engine ready"
    );
    Ok(engine)
}

/// Refills rate and window rules with the stored readings since `since`.
async fn prime(
    engine: &mut Engine,
    pool: &sqlx::SqlitePool,
    since: Timestamp,
) -> anyhow::Result<usize> {
    let mut history = sqlite::query_readings(pool, "#", since).await?;
    history.sort_by_key(|r| r.1);
    let mut names: HashMap<String, SeriesId> = HashMap::new();
    let n = history.len();
    for (series, ts, value) in history {
        let id = names
            .entry(series)
            .or_insert_with_key(|k| Arc::from(k.as_str()))
            .clone();
        engine.prime(&Reading {
            series: id,
            value,
            ts,
            unit: None,
        });
    }
    Ok(n)
}

/// The engine stage: readings in; readings, alert events and state out.
struct EngineStage {
    engine: Engine,
    heartbeat: Arc<std::sync::atomic::AtomicI64>,
    store: mpsc::Sender<StoreMsg>,
    /// The InfluxDB sink, when configured.
    influx: Option<mpsc::Sender<InfluxInput>>,
    live: broadcast::Sender<LiveEvent>,
    view: watch::Sender<Arc<EngineView>>,
    last: HashMap<SeriesId, LastValue>,
    /// Reused between batches.
    events: Vec<crate::model::AlertEvent>,
    /// When state without events was last handed to the store.
    state_saved: Timestamp,
}

/// How often alert state that changed without an event is saved.
const STATE_SAVE_MS: i64 = 10_000;

impl EngineStage {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Vec<Reading>>,
        mut control: mpsc::Receiver<ControlRequest>,
        mut reload: mpsc::Receiver<Config>,
        pool: sqlx::SqlitePool,
        tick: Duration,
    ) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = rx.recv() => {
                    let Some(mut batch) = batch else { break };
                    let now = now_ms();
                    for r in &mut batch {
                        crate::engine::carry_unit(r, self.last.get(&r.series).and_then(|l| l.unit.as_ref()));
                        self.engine.on_reading(r, now, &mut self.events);
                        match self.last.get_mut(&r.series) {
                            Some(l) if l.ts > r.ts => {}
                            Some(l) => *l = LastValue { value: r.value, ts: r.ts, unit: r.unit.clone().or(l.unit.take()) },
                            None => {
                                self.last.insert(r.series.clone(), LastValue { value: r.value, ts: r.ts, unit: r.unit.clone() });
                            }
                        }
                    }
                    let shared: Arc<[Reading]> = batch.into();
                    let _ = self.live.send(LiveEvent::Readings(shared.clone()));
                    if let Some(tx) = &self.influx {
                        // The sink moves a burst to its backlog rather than hold us up.
                        let _ = tx.send(InfluxInput::Readings(shared.clone())).await;
                    }
                    if self.store.send(StoreMsg::Readings(shared)).await.is_err() {
                        break;
                    }
                    if !self.events.is_empty() && !self.emit().await {
                        break;
                    }
                }
                _ = ticker.tick() => {
                    let now = now_ms();
                    self.heartbeat.store(now, Ordering::Relaxed);
                    self.engine.tick(now, &mut self.events);
                    // Events go out at once (with the state they leave). State that
                    // changed without an event — deadman last-seen times, moving with
                    // every reading — is saved every few seconds, not every tick: it
                    // spares the disk and costs a restart at most that much precision.
                    let state_due = now - self.state_saved >= STATE_SAVE_MS;
                    if !self.events.is_empty() || state_due {
                        if !self.emit().await {
                            break;
                        }
                        self.state_saved = now;
                    }
                    self.publish_view(now);
                }
                Some(cfg) = reload.recv() => {
                    // Persist what changed first, so the new engine starts from all of it.
                    if !self.emit().await {
                        break;
                    }
                    let now = now_ms();
                    let records = self.engine.records();
                    let silences = self.engine.silences();
                    let mut engine = Engine::new(&cfg.rules, &cfg.engine);
                    engine.restore(records, silences, now);
                    if let Some(window) = engine.max_window_ms() {
                        match prime(&mut engine, &pool, now.saturating_sub(window)).await {
                            Ok(n) => tracing::debug!(readings = n, "windows refilled after reload"),
                            Err(e) => tracing::warn!(error = %e, "cannot refill windows after reload"),
                        }
                    }
                    self.engine = engine;
                    ticker.reset_after(cfg.engine.tick.std());
                    tracing::info!(rules = cfg.rules.len(), "rules reloaded; alert state kept");
                    self.publish_view(now);
                }
                Some(req) = control.recv() => {
                    let now = now_ms();
                    let answer = match self.engine.control(&req.control, now) {
                        Ok(events) => {
                            let words = describe(&req.control, &events);
                            tracing::info!(request = ?req.control, "{words}");
                            self.events.extend(events);
                            Ok(words)
                        }
                        Err(e) => {
                            tracing::warn!(request = ?req.control, "refused: {e}");
                            Err(e.to_string())
                        }
                    };
                    if let Some(reply) = req.reply {
                        let _ = reply.send(answer);
                    }
                    if !self.emit().await {
                        break;
                    }
                    self.publish_view(now);
                }
            }
        }
        // The input has ended: persist what changed since the last batch.
        let _ = self.emit().await;
    }

    /// Sends pending events and state to the store (and events to the live bus).
    /// False when the store is gone.
    async fn emit(&mut self) -> bool {
        let batch = AlertBatch {
            events: std::mem::take(&mut self.events),
            state: self.engine.take_dirty(),
            silences: self.engine.take_dirty_silences(),
        };
        if batch.is_empty() {
            return true;
        }
        for e in &batch.events {
            crate::engine::log_event(e);
            let _ = self.live.send(LiveEvent::Alert(e.clone()));
        }
        if let (Some(tx), false) = (&self.influx, batch.events.is_empty()) {
            let _ = tx.send(InfluxInput::Events(batch.events.clone())).await;
        }
        self.store.send(StoreMsg::Alerts(batch)).await.is_ok()
    }

    fn publish_view(&self, now: Timestamp) {
        let view = EngineView {
            alerts: self.engine.snapshot(now),
            last: self.last.clone(),
            ignored: self.engine.ignored_readings(),
        };
        self.view.send_replace(Arc::new(view));
    }
}

/// What to answer a person whose request was carried out.
fn describe(c: &Control, events: &[crate::model::AlertEvent]) -> String {
    match c {
        Control::Ack { .. } => {
            let ids: Vec<String> = events.iter().map(|e| e.alert_id()).collect();
            format!(
                "acknowledged {}",
                if ids.is_empty() {
                    "nothing".to_string()
                } else {
                    ids.join(", ")
                }
            )
        }
        Control::Silence {
            pattern,
            until,
            reason,
            ..
        } => {
            format!(
                "silenced {pattern} until {} ({reason})",
                crate::model::format_ts(*until)
            )
        }
        Control::Unsilence {
            pattern: Some(p), ..
        } => format!("silence {p} lifted"),
        Control::Unsilence { pattern: None, .. } => "all silences lifted".to_string(),
    }
}

/// What `/metrics` and `/healthz` read: shared counters only, never the database.
struct MetricsSource {
    started: Instant,
    source: Arc<SourceStats>,
    store: Arc<StoreStats>,
    influx: Option<Arc<InfluxStats>>,
    view: watch::Receiver<Arc<EngineView>>,
    heartbeat: Arc<std::sync::atomic::AtomicI64>,
    outbox: Arc<std::sync::Mutex<Vec<crate::notify::ChannelCounts>>>,
    readings: mpsc::WeakSender<Vec<Reading>>,
    store_queue: mpsc::WeakSender<StoreMsg>,
    tick_ms: i64,
}

impl MetricsSource {
    fn snapshot(&self) -> (crate::http::Metrics, crate::http::Health) {
        use crate::http::{Health, InfluxCounts, Metrics, OutboxCounts, QueueDepth, StageHealth};
        fn depth<T>(name: &str, w: &mpsc::WeakSender<T>) -> Option<QueueDepth> {
            let tx = w.upgrade()?;
            Some(QueueDepth {
                queue: name.to_string(),
                depth: (tx.max_capacity() - tx.capacity()) as u64,
                capacity: tx.max_capacity() as u64,
            })
        }
        let view = self.view.borrow().clone();
        let mut firing: std::collections::BTreeMap<String, u64> = ["info", "warning", "critical"]
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        for a in view
            .alerts
            .iter()
            .filter(|a| a.state != crate::model::AlertState::Pending)
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
        let influx = self.influx.as_ref().map(|s| {
            let s = s.snapshot();
            InfluxCounts {
                accepted: s.accepted,
                written: s.written,
                backlog: s.backlog,
                dropped: s.dropped,
                rejected: s.rejected,
            }
        });
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
            queues: [
                depth("readings", &self.readings),
                depth("store", &self.store_queue),
            ]
            .into_iter()
            .flatten()
            .collect(),
            outbox,
            influx,
            alerts_firing: firing.into_iter().collect(),
            disk_bytes_written: crate::http::disk_bytes_written(),
            resident_memory_bytes: crate::http::resident_memory_bytes(),
            uptime: self.started.elapsed(),
        };
        let beat_age = now_ms() - self.heartbeat.load(Ordering::Relaxed);
        let influx_ok = self.influx.as_ref().map(|s| s.snapshot().dropped == 0);
        let mut stages = vec![
            StageHealth::new(
                "broker",
                self.source.connected.load(Ordering::Relaxed),
                if self.source.connected.load(Ordering::Relaxed) {
                    "connected"
                } else {
                    "not connected"
                },
            ),
            StageHealth::new(
                "engine",
                beat_age < 10 * self.tick_ms.max(1000),
                format!("last tick {beat_age} ms ago"),
            ),
            {
                let (ok, detail) = self.store.health(now_ms());
                StageHealth::new("sqlite", ok, detail)
            },
        ];
        if let Some(ok) = influx_ok {
            stages.push(StageHealth::new(
                "influxdb",
                ok,
                if ok {
                    "nothing dropped"
                } else {
                    "points dropped past the backlog bound"
                },
            ));
        }
        (metrics, Health { stages })
    }
}

/// Where the status line's figures come from.
struct Figures {
    broker: String,
    storage: String,
    source: Arc<SourceStats>,
    store: Arc<StoreStats>,
    influx: Option<Arc<InfluxStats>>,
    pool: sqlx::SqlitePool,
    /// Shared with the metrics endpoint, which cannot wait for the database.
    outbox_counts: Arc<std::sync::Mutex<Vec<crate::notify::ChannelCounts>>>,
}

/// Publishes pipeline figures on the live bus once a second.
async fn run_status(
    f: Figures,
    live: broadcast::Sender<LiveEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let Figures {
        broker,
        storage,
        source,
        store,
        influx,
        pool,
        outbox_counts,
    } = f;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let received = source.readings.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (received - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, received);
        let (outbox_pending, outbox_dead) = match crate::notify::counts(&pool).await {
            Ok(c) => {
                let sums = (
                    c.iter().map(|c| c.pending).sum(),
                    c.iter().map(|c| c.dead).sum(),
                );
                if let Ok(mut shared) = outbox_counts.lock() {
                    *shared = c;
                }
                sums
            }
            Err(_) => (0, 0),
        };
        let status = PipelineStatus {
            broker: broker.clone(),
            broker_up: source.connected.load(Ordering::Relaxed),
            storage: storage.clone(),
            storage_ok: store.health(now_ms()).0,
            readings_per_s: rate,
            received_total: received,
            stored_total: store.stored.load(Ordering::Relaxed),
            decode_errors_total: source.errors_total(),
            decode_errors: source
                .errors_by_reason()
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (r.to_string(), n))
                .collect(),
            outbox_pending,
            outbox_dead,
            influx_backlog: influx.as_ref().map(|s| s.snapshot().backlog),
            offline: false,
        };
        let _ = live.send(LiveEvent::Status(status));
    }
}
