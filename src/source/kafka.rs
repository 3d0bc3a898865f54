//! Kafka in (`[source.kafka]`, built with `--features kafka`): readings consumed from
//! topics as a member of a consumer group (cooperative-sticky assignment, so a join or
//! a leave moves only the partitions that change hands). The series comes from the
//! message key (or a header, or a JSON field); the value is decoded by the same
//! [`Decoder`](super::decode::Decoder) as an MQTT payload, the key standing for the
//! topic under `ingest.prefix`.
//!
//! # Exactly-once, as Kafka Streams' `exactly_once_v2`
//! One transactional producer per instance (`transactional.id` = group + instance).
//! The readings of every source reach the engine through one [`merge`] task, which
//! numbers them in the order the engine (and so the SQLite writer) sees them. Every
//! `commit_interval` the consumer sends an empty batch, a barrier, down the pipeline;
//! when the [`Tap`](crate::kafka::tap) output sees it, every alert batch the engine
//! made of the readings before it has been handed over. Once SQLite has stored those
//! readings, one transaction carries the alert events (`alerts_topic`), the changelog
//! records of the alert state they left ([`crate::kafka::changelog`], in the partition
//! of the input partition the series comes from) and the consumed offsets
//! (`send_offsets_to_transaction` with the consumer's group metadata). Readers use
//! `read_committed`. A crash (even `kill -9`) loses the open transaction: its events
//! and state are never seen, and the new owner reads the same readings again.
//!
//! # Partitions moving
//! Revoked: what was consumed of them is pushed through and committed before they go
//! (the callback blocks until then, bounded), and the engine stops tick work for their
//! series. Assigned: the matching changelog partitions are read to their end and the
//! engine adopts that state ([`crate::engine::Engine::adopt`]) before a single reading
//! of them is handed over (the consumer only returns their messages after the
//! callback). An alert that was firing on the instance that died is still firing here
//! and is not announced again. The windows of rate and window rules are refilled the
//! same way, from the input partition itself ([`crate::kafka::refill`]): the readings
//! since the start of the longest window, up to the committed offset, feed the
//! windows without raising events, so the first reading judged here is judged with
//! what the previous owner had.
//!
//! A transaction that fails is aborted; the consumer then leaves and rejoins the group,
//! so its partitions restart from the committed offsets and the changelog.
//!
//! SQLite is not part of the transaction: a reading is stored by the instance that
//! consumed it before its offsets are committed, so a crash between the two stores it
//! twice (on the dead instance and on the new owner) — never zero times.
//!
//! Bad messages (no series, undecodable value) are counted per reason and skipped;
//! their offsets move on with the batch.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::decode::Decoder;
use super::mqtt::{SourceSetup, SourceStats};
use crate::config::{KafkaSourceConfig, KeyFrom};
use crate::engine::stage::{Adopt, Adopted};
use crate::kafka::tap::TapMsg;
use crate::kafka::{changelog, refill};
use crate::model::{now_ms, Reading, SeriesId};
use crate::shutdown::Shutdown;
use crate::store::sqlite::{AlertBatch, StoreStats};

/// Readings per batch handed downstream at most.
const BATCH: usize = 4096;
/// How long a batch is filled at most before it goes.
const BATCH_WAIT: Duration = Duration::from_millis(50);
/// How long stopping or a revocation waits for the last readings to be stored and
/// committed.
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(15);
/// How long a changelog restore may take before the partition is judged with what was
/// read (a warning says so).
const RESTORE_WAIT: Duration = Duration::from_secs(30);
/// How long reading the windows' readings again may take (then the windows hold what
/// was read; a warning says so).
const REFILL_WAIT: Duration = Duration::from_secs(30);
/// Read before the longest window too: the handover itself, and the one reading before
/// the window's start that tells a window rule it has seen a whole window.
const REFILL_MARGIN_MS: i64 = 60_000;
/// Bound of one transactional call (commit, offsets).
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the Kafka source counts (beside the decode errors, which go to [`SourceStats`]).
#[derive(Debug, Default)]
pub struct KafkaSourceStats {
    /// Messages consumed.
    pub messages: AtomicU64,
    /// Messages skipped because no series could be found (no key, no such header, no
    /// such JSON field, not UTF-8).
    pub no_series: AtomicU64,
    /// Partitions this instance owns now.
    pub assigned: AtomicU64,
    /// Transactions committed (offsets, events and changelog records together), and
    /// those that failed and were aborted.
    pub commits: AtomicU64,
    pub commit_errors: AtomicU64,
    /// Rebalances this instance took part in.
    pub rebalances: AtomicU64,
    /// Alert events and changelog records produced in committed transactions.
    pub events_produced: AtomicU64,
    pub changelog_produced: AtomicU64,
    /// Changelog restores, records read by them, alerts taken over, and the time they
    /// took (ms, all of them and the last one).
    pub restores: AtomicU64,
    pub restored_records: AtomicU64,
    pub restored_alerts: AtomicU64,
    pub restore_ms_total: AtomicU64,
    pub restore_ms_last: AtomicU64,
    /// Window refills (one per assignment with rate or window rules), the readings
    /// they fed the engine, and the time they took (ms, all of them).
    pub refills: AtomicU64,
    pub refilled_readings: AtomicU64,
    pub refill_ms_total: AtomicU64,
    /// This instance's name in the group (`instance_id`), for the status line and
    /// the TUI's owner column.
    pub instance: Mutex<String>,
    /// The partitions owned now, with the next offset to read and the end of each
    /// (for `/metrics` and `centinela kafka status`: lag = end − next).
    pub partitions: Mutex<Vec<PartitionLag>>,
}

