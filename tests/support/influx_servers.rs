//! Real InfluxDB 1.x and VictoriaMetrics servers for the tests: started on 127.0.0.1
//! with a free port and a temporary directory, stopped by PID (and killed on Drop).
//! `.ci/install-influx.sh` installs the binaries.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Whether `bin` is on PATH; when not, says loudly that the test is skipped.
pub fn have(bin: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    if !found {
        eprintln!("\n!!! SKIPPED: `{bin}` is not installed; run .ci/install-influx.sh to run this test !!!\n");
    }
    found
}

async fn wait_http(url: &str, ok: impl Fn(u16, &str) -> bool, what: &str, log: &Path) {
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(url).send().await {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            if ok(status, &text) {
                return;
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not become ready at {url} within 30 s; log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An `influxd` (1.x) process.
pub struct Influxd {
    child: Option<Child>,
    dir: TempDir,
    pub port: u16,
    config: PathBuf,
    /// Admin credentials when started with authentication.
    pub auth: Option<(String, String)>,
}

impl Influxd {
    /// Starts influxd; `None` (after a loud message) when it is not installed.
    pub async fn start() -> Option<Self> {
        Self::start_with(false).await
    }

    /// With `auth`, HTTP authentication is on and an admin `admin`/`admin-secret` exists.
    pub async fn start_with(auth: bool) -> Option<Self> {
        if !have("influxd") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let rpc = free_port();
        let d = dir.path().display();
        let config = dir.path().join("influxdb.conf");
        std::fs::write(
            &config,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
                 [meta]\n  dir = \"{d}/meta\"\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                 [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n  auth-enabled = {auth}\n\
                 [monitor]\n  store-enabled = false\n\
                 [continuous_queries]\n  enabled = false\n"
            ),
        )
        .expect("write influxd config");
        let mut s = Self {
            child: None,
            dir,
            port,
            config,
            auth: None,
        };
        s.spawn().await;
        if auth {
            // With no user yet, InfluxDB 1.x lets the first admin be created unauthenticated.
            s.query(
                "",
                "CREATE USER admin WITH PASSWORD 'admin-secret' WITH ALL PRIVILEGES",
            )
            .await;
            s.auth = Some(("admin".into(), "admin-secret".into()));
        }
        Some(s)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("influxd.log")
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new("influxd")
            .arg("-config")
            .arg(&self.config)
            .stdout(Stdio::from(log.try_clone().expect("log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn influxd");
        self.child = Some(child);
        wait_http(
            &format!("{}/ping", self.url()),
            |s, _| s == 204,
            "influxd",
            &self.log_path(),
        )
        .await;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (an outage, as a crash or a pulled cable looks to a client).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Runs InfluxQL through `/query` (POST, so writes such as CREATE work too), with
    /// `epoch=ms` timestamps. Panics on an HTTP failure; statement errors are in the JSON.
    pub async fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let mut req = reqwest::Client::new()
            .post(format!("{}/query", self.url()))
            .form(&[("db", db), ("q", q), ("epoch", "ms")]);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.expect("influxd query");
        let text = resp.text().await.expect("influxd answer");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("bad JSON from influxd ({e}): {text}"))
    }

    pub async fn create_db(&self, db: &str) {
        let r = self.query("", &format!("CREATE DATABASE \"{db}\"")).await;
        assert!(r["results"][0]["error"].is_null(), "{r}");
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `victoria-metrics` process (speaks the InfluxDB v2 write API).
pub struct VictoriaMetrics {
    child: Child,
    dir: TempDir,
    pub port: u16,
}

impl VictoriaMetrics {
    pub async fn start() -> Option<Self> {
        if !have("victoria-metrics") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log_path = dir.path().join("vm.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("data").display()
            ))
            .arg("-retentionPeriod=100y")
            .arg("-search.latencyOffset=0s")
            .stdout(Stdio::from(log.try_clone().expect("log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn victoria-metrics");
        let vm = Self { child, dir, port };
        wait_http(
            &format!("{}/health", vm.url()),
            |s, t| s == 200 && t.trim() == "OK",
            "victoria-metrics",
            &log_path,
        )
        .await;
        Some(vm)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Flushes recent writes and exports every series matching `selector`, one JSON
    /// object per series (`metric`, `values`, `timestamps`).
    pub async fn export(&self, selector: &str) -> Vec<serde_json::Value> {
        let http = reqwest::Client::new();
        http.get(format!("{}/internal/force_flush", self.url()))
            .send()
            .await
            .expect("force_flush");
        let text = http
            .get(format!("{}/api/v1/export", self.url()))
            .query(&[("match[]", selector)])
            .send()
            .await
            .expect("export")
            .text()
            .await
            .expect("export body");
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("export line"))
            .collect()
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
