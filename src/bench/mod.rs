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
//!
//! # Layout
//! - this file: what a run is asked for and the two runs (pipeline, raw);
//! - `wire`: the MQTT packets, encoded and framed with rumqttc's codec;
//! - `load`: the load generator (publishing threads) and the raw subscriber;
//! - `probe`: the latency probe;
//! - `report`: what a run measured, and the process's CPU and memory figures.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::config::{BrokerMode, Config};
use crate::model::LiveEvent;
use crate::service::{Options, Service};
use load::RawSubscriber;
use probe::{probe_seq, Probe};
use report::percentile;

mod load;
mod probe;
mod report;
mod wire;

pub use load::Load;
pub(crate) use load::LoadGen;
pub(crate) use report::{peak_rss_kib, process_cpu_s};
pub use report::{BenchReport, Latency};
pub use wire::{connect_packet, put_publish};

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
pub(crate) const PROBE_RULE: &str = "bench-probe";
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