/// One owned partition's position.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Next offset this instance reads (`None` before the first message).
    pub position: Option<i64>,
    /// The partition's end (high watermark), as last fetched.
    pub end: Option<i64>,
}

impl PartitionLag {
    pub fn lag(&self) -> Option<i64> {
        Some((self.end? - self.position?).max(0))
    }
}

/// The next offset to read, per (topic, partition).
type Offsets = HashMap<(String, i32), i64>;

/// What one transaction carries: the offsets up to a barrier and the alert batches the
/// engine made of the readings before it.
#[derive(Default)]
struct Group {
    /// Number of the last reading before the barrier in the merged stream.
    mark: u64,
    offsets: Offsets,
    batches: Vec<Arc<AlertBatch>>,
    /// Made before a rejoin: dropped, not committed.
    discard: bool,
}

/// The consumer's side of the pipeline, shared between the poll loop and the
/// rebalance callbacks (both on the consumer thread).
struct Proc {
    out: Option<mpsc::Sender<Vec<Reading>>>,
    marks: std_mpsc::Receiver<u64>,
    tap: std_mpsc::Receiver<TapMsg>,
    adopt: mpsc::Sender<Adopt>,
    producer: Option<ThreadedProducer<DefaultProducerContext>>,
    txn_id: String,
    base: ClientConfig,
    changelog: String,
    alerts_topic: Option<String>,
    /// The batch being filled.
    batch: Vec<Reading>,
    /// Number of the last reading sent (the merge's answer).
    last_mark: u64,
    /// Next offsets of what was consumed since the last barrier.
    offsets: Offsets,
    sent_since_barrier: bool,
    /// Alert batches from the tap since the last barrier came through.
    open: Vec<Arc<AlertBatch>>,
    /// Barriers sent and not yet through, oldest first.
    waiting: VecDeque<Group>,
    /// Barriers through, waiting for SQLite to store their readings.
    sealed: VecDeque<Group>,
    /// The input partition of every series seen (the changelog partition of its state).
    partition_of: crate::model::FastMap<SeriesId, i32>,
    owned: HashSet<(String, i32)>,
    store: Arc<StoreStats>,
    stats: Arc<KafkaSourceStats>,
    /// A transaction failed: leave and rejoin the group.
    broken: bool,
    /// How readings are read again on assignment.
    keys: Keys,
    group: String,
}

/// How a message becomes readings: where its series is, the decoder's setup.
struct Keys {
    how: KeyFrom,
    json_path: Vec<String>,
    prefix: String,
    setup: SourceSetup,
}

impl Keys {
    fn new(cfg: &KafkaSourceConfig, setup: &SourceSetup) -> Keys {
        let how = cfg.key_from();
        let json_path = match &how {
            KeyFrom::Json(p) => p.split('.').map(str::to_string).collect(),
            _ => Vec::new(),
        };
        Keys {
            how,
            json_path,
            prefix: setup.ingest.prefix.trim_end_matches('/').to_string(),
            setup: setup.clone(),
        }
    }
}

struct Ctx {
    proc: Mutex<Proc>,
}

impl Ctx {
    fn lock(&self) -> std::sync::MutexGuard<'_, Proc> {
        self.proc.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut p = self.lock();
        p.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        match rebalance {
            Rebalance::Revoke(tpl) => p.revoke(consumer, tpl),
            Rebalance::Assign(tpl) => p.assign(tpl),
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let p = self.lock();
        let owned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        p.stats.assigned.store(owned as u64, Ordering::Relaxed);
        if let Ok(mut l) = p.stats.partitions.lock() {
            l.retain(|x| p.owned.contains(&(x.topic.clone(), x.partition)));
            for (t, n) in &p.owned {
                if !l.iter().any(|x| x.topic == *t && x.partition == *n) {
                    l.push(PartitionLag {
                        topic: t.clone(),
                        partition: *n,
                        position: None,
                        end: None,
                    });
                }
            }
            l.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        }
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %list(tpl), owned, "Kafka: partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %list(tpl), owned, "Kafka: partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "Kafka: rebalance failed"),
        }
    }
}

