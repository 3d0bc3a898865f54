//! Self-monitoring over HTTP: `/healthz` (each stage's health as JSON) and `/metrics`
//! (Prometheus text format), on a local address (`[http] listen`, loopback by default).
//!
//! It sits beside the stream and only reads it: the caller passes a `snapshot` function
//! that collects a [`Metrics`] and a [`Health`] from the stages' counters; rendering them
//! ([`render_metrics`], [`render_health`]) is pure. The server is a deliberately small
//! HTTP/1.1 responder on tokio's `TcpListener`, with no server framework: `GET` only, one
//! request per connection (`Connection: close`), a request size limit, read and write
//! timeouts, and a bound on connections served at once.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// The default address of the endpoint (`[http] listen`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9184";

/// Largest request head accepted, in bytes; larger requests get 431.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request, and to read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 16;

/// The figures `/metrics` shows: a plain snapshot of the stages' counters. Counters
/// (`_total`) only grow from start; Prometheus derives rates (`rate(...[1m])`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Readings decoded from MQTT messages.
    pub readings_received: u64,
    /// Readings written to SQLite.
    pub readings_stored: u64,
    /// Messages that could not be decoded, by reason (`not_a_number`, `too_large`, …).
    pub decode_errors: Vec<(String, u64)>,
    /// Messages the broker accepted but the pipeline never received (the broker's
    /// buffer overran): published minus received.
    pub broker_lost: u64,
    /// JSON and line-protocol fields that were not numbers (strings, arrays): skipped,
    /// never an error.
    pub skipped_fields: u64,
    /// Items waiting in each bounded channel between stages.
    pub queues: Vec<QueueDepth>,
    /// The notification outbox, per channel.
    pub outbox: Vec<OutboxCounts>,
    /// The outputs' own figures ([`crate::store::Output::metrics`]), in their order.
    pub outputs: Vec<Sample>,
    /// The embedded broker's front: connections, refusals (empty with an external broker).
    pub broker: Vec<Sample>,
    /// The outputs' labelled families ([`crate::store::Output::families`]).
    pub families: Vec<Family>,
    /// Alerts currently firing, by severity (`info`, `warning`, `critical`).
    pub alerts_firing: Vec<(String, u64)>,
    /// Bytes this process caused to be written to storage (`write_bytes` of
    /// `/proc/self/io`, see [`disk_bytes_written`]): the SQLite database and its WAL are
    /// nearly all of it. `None` where the kernel does not say.
    pub disk_bytes_written: Option<u64>,
    /// Resident memory of the process, see [`resident_memory_bytes`].
    pub resident_memory_bytes: Option<u64>,
    /// Time since the service started.
    pub uptime: Duration,
}

/// Depth of one bounded channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueDepth {
    /// The channel, named after the stage that reads it (`readings` for the engine, then each output: `sqlite`, `influxdb`, …).
    pub queue: String,
    pub depth: u64,
    pub capacity: u64,
}

/// Notifications of one channel in the outbox.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxCounts {
    /// `email`, `telegram`, `webhook`, `mqtt`.
    pub channel: String,
    /// Waiting for a first attempt or a retry.
    pub pending: u64,
    /// Delivered since the service started (a counter).
    pub delivered: u64,
    /// Given up on after the last retry (in the outbox now).
    pub dead: u64,
}

/// A metric family of one sample, as an output reports it: `centinela_<output>_…`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The full name; a counter's ends in `_total`.
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub value: u64,
}

/// A metric family with labels (one sample per label set), as an output reports it:
/// the Kafka source's lag per partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub samples: Vec<(Vec<(&'static str, String)>, u64)>,
}

/// The Prometheus type of a [`Sample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Sample {
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Self {
            name,
            kind: Kind::Counter,
            help,
            value,
        }
    }

    pub fn gauge(name: &'static str, help: &'static str, value: u64) -> Self {
        Self {
            name,
            kind: Kind::Gauge,
            help,
            value,
        }
    }
}

