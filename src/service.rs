//! The topology: every stage as a task (or thread), the bounded channels between them,
//! created here and nowhere else, and the order of shutdown. Wiring only: each stage
//! lives beside its core (`source::mqtt`, `engine::stage`, `store::*`, `live`,
//! `notify`, `status`, `http`).
//!
//! ```text
//!  source (link thread | rumqttc task) ─[readings: 64 batches]─► engine stage
//!  engine stage ─Fanout─┬─[64]──► sqlite writer      (always on; the engine waits)
//!                       ├─[256]─► live bus           (broadcast to viewers; drops)
//!                       └─[64]──► each configured output (influxdb, parquet, …)
//!  control (centinela/control, bot, TUI) ─[64]─► engine stage
//! ```
//!
//! Falling behind: the source waits for the engine, the engine waits for the writer
//! and every output that waits (back-pressure down to the broker's buffer); the live
//! bus drops for slow viewers, which count what they missed.
//!
//! Signals and reload: [`reload`] runs the service under SIGTERM, SIGHUP and systemd's
//! watchdog; [`channels`] is the set of notification workers a reload replaces.
//!
//! Shutdown: one [`Trigger`]; every stage holds a [`Shutdown`](crate::shutdown::Shutdown)
//! token. It runs front to back: the source stops taking messages, each stage drains
//! its input and closes its output, the writer flushes last; the service returns
//! when the last token has been dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{BrokerMode, Config};
pub use crate::control::ControlRequest;
use crate::engine::stage::{self, EngineStage};
pub use crate::engine::stage::{EngineView, LastValue};
use crate::model::{now_ms, LiveEvent, Reading};
use crate::shutdown::Trigger;
use crate::source::mqtt::{self, SourceStats};
use crate::store::influx::{InfluxOutput, InfluxStats};
use crate::store::sqlite::{self, StoreStats, Writer, WriterConfig};
use crate::store::{Channel, Fanout, Output, SqliteOutput};

pub mod channels;
pub mod reload;

