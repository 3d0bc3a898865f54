//! The external-broker source against a real Mosquitto: MQTT 5 (`protocol = "v5"`)
//! besides the default 3.1.1, and manual acknowledgements: a QoS 1 burst published
//! just before a SIGTERM is stored completely once the service starts again, because
//! what it had not handed on was never acknowledged and the broker kept it in the
//! persistent session.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::mqtt::{free_port, Mosquitto, Publisher};

const BIN: &str = env!("CARGO_BIN_EXE_centinela");

fn config(dir: &Path, name: &str, port: u16, protocol: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[broker]\nmode = \"external\"\nurl = \"mqtt://127.0.0.1:{port}\"\n\
             protocol = \"{protocol}\"\nclient_id = \"centinela-{name}\"\n\
             [storage.sqlite]\npath = \"{}\"\nflush_interval = \"200ms\"\n",
            dir.join(format!("{name}.db")).display()
        ),
    )
    .unwrap();
    path
}

/// `centinela run`, its stderr lines sent to a channel.
fn run(config: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("centinela runs");
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_line(rx: &mpsc::Receiver<String>, want: &str, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(want) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    panic!("no line with {want:?}; it said:\n{}", seen.join("\n"));
}

/// SIGTERM, and the exit code.
fn stop(child: &mut Child) -> Option<i32> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            Instant::now() < deadline,
            "centinela did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many times each value of `series` is stored.
fn stored(db: &Path, series: &str) -> BTreeMap<u64, u32> {
    let out = Command::new(BIN)
        .args(["readings", "--json", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["series"] == series {
            *counts
                .entry(v["value"].as_f64().unwrap() as u64)
                .or_insert(0) += 1;
        }
    }
    counts
}

/// Mosquitto logs each connection with the protocol its client spoke:
/// `New client connected from … as ID (p5, c0, k30)` (p4 is 3.1.1, p5 is MQTT 5).
fn protocol_in_log(log: &Path, client_id: &str) -> Option<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .filter(|l| l.contains(&format!(" as {client_id} (")))
        .filter_map(|l| l.split(&format!(" as {client_id} (")).nth(1))
        .filter_map(|rest| rest.split(',').next())
        .map(str::to_string)
        .next()
}

fn mosquitto(dir: &Path, port: u16) -> Option<Mosquitto> {
    // A larger in-flight window than Mosquitto's default 20: more messages sit in the
    // client's buffers when the stop comes, which is the window manual acks close.
    let extra = format!(
        "max_inflight_messages 1000\nlog_dest file {}/mosquitto.log\nlog_type all\n",
        dir.display()
    );
    let m = Mosquitto::start_with(dir, port, None, &extra);
    if m.is_none() {
        eprintln!("SKIPPED: mosquitto is not installed (.ci/run installs it)");
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_arrive_over_mqtt_5() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let Some(_mosq) = mosquitto(d, port) else {
        return;
    };
    let cfg = config(d, "v5", port, "v5");
    let (mut svc, rx) = run(&cfg);
    let line = wait_line(&rx, "connected to the MQTT broker", &mut svc);
    assert!(
        line.contains("protocol=\"5\"") || line.contains("protocol=5"),
        "{line}"
    );
    assert_eq!(
        protocol_in_log(&d.join("mosquitto.log"), "centinela-v5").as_deref(),
        Some("p5"),
        "Mosquitto saw MQTT 5"
    );
    // Subscriptions follow the CONNACK: wait until a probe goes through.
    let mut publisher = Publisher::connect(port, "sensor-v5", None).await;
    let db = d.join("v5.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probes = 0;
    while stored(&db, "lab/probe/v").is_empty() {
        assert!(Instant::now() < deadline, "the probe was not stored");
        publisher.publish("sensors/lab/probe/v", "1").await;
        probes += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for i in 1..=20 {
        publisher
            .publish("sensors/lab/node5/temperature", format!("{i}"))
            .await;
    }
    publisher
        .publish("sensors/lab/node5/json", r#"{"humidity":40.5,"co2":612}"#)
        .await;
    publisher.wait_acked(21 + probes).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored(&db, "lab/node5/temperature").len() < 20
        || stored(&db, "lab/node5/json/co2").is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "readings over MQTT 5 not stored: {:?}",
            stored(&db, "lab/node5/temperature")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stop(&mut svc), Some(0));
    let got = stored(&db, "lab/node5/temperature");
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    assert!(got.values().all(|&n| n == 1), "each once: {got:?}");
    assert_eq!(
        stored(&db, "lab/node5/json/co2").keys().collect::<Vec<_>>(),
        [&612]
    );
}

/// A QoS 1 burst with a SIGTERM halfway through it, then a second start with the same
/// client id: every value is stored, once.
async fn a_burst_before_sigterm_is_stored_whole_after_a_restart(protocol: &str) {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let Some(_mosq) = mosquitto(d, port) else {
        return;
    };
    let cfg = config(d, "acks", port, protocol);
    let db = d.join("acks.db");
    let (mut svc, rx) = run(&cfg);
    wait_line(&rx, "connected to the MQTT broker", &mut svc);
    let mut publisher = Publisher::connect(port, "burst", None).await;
    // The subscription is in place once a probe is stored.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probes = 0;
    while stored(&db, "burst/probe/v").is_empty() {
        assert!(Instant::now() < deadline, "the probe was not stored");
        publisher.publish("sensors/burst/probe/v", "1").await;
        probes += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // SIGTERM halfway through the burst: the service is reading flat out then.
    let client = publisher.client.clone();
    let burst = tokio::spawn(async move {
        for i in 0..N {
            client
                .publish(
                    "sensors/burst/x/v",
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    i.to_string(),
                )
                .await
                .unwrap();
        }
    });
    publisher
        .wait_acked_within(probes + N / 2, Duration::from_secs(60))
        .await;
    assert_eq!(stop(&mut svc), Some(0), "a clean stop");
    burst.await.unwrap();
    publisher
        .wait_acked_within(N + probes, Duration::from_secs(60))
        .await;
    let first = stored(&db, "burst/x/v").len();
    let first_max = stored(&db, "burst/x/v").keys().last().copied();
    let said: Vec<String> = rx.try_iter().collect();

    // The broker delivers what was not acknowledged to the same session.
    let (mut svc, rx) = run(&cfg);
    wait_line(&rx, "connected to the MQTT broker", &mut svc);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = stored(&db, "burst/x/v").len() as u64;
        if n == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{protocol}: {n} of {N} values stored after the restart ({first} before it)"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(stop(&mut svc), Some(0));
    let got = stored(&db, "burst/x/v");
    let missing: Vec<u64> = (0..N).filter(|v| !got.contains_key(v)).take(10).collect();
    assert!(missing.is_empty(), "{protocol}: missing e.g. {missing:?}");
    let twice: Vec<_> = got.iter().filter(|(_, &n)| n > 1).take(10).collect();
    assert!(
        twice.is_empty(),
        "{protocol}: {} values stored more than once, e.g. {twice:?}; {first} stored by the first run, max {:?}; the first run said:\n{}",
        got.values().filter(|&&n| n > 1).count(),
        first_max,
        said.join("\n")
    );
    eprintln!(
        "{protocol}: {first} of {N} stored before the SIGTERM (sent halfway), the other {} after the restart",
        N as usize - first
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_burst_survives_sigterm_with_mqtt_3_1_1() {
    a_burst_before_sigterm_is_stored_whole_after_a_restart("v3.1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_burst_survives_sigterm_with_mqtt_5() {
    a_burst_before_sigterm_is_stored_whole_after_a_restart("v5").await;
}