fn list(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

impl Proc {
    /// Hands the batch being filled to the engine.
    fn send_batch(&mut self) -> Result<(), ()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.send(full)?;
        self.sent_since_barrier = true;
        Ok(())
    }

    fn send(&mut self, b: Vec<Reading>) -> Result<(), ()> {
        let out = self.out.as_ref().ok_or(())?;
        out.blocking_send(b).map_err(|_| ())?;
        self.last_mark = self.marks.recv().map_err(|_| ())?;
        Ok(())
    }

    /// Sends a barrier when there is something to commit.
    fn barrier(&mut self) -> Result<(), ()> {
        if !self.sent_since_barrier && self.offsets.is_empty() && self.open.is_empty() {
            return Ok(());
        }
        self.send(Vec::new())?;
        self.waiting.push_back(Group {
            mark: self.last_mark,
            offsets: std::mem::take(&mut self.offsets),
            batches: Vec::new(),
            discard: false,
        });
        self.sent_since_barrier = false;
        Ok(())
    }

    /// Takes what the tap has; waits up to `until` while a barrier is on its way.
    fn drain_tap(&mut self, until: Option<Instant>) {
        loop {
            let m = match until {
                Some(t) if !self.waiting.is_empty() => {
                    let left = t.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    match self.tap.recv_timeout(left.min(Duration::from_millis(100))) {
                        Ok(m) => m,
                        Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(_) => return,
                    }
                }
                _ => match self.tap.try_recv() {
                    Ok(m) => m,
                    Err(_) => return,
                },
            };
            match m {
                TapMsg::Alerts(a) => self.open.push(a),
                TapMsg::Barrier => {
                    if let Some(mut g) = self.waiting.pop_front() {
                        g.batches = std::mem::take(&mut self.open);
                        if !g.discard {
                            self.sealed.push_back(g);
                        }
                    }
                }
            }
        }
    }

    /// Commits, in one transaction, every sealed group whose readings are stored.
    fn try_commit(&mut self, consumer: &BaseConsumer<Ctx>) {
        if self.broken {
            return;
        }
        let stored = self.store.stored.load(Ordering::Relaxed);
        let n = self.sealed.iter().take_while(|g| g.mark <= stored).count();
        if n == 0 {
            return;
        }
        let mut offsets = Offsets::new();
        let mut batches = Vec::new();
        for g in self.sealed.drain(..n) {
            for (tp, next) in g.offsets {
                let e = offsets.entry(tp).or_insert(next);
                *e = (*e).max(next);
            }
            batches.extend(g.batches);
        }
        if let Err(e) = self.transact(consumer, &offsets, &batches) {
            self.stats.commit_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "Kafka: transaction failed; rejoining the group to start again from the last commit");
            if let Some(p) = &self.producer {
                let _ = p.abort_transaction(TXN_TIMEOUT);
            }
            self.broken = true;
        }
    }

    fn transact(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        offsets: &Offsets,
        batches: &[Arc<AlertBatch>],
    ) -> Result<(), KafkaError> {
        if self.producer.is_none() {
            self.producer = Some(transactional(&self.base, &self.txn_id)?);
        }
        let Some(p) = self.producer.as_ref() else {
            return Ok(());
        };
        let owned_numbers: HashSet<i32> = self.owned.iter().map(|(_, n)| *n).collect();
        p.begin_transaction()?;
        let (mut events, mut records) = (0u64, 0u64);
        let mut buf = Vec::new();
        for b in batches {
            if let Some(topic) = &self.alerts_topic {
                for e in &b.events {
                    buf.clear();
                    crate::store::kafka::encode::alert(e, &mut buf);
                    let key = e.alert_id();
                    send(p, BaseRecord::to(topic).key(&key).payload(&buf))?;
                    events += 1;
                }
            }
            for rec in &b.state {
                let Some(&part) = self.partition_of.get(rec.series.as_str()) else {
                    continue;
                };
                if !owned_numbers.contains(&part) {
                    continue;
                }
                let key = changelog::key(rec);
                let value = changelog::value(rec);
                let r = BaseRecord::to(&self.changelog)
                    .partition(part)
                    .key(&key)
                    .payload(&value);
                send(p, r)?;
                records += 1;
            }
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, n), next) in offsets {
            if self.owned.contains(&(t.clone(), *n)) {
                tpl.add_partition_offset(t, *n, Offset::Offset(*next))?;
            }
        }
        if tpl.count() > 0 {
            let meta = consumer.group_metadata().ok_or(KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NotCoordinator,
            ))?;
            p.send_offsets_to_transaction(&tpl, &meta, TXN_TIMEOUT)?;
        }
        p.commit_transaction(TXN_TIMEOUT)?;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .events_produced
            .fetch_add(events, Ordering::Relaxed);
        self.stats
            .changelog_produced
            .fetch_add(records, Ordering::Relaxed);
        if let Ok(mut l) = self.stats.partitions.lock() {
            for x in l.iter_mut() {
                if let Some(next) = offsets.get(&(x.topic.clone(), x.partition)) {
                    x.position = Some(*next);
                }
            }
        }
        Ok(())
    }

    /// Pushes everything consumed through the pipeline and commits it (bounded).
    fn flush(&mut self, consumer: &BaseConsumer<Ctx>, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        if self.send_batch().is_err() || self.barrier().is_err() {
            return false;
        }
        while !self.broken && (!self.waiting.is_empty() || !self.sealed.is_empty()) {
            if Instant::now() >= deadline {
                tracing::warn!("Kafka: readings not stored in time; they will be read again");
                return false;
            }
            self.drain_tap(Some(deadline));
            self.try_commit(consumer);
            if !self.sealed.is_empty() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        !self.broken
    }

    fn revoke(&mut self, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
        if self.broken {
            // Everything since the last commit is thrown away: the next owner (or this
            // instance after it rejoins) starts from the committed offsets.
            self.batch.clear();
            self.offsets.clear();
            self.sealed.clear();
            self.open.clear();
            for g in self.waiting.iter_mut() {
                g.discard = true;
            }
        } else {
            self.flush(consumer, FINAL_COMMIT_WAIT);
        }
        for e in tpl.elements() {
            self.owned.remove(&(e.topic().to_string(), e.partition()));
        }
        let numbers: HashSet<i32> = self.owned.iter().map(|(_, n)| *n).collect();
        let released: Vec<String> = self
            .partition_of
            .iter()
            .filter(|(_, p)| !numbers.contains(p))
            .map(|(s, _)| s.to_string())
            .collect();
        self.partition_of.retain(|_, p| numbers.contains(p));
        self.tell_engine(Vec::new(), Vec::new(), released, false);
    }

    fn assign(&mut self, tpl: &TopicPartitionList) {
        let mut parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        parts.sort_unstable();
        parts.dedup();
        for e in tpl.elements() {
            self.owned.insert((e.topic().to_string(), e.partition()));
        }
        // How far back the windows reach, as the rules are now.
        let window = self
            .tell_engine(Vec::new(), Vec::new(), Vec::new(), true)
            .window_ms;
        let mut records = Vec::new();
        match changelog::restore(&self.base, &self.changelog, &parts, RESTORE_WAIT) {
            Ok(r) => {
                if !r.unfinished.is_empty() {
                    tracing::warn!(
                        topic = self.changelog,
                        partitions = ?r.unfinished,
                        "Kafka: changelog not read to its end in time; judging with what was read"
                    );
                }
                let ms = r.took.as_millis() as u64;
                let s = self.stats.clone();
                s.restores.fetch_add(1, Ordering::Relaxed);
                s.restored_records.fetch_add(r.read, Ordering::Relaxed);
                s.restore_ms_total.fetch_add(ms, Ordering::Relaxed);
                s.restore_ms_last.store(ms, Ordering::Relaxed);
                tracing::info!(
                    topic = self.changelog,
                    partitions = ?parts,
                    records = r.read,
                    alerts = r.records.len(),
                    ms,
                    "Kafka: alert state restored"
                );
                records = r.records;
            }
            Err(e) => tracing::error!(
                error = %e,
                topic = self.changelog,
                "Kafka: cannot restore the alert state; the partitions start from this instance's own"
            ),
        }
        let history = match window {
            Some(w) => {
                let tps: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                self.history(&tps, now_ms() - w - REFILL_MARGIN_MS)
            }
            None => Vec::new(),
        };
        let n = self.tell_engine(records, history, Vec::new(), false).alerts;
        self.stats
            .restored_alerts
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The readings of `tps` since `since` up to the committed offsets (see
    /// [`refill`]), decoded as live ones (stamped with the message's time when they
    /// carry none).
    fn history(&mut self, tps: &[(String, i32)], since: i64) -> Vec<Reading> {
        let mut out = Vec::new();
        let mut decoder = self.keys.setup.decoder();
        let mut topic = String::new();
        let keys = &self.keys;
        let partition_of = &mut self.partition_of;
        let res = refill::read(&self.base, &self.group, tps, since, REFILL_WAIT, |m| {
            let Some(series) = series_of(m, &keys.how, &keys.json_path) else {
                return;
            };
            topic.clear();
            if !keys.prefix.is_empty() {
                topic.push_str(&keys.prefix);
                topic.push('/');
            }
            topic.push_str(&series);
            let ts = m.timestamp().to_millis().unwrap_or_else(now_ms);
            let before = out.len();
            let _ = decoder.decode(&topic, m.payload().unwrap_or_default(), ts, &mut out);
            for r in &out[before..] {
                if partition_of.get(&*r.series) != Some(&m.partition()) {
                    partition_of.insert(r.series.clone(), m.partition());
                }
            }
        });
        match res {
            Ok(r) => {
                if !r.unfinished.is_empty() {
                    tracing::warn!(
                        partitions = ?r.unfinished,
                        "Kafka: windows not refilled to the committed offset in time; judging with what was read"
                    );
                }
                let ms = r.took.as_millis() as u64;
                let s = &self.stats;
                s.refills.fetch_add(1, Ordering::Relaxed);
                s.refilled_readings
                    .fetch_add(out.len() as u64, Ordering::Relaxed);
                s.refill_ms_total.fetch_add(ms, Ordering::Relaxed);
                tracing::info!(
                    partitions = r.partitions,
                    messages = r.read,
                    readings = out.len(),
                    ms,
                    "Kafka: windows refilled"
                );
            }
            Err(e) => tracing::error!(
                error = %e,
                "Kafka: cannot read the windows' readings again; rate and window rules of these partitions start empty"
            ),
        }
        out
    }

    /// Hands the engine state to adopt, readings to refill windows with and series to
    /// release; waits until it has them (`ask`: even when there is nothing, for the
    /// answer).
    fn tell_engine(
        &mut self,
        records: Vec<crate::engine::AlertRecord>,
        history: Vec<Reading>,
        released: Vec<String>,
        ask: bool,
    ) -> Adopted {
        if !ask && records.is_empty() && history.is_empty() && released.is_empty() {
            return Adopted::default();
        }
        let (done, rx) = tokio::sync::oneshot::channel();
        if self
            .adopt
            .blocking_send(Adopt {
                records,
                history,
                released,
                done,
            })
            .is_err()
        {
            return Adopted::default();
        }
        rx.blocking_recv().unwrap_or_default()
    }
}

/// Sends one record inside the open transaction, waiting a little while the queue is
/// full.
fn send(
    p: &ThreadedProducer<DefaultProducerContext>,
    mut r: BaseRecord<'_, String, Vec<u8>>,
) -> Result<(), KafkaError> {
    for _ in 0..200 {
        match p.send(r) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                back,
            )) => {
                r = back;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
    Err(KafkaError::MessageProduction(
        rdkafka::types::RDKafkaErrorCode::QueueFull,
    ))
}

/// A transactional producer, initialised (fencing an earlier one with the same id).
fn transactional(
    base: &ClientConfig,
    id: &str,
) -> Result<ThreadedProducer<DefaultProducerContext>, KafkaError> {
    let mut c = base.clone();
    c.set("transactional.id", id)
        .set("enable.idempotence", "true")
        // As Kafka Streams under exactly-once: a transaction a dead instance left open
        // is aborted after this, and read_committed readers move on.
        .set("transaction.timeout.ms", "10000")
        .set("linger.ms", "5")
        .set("compression.codec", "lz4");
    let p: ThreadedProducer<DefaultProducerContext> = c.create()?;
    p.init_transactions(TXN_TIMEOUT)?;
    Ok(p)
}

/// Everything the consumer thread needs.
pub struct KafkaSource {
    pub cfg: KafkaSourceConfig,
    pub setup: SourceSetup,
    pub stats: Arc<SourceStats>,
    pub kafka: Arc<KafkaSourceStats>,
    pub store: Arc<StoreStats>,
}

/// Why the consumer could not start.
#[derive(Debug, thiserror::Error)]
#[error("Kafka source: {0}")]
pub struct StartError(String);

/// The series of `m` by `how`, or `None` (borrowed from the message when it can be).
fn series_of<'a>(
    m: &'a BorrowedMessage<'_>,
    how: &KeyFrom,
    path: &[String],
) -> Option<std::borrow::Cow<'a, str>> {
    use std::borrow::Cow;
    match how {
        KeyFrom::Key => std::str::from_utf8(m.key()?).ok().map(Cow::Borrowed),
        KeyFrom::Header(name) => {
            let h = m.headers()?;
            h.iter()
                .find(|h| h.key == name.as_str())
                .and_then(|h| std::str::from_utf8(h.value?).ok())
                .map(Cow::Borrowed)
        }
        KeyFrom::Json(_) => {
            let v: serde_json::Value = serde_json::from_slice(m.payload()?).ok()?;
            super::map::get(&v, path)?
                .as_str()
                .map(|s| Cow::Owned(s.to_string()))
        }
    }
    .filter(|s| !s.is_empty())
}

