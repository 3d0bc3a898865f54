//! Window contents on a partition move: the readings inside rate and window rules are
//! not in the changelog (that would be a record per reading); the input partition
//! already holds them. On assignment the new owner reads each partition again from the
//! first message of the last window (`offsets_for_times`) up to the group's committed
//! offset — exactly what the previous owner had judged and committed — and the engine
//! refills its windows with them ([`crate::engine::Engine::adopt_with_history`]), as
//! it refills them from SQLite after a restart. Consuming then goes on from the
//! committed offset.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

/// What a refill read.
#[derive(Debug, Default)]
pub struct Refilled {
    /// Messages handed over (committed ones, from the window's start).
    pub read: u64,
    /// Partitions with something to read.
    pub partitions: usize,
    /// Partitions not read up to their committed offset before the deadline.
    pub unfinished: Vec<(String, i32)>,
    pub took: Duration,
}

/// One partition being read: up to `end` (the committed offset, exclusive).
struct Part {
    topic: String,
    partition: i32,
    end: i64,
    done: bool,
}

/// Reads `parts` from the first message with a timestamp ≥ `since_ms` up to the
/// committed offset of `group` (exclusive; read_committed), handing every message to
/// `each` in partition order. A partition without a committed offset, or with no
/// message since `since_ms` before it, has nothing to read.
pub fn read(
    cfg: &ClientConfig,
    group: &str,
    parts: &[(String, i32)],
    since_ms: i64,
    wait: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<Refilled, String> {
    let started = Instant::now();
    let deadline = started + wait;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100))
    };
    let mut out = Refilled::default();
    if parts.is_empty() {
        return Ok(out);
    }
    let mut c = cfg.clone();
    // The group's id, to read its committed offsets; this client never joins it.
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = c.create().map_err(|e| format!("refill consumer: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition(t, *p);
    }
    // Waits while a transaction of the previous owner is still open (the brokers
    // answer "unstable offset" until it is committed or aborted).
    let committed = consumer
        .committed_offsets(tpl, left())
        .map_err(|e| format!("committed offsets: {e}"))?;
    let mut todo: Vec<Part> = Vec::new();
    let mut times = TopicPartitionList::new();
    for e in committed.elements() {
        if let Offset::Offset(end) = e.offset() {
            if end > 0 {
                todo.push(Part {
                    topic: e.topic().to_string(),
                    partition: e.partition(),
                    end,
                    done: false,
                });
                times
                    .add_partition_offset(e.topic(), e.partition(), Offset::Offset(since_ms))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    if todo.is_empty() {
        out.took = started.elapsed();
        return Ok(out);
    }
    let starts = consumer
        .offsets_for_times(times, left())
        .map_err(|e| format!("offsets for times: {e}"))?;
    let mut assign = TopicPartitionList::new();
    for p in todo.iter_mut() {
        let from = starts
            .find_partition(&p.topic, p.partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        match from {
            Some(o) if o < p.end => {
                assign
                    .add_partition_offset(&p.topic, p.partition, Offset::Offset(o))
                    .map_err(|e| e.to_string())?;
            }
            // Nothing since `since_ms`, or nothing before the committed offset.
            _ => p.done = true,
        }
    }
    todo.retain(|p| !p.done);
    out.partitions = todo.len();
    if todo.is_empty() {
        out.took = started.elapsed();
        return Ok(out);
    }
    consumer
        .assign(&assign)
        .map_err(|e| format!("refill assign: {e}"))?;
    let finish = |consumer: &BaseConsumer, p: &mut Part| {
        p.done = true;
        let mut one = TopicPartitionList::new();
        one.add_partition(&p.topic, p.partition);
        let _ = consumer.pause(&one);
    };
    while todo.iter().any(|p| !p.done) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match consumer.poll(deadline - now) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(n))) => {
                // The end of partition `n` (what remained before the committed offset
                // were transaction markers). With several topics, of the one whose
                // position is there.
                let shared = todo.iter().filter(|p| p.partition == n).count() > 1;
                let pos = if shared {
                    consumer.position().ok()
                } else {
                    None
                };
                for p in todo.iter_mut().filter(|p| p.partition == n && !p.done) {
                    let at = pos
                        .as_ref()
                        .and_then(|l| l.find_partition(&p.topic, n))
                        .and_then(|e| e.offset().to_raw());
                    if !shared || at.is_some_and(|o| o >= p.end) {
                        finish(&consumer, p);
                    }
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "Kafka: window refill"),
            Some(Ok(m)) => {
                let Some(p) = todo
                    .iter_mut()
                    .find(|p| p.partition == m.partition() && p.topic == m.topic())
                else {
                    continue;
                };
                if p.done {
                    continue;
                }
                if m.offset() < p.end {
                    each(&m);
                    out.read += 1;
                }
                if m.offset() + 1 >= p.end {
                    finish(&consumer, p);
                }
            }
        }
    }
    out.unfinished = todo
        .iter()
        .filter(|p| !p.done)
        .map(|p| (p.topic.clone(), p.partition))
        .collect();
    out.took = started.elapsed();
    Ok(out)
}
