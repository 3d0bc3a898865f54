//! The core stream end to end: a real MQTT client over TCP → broker → decode →
//! SQLite, with the embedded broker and with a real Mosquitto.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use centinela::config::{BrokerMode, Config};
use centinela::service::{Options, Service};
use centinela::store::sqlite;
use support::mqtt::{free_port, Mosquitto, Publisher};
use support::process::wait_for;

fn config(port: u16) -> Config {
    let mut cfg = Config::default();
    cfg.broker.listen = format!("127.0.0.1:{port}").parse().unwrap();
    cfg.broker.max_payload = 4096;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_published_over_tcp_land_in_sqlite_and_bad_ones_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = dir.path().join("c.db");
    let svc = Service::start(
        config(port),
        Options {
            db_path: Some(db.clone()),
        },
    )
    .await
    .unwrap();

    // Timestamps of a minute ago: older than the retention would be refused.
    let t = centinela::model::now_ms() / 1000 * 1000 - 60_000;
    let t_rfc = chrono::DateTime::from_timestamp_millis(t)
        .unwrap()
        .to_rfc3339();
    let mut p = Publisher::connect(port, "sensor-1", None).await;
    p.publish("sensors/greenhouse/node1/temperature", "21.5")
        .await;
    p.publish(
        "sensors/greenhouse/node1/temperature",
        format!(r#"{{"value":22.0,"ts":{t},"unit":"°C"}}"#),
    )
    .await;
    p.publish(
        "sensors/lab/node7",
        format!(r#"{{"humidity":40.5,"co2":612,"ts":"{t_rfc}"}}"#),
    )
    .await;
    // Bad input of every kind, between good readings: counted, never a stop.
    p.publish("sensors/greenhouse/node1/temperature", "warm")
        .await;
    p.publish("sensors/greenhouse/node1/temperature", "NaN")
        .await;
    p.publish(
        "sensors/greenhouse/node1/temperature",
        vec![0xff, 0xfe, 0x31],
    )
    .await;
    p.publish("sensors/greenhouse/node1/temperature", vec![b'1'; 5000])
        .await;
    p.publish("sensors/greenhouse/node1/temperature", r#"{"value":1"#)
        .await;
    p.publish("elsewhere/node1/temperature", "1").await;
    for i in 0..100 {
        p.publish(
            "sensors/greenhouse/node2/temperature",
            format!("{}", 10.0 + i as f64 / 10.0),
        )
        .await;
    }
    p.wait_acked(109).await;

    let stats = svc.source_stats.clone();
    // "elsewhere/…" is outside the subscription: the broker never hands it over.
    wait_for("104 readings and 5 errors", 20, || {
        stats.readings.load(Ordering::Relaxed) == 104 && stats.errors_total() == 5
    })
    .await;
    let by_reason: std::collections::HashMap<_, _> = stats.errors_by_reason().into_iter().collect();
    assert_eq!(by_reason["not_a_number"], 1);
    assert_eq!(by_reason["not_finite"], 1);
    assert_eq!(by_reason["invalid_utf8"], 1);
    assert_eq!(by_reason["oversized"], 1);
    assert_eq!(by_reason["malformed_json"], 1);
    svc.shutdown().await.unwrap();

    let pool = sqlite::open_existing(&db).await.unwrap();
    let n1 = sqlite::query_readings(&pool, "greenhouse/node1/temperature", i64::MIN)
        .await
        .unwrap();
    assert_eq!(n1.len(), 2);
    assert!(n1.iter().any(|r| r.1 == t && r.2 == 22.0));
    assert!(n1.iter().any(|r| r.2 == 21.5));
    let lab = sqlite::query_readings(&pool, "lab/#", i64::MIN)
        .await
        .unwrap();
    assert_eq!(
        lab,
        vec![
            ("lab/node7/co2".to_string(), t, 612.0),
            ("lab/node7/humidity".to_string(), t, 40.5)
        ]
    );
    let n2 = sqlite::query_readings(&pool, "greenhouse/node2/temperature", i64::MIN)
        .await
        .unwrap();
    assert_eq!(n2.len(), 100);
    let unit: Option<String> =
        sqlx::query_scalar("SELECT unit FROM series WHERE name = 'greenhouse/node1/temperature'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unit.as_deref(), Some("°C"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_with_a_password_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = config(port);
    cfg.broker.username = Some("sensor".into());
    cfg.broker.password_env = "CENTINELA_TEST_EMBEDDED_PW".into();
    std::env::set_var("CENTINELA_TEST_EMBEDDED_PW", "s3cret");
    let svc = Service::start(
        cfg,
        Options {
            db_path: Some(dir.path().join("c.db")),
        },
    )
    .await
    .unwrap();

    // Wrong password: rumqttd closes the connection without a CONNACK.
    let mut opts = rumqttc::MqttOptions::new("intruder", "127.0.0.1", port);
    opts.set_credentials("sensor", "wrong");
    let (_c, mut ev) = rumqttc::AsyncClient::new(opts, 10);
    let first = tokio::time::timeout(Duration::from_secs(5), ev.poll())
        .await
        .unwrap();
    assert!(
        !matches!(
            first,
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))
        ),
        "{first:?}"
    );

    let mut p = Publisher::connect(port, "sensor-ok", Some(("sensor", "s3cret"))).await;
    p.publish("sensors/a/b/c", "1").await;
    p.wait_acked(1).await;
    let stats = svc.source_stats.clone();
    wait_for("the reading", 20, || {
        stats.readings.load(Ordering::Relaxed) == 1
    })
    .await;
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mosquitto_restarted_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let Some(mut mosq) = Mosquitto::start(dir.path(), port, None) else {
        eprintln!("SKIPPED: mosquitto is not installed (.ci/run installs it)");
        return;
    };
    let mut cfg = config(port);
    cfg.broker.mode = BrokerMode::External;
    cfg.broker.url = Some(format!("mqtt://127.0.0.1:{port}"));
    cfg.broker.client_id = "centinela-test-external".into();
    let db = dir.path().join("c.db");
    let svc = Service::start(
        cfg,
        Options {
            db_path: Some(db.clone()),
        },
    )
    .await
    .unwrap();
    let stats = svc.source_stats.clone();
    wait_for("the subscription", 20, || {
        stats.connected.load(Ordering::Relaxed)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let total = 2000u64;
    let mut p = Publisher::connect(port, "sensor-ext", None).await;
    for i in 0..total / 2 {
        p.publish("sensors/site/dev/metric", format!("{i}")).await;
    }
    p.wait_acked(total / 2).await;
    // The broker goes away in the middle of the stream and comes back; both clients
    // reconnect and the persistent session hands over what was queued.
    mosq.restart();
    for i in total / 2..total {
        p.publish("sensors/site/dev/metric", format!("{i}")).await;
    }
    p.wait_acked(total).await;
    wait_for("every reading", 20, || {
        stats.readings.load(Ordering::Relaxed) >= total
    })
    .await;
    svc.shutdown().await.unwrap();

    let pool = sqlite::open_existing(&db).await.unwrap();
    let got = sqlite::query_readings(&pool, "#", i64::MIN).await.unwrap();
    let mut values: Vec<u64> = got.iter().map(|r| r.2 as u64).collect();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len() as u64, total, "distinct values stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_broker_with_a_wrong_password_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let Some(_mosq) = Mosquitto::start(dir.path(), port, Some(("centinela", "right"))) else {
        eprintln!("SKIPPED: mosquitto is not installed (.ci/run installs it)");
        return;
    };
    let mut cfg = config(port);
    cfg.broker.mode = BrokerMode::External;
    cfg.broker.url = Some(format!("mqtt://127.0.0.1:{port}"));
    cfg.broker.username = Some("centinela".into());
    cfg.broker.password_env = "CENTINELA_TEST_EXTERNAL_PW".into();
    std::env::set_var("CENTINELA_TEST_EXTERNAL_PW", "wrong");
    let mut svc = Service::start(
        cfg,
        Options {
            db_path: Some(dir.path().join("c.db")),
        },
    )
    .await
    .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), svc.failed())
        .await
        .expect("no error within 10 s");
    let msg = err.to_string();
    assert!(msg.contains("refused"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(
        msg.contains("password") || msg.contains("authorised"),
        "{msg}"
    );
    svc.shutdown().await.unwrap();
}
