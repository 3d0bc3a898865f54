//! The outbox's promises with real parts: a crash mid-delivery loses nothing and repeats
//! at most the one notification whose answer it cut off, under the same idempotency
//! key; a failing channel raises an alert through another one; webhook retries;
//! MQTT republish is retained.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::notify_db;
use support::telegram_standin;

use centinela::config::{OutboxConfig, WebhookConfig};
use centinela::model::{now_ms, AlertState};
use centinela::notify::mqtt::MqttSender;
use centinela::notify::telegram::TelegramSender;
use centinela::notify::webhook::WebhookSender;
use centinela::notify::{self, Outbox, Secret, Worker};
use notify_db::{event, fast_policy};
use serde_json::Value;
use support::webhook::Receiver;
use telegram_standin::Standin;
use tokio::sync::watch;

fn webhook(url: &str) -> WebhookSender {
    WebhookSender::from_config(&WebhookConfig {
        timeout: centinela::config::Duration::from_secs(5),
        ..WebhookConfig::new(url)
    })
    .unwrap()
}

#[tokio::test]
async fn a_crash_mid_delivery_loses_nothing_and_repeats_nothing() {
    let (recv, url) = Receiver::start().await;
    *recv.delay.lock().unwrap() = Duration::from_millis(120);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("centinela.db");

    let pool = notify_db::open(&db).await;
    let outbox = Outbox::new(pool.clone());
    let events: Vec<_> = (0..25)
        .map(|i| {
            event(
                &format!("site/node{i}/t"),
                AlertState::Firing,
                31.0,
                1_000 + i,
                &["webhook"],
            )
        })
        .collect();
    assert_eq!(outbox.enqueue(&events, now_ms()).await.unwrap(), 25);

    let (_stop, rx) = watch::channel(false);
    let worker = Worker::new(
        outbox.clone(),
        Arc::new(webhook(&url)),
        fast_policy(),
        vec![],
    )
    .spawn(rx);
    let start = Instant::now();
    while recv.count() < 8 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "stalled at {}",
            recv.count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Middle of the next request's answer: the crash lands while a send is in flight.
    tokio::time::sleep(Duration::from_millis(60)).await;
    worker.abort();
    let _ = worker.await;
    drop(outbox);
    pool.close().await;
    let before = recv.count();
    assert!(before < 25, "everything was sent before the crash");

    // Restart on the same file. Every notification the receiver did not answer is
    // pending; so may be the one it answered just as the crash came (its delivery was
    // not recorded yet): that one alone may arrive twice.
    let pool = notify_db::open(&db).await;
    let pending = notify::outbox::pending(&pool, "webhook", 100)
        .await
        .unwrap();
    assert!(
        pending.len() == 25 - before || pending.len() == 26 - before,
        "{} pending after the crash, {before} received",
        pending.len()
    );
    let cut_off = pending.len() + before - 25;
    let outbox = Outbox::new(pool.clone());
    // Enqueueing the same events again (an engine replaying its step) adds nothing.
    assert_eq!(outbox.enqueue(&events, now_ms()).await.unwrap(), 0);
    let (_stop2, rx) = watch::channel(false);
    let _worker = Worker::new(
        outbox.clone(),
        Arc::new(webhook(&url)),
        fast_policy(),
        vec![],
    )
    .spawn(rx);
    let start = Instant::now();
    while notify::counts(&pool).await.unwrap()[0].delivered < 25 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not all delivered after restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = recv.got.lock().unwrap().clone();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for g in &got {
        *per_id.entry(g.key.clone()).or_default() += 1;
    }
    assert_eq!(per_id.len(), 25, "distinct notifications received");
    let repeated = per_id.values().filter(|n| **n > 1).count();
    assert!(
        repeated == cut_off && per_id.values().all(|n| *n <= 2),
        "repeated: {per_id:?}"
    );
    // And in order: each series arrived in the order it was enqueued (a repeat right
    // after the first copy, under the same key).
    let mut series: Vec<String> = got
        .iter()
        .map(|g| g.body["series"].as_str().unwrap().to_string())
        .collect();
    series.dedup();
    let expected: Vec<String> = (0..25).map(|i| format!("site/node{i}/t")).collect();
    assert_eq!(series, expected);
}

