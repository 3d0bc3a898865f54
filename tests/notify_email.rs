//! Email delivery through the outbox against a real SMTP server (aiosmtpd).

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::notify_db;
use support::smtp_server;

use centinela::config::{EmailConfig, SmtpTls};
use centinela::model::{now_ms, AlertState};
use centinela::notify::email::EmailSender;
use centinela::notify::{self, Outbox, Secret, Status, Worker};
use notify_db::{event, fast_policy};
use smtp_server::SmtpServer;
use tokio::sync::watch;

fn email_cfg(port: u16, username: Option<&str>) -> EmailConfig {
    email_to(port, username, &["ops@example.org"])
}

fn email_to(port: u16, username: Option<&str>, to: &[&str]) -> EmailConfig {
    EmailConfig {
        smtp: format!("127.0.0.1:{port}"),
        tls: SmtpTls::None,
        username: username.map(str::to_string),
        password_env: "CENTINELA_TEST_UNUSED".into(),
        from: "centinela <alerts@example.org>".into(),
        to: to.iter().map(|t| t.to_string()).collect(),
        timeout: centinela::config::Duration::from_secs(5),
    }
}

struct Setup {
    outbox: Outbox,
    _dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
}

async fn setup(sender: EmailSender, policy: centinela::config::OutboxConfig) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pool = notify_db::open(&dir.path().join("c.db")).await;
    let outbox = Outbox::new(pool);
    let (stop, rx) = watch::channel(false);
    Worker::new(outbox.clone(), Arc::new(sender), policy, vec![]).spawn(rx);
    Setup {
        outbox,
        _dir: dir,
        stop,
    }
}