/// The health of each stage, as `/healthz` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Health {
    pub stages: Vec<StageHealth>,
}

/// One stage: whether it is alive and doing its job, and a word on why.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageHealth {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl StageHealth {
    pub fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok,
            detail: detail.into(),
        }
    }
}

impl Health {
    /// True when every stage is ok (and vacuously when there are none).
    pub fn healthy(&self) -> bool {
        self.stages.iter().all(|s| s.ok)
    }
}

/// The `/healthz` answer: HTTP status (200 when every stage is ok, else 503) and JSON
/// body `{"healthy":bool,"stages":[{"name":…,"ok":…,"detail":…},…]}`.
pub fn render_health(health: &Health) -> (u16, String) {
    #[derive(Serialize)]
    struct Body<'a> {
        healthy: bool,
        stages: &'a [StageHealth],
    }
    let healthy = health.healthy();
    let body = serde_json::to_string(&Body {
        healthy,
        stages: &health.stages,
    })
    // Serializing plain strings and booleans cannot fail; keep a valid answer anyway.
    .unwrap_or_else(|_| format!("{{\"healthy\":{healthy},\"stages\":[]}}"));
    (if healthy { 200 } else { 503 }, body)
}

/// Escapes a label value for the Prometheus text format: `\`, `"` and newline.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes `# HELP` and `# TYPE` of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Renders `m` in the Prometheus text exposition format (version 0.0.4).
pub fn render_metrics(m: &Metrics) -> String {
    let mut o = String::with_capacity(4096);
    let o = &mut o;

    family(
        o,
        "centinela_readings_received_total",
        "counter",
        "Readings decoded from MQTT messages.",
    );
    sample(
        o,
        "centinela_readings_received_total",
        &[],
        m.readings_received,
    );
    family(
        o,
        "centinela_readings_stored_total",
        "counter",
        "Readings written to SQLite.",
    );
    sample(o, "centinela_readings_stored_total", &[], m.readings_stored);

    family(
        o,
        "centinela_decode_errors_total",
        "counter",
        "MQTT messages that could not be decoded, by reason.",
    );
    for (reason, n) in &m.decode_errors {
        sample(o, "centinela_decode_errors_total", &[("reason", reason)], n);
    }

    family(
        o,
        "centinela_skipped_fields_total",
        "counter",
        "Fields of device messages that were not numbers (strings, arrays): no reading, not an error.",
    );
    sample(o, "centinela_skipped_fields_total", &[], m.skipped_fields);

    family(
        o,
        "centinela_broker_lost_messages_total",
        "counter",
        "Messages the broker accepted that never reached the pipeline (its buffer overran).",
    );
    sample(
        o,
        "centinela_broker_lost_messages_total",
        &[],
        m.broker_lost,
    );

    family(
        o,
        "centinela_queue_depth",
        "gauge",
        "Items waiting in the channel in front of a stage.",
    );
    for q in &m.queues {
        sample(o, "centinela_queue_depth", &[("queue", &q.queue)], q.depth);
    }
    family(
        o,
        "centinela_queue_capacity",
        "gauge",
        "Capacity of the channel in front of a stage.",
    );
    for q in &m.queues {
        sample(
            o,
            "centinela_queue_capacity",
            &[("queue", &q.queue)],
            q.capacity,
        );
    }

    family(
        o,
        "centinela_outbox_pending",
        "gauge",
        "Notifications waiting for delivery, per channel.",
    );
    for c in &m.outbox {
        sample(
            o,
            "centinela_outbox_pending",
            &[("channel", &c.channel)],
            c.pending,
        );
    }
    family(
        o,
        "centinela_outbox_delivered_total",
        "counter",
        "Notifications delivered, per channel.",
    );
    for c in &m.outbox {
        sample(
            o,
            "centinela_outbox_delivered_total",
            &[("channel", &c.channel)],
            c.delivered,
        );
    }
    family(
        o,
        "centinela_outbox_dead",
        "gauge",
        "Notifications given up on after the last retry, per channel.",
    );
    for c in &m.outbox {
        sample(
            o,
            "centinela_outbox_dead",
            &[("channel", &c.channel)],
            c.dead,
        );
    }

    for x in m.outputs.iter().chain(&m.broker) {
        let kind = match x.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        family(o, x.name, kind, x.help);
        sample(o, x.name, &[], x.value);
    }
    for f in m.families.iter().filter(|f| !f.samples.is_empty()) {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        family(o, f.name, kind, f.help);
        for (labels, v) in &f.samples {
            let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            sample(o, f.name, &l, v);
        }
    }

    family(
        o,
        "centinela_alerts_firing",
        "gauge",
        "Alerts currently firing, by severity.",
    );
    for (severity, n) in &m.alerts_firing {
        sample(o, "centinela_alerts_firing", &[("severity", severity)], n);
    }

    if let Some(b) = m.disk_bytes_written {
        family(o, "centinela_disk_written_bytes_total", "counter", "Bytes the process caused to be written to storage (write_bytes of /proc/self/io), nearly all SQLite.");
        sample(o, "centinela_disk_written_bytes_total", &[], b);
    }
    if let Some(b) = m.resident_memory_bytes {
        family(
            o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        sample(o, "process_resident_memory_bytes", &[], b);
    }
    family(
        o,
        "centinela_uptime_seconds",
        "gauge",
        "Seconds since the service started.",
    );
    sample(
        o,
        "centinela_uptime_seconds",
        &[],
        format_args!("{:.3}", m.uptime.as_secs_f64()),
    );

    std::mem::take(o)
}

/// `write_bytes` of `/proc/self/io`: bytes this process caused to be sent to storage.
pub fn disk_bytes_written() -> Option<u64> {
    parse_proc_io_write_bytes(&std::fs::read_to_string("/proc/self/io").ok()?)
}

/// The `write_bytes:` field of a `/proc/<pid>/io` text.
pub fn parse_proc_io_write_bytes(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Resident memory of this process, from `VmRSS` in `/proc/self/status`.
pub fn resident_memory_bytes() -> Option<u64> {
    parse_proc_status_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// `VmRSS:   1234 kB` of a `/proc/<pid>/status` text, in bytes.
pub fn parse_proc_status_rss(text: &str) -> Option<u64> {
    let v = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Binds the endpoint's listener (port 0 picks a free one; see `local_addr`).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Binds `addr` and serves `/healthz` and `/metrics` until `shutdown` turns true (or its
/// sender is dropped). `snapshot` is called once per request.
pub async fn serve(
    addr: SocketAddr,
    snapshot: impl Fn() -> (Metrics, Health) + Send + Sync + 'static,
    shutdown: watch::Receiver<bool>,
) -> Result<(), HttpError> {
    let listener = bind(addr).await?;
    serve_on(listener, snapshot, shutdown).await;
    Ok(())
}

/// [`serve`] on a listener already bound.
pub async fn serve_on(
    listener: TcpListener,
    snapshot: impl Fn() -> (Metrics, Health) + Send + Sync + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    let snapshot = Arc::new(snapshot);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if let Ok(a) = listener.local_addr() {
        tracing::info!(addr = %a, "metrics and health endpoint listening");
    }
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "http accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "http: too many connections, closing");
                    continue;
                };
                let snapshot = snapshot.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &*snapshot).await {
                        tracing::debug!(%peer, error = %e, "http connection");
                    }
                    drop(permit);
                });
            }
        }
    }
}

