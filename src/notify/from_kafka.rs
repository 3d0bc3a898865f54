//! `[notify] from_kafka = true` (built with `--features kafka`): notifications are
//! delivered by whichever instances run the notifier, as one consumer group
//! (`[notify] kafka_group`) of the alerts topic, through the same outbox and workers
//! as local alerts. An alert is then not lost with the instance that raised it: its
//! event is in the alerts topic as soon as that instance's transaction commits.
//!
//! ```text
//!  alerts topic ──read_committed──► notifier (this module)
//!     │                               │ one SQLite transaction: outbox rows (id = the
//!     │                               │ event's stable notification id) + their offset
//!     │                               ▼
//!     │                             outbox ──► workers ──► email | telegram | …
//!     └◄── offset committed once every notification of the messages before it is
//!          delivered or dead
//! ```
//!
//! # Commit after delivery
//! The consumer commits, per partition, the offset of the oldest message whose
//! notifications are not yet final (delivered, or dead after the outbox's retries or
//! `max_age`). So an instance that dies holds back only what it had not delivered;
//! whoever owns the partition next reads those messages again. Committing after the
//! outbox insert instead would leave them pending in the dead instance's file, unsent
//! until (and unless) that instance comes back.
//!
//! What that costs, and how it stays bounded:
//! - Rows the outbox holds for a partition it no longer owns would be sent twice (here
//!   and by the new owner). So undelivered rows taken from Kafka are handed back: when
//!   a partition is revoked and when the notifier starts (before any worker runs),
//!   they are deleted, and the partition's owner reads their messages again (the
//!   committed offset is never past them).
//! - Reading a message again inserts nothing for a notification this instance already
//!   delivered (`INSERT OR IGNORE` on the stable id): no double after a restart.
//! - A notification can still go out twice when an instance dies (or loses the
//!   partition) after the channel took it and before the outbox said so, or when
//!   another instance delivered it first: at least once, never zero times. The repeat
//!   is recognisable: same notification id, so the same e-mail Message-ID.
//! - A notification that cannot be delivered holds the commit back until the outbox
//!   gives it up (`max_attempts`, `max_age`); messages after it that were delivered
//!   are read again after a move, and skipped by the instance that delivered them.
//!
//! Instances with `from_kafka` never enqueue their own engine's events (the SQLite
//! writer runs without the outbox): those reach the notifiers through the topic.
//! Channels an event names that this instance has no section for are skipped with a
//! warning: notifier instances should all have the same `[notify.*]` channels.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use sqlx::SqlitePool;
use tokio::runtime::Handle;

use super::outbox::{enqueue_in, notification_id, Outbox};
use crate::config::{Config, KafkaSecurity};
use crate::model::{now_ms, AlertEvent};
use crate::shutdown::Shutdown;
use crate::store::kafka::encode::decode_alert;

/// Messages taken into one outbox transaction at most.
const BATCH: usize = 500;
/// How often delivered notifications are looked for and offsets committed.
const COMMIT_EVERY: Duration = Duration::from_millis(500);
/// Undelivered messages per partition looked at per round (the commit point only moves
/// through the oldest).
const HEAD: usize = 200;
/// How long a failed outbox write waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Where the notifier reads: the alerts topic of `[source.kafka]`, else that of
/// `[output.kafka]`, with that section's brokers and security.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub brokers: Vec<String>,
    pub security: KafkaSecurity,
    pub topic: String,
    pub group: String,
}

/// The settings for `cfg`, or why `from_kafka` cannot work with it.
pub fn settings(cfg: &Config) -> Result<Settings, String> {
    let group = cfg.notify.kafka_group().to_string();
    if let Some(s) = &cfg.source.kafka {
        if let Some(t) = &s.alerts_topic {
            return Ok(Settings {
                brokers: s.brokers.clone(),
                security: s.security(),
                topic: t.clone(),
                group,
            });
        }
    }
    if let Some(o) = &cfg.output.kafka {
        if !o.alerts_topic.is_empty() {
            return Ok(Settings {
                brokers: o.brokers.clone(),
                security: o.security(),
                topic: o.alerts_topic.clone(),
                group,
            });
        }
    }
    Err(
        "notify.from_kafka = true needs an alerts topic: set alerts_topic in [source.kafka] \
         (or in [output.kafka]); without one this instance's alerts would reach no one"
            .into(),
    )
}

