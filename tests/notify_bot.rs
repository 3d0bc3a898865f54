//! The Telegram bot against the Bot API stand-in: commands and buttons reach the
//! backend; a chat that is not allowed learns nothing.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::notify_db;
use support::telegram_standin;

use centinela::model::{now_ms, topic_matches, AlertState, Control, Severity};
use centinela::notify::bot::{AlertView, BotBackend, LastValue, StatusView, TelegramBot};
use centinela::notify::telegram::TelegramSender;
use centinela::notify::{BoxFuture, Outbox, Secret, Worker};
use notify_db::{event, fast_policy};
use telegram_standin::Standin;
use tokio::sync::watch;

const TOKEN: &str = "777:bot-token";
const ALLOWED: i64 = 111;
const STRANGER: i64 = 999;

/// A backend with one firing alert and three series; records every request.
#[derive(Default)]
struct Backend {
    controls: Mutex<Vec<Control>>,
    reads: Mutex<u32>,
}

impl Backend {
    fn alert() -> AlertView {
        AlertView {
            alert_id: "greenhouse-hot/greenhouse/node1/temperature".into(),
            state: AlertState::Firing,
            severity: Severity::Critical,
            value: Some(31.2),
            unit: Some("°C".into()),
            since: now_ms() - 120_000,
            message: "too hot".into(),
        }
    }

    fn values() -> Vec<LastValue> {
        [
            "greenhouse/node1/temperature",
            "greenhouse/node2/temperature",
            "coldroom/node1/temperature",
        ]
        .iter()
        .enumerate()
        .map(|(i, s)| LastValue {
            series: s.to_string(),
            value: 20.5 + i as f64,
            unit: Some("°C".into()),
            ts: now_ms() - 300_000,
        })
        .collect()
    }

    fn controls(&self) -> Vec<Control> {
        self.controls.lock().unwrap().clone()
    }
}

impl BotBackend for Backend {
    fn status(&self) -> BoxFuture<'_, StatusView> {
        *self.reads.lock().unwrap() += 1;
        Box::pin(async {
            StatusView {
                firing: vec![Backend::alert()],
                last: Backend::values(),
            }
        })
    }

    fn alerts(&self) -> BoxFuture<'_, Vec<AlertView>> {
        *self.reads.lock().unwrap() += 1;
        Box::pin(async { vec![Backend::alert()] })
    }

    fn last(&self, pattern: String) -> BoxFuture<'_, Vec<LastValue>> {
        *self.reads.lock().unwrap() += 1;
        Box::pin(async move {
            Backend::values()
                .into_iter()
                .filter(|v| topic_matches(&pattern, &v.series))
                .collect()
        })
    }

    fn control(&self, control: Control) -> BoxFuture<'_, Result<String, String>> {
        let words = match &control {
            Control::Ack { alert, .. } if alert.starts_with("nope") => {
                Err(format!("no firing alert {alert}"))
            }
            Control::Ack { alert, .. } => Ok(format!("acknowledged {alert}")),
            Control::Silence { pattern, .. } => Ok(format!("silenced {pattern}")),
            Control::Unsilence { .. } => Ok("silences lifted".to_string()),
        };
        self.controls.lock().unwrap().push(control);
        Box::pin(async move { words })
    }
}

struct Setup {
    api: Standin,
    backend: Arc<Backend>,
    outbox: Outbox,
    _dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
}

async fn setup() -> Setup {
    let api = Standin::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let pool = notify_db::open(&dir.path().join("c.db")).await;
    let outbox = Outbox::new(pool.clone());
    let backend = Arc::new(Backend::default());
    let (stop, rx) = watch::channel(false);
    TelegramBot::new(
        Secret::new(TOKEN),
        &api.url,
        vec![ALLOWED],
        backend.clone(),
        Some(pool),
    )
    .unwrap()
    .with_poll_timeout(Duration::from_secs(1))
    .unwrap()
    .spawn(rx.clone());
    let sender = TelegramSender::new(Secret::new(TOKEN), &api.url, vec![ALLOWED]).unwrap();
    Worker::new(outbox.clone(), Arc::new(sender), fast_policy(), vec![]).spawn(rx);
    Setup {
        api,
        backend,
        outbox,
        _dir: dir,
        _stop: stop,
    }
}

