//! The `centinela` binary as a user runs it: exit codes, output formats, a service
//! stopped by SIGTERM and one killed with SIGKILL and restarted.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::mqtt::{free_port, Publisher};
use support::process::{centinela, start_service, stderr, stdout, BIN};

fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let path = dir.join("centinela.toml");
    let text = format!(
        "[broker]\nlisten = \"127.0.0.1:{port}\"\n\n[storage.sqlite]\npath = \"{}\"\nflush_interval = \"200ms\"\n\n[engine]\ntick = \"100ms\"\n\n{extra}",
        dir.join("c.db").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

fn alerts_json(db: &Path) -> Vec<serde_json::Value> {
    let o = centinela(&["alerts", "--db", db.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn validate_exits_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[ingest]\nprefix = \"sensors\"\n\n[[rules]]\nname = \"hot\"\nseries = \"#\"\nkind = \"threshold\"\nabove = 30.0\nclear = 35.0\n").unwrap();
    let o = centinela(&["validate", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{}:9:9: rules[0].clear:", path.display())),
        "{err}"
    );

    std::fs::write(
        &path,
        "[storage.sqlite]\nflush_interval = \"1s\"\nretention = \"30d\"\n",
    )
    .unwrap();
    let o = centinela(&["validate", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("ok: "));
}

#[test]
fn a_missing_database_is_named_once_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gone").join("centinela.db");
    for cmd in ["readings", "alerts"] {
        let o = centinela(&[cmd, "--db", db.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{cmd}");
        let err = stderr(&o);
        assert_eq!(err.matches(db.to_str().unwrap()).count(), 1, "{cmd}: {err}");
        assert!(err.starts_with("error: no database at "), "{cmd}: {err}");
        assert!(err.contains("--data-dir DIR"), "{cmd}: {err}");
        assert!(!err.contains("no such file: "), "{cmd}: {err}");
    }
}

#[test]
fn config_prints_the_annotated_default_which_validates() {
    let o = centinela(&["config"]);
    assert!(o.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.toml");
    std::fs::write(&path, &o.stdout).unwrap();
    assert!(stdout(&o).contains("[storage.sqlite]"));
    assert_eq!(
        centinela(&["validate", "--config", path.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn replay_of_a_csv_prints_transitions_as_json_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "[[rules]]\nname = \"hot\"\nseries = \"gh/+/t\"\nkind = \"threshold\"\nabove = 30.0\nclear = 28.0\nseverity = \"critical\"\n");
    let csv = dir.path().join("r.csv");
    std::fs::write(
        &csv,
        "series,ts,value\ngh/a/t,2026-11-20T10:00:00Z,25\ngh/a/t,2026-11-20T10:01:00Z,31.5\ngh/a/t,1795169040000,29\ngh/a/t,2026-11-20T10:05:00Z,27\n",
    )
    .unwrap();
    let o = centinela(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", stdout(&o));
    assert_eq!(lines[0]["state"], "firing");
    assert_eq!(lines[0]["rule"], "hot");
    assert_eq!(lines[0]["series"], "gh/a/t");
    assert_eq!(lines[0]["severity"], "critical");
    assert_eq!(lines[0]["value"], 31.5);
    assert_eq!(lines[0]["ts"], "2026-11-20T10:01:00.000Z");
    assert_eq!(lines[1]["state"], "resolved");
    assert_eq!(lines[1]["ts"], "2026-11-20T10:05:00.000Z");

    let o = centinela(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    let text = stdout(&o);
    assert!(text.contains("hot"), "{text}");
    assert!(text.contains("Replayed 4 readings of 1 series"), "{text}");

    std::fs::write(&csv, "series,ts,value\ngh/a/t,yesterday,25\n").unwrap();
    let o = centinela(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("r.csv:2"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_everything_and_readings_prints_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let mut svc = start_service(&config, port);
    let mut p = Publisher::connect(port, "cli-test", None).await;
    let t0 = support::clock::past_t0();
    for i in 0..50 {
        p.publish(
            "sensors/lab/node7",
            format!(r#"{{"humidity":{}.5,"ts":{}}}"#, 40 + i, t0 + i * 1000),
        )
        .await;
    }
    p.wait_acked(50).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal(&svc, "-TERM");
    let status = svc.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    let db = dir.path().join("c.db");
    let o = centinela(&[
        "readings",
        "--db",
        db.to_str().unwrap(),
        "--series",
        "lab/+/humidity",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 50);
    assert_eq!(
        lines[0],
        format!(
            r#"{{"series":"lab/node7/humidity","ts":"{}","value":40.5}}"#,
            centinela::model::format_ts(t0)
        )
    );
    let o = centinela(&["readings", "--db", db.to_str().unwrap(), "--csv"]);
    let csv = stdout(&o);
    assert!(
        csv.starts_with(&format!(
            "series,ts,value\nlab/node7/humidity,{},40.5\n",
            centinela::model::format_ts(t0)
        )),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_that_connect_publish_and_disconnect_leave_no_error_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A rule, so start-up has nothing to warn about.
    let rule = "[[rules]]\nname = \"dry\"\nseries = \"garden/+/moisture\"\nkind = \"threshold\"\nbelow = 5.0\n";
    let config = write_config(dir.path(), port, rule);
    let mut svc = start_service(&config, port);
    // Battery sensors wake, connect, publish and disconnect (DISCONNECT, then close),
    // as mosquitto_pub does.
    for i in 0..3u8 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&centinela::bench::connect_packet(&format!("sleepy-{i}")))
            .unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
        let mut publish = Vec::new();
        let payload = format!("{}", 30 + i);
        centinela::bench::put_publish(
            &mut publish,
            "sensors/garden/node1/moisture",
            payload.as_bytes(),
        );
        s.write_all(&publish).unwrap();
        s.write_all(&[0xe0, 0]).unwrap();
        drop(s);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&svc, "-TERM");
    assert_eq!(svc.wait().unwrap().code(), Some(0));
    let mut log = String::new();
    use std::io::Read;
    svc.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(!log.contains("ERROR"), "{log}");
    assert!(!log.contains("WARN"), "{log}");
    let db = dir.path().join("c.db");
    let o = centinela(&["readings", "--db", db.to_str().unwrap(), "--csv"]);
    assert_eq!(stdout(&o).lines().count(), 4, "{}", stdout(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alert_survives_kill_9_and_is_not_announced_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let rules = "[[rules]]\nname = \"hot\"\nseries = \"gh/+/temperature\"\nkind = \"threshold\"\nabove = 30.0\nclear = 28.0\n\n\
                 [[rules]]\nname = \"slow\"\nseries = \"gh/+/humidity\"\nkind = \"threshold\"\nabove = 80.0\nfor = \"1h\"\n";
    let config = write_config(dir.path(), port, rules);
    let db = dir.path().join("c.db");
    let t0 = support::clock::past_t0();

    let mut svc = start_service(&config, port);
    let mut p = Publisher::connect(port, "kill-test", None).await;
    p.publish(
        "sensors/gh/n1/temperature",
        format!(r#"{{"value":31,"ts":{t0}}}"#),
    )
    .await;
    p.publish(
        "sensors/gh/n1/humidity",
        format!(r#"{{"value":85,"ts":{t0}}}"#),
    )
    .await;
    p.wait_acked(2).await;
    wait_until("firing and pending in the history", || {
        alerts_json(&db).len() == 2
    })
    .await;
    // Give the state a moment to reach the disk with the events (same transaction).
    signal(&svc, "-KILL");
    svc.wait().unwrap();
    drop(p);

    let mut svc = start_service(&config, port);
    let mut p = Publisher::connect(port, "kill-test-2", None).await;
    // Still hot: no new firing event. Humidity one hour after the pending start fires:
    // the pending start survived the restart.
    p.publish(
        "sensors/gh/n1/temperature",
        format!(r#"{{"value":32,"ts":{}}}"#, t0 + 60_000),
    )
    .await;
    p.publish(
        "sensors/gh/n1/humidity",
        format!(r#"{{"value":86,"ts":{}}}"#, t0 + 3_600_000),
    )
    .await;
    p.publish(
        "sensors/gh/n1/temperature",
        format!(r#"{{"value":27,"ts":{}}}"#, t0 + 3_700_000),
    )
    .await;
    p.wait_acked(3).await;
    wait_until("resolved and slow firing", || alerts_json(&db).len() == 4).await;
    signal(&svc, "-TERM");
    assert_eq!(svc.wait().unwrap().code(), Some(0));

    let events: Vec<(String, String)> = alerts_json(&db)
        .iter()
        .map(|e| {
            (
                e["rule"].as_str().unwrap().to_string(),
                e["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let hot: Vec<&str> = events
        .iter()
        .filter(|e| e.0 == "hot")
        .map(|e| e.1.as_str())
        .collect();
    assert_eq!(hot, ["firing", "resolved"], "{events:?}");
    let slow: Vec<&str> = events
        .iter()
        .filter(|e| e.0 == "slow")
        .map(|e| e.1.as_str())
        .collect();
    assert_eq!(slow, ["pending", "firing"], "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rules_keeping_alert_state_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let rule = |above: f64| {
        format!("[[rules]]\nname = \"hot\"\nseries = \"gh/+/temperature\"\nkind = \"threshold\"\nabove = {above}\n")
    };
    let config = write_config(dir.path(), port, &rule(30.0));
    let db = dir.path().join("c.db");
    let mut svc = start_service(&config, port);
    let mut p = Publisher::connect(port, "hup-test", None).await;
    let t0 = support::clock::past_t0();
    let send = |i: i64, v: f64| format!(r#"{{"value":{v},"ts":{}}}"#, t0 + i * 1000);
    p.publish("sensors/gh/n1/temperature", send(0, 35.0)).await;
    p.wait_acked(1).await;
    wait_until("firing", || alerts_json(&db).len() == 1).await;

    // A broken file: the running rules stay.
    std::fs::write(&config, "[[rules]]\nname = \"hot\"\n").unwrap();
    signal(&svc, "-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A valid one with a higher threshold: the firing alert is kept (no second firing)
    // and resolves under the new threshold.
    std::fs::write(
        &config,
        std::fs::read_to_string(write_config(dir.path(), port, &rule(40.0))).unwrap(),
    )
    .unwrap();
    signal(&svc, "-HUP");
    // The reload lands between two readings; on a busy machine it may take a moment,
    // so keep sending 36 (hot under the old rule, not under the new one) until the
    // alert resolves.
    let mut sent = 1;
    for i in 1..=50 {
        p.publish("sensors/gh/n1/temperature", send(i, 36.0)).await;
        sent += 1;
        p.wait_acked(sent).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if alerts_json(&db).len() >= 2 {
            break;
        }
    }
    wait_until("resolved under the new threshold", || {
        alerts_json(&db).len() == 2
    })
    .await;
    signal(&svc, "-TERM");
    assert_eq!(svc.wait().unwrap().code(), Some(0));
    let states: Vec<String> = alerts_json(&db)
        .iter()
        .map(|e| e["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["firing", "resolved"]);
    let mut log = String::new();
    use std::io::Read;
    svc.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("keeping the running configuration"), "{log}");
    assert!(log.contains("rules reloaded"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_tells_systemd_and_serves_metrics_and_health() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let http_port = free_port();
    let config = write_config(
        dir.path(),
        port,
        &format!("[http]\nlisten = \"127.0.0.1:{http_port}\"\n"),
    );
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut svc = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    let mut p = Publisher::connect(port, "metrics-test", None).await;
    p.publish("sensors/a/b/c", "1.5").await;
    p.publish("sensors/a/b/c", "warm").await;
    p.wait_acked(2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", http_port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut metrics = get("/metrics");
    while !metrics.contains("centinela_readings_received_total 1\n") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = get("/metrics");
    }
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("centinela_readings_received_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("centinela_decode_errors_total{reason=\"not_a_number\"} 1\n"),
        "{metrics}"
    );
    // The embedded broker's front: the one sensor connected, nothing refused.
    assert!(
        metrics.contains("centinela_broker_connections 1\n")
            && metrics.contains("centinela_broker_refused_logins_total 0\n"),
        "{metrics}"
    );
    // A topic name with a wildcard closes its connection and is counted.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // CONNECT (MQTT 3.1.1, clean session, keepalive 30, client id "raw").
    raw.write_all(&[
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 3, b'r', b'a', b'w',
    ])
    .unwrap();
    let mut ack = [0u8; 4];
    raw.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0], "CONNACK");
    // PUBLISH QoS 0 to "a/#".
    raw.write_all(&[0x30, 6, 0, 3, b'a', b'/', b'#', b'1'])
        .unwrap();
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !metrics.contains("centinela_broker_bad_topics_total 1\n") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = get("/metrics");
    }
    assert!(
        metrics.contains("centinela_broker_bad_topics_total 1\n"),
        "{metrics}"
    );
    let health = get("/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"engine\""), "{health}");

    signal(&svc, "-TERM");
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1");
    assert_eq!(svc.wait().unwrap().code(), Some(0));
}

#[test]
fn demo_says_what_it_stored_and_the_database_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let listen = format!("127.0.0.1:{}", free_port());
    let o = centinela(&[
        "demo",
        "--headless",
        "--duration",
        "4s",
        "--listen",
        &listen,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = stderr(&o);
    let line = said
        .lines()
        .find(|l| l.starts_with("centinela demo: stored "))
        .unwrap_or_else(|| panic!("no summary line in\n{said}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    // centinela demo: stored N readings of S series and A alert events in DB
    let (n, s): (u64, u64) = (words[3].parse().unwrap(), words[6].parse().unwrap());
    assert!(n > 0 && s > 0, "{line}");
    // The database it names holds exactly that many readings.
    let db = data.join("centinela.db");
    let o = centinela(&[
        "readings",
        "--db",
        db.to_str().unwrap(),
        "--since",
        "1h",
        "--csv",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = stdout(&o).lines().skip(1).count() as u64;
    assert_eq!(rows, n, "{line}");
}
