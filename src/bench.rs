//! `centinela bench`: a load generator that speaks MQTT over TCP with pre-encoded
//! packets (so it is never the bottleneck), and the end-to-end measurement of the
//! pipeline it feeds: published → received → stored, rate and losses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::service::{Options, Service};

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

/// Appends an MQTT PUBLISH at QoS 0.
pub fn put_publish(out: &mut Vec<u8>, topic: &str, payload: &[u8]) {
    out.push(0x30);
    put_remaining_len(out, 2 + topic.len() + payload.len());
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload);
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

/// Publishes `messages` QoS 0 messages over `publishers` TCP connections, spread over
/// `series` topics, at `rate` messages/s in all (flat out when `None`); returns
/// (sent, seconds).
pub fn flood(
    addr: SocketAddr,
    publishers: usize,
    messages: u64,
    series: usize,
    rate: Option<f64>,
) -> anyhow::Result<(u64, f64)> {
    let per = messages / publishers as u64;
    // Paced in slices of 5 ms: each slice's messages go out in one write.
    let per_slice = rate.map(|r| ((r / publishers as f64) * 0.005).ceil().max(1.0) as u64);
    let start = Instant::now();
    let handles: Vec<_> = (0..publishers)
        .map(|k| {
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut s = TcpStream::connect(addr)
                    .with_context(|| format!("while connecting to {addr}"))?;
                s.set_nodelay(true)?;
                s.write_all(&connect_packet(&format!("bench-{k}")))?;
                let mut ack = [0u8; 4];
                s.read_exact(&mut ack)?;
                anyhow::ensure!(
                    ack[0] == 0x20 && ack[3] == 0,
                    "broker refused the bench connection: {ack:?}"
                );
                // Pre-encode one round over this publisher's series; send it repeatedly.
                let topics: Vec<String> = (0..series)
                    .filter(|i| i % publishers == k)
                    .map(|i| format!("sensors/bench/dev{}/m{}", i / 10, i % 10))
                    .collect();
                let topics = if topics.is_empty() {
                    vec![format!("sensors/bench/p{k}/m")]
                } else {
                    topics
                };
                let mut sent = 0u64;
                let mut buf = Vec::with_capacity(256 * 1024);
                let mut v = 0u64;
                let t0 = Instant::now();
                let mut slice = 0u64;
                while sent < per {
                    buf.clear();
                    let limit = per_slice.map_or(per, |n| (sent + n).min(per));
                    if per_slice.is_some() {
                        slice += 1;
                        let due = t0 + Duration::from_micros(5_000 * slice);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    while buf.len() < 200 * 1024 && sent < limit {
                        let t = &topics[(sent as usize) % topics.len()];
                        put_publish(&mut buf, t, format!("{}.{}", 20 + v % 10, v % 7).as_bytes());
                        v += 1;
                        sent += 1;
                    }
                    s.write_all(&buf)?;
                }
                s.flush()?;
                Ok(sent)
            })
        })
        .collect();
    let mut sent = 0;
    for h in handles {
        sent += h
            .join()
            .map_err(|_| anyhow::anyhow!("a publisher thread panicked"))??;
    }
    Ok((sent, start.elapsed().as_secs_f64()))
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub published: u64,
    pub received: u64,
    pub stored: u64,
    pub lost_in_broker: u64,
    pub decode_errors: u64,
    pub publish_seconds: f64,
    pub publish_rate: f64,
    pub end_to_end_seconds: f64,
    pub stored_rate: f64,
    pub peak_rss_mib: f64,
    /// Size of the database (with its WAL) after the run, per stored reading.
    pub db_bytes_per_reading: f64,
}

/// Runs the pipeline on a temporary database and a free port, floods it and waits
/// until everything is stored (or nothing moves for 5 s).
pub async fn run(
    cfg: Config,
    publishers: usize,
    messages: u64,
    series: usize,
    rate: Option<f64>,
) -> anyhow::Result<BenchReport> {
    let dir = tempfile::tempdir()?;
    let mut cfg = cfg;
    cfg.broker.listen = SocketAddr::from(([127, 0, 0, 1], crate::broker::free_port()?));
    let svc = Service::start(
        cfg,
        Options {
            db_path: Some(dir.path().join("bench.db")),
        },
    )
    .await?;
    let addr = svc.broker_addr.context("bench needs the embedded broker")?;
    let start = Instant::now();
    let (published, publish_seconds) =
        tokio::task::spawn_blocking(move || flood(addr, publishers, messages, series, rate))
            .await??;
    let (src, store) = (svc.source_stats.clone(), svc.store_stats.clone());
    let mut last = (0, Instant::now());
    loop {
        let stored = store.stored.load(Ordering::Relaxed);
        if stored >= published {
            break;
        }
        let received = src.readings.load(Ordering::Relaxed) + src.errors_total();
        if received != last.0 {
            last = (received, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5)
            && store.stored.load(Ordering::Relaxed) >= received
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let end_to_end_seconds = start.elapsed().as_secs_f64();
    let received = src.readings.load(Ordering::Relaxed);
    let lost_in_broker = src.lost.load(Ordering::Relaxed);
    let decode_errors = src.errors_total();
    svc.shutdown().await?;
    let stored = store.stored.load(Ordering::Relaxed);
    let db_bytes: u64 = ["bench.db", "bench.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    Ok(BenchReport {
        published,
        received,
        stored,
        lost_in_broker,
        decode_errors,
        publish_seconds,
        publish_rate: published as f64 / publish_seconds,
        end_to_end_seconds,
        stored_rate: stored as f64 / end_to_end_seconds,
        peak_rss_mib: peak_rss_kib() as f64 / 1024.0,
        db_bytes_per_reading: db_bytes as f64 / stored.max(1) as f64,
    })
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
    }
}