/// This instance's name in the group: the host and the database it writes (stable
/// across restarts, different for two instances on one host).
pub fn instance_id(db_path: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let path = std::fs::canonicalize(db_path).unwrap_or_else(|_| db_path.to_path_buf());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    format!("{host}-{:08x}", h.finish() as u32)
}

/// The pipeline ends the consumer works with.
pub struct Links {
    pub out: mpsc::Sender<Vec<Reading>>,
    pub marks: std_mpsc::Receiver<u64>,
    pub tap: std_mpsc::Receiver<TapMsg>,
    pub adopt: mpsc::Sender<Adopt>,
}

impl KafkaSource {
    /// Creates the topics it writes if missing, the transactional producer, and
    /// subscribes; the consumer then runs on the calling thread ([`Running::run`]).
    pub async fn connect(self, links: Links, instance: &str) -> Result<Running, StartError> {
        let base = crate::store::kafka::client_config(&self.cfg.brokers, &self.cfg.security())
            .map_err(StartError)?;
        let probe: BaseConsumer = base
            .create()
            .map_err(|e| StartError(format!("cannot create a client: {e}")))?;
        let first = &self.cfg.topics[0];
        let n = changelog::partitions(&probe, first, Duration::from_secs(30))
            .map_err(|e| StartError(format!("cannot read the metadata of {first}: {e}")))?
            .ok_or_else(|| StartError(format!("topic {first} does not exist")))?;
        drop(probe);
        let changelog_topic = self.cfg.changelog_topic();
        changelog::ensure_topics(&base, &changelog_topic, self.cfg.alerts_topic.as_deref(), n)
            .await
            .map_err(StartError)?;
        let txn_id = format!("{}-{instance}", self.cfg.group_id);
        let producer = transactional(&base, &txn_id)
            .map_err(|e| StartError(format!("transactional producer {txn_id}: {e}")))?;
        let proc = Proc {
            out: Some(links.out),
            marks: links.marks,
            tap: links.tap,
            adopt: links.adopt,
            producer: Some(producer),
            txn_id,
            base: base.clone(),
            changelog: changelog_topic,
            alerts_topic: self.cfg.alerts_topic.clone(),
            batch: Vec::with_capacity(BATCH),
            last_mark: 0,
            offsets: Offsets::new(),
            sent_since_barrier: false,
            open: Vec::new(),
            waiting: VecDeque::new(),
            sealed: VecDeque::new(),
            partition_of: Default::default(),
            owned: HashSet::new(),
            store: self.store.clone(),
            stats: self.kafka.clone(),
            broken: false,
            keys: Keys::new(&self.cfg, &self.setup),
            group: self.cfg.group_id.clone(),
        };
        let ctx = Ctx {
            proc: Mutex::new(proc),
        };
        let mut c = base;
        c.set("group.id", &self.cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &self.cfg.start)
            .set("isolation.level", "read_committed");
        if self.cfg.group_protocol == "consumer" {
            // KIP-848: the brokers assign, incrementally; session and heartbeat are the
            // group's settings on the brokers.
            c.set("group.protocol", "consumer");
        } else {
            c.set("partition.assignment.strategy", "cooperative-sticky")
                .set("session.timeout.ms", "10000")
                .set("heartbeat.interval.ms", "1000");
        }
        let consumer: BaseConsumer<Ctx> = c
            .create_with_context(ctx)
            .map_err(|e| StartError(format!("cannot create the consumer: {e}")))?;
        let topics: Vec<&str> = self.cfg.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| StartError(format!("cannot subscribe to {topics:?}: {e}")))?;
        Ok(Running {
            consumer,
            src: self,
        })
    }
}

