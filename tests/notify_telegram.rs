//! Telegram delivery through the outbox against a local stand-in of the Bot API.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::notify_db;
use support::telegram_standin;

use centinela::config::OutboxConfig;
use centinela::model::{now_ms, AlertState};
use centinela::notify::telegram::TelegramSender;
use centinela::notify::{self, Outbox, Secret, Status, Worker};
use notify_db::{event, fast_policy};
use telegram_standin::Standin;
use tokio::sync::watch;

const TOKEN: &str = "123456:TEST-token";

struct Setup {
    outbox: Outbox,
    _dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
}

async fn setup(api: &Standin, chats: Vec<i64>, policy: OutboxConfig) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pool = notify_db::open(&dir.path().join("c.db")).await;
    let outbox = Outbox::new(pool);
    let (stop, rx) = watch::channel(false);
    let sender = TelegramSender::new(Secret::new(TOKEN), &api.url, chats).unwrap();
    Worker::new(outbox.clone(), Arc::new(sender), policy, vec![]).spawn(rx);
    Setup {
        outbox,
        _dir: dir,
        stop,
    }
}

#[tokio::test]
async fn each_chat_gets_the_alert_in_html_with_buttons() {
    let api = Standin::start(TOKEN).await;
    let s = setup(&api, vec![111, -222], fast_policy()).await;
    let mut e = event(
        "greenhouse/node1/temperature",
        AlertState::Firing,
        31.2,
        1_000,
        &["telegram"],
    );
    e.message = "greenhouse/node1/temperature 31.2 °C > 30 <hot & dry>".into();
    s.outbox.enqueue(&[e], now_ms()).await.unwrap();

    let sent = api
        .wait_until(Duration::from_secs(10), |s| s.len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.sent().len(), 2, "{sent:?}");
    for chat in [111, -222] {
        let m = api.sent_to(chat);
        assert_eq!(m.len(), 1, "chat {chat}");
        assert_eq!(m[0].parse_mode.as_deref(), Some("HTML"));
        assert!(m[0].text.contains("<b>CRITICAL</b>"), "{}", m[0].text);
        assert!(
            m[0].text.contains("31.2 °C &gt; 30 &lt;hot &amp; dry&gt;"),
            "{}",
            m[0].text
        );
        let kb = m[0].reply_markup.as_ref().expect("buttons");
        let texts: Vec<&str> = kb["inline_keyboard"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, vec!["✔ Ack", "🔕 Silence 1h"]);
    }
    let c = &notify::counts(s.outbox.pool()).await.unwrap()[0];
    assert_eq!(
        (c.channel.as_str(), c.pending, c.delivered, c.dead),
        ("telegram", 0, 1, 0)
    );

    // A resolution has no buttons.
    let r = event(
        "greenhouse/node1/temperature",
        AlertState::Resolved,
        27.0,
        2_000,
        &["telegram"],
    );
    s.outbox.enqueue(&[r], now_ms()).await.unwrap();
    api.wait_until(Duration::from_secs(10), |s| s.len() >= 4)
        .await;
    let last = api.sent_to(111).pop().unwrap();
    assert!(
        last.text.contains("RESOLVED") && last.reply_markup.is_none(),
        "{last:?}"
    );
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn a_429_is_retried_no_earlier_than_retry_after() {
    let api = Standin::start(TOKEN).await;
    api.rate_limit(1, 2);
    let s = setup(&api, vec![111], fast_policy()).await;
    s.outbox
        .enqueue(
            &[event("a/b/c", AlertState::Firing, 35.0, 1, &["telegram"])],
            now_ms(),
        )
        .await
        .unwrap();
    let sent = api
        .wait_until(Duration::from_secs(10), |s| !s.is_empty())
        .await;
    assert_eq!(sent.len(), 1);
    let calls = api.calls("sendMessage");
    assert_eq!(
        calls.iter().map(|c| c.2).collect::<Vec<_>>(),
        vec![429, 200]
    );
    let gap = calls[1].0 - calls[0].0;
    assert!(
        gap >= Duration::from_secs(2),
        "second attempt after {gap:?}, Telegram asked for 2 s"
    );
    assert!(
        gap < Duration::from_secs(4),
        "second attempt only after {gap:?}"
    );
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn a_blocked_chat_ends_dead_and_the_others_still_get_it() {
    let api = Standin::start(TOKEN).await;
    api.block(-222);
    let s = setup(&api, vec![111, -222], fast_policy()).await;
    s.outbox
        .enqueue(
            &[event("a/b/c", AlertState::Firing, 35.0, 1, &["telegram"])],
            now_ms(),
        )
        .await
        .unwrap();
    let mut dead = vec![];
    let start = Instant::now();
    while dead.is_empty() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        dead = notify::dead(s.outbox.pool()).await.unwrap();
    }
    assert_eq!(dead.len(), 1);
    let err = dead[0].last_error.as_deref().unwrap();
    assert!(err.contains("-222") && err.contains("blocked"), "{err}");
    assert_eq!(dead[0].status, Status::Dead);
    assert_eq!(dead[0].attempts, 0, "a 403 is not retried");
    assert_eq!(api.sent_to(111).len(), 1);
    assert_eq!(
        api.calls("sendMessage")
            .iter()
            .filter(|c| c.1 == Some(-222))
            .count(),
        1
    );
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn a_long_digest_is_split_under_4096_between_alerts() {
    let api = Standin::start(TOKEN).await;
    let policy = OutboxConfig {
        storm_threshold: 5,
        digest_max: 100,
        ..fast_policy()
    };
    let s = setup(&api, vec![111], policy).await;
    let events: Vec<_> = (0..60)
        .map(|i| {
            let mut e = event(
                &format!("site/node{i}/temperature"),
                AlertState::Firing,
                30.5,
                1,
                &["telegram"],
            );
            e.message = format!("alert-{i:02} {}", "lorem ipsum dolor sit amet ".repeat(6));
            e
        })
        .collect();
    s.outbox.enqueue(&events, now_ms()).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let c = &notify::counts(s.outbox.pool()).await.unwrap()[0];
        if c.delivered == 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = api.sent_to(111);
    assert!(sent.len() >= 3, "{} messages", sent.len());
    assert!(
        sent.len() < 10,
        "{} messages: the storm was not grouped",
        sent.len()
    );
    assert!(sent[0].text.contains("[DIGEST] 60 alerts: 60 critical"));
    for i in 0..60 {
        let n = sent
            .iter()
            .filter(|m| m.text.contains(&format!("alert-{i:02} ")))
            .count();
        assert_eq!(n, 1, "alert {i} appears {n} times");
    }
    for m in &sent {
        assert!(m.text.chars().map(char::len_utf16).sum::<usize>() <= 4096);
        assert!(
            m.text.ends_with("Z</i>"),
            "a message ends inside an alert: …{}",
            &m.text[m.text.len() - 40..]
        );
    }
    // Every call was accepted: nothing was over the limit.
    assert!(api.calls("sendMessage").iter().all(|c| c.2 == 200));
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn a_429_between_parts_of_a_digest_repeats_no_part() {
    let api = Standin::start(TOKEN).await;
    api.script(&[None, Some(1)]);
    let policy = OutboxConfig {
        storm_threshold: 5,
        digest_max: 100,
        ..fast_policy()
    };
    let s = setup(&api, vec![111], policy).await;
    let events: Vec<_> = (0..40)
        .map(|i| {
            let mut e = event(
                &format!("site/node{i}/temperature"),
                AlertState::Firing,
                30.5,
                1,
                &["telegram"],
            );
            e.message = format!("alert-{i:02} {}", "lorem ipsum dolor sit amet ".repeat(6));
            e
        })
        .collect();
    s.outbox.enqueue(&events, now_ms()).await.unwrap();
    let start = Instant::now();
    while notify::counts(s.outbox.pool()).await.unwrap()[0].delivered < 40 {
        assert!(start.elapsed() < Duration::from_secs(10), "not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = api.sent_to(111);
    assert!(sent.len() >= 2, "{} parts", sent.len());
    for i in 0..40 {
        let n = sent
            .iter()
            .filter(|m| m.text.contains(&format!("alert-{i:02} ")))
            .count();
        assert_eq!(n, 1, "alert {i} arrived {n} times");
    }
    let calls = api.calls("sendMessage");
    assert_eq!(calls[1].2, 429);
    assert!(
        calls[2].0 - calls[1].0 >= Duration::from_secs(1),
        "retry_after not honoured"
    );
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn a_wrong_token_keeps_the_notification_waiting() {
    let api = Standin::start("999:other-token").await;
    let s = setup(&api, vec![111], fast_policy()).await;
    s.outbox
        .enqueue(
            &[event("a/b/c", AlertState::Firing, 35.0, 1, &["telegram"])],
            now_ms(),
        )
        .await
        .unwrap();
    let mut rows = vec![];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        rows = notify::outbox::pending(s.outbox.pool(), "telegram", 10)
            .await
            .unwrap();
        if rows.first().is_some_and(|r| r.attempts >= 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = rows[0].last_error.as_deref().unwrap();
    assert!(err.contains("401") && err.contains("token"), "{err}");
    assert!(!err.contains("TEST-token"), "the token leaked: {err}");
    let _ = s.stop.send(true);
}
