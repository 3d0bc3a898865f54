//! The terminal UI as a person uses it: the real binary in tmux, attached to a running
//! service; readings and an alert appear, `a` acknowledges it, `q` leaves a usable shell.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::mqtt::{free_port, Publisher};

const BIN: &str = env!("CARGO_BIN_EXE_centinela");

struct Tmux(String);

impl Tmux {
    fn start(name: &str) -> Option<Tmux> {
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "150",
                "-y",
                "40",
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

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_service(config: &Path, port: u16) -> Service {
    let child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "service did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Service(child)
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
