//! Kafka in (`[source.kafka]`, built with `--features kafka`): readings consumed from
//! topics as a member of a consumer group (cooperative-sticky assignment, so a join or
//! a leave moves only the partitions that change hands). The series comes from the
//! message key (or a header, or a JSON field); the value is decoded by the same
//! [`Decoder`](super::decode::Decoder) as an MQTT payload, the key standing for the
//! topic under `ingest.prefix`.
//!
//! At-least-once: offsets are committed only once the readings of those messages are
//! written to SQLite. The readings of every source reach the engine through one
//! [`merge`] task, which numbers them in the order the engine (and so the SQLite
//! writer, which flushes all it holds at once) sees them; a Kafka batch's offsets are
//! committed when the writer's count of stored readings has passed the batch's number
//! and stayed there a whole commit interval (time for the alert events the batch caused,
//! written just after it, to be written too). A crash replays what was not committed;
//! it never skips. Partitions taken away in a rebalance get their stored offsets
//! committed first and are then forgotten, so this instance never commits for a
//! partition it no longer owns.
//!
//! Bad messages (no series, undecodable value) are counted per reason and skipped;
//! their offsets move on with the batch.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::decode::Decoder;
use super::mqtt::{SourceSetup, SourceStats};
use crate::config::{KafkaSourceConfig, KeyFrom};
use crate::model::{now_ms, Reading};
use crate::shutdown::Shutdown;
use crate::store::sqlite::StoreStats;

/// Readings per batch handed downstream at most.
const BATCH: usize = 4096;
/// How long a batch is filled at most before it goes.
const BATCH_WAIT: Duration = Duration::from_millis(50);
/// How long stopping waits for the last readings to be written before the final commit.
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(15);

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
    /// Offset commits the group coordinator took, and those it refused.
    pub commits: AtomicU64,
    pub commit_errors: AtomicU64,
    /// Rebalances this instance took part in.
    pub rebalances: AtomicU64,
}

/// The next offset to read, per (topic, partition).
type Offsets = HashMap<(String, i32), i64>;

/// Offsets waiting for their readings to be stored, and what may be committed.
#[derive(Default)]
struct Tracker {
    /// (number of the batch's last reading in the merged stream, next offset per
    /// partition), oldest first.
    waiting: VecDeque<(u64, Offsets)>,
    /// Stored-readings count seen at the last check.
    stored_before: u64,
    /// Next offsets ready to commit (their readings are stored).
    ready: Offsets,
}

impl Tracker {
    /// Moves to `ready` what was stored at the previous check too.
    fn advance(&mut self, stored_now: u64) {
        let stored = self.stored_before;
        while self.waiting.front().is_some_and(|(m, _)| *m <= stored) {
            let (_, offsets) = self.waiting.pop_front().unwrap_or_default();
            for (tp, next) in offsets {
                let e = self.ready.entry(tp).or_insert(next);
                *e = (*e).max(next);
            }
        }
        self.stored_before = stored_now;
    }

    fn forget(&mut self, revoked: &TopicPartitionList) {
        for e in revoked.elements() {
            let tp = (e.topic().to_string(), e.partition());
            self.ready.remove(&tp);
            for (_, offsets) in self.waiting.iter_mut() {
                offsets.remove(&tp);
            }
        }
    }

    fn take_ready(&mut self) -> Option<TopicPartitionList> {
        if self.ready.is_empty() {
            return None;
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), next) in self.ready.drain() {
            let _ = tpl.add_partition_offset(&t, p, Offset::Offset(next));
        }
        Some(tpl)
    }
}

struct Ctx {
    tracker: Arc<Mutex<Tracker>>,
    store: Arc<StoreStats>,
    stats: Arc<KafkaSourceStats>,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        if let Rebalance::Revoke(tpl) = rebalance {
            // Commit what is stored of the partitions that go, then forget them.
            let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
            let stored = self.store.stored.load(Ordering::Relaxed);
            t.advance(stored);
            t.advance(stored);
            if let Some(ready) = t.take_ready() {
                commit(consumer, &ready, CommitMode::Sync, &self.stats);
            }
            t.forget(tpl);
            tracing::info!(partitions = %list(tpl), "Kafka: partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let owned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.stats.assigned.store(owned as u64, Ordering::Relaxed);
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %list(tpl), owned, "Kafka: partitions assigned")
            }
            Rebalance::Revoke(_) => {}
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

fn commit(
    consumer: &BaseConsumer<Ctx>,
    tpl: &TopicPartitionList,
    mode: CommitMode,
    stats: &KafkaSourceStats,
) {
    match consumer.commit(tpl, mode) {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.commit_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "Kafka: offset commit refused; the readings will be read again");
        }
    }
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