/// A parsed request line, or the answer to give instead.
#[derive(Debug, PartialEq)]
enum Request<'a> {
    Get(&'a str),
    Refuse(u16, &'static str),
}

/// Reads the request head: `Ok(None)` when the client closed without sending one.
async fn read_head(stream: &mut TcpStream) -> io::Result<Result<Vec<u8>, u16>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Ok(buf));
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Ok(Err(431));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the end of the request",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_request(head: &[u8]) -> Request<'_> {
    let Ok(text) = std::str::from_utf8(head) else {
        return Request::Refuse(400, "bad request");
    };
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Refuse(400, "bad request");
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Refuse(505, "HTTP/1.x only");
    }
    if method != "GET" {
        return Request::Refuse(405, "GET only");
    }
    Request::Get(target.split(['?', '#']).next().unwrap_or(""))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// The whole answer, head and body, to one request head.
fn respond(head: Result<&[u8], u16>, snapshot: &(dyn Fn() -> (Metrics, Health) + Sync)) -> Vec<u8> {
    let (status, content_type, body) = match head.map(parse_request) {
        Err(status) => (
            status,
            "text/plain; charset=utf-8",
            "request too large\n".to_string(),
        ),
        Ok(Request::Refuse(status, why)) => {
            (status, "text/plain; charset=utf-8", format!("{why}\n"))
        }
        Ok(Request::Get("/metrics")) => {
            let (m, _) = snapshot();
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                render_metrics(&m),
            )
        }
        Ok(Request::Get("/healthz")) => {
            let (_, h) = snapshot();
            let (status, body) = render_health(&h);
            (status, "application/json", body)
        }
        Ok(Request::Get(_)) => (
            404,
            "text/plain; charset=utf-8",
            "not found: try /metrics or /healthz\n".to_string(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

async fn handle(
    mut stream: TcpStream,
    snapshot: &(dyn Fn() -> (Metrics, Health) + Sync),
) -> io::Result<()> {
    let answer = match tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => {
            let r =
                b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            r.to_vec()
        }
        Ok(head) => {
            let head = head?;
            respond(head.as_deref().map_err(|s| *s), snapshot)
        }
    };
    tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client too slow to read"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_metrics() -> Metrics {
        Metrics {
            families: Vec::new(),
            readings_received: 1200,
            readings_stored: 1100,
            decode_errors: vec![("not_a_number".into(), 3), ("too_large".into(), 1)],
            broker_lost: 7,
            skipped_fields: 4,
            queues: vec![QueueDepth {
                queue: "engine".into(),
                depth: 2,
                capacity: 64,
            }],
            outbox: vec![
                OutboxCounts {
                    channel: "email".into(),
                    pending: 1,
                    delivered: 9,
                    dead: 0,
                },
                OutboxCounts {
                    channel: "telegram".into(),
                    pending: 0,
                    delivered: 4,
                    dead: 2,
                },
            ],
            outputs: vec![
                Sample::counter(
                    "centinela_influx_points_written_total",
                    "Points InfluxDB acknowledged.",
                    40,
                ),
                Sample::gauge(
                    "centinela_influx_backlog_points",
                    "Points waiting in the durable InfluxDB backlog.",
                    10,
                ),
                Sample::counter(
                    "centinela_influx_points_rejected_total",
                    "Points InfluxDB refused; not retried.",
                    1,
                ),
            ],
            broker: vec![Sample::gauge(
                "centinela_broker_connections",
                "Client connections open on the embedded broker.",
                3,
            )],
            alerts_firing: vec![("critical".into(), 2), ("warning".into(), 0)],
            disk_bytes_written: Some(4096),
            resident_memory_bytes: Some(10 << 20),
            uptime: Duration::from_millis(61_500),
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn one_line_per_reason_channel_and_severity() {
        let text = render_metrics(&sample_metrics());
        let l = lines(&text);
        for want in [
            "centinela_readings_received_total 1200",
            "centinela_readings_stored_total 1100",
            "centinela_decode_errors_total{reason=\"not_a_number\"} 3",
            "centinela_decode_errors_total{reason=\"too_large\"} 1",
            "centinela_broker_lost_messages_total 7",
            "centinela_skipped_fields_total 4",
            "centinela_queue_depth{queue=\"engine\"} 2",
            "centinela_queue_capacity{queue=\"engine\"} 64",
            "centinela_outbox_pending{channel=\"email\"} 1",
            "centinela_outbox_delivered_total{channel=\"telegram\"} 4",
            "centinela_outbox_dead{channel=\"telegram\"} 2",
            "centinela_influx_backlog_points 10",
            "centinela_influx_points_rejected_total 1",
            "centinela_alerts_firing{severity=\"critical\"} 2",
            "centinela_alerts_firing{severity=\"warning\"} 0",
            "centinela_disk_written_bytes_total 4096",
            "process_resident_memory_bytes 10485760",
            "centinela_uptime_seconds 61.500",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
        assert_eq!(
            l.iter()
                .filter(|x| x.starts_with("centinela_decode_errors_total{"))
                .count(),
            2
        );
    }

    #[test]
    fn every_sample_follows_its_help_and_type() {
        let text = render_metrics(&sample_metrics());
        let mut declared: Vec<(String, String)> = Vec::new();
        let mut helped = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.insert(rest.split(' ').next().unwrap().to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(helped.contains(name), "TYPE before HELP for {name}");
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                assert!(
                    !declared.iter().any(|(n, _)| n == name),
                    "{name} declared twice"
                );
                declared.push((name.to_string(), kind.to_string()));
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let (last, kind) = declared.last().expect("sample before any TYPE");
                assert_eq!(name, last, "sample outside its family: {line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counter without _total: {name}");
                }
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
        let m = Metrics {
            decode_errors: vec![("bad \"json\"\\\n".into(), 1)],
            ..Metrics::default()
        };
        let text = render_metrics(&m);
        assert!(
            text.contains("centinela_decode_errors_total{reason=\"bad \\\"json\\\"\\\\\\n\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn optional_families_are_left_out() {
        let text = render_metrics(&Metrics::default());
        assert!(!text.contains("influx"), "{text}");
        assert!(!text.contains("process_resident_memory_bytes"), "{text}");
        assert!(text.contains("centinela_readings_received_total 0\n"));
    }

    #[test]
    fn health_is_200_only_when_every_stage_is_ok() {
        let mut h = Health {
            stages: vec![
                StageHealth::new("source", true, "connected"),
                StageHealth::new("sqlite", true, "last flush 0.4 s ago"),
            ],
        };
        let (status, body) = render_health(&h);
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["healthy"], true);
        assert_eq!(v["stages"][1]["name"], "sqlite");
        assert_eq!(v["stages"][1]["detail"], "last flush 0.4 s ago");

        h.stages.push(StageHealth::new(
            "influx",
            false,
            "down since 12:00: \"refused\"",
        ));
        let (status, body) = render_health(&h);
        assert_eq!(status, 503);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["healthy"], false);
        assert_eq!(v["stages"][2]["ok"], false);
        assert_eq!(v["stages"][2]["detail"], "down since 12:00: \"refused\"");
    }

    #[test]
    fn requests_are_parsed_strictly() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Get("/metrics")
        );
        assert_eq!(
            parse_request(b"GET /healthz?verbose=1 HTTP/1.0\r\n\r\n"),
            Request::Get("/healthz")
        );
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::Refuse(405, "GET only")
        );
        assert!(matches!(
            parse_request(b"GET /metrics\r\n\r\n"),
            Request::Refuse(400, _)
        ));
        assert!(matches!(
            parse_request(b"GET / SPDY/3\r\n\r\n"),
            Request::Refuse(505, _)
        ));
        assert!(matches!(
            parse_request(b"\xff\xfe\r\n\r\n"),
            Request::Refuse(400, _)
        ));
    }

    #[test]
    fn proc_files_parse() {
        let io = "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 0\nwrite_bytes: 81920\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_proc_io_write_bytes(io), Some(81920));
        assert_eq!(parse_proc_io_write_bytes("rchar: 1\n"), None);
        let status =
            "Name:\tcentinela\nVmHWM:\t  9000 kB\nVmRSS:\t    8192 kB\nRssAnon:\t 100 kB\n";
        assert_eq!(parse_proc_status_rss(status), Some(8192 * 1024));
        // This process: Linux has both files.
        assert!(resident_memory_bytes().unwrap() > 0);
        assert!(disk_bytes_written().is_some());
    }
}