/// Capacity of the live bus in messages (a readings batch is one): viewers further
/// behind than this miss events (counted). Kept small: every slot may hold a batch.
const LIVE_CAPACITY: usize = 256;
/// Batches from the source waiting for the engine. Past it the source waits, the broker
/// front stops reading from clients, and publishers wait on TCP: a longer queue only
/// holds more memory.
const READINGS_QUEUE: usize = 8;

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
    /// The InfluxDB output's counters; `None` when it is not configured.
    pub influx_stats: Option<Arc<InfluxStats>>,
    /// The Kafka source's counters; `None` without `[source.kafka]`.
    #[cfg(feature = "kafka")]
    pub kafka_source: Option<Arc<crate::source::kafka::KafkaSourceStats>>,
    /// Every output, SQLite first, in the order the engine feeds them.
    pub outputs: Vec<Arc<dyn Output>>,
    pub live: broadcast::Sender<LiveEvent>,
    pub control: mpsc::Sender<ControlRequest>,
    /// New rules and engine settings (SIGHUP); validated before they are sent.
    pub reload: mpsc::Sender<Config>,
    /// New `[notify]` sections (SIGHUP): the workers are replaced when they changed.
    channels: mpsc::Sender<crate::config::NotifyConfig>,
    /// Refreshed by the engine stage about once a second.
    pub view: watch::Receiver<Arc<EngineView>>,
    /// Wall time (ms) of the engine stage's last tick: it stops moving when the
    /// pipeline is stuck (the systemd watchdog reads it).
    pub heartbeat: Arc<AtomicI64>,
    trigger: Trigger,
    /// Closed at the end of the stop, before the lock goes: the last connection's
    /// checkpoint must be over when a new instance opens the file.
    pool: sqlx::SqlitePool,
    /// Held while the service runs: a second instance on the same database refuses.
    _db_lock: sqlite::DbLock,
    tasks: Vec<JoinHandle<()>>,
    source_thread: Option<std::thread::JoinHandle<()>>,
    /// Closes the embedded broker's listeners first when the service stops.
    broker_door: Option<crate::broker::Door>,
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

        let trigger = Trigger::new();
        let (readings_tx, readings_rx) = mpsc::channel::<Vec<Reading>>(READINGS_QUEUE);
        // For the queue-depth metrics, without keeping the channel open at shutdown.
        let readings_weak = readings_tx.downgrade();
        let (control_tx, control_rx) = mpsc::channel::<ControlRequest>(64);
        let (view_tx, view) = watch::channel(Arc::new(EngineView::default()));
        let (reload_tx, reload_rx) = mpsc::channel::<Config>(4);
        let (adopt_tx, adopt_rx) = mpsc::channel::<stage::Adopt>(4);
        let (system_tx, system_rx) = mpsc::channel::<crate::engine::SystemAlert>(64);
        let heartbeat = Arc::new(AtomicI64::new(now_ms()));
        let outbox_counts = crate::status::SharedOutboxCounts::default();
        let (live, _) = broadcast::channel::<LiveEvent>(LIVE_CAPACITY);

        // Outputs: SQLite (always), the live bus, then those the configuration asks for.
        let outbox = crate::notify::Outbox::new(pool.clone());
        let mut writer =
            Writer::new(pool.clone()).with_deadband(cfg.storage.sqlite.deadband.clone());
        // With `from_kafka` this instance's alerts are notified from the alerts topic.
        #[cfg(feature = "kafka")]
        if cfg.notify.from_kafka {
            crate::notify::from_kafka::settings(&cfg).map_err(anyhow::Error::msg)?;
        }
        if !cfg.notify.from_kafka {
            writer = writer.with_outbox(outbox.clone());
        }
        let sq = &cfg.storage.sqlite;
        let wcfg = WriterConfig {
            flush_interval: sq.flush_interval.std(),
            retention: sq.retention.std(),
            rollup_retention: sq.rollup_retention.std(),
            maintenance_interval: Duration::from_secs(300),
        };
        let sqlite_out = Arc::new(SqliteOutput::new(writer, wcfg));
        let store_stats = sqlite_out.stats();
        let mut outputs: Vec<Arc<dyn Output>> = vec![
            sqlite_out,
            Arc::new(crate::live::LiveOutput { bus: live.clone() }),
        ];
        outputs.extend(crate::store::configured(&cfg));
        // With a Kafka source, the engine's decisions go back to the consumer, which
        // commits them with the offsets.
        #[cfg(feature = "kafka")]
        let mut kafka_tap = cfg.source.kafka.as_ref().map(|_| {
            let (tap, rx) = crate::kafka::tap::Tap::new();
            let stats = tap.stats();
            outputs.push(Arc::new(tap));
            (rx, stats)
        });
        let mut tasks = Vec::new();
        let mut fanout = Fanout::new();
        let mut queues = Vec::new();
        let ctx = crate::store::Context { db_path: &db_path };
        for o in &outputs {
            let Channel { tx, rx } = Channel::for_output(o.as_ref());
            queues.push((o.name(), tx.downgrade()));
            fanout.add(o.as_ref(), tx);
            tasks.push(o.start(&ctx, rx, trigger.token()).await?);
        }
        let influx_stats = crate::store::find::<InfluxOutput>(&outputs).map(InfluxOutput::stats);

        let engine = stage::start_engine(&cfg, &pool).await?;
        let stage = EngineStage::new(engine, fanout, view_tx, heartbeat.clone());
        let inputs = stage::Inputs {
            readings: readings_rx,
            control: control_rx,
            reload: reload_rx,
            adopt: adopt_rx,
            system: system_rx,
        };
        tasks.push(tokio::spawn(stage.run(
            inputs,
            pool.clone(),
            cfg.engine.tick.std(),
            trigger.token(),
        )));

        let source_stats = Arc::new(SourceStats::default());
        let stored = sqlite::last_seen(&pool)
            .await?
            .into_iter()
            .map(|(s, t, _)| (s, t));
        let setup = mqtt::SourceSetup::new(&cfg, stored.collect());
        // With a Kafka source, MQTT and Kafka meet in one merge in front of the engine.
        #[cfg(feature = "kafka")]
        let mut kafka_source = None;
        #[cfg(feature = "kafka")]
        let readings_tx = match &cfg.source.kafka {
            Some(k) => {
                let (tap, kstats) = kafka_tap
                    .take()
                    .context("the Kafka tap is set up with the source")?;
                let started = crate::source::kafka::start(
                    k,
                    setup.clone(),
                    source_stats.clone(),
                    store_stats.clone(),
                    readings_tx,
                    tap,
                    kstats,
                    adopt_tx,
                    &db_path,
                    trigger.token(),
                )
                .await?;
                tasks.extend(started.tasks);
                kafka_source = Some(started.stats);
                started.mqtt
            }
            None => {
                drop(adopt_tx);
                readings_tx
            }
        };
        #[cfg(not(feature = "kafka"))]
        drop(adopt_tx);
        let mut source_thread = None;
        let mut external = None;
        let mut broker_addr = None;
        let mut broker_front = None;
        let mut broker_door = None;
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
                let (mut links, front, door) = crate::broker::start_broker(
                    &cfg.broker,
                    &[
                        ("centinela-ingest", filters),
                        ("centinela-live", Vec::new()),
                    ],
                    viewer,
                )?;
                broker_front = Some(front);
                broker_door = Some(door);
                let link = links.remove(0);
                live_out = crate::live::Out::link(links.remove(0));
                broker_addr = Some(cfg.broker.listen);
                broker_desc = format!("embedded {}", cfg.broker.listen);
                let (stats, stop) = (source_stats.clone(), trigger.token());
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
                let stop = trigger.token();
                external = Some(tokio::spawn(async move {
                    mqtt::run_external(&bcfg, &icfg, stats, readings_tx, control, stop).await
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
            trigger.token(),
        )));

        // Notifications: a worker per configured channel, reading the outbox the store
        // writes; the Telegram bot when asked for.
        let build: channels::Build = Box::new(move |n| {
            crate::notify::senders(n, Some(crate::live::publish_fn(publish_tx.clone())))
        });
        let senders = build(&cfg.notify).context("while setting up the notification channels")?;
        if !senders.is_empty() {
            let channels: Vec<&str> = senders.iter().map(|s| s.channel()).collect();
            tracing::info!(?channels, "notification channels ready");
        }
        #[cfg(feature = "kafka")]
        if cfg.notify.delivers_from_kafka() {
            let names = senders.iter().map(|s| s.channel().to_string()).collect();
            let n = crate::notify::from_kafka::start(&cfg, outbox.clone(), names, trigger.token())
                .await
                .map_err(anyhow::Error::msg)?;
            tasks.push(n.task);
        }
        let (channels_tx, channels_task) = channels::spawn(
            outbox.clone(),
            cfg.notify.clone(),
            senders,
            build,
            trigger.token(),
            Some(system_tx),
        );
        tasks.push(channels_task);
        if let Some(t) = cfg.notify.telegram.as_ref().filter(|t| t.bot) {
            let backend = Arc::new(crate::control::BotBridge {
                control: control_tx.clone(),
                view: view.clone(),
            });
            let bot = crate::notify::bot::TelegramBot::from_config(t, backend, Some(pool.clone()))
                .context("while starting the Telegram bot")?;
            tasks.push(bot.spawn(trigger.token().watch()));
        }
        let figures = crate::status::Figures {
            broker: broker_desc,
            storage: format!("sqlite {}", db_path.display()),
            source: source_stats.clone(),
            store: store_stats.clone(),
            outputs: outputs.clone(),
            pool: pool.clone(),
            outbox_counts: outbox_counts.clone(),
        };
        tasks.push(tokio::spawn(crate::status::run_status(
            figures,
            live.clone(),
            trigger.token(),
        )));
        if let Some(h) = &cfg.http {
            let m = crate::status::MetricsSource {
                started: Instant::now(),
                source: source_stats.clone(),
                broker: broker_front.clone(),
                store: store_stats.clone(),
                outputs: outputs.clone(),
                view: view.clone(),
                heartbeat: heartbeat.clone(),
                outbox: outbox_counts.clone(),
                readings: readings_weak.clone(),
                queues,
                tick_ms: cfg.engine.tick.as_millis(),
                channels: cfg
                    .notify
                    .channels()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            };
            let listener = crate::http::bind(h.listen).await?;
            tasks.push(tokio::spawn(crate::http::serve_on(
                listener,
                move || m.snapshot(),
                trigger.token().watch(),
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
            #[cfg(feature = "kafka")]
            kafka_source,
            outputs,
            live,
            control: control_tx,
            reload: reload_tx,
            channels: channels_tx,
            view,
            heartbeat,
            trigger,
            pool: pool.clone(),
            _db_lock: db_lock,
            tasks,
            source_thread,
            broker_door,
            external,
        })
    }

    /// Hands a new configuration to the running stages: the rules and engine settings
    /// to the engine, the `[notify]` sections to the notification workers. What else
    /// changed needs a restart ([`reload::needs_restart`]).
    pub async fn reload(&self, cfg: Config) -> anyhow::Result<()> {
        self.channels
            .send(cfg.notify.clone())
            .await
            .map_err(|_| anyhow::anyhow!("the notification workers have stopped"))?;
        self.reload
            .send(cfg)
            .await
            .map_err(|_| anyhow::anyhow!("the engine has stopped"))
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
        // No publish is acknowledged from here on; what was is read before the source stops.
        if let Some(door) = self.broker_door.take() {
            door.close(Duration::from_secs(2)).await;
        }
        self.trigger.begin();
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
        self.trigger.completed().await;
        // Every stage is done with the database: close it (the last connection
        // checkpoints the WAL) before the lock is released. A connection a stray task
        // still holds must not keep the stop waiting for ever.
        if tokio::time::timeout(Duration::from_secs(10), self.pool.close())
            .await
            .is_err()
        {
            tracing::warn!("the database was still in use 10 s after the pipeline stopped");
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