/// What the notifier counts (logged, and on `/metrics` through [`running`]).
#[derive(Debug, Default)]
pub struct NotifierStats {
    /// Messages read from the alerts topic.
    pub messages: AtomicU64,
    /// Messages that are not alert events (skipped; their offset moves on).
    pub bad: AtomicU64,
    /// Outbox rows added (a message read again adds none).
    pub queued: AtomicU64,
    /// Channels named by events that this instance has no section for.
    pub unknown_channel: AtomicU64,
    /// Undelivered rows handed back (at start and when partitions were revoked).
    pub handed_back: AtomicU64,
    /// Messages whose notifications all became final (delivered, or dead).
    pub settled: AtomicU64,
    /// Offset commits made (an asynchronous one counts when it is sent), and those
    /// that failed.
    pub commits: AtomicU64,
    pub commit_errors: AtomicU64,
    /// Partitions of the alerts topic this instance owns now.
    pub assigned: AtomicU64,
    /// Messages read whose notifications are not all final yet: the commit point
    /// waits for the oldest of them.
    pub open: AtomicU64,
}

/// The counters of the notifier this process runs (`None` before [`start`] or
/// without `from_kafka`), for `/metrics`.
pub fn running() -> Option<Arc<NotifierStats>> {
    RUNNING.lock().ok()?.clone()
}

static RUNNING: Mutex<Option<Arc<NotifierStats>>> = Mutex::new(None);

/// One owned partition: what was read and what is not delivered yet.
#[derive(Debug, Default)]
struct Part {
    /// The offset after the last message read.
    next: Option<i64>,
    /// Offset → notification ids of messages whose notifications are not all final.
    open: BTreeMap<i64, Vec<String>>,
    /// The offset last committed.
    committed: Option<i64>,
}

impl Part {
    /// The offset to commit: the oldest open message, else the one after the last read.
    fn commit_point(&self) -> Option<i64> {
        self.open.keys().next().copied().or(self.next)
    }
}

struct State {
    parts: HashMap<i32, Part>,
}

impl State {
    /// Puts the owned partitions and the open messages into the gauges.
    fn count(&self, stats: &NotifierStats) {
        stats
            .assigned
            .store(self.parts.len() as u64, Ordering::Relaxed);
        let open: usize = self.parts.values().map(|p| p.open.len()).sum();
        stats.open.store(open as u64, Ordering::Relaxed);
    }
}

struct Ctx {
    topic: String,
    pool: SqlitePool,
    handle: Handle,
    state: Mutex<State>,
    stats: Arc<NotifierStats>,
}

