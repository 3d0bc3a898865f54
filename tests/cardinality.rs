//! A client that publishes to thousands of new topics: past `ingest.max_series` new
//! series are refused, counted and warned about, while the series already known go on
//! being stored and judged.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::http::{http_get, metric};
use support::mqtt::{free_port, Publisher};

const BIN: &str = env!("CARGO_BIN_EXE_centinela");
/// New names the hostile client publishes to.
const FLOOD: u64 = 64_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_new_names_past_max_series_is_refused_and_known_series_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let http = free_port();
    let db = dir.path().join("c.db");
    let log = dir.path().join("stderr.log");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"127.0.0.1:{port}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
             [ingest]\nmax_series = 20\n\
             [storage.sqlite]\npath = \"{}\"\nflush_interval = \"200ms\"\n[engine]\ntick = \"100ms\"\n\
             [[rules]]\nname = \"hot\"\nseries = \"gh/+/temperature\"\nkind = \"threshold\"\nabove = 30.0\nfor = \"2s\"\n",
            db.display()
        ),
    )
    .unwrap();
    let mut svc = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the service did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Ten greenhouse sensors are known first; one of them is hot, and its alert is
    // due two seconds later.
    let mut p = Publisher::connect(port, "sensors", None).await;
    for i in 0..10 {
        let v = if i == 3 { "31.5" } else { "20" };
        p.publish(&format!("sensors/gh/n{i}/temperature"), v).await;
    }
    p.wait_acked(10).await;
    let hot_since = Instant::now();
    // Then a client floods 64,000 new names.
    let mut flood = Publisher::connect(port, "flood", None).await;
    for i in 0..FLOOD {
        flood.publish(&format!("sensors/junk/{i}"), "1").await;
    }
    flood
        .wait_acked_within(FLOOD, Duration::from_secs(180))
        .await;
    // The known sensors go on, past the 2 s the hot one's alert waits for (a fast flood
    // can be over sooner).
    tokio::time::sleep_until((hot_since + Duration::from_millis(2500)).into()).await;
    for i in 0..10 {
        let v = if i == 3 { "31.5" } else { "21" };
        p.publish(&format!("sensors/gh/n{i}/temperature"), v).await;
    }
    p.wait_acked(20).await;

    let refused_metric = "centinela_decode_errors_total{reason=\"too_many_series\"}";
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        let m = http_get(http, "/metrics");
        // The flood's refusals come on their own connection, in no order with the rest.
        if metric(&m, "centinela_readings_received_total") == Some(30)
            && metric(&m, refused_metric) >= Some(FLOOD - 10)
        {
            break m;
        }
        assert!(Instant::now() < deadline, "readings not counted: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // 10 known + 10 of the flood fill the 20; the others are refused.
    assert_eq!(
        metric(&metrics, refused_metric),
        Some(FLOOD - 10),
        "{metrics}"
    );

    let _ = Command::new("kill")
        .args(["-TERM", &svc.id().to_string()])
        .status();
    assert_eq!(svc.wait().unwrap().code(), Some(0));

    let o = Command::new(BIN)
        .args(["readings", "--db", db.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let series: std::collections::BTreeSet<&str> =
        rows.iter().filter_map(|r| r["series"].as_str()).collect();
    assert_eq!(series.len(), 20, "{series:?}");
    let gh = rows
        .iter()
        .filter(|r| r["series"].as_str().unwrap().starts_with("gh/"))
        .count();
    assert_eq!(
        gh, 20,
        "every reading of the known sensors is stored: {text}"
    );

    // The hot sensor's timed alert fired through the flood.
    let o = Command::new(BIN)
        .args(["alerts", "--db", db.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let alerts = String::from_utf8_lossy(&o.stdout).into_owned();
    let firing = alerts
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|a| a["series"] == "gh/n3/temperature" && a["state"] == "firing");
    assert!(firing.is_some(), "the hot sensor's alert: {alerts}");

    // The journal names the limit, rate-limited rather than once per message.
    let log = std::fs::read_to_string(&log).unwrap();
    let warnings = log
        .lines()
        .filter(|l| l.contains("ingest.max_series"))
        .count();
    assert!(
        (1..=5).contains(&warnings),
        "{warnings} warnings about the limit:\n{log}"
    );
}