#[tokio::test]
async fn a_firing_and_its_resolution_arrive_as_two_mails_with_phone_subjects() {
    let server = SmtpServer::start();
    let cfg = email_to(
        server.port,
        None,
        &["ops@example.org", "oncall@example.org"],
    );
    let s = setup(
        EmailSender::with_password(&cfg, None).unwrap(),
        fast_policy(),
    )
    .await;
    let series = "greenhouse/node1/temperature";
    let events = [
        event(series, AlertState::Firing, 31.2, 1_000, &["email"]),
        event(series, AlertState::Resolved, 27.5, 2_000, &["email"]),
    ];
    assert_eq!(s.outbox.enqueue(&events, now_ms()).await.unwrap(), 2);

    let mails = server.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 4, "{mails:?}");
    for rcpt in ["ops@example.org", "oncall@example.org"] {
        let mine: Vec<_> = mails
            .iter()
            .filter(|m| m.rcpt_tos == vec![rcpt.to_string()])
            .collect();
        assert_eq!(mine.len(), 2, "{rcpt}: {mails:?}");
        assert_eq!(
            mine[0].subject,
            "[CRITICAL] greenhouse/node1/temperature 31.2 °C > 30"
        );
        assert_eq!(
            mine[1].subject,
            "[RESOLVED] greenhouse/node1/temperature 27.5 °C ≤ 30"
        );
        assert_eq!(mine[0].mail_from, "alerts@example.org");
        assert_eq!(mine[0].to, "ops@example.org, oncall@example.org");
        let text = mine[0].text.as_deref().unwrap();
        assert!(
            text.contains("greenhouse-hot/greenhouse/node1/temperature"),
            "{text}"
        );
        assert!(mine[0].html.as_deref().unwrap().contains("<table>"));
    }
    // Both copies are the same message.
    assert_eq!(
        mails
            .iter()
            .filter(|m| m.message_id == mails[0].message_id)
            .count(),
        2
    );

    // The same events again (an engine replay) are recognised: nothing new is sent.
    assert_eq!(s.outbox.enqueue(&events, now_ms()).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(server.mails().len(), 4);
    let counts = notify::counts(s.outbox.pool()).await.unwrap();
    assert_eq!(
        (
            counts[0].channel.as_str(),
            counts[0].pending,
            counts[0].delivered,
            counts[0].dead
        ),
        ("email", 0, 2, 0)
    );
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn a_refused_recipient_costs_only_its_own_copy() {
    let server = SmtpServer::start();
    let cfg = email_to(
        server.port,
        None,
        &["ops@example.org", "bounce@example.org"],
    );
    let s = setup(
        EmailSender::with_password(&cfg, None).unwrap(),
        fast_policy(),
    )
    .await;
    s.outbox
        .enqueue(
            &[event("a/b/c", AlertState::Firing, 31.0, 1, &["email"])],
            now_ms(),
        )
        .await
        .unwrap();
    let mut dead = vec![];
    let start = std::time::Instant::now();
    while dead.is_empty() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        dead = notify::dead(s.outbox.pool()).await.unwrap();
    }
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].rcpt_tos, vec!["ops@example.org"]);
    assert_eq!(dead.len(), 1, "the bad address is reported");
    let err = dead[0].last_error.as_deref().unwrap();
    assert!(
        err.contains("refused the mail for bounce@example.org") && err.contains("550"),
        "{err}"
    );
    assert_eq!(dead[0].done, vec!["ops@example.org"]);
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn smtp_auth_with_the_right_password_delivers_and_a_wrong_one_does_not() {
    let server = SmtpServer::start_with_auth("alerts", "s3cret pass");
    let cfg = email_cfg(server.port, Some("alerts"));

    let wrong = setup(
        EmailSender::with_password(&cfg, Some(Secret::new("nope"))).unwrap(),
        fast_policy(),
    )
    .await;
    wrong
        .outbox
        .enqueue(
            &[event("a/b/c", AlertState::Firing, 31.0, 1, &["email"])],
            now_ms(),
        )
        .await
        .unwrap();
    let mut rows = vec![];
    for _ in 0..300 {
        rows = notify::outbox::pending(wrong.outbox.pool(), "email", 10)
            .await
            .unwrap();
        if rows.first().is_some_and(|r| r.attempts >= 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = wrong.stop.send(true);
    assert!(
        server.mails().is_empty(),
        "a mail got through with a wrong password"
    );
    assert!(
        server
            .auth_log()
            .iter()
            .any(|l| l.ends_with("alerts refused")),
        "{:?}",
        server.auth_log()
    );
    assert_eq!(rows.len(), 1, "the notification waits for a fixed password");
    assert!(rows[0].attempts >= 1);
    let err = rows[0].last_error.as_deref().unwrap();
    assert!(err.contains("refused the login"), "{err}");
    assert!(
        !err.contains("nope"),
        "the password leaked into the error: {err}"
    );

    let right = setup(
        EmailSender::with_password(&cfg, Some(Secret::new("s3cret pass"))).unwrap(),
        fast_policy(),
    )
    .await;
    right
        .outbox
        .enqueue(
            &[event("a/b/c", AlertState::Firing, 31.0, 1, &["email"])],
            now_ms(),
        )
        .await
        .unwrap();
    let mails = server.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].login.as_deref(), Some("alerts"));
    assert_eq!(mails[0].subject, "[CRITICAL] a/b/c 31 °C > 30");
    let _ = right.stop.send(true);
}

