//! Kafka against a real Apache Kafka 4 broker (KRaft, single node, started from the jars
//! `.ci/install-kafka.sh` assembles): the `[output.kafka]` sink read back with a Kafka
//! client, and a broker that never answers does not hold up the stop.
#![cfg(feature = "kafka")]

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::kafka;

use centinela::config::Config;
use centinela::service::{Options, Service};
use centinela::store::kafka::KafkaOutput;
use kafka::{committed, produce, read_all, Kafka, Run};
use support::mqtt::{free_port, Publisher};

fn sink_config(mqtt_port: u16, brokers: &str, flush_timeout: &str) -> Config {
    let text = format!(
        "[broker]\nlisten = \"127.0.0.1:{mqtt_port}\"\n\n[engine]\ntick = \"100ms\"\n\n\
         [storage.sqlite]\nflush_interval = \"200ms\"\n\n\
         [output.kafka]\nbrokers = [\"{brokers}\"]\nreadings_topic = \"readings-out\"\n\
         alerts_topic = \"alerts-out\"\nflush_timeout = \"{flush_timeout}\"\nmessage_timeout = \"20s\"\n\n\
         [[rules]]\nname = \"hot\"\nseries = \"site/+/temp\"\nkind = \"threshold\"\nabove = 30.0\n\
         severity = \"critical\"\n"
    );
    Config::parse(&text, "test.toml").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_and_alert_events_reach_kafka_as_json_keyed_by_series_and_alert() {
    let Some(k) = Kafka::start() else { return };
    k.create_topic("readings-out", 6, false).await;
    k.create_topic("alerts-out", 1, false).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let svc = Service::start(
        sink_config(port, &k.bootstrap(), "10s"),
        Options {
            db_path: Some(dir.path().join("c.db")),
        },
    )
    .await
    .unwrap();
    let mut p = Publisher::connect(port, "kafka-sink", None).await;
    let t0 = centinela::model::now_ms() - 3_600_000;
    let devices = ["d1", "d2", "d3"];
    let per = 100;
    let mut sent = HashMap::new();
    for i in 0..per {
        for (j, d) in devices.iter().enumerate() {
            // d2 goes over 30 once, at i = 50, and stays there.
            let value = if *d == "d2" && i >= 50 {
                35.0 + i as f64
            } else {
                20.0 + j as f64 + i as f64 / 1000.0
            };
            let ts = t0 + i * 1000;
            p.publish(
                &format!("sensors/site/{d}/temp"),
                format!(r#"{{"value":{value},"ts":{ts}}}"#),
            )
            .await;
            sent.insert((format!("site/{d}/temp"), ts), value);
        }
    }
    p.wait_acked((per as usize * devices.len()) as u64).await;
    let total = sent.len();
    let got = read_all(&k, &["readings-out", "alerts-out"], total + 1);
    let readings: Vec<_> = got.iter().filter(|(t, ..)| t == "readings-out").collect();
    let alerts: Vec<_> = got.iter().filter(|(t, ..)| t == "alerts-out").collect();
    assert_eq!(readings.len(), total, "readings on Kafka");
    let mut seen = HashMap::new();
    for (_, key, v) in &readings {
        assert_eq!(v["series"], key.as_str(), "{v}");
        let ts = chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        seen.insert((key.clone(), ts), v["value"].as_f64().unwrap());
    }
    assert_eq!(
        seen, sent,
        "every reading once, with its series, time and value"
    );
    assert_eq!(alerts.len(), 1, "one alert event: {alerts:?}");
    let (_, key, v) = alerts[0];
    assert_eq!(key, "hot/site/d2/temp");
    assert_eq!(v["state"], "firing");
    assert_eq!(v["rule"], "hot");
    assert_eq!(v["series"], "site/d2/temp");
    assert_eq!(v["severity"], "critical");
    assert_eq!(v["value"], 85.0);

    let out = centinela::store::find::<KafkaOutput>(&svc.outputs).unwrap();
    let stats = out.stats();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.delivered.load(Ordering::Relaxed) < total as u64 + 1 {
        assert!(Instant::now() < deadline, "delivered {:?}", stats);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
    let health = out_health(&svc);
    assert!(health.0, "{}", health.1);
    svc.shutdown().await.unwrap();
}

fn out_health(svc: &Service) -> (bool, String) {
    let h = centinela::store::find::<KafkaOutput>(&svc.outputs)
        .unwrap()
        .health()
        .unwrap();
    (h.ok, h.detail)
}

use centinela::store::Output as _;

/// A "broker" that takes connections and never says a word.
fn silent_listener() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    (l, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_answers_does_not_hold_up_the_stop_and_the_loss_is_counted() {
    let (_silent, kport) = silent_listener();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let svc = Service::start(
        sink_config(port, &format!("127.0.0.1:{kport}"), "2s"),
        Options {
            db_path: Some(dir.path().join("c.db")),
        },
    )
    .await
    .unwrap();
    let mut p = Publisher::connect(port, "kafka-silent", None).await;
    let t0 = centinela::model::now_ms() - 60_000;
    for i in 0..50 {
        p.publish(
            "sensors/site/d1/temp",
            format!(r#"{{"value":{i},"ts":{}}}"#, t0 + i * 10),
        )
        .await;
    }
    p.wait_acked(50).await;
    let stats = centinela::store::find::<KafkaOutput>(&svc.outputs)
        .unwrap()
        .stats();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.queued.load(Ordering::Relaxed) < 50 {
        assert!(Instant::now() < deadline, "queued {:?}", stats);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stored in SQLite all the same.
    let store = svc.store_stats.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.stored.load(Ordering::Relaxed) < 50 {
        assert!(Instant::now() < deadline, "stored {:?}", store);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    svc.shutdown().await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "stop took {took:?} (flush_timeout is 2 s)"
    );
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 0);
    // 50 readings and the alert event (the values pass 30).
    assert_eq!(stats.queued.load(Ordering::Relaxed), 51, "{stats:?}");
    assert_eq!(
        stats.failed.load(Ordering::Relaxed),
        51,
        "every message left in flight counts as failed: {stats:?}"
    );
}

fn source_config(mqtt_port: u16, brokers: &str, topic: &str, group: &str, extra: &str) -> String {
    format!(
        "[broker]\nlisten = \"127.0.0.1:{mqtt_port}\"\n\n[engine]\ntick = \"100ms\"\n\n\
         [storage.sqlite]\nflush_interval = \"200ms\"\n\n\
         [source.kafka]\nbrokers = [\"{brokers}\"]\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\
         commit_interval = \"200ms\"\n{extra}\n\
         [[rules]]\nname = \"hot\"\nseries = \"site/+/temp\"\nkind = \"threshold\"\nabove = 30.0\n\
         severity = \"critical\"\n"
    )
}

async fn stored_alerts(db: &std::path::Path) -> Vec<centinela::store::sqlite::AlertRow> {
    let (pool, _lock) = centinela::store::sqlite::open_for_writing(db)
        .await
        .unwrap();
    centinela::store::sqlite::query_alerts(&pool, 0, None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_from_kafka_are_stored_alert_and_their_offsets_committed_after() {
    let Some(k) = Kafka::start() else { return };
    k.create_topic("readings-in", 6, false).await;
    let t0 = centinela::model::now_ms() - 3_600_000;
    let mut msgs = Vec::new();
    for i in 0..50i64 {
        for d in 0..6 {
            let value = if d == 4 && i >= 40 {
                31.5
            } else {
                20.0 + i as f64 / 100.0
            };
            msgs.push((
                d,
                Some(format!("site/d{d}/temp")),
                format!(r#"{{"value":{value},"ts":{}}}"#, t0 + i * 1000),
            ));
        }
    }
    // Bad ones: no key, a value that is not a number. Skipped, counted, never blocking.
    msgs.push((0, None, "21.0".into()));
    msgs.push((1, Some("site/d1/temp".into()), "warm".into()));
    // A plain number, stamped with the receive time, as on MQTT.
    msgs.push((2, Some("site/d2/temp".into()), "22.25".into()));
    produce(&k, "readings-in", &msgs);
    let good = 301u64;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let port = free_port();
    let cfg = Config::parse(
        &source_config(port, &k.bootstrap(), "readings-in", "g1", ""),
        "test.toml",
    )
    .unwrap();
    let svc = Service::start(
        cfg,
        Options {
            db_path: Some(db.clone()),
        },
    )
    .await
    .unwrap();
    let ks = svc.kafka_source.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while svc.store_stats.stored.load(Ordering::Relaxed) < good {
        assert!(
            Instant::now() < deadline,
            "stored {} of {good}; kafka {:?}",
            svc.store_stats.stored.load(Ordering::Relaxed),
            ks
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Offsets follow the stored readings: all 303 messages, bad ones included.
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed(&k, "g1", "readings-in", 6) < msgs.len() as i64 {
        assert!(
            Instant::now() < deadline,
            "committed {}",
            committed(&k, "g1", "readings-in", 6)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ks.messages.load(Ordering::Relaxed), msgs.len() as u64);
    assert_eq!(
        ks.no_series.load(Ordering::Relaxed),
        1,
        "the message without a key"
    );
    let by_reason: HashMap<_, _> = svc.source_stats.errors_by_reason().into_iter().collect();
    assert_eq!(by_reason["not_a_number"], 1);
    assert_eq!(ks.assigned.load(Ordering::Relaxed), 6);
    svc.shutdown().await.unwrap();

    let alerts = stored_alerts(&db).await;
    let firing: Vec<_> = alerts.iter().filter(|a| a.state == "firing").collect();
    assert_eq!(firing.len(), 1, "{alerts:?}");
    assert_eq!(firing[0].series, "site/d4/temp");
    assert_eq!(firing[0].value, Some(31.5));

    // A restart reads only what is new: nothing was committed before it was stored,
    // and nothing stored is read again.
    let more: Vec<_> = (0..6)
        .map(|d| {
            (
                d,
                Some(format!("site/d{d}/temp")),
                format!(r#"{{"value":25,"ts":{}}}"#, t0 + 100_000),
            )
        })
        .collect();
    produce(&k, "readings-in", &more);
    let db2 = dir.path().join("c2.db");
    let cfg = Config::parse(
        &source_config(free_port(), &k.bootstrap(), "readings-in", "g1", ""),
        "test.toml",
    )
    .unwrap();
    let svc = Service::start(cfg, Options { db_path: Some(db2) })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while svc.store_stats.stored.load(Ordering::Relaxed) < 6 {
        assert!(
            Instant::now() < deadline,
            "the new readings were not stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        svc.store_stats.stored.load(Ordering::Relaxed),
        6,
        "only the new ones"
    );
    svc.shutdown().await.unwrap();
}

#[test]
fn two_instances_in_one_group_split_six_partitions_and_store_every_reading_once() {
    split_between_two("");
}

/// The same with KIP-848's consumer group protocol (the brokers assign).
#[test]
fn the_consumer_group_protocol_of_kafka_4_splits_the_partitions_too() {
    split_between_two("group_protocol = \"consumer\"\n");
}

fn split_between_two(extra: &str) {
    let Some(k) = Kafka::start() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(k.create_topic("split-in", 6, false));
    let dir = tempfile::tempdir().unwrap();
    let config = |port| source_config(port, &k.bootstrap(), "split-in", "pair", extra);
    let mut a = Run::start(dir.path(), "a", &config(free_port()));
    a.wait_log("partitions assigned", 1);
    let mut b = Run::start(dir.path(), "b", &config(free_port()));
    // Cooperative: b joins with nothing while a gives up three partitions, then b is
    // given them; a keeps its other three throughout.
    b.wait_log("owned=3", 1);
    a.wait_log("partitions revoked", 1);

    let t0 = centinela::model::now_ms() - 3_600_000;
    let mut msgs = Vec::new();
    for i in 0..50i64 {
        for s in 0..12 {
            msgs.push((
                s % 6,
                Some(format!("site/s{s}/temp")),
                format!(r#"{{"value":{},"ts":{}}}"#, 20 + s, t0 + i * 1000),
            ));
        }
    }
    produce(&k, "split-in", &msgs);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (sa, sb) = loop {
        let (sa, sb) = (a.stored(), b.stored());
        let total: usize = sa.values().chain(sb.values()).sum();
        if total >= msgs.len() {
            break (sa, sb);
        }
        assert!(
            Instant::now() < deadline,
            "stored {total}: a {sa:?} b {sb:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // Each series on exactly one instance, with all of its readings; both had work.
    assert_eq!(sa.len() + sb.len(), 12, "a {sa:?} b {sb:?}");
    assert!(sa.keys().all(|s| !sb.contains_key(s)), "a {sa:?} b {sb:?}");
    assert_eq!(sa.len(), 6, "three partitions, two series each: {sa:?}");
    assert!(
        sa.values().chain(sb.values()).all(|&n| n == 50),
        "a {sa:?} b {sb:?}"
    );
    a.stop();
    b.stop();
    assert_eq!(committed(&k, "pair", "split-in", 6), msgs.len() as i64);
}