/// The series of `m` by `how`, or `None`.
fn series_of(m: &BorrowedMessage<'_>, how: &KeyFrom, path: &[String]) -> Option<String> {
    match how {
        KeyFrom::Key => std::str::from_utf8(m.key()?).ok().map(str::to_string),
        KeyFrom::Header(name) => {
            let h = m.headers()?;
            h.iter()
                .find(|h| h.key == name.as_str())
                .and_then(|h| std::str::from_utf8(h.value?).ok())
                .map(str::to_string)
        }
        KeyFrom::Json(_) => {
            let v: serde_json::Value = serde_json::from_slice(m.payload()?).ok()?;
            super::map::get(&v, path)?.as_str().map(str::to_string)
        }
    }
    .filter(|s| !s.is_empty())
}

impl KafkaSource {
    /// Subscribes; the consumer then runs on the calling thread ([`Running::run`]).
    pub fn connect(self) -> Result<Running, StartError> {
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let ctx = Ctx {
            tracker: tracker.clone(),
            store: self.store.clone(),
            stats: self.kafka.clone(),
        };
        let mut c = crate::store::kafka::client_config(&self.cfg.brokers);
        c.set("group.id", &self.cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &self.cfg.start)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        let consumer: BaseConsumer<Ctx> = c
            .create_with_context(ctx)
            .map_err(|e| StartError(format!("cannot create the consumer: {e}")))?;
        let topics: Vec<&str> = self.cfg.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| StartError(format!("cannot subscribe to {topics:?}: {e}")))?;
        Ok(Running {
            consumer,
            tracker,
            src: self,
        })
    }
}

/// A subscribed consumer.
pub struct Running {
    consumer: BaseConsumer<Ctx>,
    tracker: Arc<Mutex<Tracker>>,
    src: KafkaSource,
}