/// Sends `text` from `chat` and returns the bot's next reply there.
async fn ask(s: &Setup, chat: i64, text: &str) -> String {
    let before = s.api.sent_to(chat).len();
    s.api.push_message(chat, text);
    let sent = s
        .api
        .wait_until(Duration::from_secs(10), |m| {
            m.iter().filter(|x| x.chat_id == chat).count() > before
        })
        .await;
    let mine: Vec<_> = sent.into_iter().filter(|x| x.chat_id == chat).collect();
    assert!(mine.len() > before, "no reply to {text:?}");
    mine[before..]
        .iter()
        .map(|m| m.text.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn commands_reach_the_backend_and_answer_in_the_chat() {
    let s = setup().await;
    let help = ask(&s, ALLOWED, "/help").await;
    assert!(
        help.contains("/silence &lt;pattern&gt; &lt;duration&gt;"),
        "{help}"
    );

    let status = ask(&s, ALLOWED, "/status").await;
    assert!(status.contains("<b>1 alert(s) firing</b>"), "{status}");
    assert!(
        status.contains(
            "<code>greenhouse-hot/greenhouse/node1/temperature</code> 31.2 °C · firing 2m ago"
        ),
        "{status}"
    );
    assert!(
        status.contains("<code>coldroom/node1/temperature</code> 22.5 °C (5m ago)"),
        "{status}"
    );

    let alerts = ask(&s, ALLOWED, "/alerts").await;
    assert!(
        alerts.contains("greenhouse-hot/greenhouse/node1/temperature"),
        "{alerts}"
    );

    let last = ask(&s, ALLOWED, "/last greenhouse/+/temperature").await;
    assert!(
        last.contains("greenhouse/node1/temperature")
            && last.contains("greenhouse/node2/temperature"),
        "{last}"
    );
    assert!(!last.contains("coldroom"), "{last}");

    let ack = ask(
        &s,
        ALLOWED,
        "/ack greenhouse-hot/greenhouse/node1/temperature",
    )
    .await;
    assert_eq!(
        ack,
        "✔ acknowledged greenhouse-hot/greenhouse/node1/temperature"
    );
    let refused = ask(&s, ALLOWED, "/ack nope/x").await;
    assert_eq!(refused, "✖ no firing alert nope/x");

    let t0 = now_ms();
    let silence = ask(&s, ALLOWED, "/silence greenhouse/# 2h watering the plants").await;
    assert_eq!(silence, "✔ silenced greenhouse/#");
    let unsilence = ask(&s, ALLOWED, "/unsilence").await;
    assert_eq!(unsilence, "✔ silences lifted");
    let usage = ask(&s, ALLOWED, "/silence greenhouse/#").await;
    assert!(usage.starts_with("usage: /silence"), "{usage}");

    let c = s.backend.controls();
    assert_eq!(c.len(), 4, "{c:?}");
    assert_eq!(
        c[0],
        Control::Ack {
            alert: "greenhouse-hot/greenhouse/node1/temperature".into(),
            by: format!("telegram:@user{ALLOWED}")
        }
    );
    match &c[2] {
        Control::Silence {
            pattern,
            until,
            reason,
            by,
        } => {
            assert_eq!(pattern, "greenhouse/#");
            assert_eq!(reason, "watering the plants");
            assert_eq!(by, &format!("telegram:@user{ALLOWED}"));
            let two_h = 2 * 3_600_000;
            assert!(
                *until >= t0 + two_h && *until <= now_ms() + two_h,
                "until {until}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c[3],
        Control::Unsilence {
            pattern: None,
            by: format!("telegram:@user{ALLOWED}")
        }
    );
}

#[tokio::test]
async fn buttons_under_an_alert_ack_and_silence_it() {
    let s = setup().await;
    let series = "greenhouse/node1/temperature";
    s.outbox
        .enqueue(
            &[event(
                series,
                AlertState::Firing,
                31.2,
                1_000,
                &["telegram"],
            )],
            now_ms(),
        )
        .await
        .unwrap();
    let sent = s
        .api
        .wait_until(Duration::from_secs(10), |m| !m.is_empty())
        .await;
    let alert = &sent[0];
    let buttons = alert.reply_markup.as_ref().unwrap()["inline_keyboard"][0]
        .as_array()
        .unwrap()
        .clone();
    let ack_data = buttons[0]["callback_data"].as_str().unwrap().to_string();
    let silence_data = buttons[1]["callback_data"].as_str().unwrap().to_string();
    assert!(
        ack_data.len() <= 64 && silence_data.len() <= 64,
        "Telegram limits callback data to 64 bytes"
    );

    let cb = s.api.push_callback(ALLOWED, alert.message_id, &ack_data);
    let t0 = now_ms();
    let cb2 = s
        .api
        .push_callback(ALLOWED, alert.message_id, &silence_data);
    let start = std::time::Instant::now();
    while s.api.answered_callbacks().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "buttons not answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answers = s.api.answered_callbacks();
    assert_eq!(answers[0]["callback_query_id"], cb);
    assert_eq!(
        answers[0]["text"],
        "✔ acknowledged greenhouse-hot/greenhouse/node1/temperature"
    );
    assert_eq!(answers[1]["callback_query_id"], cb2);
    let c = s.backend.controls();
    assert_eq!(
        c[0],
        Control::Ack {
            alert: "greenhouse-hot/greenhouse/node1/temperature".into(),
            by: format!("telegram:@user{ALLOWED}")
        }
    );
    match &c[1] {
        Control::Silence { pattern, until, .. } => {
            assert_eq!(pattern, series);
            assert!(*until >= t0 + 3_600_000 && *until <= now_ms() + 3_600_000);
        }
        other => panic!("{other:?}"),
    }
    // The buttons are gone from the alert message, and the chat was told.
    let alert_now = s
        .api
        .sent_to(ALLOWED)
        .into_iter()
        .find(|m| m.message_id == alert.message_id)
        .unwrap();
    assert!(
        alert_now.reply_markup.is_none(),
        "{:?}",
        alert_now.reply_markup
    );
    // The chat is told after the button is answered: wait for both messages.
    let told_now = || -> Vec<String> {
        s.api
            .sent_to(ALLOWED)
            .iter()
            .skip(1)
            .map(|m| m.text.clone())
            .collect()
    };
    let start = std::time::Instant::now();
    while told_now().len() < 2 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let told = told_now();
    assert_eq!(
        told,
        vec![
            "✔ acknowledged greenhouse-hot/greenhouse/node1/temperature".to_string(),
            format!("✔ silenced {series}")
        ]
    );
}

#[tokio::test]
async fn a_chat_not_in_chat_ids_is_refused_and_learns_nothing() {
    let s = setup().await;
    for cmd in [
        "/status",
        "/alerts",
        "/last #",
        "/ack greenhouse-hot/greenhouse/node1/temperature",
        "/silence # 1h",
    ] {
        let answer = ask(&s, STRANGER, cmd).await;
        assert!(
            answer.starts_with("This chat is not allowed"),
            "{cmd}: {answer}"
        );
        for secret in ["greenhouse", "coldroom", "31.2", "°C", "firing"] {
            assert!(
                !answer.contains(secret),
                "{cmd} leaked {secret:?}: {answer}"
            );
        }
    }
    // A button press from a stranger does nothing either.
    s.api
        .push_callback(STRANGER, 1, "ack:0123456789abcdef0123456789abcdef");
    let start = std::time::Instant::now();
    while s.api.answered_callbacks().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "stranger's button not answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.api.answered_callbacks()[0]["text"], "Not allowed.");
    assert!(
        s.backend.controls().is_empty(),
        "a stranger reached the engine: {:?}",
        s.backend.controls()
    );
    assert_eq!(
        *s.backend.reads.lock().unwrap(),
        0,
        "the backend was read for a stranger"
    );
    assert!(s.api.sent_to(ALLOWED).is_empty());
}
