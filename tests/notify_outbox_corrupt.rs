//! A corrupt `done` target list in the outbox (edited by hand, a bad disk) is an
//! error that is logged and keeps the notification pending: it must never read as
//! "nobody served yet" and send the alert again to chats that already have it. The
//! other notifications of the channel keep going.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::notify_db;
use support::telegram_standin;

use centinela::model::{now_ms, AlertState};
use centinela::notify::outbox::notification_id;
use centinela::notify::telegram::TelegramSender;
use centinela::notify::{self, Outbox, Secret, Status, Worker};
use notify_db::{event, fast_policy};
use telegram_standin::Standin;
use tokio::sync::watch;

/// Log lines, as a person would read them in the journal.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_corrupt_done_list_keeps_the_notification_pending_and_is_logged_once() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let api = Standin::start("1:tok").await;
    let dir = tempfile::tempdir().unwrap();
    let pool = notify_db::open(&dir.path().join("c.db")).await;
    let outbox = Outbox::new(pool.clone());
    let hurt = event(
        "room/a/temperature",
        AlertState::Firing,
        31.0,
        1,
        &["telegram"],
    );
    outbox
        .enqueue(std::slice::from_ref(&hurt), now_ms())
        .await
        .unwrap();
    let id = notification_id(&hurt, "telegram");
    // Chat 111 was served before the crash; the list was then damaged.
    sqlx::query("UPDATE outbox SET done = '[\"111\"' WHERE id = ?")
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    let fine = event(
        "room/b/temperature",
        AlertState::Firing,
        32.0,
        2,
        &["telegram"],
    );
    outbox.enqueue(&[fine], now_ms()).await.unwrap();

    let tg = TelegramSender::new(Secret::new("1:tok"), &api.url, vec![111, 222]).unwrap();
    let (_stop, rx) = watch::channel(false);
    let worker = Worker::new(outbox.clone(), Arc::new(tg), fast_policy(), vec![]).spawn(rx);

    // The readable notification goes to both chats.
    api.wait_until(Duration::from_secs(10), |s| s.len() >= 2)
        .await;
    // Several more polls: still nothing for the damaged one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let sent = api.sent();
    assert_eq!(
        sent.len(),
        2,
        "{:?}",
        sent.iter().map(|s| &s.text).collect::<Vec<_>>()
    );
    assert!(sent.iter().all(|s| s.text.contains("room/b")));
    let row = notify::outbox::get(&pool, &id).await;
    assert!(
        matches!(&row, Err(e) if e.to_string().contains("the done target list \"[\\\"111\\\"\" is unreadable")),
        "{row:?}"
    );
    let status: String = sqlx::query_scalar("SELECT status FROM outbox WHERE id = ?")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "pending");
    let text = log.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("notification left pending: its outbox row is unreadable"))
        .collect();
    assert_eq!(lines.len(), 1, "logged once, not every poll:\n{text}");
    assert!(
        lines[0].contains("ERROR") && lines[0].contains(&id),
        "{}",
        lines[0]
    );

    // Repaired by hand: it goes to the chat that did not have it, and only there.
    sqlx::query("UPDATE outbox SET done = '[\"111\"]' WHERE id = ?")
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    let t = Instant::now();
    loop {
        let r = notify::outbox::get(&pool, &id).await.unwrap().unwrap();
        if r.status == Status::Delivered {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let to_a: Vec<i64> = api
        .sent()
        .iter()
        .filter(|s| s.text.contains("room/a"))
        .map(|s| s.chat_id)
        .collect();
    assert_eq!(to_a, vec![222]);
    worker.abort();
}
