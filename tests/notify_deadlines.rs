//! A peer that accepts the connection and never speaks must not block anything: the
//! doctor returns within its deadline and names the step that hung; a notification to
//! such a mail server is retried, ends dead, the failing channel is reported through
//! another one; and SIGTERM stops the service promptly while a delivery hangs.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::notify_db;

use axum::routing::post;
use axum::{Json, Router};
use centinela::config::{Config, EmailConfig, NotifyConfig, WebhookConfig};
use centinela::model::{now_ms, AlertState};
use centinela::notify::doctor::{doctor, doctor_within, Verdict};
use centinela::notify::email::EmailSender;
use centinela::notify::{self, Outbox, Status, Worker};
use notify_db::{event, fast_policy};
use serde_json::Value;
use support::mqtt::{free_port, Publisher};
use support::process::{centinela, service, spawn_listening, wait_for, BIN};
use tokio::sync::watch;

/// A TCP server that accepts every connection, holds it open and never writes.
struct Silent {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let n = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().take(1000) {
                match s {
                    Ok(s) => {
                        n.fetch_add(1, Ordering::SeqCst);
                        held.push(s);
                    }
                    Err(_) => break,
                }
            }
        });
        Silent { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Fails the test instead of hanging it when `f` never returns.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("hung: no deadline ended it")
}

fn email(port: u16, timeout: &str) -> EmailConfig {
    let text = format!(
        "[notify.email]\nsmtp = \"127.0.0.1:{port}\"\ntls = \"none\"\nfrom = \"centinela <alerts@example.org>\"\n\
         to = [\"ops@example.org\"]\ntimeout = \"{timeout}\"\n"
    );
    Config::parse(&text, "t.toml")
        .unwrap()
        .notify
        .email
        .unwrap()
}

#[tokio::test]
async fn doctor_names_the_smtp_step_that_hung() {
    let silent = Silent::start();
    let cfg = NotifyConfig {
        email: Some(email(silent.port, "1s")),
        ..Default::default()
    };
    let t = Instant::now();
    let r = within(Box::pin(doctor(&cfg, false))).await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].verdict, Verdict::Fail);
    assert_eq!(r[0].target, format!("127.0.0.1:{}", silent.port));
    assert!(
        r[0].message
            .starts_with("the server accepted the connection but sent no greeting within 1s"),
        "{}",
        r[0]
    );
    assert_eq!(silent.accepted(), 1);
}

#[tokio::test]
async fn doctor_keeps_its_overall_deadline_and_says_what_was_not_checked() {
    let silent = Silent::start();
    let cfg = NotifyConfig {
        // Each step may take a minute: only the doctor's own deadline ends this.
        email: Some(email(silent.port, "60s")),
        webhook: Some(WebhookConfig::new("http://127.0.0.1:9/alerts")),
        ..Default::default()
    };
    let t = Instant::now();
    let r = within(Box::pin(doctor_within(
        &cfg,
        false,
        Duration::from_millis(800),
    )))
    .await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let text: Vec<String> = r.iter().map(ToString::to_string).collect();
    assert_eq!(r.len(), 2, "{text:#?}");
    assert_eq!(
        text[0],
        format!(
            "FAIL email    127.0.0.1:{p}: the doctor stopped after 800ms: no answer to SMTP greeting from 127.0.0.1:{p}",
            p = silent.port
        )
    );
    assert_eq!(r[1].verdict, Verdict::NotChecked);
    assert_eq!(
        text[1],
        "---- webhook  [notify.webhook]: not checked: the doctor's deadline (800ms) passed before it got here"
    );
}

#[tokio::test]
async fn doctor_gives_up_on_a_silent_webhook_in_time() {
    let silent = Silent::start();
    let cfg = NotifyConfig {
        webhook: Some(WebhookConfig {
            timeout: centinela::config::Duration::from_secs(1),
            ..WebhookConfig::new(format!("http://127.0.0.1:{}/alerts", silent.port))
        }),
        ..Default::default()
    };
    let t = Instant::now();
    let r = within(Box::pin(doctor(&cfg, false))).await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        !r[0].ok && r[0].message.starts_with("no answer within 1s"),
        "{}",
        r[0]
    );
}

