//! `centinela bench`: a load generator that speaks MQTT over TCP with pre-encoded
//! packets (so it is never the bottleneck), and the end-to-end measurement of what it
//! feeds: the whole pipeline (embedded broker or an external one, rules of every kind,
//! SQLite on disk), or the broker alone (`raw`: publish → a raw TCP subscriber) as the
//! baseline.
//!
//! Figures: published (and acknowledged at QoS 1), received, stored, lost (published −
//! received, and the embedded broker's own gap counter), sustained readings/s, publish →
//! alert-event latency (a low-rate probe series whose values cross a threshold rule
//! each message; the alert event on the live bus is timed against the send instant),
//! peak RSS and CPU seconds per million readings with the load generator's own threads
//! subtracted.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::config::{BrokerMode, Config};
use crate::model::LiveEvent;
use crate::service::{Options, Service};

/// The rules a bench run adds when the configuration has none: one of every kind over
/// every bench series. Rate and window rules keep the readings of their window in
/// memory, so their windows are short (memory grows with rate × window).
pub const BENCH_RULES: &str = r#"
[[rules]]
name = "bench-threshold"
series = "bench/#"
kind = "threshold"
above = 1000.0

[[rules]]
name = "bench-rate"
series = "bench/#"
kind = "rate"
window = "1s"
rise = 1000.0

[[rules]]
name = "bench-window"
series = "bench/#"
kind = "window"
agg = "avg"
window = "1s"
above = 1000.0

[[rules]]
name = "bench-deadman"
series = "bench/#"
kind = "deadman"
silence = "60s"
"#;

/// The threshold rule the latency probe crosses; always added.
pub const PROBE_RULE: &str = "bench-probe";
const PROBE_RULES: &str = r#"
[[rules]]
name = "bench-probe"
series = "bench/probe"
kind = "threshold"
above = 1000.0
"#;
const PROBE_TOPIC: &str = "sensors/bench/probe";
/// Probe messages per second (each one is an alert transition).
const PROBE_RATE: u64 = 100;
/// Unacknowledged QoS 1 messages per connection at most.
const QOS1_WINDOW: u64 = 400;

/// Encodes an MQTT 3.1.1 CONNECT with a clean session.
pub fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut p = vec![0x10];
    put_remaining_len(&mut p, body.len());
    p.extend_from_slice(&body);
    p
}

/// Encodes a SUBSCRIBE (packet id 1) to one filter at QoS 0.
pub fn subscribe_packet(filter: &str) -> Vec<u8> {
    let mut p = vec![0x82];
    put_remaining_len(&mut p, 2 + 2 + filter.len() + 1);
    p.extend_from_slice(&[0, 1]);
    p.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    p.extend_from_slice(filter.as_bytes());
    p.push(0);
    p
}

/// Appends an MQTT PUBLISH at QoS 0.
pub fn put_publish(out: &mut Vec<u8>, topic: &str, payload: &[u8]) {
    out.push(0x30);
    put_remaining_len(out, 2 + topic.len() + payload.len());
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload);
}

/// The head of a QoS 1 PUBLISH up to (not including) its packet id.
fn qos1_head(topic: &str, payload_len: usize) -> Vec<u8> {
    let mut out = vec![0x32];
    put_remaining_len(&mut out, 2 + topic.len() + 2 + payload_len);
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out
}

fn put_remaining_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// Splits whole MQTT packets off the front of `buf`, calling `f(first_byte, body)` for
/// each; returns the bytes consumed (a partial packet at the end is left).
pub fn parse_packets(buf: &[u8], mut f: impl FnMut(u8, &[u8])) -> usize {
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() < 2 {
            return at;
        }
        let (mut len, mut mult, mut i) = (0usize, 1usize, 1);
        loop {
            let Some(&b) = rest.get(i) else { return at };
            len += (b & 0x7f) as usize * mult;
            mult *= 128;
            i += 1;
            if b & 0x80 == 0 || i > 4 {
                break;
            }
        }
        if rest.len() < i + len {
            return at;
        }
        f(rest[0], &rest[i..i + len]);
        at += i + len;
    }
}

