//! What a bench run measured, and the figures of this process it reads from /proc
//! (CPU seconds, peak RSS).

use serde::Serialize;

/// Publish → alert-event latency, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: u64,
    /// Probe transitions whose event was not seen (a lagging live bus).
    pub missed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// "pipeline" or "raw".
    pub mode: String,
    /// "embedded" or the external broker's URL.
    pub broker: String,
    pub qos: u8,
    pub series: usize,
    pub publishers: usize,
    /// Messages/s asked for; `None` flat out.
    pub target_rate: Option<f64>,
    /// Messages sent (load generator + latency probe).
    pub published: u64,
    /// Acknowledged by the broker (QoS 1 only).
    pub acked: Option<u64>,
    /// Messages that reached the pipeline's source (or the raw subscriber).
    pub received: u64,
    /// Readings decoded from them (pipeline only).
    pub readings: Option<u64>,
    /// Readings in SQLite (pipeline only).
    pub stored: Option<u64>,
    /// published − received: everything that did not arrive, wherever it was lost.
    pub lost: u64,
    /// Gaps the source saw in the embedded broker's log (its overrun), when known.
    pub lost_in_broker: Option<u64>,
    pub decode_errors: u64,
    /// Seconds the load generator published for.
    pub publish_seconds: f64,
    /// The load generator's own rate (msgs/s).
    pub publish_rate: f64,
    /// From the first publish until the last message was received (and stored).
    pub end_to_end_seconds: f64,
    /// Sustained rate: received / seconds until the last message was received.
    pub received_rate: f64,
    /// stored / end-to-end seconds (pipeline only).
    pub stored_rate: Option<f64>,
    /// Publish → alert event (pipeline only).
    pub latency: Option<Latency>,
    pub peak_rss_mib: f64,
    /// CPU of the process without the load generator's threads (broker + pipeline), per
    /// million received messages. An external broker's own CPU is not included.
    pub cpu_s_per_million: f64,
    pub process_cpu_s: f64,
    pub loadgen_cpu_s: f64,
    /// Database size (with its WAL) per stored reading (pipeline only).
    pub db_bytes_per_reading: Option<f64>,
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
/// CPU seconds (user + system) of this process.
pub fn process_cpu_s() -> f64 {
    cpu_of("/proc/self/stat")
}

/// CPU seconds of the calling thread.
pub(super) fn thread_cpu_s() -> f64 {
    cpu_of("/proc/thread-self/stat")
}

/// utime + stime of a /proc stat file, in seconds (Linux reports clock ticks of 1/100 s
/// on every architecture it runs on here); 0 where /proc is not there.
fn cpu_of(path: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields after the command: state(3) … utime(14) stime(15).
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// VmHWM of this process in KiB (0 where /proc is not there).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
