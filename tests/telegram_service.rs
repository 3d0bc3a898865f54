//! Telegram through the whole service, against the Bot API stand-in: an alert reaches
//! the chat, `/status` shows it with the last values, `/ack` acknowledges it in the
//! engine (stored in the history), and a stranger learns nothing.

mod support;

use std::time::Duration;
use support::telegram_standin;

use centinela::config::Config;
use centinela::model::AlertState;
use centinela::service::{Options, Service};
use centinela::store::sqlite;
use support::mqtt::{free_port, Publisher};
use telegram_standin::Standin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_chat_and_the_bot_acts_on_the_engine() {
    let token = "4242:service-test";
    let tg = Standin::start(token).await;
    std::env::set_var("CENTINELA_TEST_TG_TOKEN", token);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = format!(
        "[broker]\nlisten = \"127.0.0.1:{port}\"\n[engine]\ntick = \"100ms\"\n\
         [notify.telegram]\ntoken_env = \"CENTINELA_TEST_TG_TOKEN\"\nchat_ids = [111]\napi_url = \"{}\"\nbot = true\n\
         [[rules]]\nname = \"hot\"\nseries = \"gh/+/temperature\"\nkind = \"threshold\"\nabove = 30.0\nseverity = \"critical\"\nnotify = [\"telegram\"]\nrepeat = \"1h\"\n",
        tg.url
    );
    let cfg = Config::parse(&text, "test.toml").unwrap();
    let db = dir.path().join("c.db");
    let svc = Service::start(
        cfg,
        Options {
            db_path: Some(db.clone()),
        },
    )
    .await
    .unwrap();

    let mut p = Publisher::connect(port, "tg-sensor", None).await;
    p.publish("sensors/gh/n1/temperature", r#"{"value":31.5,"unit":"°C"}"#)
        .await;
    p.wait_acked(1).await;
    let sent = tg
        .wait_until(Duration::from_secs(20), |s| {
            s.iter()
                .any(|m| m.chat_id == 111 && m.text.contains("gh/n1/temperature"))
        })
        .await;
    let alert = sent
        .iter()
        .find(|m| m.text.contains("gh/n1/temperature"))
        .unwrap();
    assert_eq!(alert.parse_mode.as_deref(), Some("HTML"));
    assert!(alert.reply_markup.is_some(), "Ack and Silence buttons");

    // /status once the engine has published its view with the alert (once a tick).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while svc.view.borrow().alerts.is_empty() || svc.view.borrow().last.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the engine view never showed the alert"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tg.push_message(111, "/status");
    tg.wait_until(Duration::from_secs(20), |s| {
        s.iter()
            .any(|m| m.chat_id == 111 && m.text.contains("31.5"))
    })
    .await;

    // A stranger is refused and sees no data.
    tg.push_message(999, "/status");
    let sent = tg
        .wait_until(Duration::from_secs(20), |s| {
            s.iter().any(|m| m.chat_id == 999)
        })
        .await;
    let refusal: Vec<_> = sent.iter().filter(|m| m.chat_id == 999).collect();
    assert!(
        refusal
            .iter()
            .all(|m| !m.text.contains("gh/n1") && !m.text.contains("31.5")),
        "{refusal:?}"
    );

    tg.push_message(111, "/ack hot/gh/n1/temperature");
    tg.wait_until(Duration::from_secs(20), |s| {
        s.iter()
            .any(|m| m.chat_id == 111 && m.text.to_lowercase().contains("acknowledged"))
    })
    .await;
    svc.shutdown().await.unwrap();

    let pool = sqlite::open_existing(&db).await.unwrap();
    let acked = sqlite::query_alerts(&pool, i64::MIN, Some(AlertState::Acknowledged))
        .await
        .unwrap();
    assert_eq!(acked.len(), 1, "{acked:?}");
    assert_eq!(acked[0].series, "gh/n1/temperature");
}