#[tokio::test]
async fn server_down_then_up_delivers_the_mail_exactly_once() {
    let mut server = SmtpServer::start();
    let s = setup(
        EmailSender::with_password(&email_cfg(server.port, None), None).unwrap(),
        fast_policy(),
    )
    .await;
    // Warm the connection pool first, so the outage also breaks a pooled connection.
    s.outbox
        .enqueue(
            &[event("x/y/z", AlertState::Firing, 40.0, 1, &["email"])],
            now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(server.wait_for(1, Duration::from_secs(10)).await.len(), 1);

    server.down();
    s.outbox
        .enqueue(
            &[event("x/y/z", AlertState::Resolved, 20.0, 2, &["email"])],
            now_ms(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rows = notify::outbox::pending(s.outbox.pool(), "email", 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].attempts >= 2,
        "retried while down: {} attempts",
        rows[0].attempts
    );
    assert!(rows[0].last_error.is_some());

    server.up();
    let mails = server.wait_for(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mails_after = server.mails();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails_after.len(), 2, "{mails_after:?}");
    assert_eq!(mails_after[1].subject, "[RESOLVED] x/y/z 20 °C ≤ 30");
    let row = notify::outbox::get(s.outbox.pool(), &rows[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, Status::Delivered);
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn a_storm_goes_out_as_one_digest() {
    let server = SmtpServer::start();
    let policy = centinela::config::OutboxConfig {
        storm_threshold: 5,
        ..fast_policy()
    };
    let s = setup(
        EmailSender::with_password(&email_cfg(server.port, None), None).unwrap(),
        policy,
    )
    .await;
    let events: Vec<_> = (0..8)
        .map(|i| {
            event(
                &format!("site/node{i}/temperature"),
                AlertState::Firing,
                31.0 + i as f64,
                1,
                &["email"],
            )
        })
        .collect();
    s.outbox.enqueue(&events, now_ms()).await.unwrap();
    let mails = server.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mails_after = server.mails();
    assert_eq!(
        mails_after.len(),
        1,
        "{:?}",
        mails_after.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    assert_eq!(mails[0].subject, "[DIGEST] 8 alerts: 8 critical");
    let text = mails[0].text.as_deref().unwrap();
    for i in 0..8 {
        assert!(
            text.contains(&format!("site/node{i}/temperature")),
            "node{i} missing from the digest"
        );
    }
    let c = &notify::counts(s.outbox.pool()).await.unwrap()[0];
    assert_eq!((c.pending, c.delivered), (0, 8));
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn an_unreachable_server_ends_dead_after_max_attempts_with_the_last_error() {
    let port = smtp_server::free_port();
    let policy = centinela::config::OutboxConfig {
        max_attempts: 3,
        ..fast_policy()
    };
    let s = setup(
        EmailSender::with_password(&email_cfg(port, None), None).unwrap(),
        policy,
    )
    .await;
    s.outbox
        .enqueue(
            &[event("a/b/c", AlertState::Firing, 33.0, 1, &["email"])],
            now_ms(),
        )
        .await
        .unwrap();
    let mut dead = vec![];
    for _ in 0..100 {
        dead = notify::dead(s.outbox.pool()).await.unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 1);
    let err = dead[0].last_error.as_deref().unwrap();
    assert!(err.starts_with("gave up after 3 attempts"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert_eq!(dead[0].event.series, "a/b/c");
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn a_trickling_storm_is_gathered_into_a_digest_after_the_first_few() {
    let server = SmtpServer::start();
    let policy = centinela::config::OutboxConfig {
        storm_threshold: 3,
        storm_window: centinela::config::Duration::from_millis(1500),
        ..fast_policy()
    };
    let s = setup(
        EmailSender::with_password(&email_cfg(server.port, None), None).unwrap(),
        policy,
    )
    .await;
    for i in 0..6 {
        let e = event(
            &format!("site/node{i}/temperature"),
            AlertState::Firing,
            31.0,
            1,
            &["email"],
        );
        s.outbox.enqueue(&[e], now_ms()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mails = server.wait_for(4, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let subjects: Vec<String> = server.mails().into_iter().map(|m| m.subject).collect();
    assert_eq!(
        subjects,
        vec![
            "[CRITICAL] site/node0/temperature 31 °C > 30".to_string(),
            "[CRITICAL] site/node1/temperature 31 °C > 30".to_string(),
            "[CRITICAL] site/node2/temperature 31 °C > 30".to_string(),
            "[DIGEST] 3 alerts: 3 critical".to_string(),
        ],
        "{mails:?}"
    );
    let _ = s.stop.send(true);
}
