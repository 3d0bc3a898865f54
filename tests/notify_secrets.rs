//! Secrets in addresses stay secret: a webhook URL's `user:password@` and `?key=…`, and
//! a Telegram token inside the Bot API URL, never reach the log, `doctor`, the stored
//! `last_error` (`alerts --outbox`) or the delivery alerts sent to the other channels.
//! And the webhook secret can come from the environment, like every other secret.

mod support;

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::notify_db;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use centinela::config::{NotifyConfig, OutboxConfig, WebhookConfig};
use centinela::model::{now_ms, AlertState};
use centinela::notify::doctor::doctor;
use centinela::notify::telegram::TelegramSender;
use centinela::notify::webhook::WebhookSender;
use centinela::notify::{self, Outbox, Secret, Sender, Worker};
use notify_db::{event, fast_policy};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_centinela");
const PASSWORD: &str = "hunter2pw";
const KEY: &str = "k3yv4lue";
const TOKEN: &str = "123456:SeCrEtToKeN";

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
    fn capture() -> (Log, tracing::subscriber::DefaultGuard) {
        let log = Log::default();
        let w = log.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        (log, tracing::subscriber::set_default(sub))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn assert_clean(what: &str, text: &str) {
    for secret in [PASSWORD, KEY, "SeCrEtToKeN"] {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
}

/// A receiver that answers 503 and records the headers it got.
async fn receiver(status: StatusCode) -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let s = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |h: HeaderMap| {
            s.lock().unwrap().push(h);
            async move { status }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("{addr}"), seen)
}

async fn wait_dead(pool: &sqlx::SqlitePool) -> Vec<notify::OutboxRow> {
    let t = Instant::now();
    loop {
        let dead = notify::dead(pool).await.unwrap();
        if !dead.is_empty() {
            return dead;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "nothing ended dead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_webhook_url_with_credentials_and_a_key_is_never_printed() {
    let (log, _guard) = Log::capture();
    let (addr, seen) = receiver(StatusCode::SERVICE_UNAVAILABLE).await;
    let url = format!("http://ops:{PASSWORD}@{addr}/hook?key={KEY}");
    let dir = tempfile::tempdir().unwrap();
    let pool = notify_db::open(&dir.path().join("s.db")).await;
    let outbox = Outbox::new(pool.clone());
    let hook = WebhookSender::from_config(&WebhookConfig::new(&url)).unwrap();
    assert_eq!(hook.url(), format!("http://***@{addr}/hook?key=***"));
    let policy = OutboxConfig {
        max_attempts: 3,
        failing_after: centinela::config::Duration::from_millis(100),
        ..fast_policy()
    };
    let (_stop, rx) = watch::channel(false);
    let worker = Worker::new(
        outbox.clone(),
        Arc::new(hook),
        policy,
        vec!["webhook".into(), "email".into()],
    )
    .spawn(rx);
    outbox
        .enqueue(
            &[event("a/b/t", AlertState::Firing, 31.0, 1, &["webhook"])],
            now_ms(),
        )
        .await
        .unwrap();
    let dead = wait_dead(&pool).await;
    let last_error = dead[0].last_error.clone().unwrap();
    assert!(
        last_error.ends_with(&format!("http://***@{addr}/hook?key=*** answered HTTP 503")),
        "{last_error}"
    );
    // The credentials still went to the receiver: only the printing is cut.
    assert!(seen.lock().unwrap()[0].contains_key("authorization"));
    // The delivery alerts for the other channel.
    let t = Instant::now();
    let reports = loop {
        let rows = notify::outbox::pending(&pool, "email", 10).await.unwrap();
        if rows.len() >= 2 {
            break rows;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rules: Vec<&str> = reports.iter().map(|r| r.event.rule.as_str()).collect();
    assert!(rules.contains(&"centinela-delivery-failing"), "{rules:?}");
    for r in &reports {
        assert_clean("a delivery alert", &r.event.message);
        assert!(r.event.message.contains("***@"), "{}", r.event.message);
    }
    worker.abort();
    let text = log.text();
    assert!(text.contains("delivery failed; will retry"), "{text}");
    assert_clean("the log", &text);
    assert_clean("last_error", &last_error);
}

#[tokio::test]
async fn a_telegram_token_in_an_error_url_is_cut() {
    let (log, _guard) = Log::capture();
    // Nothing listens there: reqwest's error quotes the URL, token included.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tg = TelegramSender::new(
        Secret::new(TOKEN),
        &format!("http://127.0.0.1:{port}"),
        vec![5],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pool = notify_db::open(&dir.path().join("t.db")).await;
    let outbox = Outbox::new(pool.clone());
    let policy = OutboxConfig {
        max_attempts: 1,
        ..fast_policy()
    };
    let (_stop, rx) = watch::channel(false);
    let worker = Worker::new(outbox.clone(), Arc::new(tg), policy, vec![]).spawn(rx);
    outbox
        .enqueue(
            &[event("a/b/t", AlertState::Firing, 31.0, 1, &["telegram"])],
            now_ms(),
        )
        .await
        .unwrap();
    let dead = wait_dead(&pool).await;
    worker.abort();
    let e = dead[0].last_error.clone().unwrap();
    assert!(e.contains("Telegram unreachable"), "{e}");
    assert_clean("last_error", &e);
    assert_clean("the log", &log.text());
}

#[tokio::test]
async fn the_webhook_address_and_secret_come_from_the_environment() {
    let (addr, seen) = receiver(StatusCode::NO_CONTENT).await;
    // Test-only variables, unique to this test.
    std::env::set_var(
        "CENTINELA_TEST_HOOK_URL",
        format!("http://{addr}/hook?key={KEY}"),
    );
    std::env::set_var("CENTINELA_TEST_HOOK_SECRET", "b34rer");
    let cfg = WebhookConfig {
        url: None,
        url_env: Some("CENTINELA_TEST_HOOK_URL".into()),
        secret_env: Some("CENTINELA_TEST_HOOK_SECRET".into()),
        ..WebhookConfig::new("unused")
    };
    let hook = WebhookSender::from_config(&cfg).unwrap();
    assert_eq!(hook.url(), format!("http://{addr}/hook?key=***"));
    let row = notify::OutboxRow {
        id: "x1".into(),
        channel: "webhook".into(),
        event: event("a/b/t", AlertState::Firing, 31.0, 1, &["webhook"]),
        status: notify::Status::Pending,
        created_at: 0,
        attempts: 0,
        next_at: 0,
        done: vec![],
        refused: vec![],
        last_error: None,
        updated_at: 0,
    };
    hook.send("", std::slice::from_ref(&row)).await.unwrap();
    let with_header = WebhookSender::from_config(&WebhookConfig {
        secret_header: Some("X-Api-Key".into()),
        ..cfg.clone()
    })
    .unwrap();
    with_header
        .send("", std::slice::from_ref(&row))
        .await
        .unwrap();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0]["authorization"], "Bearer b34rer");
        assert_eq!(seen[1]["x-api-key"], "b34rer");
        assert!(!seen[1].contains_key("authorization"));
    }
    // A missing variable is named, its value never printed.
    let e = WebhookSender::from_config(&WebhookConfig {
        url_env: Some("CENTINELA_TEST_SURELY_UNSET_HOOK".into()),
        ..cfg.clone()
    })
    .err()
    .unwrap()
    .to_string();
    assert_eq!(
        e,
        "notify.webhook.url_env: the environment variable CENTINELA_TEST_SURELY_UNSET_HOOK is not set"
    );
    // doctor names the variable and shows the address redacted.
    let r = doctor(
        &NotifyConfig {
            webhook: Some(cfg),
            ..Default::default()
        },
        true,
    )
    .await;
    assert!(r[0].ok, "{}", r[0]);
    assert_eq!(r[0].target, format!("http://{addr}/hook?key=***"));
    assert_eq!(
        seen.lock().unwrap()[2]["authorization"],
        "Bearer b34rer",
        "doctor sends the secret too"
    );
}

#[tokio::test]
async fn doctor_and_alerts_outbox_print_addresses_redacted() {
    // doctor: a receiver that is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://ops:{PASSWORD}@127.0.0.1:{port}/hook?key={KEY}");
    let r = doctor(
        &NotifyConfig {
            webhook: Some(WebhookConfig::new(&url)),
            ..Default::default()
        },
        false,
    )
    .await;
    assert!(!r[0].ok);
    assert_eq!(
        r[0].target,
        format!("https://***@127.0.0.1:{port}/hook?key=***")
    );
    assert_clean("doctor", &r[0].to_string());

    // alerts --outbox: a row whose error was stored by an older version, unredacted.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o.db");
    let pool = notify_db::open(&db).await;
    let ev = event("a/b/t", AlertState::Firing, 31.0, 1, &["webhook"]);
    notify::enqueue(&pool, std::slice::from_ref(&ev), now_ms())
        .await
        .unwrap();
    let id = notify::outbox::notification_id(&ev, "webhook");
    notify::outbox::mark_dead(
        &pool,
        &[id.as_str()],
        &format!("error sending request for url ({url}): connection refused"),
        now_ms(),
    )
    .await
    .unwrap();
    pool.close().await;
    for json in [false, true] {
        let mut args = vec!["alerts", "--db", db.to_str().unwrap(), "--outbox"];
        if json {
            args.push("--json");
        }
        let o = Command::new(BIN)
            .args(&args)
            .env_remove("CENTINELA_CONFIG")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(&format!("https://***@127.0.0.1:{port}/hook?key=***")),
            "{out}"
        );
        assert_clean("alerts --outbox", &out);
    }
}
