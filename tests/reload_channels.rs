//! SIGHUP reloads the notification channels of a running `centinela run`: a
//! `[notify.webhook]` added to the file receives the next alert, one whose address
//! changed sends the next alert to the new address only, and one removed stops; a
//! section that needs a restart is named in the log. Real HTTP receivers, a real MQTT
//! publisher, the real binary.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::mqtt::{free_port, Publisher};
use support::process::service;
use support::webhook::Receiver;

/// The service's stderr, read as it comes.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<String>>);

impl Log {
    fn follow(child: &mut Child) -> Log {
        let log = Log::default();
        let mut err = child.stderr.take().unwrap();
        let out = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.0
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        log
    }

    fn count(&self, what: &str) -> usize {
        self.0.lock().unwrap().matches(what).count()
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

async fn wait_until(what: &str, log: &Log, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            log.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_config(dir: &Path, port: u16, flush: &str, notify: &str, webhook: Option<&str>) {
    let mut text = format!(
        "[broker]\nlisten = \"127.0.0.1:{port}\"\n\n[storage.sqlite]\npath = \"{}\"\nflush_interval = \"{flush}\"\n\n\
         [engine]\ntick = \"100ms\"\n\n\
         [[rules]]\nname = \"hot\"\nseries = \"gh/+/temperature\"\nkind = \"threshold\"\nabove = 30.0\nnotify = [{notify}]\n\n\
         [notify.outbox]\npoll_interval = \"100ms\"\n",
        dir.join("c.db").display()
    );
    if let Some(url) = webhook {
        text.push_str(&format!("\n[notify.webhook]\nurl = \"{url}\"\n"));
    }
    std::fs::write(dir.join("centinela.toml"), text).unwrap();
}

fn hup(child: &Child) {
    assert!(Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_changes_and_removes_notification_channels() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (first, first_url) = Receiver::start().await;
    let (second, second_url) = Receiver::start().await;

    // Start with no channel at all.
    write_config(dir.path(), port, "200ms", "", None);
    let mut svc = service(&dir.path().join("centinela.toml"))
        .env_remove("NOTIFY_SOCKET")
        .spawn()
        .unwrap();
    let log = Log::follow(&mut svc);
    wait_until("the pipeline", &log, || log.count("pipeline started") == 1).await;
    let mut p = Publisher::connect(port, "reload-channels", None).await;
    let t0 = support::clock::past_t0();
    let mut sent = 0;
    let mut publish = async |i: i64, v: f64| {
        p.publish(
            "sensors/gh/n1/temperature",
            format!(r#"{{"value":{v},"ts":{}}}"#, t0 + i * 1000),
        )
        .await;
        sent += 1;
        p.wait_acked(sent).await;
    };

    // Added: [notify.webhook] and the rule naming it, then SIGHUP; the next alert arrives.
    write_config(dir.path(), port, "200ms", "\"webhook\"", Some(&first_url));
    hup(&svc);
    wait_until("the reload", &log, || {
        log.count("notification channels reloaded") == 1 && log.count("rules reloaded") == 1
    })
    .await;
    assert!(log.text().contains("added=[\"webhook\"]"), "{}", log.text());
    publish(1, 35.0).await;
    wait_until("the firing alert at the added webhook", &log, || {
        first.states() == [("hot".to_string(), "firing".to_string())]
    })
    .await;

    // Changed: a new address (and a [storage] change, which needs a restart).
    write_config(dir.path(), port, "300ms", "\"webhook\"", Some(&second_url));
    hup(&svc);
    wait_until("the second reload", &log, || {
        log.count("notification channels reloaded") == 2 && log.count("rules reloaded") == 2
    })
    .await;
    let text = log.text();
    assert!(text.contains("changed=[\"webhook\"]"), "{text}");
    assert!(
        text.contains("[storage]") && text.contains("next restart"),
        "{text}"
    );
    publish(2, 20.0).await;
    wait_until("the resolved alert at the new address", &log, || {
        second.states() == [("hot".to_string(), "resolved".to_string())]
    })
    .await;
    assert_eq!(first.states().len(), 1, "the old address got more");

    // Removed: the section goes; its worker stops.
    write_config(dir.path(), port, "300ms", "", None);
    hup(&svc);
    wait_until("the third reload", &log, || {
        log.count("notification channels reloaded") == 3
    })
    .await;
    assert!(
        log.text().contains("removed=[\"webhook\"]"),
        "{}",
        log.text()
    );
    publish(3, 36.0).await;

    // An unchanged file leaves the workers alone.
    hup(&svc);
    wait_until("the unchanged reload", &log, || {
        log.count("notification channels unchanged") == 1
    })
    .await;

    assert!(Command::new("kill")
        .args(["-TERM", &svc.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert_eq!(svc.wait().unwrap().code(), Some(0), "{}", log.text());
    assert_eq!(first.states().len(), 1);
    assert_eq!(second.states().len(), 1);
}