/// A subscribed consumer.
pub struct Running {
    consumer: BaseConsumer<Ctx>,
    src: KafkaSource,
}

impl Running {
    /// Consumes until shutdown begins, committing as it goes; then pushes the last
    /// batches through, commits them (bounded) and leaves the group.
    pub fn run(self, stop: Shutdown) {
        let Running { consumer, src } = self;
        let ctx = consumer.context();
        let lag_done = Arc::new(AtomicBool::new(false));
        let lag = {
            let (base, group) = (ctx.lock().base.clone(), src.cfg.group_id.clone());
            let (stats, done) = (src.kafka.clone(), lag_done.clone());
            std::thread::Builder::new()
                .name("kafka-lag".into())
                .spawn(move || watch_lag(base, group, stats, done))
                .ok()
        };
        let mut decoder: Decoder = src.setup.decoder();
        let how = src.cfg.key_from();
        let json_path: Vec<String> = match &how {
            KeyFrom::Json(p) => p.split('.').map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let prefix = src.setup.ingest.prefix.trim_end_matches('/').to_string();
        let every = src.setup.ingest.warn_interval.std();
        let mut warn_series = crate::logging::Throttle::new(every);
        let mut warn_decode = crate::logging::Throttle::new(every);
        let mut warn_kafka = crate::logging::Throttle::new(every);
        let commit_every = src.cfg.commit_interval.std();
        let mut last_commit = Instant::now();
        let mut topic = String::new();
        let stats = &src.stats;
        let kstats = &src.kafka;
        'outer: while !stop.is_shutdown() {
            // One clock read per message: the monotonic clock for the batch's deadline,
            // and the wall clock (a plain value's receive time) derived from it.
            let started = Instant::now();
            let wall = now_ms();
            let mut elapsed = Duration::ZERO;
            loop {
                let left = BATCH_WAIT.saturating_sub(elapsed);
                let Some(m) = consumer.poll(left) else { break };
                elapsed = started.elapsed();
                let now = wall + elapsed.as_millis() as i64;
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        if let Some(held_back) = warn_kafka.ready() {
                            tracing::warn!(error = %e, held_back, "Kafka: consumer error");
                        }
                        continue;
                    }
                };
                kstats.messages.fetch_add(1, Ordering::Relaxed);
                stats.messages.fetch_add(1, Ordering::Relaxed);
                let mut p = ctx.lock();
                let next = m.offset() + 1;
                // A handful of partitions: found without hashing or a key to allocate.
                let part = m.partition();
                match p
                    .offsets
                    .iter_mut()
                    .find(|((t, n), _)| *n == part && t == m.topic())
                {
                    Some((_, e)) => *e = (*e).max(next),
                    None => {
                        p.offsets.insert((m.topic().to_string(), part), next);
                    }
                }
                let Some(series) = series_of(&m, &how, &json_path) else {
                    kstats.no_series.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = warn_series.ready() {
                        tracing::warn!(
                            topic = m.topic(),
                            partition = m.partition(),
                            offset = m.offset(),
                            key = src.cfg.key,
                            held_back,
                            "Kafka: message without a series skipped"
                        );
                    }
                    continue;
                };
                topic.clear();
                if !prefix.is_empty() {
                    topic.push_str(&prefix);
                    topic.push('/');
                }
                topic.push_str(&series);
                let before = p.batch.len();
                let payload = m.payload().unwrap_or_default();
                let r = decoder.decode(&topic, payload, now, &mut p.batch);
                let after = p.batch.len();
                stats
                    .readings
                    .fetch_add((after - before) as u64, Ordering::Relaxed);
                for i in before..after {
                    let s = &p.batch[i].series;
                    if p.partition_of.get(&**s) != Some(&part) {
                        let s = s.clone();
                        p.partition_of.insert(s, part);
                    }
                }
                let full = p.batch.len() >= BATCH;
                drop(p);
                let skipped = decoder.skipped();
                if skipped > 0 {
                    stats
                        .skipped_fields
                        .fetch_add(skipped as u64, Ordering::Relaxed);
                }
                let errs = r.err().into_iter().chain(decoder.refused().iter().cloned());
                for e in errs {
                    stats.errors[e.index()].fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = warn_decode.ready() {
                        tracing::warn!(
                            series = super::name::printable(&series),
                            partition = m.partition(),
                            offset = m.offset(),
                            reason = e.reason(),
                            held_back,
                            "Kafka: bad message skipped: {e}"
                        );
                    }
                }
                if full {
                    break;
                }
            }
            let mut p = ctx.lock();
            if p.send_batch().is_err() {
                break 'outer;
            }
            p.drain_tap(None);
            if last_commit.elapsed() >= commit_every {
                last_commit = Instant::now();
                if p.barrier().is_err() {
                    break 'outer;
                }
            }
            p.try_commit(&consumer);
            let broken = p.broken;
            drop(p);
            if broken {
                rejoin(&consumer, &src.cfg.topics);
            }
        }
        // The end: push the last readings through and commit them, then leave.
        let mut p = ctx.lock();
        if !p.flush(&consumer, FINAL_COMMIT_WAIT) {
            tracing::warn!(
                "Kafka: stopping before the last readings were committed; they will be read again"
            );
        }
        p.out = None;
        drop(p);
        lag_done.store(true, Ordering::Relaxed);
        if let Some(t) = lag {
            let _ = t.join();
        }
        drop(consumer);
        drop(stop);
    }
}