/// CPU seconds (user + system) of this process.
pub fn process_cpu_s() -> f64 {
    cpu_of("/proc/self/stat")
}

/// CPU seconds of the calling thread.
fn thread_cpu_s() -> f64 {
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

/// Opens an MQTT connection and waits for a successful CONNACK.
fn mqtt_connect(addr: SocketAddr, client_id: &str) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("while connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.write_all(&connect_packet(client_id))?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack)
        .with_context(|| format!("while waiting for the CONNACK from {addr}"))?;
    anyhow::ensure!(
        ack[0] == 0x20 && ack[3] == 0,
        "broker at {addr} refused the connection: {ack:?}"
    );
    Ok(s)
}

/// How the load is shaped.
#[derive(Debug, Clone)]
pub struct Load {
    pub publishers: usize,
    pub series: usize,
    /// Messages per second in all; flat out when `None`.
    pub rate: Option<f64>,
    /// 0 or 1.
    pub qos: u8,
    /// Stop after this many messages in all (otherwise when stopped).
    pub messages: Option<u64>,
}

/// The topic of bench series `i`: `sensors/bench/dev<i/10>/m<i%10>`.
fn topic_of(i: usize) -> String {
    format!("sensors/bench/dev{}/m{}", i / 10, i % 10)
}

/// The publishing threads: K TCP connections, each sending its share of the series
/// round robin, in large writes of pre-encoded packets.
pub struct LoadGen {
    stop: Arc<AtomicBool>,
    pub published: Arc<AtomicU64>,
    pub acked: Arc<AtomicU64>,
    handles: Vec<JoinHandle<anyhow::Result<f64>>>,
    start: Instant,
}

/// What the load generator did.
#[derive(Debug, Clone, Copy)]
pub struct LoadDone {
    pub published: u64,
    pub acked: u64,
    pub seconds: f64,
    /// CPU seconds of its own threads.
    pub cpu_s: f64,
}

impl LoadGen {
    /// Connects every publisher (blocking) and starts them.
    pub fn start(addr: SocketAddr, load: &Load) -> anyhow::Result<LoadGen> {
        let k = load.publishers.max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let published = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let run_id = std::process::id();
        let mut conns = Vec::with_capacity(k);
        for p in 0..k {
            conns.push(mqtt_connect(addr, &format!("bench-{run_id}-{p}"))?);
        }
        let start = Instant::now();
        let handles = conns
            .into_iter()
            .enumerate()
            .map(|(p, s)| {
                let quota = load.messages.map_or(u64::MAX, |m| {
                    m / k as u64 + u64::from((p as u64) < m % k as u64)
                });
                let topics: Vec<String> = (0..load.series.max(1))
                    .filter(|i| i % k == p)
                    .map(topic_of)
                    .collect();
                let topics = if topics.is_empty() {
                    vec![topic_of(p)]
                } else {
                    topics
                };
                let ctx = Publisher {
                    stream: s,
                    topics,
                    quota,
                    rate: load.rate.map(|r| r / k as f64),
                    qos: load.qos,
                    stop: stop.clone(),
                    published: published.clone(),
                    acked: acked.clone(),
                };
                std::thread::Builder::new()
                    .name(format!("bench-pub-{p}"))
                    .spawn(move || ctx.run())
                    .context("while starting a publisher thread")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(LoadGen {
            stop,
            published,
            acked,
            handles,
            start,
        })
    }

    pub fn finished(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops (if still running) and waits for every publisher.
    pub fn join(self) -> anyhow::Result<LoadDone> {
        self.stop();
        let mut seconds = 0f64;
        let mut cpu_s = 0.0;
        for h in self.handles {
            cpu_s += h
                .join()
                .map_err(|_| anyhow::anyhow!("a publisher thread panicked"))??;
        }
        seconds = seconds.max(self.start.elapsed().as_secs_f64());
        Ok(LoadDone {
            published: self.published.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            seconds,
            cpu_s,
        })
    }
}

struct Publisher {
    stream: TcpStream,
    topics: Vec<String>,
    quota: u64,
    /// Messages/s for this connection.
    rate: Option<f64>,
    qos: u8,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
}

impl Publisher {
    /// Publishes until stopped or the quota is sent; returns its threads' CPU seconds.
    fn run(self) -> anyhow::Result<f64> {
        let Publisher {
            mut stream,
            topics,
            quota,
            rate,
            qos,
            stop,
            published,
            acked,
        } = self;
        // One round of packets over this connection's series, repeated to at least 4096
        // packets so that a write carries many of them; values vary by position.
        let rounds = 4096usize.div_ceil(topics.len()).max(1);
        let payloads: Vec<Vec<u8>> = (0..topics.len() * rounds)
            .map(|i| format!("{}.{}", 20 + i % 10, i % 7).into_bytes())
            .collect();
        let n = payloads.len();
        let mut flat = Vec::new();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut heads = Vec::new();
        for (i, pl) in payloads.iter().enumerate() {
            let t = &topics[i % topics.len()];
            offsets.push(flat.len());
            put_publish(&mut flat, t, pl);
            if qos == 1 {
                heads.push(qos1_head(t, pl.len()));
            }
        }
        offsets.push(flat.len());

        // At QoS 1 a reader half counts PUBACKs.
        let my_acked = Arc::new(AtomicU64::new(0));
        let reader = if qos == 1 {
            let mut rd = stream.try_clone()?;
            rd.set_read_timeout(Some(Duration::from_millis(100)))?;
            let (mine, all, stop) = (my_acked.clone(), acked.clone(), stop.clone());
            Some(std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut have = 0;
                let mut idle_after_stop = 0;
                loop {
                    match rd.read(&mut buf[have..]) {
                        Ok(0) => break,
                        Ok(m) => {
                            have += m;
                            let mut acks = 0;
                            let used = parse_packets(&buf[..have], |h, _| {
                                if h >> 4 == 4 {
                                    acks += 1;
                                }
                            });
                            buf.copy_within(used..have, 0);
                            have -= used;
                            mine.fetch_add(acks, Ordering::Relaxed);
                            all.fetch_add(acks, Ordering::Relaxed);
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            if stop.load(Ordering::Relaxed) {
                                idle_after_stop += 1;
                                if idle_after_stop > 50 {
                                    break;
                                }
                            }
                        }
                        Err(_) => break,
                    }
                }
                thread_cpu_s()
            }))
        } else {
            None
        };

        // Paced in slices of 2 ms: each slice's messages go out in one write.
        let per_slice = rate.map(|r| (r * 0.002).max(1e-9));
        let t0 = Instant::now();
        let mut slice = 0u64;
        let mut owed = 0f64;
        let mut sent = 0u64;
        let mut i = 0usize;
        let mut pid: u16 = 0;
        let mut buf = Vec::with_capacity(256 * 1024);
        while sent < quota && !stop.load(Ordering::Relaxed) {
            let mut budget = quota - sent;
            if let Some(ps) = per_slice {
                slice += 1;
                let due = t0 + Duration::from_micros(2_000 * slice);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                owed += ps;
                budget = budget.min(owed as u64);
                owed -= budget as f64;
            }
            if qos == 1 {
                let room = QOS1_WINDOW.saturating_sub(sent - my_acked.load(Ordering::Relaxed));
                if room == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                    if per_slice.is_some() {
                        owed += budget as f64;
                    }
                    continue;
                }
                if per_slice.is_some() && budget > room {
                    owed += (budget - room) as f64;
                }
                budget = budget.min(room);
            }
            if budget == 0 {
                continue;
            }
            let count = budget.min(4096) as usize;
            if qos == 0 {
                // Contiguous ranges of the pre-encoded round, written in place.
                let mut left = count;
                while left > 0 {
                    let m = left.min(n - i);
                    stream.write_all(&flat[offsets[i]..offsets[i + m]])?;
                    i = (i + m) % n;
                    left -= m;
                }
            } else {
                buf.clear();
                for _ in 0..count {
                    pid = pid.wrapping_add(1).max(1);
                    buf.extend_from_slice(&heads[i]);
                    buf.extend_from_slice(&pid.to_be_bytes());
                    buf.extend_from_slice(&payloads[i]);
                    i = (i + 1) % n;
                }
                stream.write_all(&buf)?;
            }
            sent += count as u64;
            published.fetch_add(count as u64, Ordering::Relaxed);
        }
        stream.flush()?;
        let mut cpu = thread_cpu_s();
        if let Some(r) = reader {
            // Wait for the last acknowledgements (up to 10 s).
            let deadline = Instant::now() + Duration::from_secs(10);
            while my_acked.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, Ordering::Relaxed);
            let _ = stream.write_all(&[0xe0, 0]);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            cpu += r
                .join()
                .map_err(|_| anyhow::anyhow!("a PUBACK reader panicked"))?;
        } else {
            let _ = stream.write_all(&[0xe0, 0]);
        }
        Ok(cpu)
    }
}