#[tokio::test]
async fn a_failing_channel_raises_an_alert_through_the_other_and_resolves_it() {
    let (recv, url) = Receiver::start().await;
    *recv.failing.lock().unwrap() = true;
    let api = Standin::start("1:tok").await;
    let dir = tempfile::tempdir().unwrap();
    let pool = notify_db::open(&dir.path().join("c.db")).await;
    let outbox = Outbox::new(pool.clone());
    let policy = OutboxConfig {
        failing_after: centinela::config::Duration::from_millis(600),
        ..fast_policy()
    };
    let (_stop, rx) = watch::channel(false);
    let channels = vec!["webhook".to_string(), "telegram".to_string()];
    Worker::new(
        outbox.clone(),
        Arc::new(webhook(&url)),
        policy.clone(),
        channels.clone(),
    )
    .spawn(rx.clone());
    let tg = TelegramSender::new(Secret::new("1:tok"), &api.url, vec![7]).unwrap();
    Worker::new(outbox.clone(), Arc::new(tg), policy, channels).spawn(rx);

    outbox
        .enqueue(
            &[event("a/b/c", AlertState::Firing, 31.0, 1, &["webhook"])],
            now_ms(),
        )
        .await
        .unwrap();
    let sent = api
        .wait_until(Duration::from_secs(10), |s| !s.is_empty())
        .await;
    assert_eq!(sent.len(), 1, "the failing webhook is reported on Telegram");
    assert!(
        sent[0]
            .text
            .contains("centinela-delivery-failing/notify/webhook"),
        "{}",
        sent[0].text
    );
    assert!(
        sent[0]
            .text
            .contains("webhook notifications have failed since"),
        "{}",
        sent[0].text
    );
    assert!(sent[0].text.contains("HTTP 503"), "{}", sent[0].text);

    *recv.failing.lock().unwrap() = false;
    let sent = api
        .wait_until(Duration::from_secs(10), |s| s.len() >= 2)
        .await;
    assert!(
        sent[1].text.contains("RESOLVED") && sent[1].text.contains("webhook"),
        "{}",
        sent[1].text
    );
    assert_eq!(
        recv.count(),
        1,
        "the held alert went out once the webhook recovered"
    );
}

#[tokio::test]
async fn a_dead_notification_is_reported_through_another_channel() {
    let (recv, url) = Receiver::start().await;
    let api = Standin::start("1:tok").await;
    api.block(7);
    let dir = tempfile::tempdir().unwrap();
    let pool = notify_db::open(&dir.path().join("c.db")).await;
    let outbox = Outbox::new(pool.clone());
    let (_stop, rx) = watch::channel(false);
    let channels = vec!["webhook".to_string(), "telegram".to_string()];
    let tg = TelegramSender::new(Secret::new("1:tok"), &api.url, vec![7]).unwrap();
    Worker::new(
        outbox.clone(),
        Arc::new(tg),
        fast_policy(),
        channels.clone(),
    )
    .spawn(rx.clone());
    Worker::new(
        outbox.clone(),
        Arc::new(webhook(&url)),
        fast_policy(),
        channels,
    )
    .spawn(rx);
    outbox
        .enqueue(
            &[event("a/b/c", AlertState::Firing, 31.0, 1, &["telegram"])],
            now_ms(),
        )
        .await
        .unwrap();
    let start = Instant::now();
    while recv.count() < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no report on the webhook"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = recv.got.lock().unwrap()[0].body.clone();
    assert_eq!(body["alert_id"], "centinela-delivery-dead/notify/telegram");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.starts_with("1 telegram notification(s) could not be delivered: chat 7:"),
        "{msg}"
    );
    assert!(msg.contains("blocked"), "{msg}");
    assert_eq!(notify::dead(&pool).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_webhook_4xx_is_dead_and_posts_carry_the_event() {
    let (recv, url) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pool = notify_db::open(&dir.path().join("c.db")).await;
    let outbox = Outbox::new(pool.clone());
    let (_stop, rx) = watch::channel(false);
    let bad = format!("{}/nowhere", url.trim_end_matches("/alerts"));
    let mut e = event(
        "greenhouse/node1/temperature",
        AlertState::Firing,
        31.2,
        1_234,
        &["webhook"],
    );
    outbox
        .enqueue(std::slice::from_ref(&e), now_ms())
        .await
        .unwrap();
    Worker::new(
        outbox.clone(),
        Arc::new(webhook(&url)),
        fast_policy(),
        vec![],
    )
    .spawn(rx.clone());
    let start = Instant::now();
    while recv.count() < 1 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = recv.got.lock().unwrap()[0].body.clone();
    assert_eq!(
        body["alert_id"],
        "greenhouse-hot/greenhouse/node1/temperature"
    );
    assert_eq!(body["state"], "firing");
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["value"], 31.2);
    assert_eq!(body["ts"], 1_234);

    // A second channel pointed at a path that does not exist: 404 is final.
    let dir2 = tempfile::tempdir().unwrap();
    let pool2 = notify_db::open(&dir2.path().join("c.db")).await;
    let outbox2 = Outbox::new(pool2.clone());
    e.ts = 2_000;
    outbox2.enqueue(&[e], now_ms()).await.unwrap();
    Worker::new(
        outbox2.clone(),
        Arc::new(webhook(&bad)),
        fast_policy(),
        vec![],
    )
    .spawn(rx);
    let mut dead = vec![];
    while dead.is_empty() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        dead = notify::dead(&pool2).await.unwrap();
    }
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].last_error.as_deref().unwrap().contains("HTTP 404"),
        "{:?}",
        dead[0].last_error
    );
}

