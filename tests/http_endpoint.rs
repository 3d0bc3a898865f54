//! The `/metrics` and `/healthz` endpoint over real TCP on a free loopback port, asked
//! the way Prometheus, curl and a load balancer ask: what they read, status codes, and
//! that the server stops when told to.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use centinela::http::{self, Health, Metrics, OutboxCounts, StageHealth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Server {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    influx_ok: Arc<AtomicBool>,
    sqlite_ok: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), http::HttpError>>,
}

async fn start() -> Server {
    let addr = free_addr();
    let received = Arc::new(AtomicU64::new(0));
    let influx_ok = Arc::new(AtomicBool::new(true));
    let sqlite_ok = Arc::new(AtomicBool::new(true));
    let (r, ok, db_ok) = (received.clone(), influx_ok.clone(), sqlite_ok.clone());
    let (stop, rx) = watch::channel(false);
    let snapshot = move || {
        let m = Metrics {
            readings_received: r.load(Ordering::SeqCst),
            decode_errors: vec![("not_a_number".into(), 2), ("bad \"json\"".into(), 1)],
            outbox: vec![OutboxCounts {
                channel: "telegram".into(),
                pending: 3,
                delivered: 10,
                dead: 1,
            }],
            disk_bytes_written: http::disk_bytes_written(),
            resident_memory_bytes: http::resident_memory_bytes(),
            ..Metrics::default()
        };
        let h = Health {
            stages: vec![
                StageHealth::essential("source", true, "embedded broker"),
                StageHealth::new("influx", ok.load(Ordering::SeqCst), "connection refused"),
                StageHealth::essential("sqlite", db_ok.load(Ordering::SeqCst), "disk full"),
            ],
        };
        (m, h)
    };
    let task = tokio::spawn(http::serve(addr, snapshot, rx));
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Server {
        addr,
        received,
        influx_ok,
        sqlite_ok,
        stop,
        task,
    }
}

/// Sends `request` as is and returns the whole answer (the server closes after it).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text_format() {
    let server = start().await;
    server.received.store(4321, Ordering::SeqCst);
    let resp = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let body = resp.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    for want in [
        "# TYPE centinela_readings_received_total counter",
        "centinela_readings_received_total 4321",
        "centinela_decode_errors_total{reason=\"not_a_number\"} 2",
        "centinela_decode_errors_total{reason=\"bad \\\"json\\\"\"} 1",
        "centinela_outbox_pending{channel=\"telegram\"} 3",
        "centinela_outbox_dead{channel=\"telegram\"} 1",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in\n{body}");
    }
    // The process figures come from /proc of this very process.
    let rss: f64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .expect("rss line")
        .parse()
        .unwrap();
    assert!(rss > 1e6, "{rss}");
    assert!(
        body.contains("\ncentinela_disk_written_bytes_total "),
        "{body}"
    );

    // Each request takes a fresh snapshot.
    server.received.store(5000, Ordering::SeqCst);
    let body = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("\ncentinela_readings_received_total 5000\n"),
        "{body}"
    );
    server.stop.send(true).unwrap();
}

#[tokio::test]
async fn healthz_is_degraded_while_influx_is_down_and_503_while_sqlite_is() {
    let server = start().await;
    let url = format!("http://{}/healthz", server.addr);
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(v["healthy"], true);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["stages"][0]["name"], "source");

    // InfluxDB down: the stream goes on without it, so a probe gets 200 and the reason.
    server.influx_ok.store(false, Ordering::SeqCst);
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(v["healthy"], false);
    assert_eq!(v["status"], "degraded");
    assert_eq!(v["problems"][0], "influx: connection refused");
    assert_eq!(v["stages"][1]["name"], "influx");
    assert_eq!(v["stages"][1]["ok"], false);
    assert_eq!(v["stages"][1]["detail"], "connection refused");

    // SQLite down: the service is down.
    server.sqlite_ok.store(false, Ordering::SeqCst);
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 503);
    let v: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(v["status"], "down");
    assert_eq!(v["problems"].as_array().unwrap().len(), 2, "{v}");
    server.stop.send(true).unwrap();
}

#[tokio::test]
async fn other_paths_methods_and_oversized_requests_are_refused() {
    let server = start().await;
    let a = server.addr;
    let r = raw(a, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    assert!(r.contains("Connection: close\r\n"), "{r}");
    let r = raw(a, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
    assert!(r.contains("Allow: GET\r\n"), "{r}");
    let r = raw(a, b"hello\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    let r = raw(a, &big).await;
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    // A query string does not change the path; an HTTP/1.0 client gets a 1.0 answer.
    let r = raw(a, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.0 200 "), "{r}");
    server.stop.send(true).unwrap();
}

#[tokio::test]
async fn serve_returns_on_shutdown_and_frees_the_port() {
    let server = start().await;
    server.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("serve did not return")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(server.addr).await.is_err());
    // The address can be bound again (a restart or a reload).
    std::net::TcpListener::bind(server.addr).unwrap();
}

#[tokio::test]
async fn a_taken_address_is_an_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_stop, rx) = watch::channel(false);
    let e = http::serve(addr, || (Metrics::default(), Health::default()), rx)
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}