/// Leaves the group and joins again: the partitions restart from the committed
/// offsets and the changelog.
fn rejoin(consumer: &BaseConsumer<Ctx>, topics: &[String]) {
    consumer.unsubscribe();
    // The revocation is served by poll; nothing is handed downstream meanwhile.
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) > 0 && Instant::now() < deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            // Unsubscribed: nothing more is read from those partitions.
        }
    }
    {
        let mut p = consumer.context().lock();
        p.broken = false;
        if p.producer.is_some() {
            // A fenced or failed producer is replaced before the next transaction.
            p.producer = None;
        }
    }
    let t: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&t) {
        tracing::error!(error = %e, "Kafka: cannot subscribe again");
    }
}

/// Refreshes, every few seconds on its own thread and with its own client (so the
/// consumer never waits for it), the end offsets and the group's committed offsets of
/// the owned partitions: lag = end − committed. Ends when `done` is set.
fn watch_lag(
    base: ClientConfig,
    group: String,
    stats: Arc<KafkaSourceStats>,
    done: Arc<AtomicBool>,
) {
    let mut c = base;
    c.set("group.id", &group).set("enable.auto.commit", "false");
    let Ok(client) = c.create::<BaseConsumer>() else {
        return;
    };
    let mut every = Duration::from_millis(500);
    while !done.load(Ordering::Relaxed) {
        let owned: Vec<(String, i32)> = match stats.partitions.lock() {
            Ok(l) => l.iter().map(|x| (x.topic.clone(), x.partition)).collect(),
            Err(_) => return,
        };
        let mut tpl = TopicPartitionList::new();
        for (t, n) in &owned {
            tpl.add_partition(t, *n);
        }
        let committed = if owned.is_empty() {
            None
        } else {
            client.committed_offsets(tpl, Duration::from_secs(5)).ok()
        };
        for (t, n) in owned {
            let end = client
                .fetch_watermarks(&t, n, Duration::from_secs(2))
                .ok()
                .map(|(_, hi)| hi);
            let pos = committed.as_ref().and_then(|tpl| {
                tpl.find_partition(&t, n)
                    .and_then(|e| e.offset().to_raw())
                    .filter(|&o| o >= 0)
            });
            if let Ok(mut l) = stats.partitions.lock() {
                if let Some(x) = l.iter_mut().find(|x| x.topic == t && x.partition == n) {
                    if end.is_some() {
                        x.end = end;
                    }
                    // Nothing committed yet: the whole partition is behind.
                    x.position = pos.or(x.position).or(Some(0));
                }
            }
        }
        let until = Instant::now() + every;
        while Instant::now() < until && !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        every = Duration::from_secs(5);
    }
}

