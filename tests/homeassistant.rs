//! Home Assistant MQTT discovery with the real binary: what a Home Assistant connected
//! to the broker receives — one binary_sensor per rule at start, one per alert when it
//! fires, ON/OFF states, and availability from the service's status, `offline` when
//! the service stops (cleanly, or killed: the broker's last will, with an external
//! Mosquitto).

mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::mqtt::{free_port, Mosquitto, Publisher};

const BIN: &str = env!("CARGO_BIN_EXE_centinela");
const USER: &str = "homeassistant";
const PASS: &str = "ha-test-password";

fn config(dir: &std::path::Path, broker: &str) -> std::path::PathBuf {
    let path = dir.join("c.toml");
    let text = format!(
        "{broker}\n[storage.sqlite]\npath = \"{}\"\nflush_interval = \"200ms\"\n\
         [homeassistant]\ndiscovery = true\n\
         [[rules]]\nname = \"greenhouse-hot\"\nseries = \"greenhouse/+/temperature\"\n\
         kind = \"threshold\"\nabove = 30.0\nclear = 28.0\n",
        dir.join("c.db").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn start(config: &std::path::Path) -> Child {
    Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("CENTINELA_MQTT_PASSWORD", PASS)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("centinela runs")
}

/// Home Assistant's side: every retained topic's last payload.
struct Watcher {
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    seen: HashMap<String, String>,
    _task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    async fn connect(port: u16, creds: bool) -> Watcher {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut opts = MqttOptions::new(format!("ha-{}", free_port()), "127.0.0.1", port);
            if creds {
                opts.set_credentials(USER, PASS);
            }
            let (client, mut ev) = AsyncClient::new(opts, 100);
            let mut ok = false;
            let probe = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    match ev.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
                        Ok(_) => {}
                        Err(_) => return false,
                    }
                }
            });
            if let Ok(true) = probe.await {
                ok = true;
            }
            if ok {
                for f in ["homeassistant/#", "centinela/ha/#", "centinela/status"] {
                    client.subscribe(f, QoS::AtLeastOnce).await.unwrap();
                }
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let task = tokio::spawn(async move {
                    let _client = client;
                    loop {
                        match ev.poll().await {
                            Ok(Event::Incoming(Packet::Publish(p))) => {
                                let body = String::from_utf8_lossy(&p.payload).into_owned();
                                if tx.send((p.topic.clone(), body)).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                });
                return Watcher {
                    rx,
                    seen: HashMap::new(),
                    _task: task,
                };
            }
            assert!(
                Instant::now() < deadline,
                "broker on {port} never accepted Home Assistant"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `topic` last said `want` (or, with `want` empty, said anything).
    async fn wait(&mut self, topic: &str, want: &str) -> String {
        self.wait_for(topic, want, |v| want.is_empty() || v == want)
            .await
    }

    /// Waits until the service's retained status says it is `offline` (or not).
    async fn wait_offline(&mut self, offline: bool) {
        let what = if offline { "offline" } else { "online" };
        self.wait_for("centinela/status", what, |v| {
            let s: serde_json::Value = serde_json::from_str(v).unwrap();
            s["offline"].as_bool().unwrap_or(false) == offline
        })
        .await;
    }

    async fn wait_for(&mut self, topic: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(v) = self.seen.get(topic) {
                if ok(v) {
                    return v.clone();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some((t, b))) => {
                    self.seen.insert(t, b);
                }
                _ => panic!("{topic} never said {what:?}; seen: {:#?}", self.seen),
            }
        }
    }
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "centinela did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_states_appear_in_home_assistant() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(
        dir.path(),
        &format!("[broker]\nlisten = \"127.0.0.1:{port}\"\nusername = \"{USER}\""),
    );
    let mut child = start(&cfg);
    let mut ha = Watcher::connect(port, true).await;

    let rule = ha
        .wait(
            "homeassistant/binary_sensor/centinela/rule_greenhouse-hot/config",
            "",
        )
        .await;
    let rule: serde_json::Value = serde_json::from_str(&rule).unwrap();
    assert_eq!(rule["state_topic"], "centinela/ha/greenhouse-hot");
    assert_eq!(rule["device_class"], "problem");
    assert_eq!(rule["availability_topic"], "centinela/status");
    ha.wait_offline(false).await;

    let p = Publisher::connect(port, "sensor", Some((USER, PASS))).await;
    p.publish("sensors/greenhouse/node1/temperature", "35")
        .await;
    let alert = ha
        .wait(
            "homeassistant/binary_sensor/centinela/alert_greenhouse-hot_greenhouse_node1_temperature/config",
            "",
        )
        .await;
    let alert: serde_json::Value = serde_json::from_str(&alert).unwrap();
    assert_eq!(alert["name"], "greenhouse-hot greenhouse/node1/temperature");
    let state = alert["state_topic"].as_str().unwrap().to_string();
    assert_eq!(
        state,
        "centinela/ha/greenhouse-hot/greenhouse/node1/temperature"
    );
    ha.wait(&state, "ON").await;
    ha.wait("centinela/ha/greenhouse-hot", "ON").await;

    p.publish("sensors/greenhouse/node1/temperature", "20")
        .await;
    ha.wait(&state, "OFF").await;
    ha.wait("centinela/ha/greenhouse-hot", "OFF").await;

    stop(&mut child);
    ha.wait_offline(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_is_offline_through_the_last_will() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let Some(_mosq) = Mosquitto::start(dir.path(), port, None) else {
        eprintln!("SKIPPED: mosquitto is not installed (.ci/run installs it)");
        return;
    };
    let cfg = config(
        dir.path(),
        &format!("[broker]\nmode = \"external\"\nurl = \"mqtt://127.0.0.1:{port}\""),
    );
    let mut child = start(&cfg);
    let mut ha = Watcher::connect(port, false).await;
    ha.wait_offline(false).await;
    ha.wait(
        "homeassistant/binary_sensor/centinela/rule_greenhouse-hot/config",
        "",
    )
    .await;
    child.kill().unwrap();
    let _ = child.wait();
    // Mosquitto publishes the will once it notices the connection is gone.
    ha.wait_offline(true).await;
}
