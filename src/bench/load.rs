//! The load generator: K TCP connections publishing pre-encoded packets in large
//! writes, paced or flat out, at QoS 0 or 1; and the raw subscriber that counts what
//! the broker alone delivers.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::mqttbytes::PacketType;

use super::report::thread_cpu_s;
use super::wire::{
    disconnect_packet, mqtt_connect, mqtt_subscribe, parse_packets, put_publish, qos1_publish,
};
use super::QOS1_WINDOW;

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
        let mut qos1 = Vec::new();
        for (i, pl) in payloads.iter().enumerate() {
            let t = &topics[i % topics.len()];
            offsets.push(flat.len());
            put_publish(&mut flat, t, pl);
            if qos == 1 {
                qos1.push(qos1_publish(t, pl));
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
                            let used = parse_packets(&buf[..have], |kind, _| {
                                if kind == PacketType::PubAck {
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
                    let (packet, pkid_at) = &qos1[i];
                    let at = buf.len() + pkid_at;
                    buf.extend_from_slice(packet);
                    buf[at..at + 2].copy_from_slice(&pid.to_be_bytes());
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
            let _ = stream.write_all(&disconnect_packet());
            let _ = stream.shutdown(std::net::Shutdown::Both);
            cpu += r
                .join()
                .map_err(|_| anyhow::anyhow!("a PUBACK reader panicked"))?;
        } else {
            let _ = stream.write_all(&disconnect_packet());
        }
        Ok(cpu)
    }
}

/// A raw TCP subscriber counting the PUBLISH packets it receives.
pub(super) struct RawSubscriber {
    pub(super) received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<f64>,
}

impl RawSubscriber {
    pub(super) fn start(addr: SocketAddr, filter: &str) -> anyhow::Result<RawSubscriber> {
        let mut s = mqtt_connect(addr, &format!("bench-sub-{}", std::process::id()))?;
        mqtt_subscribe(&mut s, filter)?;
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
                            let used = parse_packets(&buf[..have], |kind, _| {
                                if kind == PacketType::Publish {
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

    pub(super) fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0.0)
    }
}
