//! The rules engine: readings in, alert events out. Pure: no I/O, no clock reads,
//! no runtime; every entry point takes `now` (epoch ms) as an argument.
//!
//! It sits between the source stage (which hands it [`Reading`]s) and the stores and
//! notifiers (which take its [`AlertEvent`]s). The async shell around it calls
//! [`Engine::on_reading`] for every reading, [`Engine::tick`] every `engine.tick`,
//! [`Engine::control`] for acks and silences, persists [`Engine::take_dirty`] and
//! [`Engine::take_dirty_silences`] to SQLite, and calls [`Engine::restore`] once at
//! start-up. [`replay()`] drives the same engine with the readings' own clock.
//! That async shell is [`stage`], beside this core: the only part of the folder that
//! does I/O.
//!
//! # How rules behave
//!
//! An **alert** is one rule applied to one series, named `rule/series`. Series are
//! matched with MQTT wildcards (`greenhouse/+/temperature`, `#`).
//!
//! - **threshold**: `above = X` is on when the value is > X (a value equal to X is
//!   not above); `below = X` is on when the value is < X. `clear` adds hysteresis: a
//!   firing alert resolves only when the value is < `clear` (for `above`), or is
//!   greater than `clear` (for `below`); without `clear` it is the threshold itself.
//!   Between the two the alert keeps its state.
//! - **rate**: delta = the value now − the value of the oldest reading with
//!   ts ≥ now − `window` (the reading itself when it is alone); `rise = X` is on when
//!   delta > X, `fall = X` when delta < −X. It resolves as soon as it is no longer on.
//!   Events carry the delta.
//! - **window**: `agg` (avg, min, max, sum, count, spread = max − min) over the
//!   readings with ts in [now − `window`, now], both ends included, then threshold
//!   semantics on the aggregate, once the series has reported for a whole window
//!   (before that the alert keeps its state: the spread of one reading is 0, the
//!   count of a fresh series is low). Events carry the aggregate. Cost per reading is O(1)
//!   amortised and memory is the readings inside one window.
//! - **deadman**: when a series has sent nothing for `silence` (by the clock passed
//!   to `tick`; in `replay`, the replayed clock), the alert fires, stamped
//!   last_seen + `silence`; the next reading resolves it. Series are known from the
//!   readings seen, from persisted state, and from `expect = [...]` (watched from
//!   start-up even if they never reported). `for` does not apply.
//! - **for**: the condition must stay on for this long in *event time*: the first
//!   reading that is on makes the alert pending; a later reading that is still on and
//!   whose ts is ≥ pending start + `for` makes it fire. A reading that is no longer on
//!   (value ≤ threshold for `above`) cancels pending. Without `for` the first reading
//!   that is on fires.
//!
//! ## Lifecycle and notifications
//!
//! ok → pending → firing → resolved (→ ok), or ok → pending → cancelled (→ ok). Every transition is an event for the
//! history; `notify` lists the rule's channels when people are to be told, and is
//! empty otherwise:
//!
//! - pending, and a pending alert cancelled before it fired (an event in state
//!   `cancelled`, never `resolved`), are recorded but never sent;
//! - `repeat`: while firing and not acknowledged, a `repeat` event is sent every
//!   `repeat` (checked on tick);
//! - **acknowledged**: `/ack rule/series` (or `/ack rule` for all its firing alerts)
//!   stops repeats; the alert stays firing until it resolves, and the next firing
//!   needs a new ack;
//! - **silences** (a pattern matched against the rule name or the series, with MQTT
//!   wildcards, until a time, with a reason) empty `notify` but keep the events. When
//!   a silence ends, an alert that fired unannounced and still fires is announced
//!   once (a `repeat` event), and one announced as firing that resolved meanwhile is
//!   announced as resolved; repeats due during the silence are skipped;
//! - **flapping**: more than `engine.flap_transitions` transitions within
//!   `engine.flap_window` emit one `flapping` event (sent, unless silenced) and hold
//!   all notifications until the alert has had no transition for `flap_window`; then
//!   its current state is announced once, as after a silence.
//!   `flap_transitions = 0` turns flapping detection off.
//!
//! ## Time and order
//!
//! Rules run on event time (the readings' timestamps). A reading older than the
//! newest one already seen for its series does not move any rule state of that
//! series (it is counted in [`Engine::ignored_readings`]); the store still stores
//! it. Readings whose value is not a finite number are ignored the same way. Readings with equal timestamps are all evaluated, in arrival order. Wall-clock
//! checks (deadman, repeat, the end of silences and of flapping) happen in `tick`.
//!
//! ## Restarts
//!
//! Alert state (state, pending start, firing start, last notification, ack,
//! flapping, deadman last_seen) and silences are persisted. After a restart a firing
//! alert stays firing and is not announced again, a pending one keeps its start
//! time, and deadman deadlines continue from the persisted last_seen. The readings
//! inside rate and window rules are not persisted: the service refills them from the
//! stored readings ([`Engine::prime`]) before live readings flow.

mod render;
pub mod replay;
mod rule;
pub mod stage;
mod system;
pub use system::{system_rules, SystemAlert, SystemRule};
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::config::{EngineConfig, RuleConfig, RuleKind};
use crate::model::{
    topic_matches, AlertEvent, AlertState, Control, Reading, SeriesId, Severity, Timestamp,
};