impl Ctx {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops what became final from the open messages of every partition (or of
    /// `only`), and returns the offsets to commit now.
    fn advance(&self, only: Option<&HashSet<i32>>) -> TopicPartitionList {
        let mut st = self.lock();
        let mut tpl = TopicPartitionList::new();
        for (n, part) in st.parts.iter_mut() {
            if only.is_some_and(|o| !o.contains(n)) {
                continue;
            }
            let head: Vec<(i64, Vec<String>)> = part
                .open
                .iter()
                .take(HEAD)
                .map(|(o, ids)| (*o, ids.clone()))
                .collect();
            if !head.is_empty() {
                let ids: Vec<&str> = head
                    .iter()
                    .flat_map(|(_, ids)| ids.iter().map(String::as_str))
                    .collect();
                match self.handle.block_on(still_pending(&self.pool, &ids)) {
                    Ok(pending) => {
                        for (o, ids) in &head {
                            if ids.iter().all(|id| !pending.contains(id)) {
                                part.open.remove(o);
                                self.stats.settled.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Kafka notifier: cannot read the outbox"),
                }
            }
            if let Some(at) = part.commit_point() {
                if part.committed.is_none_or(|c| at > c)
                    && tpl
                        .add_partition_offset(&self.topic, *n, Offset::Offset(at))
                        .is_ok()
                {
                    part.committed = Some(at);
                }
            }
        }
        st.count(&self.stats);
        tpl
    }

    /// Commits what is final of `parts`, then hands their undelivered rows back.
    fn revoke(&self, consumer: &BaseConsumer<Ctx>, parts: HashSet<i32>) {
        let tpl = self.advance(Some(&parts));
        if tpl.count() > 0 {
            match consumer.commit(&tpl, CommitMode::Sync) {
                Ok(()) => self.stats.commits.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka notifier: commit before revocation failed");
                    self.stats.commit_errors.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
        let mut ids = Vec::new();
        {
            let mut st = self.lock();
            for n in &parts {
                if let Some(p) = st.parts.remove(n) {
                    ids.extend(p.open.into_values().flatten());
                }
            }
            st.count(&self.stats);
        }
        if ids.is_empty() {
            return;
        }
        match self.handle.block_on(hand_back(&self.pool, Some(&ids))) {
            Ok(n) => {
                self.stats.handed_back.fetch_add(n, Ordering::Relaxed);
                tracing::info!(
                    handed_back = n,
                    "Kafka notifier: undelivered notifications left to the partitions' new owner"
                );
            }
            Err(e) => tracing::warn!(error = %e, "Kafka notifier: cannot hand notifications back"),
        }
    }
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts: HashSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(partitions = ?parts, "Kafka notifier: partitions revoked");
                self.revoke(consumer, parts);
            }
            Rebalance::Assign(tpl) => {
                let mut parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                parts.sort_unstable();
                let mut st = self.lock();
                for n in &parts {
                    st.parts.entry(*n).or_default();
                }
                st.count(&self.stats);
                tracing::info!(
                    topic = self.topic,
                    partitions = ?parts,
                    owned = st.parts.len(),
                    "Kafka notifier: partitions assigned"
                );
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "Kafka notifier: rebalance error"),
        }
    }
}

/// The notifier's own table: which outbox rows came from which message.
async fn ensure_table(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS kafka_outbox (id TEXT PRIMARY KEY, topic TEXT NOT NULL, \
         part INTEGER NOT NULL, msg_offset INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Of `ids`, those still pending.
async fn still_pending(pool: &SqlitePool, ids: &[&str]) -> Result<HashSet<String>, sqlx::Error> {
    let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM outbox WHERE status = 'pending' AND id IN (SELECT value FROM json_each(?))",
    )
    .bind(list)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Deletes the pending rows that came from Kafka (`ids` of them, or all), so that the
/// owner of their partition delivers them; forgets rows the outbox no longer has.
async fn hand_back(pool: &SqlitePool, ids: Option<&[String]>) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let n = match ids {
        Some(ids) => {
            let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
            sqlx::query(
                "DELETE FROM outbox WHERE status = 'pending' AND id IN (SELECT value FROM json_each(?)) \
                 AND id IN (SELECT id FROM kafka_outbox)",
            )
            .bind(list)
            .execute(&mut *tx)
            .await?
        }
        None => {
            sqlx::query(
                "DELETE FROM outbox WHERE status = 'pending' AND id IN (SELECT id FROM kafka_outbox)",
            )
            .execute(&mut *tx)
            .await?
        }
    }
    .rows_affected();
    sqlx::query("DELETE FROM kafka_outbox WHERE id NOT IN (SELECT id FROM outbox)")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// One message read: where it was, and its event (with the channels this instance
/// has), or `None` when there is nothing to deliver.
struct Item {
    part: i32,
    offset: i64,
    event: Option<AlertEvent>,
}

/// Puts the items' notifications into the outbox, with where they came from, in one
/// transaction. Returns the rows added.
async fn insert(pool: &SqlitePool, topic: &str, items: &[Item]) -> Result<u64, String> {
    let now = now_ms();
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    let mut added = 0;
    for it in items {
        let Some(e) = &it.event else { continue };
        added += enqueue_in(&mut tx, std::slice::from_ref(e), now)
            .await
            .map_err(|e| e.to_string())? as u64;
        for ch in &e.notify {
            sqlx::query(
                "INSERT OR IGNORE INTO kafka_outbox (id, topic, part, msg_offset) VALUES (?, ?, ?, ?)",
            )
            .bind(notification_id(e, ch))
            .bind(topic)
            .bind(it.part)
            .bind(it.offset)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        }
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(added)
}

/// The running notifier: its thread and counters.
pub struct Notifier {
    pub task: tokio::task::JoinHandle<()>,
    pub stats: Arc<NotifierStats>,
}

/// Hands back what an earlier run left undelivered, then joins the notifiers' group on
/// a thread of its own. Call before the outbox workers start. `channels`: the ones
/// this instance delivers.
pub async fn start(
    cfg: &Config,
    outbox: Outbox,
    channels: Vec<String>,
    stop: Shutdown,
) -> Result<Notifier, String> {
    let s = settings(cfg)?;
    let pool = outbox.pool().clone();
    ensure_table(&pool)
        .await
        .map_err(|e| format!("Kafka notifier: outbox database: {e}"))?;
    let stats = Arc::new(NotifierStats::default());
    let back = hand_back(&pool, None)
        .await
        .map_err(|e| format!("Kafka notifier: outbox database: {e}"))?;
    stats.handed_back.fetch_add(back, Ordering::Relaxed);
    if back > 0 {
        tracing::info!(
            handed_back = back,
            "Kafka notifier: undelivered notifications of an earlier run will be read again from the alerts topic"
        );
    }
    let mut c: ClientConfig = crate::store::kafka::client_config(&s.brokers, &s.security)?;
    c.set("group.id", &s.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // A topic created after the notifier started is found within seconds.
        .set("topic.metadata.refresh.interval.ms", "5000");
    let ctx = Ctx {
        topic: s.topic.clone(),
        pool,
        handle: Handle::current(),
        state: Mutex::new(State {
            parts: HashMap::new(),
        }),
        stats: stats.clone(),
    };
    let consumer: BaseConsumer<Ctx> = c
        .create_with_context(ctx)
        .map_err(|e| format!("Kafka notifier: cannot create the consumer: {e}"))?;
    consumer
        .subscribe(&[s.topic.as_str()])
        .map_err(|e| format!("Kafka notifier: cannot subscribe to {}: {e}", s.topic))?;
    tracing::info!(
        brokers = %s.brokers.join(","),
        topic = s.topic,
        group = s.group,
        channels = ?channels,
        "Kafka notifier subscribed"
    );
    let channels: HashSet<String> = channels.into_iter().collect();
    if let Ok(mut r) = RUNNING.lock() {
        *r = Some(stats.clone());
    }
    let st = stats.clone();
    let task = tokio::task::spawn_blocking(move || run(consumer, outbox, channels, st, stop));
    Ok(Notifier { task, stats })
}

fn run(
    consumer: BaseConsumer<Ctx>,
    outbox: Outbox,
    channels: HashSet<String>,
    stats: Arc<NotifierStats>,
    stop: Shutdown,
) {
    let ctx = consumer.context();
    let every = Duration::from_secs(60);
    let mut warn_bad = crate::logging::Throttle::new(every);
    let mut warn_channel = crate::logging::Throttle::new(every);
    let mut warn_kafka = crate::logging::Throttle::new(every);
    let mut last_commit = Instant::now();
    'outer: while !stop.is_shutdown() {
        let mut items = Vec::new();
        let mut wait = Duration::from_millis(100);
        while items.len() < BATCH {
            let Some(m) = consumer.poll(wait) else { break };
            wait = Duration::ZERO;
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    if let Some(held_back) = warn_kafka.ready() {
                        tracing::warn!(error = %e, held_back, "Kafka notifier: consumer error");
                    }
                    break;
                }
            };
            stats.messages.fetch_add(1, Ordering::Relaxed);
            let event = match decode_alert(m.payload().unwrap_or_default()) {
                Ok(mut e) => {
                    let before = e.notify.len();
                    e.notify.retain(|c| channels.contains(c));
                    if e.notify.len() < before {
                        stats
                            .unknown_channel
                            .fetch_add((before - e.notify.len()) as u64, Ordering::Relaxed);
                        if let Some(held_back) = warn_channel.ready() {
                            tracing::warn!(
                                alert = e.alert_id(),
                                held_back,
                                "Kafka notifier: the event names a channel this instance has no [notify.*] section for; skipped here"
                            );
                        }
                    }
                    (!e.notify.is_empty()).then_some(e)
                }
                Err(e) => {
                    stats.bad.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = warn_bad.ready() {
                        tracing::warn!(
                            partition = m.partition(),
                            offset = m.offset(),
                            held_back,
                            "Kafka notifier: message skipped: {e}"
                        );
                    }
                    None
                }
            };
            items.push(Item {
                part: m.partition(),
                offset: m.offset(),
                event,
            });
        }
        if !items.is_empty() {
            // Until the rows are durable nothing of these messages is committed; the
            // write is tried again until it succeeds or the service stops.
            let added = loop {
                match ctx.handle.block_on(insert(&ctx.pool, &ctx.topic, &items)) {
                    Ok(n) => break n,
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka notifier: cannot write the outbox; trying again");
                        let until = Instant::now() + RETRY;
                        while Instant::now() < until {
                            if stop.is_shutdown() {
                                break 'outer;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            };
            // Messages read before their partition was revoked (within this batch):
            // their rows go back at once, the new owner delivers them.
            let mut orphans = Vec::new();
            {
                let mut st = ctx.lock();
                for it in &items {
                    let ids: Vec<String> = it.event.as_ref().map_or_else(Vec::new, |e| {
                        e.notify.iter().map(|ch| notification_id(e, ch)).collect()
                    });
                    let Some(part) = st.parts.get_mut(&it.part) else {
                        orphans.extend(ids);
                        continue;
                    };
                    part.next = Some(part.next.unwrap_or(0).max(it.offset + 1));
                    if !ids.is_empty() {
                        part.open.insert(it.offset, ids);
                    } else {
                        // Nothing to deliver: final as soon as it is read.
                        stats.settled.fetch_add(1, Ordering::Relaxed);
                    }
                }
                st.count(&stats);
            }
            if !orphans.is_empty() {
                if let Err(e) = ctx.handle.block_on(hand_back(&ctx.pool, Some(&orphans))) {
                    tracing::warn!(error = %e, "Kafka notifier: cannot hand notifications back");
                }
            }
            stats.queued.fetch_add(added, Ordering::Relaxed);
            if added > 0 {
                outbox.wake();
                tracing::info!(
                    messages = items.len(),
                    queued = added,
                    "Kafka notifier: notifications queued"
                );
            }
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            last_commit = Instant::now();
            commit(&consumer, CommitMode::Async);
        }
    }
    commit(&consumer, CommitMode::Sync);
    // Leaving: what is undelivered is handed back (read again by whoever owns the
    // partitions next, this instance after a restart included).
    let owned: HashSet<i32> = ctx.lock().parts.keys().copied().collect();
    ctx.revoke(&consumer, owned);
    drop(consumer);
}

fn commit(consumer: &BaseConsumer<Ctx>, mode: CommitMode) {
    let tpl = consumer.context().advance(None);
    if tpl.count() == 0 {
        return;
    }
    let stats = &consumer.context().stats;
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(offsets = ?tpl, "Kafka notifier: committed")
        }
        Err(e) => {
            stats.commit_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "Kafka notifier: commit failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_point_is_the_oldest_undelivered_message() {
        let mut p = Part::default();
        assert_eq!(p.commit_point(), None);
        p.next = Some(10);
        assert_eq!(p.commit_point(), Some(10));
        p.open.insert(7, vec!["a".into()]);
        p.open.insert(4, vec!["b".into()]);
        assert_eq!(p.commit_point(), Some(4));
        p.open.remove(&4);
        assert_eq!(p.commit_point(), Some(7));
    }

    #[test]
    fn from_kafka_reads_the_alerts_topic_of_the_source_or_the_output() {
        let base = "[notify]\nfrom_kafka = true\nkafka_group = \"n\"\n";
        let src = "[source.kafka]\nbrokers = [\"127.0.0.1:9\"]\ntopics = [\"in\"]\nalerts_topic = \"al\"\n";
        let out = "[output.kafka]\nbrokers = [\"127.0.0.1:8\"]\nreadings_topic = \"\"\nalerts_topic = \"al2\"\n";
        let parse = |t: String| Config::parse(&t, "t.toml").unwrap();
        let s = settings(&parse(format!("{base}{src}{out}"))).unwrap();
        assert_eq!((s.topic.as_str(), s.group.as_str()), ("al", "n"));
        assert_eq!(s.brokers, ["127.0.0.1:9"]);
        let s = settings(&parse(format!("{base}{out}"))).unwrap();
        assert_eq!(
            (s.topic.as_str(), s.brokers[0].as_str()),
            ("al2", "127.0.0.1:8")
        );
        // `centinela validate` refuses such a file (config::kafka::cross_checks).
        let mut no = parse(format!("{base}{src}"));
        if let Some(k) = no.source.kafka.as_mut() {
            k.alerts_topic = None;
        }
        let e = settings(&no).unwrap_err();
        assert!(e.contains("needs an alerts topic"), "{e}");
    }

    #[tokio::test]
    async fn undelivered_rows_from_kafka_are_handed_back_and_the_rest_stay() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, _lock) = crate::store::sqlite::open_for_writing(&dir.path().join("t.db"))
            .await
            .unwrap();
        ensure_table(&pool).await.unwrap();
        let ev = |series: &str| AlertEvent {
            rule: "hot".into(),
            series: series.into(),
            state: crate::model::AlertState::Firing,
            severity: crate::model::Severity::Critical,
            value: Some(40.0),
            unit: None,
            ts: 1000,
            message: "m".into(),
            notify: vec!["email".into()],
        };
        let items = vec![
            Item {
                part: 0,
                offset: 5,
                event: Some(ev("a")),
            },
            Item {
                part: 1,
                offset: 2,
                event: Some(ev("b")),
            },
            Item {
                part: 1,
                offset: 3,
                event: None,
            },
        ];
        assert_eq!(insert(&pool, "al", &items).await.unwrap(), 2);
        // Read again: nothing new.
        assert_eq!(insert(&pool, "al", &items).await.unwrap(), 0);
        // A local notification (not from Kafka) is never handed back.
        super::super::outbox::enqueue(&pool, &[ev("local")], 1)
            .await
            .unwrap();
        let (a, b) = (
            notification_id(&ev("a"), "email"),
            notification_id(&ev("b"), "email"),
        );
        super::super::outbox::mark_delivered(&pool, &[a.as_str()], 2)
            .await
            .unwrap();
        let pending = still_pending(&pool, &[a.as_str(), b.as_str()])
            .await
            .unwrap();
        assert_eq!(pending, HashSet::from([b.clone()]));
        assert_eq!(hand_back(&pool, None).await.unwrap(), 1);
        let left: Vec<(String, String)> =
            sqlx::query_as("SELECT json_extract(event, '$.series'), status FROM outbox ORDER BY 1")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            left,
            [
                ("a".to_string(), "delivered".to_string()),
                ("local".to_string(), "pending".to_string())
            ]
        );
        // b's message, read again by its partition's owner, is queued again.
        assert_eq!(insert(&pool, "al", &items).await.unwrap(), 1);
    }
}
