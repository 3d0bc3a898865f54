//! One worker per channel: reads the channel's pending notifications from the outbox,
//! oldest first, and drives the channel's [`Sender`] until each one is delivered or dead.
//!
//! - Order: the oldest pending notification goes first; while it waits for its retry
//!   the later ones wait behind it, so a "resolved" never overtakes its "firing".
//! - Retry: exponential backoff with jitter ([`backoff`]), or longer when the server
//!   asked for it (Telegram's `retry_after`); dead after `max_attempts` or `max_age`.
//! - At-least-once: a notification is marked only after the send returned ok, per
//!   target; a crash in between repeats it once, never loses it.
//! - Storms ([`plan`]): more than `storm_threshold` waiting (or enqueued within
//!   `storm_window`) go out as one digest on channels that support it.
//! - Health: a channel failing longer than `failing_after` raises an alert of its own
//!   through the other channels, and a resolved one when it recovers; notifications
//!   that end dead raise another, resolved by the next notification the channel
//!   delivers with none dying. Both are alerts of the engine (listed, acknowledged and
//!   silenced like a rule's); without an engine they go into the outbox directly.
//! - Deadlines: every attempt ends within [`Sender::deadline`] (a silent peer is a
//!   failed attempt, retried like any other); at shutdown a round in progress gets
//!   [`DRAIN`] to finish, then is dropped and its notifications stay pending.
//! - Secrets: every error text is passed through [`redact_urls`] before it is logged,
//!   stored as `last_error` or carried by a delivery alert.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::outbox::{self, Outbox, OutboxError, OutboxRow};
use super::redact::redact_urls;
use super::{SendError, Sender};
use crate::config::OutboxConfig;
use crate::model::{now_ms, AlertEvent, AlertState, Severity, Timestamp};

/// Rule name of the alert raised when a channel keeps failing.
pub const RULE_FAILING: &str = "centinela-delivery-failing";
/// Rule name of the alert raised when notifications end dead.
pub const RULE_DEAD: &str = "centinela-delivery-dead";

/// The series of a channel's health alert: `notify/<channel>`.
pub fn health_series(channel: &str) -> String {
    format!("notify/{channel}")
}

/// How long a round in progress may still take once shutdown is asked for; then it is
/// dropped and what it was sending stays pending for the next start.
pub const DRAIN: Duration = Duration::from_secs(5);

/// The delay before a notification's attempt `attempt + 1` ([`crate::backoff::jittered`]).
pub use crate::backoff::jittered as backoff;

/// What the worker does next with the pending notifications it read.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing waits.
    Idle,
    /// Nothing may go before this time (the head is in backoff, or a storm is gathering).
    WaitUntil(Timestamp),
    /// Send these rows (indices into the pending list): one notification, or a digest.
    Send(Vec<usize>),
}

/// Decides from the pending rows (oldest first), how many were enqueued from
/// `storm_window` before the oldest pending one until now, and `now`. Pure.
pub fn plan(
    pending: &[OutboxRow],
    enqueued_recently: u64,
    digests: bool,
    policy: &OutboxConfig,
    now: Timestamp,
) -> Plan {
    let Some(head) = pending.first() else {
        return Plan::Idle;
    };
    if head.next_at > now {
        return Plan::WaitUntil(head.next_at);
    }
    let due: Vec<usize> = pending
        .iter()
        .enumerate()
        .filter(|(_, r)| r.next_at <= now)
        .map(|(i, _)| i)
        .collect();
    let n = policy.storm_threshold;
    if !digests || (due.len() <= n && enqueued_recently <= n as u64) {
        return Plan::Send(vec![0]);
    }
    if due.len() <= n {
        // A storm is going on but few wait yet: give the rest a moment to arrive.
        let gather_until = head.created_at + policy.storm_window.as_millis();
        if now < gather_until {
            return Plan::WaitUntil(gather_until);
        }
    }
    Plan::Send(due.into_iter().take(policy.digest_max.max(1)).collect())
}

