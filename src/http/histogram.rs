//! Latency histograms for `/metrics`, in the Prometheus sense: fixed buckets counted
//! without locks, so a stage pays two atomic adds per observation.
//!
//! Three are kept for the whole process ([`all`]):
//! - [`SQLITE_FLUSH`]: how long one SQLite flush takes (readings, rollups, catalogue);
//! - [`ALERT_LATENCY`]: from a reading's timestamp to its alert event leaving the engine
//!   for the outputs and the outbox (the broker's receive time unless the device
//!   stamps its readings; a device clock that runs ahead counts as 0);
//! - [`DELIVERY`]: from an alert event entering the outbox to its delivery, per
//!   channel (retries included).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Buckets for work done in-process: 0.5 ms to 10 s.
const FAST: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for deliveries over the network, retries included: 50 ms to 1 h.
const SLOW: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// The most buckets a histogram has (the `+Inf` one aside).
const MAX_BUCKETS: usize = 14;

pub static SQLITE_FLUSH: Histogram = Histogram::new(
    "centinela_sqlite_flush_seconds",
    "Time one SQLite flush took (readings, rollups and the series catalogue).",
    FAST,
);
pub static ALERT_LATENCY: Histogram = Histogram::new(
    "centinela_alert_latency_seconds",
    "From a reading's timestamp to its alert event leaving the engine.",
    FAST,
);
pub static DELIVERY: Labelled = Labelled::new(
    "centinela_notification_delivery_seconds",
    "From an alert event entering the outbox to its delivery, retries included.",
    "channel",
    SLOW,
);

/// Every histogram's figures, for `/metrics`.
pub fn all() -> Vec<HistogramSnapshot> {
    let mut out = vec![SQLITE_FLUSH.snapshot(), ALERT_LATENCY.snapshot()];
    out.extend(DELIVERY.snapshots());
    out
}

/// Observations counted into fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    /// Upper bounds in seconds, ascending; the `+Inf` bucket is implied.
    bounds: &'static [f64],
    /// Observations at or below each bound but above the one before (not cumulative).
    counts: [AtomicU64; MAX_BUCKETS],
    /// Above the last bound.
    over: AtomicU64,
    /// Sum of all observations, in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    pub const fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Self {
        assert!(bounds.len() <= MAX_BUCKETS);
        Self {
            name,
            help,
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_BUCKETS],
            over: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        match self.bounds.iter().position(|b| secs <= *b) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observes the milliseconds from `from` to `to` (0 when `to` is earlier).
    pub fn observe_ms(&self, from: i64, to: i64) {
        let ms = u64::try_from(to.saturating_sub(from)).unwrap_or(0);
        self.observe(Duration::from_millis(ms));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        self.snapshot_with(None)
    }

    fn snapshot_with(&self, label: Option<(&'static str, String)>) -> HistogramSnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (i, b) in self.bounds.iter().enumerate() {
            total += self.counts[i].load(Ordering::Relaxed);
            buckets.push((*b, total));
        }
        total += self.over.load(Ordering::Relaxed);
        HistogramSnapshot {
            name: self.name,
            help: self.help,
            label,
            buckets,
            count: total,
            sum: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// One histogram per value of a label (a notification channel): few values, each
/// made on its first observation.
#[derive(Debug)]
pub struct Labelled {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    bounds: &'static [f64],
    by_value: Mutex<Vec<(String, &'static Histogram)>>,
}

impl Labelled {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        bounds: &'static [f64],
    ) -> Self {
        Self {
            name,
            help,
            label,
            bounds,
            by_value: Mutex::new(Vec::new()),
        }
    }

    /// Observes `d` for `value` of the label.
    pub fn observe(&self, value: &str, d: Duration) {
        self.get(value).observe(d);
    }

    /// Observes the milliseconds from `from` to `to` for `value` of the label.
    pub fn observe_ms(&self, value: &str, from: i64, to: i64) {
        self.get(value).observe_ms(from, to);
    }

    fn get(&self, value: &str) -> &'static Histogram {
        let mut v = self.by_value.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, h)) = v.iter().find(|(k, _)| k == value) {
            return h;
        }
        // A few channels per process, made once each: leaking them is the point.
        let h: &'static Histogram =
            Box::leak(Box::new(Histogram::new(self.name, self.help, self.bounds)));
        v.push((value.to_string(), h));
        h
    }

    /// One snapshot per label value, in the order they first appeared.
    pub fn snapshots(&self) -> Vec<HistogramSnapshot> {
        let v = self.by_value.lock().unwrap_or_else(|p| p.into_inner());
        v.iter()
            .map(|(k, h)| h.snapshot_with(Some((self.label, k.clone()))))
            .collect()
    }
}

/// A histogram's figures at one moment, as `/metrics` renders them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub name: &'static str,
    pub help: &'static str,
    /// The label of a [`Labelled`] histogram's series (`channel`, `email`).
    pub label: Option<(&'static str, String)>,
    /// (upper bound in seconds, observations at or below it): cumulative.
    pub buckets: Vec<(f64, u64)>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of all observations, in seconds.
    pub sum: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_sum_is_in_seconds() {
        static H: Histogram = Histogram::new("t_seconds", "test", &[0.001, 0.01, 0.1]);
        H.observe(Duration::from_micros(500));
        H.observe(Duration::from_millis(1));
        H.observe(Duration::from_millis(50));
        H.observe(Duration::from_secs(2));
        let s = H.snapshot();
        assert_eq!(s.buckets, vec![(0.001, 2), (0.01, 2), (0.1, 3)]);
        assert_eq!(s.count, 4);
        assert!((s.sum - 2.0515).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn a_clock_ahead_counts_as_zero() {
        static H: Histogram = Histogram::new("t2_seconds", "test", &[0.001]);
        H.observe_ms(10_000, 9_000);
        let s = H.snapshot();
        assert_eq!((s.buckets[0].1, s.count, s.sum), (1, 1, 0.0));
    }

    #[test]
    fn each_label_value_has_its_own_series() {
        static L: Labelled = Labelled::new("t3_seconds", "test", "channel", &[1.0]);
        L.observe("email", Duration::from_millis(10));
        L.observe("telegram", Duration::from_secs(5));
        L.observe("email", Duration::from_millis(20));
        let s = L.snapshots();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label, Some(("channel", "email".to_string())));
        assert_eq!((s[0].buckets[0].1, s[0].count), (2, 2));
        assert_eq!((s[1].buckets[0].1, s[1].count), (0, 1));
    }
}