/// A raw TCP subscriber counting the PUBLISH packets it receives.
struct RawSubscriber {
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<f64>,
}

impl RawSubscriber {
    fn start(addr: SocketAddr, filter: &str) -> anyhow::Result<RawSubscriber> {
        let mut s = mqtt_connect(addr, &format!("bench-sub-{}", std::process::id()))?;
        s.write_all(&subscribe_packet(filter))?;
        let mut suback = [0u8; 5];
        s.read_exact(&mut suback)
            .context("while waiting for the SUBACK")?;
        anyhow::ensure!(
            suback[0] == 0x90 && suback[4] < 0x80,
            "broker refused the subscription: {suback:?}"
        );
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (received.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("bench-sub".into())
            .spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let mut have = 0;
                while !halt.load(Ordering::Relaxed) {
                    match s.read(&mut buf[have..]) {
                        Ok(0) => break,
                        Ok(m) => {
                            have += m;
                            let mut n = 0;
                            let used = parse_packets(&buf[..have], |h, _| {
                                if h >> 4 == 3 {
                                    n += 1;
                                }
                            });
                            buf.copy_within(used..have, 0);
                            have -= used;
                            count.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
                thread_cpu_s()
            })?;
        Ok(RawSubscriber {
            received,
            stop,
            handle,
        })
    }

    fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0.0)
    }
}