/// What [`start`] hands back to the service.
pub struct Started {
    /// Where the MQTT source sends its batches now (through [`merge`]).
    pub mqtt: mpsc::Sender<Vec<Reading>>,
    pub stats: Arc<KafkaSourceStats>,
    /// The merge task and the consumer (on a blocking thread).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Subscribes and starts the consumer and the [`merge`] in front of the engine's
/// `readings` input.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    cfg: &KafkaSourceConfig,
    setup: SourceSetup,
    stats: Arc<SourceStats>,
    store: Arc<StoreStats>,
    readings: mpsc::Sender<Vec<Reading>>,
    tap: std_mpsc::Receiver<TapMsg>,
    kafka: Arc<KafkaSourceStats>,
    adopt: mpsc::Sender<Adopt>,
    db_path: &Path,
    stop: Shutdown,
) -> Result<Started, StartError> {
    let (mqtt_tx, mqtt_rx) = mpsc::channel(64);
    let (kafka_tx, kafka_rx) = mpsc::channel(8);
    let (marks_tx, marks_rx) = std::sync::mpsc::channel();
    let links = Links {
        out: kafka_tx,
        marks: marks_rx,
        tap,
        adopt,
    };
    let instance = instance_id(db_path);
    if let Ok(mut i) = kafka.instance.lock() {
        i.clone_from(&instance);
    }
    let running = KafkaSource {
        cfg: cfg.clone(),
        setup,
        stats,
        kafka: kafka.clone(),
        store,
    }
    .connect(links, &instance)
    .await?;
    let merge = tokio::spawn(merge(mqtt_rx, kafka_rx, marks_tx, readings));
    let consumer = tokio::task::spawn_blocking(move || running.run(stop));
    tracing::info!(
        brokers = %cfg.brokers.join(","),
        topics = %cfg.topics.join(","),
        group = cfg.group_id,
        instance,
        "Kafka source subscribed"
    );
    Ok(Started {
        mqtt: mqtt_tx,
        stats: kafka,
        tasks: vec![merge, consumer],
    })
}

