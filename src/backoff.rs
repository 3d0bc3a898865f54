//! The one retry wait of centinela, for every peer it tries again: the MQTT broker
//! (`source::mqtt`), InfluxDB (`store::influx`), a remote TUI's broker (`tui::remote`),
//! notification channels (`notify::worker`) and the data lake's folder
//! (`store::parquet`). A wait doubles from a minimum up to a maximum and starts again
//! from the minimum once the peer answers.

use std::time::Duration;

/// A doubling wait between tries of one peer.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The wait the next failure will get (for "retrying in …").
    pub fn current(&self) -> Duration {
        self.next
    }

    /// A try failed: the wait before the next one; the one after is twice as long, at
    /// most the maximum.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        wait
    }

    /// The peer answered: the next failure waits the minimum again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The wait before attempt `attempt + 1`, after `attempt` (≥ 1) failures, for work
/// whose tries are counted where it is stored (a notification's attempts):
/// `min · 2^(attempt−1)` capped at `max`, then "equal jitter": half of it fixed, the
/// other half scaled by `jitter` ∈ [0, 1), so retries of many items spread out.
pub fn jittered(attempt: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    let base = min.saturating_mul(1u32 << exp.min(31)).min(max);
    let half = base / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_doubles_to_the_maximum_and_starts_again_after_an_answer() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let waits: Vec<u128> = (0..5).map(|_| b.failed().as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 1000, 1000]);
        assert_eq!(b.current(), Duration::from_secs(1));
        b.reset();
        assert_eq!(b.failed(), Duration::from_millis(250));
    }

    #[test]
    fn a_huge_wait_saturates_instead_of_overflowing() {
        let mut b = Backoff::new(Duration::MAX / 3, Duration::MAX);
        b.failed();
        b.failed();
        assert_eq!(b.failed(), Duration::MAX);
    }
}