/// The latency probe: one message every 10 ms on [`PROBE_TOPIC`], alternating a value
/// above and below the [`PROBE_RULE`] threshold, each carrying its sequence number.
struct Probe {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Instant>>>,
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
fn probe_seq(v: f64) -> Option<u64> {
    let n = if v >= 1_000_000.0 {
        v - 1_000_000.0
    } else {
        -v
    };
    (n >= 1.0 && n.fract() == 0.0).then_some(n as u64)
}

impl Probe {
    fn start(addr: SocketAddr) -> anyhow::Result<Probe> {
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
                let _ = s.write_all(&[0xe0, 0]);
                Ok((n, thread_cpu_s()))
            })?;
        Ok(Probe { stop, sent, handle })
    }

    fn finish(self) -> anyhow::Result<(u64, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub load: Load,
    /// How long to publish (ignored when `load.messages` is set).
    pub duration: Duration,
    /// `mqtt://HOST:PORT` of an external broker; the embedded one when `None`.
    pub broker: Option<String>,
    /// The broker alone: publish → raw subscriber, no pipeline.
    pub raw: bool,
}

/// A line of progress, once a second.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub elapsed_s: f64,
    pub published: u64,
    pub received: u64,
    /// `None` in raw mode.
    pub stored: Option<u64>,
    /// Received per second over the last interval.
    pub rate: f64,
}

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

fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let parsed = crate::config::BrokerUrl::parse(url).map_err(|e| anyhow::anyhow!(e))?;
    if parsed.tls {
        anyhow::bail!("{url}: the load generator speaks plain MQTT only; use mqtt://");
    }
    (parsed.host.as_str(), parsed.port)
        .to_socket_addrs()
        .with_context(|| format!("while resolving {url}"))?
        .next()
        .with_context(|| format!("{url} resolves to no address"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Publishes for the duration (or the message count), calling `progress` once a
/// second; returns when the load generator has finished.
async fn drive(
    gen: &LoadGen,
    opts: &BenchOptions,
    received: &dyn Fn() -> u64,
    stored: &dyn Fn() -> Option<u64>,
    progress: &mut dyn FnMut(&Progress),
) {
    let start = Instant::now();
    let mut last = (start, 0u64);
    let mut next = start + Duration::from_secs(1);
    loop {
        let done = if opts.load.messages.is_some() {
            gen.finished()
        } else {
            start.elapsed() >= opts.duration || gen.finished()
        };
        if done {
            break;
        }
        if Instant::now() >= next {
            let now = Instant::now();
            let r = received();
            progress(&Progress {
                elapsed_s: start.elapsed().as_secs_f64(),
                published: gen.published.load(Ordering::Relaxed),
                received: r,
                stored: stored(),
                rate: (r - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3),
            });
            last = (now, r);
            next += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gen.stop();
}

/// Runs the benchmark `opts` describes with `cfg` (its broker address and database are
/// replaced by a free port and a temporary file).
pub async fn run(
    cfg: Config,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(&Progress),
) -> anyhow::Result<BenchReport> {
    if opts.raw {
        run_raw(cfg, opts, progress).await
    } else {
        run_pipeline(cfg, opts, progress).await
    }
}

async fn run_raw(
    cfg: Config,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(&Progress),
) -> anyhow::Result<BenchReport> {
    let cpu0 = process_cpu_s();
    let addr = match &opts.broker {
        Some(url) => resolve(url)?,
        None => {
            let mut b = cfg.broker.clone();
            b.listen = SocketAddr::from(([127, 0, 0, 1], crate::broker::free_port()?));
            b.username = None;
            b.users.clear();
            b.tls_only = false;
            b.tls_listen = None;
            // The embedded broker alone: no in-process link, it runs until the process
            // exits.
            crate::broker::start(&b, &[])?;
            b.listen
        }
    };
    let sub =
        tokio::task::spawn_blocking(move || RawSubscriber::start(addr, "sensors/#")).await??;
    let load = opts.load.clone();
    let gen = tokio::task::spawn_blocking(move || LoadGen::start(addr, &load)).await??;
    let start = Instant::now();
    let count = sub.received.clone();
    let received = move || count.load(Ordering::Relaxed);
    drive(&gen, opts, &received, &|| None, progress).await;
    let done = tokio::task::spawn_blocking(move || gen.join()).await??;
    // Drain: until everything arrived or nothing moved for a second.
    let mut last = (received(), Instant::now());
    let mut end = start.elapsed();
    while received() < done.published && last.1.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let r = received();
        if r != last.0 {
            last = (r, Instant::now());
            end = start.elapsed();
        }
    }
    if received() >= done.published {
        end = start.elapsed();
    }
    let received_n = received();
    let sub_cpu = tokio::task::spawn_blocking(move || sub.finish()).await?;
    let process_cpu_s = process_cpu_s() - cpu0;
    let loadgen_cpu_s = done.cpu_s + sub_cpu;
    let end_s = end.as_secs_f64().max(1e-9);
    Ok(BenchReport {
        mode: "raw".into(),
        broker: opts.broker.clone().unwrap_or_else(|| "embedded".into()),
        qos: opts.load.qos,
        series: opts.load.series,
        publishers: opts.load.publishers,
        target_rate: opts.load.rate,
        published: done.published,
        acked: (opts.load.qos == 1).then_some(done.acked),
        received: received_n,
        readings: None,
        stored: None,
        lost: done.published.saturating_sub(received_n),
        lost_in_broker: None,
        decode_errors: 0,
        publish_seconds: done.seconds,
        publish_rate: done.published as f64 / done.seconds.max(1e-9),
        end_to_end_seconds: end_s,
        received_rate: received_n as f64 / end_s,
        stored_rate: None,
        latency: None,
        peak_rss_mib: peak_rss_kib() as f64 / 1024.0,
        cpu_s_per_million: (process_cpu_s - loadgen_cpu_s).max(0.0) * 1e6
            / received_n.max(1) as f64,
        process_cpu_s,
        loadgen_cpu_s,
        db_bytes_per_reading: None,
    })
}

async fn run_pipeline(
    mut cfg: Config,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(&Progress),
) -> anyhow::Result<BenchReport> {
    let cpu0 = process_cpu_s();
    let dir = tempfile::tempdir()?;
    if cfg.rules.is_empty() {
        cfg.rules = Config::parse(BENCH_RULES, "<bench rules>")?.rules;
    }
    cfg.rules
        .extend(Config::parse(PROBE_RULES, "<bench probe rule>")?.rules);
    // The probe crosses its threshold a hundred times a second: no flapping hold.
    cfg.engine.flap_transitions = 0;
    // Room for every series asked for, and the probe's.
    cfg.ingest.max_series = cfg.ingest.max_series.max(opts.load.series + 16);
    let addr = match &opts.broker {
        Some(url) => {
            cfg.broker.mode = BrokerMode::External;
            cfg.broker.url = Some(url.clone());
            cfg.broker.client_id = format!("centinela-bench-{}", std::process::id());
            resolve(url)?
        }
        None => {
            cfg.broker.mode = BrokerMode::Embedded;
            cfg.broker.username = None;
            cfg.broker.users.clear();
            cfg.broker.tls_only = false;
            cfg.broker.tls_listen = None;
            cfg.broker.listen = SocketAddr::from(([127, 0, 0, 1], crate::broker::free_port()?));
            cfg.broker.listen
        }
    };
    let embedded = opts.broker.is_none();
    let svc = Service::start(
        cfg,
        Options {
            db_path: Some(dir.path().join("bench.db")),
        },
    )
    .await?;
    if !embedded {
        // Publish only once the source is subscribed.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !svc.source_stats.connected.load(Ordering::Relaxed) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the pipeline did not connect to {}",
                opts.broker.as_deref().unwrap_or("")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Times each probe transition's alert event against its send instant.
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let probe = tokio::task::spawn_blocking(move || Probe::start(addr)).await??;
    let listener = {
        let mut rx = svc.live.subscribe();
        let (sent, out) = (probe.sent.clone(), latencies.clone());
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(LiveEvent::Alert(e)) if e.rule == PROBE_RULE => {
                        let now = Instant::now();
                        let Some(n) = e.value.and_then(probe_seq) else {
                            continue;
                        };
                        let at = sent
                            .lock()
                            .ok()
                            .and_then(|t| t.get(n as usize - 1).copied());
                        if let (Some(at), Ok(mut out)) = (at, out.lock()) {
                            out.push(now.duration_since(at).as_secs_f64() * 1e3);
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    };

    let load = opts.load.clone();
    let gen = tokio::task::spawn_blocking(move || LoadGen::start(addr, &load)).await??;
    let start = Instant::now();
    let (src, store) = (svc.source_stats.clone(), svc.store_stats.clone());
    let s2 = src.clone();
    let received = move || s2.messages.load(Ordering::Relaxed);
    let st2 = store.clone();
    let stored = move || Some(st2.stored.load(Ordering::Relaxed));
    drive(&gen, opts, &received, &stored, progress).await;
    let done = tokio::task::spawn_blocking(move || gen.join()).await??;
    let (probes, probe_cpu) = tokio::task::spawn_blocking(move || probe.finish()).await??;
    let published = done.published + probes;

    // Drain: until everything arrived and is stored, or nothing moved for 2 s.
    let mut last = (0u64, Instant::now());
    let mut end = start.elapsed();
    let mut recv_end = end;
    let mut last_r = 0;
    loop {
        let r = src.messages.load(Ordering::Relaxed);
        if r != last_r {
            (last_r, recv_end) = (r, start.elapsed());
        }
        let lost = src.lost.load(Ordering::Relaxed);
        let readings = src.readings.load(Ordering::Relaxed);
        let s = store.stored.load(Ordering::Relaxed);
        let progress_now = r + s;
        if r + lost >= published && s >= readings {
            end = start.elapsed();
            break;
        }
        if progress_now != last.0 {
            last = (progress_now, Instant::now());
            end = start.elapsed();
        } else if last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let received_n = src.messages.load(Ordering::Relaxed);
    let readings = src.readings.load(Ordering::Relaxed);
    let lost_in_broker = embedded.then(|| src.lost.load(Ordering::Relaxed));
    let decode_errors = src.errors_total();
    svc.shutdown().await?;
    listener.abort();
    let stored_n = store.stored.load(Ordering::Relaxed);
    let process_cpu_s = process_cpu_s() - cpu0;
    let loadgen_cpu_s = done.cpu_s + probe_cpu;
    let db_bytes: u64 = ["bench.db", "bench.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    let mut lat = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("latency samples poisoned"))?
        .clone();
    lat.sort_by(f64::total_cmp);
    let end_s = end.as_secs_f64().max(1e-9);
    Ok(BenchReport {
        mode: "pipeline".into(),
        broker: opts.broker.clone().unwrap_or_else(|| "embedded".into()),
        qos: opts.load.qos,
        series: opts.load.series,
        publishers: opts.load.publishers,
        target_rate: opts.load.rate,
        published,
        acked: (opts.load.qos == 1).then_some(done.acked),
        received: received_n,
        readings: Some(readings),
        stored: Some(stored_n),
        lost: published.saturating_sub(received_n),
        lost_in_broker,
        decode_errors,
        publish_seconds: done.seconds,
        publish_rate: done.published as f64 / done.seconds.max(1e-9),
        end_to_end_seconds: end_s,
        received_rate: received_n as f64 / recv_end.as_secs_f64().max(1e-9),
        stored_rate: Some(stored_n as f64 / end_s),
        latency: Some(Latency {
            samples: lat.len() as u64,
            missed: probes.saturating_sub(lat.len() as u64),
            p50_ms: percentile(&lat, 0.5),
            p99_ms: percentile(&lat, 0.99),
            max_ms: lat.last().copied().unwrap_or(0.0),
        }),
        peak_rss_mib: peak_rss_kib() as f64 / 1024.0,
        cpu_s_per_million: (process_cpu_s - loadgen_cpu_s).max(0.0) * 1e6
            / received_n.max(1) as f64,
        process_cpu_s,
        loadgen_cpu_s,
        db_bytes_per_reading: Some(db_bytes as f64 / stored_n.max(1) as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_valid_mqtt() {
        let mut p = Vec::new();
        put_publish(&mut p, "a/b", b"1.5");
        assert_eq!(p, vec![0x30, 8, 0, 3, b'a', b'/', b'b', b'1', b'.', b'5']);
        let mut long = Vec::new();
        put_publish(&mut long, "t", &[b'x'; 200]);
        assert_eq!(&long[..3], &[0x30, (203 % 128) | 0x80, 1]);
        let c = connect_packet("id");
        assert_eq!(c[0], 0x10);
        assert_eq!(c[1] as usize, c.len() - 2);
        let s = subscribe_packet("a/#");
        assert_eq!(s, vec![0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 0]);
        let mut q = qos1_head("a", 2);
        q.extend_from_slice(&[0, 7, b'4', b'2']);
        assert_eq!(q, vec![0x32, 7, 0, 1, b'a', 0, 7, b'4', b'2']);
    }

    #[test]
    fn parse_packets_splits_a_stream_and_keeps_a_partial_tail() {
        let mut stream = Vec::new();
        put_publish(&mut stream, "a", b"1");
        stream.extend_from_slice(&[0x40, 2, 0, 9]);
        put_publish(&mut stream, "t", &[b'x'; 200]);
        let whole = stream.len();
        stream.extend_from_slice(&[0x30, 5, 0]);
        let mut seen = Vec::new();
        let used = parse_packets(&stream, |h, body| seen.push((h, body.len())));
        assert_eq!(used, whole);
        assert_eq!(seen, vec![(0x30, 4), (0x40, 2), (0x30, 203)]);
    }

    #[test]
    fn probe_values_carry_their_sequence_and_cross_the_threshold() {
        for n in 1..100 {
            let v = probe_value(n);
            assert_eq!(probe_seq(v), Some(n));
            assert_eq!(v > 1000.0, n % 2 == 1);
        }
    }
}
