//! Alert state on a compacted Kafka topic, like a Kafka Streams state store's
//! changelog: one record per change of an alert (key = alert id `rule/series`, value =
//! the [`AlertRecord`] as JSON), in the partition with the number of the input
//! partition its series comes from. Compaction keeps the newest record per alert, so
//! restoring a partition means reading it to its end and keeping the last record of
//! each key.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::engine::AlertRecord;

/// The record key of an alert.
pub fn key(rec: &AlertRecord) -> String {
    format!("{}/{}", rec.rule, rec.series)
}

/// The record value of an alert.
pub fn value(rec: &AlertRecord) -> Vec<u8> {
    serde_json::to_vec(rec).unwrap_or_default()
}

/// Partitions of `topic`, from the brokers' metadata (`None`: no such topic).
pub fn partitions(
    c: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i32>, KafkaError> {
    let md = c.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .filter(|&n| n > 0))
}

/// Creates the changelog (compacted) and the alerts topic with `n` partitions, if
/// they are missing. A topic that exists is left as it is.
pub async fn ensure_topics(
    cfg: &ClientConfig,
    changelog: &str,
    alerts: Option<&str>,
    n: i32,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> =
        cfg.create().map_err(|e| format!("admin client: {e}"))?;
    let mut topics =
        vec![NewTopic::new(changelog, n, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact")];
    if let Some(a) = alerts {
        topics.push(NewTopic::new(a, n, TopicReplication::Fixed(-1)));
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let res = tokio::time::timeout(Duration::from_secs(40), admin.create_topics(&topics, &opts))
        .await
        .map_err(|_| "creating the topics took more than 40 s".to_string())?
        .map_err(|e| format!("creating the topics: {e}"))?;
    for r in res {
        if let Err((name, e)) = r {
            if e != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(format!("creating topic {name}: {e}"));
            }
        }
    }
    Ok(())
}

/// What a restore read.
#[derive(Debug, Default)]
pub struct Restored {
    /// The newest record of every alert in the partitions read.
    pub records: Vec<AlertRecord>,
    /// Records read (all of them, superseded ones included).
    pub read: u64,
    /// Records that were not an alert record (skipped).
    pub bad: u64,
    /// Partitions not read to their end before the deadline.
    pub unfinished: Vec<i32>,
    pub took: Duration,
}

/// Reads partitions `parts` of `topic` from the start to their end (committed records
/// only: the end is the last stable offset, so a transaction a dead instance left open
/// does not hold the restore up) and keeps the newest record of every key.
pub fn restore(
    cfg: &ClientConfig,
    topic: &str,
    parts: &[i32],
    wait: Duration,
) -> Result<Restored, String> {
    let started = Instant::now();
    let mut out = Restored::default();
    if parts.is_empty() {
        return Ok(out);
    }
    let mut c = cfg.clone();
    c.set("group.id", "centinela-restore")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = c.create().map_err(|e| format!("restore consumer: {e}"))?;
    let deadline = started + wait;
    let mut left: HashSet<i32> = HashSet::new();
    let mut tpl = TopicPartitionList::new();
    for &p in parts {
        let left_time = deadline.saturating_duration_since(Instant::now());
        let (lo, hi) = consumer
            .fetch_watermarks(topic, p, left_time.max(Duration::from_millis(100)))
            .map_err(|e| format!("{topic}[{p}]: {e}"))?;
        if hi > lo {
            left.insert(p);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| format!("{topic}[{p}]: {e}"))?;
        }
    }
    if left.is_empty() {
        out.took = started.elapsed();
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("assign {topic}: {e}"))?;
    let mut newest: HashMap<Vec<u8>, Option<AlertRecord>> = HashMap::new();
    while !left.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match consumer.poll(deadline - now) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                left.remove(&p);
            }
            Some(Err(e)) => tracing::warn!(error = %e, topic, "Kafka: changelog restore"),
            Some(Ok(m)) => {
                out.read += 1;
                let Some(k) = m.key() else {
                    out.bad += 1;
                    continue;
                };
                let rec = match m.payload() {
                    // A tombstone: the alert is gone.
                    None => None,
                    Some(v) => match serde_json::from_slice::<AlertRecord>(v) {
                        Ok(r) => Some(r),
                        Err(_) => {
                            out.bad += 1;
                            continue;
                        }
                    },
                };
                newest.insert(k.to_vec(), rec);
            }
        }
    }
    out.unfinished = left.into_iter().collect();
    out.records = newest.into_values().flatten().collect();
    out.took = started.elapsed();
    Ok(out)
}
