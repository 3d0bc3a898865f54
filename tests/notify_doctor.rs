//! `doctor` against real servers: what it says when things are right, and the words
//! it finds when they are not.

mod support;

use std::time::Duration;
use support::smtp_server;
use support::telegram_standin;

use centinela::config::{EmailConfig, NotifyConfig, SmtpTls, TelegramConfig, WebhookConfig};
use centinela::notify::doctor::{doctor, CheckResult};
use smtp_server::SmtpServer;
use telegram_standin::Standin;

fn email(port: u16, password_env: &str) -> EmailConfig {
    EmailConfig {
        smtp: format!("127.0.0.1:{port}"),
        tls: SmtpTls::None,
        username: Some("alerts".into()),
        password_env: password_env.into(),
        from: "centinela <alerts@example.org>".into(),
        to: vec!["ops@example.org".into()],
        timeout: centinela::config::Duration::from_secs(5),
    }
}

fn show(r: &[CheckResult]) -> String {
    r.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn smtp_login_is_checked_and_a_test_mail_sent() {
    let mut server = SmtpServer::start_with_auth("alerts", "right");
    std::env::set_var("CENTINELA_DOCTOR_PW_RIGHT", "right");
    std::env::set_var("CENTINELA_DOCTOR_PW_WRONG", "wrong");

    let r = doctor(
        &(NotifyConfig {
            email: Some(email(server.port, "CENTINELA_DOCTOR_PW_RIGHT")),
            ..Default::default()
        }),
        true,
    )
    .await;
    assert_eq!(r.len(), 2, "{}", show(&r));
    assert!(r.iter().all(|c| c.ok), "{}", show(&r));
    assert!(r[0].message.contains("logged in as alerts"), "{}", show(&r));
    let mails = server.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].subject, "[TEST] centinela can send mail");

    let r = doctor(
        &(NotifyConfig {
            email: Some(email(server.port, "CENTINELA_DOCTOR_PW_WRONG")),
            ..Default::default()
        }),
        false,
    )
    .await;
    assert!(!r[0].ok);
    assert!(
        r[0].message.contains("refused the login for \"alerts\""),
        "{}",
        show(&r)
    );
    assert!(
        r[0].message.contains("$CENTINELA_DOCTOR_PW_WRONG"),
        "{}",
        show(&r)
    );
    assert!(
        !r[0].message.contains("wrong"),
        "the password leaked: {}",
        show(&r)
    );

    let r = doctor(
        &(NotifyConfig {
            email: Some(email(server.port, "CENTINELA_DOCTOR_PW_UNSET")),
            ..Default::default()
        }),
        false,
    )
    .await;
    assert!(!r[0].ok);
    assert!(
        r[0].message
            .contains("CENTINELA_DOCTOR_PW_UNSET is not set"),
        "{}",
        show(&r)
    );

    server.down();
    let r = doctor(
        &(NotifyConfig {
            email: Some(email(server.port, "CENTINELA_DOCTOR_PW_RIGHT")),
            ..Default::default()
        }),
        false,
    )
    .await;
    assert!(!r[0].ok);
    assert!(
        r[0].message
            .contains("connection refused; is the mail server running"),
        "{}",
        show(&r)
    );
}

#[tokio::test]
async fn telegram_token_and_every_chat_are_checked() {
    let api = Standin::start("5:good").await;
    api.know_chat(111, "ops");
    api.block(333);
    std::env::set_var("CENTINELA_DOCTOR_TG_GOOD", "5:good");
    std::env::set_var("CENTINELA_DOCTOR_TG_BAD", "5:bad");
    let tg = |env: &str| TelegramConfig {
        token_env: env.into(),
        chat_ids: vec![111, 222, 333],
        api_url: api.url.clone(),
        bot: true,
    };

    let r = doctor(
        &NotifyConfig {
            telegram: Some(tg("CENTINELA_DOCTOR_TG_GOOD")),
            ..Default::default()
        },
        true,
    )
    .await;
    let text = show(&r);
    assert_eq!(r.len(), 4, "{text}");
    assert!(r[0].ok && r[0].message.contains("@centinela_bot"), "{text}");
    assert!(
        r[1].ok && r[1].target == "chat 111" && r[1].message.contains("test message sent"),
        "{text}"
    );
    assert!(
        !r[2].ok && r[2].message.contains("send /start to @centinela_bot"),
        "{text}"
    );
    assert!(
        !r[3].ok && r[3].message.contains("blocked") && r[3].message.contains("remove 333"),
        "{text}"
    );
    let sent = api.sent();
    assert_eq!(sent.len(), 1, "only the reachable chat gets the test");
    assert!(sent[0].text.contains("centinela test message"));

    let r = doctor(
        &NotifyConfig {
            telegram: Some(tg("CENTINELA_DOCTOR_TG_BAD")),
            ..Default::default()
        },
        false,
    )
    .await;
    assert_eq!(r.len(), 1, "{}", show(&r));
    assert!(
        r[0].message
            .contains("refuses the token in $CENTINELA_DOCTOR_TG_BAD"),
        "{}",
        show(&r)
    );
    assert!(!show(&r).contains("5:bad"), "the token leaked");

    let r = doctor(
        &NotifyConfig {
            telegram: Some(tg("CENTINELA_DOCTOR_TG_UNSET")),
            ..Default::default()
        },
        false,
    )
    .await;
    assert!(
        r[0].message
            .contains("CENTINELA_DOCTOR_TG_UNSET is not set"),
        "{}",
        show(&r)
    );
}

#[tokio::test]
async fn webhook_reachability() {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/alerts",
        post(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let hook = |url: String| NotifyConfig {
        webhook: Some(WebhookConfig {
            timeout: centinela::config::Duration::from_secs(3),
            ..WebhookConfig::new(url)
        }),
        ..Default::default()
    };

    let r = doctor(&hook(format!("{base}/alerts")), false).await;
    assert!(
        r[0].ok && r[0].message.starts_with("reachable"),
        "{}",
        show(&r)
    );
    let r = doctor(&hook(format!("{base}/alerts")), true).await;
    assert!(
        r[0].ok && r[0].message.contains("test event accepted (HTTP 204)"),
        "{}",
        show(&r)
    );
    let r = doctor(&hook(format!("{base}/wrong")), true).await;
    assert!(
        !r[0].ok && r[0].message.contains("HTTP 404"),
        "{}",
        show(&r)
    );
    let port = smtp_server::free_port();
    let r = doctor(&hook(format!("http://127.0.0.1:{port}/alerts")), false).await;
    assert!(
        !r[0].ok && r[0].message.contains("cannot connect"),
        "{}",
        show(&r)
    );

    let r = doctor(&NotifyConfig::default(), false).await;
    assert!(
        !r[0].ok && r[0].message.contains("no channel is configured"),
        "{}",
        show(&r)
    );
}
