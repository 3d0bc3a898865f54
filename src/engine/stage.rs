//! The engine's async stage, beside its pure core ([`super::Engine`]): readings in
//! from the source; readings, alert events and state out to every output through the
//! [`Fanout`]; acks and silences in from people ([`ControlRequest`]); new rules in on
//! reload; and the published [`EngineView`] that `/status`, the bot and the TUI read.
//!
//! It ends when its input closes (the source has stopped), after handing the outputs
//! what changed since the last batch: shutdown runs front to back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use super::{AlertView, Engine};
use crate::config::Config;
use crate::control::ControlRequest;
use crate::model::{now_ms, Control, LiveEvent, Reading, SeriesId, Timestamp};
use crate::shutdown::Shutdown;
use crate::store::sqlite::{self, AlertBatch};
use crate::store::{Fanout, OutputMsg};

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
    pub last: crate::model::FastMap<SeriesId, LastValue>,
    /// Readings the engine ignored (older than the newest of their series, not finite).
    pub ignored: u64,
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

/// Builds the engine from the rules, restores the persisted alert state and silences,
/// and refills rate and window rules from the stored readings.
pub async fn start_engine(cfg: &Config, pool: &sqlx::SqlitePool) -> anyhow::Result<Engine> {
    let mut engine = Engine::new(&cfg.rules, &cfg.engine);
    for d in super::system_rules(cfg) {
        engine.declare_system(&d);
    }
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
pub struct EngineStage {
    engine: Engine,
    /// Wall time (ms) of the last tick: it stops moving when the pipeline is stuck.
    heartbeat: Arc<AtomicI64>,
    /// Every output's input: SQLite, the live bus, InfluxDB, …
    outputs: Fanout,
    view: watch::Sender<Arc<EngineView>>,
    last: crate::model::FastMap<SeriesId, LastValue>,
    /// Reused between batches.
    events: Vec<crate::model::AlertEvent>,
    /// When state without events was last handed to the outputs.
    state_saved: Timestamp,
}

/// The engine stage's inputs, created by the service.
pub struct Inputs {
    pub readings: mpsc::Receiver<Vec<Reading>>,
    pub control: mpsc::Receiver<ControlRequest>,
    pub reload: mpsc::Receiver<Config>,
    /// Alert state taken over from another instance (Kafka changelog restore).
    pub adopt: mpsc::Receiver<Adopt>,
    /// Alerts the service raises about itself (a notification channel failing).
    pub system: mpsc::Receiver<super::SystemAlert>,
}

/// Alert state of series this instance takes over ([`Engine::adopt_with_history`]);
/// `done` gets the answer once the engine has them, before any later reading.
pub struct Adopt {
    pub records: Vec<super::AlertRecord>,
    /// Readings the previous owner had judged, to refill rate and window rules.
    pub history: Vec<Reading>,
    /// Series that went to another instance ([`Engine::release`]).
    pub released: Vec<String>,
    pub done: tokio::sync::oneshot::Sender<Adopted>,
}

/// The engine's answer to an [`Adopt`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Adopted {
    /// Alerts taken over.
    pub alerts: usize,
    /// [`Engine::max_window_ms`] of the rules now: how much history a refill needs.
    pub window_ms: Option<i64>,
}

/// How often alert state that changed without an event is saved (deadman last-seen
/// times): once a minute, like the series catalogue, so a restart loses at most that
/// much precision and the SD card is spared a rewrite of every series' state.
const STATE_SAVE_MS: i64 = 60_000;

impl EngineStage {
    pub fn new(
        engine: Engine,
        outputs: Fanout,
        view: watch::Sender<Arc<EngineView>>,
        heartbeat: Arc<AtomicI64>,
    ) -> Self {
        Self {
            engine,
            heartbeat,
            outputs,
            view,
            last: Default::default(),
            events: Vec::new(),
            state_saved: 0,
        }
    }

    /// Runs until the readings input closes, then hands the outputs what changed since
    /// the last batch and returns (dropping their senders: they end after it). The
    /// stage does not stop on `shutdown` itself: the source does, and its end closes
    /// the input.
    pub async fn run(
        mut self,
        inputs: Inputs,
        pool: sqlx::SqlitePool,
        tick: Duration,
        shutdown: Shutdown,
    ) {
        let _shutdown = shutdown;
        let Inputs {
            readings: mut rx,
            mut control,
            mut reload,
            mut adopt,
            mut system,
        } = inputs;
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = rx.recv() => {
                    let Some(mut batch) = batch else { break };
                    let now = now_ms();
                    for r in &mut batch {
                        super::carry_unit(r, self.last.get(&r.series).and_then(|l| l.unit.as_ref()));
                        self.engine.on_reading(r, now, &mut self.events);
                        match self.last.get_mut(&r.series) {
                            Some(l) if l.ts > r.ts => {}
                            Some(l) => *l = LastValue { value: r.value, ts: r.ts, unit: r.unit.clone().or(l.unit.take()) },
                            None => {
                                self.last.insert(r.series.clone(), LastValue { value: r.value, ts: r.ts, unit: r.unit.clone() });
                            }
                        }
                    }
                    // Alert latency: only events readings caused (deadman and
                    // system alerts are judged on the tick, not on a reading).
                    let done = now_ms();
                    for e in &self.events {
                        crate::http::histogram::ALERT_LATENCY.observe_ms(e.ts, done);
                    }
                    let shared: Arc<[Reading]> = batch.into();
                    if !self.outputs.send(OutputMsg::Readings(shared)).await {
                        break;
                    }
                    if !self.events.is_empty() && !self.emit(false).await {
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
                        if !self.emit(state_due).await {
                            break;
                        }
                        if state_due {
                            self.state_saved = now;
                        }
                    }
                    self.publish_view(now);
                }
                Some(cfg) = reload.recv() => {
                    // Persist what changed first, so the new engine starts from all of it.
                    if !self.emit(true).await {
                        break;
                    }
                    let now = now_ms();
                    let records = self.engine.records();
                    let silences = self.engine.silences();
                    let mut engine = Engine::new(&cfg.rules, &cfg.engine);
                    for d in super::system_rules(&cfg) {
                        engine.declare_system(&d);
                    }
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
                Some(s) = system.recv() => {
                    let now = now_ms();
                    self.engine.system(&s, now, &mut self.events);
                    if !self.emit(false).await {
                        break;
                    }
                    self.publish_view(now);
                }
                Some(req) = adopt.recv() => {
                    let now = now_ms();
                    self.engine.release(req.released.iter().map(String::as_str));
                    let alerts = self.engine.adopt_with_history(req.records, &req.history);
                    let window_ms = self.engine.max_window_ms();
                    let _ = req.done.send(Adopted { alerts, window_ms });
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
                    if !self.emit(false).await {
                        break;
                    }
                    self.publish_view(now);
                }
            }
        }
        // The input has ended: persist what changed since the last batch.
        let _ = self.emit(true).await;
    }

    /// Hands pending events and the state that changed to the outputs; with `all`, also
    /// the deadman alerts whose only change is their last reading (on the slower
    /// cadence: they move with every reading). False when an essential output (the
    /// store) is gone.
    async fn emit(&mut self, all: bool) -> bool {
        let state = if all {
            self.engine.take_dirty()
        } else {
            self.engine.take_changed()
        };
        let batch = AlertBatch {
            events: std::mem::take(&mut self.events),
            state,
            silences: self.engine.take_dirty_silences(),
        };
        if batch.is_empty() {
            return true;
        }
        for e in &batch.events {
            super::log_event(e);
        }
        self.outputs.send(OutputMsg::Alerts(Arc::new(batch))).await
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
