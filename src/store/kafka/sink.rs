//! The producer behind `[output.kafka]`: a librdkafka producer with its own polling
//! thread, counting what the brokers acknowledged and what failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::encode;
use crate::config::{KafkaOutputConfig, KafkaSecurity};
use crate::http::{Sample, StageHealth};
use crate::model::OutputStatus;
use crate::shutdown::Shutdown;
use crate::store::{BoxFuture, Check, Context, Output, OutputMsg, StartError};

/// Messages librdkafka holds in memory at most (queued and in flight).
const QUEUE_MESSAGES: usize = 500_000;
/// How long a full queue is waited for before messages are dropped.
const FULL_WAIT: Duration = Duration::from_secs(1);

/// The settings every Kafka client of centinela starts from: the brokers, and TLS and
/// SASL as configured (the password read from its environment variable now). Fails
/// when that variable is not set.
pub fn client_config(brokers: &[String], sec: &KafkaSecurity) -> Result<ClientConfig, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers.join(","))
        .set("client.id", "centinela")
        // Logs go through `tracing` at their level; nothing is printed to stderr.
        .set("log.connection.close", "false")
        .set("security.protocol", &sec.protocol);
    if sec.protocol.starts_with("sasl_") {
        let password = std::env::var(&sec.password_env).map_err(|_| {
            format!(
                "the SASL password is read from the environment variable {}, which is not set",
                sec.password_env
            )
        })?;
        c.set(
            "sasl.mechanisms",
            sec.mechanism.as_deref().unwrap_or("PLAIN"),
        )
        .set("sasl.username", sec.username.as_deref().unwrap_or_default())
        .set("sasl.password", password);
    }
    if let Some(ca) = &sec.ca_file {
        c.set("ssl.ca.location", ca.display().to_string());
    }
    Ok(c)
}

/// What the output counts, for `/metrics`, `/healthz` and the tests.
#[derive(Debug, Default)]
pub struct KafkaOutputStats {
    /// Messages handed to the producer.
    pub queued: AtomicU64,
    /// Messages the brokers acknowledged.
    pub delivered: AtomicU64,
    /// Messages the brokers did not take (errors, `message_timeout`, left at stop).
    pub failed: AtomicU64,
    /// Messages dropped because the producer's queue stayed full.
    pub dropped: AtomicU64,
}

struct Counting(Arc<KafkaOutputStats>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                let n = self.0.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(error = %e, failed = n, "Kafka: a message was not delivered");
                }
            }
        }
    }
}

pub struct KafkaOutput {
    cfg: KafkaOutputConfig,
    stats: Arc<KafkaOutputStats>,
}