impl Running {
    /// Consumes until shutdown begins, sending batches to `out` ([`merge`] answers each
    /// with its number on `marks`); then waits (bounded) for the last batches to be
    /// stored and commits them.
    pub fn run(
        self,
        out: mpsc::Sender<Vec<Reading>>,
        marks: std::sync::mpsc::Receiver<u64>,
        stop: Shutdown,
    ) {
        let Running {
            consumer,
            tracker,
            src,
        } = self;
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
        let mut last_mark = 0u64;
        let mut batch: Vec<Reading> = Vec::with_capacity(BATCH);
        let mut offsets = Offsets::new();
        let stats = &src.stats;
        let kstats = &src.kafka;
        'outer: while !stop.is_shutdown() {
            let started = Instant::now();
            while batch.len() < BATCH {
                let left = BATCH_WAIT.saturating_sub(started.elapsed());
                let Some(m) = consumer.poll(left) else { break };
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
                let tp = (m.topic().to_string(), m.partition());
                let next = m.offset() + 1;
                let e = offsets.entry(tp).or_insert(next);
                *e = (*e).max(next);
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
                let before = batch.len();
                let payload = m.payload().unwrap_or_default();
                let r = decoder.decode(&topic, payload, now_ms(), &mut batch);
                stats
                    .readings
                    .fetch_add((batch.len() - before) as u64, Ordering::Relaxed);
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
            }
            if !offsets.is_empty() {
                if !batch.is_empty() {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    if out.blocking_send(full).is_err() {
                        break 'outer;
                    }
                    match marks.recv() {
                        Ok(m) => last_mark = m,
                        Err(_) => break 'outer,
                    }
                }
                // A batch of bad messages only: its offsets wait for what came before.
                let mut t = tracker.lock().unwrap_or_else(|e| e.into_inner());
                t.waiting
                    .push_back((last_mark, std::mem::take(&mut offsets)));
            }
            if last_commit.elapsed() >= commit_every {
                last_commit = Instant::now();
                let ready = {
                    let mut t = tracker.lock().unwrap_or_else(|e| e.into_inner());
                    t.advance(src.store.stored.load(Ordering::Relaxed));
                    t.take_ready()
                };
                if let Some(ready) = ready {
                    commit(&consumer, &ready, CommitMode::Async, kstats);
                }
            }
        }
        // The end: no more readings; once the writer has stored the last batch (it
        // flushes when the pipeline drains), commit it.
        drop(out);
        drop(marks);
        let deadline = Instant::now() + FINAL_COMMIT_WAIT;
        while src.store.stored.load(Ordering::Relaxed) < last_mark && Instant::now() < deadline {
            // librdkafka's own threads keep the group membership meanwhile.
            std::thread::sleep(Duration::from_millis(20));
        }
        let ready = {
            let mut t = tracker.lock().unwrap_or_else(|e| e.into_inner());
            let stored = src.store.stored.load(Ordering::Relaxed);
            t.advance(stored);
            t.advance(stored);
            t.take_ready()
        };
        if let Some(ready) = ready {
            commit(&consumer, &ready, CommitMode::Sync, kstats);
        }
        let left = tracker.lock().map(|t| t.waiting.len()).unwrap_or_default();
        if left > 0 {
            tracing::warn!(
                batches = left,
                "Kafka: stopping before some readings were stored; they will be read again"
            );
        }
        consumer.unsubscribe();
        drop(consumer);
        drop(stop);
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
pub fn start(
    cfg: &KafkaSourceConfig,
    setup: SourceSetup,
    stats: Arc<SourceStats>,
    store: Arc<StoreStats>,
    readings: mpsc::Sender<Vec<Reading>>,
    stop: Shutdown,
) -> Result<Started, StartError> {
    let kafka = Arc::new(KafkaSourceStats::default());
    let running = KafkaSource {
        cfg: cfg.clone(),
        setup,
        stats,
        kafka: kafka.clone(),
        store,
    }
    .connect()?;
    let (mqtt_tx, mqtt_rx) = mpsc::channel(64);
    let (kafka_tx, kafka_rx) = mpsc::channel(8);
    let (marks_tx, marks_rx) = std::sync::mpsc::channel();
    let merge = tokio::spawn(merge(mqtt_rx, kafka_rx, marks_tx, readings));
    let consumer = tokio::task::spawn_blocking(move || running.run(kafka_tx, marks_rx, stop));
    tracing::info!(
        brokers = %cfg.brokers.join(","),
        topics = %cfg.topics.join(","),
        group = cfg.group_id,
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

    fn offsets(list: &[(&str, i32, i64)]) -> HashMap<(String, i32), i64> {
        list.iter()
            .map(|(t, p, o)| ((t.to_string(), *p), *o))
            .collect()
    }

    #[test]
    fn offsets_become_ready_a_check_after_their_readings_are_stored() {
        let mut t = Tracker::default();
        t.waiting
            .push_back((10, offsets(&[("r", 0, 5), ("r", 1, 3)])));
        t.waiting.push_back((20, offsets(&[("r", 0, 9)])));
        t.advance(15);
        assert!(t.take_ready().is_none(), "stored only now: wait a check");
        t.advance(15);
        let ready = t.take_ready().unwrap();
        assert_eq!(ready.count(), 2);
        t.advance(25);
        assert!(t.take_ready().is_none());
        t.advance(25);
        let ready = t.take_ready().unwrap();
        let e = ready.elements();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].offset(), Offset::Offset(9));
    }

    #[test]
    fn revoked_partitions_are_never_committed() {
        let mut t = Tracker::default();
        t.waiting
            .push_back((10, offsets(&[("r", 0, 5), ("r", 1, 3)])));
        let mut revoked = TopicPartitionList::new();
        revoked.add_partition("r", 1);
        t.forget(&revoked);
        t.advance(10);
        t.advance(10);
        let ready = t.take_ready().unwrap();
        let e = ready.elements();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].partition(), 0);
    }

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