pub use render::{human_ms, log_event};
pub use replay::{parse_time, render_summary, replay, ReplayReport, Replayer, RuleSummary, Zone};
use rule::{EvalState, Kind, Rule};

/// Persisted state of one alert, as the store keeps it (upsert by rule and series).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlertRecord {
    pub rule: String,
    pub series: String,
    /// `Ok`, `Pending` or `Firing`.
    pub state: AlertState,
    /// Pending: when the condition came on. Firing: when it fired. Ok: when it last
    /// changed (for a deadman series never seen: when watching it started).
    pub since: Timestamp,
    /// The value that drove the last decision (aggregate, delta, last value).
    pub value: Option<f64>,
    pub unit: Option<String>,
    /// Timestamp of the newest reading of the series the alert has seen.
    pub last_seen: Option<Timestamp>,
    /// When people were last told about this alert (firing, repeat, ack, resolved).
    pub last_notified: Option<Timestamp>,
    /// People were told this alert is firing and have not been told it resolved.
    pub notified: bool,
    /// Who acknowledged the current firing, if anyone.
    pub acked_by: Option<String>,
    pub flapping: bool,
}

/// A silence, as the store keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SilenceRecord {
    /// Matched against rule names and series, with MQTT wildcards.
    pub pattern: String,
    /// Notifications are held while now < until.
    pub until: Timestamp,
    pub reason: String,
    pub by: String,
    pub created: Timestamp,
}

/// An alert that is not ok, for `/status`, the TUI and `centinela alerts`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertView {
    pub rule: String,
    pub series: String,
    /// `Pending`, `Firing`, or `Acknowledged` (firing and acknowledged).
    pub state: AlertState,
    pub severity: Severity,
    pub since: Timestamp,
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub acked_by: Option<String>,
    pub silenced: bool,
    pub flapping: bool,
    pub message: String,
}

impl AlertView {
    pub fn alert_id(&self) -> String {
        format!("{}/{}", self.rule, self.series)
    }
}

/// Counters per rule since the engine started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleStats {
    pub rule: String,
    pub kind: Option<RuleKind>,
    /// Transitions to firing.
    pub fired: u64,
    /// Events that were to be sent (whatever the number of channels).
    pub notifications: u64,
    /// All state transitions (pending, firing, resolved).
    pub transitions: u64,
}

/// Why an ack or silence was refused; the message is meant for the person who asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    #[error("no alert {0:?}: give `rule/series` as listed by `centinela alerts`, or a rule name")]
    UnknownAlert(String),
    #[error("alert {id} is {state}, not firing: only a firing alert can be acknowledged")]
    NotFiring { id: String, state: AlertState },
    #[error("alert {id} was already acknowledged by {by}")]
    AlreadyAcknowledged { id: String, by: String },
    #[error("rule {0} has no firing, unacknowledged alert")]
    NothingToAck(String),
    #[error("silence pattern {pattern:?}: {problem}")]
    BadPattern { pattern: String, problem: String },
    #[error("a silence must end in the future (until {until} is not after now {now})")]
    SilenceInPast { until: String, now: String },
    #[error("no silence with pattern {0:?}")]
    NoSuchSilence(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ok,
    Pending,
    Firing,
}

impl Phase {
    fn state(self) -> AlertState {
        match self {
            Phase::Ok => AlertState::Ok,
            Phase::Pending => AlertState::Pending,
            Phase::Firing => AlertState::Firing,
        }
    }
}

/// A series the engine knows, with the alerts of the rules that match it (computed
/// once, when the series is first seen).
#[derive(Debug)]
struct Slot {
    newest: Timestamp,
    last_value: Option<f64>,
    unit: Option<Arc<str>>,
    alerts: Vec<u32>,
}

#[derive(Debug)]
struct Alert {
    rule: usize,
    slot: usize,
    series: SeriesId,
    phase: Phase,
    since: Timestamp,
    value: Option<f64>,
    last_seen: Option<Timestamp>,
    /// Deadman, series never seen: when watching it started.
    watch_since: Option<Timestamp>,
    /// How long the last firing (or pending) lasted, for the resolved text.
    lasted: Option<i64>,
    last_notified: Option<Timestamp>,
    told: bool,
    acked_by: Option<String>,
    flapping: bool,
    transitions: VecDeque<Timestamp>,
    last_transition: Timestamp,
    /// Changed in a way saved with the next events (in [`Engine::dirty`]).
    dirty: bool,
    /// A deadman alert whose only change is its last reading (in [`Engine::seen`]).
    seen: bool,
    eval: EvalState,
    /// Its series is owned by another instance now (Kafka partitions moved): no tick
    /// work (deadman, repeat) until a reading of it arrives again.
    parked: bool,
}

