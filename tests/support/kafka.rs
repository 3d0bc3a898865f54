//! A real Apache Kafka 4 broker (KRaft, one node that is broker and controller) on free
//! loopback ports, started from the jars `.ci/install-kafka.sh` assembles into
//! `.cache/kafka/lib`, and a few client helpers (librdkafka through rdkafka).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use std::collections::HashMap;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the broker's jars are: `CENTINELA_KAFKA_LIB`, or the checkout's cache.
fn lib_dir() -> PathBuf {
    match std::env::var_os("CENTINELA_KAFKA_LIB") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/kafka/lib"),
    }
}

pub struct Kafka {
    pub port: u16,
    /// The SASL_PLAINTEXT listener of [`Kafka::start_sasl`].
    pub sasl_port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Kafka {
    /// `None` (after saying SKIPPED) when Java or the jars are missing.
    pub fn start() -> Option<Kafka> {
        Kafka::start_with(None)
    }

    /// With a second listener, SASL_PLAINTEXT on [`Kafka::sasl_port`], that takes PLAIN
    /// and SCRAM-SHA-256 for `user` with `password`.
    pub fn start_sasl(user: &str, password: &str) -> Option<Kafka> {
        Kafka::start_with(Some((user, password)))
    }

    fn start_with(sasl: Option<(&str, &str)>) -> Option<Kafka> {
        let lib = lib_dir();
        if !lib.join(".complete").exists() || Command::new("java").arg("-version").output().is_err()
        {
            eprintln!(
                "\n!!! SKIPPED: no Kafka jars in {} or no java; run .ci/install-kafka.sh !!!\n",
                lib.display()
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (port, cport, sport) = (free_port(), free_port(), free_port());
        let props = dir.path().join("server.properties");
        let (listeners, map, extra) = match sasl {
            None => (String::new(), String::new(), String::new()),
            Some((user, password)) => (
                format!(",SASL_PLAINTEXT://127.0.0.1:{sport}"),
                ",SASL_PLAINTEXT:SASL_PLAINTEXT".to_string(),
                format!(
                    "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256\n\
                     listener.name.sasl_plaintext.plain.sasl.jaas.config=\
                     org.apache.kafka.common.security.plain.PlainLoginModule required \
                     user_{user}=\"{password}\";\n\
                     listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=\
                     org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
                ),
            ),
        };
        std::fs::write(
            &props,
            format!(
                "process.roles=broker,controller\nnode.id=1\n\
                 controller.quorum.voters=1@127.0.0.1:{cport}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}{listeners}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}{listeners}\n\
                 controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{map}\n{extra}\
                 log.dirs={}\nnum.partitions=6\noffsets.topic.replication.factor=1\n\
                 offsets.topic.num.partitions=6\n\
                 transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n\
                 transaction.state.log.num.partitions=6\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n\
                 log.cleaner.dedupe.buffer.size=2097152\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log4j = dir.path().join("log4j2.properties");
        std::fs::write(
            &log4j,
            format!(
                "rootLogger.level=INFO\nrootLogger.appenderRef.f.ref=F\n\
                 appender.f.type=File\nappender.f.name=F\nappender.f.fileName={}\n\
                 appender.f.layout.type=PatternLayout\nappender.f.layout.pattern=%d %p %c %m%n\n",
                dir.path().join("server.log").display()
            ),
        )
        .unwrap();
        let cp = format!("{}/*", lib.display());
        let mut format = Command::new("java");
        format
            .args(["-cp", &cp, "kafka.tools.StorageTool", "format", "-t"])
            .arg("q1Sh-9_ISia_zwGINzRvyQ")
            .arg("-c")
            .arg(&props);
        if let Some((user, password)) = sasl {
            format
                .arg("--add-scram")
                .arg(format!("SCRAM-SHA-256=[name={user},password={password}]"));
        }
        let out = format.output().unwrap();
        assert!(
            out.status.success(),
            "kafka storage format failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let child = Command::new("java")
            .args(["-Xmx384m", "-XX:+UseSerialGC", "-cp", &cp])
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg("kafka.Kafka")
            .arg(&props)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let k = Kafka {
            port,
            sasl_port: sport,
            child,
            dir,
        };
        k.wait_ready();
        Some(k)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.log().contains("Kafka Server started") {
            assert!(
                Instant::now() < deadline,
                "Kafka did not start within 90 s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        c
    }

    /// Creates `name` with `partitions` (and waits until the broker knows it).
    pub async fn create_topic(&self, name: &str, partitions: i32, compacted: bool) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().unwrap();
        let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        if compacted {
            t = t.set("cleanup.policy", "compact");
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let r = admin.create_topics(&[t], &opts).await.unwrap();
        for x in r {
            if let Err((n, e)) = x {
                assert_eq!(
                    e,
                    rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                    "creating {n}"
                );
            }
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every message of `topics` from the start, until `want` arrived (or 60 s passed):
/// (topic, key, value as JSON).
pub fn read_all(
    k: &Kafka,
    topics: &[&str],
    want: usize,
) -> Vec<(String, String, serde_json::Value)> {
    read_settled(k, topics, want, Duration::ZERO)
}

/// As [`read_all`], then reads on for `settle` to catch what should not be there.
pub fn read_settled(
    k: &Kafka,
    topics: &[&str],
    want: usize,
    settle: Duration,
) -> Vec<(String, String, serde_json::Value)> {
    let c: BaseConsumer = k
        .client()
        .set("group.id", format!("reader-{}", free_port()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    c.subscribe(topics).unwrap();
    let mut out = Vec::new();
    let mut deadline = Instant::now() + Duration::from_secs(60);
    let mut settling = false;
    while Instant::now() < deadline {
        if out.len() >= want && !settling {
            settling = true;
            deadline = Instant::now() + settle;
        }
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let key = String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap();
            let v = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            out.push((m.topic().to_string(), key, v));
        }
    }
    out
}

/// Produces `(partition, key, value)` with a real producer and waits for every ack.
pub fn produce(k: &Kafka, topic: &str, msgs: &[(i32, Option<String>, String)]) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let p: ThreadedProducer<DefaultProducerContext> =
        k.client().set("linger.ms", "5").create().unwrap();
    for (part, key, value) in msgs {
        let mut r = BaseRecord::to(topic)
            .partition(*part)
            .payload(value.as_str());
        if let Some(key) = key {
            r = r.key(key.as_str());
        }
        let mut r = r;
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// Offsets the group has committed, summed over the topic's partitions.
pub fn committed(k: &Kafka, group: &str, topic: &str, partitions: i32) -> i64 {
    let c: BaseConsumer = k.client().set("group.id", group).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

/// A `centinela run` process whose stderr is collected.
pub struct Run {
    pub child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    pub db: std::path::PathBuf,
}

impl Run {
    pub fn start(dir: &std::path::Path, name: &str, config: &str) -> Run {
        use std::io::BufRead;
        let path = dir.join(format!("{name}.toml"));
        let db = dir.join(format!("{name}.db"));
        std::fs::write(
            &path,
            config.replace(
                "[storage.sqlite]\n",
                &format!("[storage.sqlite]\npath = \"{}\"\n", db.display()),
            ),
        )
        .unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_centinela"))
            .args(["run", "--config", path.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (err, l) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Run { child, log, db }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_log(&self, what: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log().matches(what).count() < times {
            assert!(Instant::now() < deadline, "no {what:?} in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Series → readings stored, read with `centinela readings --json`.
    pub fn stored(&self) -> HashMap<String, usize> {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_centinela"))
            .args([
                "readings",
                "--db",
                self.db.to_str().unwrap(),
                "--json",
                "--since",
                "1d",
            ])
            .output()
            .unwrap();
        let mut out = HashMap::new();
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *out.entry(v["series"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        out
    }

    /// Every stored reading: (series, ts as printed, value), with `readings --json`.
    pub fn rows(&self) -> Vec<(String, String, f64)> {
        let o = Command::new(env!("CARGO_BIN_EXE_centinela"))
            .args([
                "readings",
                "--db",
                self.db.to_str().unwrap(),
                "--json",
                "--since",
                "1d",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                (
                    v["series"].as_str().unwrap().to_string(),
                    v["ts"].as_str().unwrap().to_string(),
                    v["value"].as_f64().unwrap(),
                )
            })
            .collect()
    }

    /// SIGKILL: a crash, nothing flushed or committed on the way out.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success(), "exit {s:?}:\n{}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "did not stop:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