#[tokio::test]
async fn doctor_checks_a_webhook_without_sending_an_alert() {
    use axum::http::StatusCode;
    use axum::routing::any;
    let posts = Arc::new(AtomicUsize::new(0));
    let p = posts.clone();
    let app = Router::new()
        .route(
            "/alerts",
            post(move || {
                p.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::NO_CONTENT }
            }),
        )
        .route("/broken", any(|| async { StatusCode::BAD_GATEWAY }))
        .route("/nohead", any(|| async { StatusCode::NOT_IMPLEMENTED }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let hook = |path: &str| NotifyConfig {
        webhook: Some(WebhookConfig::new(format!("{base}{path}"))),
        ..Default::default()
    };
    let r = doctor(&hook("/alerts"), false).await;
    assert_eq!(r[0].verdict, Verdict::Ok, "{}", r[0]);
    assert!(
        r[0].message.starts_with("reachable (HTTP 405 to HEAD"),
        "{}",
        r[0]
    );
    let r = doctor(&hook("/broken"), false).await;
    assert_eq!(r[0].verdict, Verdict::Fail, "{}", r[0]);
    assert!(
        r[0].message.contains("HTTP 502 to HEAD, 502 to OPTIONS"),
        "{}",
        r[0]
    );
    let r = doctor(&hook("/nohead"), false).await;
    assert_eq!(r[0].verdict, Verdict::NotChecked, "{}", r[0]);
    assert!(r[0].message.starts_with("not checked: "), "{}", r[0]);
    assert_eq!(posts.load(Ordering::SeqCst), 0, "no alert was sent");
}

/// The worker against a silent mail server: every attempt ends at the deadline, the
/// notification is retried and ends dead with a last error that says why, and the
/// failing channel is reported through the other channel.
#[tokio::test]
async fn a_silent_mail_server_costs_retries_then_dead_and_a_failing_alert() {
    let silent = Silent::start();
    let dir = tempfile::tempdir().unwrap();
    let pool = notify_db::open(&dir.path().join("d.db")).await;
    let outbox = Outbox::new(pool.clone());
    let sender = EmailSender::from_config(&email(silent.port, "300ms")).unwrap();
    let policy = centinela::config::OutboxConfig {
        max_attempts: 3,
        failing_after: centinela::config::Duration::from_millis(500),
        ..fast_policy()
    };
    let (_stop, rx) = watch::channel(false);
    let worker = Worker::new(
        outbox.clone(),
        Arc::new(sender),
        policy,
        vec!["email".into(), "telegram".into()],
    )
    .spawn(rx);
    let ev = event(
        "greenhouse/node1/temperature",
        AlertState::Firing,
        31.2,
        1,
        &["email"],
    );
    outbox.enqueue(&[ev], now_ms()).await.unwrap();
    let t = Instant::now();
    let dead = loop {
        let dead = notify::dead(&pool).await.unwrap();
        if !dead.is_empty() {
            break dead;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "never ended dead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead[0].status, Status::Dead);
    assert_eq!(dead[0].channel, "email");
    let e = dead[0].last_error.clone().unwrap();
    assert_eq!(
        e,
        format!(
            "gave up after 3 attempts; last error: 127.0.0.1:{}: the server accepted the connection but sent no greeting within 300ms",
            silent.port
        )
    );
    assert_eq!(silent.accepted(), 3, "one connection per attempt");
    // Reported through telegram: the channel failing, and the notification dead.
    let t = Instant::now();
    let reports = loop {
        let rows = notify::outbox::pending(&pool, "telegram", 10)
            .await
            .unwrap();
        if rows.len() >= 2 {
            break rows;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let failing = reports
        .iter()
        .find(|r| r.event.rule == "centinela-delivery-failing")
        .expect("a failing-channel alert");
    assert!(
        failing
            .event
            .message
            .contains("sent no greeting within 300ms"),
        "{}",
        failing.event.message
    );
    assert!(reports
        .iter()
        .any(|r| r.event.rule == "centinela-delivery-dead"));
    worker.abort();
}

/// Shutdown while a delivery hangs: the worker stops within its drain time and the
/// notification stays pending, not counted as an attempt.
#[tokio::test]
async fn a_hanging_delivery_does_not_hold_shutdown() {
    let silent = Silent::start();
    let dir = tempfile::tempdir().unwrap();
    let pool = notify_db::open(&dir.path().join("d.db")).await;
    let outbox = Outbox::new(pool.clone());
    let sender = EmailSender::from_config(&email(silent.port, "120s")).unwrap();
    let (stop, rx) = watch::channel(false);
    let worker = Worker::new(outbox.clone(), Arc::new(sender), fast_policy(), vec![]).spawn(rx);
    let ev = event("a/b", AlertState::Firing, 31.2, 1, &["email"]);
    outbox.enqueue(&[ev], now_ms()).await.unwrap();
    let t = Instant::now();
    while silent.accepted() == 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "no attempt started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker did not stop")
        .unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(7),
        "drained for {took:?}"
    );
    let rows = notify::outbox::pending(&pool, "email", 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attempts, 0);
}

// ---- the real binary ----

fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let path = dir.join("centinela.toml");
    let text = format!(
        "[broker]\nlisten = \"127.0.0.1:{port}\"\n\n[storage.sqlite]\npath = \"{}\"\nflush_interval = \"200ms\"\n\n\
         [engine]\ntick = \"100ms\"\n\n{extra}\n\
         [[rules]]\nname = \"hot\"\nseries = \"greenhouse/+/temperature\"\nkind = \"threshold\"\nabove = 30.0\n\
         severity = \"critical\"\nnotify = [\"email\"]\n",
        dir.join("c.db").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn start_service(config: &Path, port: u16) -> Child {
    spawn_listening(service(config).env("RUST_LOG", "info"), port)
}

fn term_and_wait(child: &mut Child, within: Duration) -> (Option<i32>, Duration, String) {
    let t = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if t.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!("SIGTERM did not stop the service within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = t.elapsed();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    (code, took, log)
}

async fn fire(port: u16) {
    let mut p = Publisher::connect(port, "hot-sensor", None).await;
    p.publish(
        "sensors/greenhouse/node1/temperature",
        format!(r#"{{"value":31.2,"ts":{}}}"#, now_ms()),
    )
    .await;
    p.wait_acked(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_run_a_silent_mail_server_is_retried_reported_and_sigterm_is_prompt() {
    let silent = Silent::start();
    // The other channel: a webhook receiver that records what it gets.
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let g = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |Json(v): Json<Value>| {
            g.lock().unwrap().push(v);
            async { axum::http::StatusCode::NO_CONTENT }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = format!(
        "[notify.email]\nsmtp = \"127.0.0.1:{}\"\ntls = \"none\"\nfrom = \"a@example.org\"\nto = [\"ops@example.org\"]\ntimeout = \"500ms\"\n\n\
         [notify.webhook]\nurl = \"{hook}\"\n\n\
         [notify.outbox]\nmax_attempts = 3\nbackoff_min = \"100ms\"\nbackoff_max = \"200ms\"\nfailing_after = \"1s\"\npoll_interval = \"100ms\"\n",
        silent.port
    );
    let config = write_config(dir.path(), port, &extra);
    let mut svc = start_service(&config, port);
    fire(port).await;
    let db = dir.path().join("c.db");
    let t = Instant::now();
    let dead = loop {
        let o = centinela(&["alerts", "--db", db.to_str().unwrap(), "--outbox", "--json"]);
        let rows: Vec<Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if let Some(r) = rows.into_iter().find(|r| r["channel"] == "email") {
            break r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the mail never ended dead"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(dead["status"], "dead");
    assert_eq!(dead["attempts"], 2, "the third failure ends it: {dead}");
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .ends_with("sent no greeting within 500ms"),
        "{dead}"
    );
    // The webhook heard that email fails.
    let t = Instant::now();
    loop {
        let rules: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["rule"].as_str().unwrap_or_default().to_string())
            .collect();
        if rules.iter().any(|r| r == "centinela-delivery-failing") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{rules:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // That alert is the engine's: `centinela alerts` lists it, and it is acknowledged
    // like any other (here through the control topic, as the TUI does).
    let alert_events = |state: &str| -> Vec<Value> {
        let o = centinela(&["alerts", "--db", db.to_str().unwrap(), "--json"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| {
                r["rule"] == "centinela-delivery-failing"
                    && r["series"] == "notify/email"
                    && r["state"] == state
            })
            .collect()
    };
    let t = Instant::now();
    while alert_events("firing").is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no delivery alert in `centinela alerts`"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let firing = alert_events("firing").remove(0);
    assert!(
        firing["message"]
            .as_str()
            .unwrap_or_default()
            .contains("email notifications have failed since"),
        "{firing}"
    );
    let (user, pass) = centinela::broker::read_viewer_login(&db).expect("the viewer login");
    let mut ops = Publisher::connect(port, "ops", Some((&user, &pass))).await;
    ops.publish(
        "centinela/control",
        r#"{"action":"ack","alert":"centinela-delivery-failing/notify/email","by":"ops"}"#,
    )
    .await;
    ops.wait_acked(1).await;
    let t = Instant::now();
    while alert_events("acknowledged").is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the delivery alert was not acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, took, log) = term_and_wait(&mut svc, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    assert!(log.contains("delivery failed; will retry"), "{log}");
    assert!(log.contains("sent no greeting within 500ms"), "{log}");
    assert!(log.contains("channel keeps failing"), "{log}");
    assert!(
        log.contains("acknowledged centinela-delivery-failing/notify/email"),
        "{log}"
    );
}

/// A notification that ends dead is an alert of the engine too: `centinela alerts`
/// lists `centinela-delivery-dead/notify/email` firing, saying how many were lost and
/// why, and it is acknowledged like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_run_a_dead_notification_is_an_alert_listed_and_acknowledged() {
    let silent = Silent::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = format!(
        "[notify.email]\nsmtp = \"127.0.0.1:{}\"\ntls = \"none\"\nfrom = \"a@example.org\"\nto = [\"ops@example.org\"]\ntimeout = \"300ms\"\n\n\
         [notify.outbox]\nmax_attempts = 1\npoll_interval = \"100ms\"\n",
        silent.port
    );
    let config = write_config(dir.path(), port, &extra);
    let mut svc = start_service(&config, port);
    fire(port).await;
    let db = dir.path().join("c.db");
    let dead_alert = |state: &str| -> Option<Value> {
        let o = centinela(&["alerts", "--db", db.to_str().unwrap(), "--json"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| {
                r["rule"] == "centinela-delivery-dead"
                    && r["series"] == "notify/email"
                    && r["state"] == state
            })
    };
    wait_for(
        "the dead-notification alert in `centinela alerts`",
        20,
        || dead_alert("firing").is_some(),
    )
    .await;
    let firing = dead_alert("firing").unwrap();
    let message = firing["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "1 email notification(s) could not be delivered: gave up after 1 attempts"
        ) && message.ends_with("sent no greeting within 300ms"),
        "{firing}"
    );
    assert_eq!(firing["severity"], "warning", "{firing}");

    let (user, pass) = centinela::broker::read_viewer_login(&db).expect("the viewer login");
    let mut ops = Publisher::connect(port, "ops", Some((&user, &pass))).await;
    ops.publish(
        "centinela/control",
        r#"{"action":"ack","alert":"centinela-delivery-dead/notify/email","by":"ops"}"#,
    )
    .await;
    ops.wait_acked(1).await;
    wait_for("the dead-notification alert acknowledged", 10, || {
        dead_alert("acknowledged").is_some()
    })
    .await;
    let (code, _, log) = term_and_wait(&mut svc, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("acknowledged centinela-delivery-dead/notify/email"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_service_while_a_mail_hangs_and_the_mail_stays_pending() {
    let silent = Silent::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = format!(
        "[notify.email]\nsmtp = \"127.0.0.1:{}\"\ntls = \"none\"\nfrom = \"a@example.org\"\nto = [\"ops@example.org\"]\ntimeout = \"5m\"\n",
        silent.port
    );
    let config = write_config(dir.path(), port, &extra);
    let mut svc = start_service(&config, port);
    fire(port).await;
    let t = Instant::now();
    while silent.accepted() == 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "no delivery started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, took, log) = term_and_wait(&mut svc, Duration::from_secs(15));
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(8), "stopped after {took:?}");
    assert!(
        log.contains("a delivery was still in progress at shutdown; it stays pending"),
        "{log}"
    );
    let db = dir.path().join("c.db");
    let o = centinela(&["alerts", "--db", db.to_str().unwrap(), "--outbox"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("email") && l.contains("pending      1")),
        "{text}"
    );
}

#[test]
fn the_doctor_command_returns_and_names_the_step() {
    let silent = Silent::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[notify.email]\nsmtp = \"127.0.0.1:{}\"\ntls = \"starttls\"\nfrom = \"a@example.org\"\nto = [\"ops@example.org\"]\ntimeout = \"1s\"\n",
            silent.port
        ),
    )
    .unwrap();
    let t = Instant::now();
    let mut child = Command::new(BIN)
        .args(["doctor", "--config", path.to_str().unwrap()])
        .env_remove("CENTINELA_CONFIG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("doctor hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(code, Some(1));
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        out.contains(&format!(
            "FAIL email     127.0.0.1:{:<22} the server accepted the connection but sent no greeting within 1s",
            silent.port
        )),
        "{out}"
    );
}
