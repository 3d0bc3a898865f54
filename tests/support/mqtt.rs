//! A real MQTT client (rumqttc over TCP) and a real Mosquitto server for tests.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A connected publisher; its event loop runs in a task.
pub struct Publisher {
    pub client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
    acked: tokio::sync::watch::Receiver<u64>,
}

impl Publisher {
    pub async fn connect(port: u16, id: &str, creds: Option<(&str, &str)>) -> Publisher {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((u, p)) = creds {
            opts.set_credentials(u, p);
        }
        let (client, mut ev) = AsyncClient::new(opts, 10_000);
        let (ack_tx, acked) = tokio::sync::watch::channel(0u64);
        let (conn_tx, conn_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut conn_tx = Some(conn_tx);
            let mut n = 0;
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(t) = conn_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        n += 1;
                        let _ = ack_tx.send(n);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), conn_rx)
            .await
            .expect("connect timed out")
            .unwrap();
        Publisher {
            client,
            task,
            acked,
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
    }

    /// Waits until `n` QoS 1 publishes have been acknowledged by the broker.
    pub async fn wait_acked(&mut self, n: u64) {
        self.wait_acked_within(n, Duration::from_secs(20)).await
    }

    /// [`Self::wait_acked`] for bigger bursts, with its own deadline.
    pub async fn wait_acked_within(&mut self, n: u64, max: Duration) {
        let deadline = Instant::now() + max;
        while *self.acked.borrow() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} publishes acknowledged",
                *self.acked.borrow()
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), self.acked.changed()).await;
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Mosquitto broker on a free loopback port; killed on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    conf: std::path::PathBuf,
}

impl Mosquitto {
    /// `None` when mosquitto is not installed (the test then says so and skips).
    pub fn start(dir: &Path, port: u16, password: Option<(&str, &str)>) -> Option<Mosquitto> {
        Self::start_with(dir, port, password, "")
    }

    /// [`Self::start`] with more lines of configuration (`extra`) at the end.
    pub fn start_with(
        dir: &Path,
        port: u16,
        password: Option<(&str, &str)>,
        extra: &str,
    ) -> Option<Mosquitto> {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        let mut text = format!(
            "listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nuser root\nautosave_interval 1\n",
            dir.display()
        );
        match password {
            Some((u, p)) => {
                let pw = dir.join("passwd");
                let ok = Command::new("mosquitto_passwd")
                    .arg("-c")
                    .arg("-b")
                    .arg(&pw)
                    .arg(u)
                    .arg(p)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "mosquitto_passwd failed");
                text.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    pw.display()
                ));
            }
            None => text.push_str("allow_anonymous true\n"),
        }
        text.push_str(extra);
        std::fs::write(&conf, text).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Mosquitto { port, child, conf })
    }

    /// Stops the server (SIGTERM, so it saves its persistence file) and starts it again
    /// on the same port with the same configuration.
    pub fn restart(&mut self) {
        unsafe_kill(self.child.id(), 15);
        let _ = self.child.wait();
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap();
        self.child = Command::new(bin)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}
