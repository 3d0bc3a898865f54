//! What Prometheus and a health probe read from a running `centinela run`: the build,
//! the `process_*` figures, the flush, alert and delivery histograms, and `/healthz`
//! turning `degraded` (still 200) while a notification channel keeps failing, then ok
//! again. The real binary, a real MQTT publisher and a real webhook receiver. At the
//! end, with every family filled (readings, an alert, deliveries that failed and that
//! went through), the page passes `promtool check metrics` (Prometheus's own parser
//! and linter; Debian's package `prometheus`, .ci/install-ops.sh): without promtool
//! that check prints SKIPPED.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::http::{http_get, metric};
use support::mqtt::{free_port, Publisher};
use support::process::{service, wait_for, KillOnDrop};
use support::webhook::Receiver;

fn start_service(dir: &Path, port: u16, http: u16, url: &str) -> KillOnDrop {
    let config = dir.join("centinela.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [storage.sqlite]\npath = \"{}\"\nflush_interval = \"200ms\"\n\n\
             [engine]\ntick = \"100ms\"\n\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n\n\
             [[rules]]\nname = \"hot\"\nseries = \"gh/+/temperature\"\nkind = \"threshold\"\nabove = 30.0\nnotify = [\"webhook\"]\n\n\
             [notify.outbox]\npoll_interval = \"100ms\"\nbackoff_min = \"100ms\"\nbackoff_max = \"200ms\"\nfailing_after = \"1s\"\n\n\
             [notify.webhook]\nurl = \"{url}\"\n",
            dir.join("c.db").display()
        ),
    )
    .unwrap();
    KillOnDrop(
        service(&config)
            .env_remove("NOTIFY_SOCKET")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The body of `/healthz` as JSON, and its status code.
fn health(http: u16) -> (u16, Value) {
    let r = http_get(http, "/healthz");
    let status = r
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = r.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The value of the sample line that starts with `prefix ` (labels included).
fn labelled(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' ')?.parse().ok())
}

/// The body of an HTTP/1.1 response, de-chunked when it came in chunks.
fn body(response: &str) -> String {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or(("", ""));
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// What `promtool check metrics` says about `page` (exit status, output), or `None`
/// when promtool is not installed.
fn promtool_check(page: &str) -> Option<(bool, String)> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_build_the_process_and_latencies_and_healthz_degrades_with_a_channel() {
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    let (receiver, url) = Receiver::start().await;
    let _svc = start_service(dir.path(), port, http, &url);
    wait_for("the endpoint", 60, || {
        !http_get(http, "/healthz").is_empty()
    })
    .await;

    let mut p = Publisher::connect(port, "self-metrics", None).await;
    let now = centinela::model::now_ms();
    p.publish(
        "sensors/gh/n1/temperature",
        format!(r#"{{"value":35,"ts":{now}}}"#),
    )
    .await;
    p.wait_acked(1).await;
    wait_for("the firing alert delivered", 60, || receiver.count() == 1).await;

    // The reading reaches SQLite with the next flush (200 ms).
    wait_for("a flush", 60, || {
        metric(
            &http_get(http, "/metrics"),
            "centinela_sqlite_flush_seconds_count",
        ) >= Some(1)
    })
    .await;
    let page = http_get(http, "/metrics");
    let build = format!(
        "centinela_build_info{{version=\"{}\",",
        env!("CARGO_PKG_VERSION")
    );
    assert!(page.contains(&build), "{page}");
    assert!(metric(&page, "process_open_fds").unwrap() >= 5, "{page}");
    let start = labelled(&page, "process_start_time_seconds").unwrap();
    assert!(
        (start - now as f64 / 1000.0).abs() < 120.0,
        "{start} vs {now}"
    );
    assert!(labelled(&page, "process_cpu_seconds_total").unwrap() > 0.0);
    // The reading was stamped now: its alert left the engine well within 10 s.
    assert_eq!(
        metric(&page, "centinela_alert_latency_seconds_count"),
        Some(1),
        "{page}"
    );
    assert_eq!(
        labelled(&page, "centinela_alert_latency_seconds_bucket{le=\"10\"}"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        labelled(
            &page,
            "centinela_notification_delivery_seconds_count{channel=\"webhook\"}"
        ),
        Some(1.0),
        "{page}"
    );

    let (status, h) = health(http);
    assert_eq!((status, h["status"].as_str()), (200, Some("ok")), "{h}");
    let webhook = h["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "notify/webhook")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(webhook["ok"], true, "{h}");
    assert_eq!(webhook["essential"], false, "{h}");

    // The receiver fails: once the channel has failed for `failing_after`, the service
    // is degraded, says why, and still answers 200.
    receiver.set_failing(true);
    p.publish(
        "sensors/gh/n1/temperature",
        format!(r#"{{"value":20,"ts":{}}}"#, now + 1000),
    )
    .await;
    p.wait_acked(2).await;
    wait_for("healthz degraded", 60, || {
        health(http).1["status"] == "degraded"
    })
    .await;
    let (status, h) = health(http);
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["healthy"], false, "{h}");
    let problems = h["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("notify/webhook: ")),
        "{h}"
    );

    // It answers again: the resolved notification goes out and the channel is ok.
    receiver.set_failing(false);
    wait_for("healthz ok again", 60, || health(http).1["status"] == "ok").await;
    assert!(receiver.count() >= 2);

    // Everything a scrape can see now, through Prometheus's own checker.
    let page = body(&http_get(http, "/metrics"));
    for family in [
        "centinela_build_info",
        "centinela_alert_latency_seconds_bucket",
        "centinela_notification_delivery_seconds_bucket{channel=\"webhook\"",
        "centinela_sqlite_flush_seconds_count",
        "centinela_outbox_delivered_total{channel=\"webhook\"}",
        "centinela_alerts_firing",
        "process_start_time_seconds",
    ] {
        assert!(page.contains(family), "no {family} in\n{page}");
    }
    match promtool_check(&page) {
        None => eprintln!(
            "SKIPPED: promtool is not installed (package prometheus, .ci/install-ops.sh); /metrics was not linted"
        ),
        Some((ok, said)) => assert!(
            ok && said.trim().is_empty(),
            "promtool check metrics: {said}\n--- the page:\n{page}"
        ),
    }
}