/// The rules engine. See the module docs for the semantics.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    index: crate::model::FastMap<SeriesId, u32>,
    slots: Vec<Slot>,
    alerts: Vec<Alert>,
    silences: Vec<SilenceRecord>,
    silences_dirty: bool,
    /// Alerts whose state changed (a transition, an ack, a repeat, a flap): saved with
    /// the events that go with them.
    dirty: Vec<u32>,
    /// Deadman alerts whose only change is the time of the last reading: it moves with
    /// every reading, so it is saved on the stage's slower cadence
    /// ([`Engine::take_dirty`]), not with every batch of events ([`Engine::take_changed`]).
    seen: Vec<u32>,
    flap_transitions: usize,
    flap_window: i64,
    tick_ms: i64,
    /// No tick work is due before this (a lower bound; `tick` recomputes it).
    due: Timestamp,
    ignored: u64,
    stats: Vec<RuleStats>,
}

impl Engine {
    /// Compiles the rules. Rules that validation would refuse are skipped with a
    /// warning (config loading refuses them first).
    pub fn new(rules: &[RuleConfig], cfg: &EngineConfig) -> Engine {
        let mut compiled = Vec::with_capacity(rules.len());
        for r in rules {
            match Rule::compile(r) {
                Ok(c) => compiled.push(c),
                Err(e) => tracing::warn!(rule = %r.name, "rule skipped: {e}"),
            }
        }
        let stats = compiled
            .iter()
            .map(|r| RuleStats {
                rule: r.name.clone(),
                kind: Some(r.config_kind),
                ..RuleStats::default()
            })
            .collect();
        let mut e = Engine {
            rules: compiled,
            index: Default::default(),
            slots: Vec::new(),
            alerts: Vec::new(),
            silences: Vec::new(),
            silences_dirty: false,
            dirty: Vec::new(),
            seen: Vec::new(),
            flap_transitions: cfg.flap_transitions as usize,
            flap_window: cfg.flap_window.as_millis().max(1),
            tick_ms: cfg.tick.as_millis().max(1),
            due: Timestamp::MIN,
            ignored: 0,
            stats,
        };
        let expected: Vec<String> = e
            .rules
            .iter()
            .filter_map(|r| match &r.kind {
                Kind::Deadman { expect, .. } => Some(expect.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        for s in expected {
            e.slot_of(&Arc::from(s.as_str()));
        }
        e
    }

    /// The tick interval in ms (`engine.tick`).
    pub fn tick_ms(&self) -> i64 {
        self.tick_ms
    }

    /// Readings that were older than the newest of their series, or not a finite
    /// number, and so moved nothing.
    pub fn ignored_readings(&self) -> u64 {
        self.ignored
    }

    /// The earliest time at which `tick` may have something to do (`None`: nothing
    /// scheduled). A lower bound: ticking earlier is harmless.
    pub fn next_due(&self) -> Option<Timestamp> {
        (self.due != Timestamp::MAX).then_some(self.due)
    }

    /// Counters per rule, in config order.
    pub fn rule_stats(&self) -> &[RuleStats] {
        &self.stats
    }

    fn slot_of(&mut self, series: &SeriesId) -> usize {
        if let Some(&si) = self.index.get(&**series) {
            return si as usize;
        }
        let si = self.slots.len();
        let mut alerts = Vec::new();
        for (ri, rule) in self.rules.iter().enumerate() {
            if topic_matches(&rule.pattern, series) {
                alerts.push(self.alerts.len() as u32);
                self.alerts.push(Alert {
                    rule: ri,
                    slot: si,
                    series: series.clone(),
                    phase: Phase::Ok,
                    since: 0,
                    value: None,
                    last_seen: None,
                    watch_since: None,
                    lasted: None,
                    last_notified: None,
                    told: false,
                    acked_by: None,
                    flapping: false,
                    transitions: VecDeque::new(),
                    last_transition: 0,
                    dirty: false,
                    seen: false,
                    eval: rule.fresh_state(),
                    parked: false,
                });
                if rule.is_deadman() {
                    // A new deadman series must be watched from the next tick.
                    self.due = Timestamp::MIN;
                }
            }
        }
        self.slots.push(Slot {
            newest: Timestamp::MIN,
            last_value: None,
            unit: None,
            alerts,
        });
        self.index.insert(series.clone(), si as u32);
        si
    }

    fn mark_dirty(&mut self, ai: usize) {
        let a = &mut self.alerts[ai];
        if !a.dirty {
            a.dirty = true;
            self.dirty.push(ai as u32);
        }
    }

    fn mark_seen(&mut self, ai: usize) {
        let a = &mut self.alerts[ai];
        if !a.seen {
            a.seen = true;
            self.seen.push(ai as u32);
        }
    }

    /// Evaluates one reading against every rule matching its series. `now` is the
    /// wall clock (for silences and notification times); rules use `r.ts`.
    pub fn on_reading(&mut self, r: &Reading, now: Timestamp, out: &mut Vec<AlertEvent>) {
        if !r.value.is_finite() {
            // NaN or ±inf would poison running sums and compare false everywhere.
            self.ignored += 1;
            return;
        }
        let si = match self.index.get(&*r.series) {
            Some(&si) => si as usize,
            None => self.slot_of(&r.series),
        };
        let slot = &mut self.slots[si];
        if r.ts < slot.newest {
            self.ignored += 1;
            return;
        }
        slot.newest = r.ts;
        slot.last_value = Some(r.value);
        for &ai in &slot.alerts {
            self.alerts[ai as usize].parked = false;
        }
        match (&slot.unit, &r.unit) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => {}
            // A plain number after a reading with a unit keeps the series' unit.
            (_, None) => {}
            _ => slot.unit = r.unit.clone(),
        }
        for k in 0..self.slots[si].alerts.len() {
            let ai = self.slots[si].alerts[k] as usize;
            self.judge(ai, r.ts, r.value, now, out);
        }
    }

    /// Refills the windows of rate and window rules after a restart, without moving
    /// any alert state: feed the stored readings of the last [`Engine::max_window_ms`]
    /// (in timestamp order) after [`Engine::restore`] and before live readings.
    pub fn prime(&mut self, r: &Reading) {
        let si = match self.index.get(&*r.series) {
            Some(&si) => si as usize,
            None => self.slot_of(&r.series),
        };
        let slot = &mut self.slots[si];
        if r.ts < slot.newest {
            return;
        }
        slot.newest = r.ts;
        for &ai in &slot.alerts {
            let a = &mut self.alerts[ai as usize];
            let rule = &self.rules[a.rule];
            if matches!(rule.kind, Kind::Window { .. } | Kind::Rate { .. }) {
                a.eval.judge(&rule.kind, r.ts, r.value);
            }
        }
    }

    /// The longest window of the rate and window rules: how much history
    /// [`Engine::prime`] needs.
    pub fn max_window_ms(&self) -> Option<i64> {
        self.rules
            .iter()
            .filter_map(|r| match r.kind {
                Kind::Window { window, .. } | Kind::Rate { window, .. } => Some(window),
                _ => None,
            })
            .max()
    }

    #[inline]
    fn judge(
        &mut self,
        ai: usize,
        ts: Timestamp,
        v: f64,
        now: Timestamp,
        out: &mut Vec<AlertEvent>,
    ) {
        let a = &mut self.alerts[ai];
        let rule = &self.rules[a.rule];
        a.last_seen = Some(ts);
        if let Kind::Deadman { silence, .. } = rule.kind {
            a.value = Some(v);
            self.due = self.due.min(ts.saturating_add(silence));
            let firing = a.phase == Phase::Firing;
            self.mark_seen(ai);
            if firing {
                self.transition(ai, Phase::Ok, ts, Some(v), now, out);
            }
            return;
        }
        let verdict = a.eval.judge(&rule.kind, ts, v);
        let next = match a.phase {
            Phase::Ok => verdict.on.then_some(if rule.for_ms > 0 {
                Phase::Pending
            } else {
                Phase::Firing
            }),
            Phase::Pending => {
                if !verdict.on {
                    Some(Phase::Ok)
                } else if ts >= a.since.saturating_add(rule.for_ms) {
                    Some(Phase::Firing)
                } else {
                    None
                }
            }
            Phase::Firing => verdict.off.then_some(Phase::Ok),
        };
        if a.phase != Phase::Ok {
            a.value = Some(verdict.value);
        }
        if let Some(to) = next {
            self.transition(ai, to, ts, Some(verdict.value), now, out);
        }
    }

    fn is_silenced(&self, ai: usize, now: Timestamp) -> bool {
        if self.silences.is_empty() {
            return false;
        }
        let a = &self.alerts[ai];
        let rule = &self.rules[a.rule].name;
        self.silences.iter().any(|s| {
            s.until > now
                && (topic_matches(&s.pattern, rule) || topic_matches(&s.pattern, &a.series))
        })
    }

    fn transition(
        &mut self,
        ai: usize,
        to: Phase,
        ts: Timestamp,
        value: Option<f64>,
        now: Timestamp,
        out: &mut Vec<AlertEvent>,
    ) {
        let silenced = self.is_silenced(ai, now);
        let (fw, max_t) = (self.flap_window, self.flap_transitions);
        let a = &mut self.alerts[ai];
        let rule = &self.rules[a.rule];
        let from = a.phase;
        if from != Phase::Ok {
            a.lasted = Some(ts.saturating_sub(a.since).max(0));
        }
        a.phase = to;
        a.since = ts;
        a.value = value;
        a.last_transition = ts;
        a.acked_by = None;
        let mut started_flapping = false;
        if max_t > 0 {
            a.transitions.push_back(ts);
            while a.transitions.len() > max_t + 1
                || a.transitions
                    .front()
                    .is_some_and(|&t| t < ts.saturating_sub(fw))
            {
                a.transitions.pop_front();
            }
            if !a.flapping && a.transitions.len() > max_t {
                a.flapping = true;
                started_flapping = true;
            }
        }
        if a.flapping {
            self.due = self.due.min(ts.saturating_add(fw));
        }
        let notifies = !silenced
            && !a.flapping
            && match (from, to) {
                (_, Phase::Firing) => true,
                (Phase::Firing, Phase::Ok) => a.told,
                _ => false,
            };
        match (from, to) {
            (_, Phase::Firing) => a.told = notifies,
            (Phase::Firing, Phase::Ok) if notifies => a.told = false,
            _ => {}
        }
        if notifies {
            a.last_notified = Some(now);
            if to == Phase::Firing {
                if let Some(rep) = rule.repeat_ms {
                    self.due = self.due.min(now.saturating_add(rep));
                }
            }
        }
        let stats = &mut self.stats[a.rule];
        stats.transitions += 1;
        stats.fired += u64::from(to == Phase::Firing);
        stats.notifications += u64::from(notifies);
        let state = match (from, to) {
            (_, Phase::Pending) => AlertState::Pending,
            (_, Phase::Firing) => AlertState::Firing,
            (Phase::Pending, Phase::Ok) => AlertState::Cancelled,
            (_, Phase::Ok) => AlertState::Resolved,
        };
        let ev = self.event(ai, state, ts, value, notifies, None);
        out.push(ev);
        if started_flapping {
            self.stats[self.alerts[ai].rule].notifications += u64::from(!silenced);
            let msg = format!(
                "{}/{} is flapping: more than {} changes within {}; notifications held until it is stable for {}",
                self.rules[self.alerts[ai].rule].name,
                self.alerts[ai].series,
                max_t,
                human_ms(fw),
                human_ms(fw)
            );
            let ev = self.event(ai, AlertState::Flapping, ts, value, !silenced, Some(msg));
            out.push(ev);
        }
        self.mark_dirty(ai);
    }

    fn event(
        &self,
        ai: usize,
        state: AlertState,
        ts: Timestamp,
        value: Option<f64>,
        notifies: bool,
        message: Option<String>,
    ) -> AlertEvent {
        let a = &self.alerts[ai];
        let rule = &self.rules[a.rule];
        let unit = match rule.kind {
            Kind::Window {
                agg: crate::config::Agg::Count,
                ..
            } => None,
            _ => self.slots[a.slot].unit.as_deref(),
        };
        let message = message.unwrap_or_else(|| self.render(ai, state, value, unit));
        AlertEvent {
            rule: rule.name.clone(),
            series: a.series.to_string(),
            state,
            severity: rule.severity,
            value,
            unit: unit.map(str::to_string),
            ts,
            message,
            notify: if notifies {
                rule.notify.clone()
            } else {
                Vec::new()
            },
        }
    }

    fn render(
        &self,
        ai: usize,
        state: AlertState,
        value: Option<f64>,
        unit: Option<&str>,
    ) -> String {
        let a = &self.alerts[ai];
        let rule = &self.rules[a.rule];
        let template = match (state, &rule.template) {
            (AlertState::Cancelled, _) => &rule.default_cancelled,
            (AlertState::Resolved, _) => rule
                .template_resolved
                .as_ref()
                .unwrap_or(&rule.default_resolved),
            (_, Some(t)) => t,
            _ if matches!(rule.kind, Kind::Rate { .. }) && value.is_some_and(|v| v < 0.0) => {
                &rule.default_active_down
            }
            _ => &rule.default_active,
        };
        template.render(&render::Ctx {
            rule: &rule.name,
            series: &a.series,
            kind: &rule.kind,
            for_ms: rule.for_ms,
            state,
            severity: rule.severity.as_str(),
            value,
            unit,
            lasted: a.lasted,
        })
    }

    /// Wall-clock work: deadman deadlines, the end of silences and of flapping,
    /// announcements held back by them, and `repeat`. Call every `engine.tick`.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<AlertEvent>) {
        let before = self.silences.len();
        self.silences.retain(|s| s.until > now);
        if self.silences.len() != before {
            self.silences_dirty = true;
        }
        let mut due = self
            .silences
            .iter()
            .map(|s| s.until)
            .min()
            .unwrap_or(Timestamp::MAX);
        for ai in 0..self.alerts.len() {
            due = due.min(self.tick_alert(ai, now, out));
        }
        self.due = due;
    }

    /// Returns when this alert next needs a tick.
    fn tick_alert(&mut self, ai: usize, now: Timestamp, out: &mut Vec<AlertEvent>) -> Timestamp {
        let mut due = Timestamp::MAX;
        if self.alerts[ai].parked {
            return due;
        }
        let ri = self.alerts[ai].rule;
        if let Kind::Deadman { silence, .. } = self.rules[ri].kind {
            if self.alerts[ai].phase != Phase::Firing {
                let a = &mut self.alerts[ai];
                let base = match a.last_seen.or(a.watch_since) {
                    Some(b) => b,
                    None => {
                        a.watch_since = Some(now);
                        a.since = now;
                        self.mark_dirty(ai);
                        now
                    }
                };
                let deadline = base.saturating_add(silence);
                if now >= deadline {
                    let v = self.slots[self.alerts[ai].slot].last_value;
                    self.transition(ai, Phase::Firing, deadline, v, now, out);
                } else {
                    due = deadline;
                }
            }
        }
        let fw = self.flap_window;
        let a = &mut self.alerts[ai];
        if a.flapping {
            let end = a.last_transition.saturating_add(fw);
            if now >= end {
                a.flapping = false;
                a.transitions.clear();
                self.mark_dirty(ai);
            } else {
                due = due.min(end);
            }
        }
        let a = &self.alerts[ai];
        let rule = &self.rules[ri];
        let firing_unacked = a.phase == Phase::Firing && a.acked_by.is_none();
        let owes_firing = firing_unacked && !a.told;
        let owes_resolved = a.phase != Phase::Firing && a.told;
        let repeat_at = match rule.repeat_ms {
            Some(rep) if firing_unacked && a.told => {
                Some(a.last_notified.unwrap_or(a.since).saturating_add(rep))
            }
            _ => None,
        };
        let repeat_due = repeat_at.is_some_and(|t| now >= t);
        if !(owes_firing || owes_resolved || repeat_due) {
            if let Some(t) = repeat_at {
                due = due.min(t);
            }
            return due;
        }
        if a.flapping || self.is_silenced(ai, now) {
            // Re-checked when the silence or the flapping ends (both are in `due`).
            return due;
        }
        let state = if owes_resolved {
            AlertState::Resolved
        } else {
            AlertState::Repeat
        };
        let value = a.value;
        let a = &mut self.alerts[ai];
        a.told = !owes_resolved;
        a.last_notified = Some(now);
        if !owes_resolved {
            if let Some(rep) = rule.repeat_ms {
                due = due.min(now.saturating_add(rep));
            }
        }
        self.stats[ri].notifications += 1;
        let ev = self.event(ai, state, now, value, true, None);
        out.push(ev);
        self.mark_dirty(ai);
        due
    }

    /// Handles an ack, silence or unsilence from a person. Returns the events to
    /// record (an `acknowledged` event per alert acked).
    pub fn control(
        &mut self,
        c: &Control,
        now: Timestamp,
    ) -> Result<Vec<AlertEvent>, ControlError> {
        match c {
            Control::Ack { alert, by } => self.ack(alert, by, now),
            Control::Silence {
                pattern,
                until,
                reason,
                by,
            } => {
                check_pattern(pattern)?;
                if *until <= now {
                    return Err(ControlError::SilenceInPast {
                        until: crate::model::format_ts(*until),
                        now: crate::model::format_ts(now),
                    });
                }
                let rec = SilenceRecord {
                    pattern: pattern.clone(),
                    until: *until,
                    reason: reason.clone(),
                    by: by.clone(),
                    created: now,
                };
                match self.silences.iter_mut().find(|s| s.pattern == *pattern) {
                    Some(s) => *s = rec,
                    None => self.silences.push(rec),
                }
                self.silences_dirty = true;
                self.due = self.due.min(*until);
                let until_text = crate::model::format_ts(*until);
                tracing::info!(%pattern, until = %until_text, %by, %reason, "silence set");
                for ai in 0..self.alerts.len() {
                    let a = &self.alerts[ai];
                    if a.phase != Phase::Ok && self.is_silenced(ai, now) {
                        let unit = self.slots[a.slot].unit.as_deref();
                        let rule = &self.rules[a.rule].name;
                        render::log_silenced(
                            rule,
                            &a.series,
                            a.phase.state(),
                            a.value,
                            unit,
                            &until_text,
                            by,
                        );
                    }
                }
                Ok(Vec::new())
            }
            Control::Unsilence { pattern, by } => {
                let before = self.silences.len();
                match pattern {
                    Some(p) => {
                        self.silences.retain(|s| s.pattern != *p);
                        if self.silences.len() == before {
                            return Err(ControlError::NoSuchSilence(p.clone()));
                        }
                    }
                    None => self.silences.clear(),
                }
                if self.silences.len() != before {
                    self.silences_dirty = true;
                    // Held announcements go out on the next tick.
                    self.due = self.due.min(now);
                }
                tracing::info!(pattern = pattern.as_deref().unwrap_or("*"), %by, "silence lifted");
                Ok(Vec::new())
            }
        }
    }

    fn ack(&mut self, id: &str, by: &str, now: Timestamp) -> Result<Vec<AlertEvent>, ControlError> {
        if let Some(ri) = self.rules.iter().position(|r| r.name == id) {
            let targets: Vec<usize> = (0..self.alerts.len())
                .filter(|&ai| {
                    let a = &self.alerts[ai];
                    a.rule == ri && a.phase == Phase::Firing && a.acked_by.is_none()
                })
                .collect();
            if targets.is_empty() {
                return Err(ControlError::NothingToAck(id.to_string()));
            }
            return Ok(targets
                .into_iter()
                .map(|ai| self.ack_one(ai, by, now))
                .collect());
        }
        let found = self.rules.iter().enumerate().find_map(|(ri, rule)| {
            let series = id.strip_prefix(rule.name.as_str())?.strip_prefix('/')?;
            let &si = self.index.get(series)?;
            self.slots[si as usize]
                .alerts
                .iter()
                .map(|&ai| ai as usize)
                .find(|&ai| self.alerts[ai].rule == ri)
        });
        let ai = found.ok_or_else(|| ControlError::UnknownAlert(id.to_string()))?;
        let a = &self.alerts[ai];
        match (a.phase, &a.acked_by) {
            (Phase::Firing, None) => Ok(vec![self.ack_one(ai, by, now)]),
            (Phase::Firing, Some(b)) => Err(ControlError::AlreadyAcknowledged {
                id: id.to_string(),
                by: b.clone(),
            }),
            (p, _) => Err(ControlError::NotFiring {
                id: id.to_string(),
                state: p.state(),
            }),
        }
    }

    fn ack_one(&mut self, ai: usize, by: &str, now: Timestamp) -> AlertEvent {
        let notifies = !self.alerts[ai].flapping && !self.is_silenced(ai, now);
        let a = &mut self.alerts[ai];
        a.acked_by = Some(by.to_string());
        if notifies {
            a.last_notified = Some(now);
        }
        let (ri, value) = (a.rule, a.value);
        self.stats[ri].notifications += u64::from(notifies);
        self.mark_dirty(ai);
        let msg = format!(
            "{}/{} acknowledged by {by}",
            self.rules[ri].name, self.alerts[ai].series
        );
        self.event(
            ai,
            AlertState::Acknowledged,
            now,
            value,
            notifies,
            Some(msg),
        )
    }

    fn record(&self, ai: usize) -> AlertRecord {
        let a = &self.alerts[ai];
        AlertRecord {
            rule: self.rules[a.rule].name.clone(),
            series: a.series.to_string(),
            state: a.phase.state(),
            since: a.since,
            value: a.value,
            unit: self.slots[a.slot].unit.as_deref().map(str::to_string),
            last_seen: a.last_seen,
            last_notified: a.last_notified,
            notified: a.told,
            acked_by: a.acked_by.clone(),
            flapping: a.flapping,
        }
    }

    /// Every alert's state, for handing over to a new engine on reload
    /// ([`Engine::restore`] takes them back).
    pub fn records(&self) -> Vec<AlertRecord> {
        (0..self.alerts.len()).map(|ai| self.record(ai)).collect()
    }

    /// The alert states changed since the last call, to upsert by (rule, series),
    /// including deadman alerts whose only change is their last reading.
    pub fn take_dirty(&mut self) -> Vec<AlertRecord> {
        let mut out = Vec::new();
        for ai in std::mem::take(&mut self.seen) {
            let a = &mut self.alerts[ai as usize];
            a.seen = false;
            // A changed one comes with the changes below.
            if !a.dirty {
                out.push(self.record(ai as usize));
            }
        }
        out.extend(self.take_changed());
        out
    }

    /// The alert states that changed other than by a deadman's last reading, to save
    /// with the events they go with; the rest wait for [`Engine::take_dirty`].
    pub fn take_changed(&mut self) -> Vec<AlertRecord> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|ai| {
                self.alerts[ai as usize].dirty = false;
                self.record(ai as usize)
            })
            .collect()
    }

    /// The active silences.
    pub fn silences(&self) -> Vec<SilenceRecord> {
        self.silences.clone()
    }

    /// The whole set of silences when it changed since the last call (replace the
    /// stored set with it).
    pub fn take_dirty_silences(&mut self) -> Option<Vec<SilenceRecord>> {
        std::mem::take(&mut self.silences_dirty).then(|| self.silences.clone())
    }

    /// Loads persisted state; call once, after [`Engine::new`] and before any reading.
    /// Records of rules no longer configured, or of series the rule's pattern no
    /// longer matches, are skipped. Emits nothing: a firing alert stays firing
    /// without being announced again.
    pub fn restore(
        &mut self,
        alerts: Vec<AlertRecord>,
        silences: Vec<SilenceRecord>,
        now: Timestamp,
    ) {
        for rec in alerts {
            self.restore_one(rec);
        }
        self.silences = silences.into_iter().filter(|s| s.until > now).collect();
        self.due = Timestamp::MIN;
    }

    /// One persisted alert back into the engine (see [`Engine::restore`]); its index.
    fn restore_one(&mut self, rec: AlertRecord) -> Option<usize> {
        let Some(ri) = self.rules.iter().position(|r| r.name == rec.rule) else {
            tracing::info!(rule = %rec.rule, series = %rec.series, "stored alert of a rule no longer configured: dropped");
            return None;
        };
        if !topic_matches(&self.rules[ri].pattern, &rec.series) {
            tracing::info!(rule = %rec.rule, series = %rec.series, "stored alert no longer matched by its rule: dropped");
            return None;
        }
        let si = self.slot_of(&Arc::from(rec.series.as_str()));
        let ai = self.slots[si]
            .alerts
            .iter()
            .map(|&ai| ai as usize)
            .find(|&ai| self.alerts[ai].rule == ri)?;
        let slot = &mut self.slots[si];
        if let Some(t) = rec.last_seen {
            slot.newest = slot.newest.max(t);
        }
        if slot.unit.is_none() {
            slot.unit = rec.unit.as_deref().map(Arc::from);
        }
        if self.rules[ri].is_deadman() && slot.last_value.is_none() {
            slot.last_value = rec.value;
        }
        let a = &mut self.alerts[ai];
        a.phase = match rec.state {
            AlertState::Pending => Phase::Pending,
            AlertState::Firing | AlertState::Acknowledged | AlertState::Repeat => Phase::Firing,
            _ => Phase::Ok,
        };
        a.since = rec.since;
        a.value = rec.value;
        a.last_seen = rec.last_seen;
        if rec.last_seen.is_none() && a.phase == Phase::Ok && self.rules[ri].is_deadman() {
            a.watch_since = Some(rec.since);
        }
        a.last_notified = rec.last_notified;
        a.told = rec.notified;
        a.acked_by = if a.phase == Phase::Firing {
            rec.acked_by
        } else {
            None
        };
        a.flapping = rec.flapping;
        a.last_transition = rec.since;
        Some(ai)
    }

    /// Takes over the alerts of series that another instance judged until now (their
    /// Kafka partitions moved here), from that instance's changelog records: state,
    /// pending and firing start, last notification, ack, deadman last-seen. Unlike
    /// [`Engine::restore`] it may come at any time: the series' own history here (if
    /// this instance owned it before) is replaced, its windows start empty, and the
    /// newest timestamp is the one the records say, so the readings the other instance
    /// did not commit are judged again. Emits nothing. Returns the alerts taken over.
    pub fn adopt(&mut self, alerts: Vec<AlertRecord>) -> usize {
        self.adopt_with_history(alerts, &[])
    }

    /// [`Engine::adopt`], with the windows of rate and window rules refilled from
    /// `history`: readings the other instance had judged (those it committed; in
    /// timestamp order per series), fed as [`Engine::prime`] feeds the stored ones after
    /// a restart — windows move, alert state does not, nothing is emitted. The series of
    /// `history` start from it, whether or not they have records.
    pub fn adopt_with_history(&mut self, alerts: Vec<AlertRecord>, history: &[Reading]) -> usize {
        let mut newest: HashMap<String, Timestamp> = HashMap::new();
        for rec in &alerts {
            let n = newest.entry(rec.series.clone()).or_insert(Timestamp::MIN);
            *n = (*n).max(rec.last_seen.unwrap_or(Timestamp::MIN));
        }
        for r in history {
            if !newest.contains_key(&*r.series) {
                newest.insert(r.series.to_string(), Timestamp::MIN);
            }
        }
        let mut slots = Vec::with_capacity(newest.len());
        for (series, t) in &newest {
            let si = self.slot_of(&Arc::from(series.as_str()));
            self.slots[si].newest = Timestamp::MIN;
            slots.push((si, *t));
            for k in 0..self.slots[si].alerts.len() {
                let ai = self.slots[si].alerts[k] as usize;
                let a = &mut self.alerts[ai];
                a.eval = self.rules[a.rule].fresh_state();
                a.parked = false;
                a.transitions.clear();
            }
        }
        for r in history {
            self.prime(r);
        }
        for (si, t) in slots {
            self.slots[si].newest = self.slots[si].newest.max(t);
        }
        let mut n = 0;
        for rec in alerts {
            if let Some(ai) = self.restore_one(rec) {
                self.mark_dirty(ai);
                n += 1;
            }
        }
        self.due = Timestamp::MIN;
        n
    }

    /// Stops tick work (deadman, repeat) for the alerts of `series`: another instance
    /// owns them now. A reading of the series, or [`Engine::adopt`], takes them back.
    pub fn release<'a>(&mut self, series: impl IntoIterator<Item = &'a str>) {
        for s in series {
            if let Some(&si) = self.index.get(s) {
                for &ai in &self.slots[si as usize].alerts {
                    self.alerts[ai as usize].parked = true;
                }
            }
        }
    }

    /// Every alert that is not ok (pending, firing, acknowledged), most severe first,
    /// then oldest first.
    pub fn snapshot(&self, now: Timestamp) -> Vec<AlertView> {
        let mut v: Vec<AlertView> = (0..self.alerts.len())
            .filter(|&ai| self.alerts[ai].phase != Phase::Ok)
            .map(|ai| {
                let a = &self.alerts[ai];
                let rule = &self.rules[a.rule];
                let unit = self.slots[a.slot].unit.as_deref();
                let state = match (a.phase, &a.acked_by) {
                    (Phase::Firing, Some(_)) => AlertState::Acknowledged,
                    (p, _) => p.state(),
                };
                AlertView {
                    rule: rule.name.clone(),
                    series: a.series.to_string(),
                    state,
                    severity: rule.severity,
                    since: a.since,
                    value: a.value,
                    unit: unit.map(str::to_string),
                    acked_by: a.acked_by.clone(),
                    silenced: self.is_silenced(ai, now),
                    flapping: a.flapping,
                    message: self.render(ai, a.phase.state(), a.value, unit),
                }
            })
            .collect();
        v.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.since.cmp(&b.since))
                .then(a.rule.cmp(&b.rule))
        });
        v
    }
}

/// A reading without a unit takes the unit its series last had (`known`): a plain
/// number after a JSON reading with a unit stays in the same series for every store
/// (InfluxDB keeps one tag set per sensor). A reading with a unit keeps its own.
pub fn carry_unit(r: &mut Reading, known: Option<&Arc<str>>) {
    if r.unit.is_none() {
        r.unit = known.cloned();
    }
}

/// A silence pattern is an MQTT filter: `+` and `#` only as whole levels, `#` last.
fn check_pattern(p: &str) -> Result<(), ControlError> {
    let bad = |problem: &str| {
        Err(ControlError::BadPattern {
            pattern: p.to_string(),
            problem: problem.to_string(),
        })
    };
    if p.trim().is_empty() {
        return bad("empty: give a rule name or a series pattern such as greenhouse/#");
    }
    let levels: Vec<&str> = p.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i + 1 != levels.len()) {
            return bad("'#' must be a whole level and the last one");
        }
        if l.contains('+') && *l != "+" {
            return bad("'+' must be a whole level");
        }
    }
    Ok(())
}
