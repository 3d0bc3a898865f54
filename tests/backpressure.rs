//! A QoS 1 flood into the embedded broker with its smallest buffer: the broker front
//! holds the publishers back while the pipeline catches up, so every acknowledged
//! publish is stored and none is overwritten in the broker's log.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, Publish};
use rumqttc::mqttbytes::QoS;

use support::http::{http_get, metric};
use support::mqtt::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_centinela");
const PUBLISHERS: u64 = 4;
const EACH: u64 = 40_000;

/// A sensor gateway replaying its backlog: `EACH` QoS 1 publishes over 50 series
/// written as fast as TCP takes them, without waiting for acknowledgements. Returns
/// the number of PUBACKs the broker sent back.
fn flood(port: u16, k: u64) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = BytesMut::new();
        let mut connect = Connect::new(format!("flood-{k}"));
        connect.keep_alive = 120;
        connect.write(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");

        let mut r = s.try_clone().unwrap();
        let acks = std::thread::spawn(move || {
            // Only PUBACKs come back (4 bytes each: 0x40 2 pkid).
            let (mut got, mut chunk) = (0u64, vec![0u8; 64 * 1024]);
            let mut odd = 0;
            while got < EACH {
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let n = n + odd;
                        got += (n / 4) as u64;
                        odd = n % 4;
                    }
                }
            }
            got
        });
        buf.clear();
        for i in 0..EACH {
            let topic = format!("sensors/flood{k}/s{}/v", i % 50);
            let mut p = Publish::new(topic, QoS::AtLeastOnce, i.to_string());
            p.pkid = (i % 65_535 + 1) as u16;
            p.write(&mut buf).unwrap();
            if buf.len() > 64 * 1024 {
                s.write_all(&buf).unwrap();
                buf.clear();
            }
        }
        s.write_all(&buf).unwrap();
        acks.join().unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_flood_into_a_small_broker_buffer_is_held_back_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    let db = dir.path().join("c.db");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"127.0.0.1:{port}\"\nbuffer_mib = 1\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n\
             [storage.sqlite]\npath = \"{}\"\n",
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

    let floods: Vec<_> = (0..PUBLISHERS).map(|k| flood(port, k)).collect();
    let mut acked = 0;
    for f in floods {
        acked += tokio::task::spawn_blocking(move || f.join().unwrap())
            .await
            .unwrap();
    }
    assert_eq!(acked, PUBLISHERS * EACH, "every publish acknowledged");

    let deadline = Instant::now() + Duration::from_secs(120);
    let text = loop {
        let text = http_get(http, "/metrics");
        if metric(&text, "centinela_readings_stored_total") == Some(acked) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "not every acknowledged publish was stored: {:?} of {acked} stored, {:?} lost in \
             the broker",
            metric(&text, "centinela_readings_stored_total"),
            metric(&text, "centinela_broker_lost_messages_total"),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        metric(&text, "centinela_broker_lost_messages_total"),
        Some(0)
    );
    // The flood was more than the 1 MiB buffer holds: the publishers were held back.
    assert!(
        metric(&text, "centinela_broker_held_back_total").unwrap_or(0) > 0,
        "{}",
        text.lines()
            .filter(|l| l.starts_with("centinela_broker"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let _ = Command::new("kill")
        .args(["-TERM", &svc.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || svc.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
