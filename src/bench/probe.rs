//! The latency probe: a low-rate series whose every message crosses a threshold rule,
//! so each one's alert event can be timed against its send instant.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::report::thread_cpu_s;
use super::wire::{disconnect_packet, mqtt_connect, put_publish};
use super::{PROBE_RATE, PROBE_TOPIC};

/// The latency probe: one message every 10 ms on [`PROBE_TOPIC`], alternating a value
/// above and below the [`PROBE_RULE`] threshold, each carrying its sequence number.
pub(super) struct Probe {
    stop: Arc<AtomicBool>,
    pub(super) sent: Arc<Mutex<Vec<Instant>>>,
    handle: JoinHandle<anyhow::Result<(u64, f64)>>,
}

/// The probe value of sequence number `n` (from 1): odd fires, even resolves.
fn probe_value(n: u64) -> f64 {
    if n % 2 == 1 {
        1_000_000.0 + n as f64
    } else {
        -(n as f64)
    }
}

/// The sequence number a probe alert value carries.
pub(super) fn probe_seq(v: f64) -> Option<u64> {
    let n = if v >= 1_000_000.0 {
        v - 1_000_000.0
    } else {
        -v
    };
    (n >= 1.0 && n.fract() == 0.0).then_some(n as u64)
}

impl Probe {
    pub(super) fn start(addr: SocketAddr) -> anyhow::Result<Probe> {
        let mut s = mqtt_connect(addr, &format!("bench-probe-{}", std::process::id()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
        let (halt, times) = (stop.clone(), sent.clone());
        let handle = std::thread::Builder::new()
            .name("bench-probe".into())
            .spawn(move || -> anyhow::Result<(u64, f64)> {
                let t0 = Instant::now();
                let mut n = 0u64;
                let mut pkt = Vec::with_capacity(64);
                while !halt.load(Ordering::Relaxed) {
                    n += 1;
                    pkt.clear();
                    put_publish(&mut pkt, PROBE_TOPIC, probe_value(n).to_string().as_bytes());
                    {
                        let mut t = times
                            .lock()
                            .map_err(|_| anyhow::anyhow!("probe clock poisoned"))?;
                        t.push(Instant::now());
                    }
                    s.write_all(&pkt)?;
                    let due = t0 + Duration::from_micros(1_000_000 / PROBE_RATE * n);
                    if let Some(w) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(w);
                    }
                }
                let _ = s.write_all(&disconnect_packet());
                Ok((n, thread_cpu_s()))
            })?;
        Ok(Probe { stop, sent, handle })
    }

    pub(super) fn finish(self) -> anyhow::Result<(u64, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_values_carry_their_sequence_and_cross_the_threshold() {
        for n in 1..100 {
            let v = probe_value(n);
            assert_eq!(probe_seq(v), Some(n));
            assert_eq!(v > 1000.0, n % 2 == 1);
        }
    }
}