/// Records what was just sent, trying a few times: giving up here means sending the
/// same notification again on the next round.
async fn persist<F, Fut>(mut write: F) -> Result<(), OutboxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), OutboxError>>,
{
    let mut tries = 0;
    loop {
        match write().await {
            Ok(()) => return Ok(()),
            Err(e) if tries < 5 => {
                tries += 1;
                warn!(error = %e, tries, "cannot record a delivery yet; trying again");
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The worker of one channel. Build with [`Worker::new`], start with [`Worker::spawn`].
pub struct Worker {
    outbox: Outbox,
    sender: Arc<dyn Sender>,
    policy: OutboxConfig,
    /// The other configured channels: where this channel's own trouble is reported.
    others: Vec<String>,
    failing_since: Option<Timestamp>,
    raised: bool,
    last_prune: Timestamp,
    /// Rows already reported as unreadable, so each is logged once, not every poll.
    unreadable: std::collections::HashSet<String>,
    /// The engine's input for system alerts: the failing-channel alert goes there (and
    /// from there to `centinela alerts`, the TUI and the outbox) instead of straight
    /// into the outbox.
    engine: Option<tokio::sync::mpsc::Sender<crate::engine::SystemAlert>>,
    /// The engine was told this channel delivers (its alert, restored firing after a
    /// restart, is resolved by the first delivery).
    engine_clear: bool,
    /// The engine was told notifications of this channel ended dead, and not yet that
    /// it delivers again.
    dead_raised: bool,
    /// Like `engine_clear`, for the dead-notifications alert.
    dead_clear: bool,
}

impl Worker {
    pub fn new(
        outbox: Outbox,
        sender: Arc<dyn Sender>,
        policy: OutboxConfig,
        others: Vec<String>,
    ) -> Self {
        let channel = sender.channel().to_string();
        let others = others.into_iter().filter(|c| *c != channel).collect();
        Worker {
            outbox,
            sender,
            policy,
            others,
            failing_since: None,
            raised: false,
            last_prune: 0,
            unreadable: std::collections::HashSet::new(),
            engine: None,
            engine_clear: false,
            dead_raised: false,
            dead_clear: false,
        }
    }

    /// Raises the delivery alerts (failing channel, dead notifications) through the
    /// engine (system alerts) instead of enqueueing them in the outbox directly.
    pub fn with_engine(
        mut self,
        engine: tokio::sync::mpsc::Sender<crate::engine::SystemAlert>,
    ) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Hands a change of a delivery alert (`rule`: [`RULE_FAILING`] or [`RULE_DEAD`])
    /// to the engine; `false` when there is no engine (or it has stopped): the caller
    /// enqueues the event itself.
    fn to_engine(&self, rule: &str, firing: bool, ts: Timestamp, message: &str) -> bool {
        let Some(tx) = &self.engine else { return false };
        let s = crate::engine::SystemAlert {
            rule: rule.into(),
            series: health_series(self.sender.channel()),
            firing,
            ts,
            message: message.to_string(),
            notify: self.others.clone(),
        };
        match tx.try_send(s) {
            Ok(()) => true,
            Err(e) => {
                warn!(channel = %self.sender.channel(), error = %e, "the engine did not take the delivery alert; it goes to the outbox directly");
                false
            }
        }
    }

    /// Runs until `shutdown` becomes true (or its sender is dropped). Aborting the task
    /// instead is safe too: nothing is lost, at most one notification repeats.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut wake = self.outbox.wakeups();
        let channel = self.sender.channel().to_string();
        info!(channel = %channel, "notification worker started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let poll = self.policy.poll_interval.std();
            let round = {
                let step = self.step(now_ms());
                tokio::pin!(step);
                tokio::select! {
                    r = &mut step => Some(r),
                    _ = shutdown.changed() => {
                        // Give the round in progress a moment, then leave it pending.
                        match tokio::time::timeout(DRAIN, &mut step).await {
                            Ok(_) => {}
                            Err(_) => warn!(
                                channel = %channel, drain = ?DRAIN,
                                "a delivery was still in progress at shutdown; it stays pending and goes out after the restart"
                            ),
                        }
                        None
                    }
                }
            };
            let Some(round) = round else { break };
            let sleep = match round {
                Ok(Some(at)) => {
                    let ms = (at - now_ms()).max(0);
                    Duration::from_millis(ms as u64).min(poll)
                }
                Ok(None) => Duration::ZERO,
                Err(e) => {
                    error!(channel = %channel, error = %e, "outbox unreadable; trying again");
                    poll
                }
            };
            if sleep.is_zero() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = wake.changed() => {}
                r = shutdown.changed() => if r.is_err() { break },
            }
        }
        info!(channel = %channel, "notification worker stopped");
    }

    /// One round: returns when to look again (`None`: at once, more may be due).
    pub async fn step(&mut self, now: Timestamp) -> Result<Option<Timestamp>, OutboxError> {
        let pool = self.outbox.pool().clone();
        let channel = self.sender.channel().to_string();
        if now - self.last_prune > 3_600_000 {
            self.last_prune = now;
            outbox::prune_delivered(&pool, now - self.policy.keep_delivered.as_millis()).await?;
        }
        let expired =
            outbox::expire(&pool, &channel, now - self.policy.max_age.as_millis(), now).await?;
        if expired > 0 {
            error!(channel = %channel, count = expired, max_age = %self.policy.max_age, "notifications expired undelivered (dead)");
            self.report_dead(
                expired as usize,
                &format!("not delivered within {}", self.policy.max_age),
                now,
            )
            .await?;
        }
        let (rows, unreadable) =
            outbox::pending_readable(&pool, &channel, self.policy.digest_max.max(1)).await?;
        for e in unreadable {
            let id = e.row_id().unwrap_or_default().to_string();
            if self.unreadable.insert(id) {
                error!(channel = %channel, error = %e, "notification left pending: its outbox row is unreadable");
            }
        }
        // Storm measure: enqueued from `storm_window` before the oldest waiting one on.
        // Anchored to that row, it does not shrink while the worker gathers.
        let recent = match rows.first() {
            Some(head) if self.sender.digests() => {
                let since = head.created_at - self.policy.storm_window.as_millis();
                outbox::enqueued_since(&pool, &channel, since).await?
            }
            _ => 0,
        };
        match plan(&rows, recent, self.sender.digests(), &self.policy, now) {
            Plan::Idle => Ok(Some(now + self.policy.poll_interval.as_millis())),
            Plan::WaitUntil(at) => Ok(Some(at)),
            Plan::Send(idx) => {
                let batch: Vec<OutboxRow> = idx
                    .into_iter()
                    .filter_map(|i| rows.get(i).cloned())
                    .collect();
                self.deliver(batch).await?;
                Ok(None)
            }
        }
    }

    async fn deliver(&mut self, mut batch: Vec<OutboxRow>) -> Result<(), OutboxError> {
        let pool = self.outbox.pool().clone();
        let channel = self.sender.channel().to_string();
        let targets = self.sender.targets();
        let single_target = targets.len() == 1;
        let mut retry: Option<(String, Option<Duration>)> = None;
        let mut served_any = false;
        for target in &targets {
            let todo: Vec<OutboxRow> = batch
                .iter()
                .filter(|r| !r.done.contains(target) && !r.refused.contains(target))
                .cloned()
                .collect();
            if todo.is_empty() {
                continue;
            }
            let ids: Vec<&str> = todo.iter().map(|r| r.id.as_str()).collect();
            debug!(channel = %channel, target = %target, count = todo.len(), "sending");
            let deadline = self.sender.deadline(todo.len());
            let sent = match tokio::time::timeout(deadline, self.sender.send(target, &todo)).await {
                Ok(r) => r,
                Err(_) => Err(SendError::retry(format!(
                    "no answer within {} (the whole attempt)",
                    crate::config::Duration(deadline)
                ))),
            };
            let sent = match sent {
                Err(SendError::Retry { message, after }) => Err(SendError::Retry {
                    message: redact_urls(&message),
                    after,
                }),
                Err(SendError::Refused(message)) => Err(SendError::Refused(redact_urls(&message))),
                ok => ok,
            };
            match sent {
                Ok(()) => {
                    served_any = true;
                    // With one target, "delivered" below is the only mark needed.
                    if !single_target {
                        persist(|| outbox::mark_target_done(&pool, &ids, target, now_ms())).await?;
                    }
                    for r in batch.iter_mut().filter(|r| ids.contains(&r.id.as_str())) {
                        r.done.push(target.clone());
                    }
                }
                Err(SendError::Retry { message, after }) => {
                    warn!(channel = %channel, target = %target, count = todo.len(), error = %message, "delivery failed; will retry");
                    let after = after.max(retry.as_ref().and_then(|r| r.1));
                    retry = Some((message, after));
                }
                Err(SendError::Refused(message)) => {
                    error!(
                        channel = %channel, target = %target, count = todo.len(), error = %message,
                        "receiver refused the notification for good; it is dead for this target"
                    );
                    // Senders name the target in their message (e.g. "chat 123: …").
                    let msg = message;
                    outbox::mark_target_refused(&pool, &ids, target, &msg, now_ms()).await?;
                    for r in batch.iter_mut().filter(|r| ids.contains(&r.id.as_str())) {
                        r.refused.push(target.clone());
                        r.last_error = Some(msg.clone());
                    }
                }
            }
        }

        let now = now_ms();
        let finished = |r: &OutboxRow| {
            targets
                .iter()
                .all(|t| r.done.contains(t) || r.refused.contains(t))
        };
        let refused_here = |r: &OutboxRow| targets.iter().any(|t| r.refused.contains(t));
        let delivered: Vec<&str> = batch
            .iter()
            .filter(|r| finished(r) && !refused_here(r))
            .map(|r| r.id.as_str())
            .collect();
        if !delivered.is_empty() {
            persist(|| outbox::mark_delivered(&pool, &delivered, now)).await?;
            info!(channel = %channel, count = delivered.len(), "delivered");
            for r in batch.iter().filter(|r| finished(r) && !refused_here(r)) {
                crate::http::histogram::DELIVERY.observe_ms(&channel, r.created_at, now);
            }
        }
        let mut died = 0;
        let mut died_error = String::new();
        // Delivery alerts that die themselves are only logged: reporting them would
        // bounce between two broken channels.
        let reportable = |r: &OutboxRow| !r.event.rule.starts_with("centinela-delivery");
        for r in batch.iter().filter(|r| finished(r) && refused_here(r)) {
            let e = r.last_error.clone().unwrap_or_else(|| "refused".into());
            outbox::mark_dead(&pool, &[r.id.as_str()], &e, now).await?;
            if reportable(r) {
                died += 1;
                died_error = e;
            }
        }
        if let Some((message, after)) = &retry {
            let mut give_up = Vec::new();
            let mut give_up_reportable = 0;
            let mut again = Vec::new();
            for r in batch.iter().filter(|r| !finished(r)) {
                if r.attempts + 1 >= self.policy.max_attempts {
                    give_up.push(r.id.as_str());
                    give_up_reportable += usize::from(reportable(r));
                } else {
                    again.push(r);
                }
            }
            if !give_up.is_empty() {
                let e = format!(
                    "gave up after {} attempts; last error: {message}",
                    self.policy.max_attempts
                );
                error!(channel = %channel, count = give_up.len(), error = %e, "notifications dead");
                outbox::mark_dead(&pool, &give_up, &e, now).await?;
                if give_up_reportable > 0 {
                    died += give_up_reportable;
                    died_error = e;
                }
            }
            if let Some(first) = again.first() {
                let wait = backoff(
                    first.attempts + 1,
                    self.policy.backoff_min.std(),
                    self.policy.backoff_max.std(),
                    fastrand::f64(),
                );
                // The server's own "retry after" wins over our schedule, in both directions.
                let wait = after.unwrap_or(wait);
                let next_at = now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
                let ids: Vec<&str> = again.iter().map(|r| r.id.as_str()).collect();
                outbox::mark_retry(&pool, &ids, message, next_at, now).await?;
                info!(channel = %channel, count = ids.len(), retry_in_ms = wait.as_millis() as u64, "retry scheduled");
            }
        }
        if died > 0 {
            self.report_dead(died, &died_error, now).await?;
        } else if !delivered.is_empty() {
            self.clear_dead(now);
        }
        self.track_health(served_any, retry.map(|r| r.0), now).await
    }

    /// Raises (once) an alert through the other channels when this one has failed for
    /// longer than `failing_after`, and resolves it when a send succeeds again.
    async fn track_health(
        &mut self,
        served: bool,
        error: Option<String>,
        now: Timestamp,
    ) -> Result<(), OutboxError> {
        let channel = self.sender.channel().to_string();
        if served {
            if self.raised {
                info!(channel = %channel, "channel delivers again");
                let msg = format!("{channel} notifications are delivered again");
                if !self.to_engine(RULE_FAILING, false, now, &msg) {
                    let ev = self.health_event(AlertState::Resolved, now, msg);
                    self.outbox.enqueue(&[ev], now).await?;
                }
            } else if self.engine.is_some() && !self.engine_clear {
                // A no-op unless the alert came back firing from before a restart.
                self.to_engine(
                    RULE_FAILING,
                    false,
                    now,
                    &format!("{channel} notifications are delivered again"),
                );
            }
            self.engine_clear = self.engine.is_some();
            self.failing_since = None;
            self.raised = false;
            return Ok(());
        }
        let Some(error) = error else { return Ok(()) };
        let since = *self.failing_since.get_or_insert(now);
        if !self.raised && now - since >= self.policy.failing_after.as_millis() {
            self.raised = true;
            error!(channel = %channel, since = %crate::model::format_ts(since), error = %error, "channel keeps failing");
            let msg = format!(
                "{channel} notifications have failed since {}: {error}",
                crate::model::format_ts(since)
            );
            self.engine_clear = false;
            if self.to_engine(RULE_FAILING, true, since, &msg) || self.others.is_empty() {
                return Ok(());
            }
            let ev = self.health_event(AlertState::Firing, since, msg);
            self.outbox.enqueue(&[ev], now).await?;
        }
        Ok(())
    }

    fn health_event(&self, state: AlertState, ts: Timestamp, message: String) -> AlertEvent {
        AlertEvent {
            rule: RULE_FAILING.into(),
            series: health_series(self.sender.channel()),
            state,
            severity: Severity::Critical,
            value: None,
            unit: None,
            ts,
            message,
            notify: self.others.clone(),
        }
    }

    /// Reports `count` notifications that ended dead: through the engine, as the alert
    /// `centinela-delivery-dead/notify/<channel>` (firing until the channel delivers
    /// again; more dying meanwhile are logged, not told again), else straight into the
    /// outbox of the other channels.
    async fn report_dead(
        &mut self,
        count: usize,
        error: &str,
        now: Timestamp,
    ) -> Result<(), OutboxError> {
        let channel = self.sender.channel().to_string();
        let message = format!("{count} {channel} notification(s) could not be delivered: {error}");
        if self.to_engine(RULE_DEAD, true, now, &message) {
            self.dead_raised = true;
            self.dead_clear = false;
            return Ok(());
        }
        if self.others.is_empty() {
            return Ok(());
        }
        let ev = AlertEvent {
            rule: RULE_DEAD.into(),
            series: health_series(&channel),
            state: AlertState::Firing,
            severity: Severity::Warning,
            value: Some(count as f64),
            unit: None,
            ts: now,
            message,
            notify: self.others.clone(),
        };
        self.outbox.enqueue(&[ev], now).await.map(|_| ())
    }

    /// A notification was delivered and none died: resolves the dead-notifications
    /// alert in the engine (once after a start too, for one restored firing).
    fn clear_dead(&mut self, now: Timestamp) {
        if self.engine.is_none() || (self.dead_clear && !self.dead_raised) {
            return;
        }
        let msg = format!(
            "{} notifications are delivered again",
            self.sender.channel()
        );
        self.to_engine(RULE_DEAD, false, now, &msg);
        self.dead_raised = false;
        self.dead_clear = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;
    use crate::notify::outbox::Status;

    fn policy() -> OutboxConfig {
        OutboxConfig {
            storm_threshold: 3,
            digest_max: 10,
            ..OutboxConfig::default()
        }
    }

    fn row(i: i64, created_at: Timestamp, next_at: Timestamp) -> OutboxRow {
        OutboxRow {
            id: format!("id{i}"),
            channel: "email".into(),
            event: AlertEvent {
                rule: "hot".into(),
                series: format!("s/{i}"),
                state: AlertState::Firing,
                severity: Severity::Warning,
                value: Some(1.0),
                unit: None,
                ts: created_at,
                message: String::new(),
                notify: vec!["email".into()],
            },
            status: Status::Pending,
            created_at,
            attempts: 0,
            next_at,
            done: vec![],
            refused: vec![],
            last_error: None,
            updated_at: created_at,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(backoff(1, min, max, 0.0), Duration::from_secs(1));
        assert_eq!(
            backoff(1, min, max, 0.999_999),
            Duration::from_millis(1999) + Duration::from_nanos(999_000)
        );
        assert_eq!(backoff(3, min, max, 0.5), Duration::from_secs(6)); // base 8 s: 4 + 2
        assert_eq!(backoff(10, min, max, 0.0), Duration::from_secs(30)); // capped at 60 s
        assert_eq!(backoff(1000, min, max, 1.0), Duration::from_secs(60));
        for a in 1..40 {
            let d = backoff(a, min, max, fastrand::f64());
            assert!(d <= max && d >= min / 2, "attempt {a}: {d:?}");
        }
    }

    #[test]
    fn plan_sends_the_head_alone_when_calm() {
        let p = policy();
        assert_eq!(plan(&[], 0, true, &p, 100), Plan::Idle);
        let rows = vec![row(1, 10, 10), row(2, 20, 20)];
        assert_eq!(plan(&rows, 2, true, &p, 100), Plan::Send(vec![0]));
    }

    #[test]
    fn plan_waits_for_the_head_in_backoff() {
        let rows = vec![row(1, 10, 5_000), row(2, 20, 20)];
        assert_eq!(plan(&rows, 2, true, &policy(), 100), Plan::WaitUntil(5_000));
    }

    #[test]
    fn plan_groups_a_storm_into_one_digest() {
        let p = policy();
        let rows: Vec<OutboxRow> = (0..5).map(|i| row(i, 10, 10)).collect();
        assert_eq!(
            plan(&rows, 5, true, &p, 100),
            Plan::Send(vec![0, 1, 2, 3, 4])
        );
        // A channel without digests sends one at a time even in a storm.
        assert_eq!(plan(&rows, 5, false, &p, 100), Plan::Send(vec![0]));
        // Never more than digest_max in one message.
        let many: Vec<OutboxRow> = (0..30).map(|i| row(i, 10, 10)).collect();
        let Plan::Send(idx) = plan(&many, 30, true, &p, 100) else {
            panic!()
        };
        assert_eq!(idx.len(), 10);
    }

    #[test]
    fn plan_gathers_during_a_trickling_storm() {
        let p = policy();
        let window = p.storm_window.as_millis();
        let rows = vec![row(1, 1_000, 1_000)];
        // Many were enqueued lately but only one waits: hold it for the window.
        assert_eq!(
            plan(&rows, 6, true, &p, 1_500),
            Plan::WaitUntil(1_000 + window)
        );
        assert_eq!(
            plan(&rows, 6, true, &p, 1_000 + window),
            Plan::Send(vec![0])
        );
    }
}
