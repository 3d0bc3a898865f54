//! The whole path from a sensor to a person: a reading published over MQTT crosses a
//! threshold, the engine fires, the outbox and the email worker deliver one mail to a
//! real SMTP server; the resolve comes as a second mail; a restart sends nothing again.

mod support;

use std::time::Duration;
use support::smtp_server;

use centinela::config::Config;
use centinela::service::{Options, Service};
use smtp_server::SmtpServer;
use support::mqtt::{free_port, Publisher};

fn config(port: u16, smtp_port: u16) -> Config {
    let text = format!(
        "[broker]\nlisten = \"127.0.0.1:{port}\"\n\n[engine]\ntick = \"100ms\"\n\n\
         [notify.email]\nsmtp = \"127.0.0.1:{smtp_port}\"\ntls = \"none\"\nfrom = \"centinela <alerts@example.org>\"\nto = [\"ops@example.org\"]\n\n\
         [[rules]]\nname = \"greenhouse-hot\"\nseries = \"greenhouse/+/temperature\"\nkind = \"threshold\"\nabove = 30.0\nclear = 28.0\n\
         severity = \"critical\"\nnotify = [\"email\"]\nmessage = \"{{series}} {{value}}{{unit}} > {{threshold}}\"\n"
    );
    Config::parse(&text, "test.toml").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_crossing_is_mailed_once_and_its_resolve_too() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = dir.path().join("c.db");
    let svc = Service::start(
        config(port, smtp.port),
        Options {
            db_path: Some(db.clone()),
        },
    )
    .await
    .unwrap();
    let mut p = Publisher::connect(port, "mail-sensor", None).await;
    let t0 = support::clock::past_t0();
    p.publish(
        "sensors/greenhouse/node1/temperature",
        format!(r#"{{"value":31.2,"unit":" °C","ts":{t0}}}"#),
    )
    .await;
    p.publish(
        "sensors/greenhouse/node1/temperature",
        format!(r#"{{"value":31.5,"unit":" °C","ts":{}}}"#, t0 + 1000),
    )
    .await;
    p.wait_acked(2).await;
    let mails = smtp.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(
        mails[0].subject,
        "[CRITICAL] greenhouse/node1/temperature 31.2 °C > 30"
    );
    assert_eq!(mails[0].rcpt_tos, vec!["ops@example.org".to_string()]);
    assert!(
        mails[0].text.is_some() && mails[0].html.is_some(),
        "text and HTML parts"
    );

    p.publish(
        "sensors/greenhouse/node1/temperature",
        format!(r#"{{"value":27,"unit":" °C","ts":{}}}"#, t0 + 60_000),
    )
    .await;
    p.wait_acked(3).await;
    let mails = smtp.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(mails.len(), 2);
    assert!(
        mails[1].subject.starts_with("[RESOLVED] "),
        "{}",
        mails[1].subject
    );
    svc.shutdown().await.unwrap();

    // A restart on the same database announces nothing again (on another port: the
    // embedded broker of the first run lives as long as this process).
    let svc = Service::start(
        config(free_port(), smtp.port),
        Options { db_path: Some(db) },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    svc.shutdown().await.unwrap();
    assert_eq!(smtp.mails().len(), 2);
}
