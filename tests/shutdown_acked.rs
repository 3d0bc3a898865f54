//! SIGTERM while sensors publish at QoS 1: every publish the broker acknowledged is
//! stored; the ones it did not acknowledge are the sensors' to send again.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

mod support;

use support::mqtt::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_centinela");

/// Publishes 0, 1, 2, … to `topic` one at a time (one QoS 1 publish in flight), so
/// `n` acknowledgements mean the values 0..n were acknowledged. Returns the count.
fn sensor(port: u16, id: String, topic: String) -> tokio::sync::watch::Receiver<u64> {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(1);
    let (client, mut ev) = AsyncClient::new(opts, 64);
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        for i in 0..1_000_000u64 {
            if client
                .publish(topic.as_str(), QoS::AtLeastOnce, false, i.to_string())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    n += 1;
                    let _ = tx.send(n);
                }
                Ok(_) => {}
                // The service is gone: what was acknowledged is counted.
                Err(_) => break,
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_stores_every_acknowledged_publish() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = dir.path().join("c.db");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"127.0.0.1:{port}\"\n[storage.sqlite]\npath = \"{}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let mut svc = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the service did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }

    let sensors: Vec<_> = (0..3)
        .map(|k| {
            (
                format!("p{k}/v"),
                sensor(port, format!("sensor-{k}"), format!("sensors/p{k}/v")),
            )
        })
        .collect();
    // Mid-stream: every sensor has had publishes acknowledged, and goes on.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sensors.iter().any(|(_, acked)| *acked.borrow() < 200) {
        assert!(
            Instant::now() < deadline,
            "the sensors were not acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &svc.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || svc.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // The sensors' event loops have seen the connection go.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let o = Command::new(BIN)
        .args(["readings", "--db", db.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    for (series, acked) in &sensors {
        let acked = *acked.borrow();
        let stored: BTreeSet<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["series"] == series.as_str())
            .map(|r| r["value"].as_f64().unwrap() as u64)
            .collect();
        let missing: Vec<u64> = (0..acked).filter(|v| !stored.contains(v)).collect();
        assert!(
            missing.is_empty(),
            "{series}: {} of {acked} acknowledged publishes not stored, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
}