/// The one way into the engine when there is more than one source: forwards MQTT and
/// Kafka batches in the order it takes them, numbering the readings, and answers each
/// Kafka batch with the number of its last reading once the engine has it.
pub async fn merge(
    mut mqtt: mpsc::Receiver<Vec<Reading>>,
    mut kafka: mpsc::Receiver<Vec<Reading>>,
    marks: std::sync::mpsc::Sender<u64>,
    out: mpsc::Sender<Vec<Reading>>,
) {
    let mut seq = 0u64;
    let (mut mqtt_open, mut kafka_open) = (true, true);
    while mqtt_open || kafka_open {
        tokio::select! {
            b = mqtt.recv(), if mqtt_open => match b {
                Some(b) => {
                    seq += b.len() as u64;
                    if out.send(b).await.is_err() {
                        break;
                    }
                }
                None => mqtt_open = false,
            },
            b = kafka.recv(), if kafka_open => match b {
                Some(b) => {
                    seq += b.len() as u64;
                    if out.send(b).await.is_err() {
                        break;
                    }
                    let _ = marks.send(seq);
                }
                None => kafka_open = false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn merge_numbers_kafka_batches_in_the_order_the_engine_gets_them() {
        let (mtx, mrx) = mpsc::channel(4);
        let (ktx, krx) = mpsc::channel(4);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let (marks_tx, marks_rx) = std::sync::mpsc::channel();
        let r = |n: usize| -> Vec<Reading> {
            (0..n)
                .map(|i| Reading {
                    series: "s".into(),
                    value: i as f64,
                    ts: i as i64,
                    unit: None,
                })
                .collect()
        };
        let task = tokio::spawn(merge(mrx, krx, marks_tx, out_tx));
        mtx.send(r(3)).await.unwrap();
        // The MQTT batch is in the engine's input before the Kafka one.
        assert_eq!(out_rx.recv().await.unwrap().len(), 3);
        ktx.send(r(2)).await.unwrap();
        assert_eq!(out_rx.recv().await.unwrap().len(), 2);
        assert_eq!(marks_rx.recv().unwrap(), 5);
        drop(mtx);
        drop(ktx);
        task.await.unwrap();
    }
}