impl KafkaOutput {
    pub fn new(cfg: KafkaOutputConfig) -> Self {
        Self {
            cfg,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<KafkaOutputStats> {
        self.stats.clone()
    }

    fn producer(&self) -> Result<ThreadedProducer<Counting>, KafkaError> {
        let mut c = client_config(&self.cfg.brokers, &self.cfg.security())
            .map_err(KafkaError::ClientCreation)?;
        c.set(
            "message.timeout.ms",
            self.cfg.message_timeout.as_millis().to_string(),
        )
        .set("queue.buffering.max.messages", QUEUE_MESSAGES.to_string())
        .set("queue.buffering.max.kbytes", "262144")
        .set("linger.ms", "20")
        .set("compression.codec", "lz4")
        // Ordered and without duplicates per partition, across retries.
        .set("enable.idempotence", "true");
        c.create_with_context(Counting(self.stats.clone()))
    }
}

/// Sends one message, waiting for room while the queue is full — at most [`FULL_WAIT`],
/// and not at all while the brokers are known to be away (`stalled`) or during stop.
fn send(
    p: &ThreadedProducer<Counting>,
    stats: &KafkaOutputStats,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    stalled: &mut bool,
    stopping: bool,
) {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    let start = Instant::now();
    loop {
        match p.send(record) {
            Ok(()) => {
                stats.queued.fetch_add(1, Ordering::Relaxed);
                *stalled = false;
                return;
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                if !*stalled && !stopping && start.elapsed() < FULL_WAIT =>
            {
                record = r;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => {
                let full = matches!(
                    e,
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                );
                if full {
                    *stalled = true;
                }
                let n = stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(error = %e, dropped = n, topic, "Kafka: message dropped");
                }
                return;
            }
        }
    }
}

/// Takes the input until it closes, then flushes for at most `flush_timeout`.
fn run(
    p: ThreadedProducer<Counting>,
    cfg: KafkaOutputConfig,
    stats: Arc<KafkaOutputStats>,
    mut input: mpsc::Receiver<OutputMsg>,
    shutdown: Shutdown,
) {
    let mut buf = Vec::with_capacity(256);
    let mut key = String::new();
    let mut stalled = false;
    while let Some(msg) = input.blocking_recv() {
        let stopping = shutdown.is_shutdown();
        match msg {
            OutputMsg::Readings(rs) if !cfg.readings_topic.is_empty() => {
                for r in rs.iter() {
                    buf.clear();
                    encode::reading(r, &mut buf);
                    let topic = &cfg.readings_topic;
                    let key = r.series.as_bytes();
                    send(&p, &stats, topic, key, &buf, &mut stalled, stopping);
                }
            }
            OutputMsg::Alerts(batch) if !cfg.alerts_topic.is_empty() => {
                for e in &batch.events {
                    buf.clear();
                    encode::alert(e, &mut buf);
                    key.clear();
                    key.push_str(&e.rule);
                    key.push('/');
                    key.push_str(&e.series);
                    let topic = &cfg.alerts_topic;
                    send(
                        &p,
                        &stats,
                        topic,
                        key.as_bytes(),
                        &buf,
                        &mut stalled,
                        stopping,
                    );
                }
            }
            _ => {}
        }
    }
    let start = Instant::now();
    if p.flush(cfg.flush_timeout.std()).is_err() {
        let left = p.in_flight_count();
        tracing::error!(
            left,
            waited_ms = start.elapsed().as_millis() as u64,
            "Kafka: stopping with messages the brokers did not acknowledge; counted as failed"
        );
    }
    // Purges what is left (each counts as failed in the delivery callback), bounded.
    drop(p);
    drop(shutdown);
}

impl Output for KafkaOutput {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn start<'a>(
        &'a self,
        _ctx: &'a Context<'a>,
        input: mpsc::Receiver<OutputMsg>,
        shutdown: Shutdown,
    ) -> BoxFuture<'a, Result<JoinHandle<()>, StartError>> {
        Box::pin(async move {
            let p = self.producer().map_err(|e| StartError {
                output: "kafka",
                message: format!("cannot create the producer: {e}"),
            })?;
            let (cfg, stats) = (self.cfg.clone(), self.stats.clone());
            // The producer's calls block (briefly): the loop runs on a blocking thread.
            Ok(tokio::task::spawn_blocking(move || {
                run(p, cfg, stats, input, shutdown)
            }))
        })
    }

    fn metrics(&self) -> Vec<Sample> {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            Sample::counter(
                "centinela_kafka_messages_queued_total",
                "Messages handed to the Kafka producer.",
                get(&s.queued),
            ),
            Sample::counter(
                "centinela_kafka_messages_delivered_total",
                "Messages the Kafka brokers acknowledged.",
                get(&s.delivered),
            ),
            Sample::counter(
                "centinela_kafka_messages_failed_total",
                "Messages the Kafka brokers did not acknowledge in time, or refused.",
                get(&s.failed),
            ),
            Sample::counter(
                "centinela_kafka_messages_dropped_total",
                "Messages dropped because the Kafka producer's queue stayed full.",
                get(&s.dropped),
            ),
        ]
    }

    fn status(&self) -> Option<OutputStatus> {
        let s = &self.stats;
        let lost = s.failed.load(Ordering::Relaxed) + s.dropped.load(Ordering::Relaxed);
        Some(OutputStatus {
            name: "kafka".into(),
            label: "failed".into(),
            value: lost,
            warn: lost > 0,
        })
    }

    fn health(&self) -> Option<StageHealth> {
        let s = &self.stats;
        let (failed, dropped) = (
            s.failed.load(Ordering::Relaxed),
            s.dropped.load(Ordering::Relaxed),
        );
        let ok = failed == 0 && dropped == 0;
        Some(StageHealth::new(
            "kafka",
            ok,
            if ok {
                format!("{} messages delivered", s.delivered.load(Ordering::Relaxed))
            } else {
                format!("{failed} messages not delivered, {dropped} dropped (queue full)")
            },
        ))
    }

    fn check(&self) -> BoxFuture<'_, Option<Check>> {
        let cfg = self.cfg.clone();
        Box::pin(async move {
            let target = cfg.brokers.join(",");
            let result = tokio::task::spawn_blocking(move || check_topics(&cfg))
                .await
                .unwrap_or_else(|e| Err(format!("the check panicked: {e}")));
            Some(Check { target, result })
        })
    }
}

/// Whether the brokers answer and the topics exist (with their partition counts).
fn check_topics(cfg: &KafkaOutputConfig) -> Result<String, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = client_config(&cfg.brokers, &cfg.security())?
        .create()
        .map_err(|e| e.to_string())?;
    let md = c
        .fetch_metadata(None, Duration::from_secs(5))
        .map_err(|e| format!("brokers do not answer: {e}"))?;
    let mut parts = vec![format!("{} brokers", md.brokers().len())];
    for t in [&cfg.readings_topic, &cfg.alerts_topic] {
        if t.is_empty() {
            continue;
        }
        match md.topics().iter().find(|m| m.name() == t.as_str()) {
            Some(m) => parts.push(format!("{t}: {} partitions", m.partitions().len())),
            None => parts.push(format!(
                "{t}: not there yet (created on first write if the brokers allow it)"
            )),
        }
    }
    Ok(parts.join(", "))
}