#[tokio::test]
async fn mqtt_republish_is_retained_qos1_on_rule_and_series() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("m.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n"),
    )
    .unwrap();
    let mut broker = std::process::Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "mosquitto did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (client, mut ev) =
        AsyncClient::new(MqttOptions::new("centinela-notify", "127.0.0.1", port), 100);
    let acks = Arc::new(Mutex::new(0u32));
    let a = acks.clone();
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => *a.lock().unwrap() += 1,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let pool = notify_db::open(&dir.path().join("c.db")).await;
    let outbox = Outbox::new(pool.clone());
    let (_stop, rx) = watch::channel(false);
    Worker::new(
        outbox.clone(),
        Arc::new(MqttSender::with_client("centinela/events", client)),
        fast_policy(),
        vec![],
    )
    .spawn(rx);
    let series = "greenhouse/node1/temperature";
    outbox
        .enqueue(
            &[event(series, AlertState::Firing, 31.2, 1, &["mqtt"])],
            now_ms(),
        )
        .await
        .unwrap();
    outbox
        .enqueue(
            &[event(series, AlertState::Resolved, 27.0, 2, &["mqtt"])],
            now_ms(),
        )
        .await
        .unwrap();
    while *acks.lock().unwrap() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the broker did not acknowledge both (QoS 1)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A client that subscribes afterwards gets the retained current state.
    let (sub, mut sev) =
        AsyncClient::new(MqttOptions::new("late-subscriber", "127.0.0.1", port), 100);
    sub.subscribe("centinela/events/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = sev.poll().await {
                return p;
            }
        }
    })
    .await
    .expect("no retained message");
    assert_eq!(
        got.topic,
        "centinela/events/greenhouse-hot/greenhouse/node1/temperature"
    );
    assert!(got.retain);
    let v: Value = serde_json::from_slice(&got.payload).unwrap();
    assert_eq!(v["state"], "resolved");
    assert_eq!(v["value"], 27.0);
    let _ = broker.kill();
    let _ = broker.wait();
}

/// Throughput figures: `cargo test --release --test notify_outbox -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, prints figures"]
async fn measure_enqueue_and_delivery_rates() {
    let (recv, url) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pool = notify_db::open(&dir.path().join("c.db")).await;
    let outbox = Outbox::new(pool.clone());
    let n = 10_000;
    let events: Vec<_> = (0..n)
        .map(|i| {
            event(
                &format!("site/node{}/t{}", i % 100, i / 100),
                AlertState::Firing,
                31.0,
                i as i64,
                &["webhook", "email"],
            )
        })
        .collect();
    let t = Instant::now();
    let added = outbox.enqueue(&events, now_ms()).await.unwrap();
    let dt = t.elapsed();
    println!(
        "enqueue: {added} rows ({n} events × 2 channels) in one transaction: {dt:?} = {:.0} rows/s",
        added as f64 / dt.as_secs_f64()
    );

    let m = 2_000;
    let dir2 = tempfile::tempdir().unwrap();
    let pool2 = notify_db::open(&dir2.path().join("c.db")).await;
    let outbox2 = Outbox::new(pool2.clone());
    outbox2.enqueue(&events[..m], now_ms()).await.unwrap();
    let (_stop, rx) = watch::channel(false);
    let t = Instant::now();
    Worker::new(
        outbox2.clone(),
        Arc::new(webhook(&url)),
        fast_policy(),
        vec![],
    )
    .spawn(rx);
    while notify::counts(&pool2)
        .await
        .unwrap()
        .iter()
        .find(|c| c.channel == "webhook")
        .unwrap()
        .delivered
        < m as u64
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dt = t.elapsed();
    assert_eq!(recv.count(), m);
    println!(
        "webhook delivery: {m} notifications one by one (POST + outbox marks) in {dt:?} = {:.0}/s",
        m as f64 / dt.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_are_idempotent_and_wait_for_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let pool = notify_db::open(&dir.path().join("c.db")).await;
    let e = event("a/b/c", AlertState::Firing, 31.0, 1, &["telegram"]);
    notify::enqueue(&pool, std::slice::from_ref(&e), now_ms())
        .await
        .unwrap();
    let id = notify::outbox::pending(&pool, "telegram", 1).await.unwrap()[0]
        .id
        .clone();

    // Many targets recorded at once while other writers insert: none may fail.
    let mut tasks = Vec::new();
    for t in 0..40 {
        let (p, id) = (pool.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            notify::outbox::mark_target_done(&p, &[id.as_str()], &format!("chat{t}"), now_ms())
                .await
        }));
        let p = pool.clone();
        tasks.push(tokio::spawn(async move {
            let other = event(
                &format!("x/{t}/y"),
                AlertState::Firing,
                1.0,
                1,
                &["telegram"],
            );
            notify::enqueue(&p, &[other], now_ms()).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    notify::outbox::mark_target_done(&pool, &[id.as_str()], "chat0", now_ms())
        .await
        .unwrap();
    let row = notify::outbox::get(&pool, &id).await.unwrap().unwrap();
    let mut done = row.done.clone();
    done.sort();
    let mut expected: Vec<String> = (0..40).map(|t| format!("chat{t}")).collect();
    expected.sort();
    assert_eq!(done, expected, "each target once");
}
