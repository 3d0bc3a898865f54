//! The terminal UI as a person uses it: the real binary in tmux, attached to a running
//! service; readings and an alert appear, `a` acknowledges it, `q` leaves a usable shell.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::mqtt::{free_port, Mosquitto, Publisher};
use support::process::{service, spawn_listening, KillOnDrop, BIN};

struct Tmux(String);

impl Tmux {
    fn start(name: &str) -> Option<Tmux> {
        Self::sized(name, 150, 40)
    }

    fn sized(name: &str, w: u16, h: u16) -> Option<Tmux> {
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
                "bash --norc --noprofile",
            ])
            .env("PS1", "$ ")
            .status()
            .ok()?
            .success();
        ok.then(|| Tmux(name.to_string()))
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.0.as_str()];
        args.extend_from_slice(keys);
        assert!(Command::new("tmux").args(&args).status().unwrap().success());
    }

    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    async fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{s}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

fn start_service(config: &Path, port: u16) -> KillOnDrop {
    KillOnDrop(spawn_listening(
        service(config)
            .stdout(Stdio::inherit())
            .stderr(Stdio::null()),
        port,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tui_attached_to_a_service_shows_readings_alerts_and_acks() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("!!! SKIPPED: tmux is not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = dir.path().join("c.db");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"127.0.0.1:{port}\"\n[storage.sqlite]\npath = \"{}\"\nflush_interval = \"200ms\"\n[engine]\ntick = \"100ms\"\n\
             [[rules]]\nname = \"hot\"\nseries = \"gh/+/temperature\"\nkind = \"threshold\"\nabove = 30.0\nseverity = \"critical\"\n",
            db.display()
        ),
    )
    .unwrap();
    let _svc = start_service(&config, port);

    let tmux = Tmux::start(&format!("centinela-test-{port}")).expect("tmux starts");
    tmux.keys(&[
        &format!("{BIN} tui --config {} ; echo EXIT=$?", config.display()),
        "Enter",
    ]);
    tmux.wait_for("the header", |s| {
        s.contains("centinela") && s.contains("broker")
    })
    .await;

    let mut p = Publisher::connect(port, "tmux-sensor", None).await;
    p.publish("sensors/gh/n1/temperature", r#"{"value":21.5,"unit":"°C"}"#)
        .await;
    p.wait_acked(1).await;
    tmux.wait_for("the reading", |s| {
        s.contains("gh/n1/temperature") && s.contains("21.5 ")
    })
    .await;

    p.publish("sensors/gh/n1/temperature", r#"{"value":31.2,"unit":"°C"}"#)
        .await;
    p.wait_acked(2).await;
    tmux.wait_for("the firing alert", |s| {
        s.contains("hot/gh/n1/temperature") && s.contains("firing")
    })
    .await;

    tmux.keys(&["Tab"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    tmux.keys(&["a"]);
    tmux.wait_for("the acknowledgement", |s| s.contains("acked"))
        .await;
    // The service recorded it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = Command::new(BIN)
            .args([
                "alerts",
                "--db",
                db.to_str().unwrap(),
                "--state",
                "acknowledged",
                "--json",
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&o.stdout).contains("\"rule\":\"hot\"") {
            break;
        }
        assert!(Instant::now() < deadline, "no acknowledged event stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    tmux.keys(&["q"]);
    tmux.wait_for("the exit", |s| s.contains("EXIT=0")).await;
    // The shell is usable: the terminal is back in canonical mode with echo.
    tmux.keys(&[
        "stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' +; echo",
        "Enter",
    ]);
    tmux.wait_for("a restored terminal", |s| {
        s.contains("icanon+echo+") || s.contains("echo+icanon+")
    })
    .await;
}

fn tmux_missing() -> bool {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("!!! SKIPPED: tmux is not installed (.ci/run installs it)");
        return true;
    }
    false
}

/// The footer (last line of the screen) starts with the help and quit hints.
fn footer_ok(s: &str) -> bool {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .is_some_and(|l| l.starts_with(" ?  help   q  quit"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_at_80x24_shows_the_keys_the_alerts_and_where_things_are() {
    if tmux_missing() {
        return;
    }
    let port = free_port();
    let tmux = Tmux::sized(&format!("centinela-demo-{port}"), 80, 24).expect("tmux starts");
    tmux.keys(&[
        &format!("{BIN} demo --listen 127.0.0.1:{port} ; echo EXIT=$?"),
        "Enter",
    ]);
    let s = tmux
        .wait_for("series and the footer", |s| {
            s.contains("Series") && s.contains("Alerts") && footer_ok(s)
        })
        .await;
    println!("{s}");
    // Where things are: in the event log at once, and in the help popup.
    tmux.keys(&["?"]);
    let s = tmux
        .wait_for("the help popup", |s| s.contains("Keys · Esc closes"))
        .await;
    println!("{s}");
    for want in [
        format!("mqtt://127.0.0.1:{port}"),
        "centinela.db".to_string(),
        format!("mosquitto_sub -h 127.0.0.1 -p {port} -t 'sensors/#' -v"),
        "series detail: chart, thresholds, alerts".to_string(),
    ] {
        assert!(s.contains(&want), "help lacks {want:?}:\n{s}");
    }
    tmux.keys(&["Escape"]);
    tmux.wait_for("the help closed", |s| !s.contains("Keys · Esc closes"))
        .await;
    tmux.keys(&["q"]);
    let s = tmux.wait_for("the exit", |s| s.contains("EXIT=0")).await;
    // After quitting, the path printed says it is gone (lines wrap at 80 columns).
    assert!(
        s.replace('\n', "")
            .contains("deleted now; keep it with --data-dir DIR"),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_tui_at_80x24_lists_every_series_and_says_when_the_service_stops() {
    if tmux_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let Some(_mosquitto) = Mosquitto::start(dir.path(), port, None) else {
        eprintln!("!!! SKIPPED: mosquitto is not installed (.ci/run installs it)");
        return;
    };
    let db = dir.path().join("c.db");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nmode = \"external\"\nurl = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"svc-{port}\"\n\
             [storage.sqlite]\npath = \"{}\"\nflush_interval = \"200ms\"\n[engine]\ntick = \"100ms\"\n\
             [[rules]]\nname = \"hot\"\nseries = \"gh/+/temperature\"\nkind = \"threshold\"\nabove = 30.0\nseverity = \"critical\"\n",
            db.display()
        ),
    )
    .unwrap();
    let mut svc = KillOnDrop(
        service(&config)
            .stdout(Stdio::inherit())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Ten series report once, one of them hot, before the viewer starts.
    let mut p = Publisher::connect(port, "tmux-sensors", None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..10 {
        let v = if i == 3 { 31.5 } else { 20.0 + i as f64 };
        p.publish(
            &format!("sensors/gh/n{i}/temperature"),
            format!(r#"{{"value":{v},"unit":"°C"}}"#),
        )
        .await;
    }
    p.wait_acked(10).await;
    // Stored in the service's catalogue.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = Command::new(BIN)
            .args(["readings", "--db", db.to_str().unwrap(), "--json"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&o.stdout).lines().count() >= 10 {
            break;
        }
        assert!(Instant::now() < deadline, "readings not stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let tmux = Tmux::sized(&format!("centinela-remote-{port}"), 80, 24).expect("tmux starts");
    tmux.keys(&[
        &format!("{BIN} tui --config {} ; echo EXIT=$?", config.display()),
        "Enter",
    ]);
    let s = tmux
        .wait_for("every series with its value", |s| {
            s.contains("Series 10 of 10") && s.contains("hot/gh/n3/temperature") && footer_ok(s)
        })
        .await;
    println!("{s}");
    let row = s
        .lines()
        .find(|l| l.contains("│● critical gh/n3/temperature"))
        .unwrap_or_else(|| panic!("no row of the hot series:\n{s}"));
    assert!(row.contains("31.5 °C"), "{row}");
    assert!(!row.contains(" - "), "value or age missing: {row}");

    // Without the database (another machine): the service's retained catalogue.
    tmux.keys(&["q"]);
    tmux.wait_for("the first exit", |s| s.contains("EXIT=0"))
        .await;
    tmux.keys(&["clear", "Enter"]);
    tmux.keys(&[
        &format!(
            "{BIN} tui --config {} --db {}/elsewhere.db ; echo EXIT=$?",
            config.display(),
            dir.path().display()
        ),
        "Enter",
    ]);
    let s = tmux
        .wait_for("every series from the catalogue", |s| {
            s.contains("Series 10 of 10") && s.contains("hot/gh/n3/temperature") && footer_ok(s)
        })
        .await;
    println!("{s}");
    let row = s
        .lines()
        .find(|l| l.contains("│● critical gh/n3/temperature"))
        .unwrap_or_else(|| panic!("no row of the hot series:\n{s}"));
    assert!(row.contains("31.5 °C"), "{row}");

    // The service stops cleanly; the broker stays with its retained status.
    unsafe_kill(svc.0.id(), 15);
    let _ = svc.0.wait();
    let s = tmux
        .wait_for("the offline service", |s| {
            s.lines()
                .next()
                .is_some_and(|l| l.contains("SERVICE OFFLINE"))
        })
        .await;
    println!("{s}");
    let header = s.lines().next().unwrap();
    assert!(!header.contains("outbox"), "{header}");
    tmux.keys(&["q"]);
    tmux.wait_for("the exit", |s| s.contains("EXIT=0")).await;
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// `tui --broker` reads the `[[ingest.map]]` mappings of the configuration it loads:
/// a Zigbee2MQTT device's JSON shows as its mapped series, live, at 80×24.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_tui_shows_series_of_topic_mappings_live() {
    if tmux_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let Some(_mosquitto) = Mosquitto::start(dir.path(), port, None) else {
        eprintln!("!!! SKIPPED: mosquitto is not installed (.ci/run installs it)");
        return;
    };
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nmode = \"external\"\nurl = \"mqtt://127.0.0.1:{port}\"\n\
             [storage.sqlite]\npath = \"{}/none.db\"\n\
             [[ingest.map]]\nfilter = \"zigbee2mqtt/+\"\nseries = \"zigbee/{{1}}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let tmux = Tmux::sized(&format!("centinela-map-{port}"), 80, 24).expect("tmux starts");
    tmux.keys(&[
        &format!("{BIN} tui --config {} ; echo EXIT=$?", config.display()),
        "Enter",
    ]);
    tmux.wait_for("the viewer", footer_ok).await;
    // The device reports every 300 ms (the viewer subscribes after its CONNACK).
    let p = Publisher::connect(port, "z2m", None).await;
    let device = tokio::spawn(async move {
        for i in 0..200 {
            p.publish(
                "zigbee2mqtt/kitchen",
                format!(r#"{{"temperature":21.5,"humidity":40,"battery":{},"linkquality":120,"state":"ON"}}"#, 90 + i % 2),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let s = tmux
        .wait_for("the mapped series", |s| {
            s.contains("zigbee/kitchen/temperature") && s.contains("zigbee/kitchen/humidity")
        })
        .await;
    println!("{s}");
    let row = s
        .lines()
        .find(|l| l.contains("zigbee/kitchen/temperature"))
        .unwrap();
    assert!(row.contains("21.5"), "{row}");
    assert!(
        !s.contains("zigbee/kitchen/state"),
        "a string is not a series:\n{s}"
    );
    device.abort();
    tmux.keys(&["q"]);
    tmux.wait_for("the exit", |s| s.contains("EXIT=0")).await;
}
