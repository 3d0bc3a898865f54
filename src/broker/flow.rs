//! Back-pressure from the pipeline to the publishers.
//!
//! rumqttd keeps what the front forwards in a commit log of fixed size and acknowledges
//! a QoS 1 publish once it is appended. When the pipeline reads slower than sensors
//! publish, the log would overwrite messages nobody has read yet — acknowledged ones
//! included — and the log's memory would be the only buffer. Instead the front counts
//! what it forwards for the pipeline's filters, the pipeline counts what it reads, and
//! while the difference is above [`Flow::limit`] the front stops reading from its
//! clients: their TCP windows fill and they wait, as with any broker under load.
//!
//! ```text
//!  client ──► front ──sent()──► rumqttd log ──► link ──taken()──► pipeline
//!               ▲                                                    │
//!               └──── room(): waits while sent − taken > limit ◄─────┘
//! ```
//!
//! Both sides count bytes as rumqttd does (4 + topic + payload per log entry, once per
//! matching filter), so the limit is a share of the log's own size. Whatever drift the
//! two counts could gather (a message the router drops) is cleared once the pipeline
//! has found nothing to read *and* the front has forwarded nothing for a long while
//! ([`Flow::idle`]): a router that is merely slow (starved of CPU, or busy appending a
//! large read) must not look idle, or the front would let a second log's worth in on
//! top of what the router has yet to append, and the log would overwrite it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::config::filter_covers as covers;

/// The shared count of bytes in the commit log that the pipeline has not read yet.
#[derive(Debug)]
pub struct Flow {
    filters: Vec<String>,
    limit: u64,
    sent: AtomicU64,
    taken: AtomicU64,
    /// Someone waits in [`Flow::room`]: the reader wakes it once below half the limit.
    held: AtomicBool,
    /// Times a client's reads were held back, for `/metrics`.
    pub holds: AtomicU64,
    wake: Notify,
}

/// What a log entry of `topic` and `payload_len` bytes counts, as rumqttd counts it.
pub fn entry_size(topic: &str, payload_len: usize) -> u64 {
    (4 + topic.len() + payload_len) as u64
}

impl Flow {
    /// A flow for the pipeline's `filters`, holding publishers back above `limit` bytes.
    pub fn new(filters: Vec<String>, limit: u64) -> Flow {
        Flow {
            filters,
            limit: limit.max(1),
            sent: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            held: AtomicBool::new(false),
            holds: AtomicU64::new(0),
            wake: Notify::new(),
        }
    }

    /// Bytes forwarded for the pipeline and not yet read by it.
    pub fn in_flight(&self) -> u64 {
        self.sent
            .load(Ordering::SeqCst)
            .saturating_sub(self.taken.load(Ordering::SeqCst))
    }

    /// What a publish to `topic` adds to the pipeline's logs: one entry per matching
    /// filter (none for a topic the pipeline does not read).
    pub fn cost(&self, topic: &str, payload_len: usize) -> u64 {
        // `+` and `#` never match a first level starting with `$` (MQTT-4.7.2-1).
        if topic.starts_with('$') {
            return 0;
        }
        let n = self.filters.iter().filter(|f| covers(f, topic)).count() as u64;
        n * entry_size(topic, payload_len)
    }

    /// The front forwarded `bytes` for the pipeline.
    pub fn sent(&self, bytes: u64) {
        if bytes > 0 {
            self.sent.fetch_add(bytes, Ordering::SeqCst);
        }
    }

    /// The pipeline read an entry of `bytes`.
    pub fn taken(&self, bytes: u64) {
        self.taken.fetch_add(bytes, Ordering::SeqCst);
        if self.held.load(Ordering::SeqCst) && self.in_flight() <= self.limit / 2 {
            self.release();
        }
    }

    /// Everything the front has forwarded for the pipeline, in bytes.
    pub fn sent_total(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// The pipeline has found nothing more to read for a long while, and the front's
    /// count was `sent_then` when that began: if nothing was forwarded since, whatever
    /// is still counted never reached the log, and the count starts again from here.
    /// Returns the bytes cleared (0 when something was forwarded meanwhile).
    pub fn idle(&self, sent_then: u64) -> u64 {
        let sent = self.sent.load(Ordering::SeqCst);
        if sent != sent_then {
            return 0;
        }
        let cleared = sent.saturating_sub(self.taken.fetch_max(sent, Ordering::SeqCst));
        if self.held.load(Ordering::SeqCst) {
            self.release();
        }
        cleared
    }

    fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    /// Whether a client's next read must wait.
    pub fn full(&self) -> bool {
        self.in_flight() > self.limit
    }

    /// Returns once the pipeline has read the log down to the limit.
    pub async fn room(&self) {
        let mut counted = false;
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            self.held.store(true, Ordering::SeqCst);
            if !self.full() {
                return;
            }
            if !counted {
                self.holds.fetch_add(1, Ordering::Relaxed);
                counted = true;
            }
            woken.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn only_topics_the_pipeline_reads_count_once_per_matching_filter() {
        let f = Flow::new(vec!["sensors/#".into(), "zigbee2mqtt/+".into()], 100);
        assert_eq!(f.cost("sensors/a/b/t", 4), 4 + 13 + 4);
        assert_eq!(f.cost("zigbee2mqtt/lamp", 2), 4 + 16 + 2);
        assert_eq!(f.cost("zigbee2mqtt/lamp/set", 2), 0);
        assert_eq!(f.cost("elsewhere", 2), 0);
        assert_eq!(f.cost("$SYS/x", 2), 0);
        let both = Flow::new(vec!["a/+/c".into(), "a/b/+".into()], 100);
        assert_eq!(both.cost("a/b/c", 0), 2 * (4 + 5));
    }

    #[tokio::test]
    async fn a_held_client_goes_on_when_the_pipeline_reads_below_half() {
        let f = Arc::new(Flow::new(vec!["#".into()], 100));
        f.sent(150);
        assert!(f.full());
        let waiter = tokio::spawn({
            let f = f.clone();
            async move { f.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "held while 150 of 100 bytes are unread"
        );
        f.taken(60); // 90 in flight: below the limit, not yet below half
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "woken only below half the limit");
        f.taken(50); // 40 in flight
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released")
            .unwrap();
        assert_eq!(f.holds.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn an_idle_pipeline_clears_drift_and_releases() {
        let f = Arc::new(Flow::new(vec!["#".into()], 100));
        f.sent(500); // e.g. messages the router dropped: never read
        let waiter = tokio::spawn({
            let f = f.clone();
            async move { f.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(f.idle(500), 500);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released")
            .unwrap();
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn a_forward_during_the_idle_wait_keeps_the_count() {
        // The router is slow to append (starved, or busy with a large read): the front
        // forwarded more while the pipeline found nothing. Clearing now would let a
        // second log's worth in on top of what the router has yet to append.
        let f = Flow::new(vec!["#".into()], 100);
        f.sent(500);
        let then = f.sent_total();
        f.sent(10);
        assert_eq!(f.idle(then), 0);
        assert_eq!(f.in_flight(), 510);
        assert!(f.full());
    }
}
