//! A real Apache Kafka 4 broker (KRaft, one node that is broker and controller) on free
//! loopback ports, started from the jars `.ci/install-kafka.sh` assembles into
//! `.cache/kafka/lib`, and a few client helpers (librdkafka through rdkafka).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

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
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Kafka {
    /// `None` (after saying SKIPPED) when Java or the jars are missing.
    pub fn start() -> Option<Kafka> {
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
        let (port, cport) = (free_port(), free_port());
        let props = dir.path().join("server.properties");
        std::fs::write(
            &props,
            format!(
                "process.roles=broker,controller\nnode.id=1\n\
                 controller.quorum.voters=1@127.0.0.1:{cport}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
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
        let out = Command::new("java")
            .args(["-cp", &cp, "kafka.tools.StorageTool", "format", "-t"])
            .arg("q1Sh-9_ISia_zwGINzRvyQ")
            .arg("-c")
            .arg(&props)
            .output()
            .unwrap();
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
        let k = Kafka { port, child, dir };
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
