//! The InfluxDB sink against real servers: InfluxDB 1.x (v1 write API, InfluxQL read
//! back), VictoriaMetrics (v2 write API, export read back), outages, the backlog bound,
//! the health check, and the Grafana dashboards' queries.
//!
//! Servers come from `.ci/install-influx.sh`; without them each test says so and returns.

#[path = "support/influx_servers.rs"]
mod influx_servers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use centinela::config::{Duration as CfgDuration, InfluxApi, InfluxConfig};
use centinela::model::{now_ms, AlertEvent, AlertState, Reading, Severity};
use centinela::store::influx::{
    health_check_with, HealthError, InfluxInput, InfluxSink, InfluxStats, InfluxStatsSnapshot,
    Secret, Secrets,
};
use influx_servers::{free_port, Influxd, VictoriaMetrics};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

fn v1_cfg(url: &str, db: &str) -> InfluxConfig {
    InfluxConfig {
        url: url.into(),
        api: InfluxApi::V1,
        database: db.into(),
        batch_size: 500,
        flush_interval: CfgDuration::from_millis(50),
        timeout: CfgDuration::from_secs(5),
        ..InfluxConfig::default()
    }
}

struct RunningSink {
    tx: mpsc::Sender<InfluxInput>,
    stop: watch::Sender<bool>,
    stats: Arc<InfluxStats>,
    task: JoinHandle<()>,
}

impl RunningSink {
    async fn start(cfg: &InfluxConfig, secrets: Secrets, backlog: &Path) -> Self {
        let stats = Arc::new(InfluxStats::default());
        let sink = InfluxSink::new(cfg, secrets, backlog, stats.clone())
            .await
            .expect("sink");
        let (tx, rx) = mpsc::channel(64);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move { sink.run(rx, stop_rx).await.expect("sink run") });
        Self {
            tx,
            stop,
            stats,
            task,
        }
    }

    async fn send(&self, readings: Vec<Reading>) {
        self.tx
            .send(InfluxInput::Readings(readings))
            .await
            .expect("sink alive");
    }

    async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        cond: impl Fn(&InfluxStatsSnapshot) -> bool,
    ) {
        let start = Instant::now();
        loop {
            let s = self.stats.snapshot();
            if cond(&s) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(self) -> InfluxStatsSnapshot {
        self.stop.send(true).expect("sink listening");
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("sink stops")
            .expect("sink task");
        self.stats.snapshot()
    }
}

fn reading(series: &str, value: f64, ts: i64, unit: Option<&str>) -> Reading {
    Reading {
        series: series.into(),
        value,
        ts,
        unit: unit.map(Into::into),
    }
}

/// Every point of an InfluxQL answer: (measurement, tags, field values by column, time).
type Row = (
    String,
    BTreeMap<String, String>,
    BTreeMap<String, Value>,
    i64,
);

/// Flattens `SELECT * …` answers; `tag_keys` says which columns are tags.
fn rows(answer: &Value, tag_keys: &[&str]) -> Vec<Row> {
    let mut out = Vec::new();
    let result = &answer["results"][0];
    assert!(result["error"].is_null(), "{answer}");
    for s in result["series"].as_array().cloned().unwrap_or_default() {
        let cols: Vec<String> = s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        for v in s["values"].as_array().unwrap() {
            let mut tags = BTreeMap::new();
            let mut fields = BTreeMap::new();
            let mut time = 0;
            for (c, x) in cols.iter().zip(v.as_array().unwrap()) {
                if c == "time" {
                    time = x.as_i64().unwrap();
                } else if tag_keys.contains(&c.as_str()) {
                    if let Some(t) = x.as_str() {
                        tags.insert(c.clone(), t.to_string());
                    }
                } else if let Some(n) = x.as_f64() {
                    fields.insert(c.clone(), serde_json::json!(n));
                } else if !x.is_null() {
                    fields.insert(c.clone(), x.clone());
                }
            }
            out.push((s["name"].as_str().unwrap().to_string(), tags, fields, time));
        }
    }
    out
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn v1_write_reads_back_exact_names_values_and_tags() {
    let Some(influx) = Influxd::start().await else {
        return;
    };
    influx.create_db("sensors").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = RunningSink::start(
        &v1_cfg(&influx.url(), "sensors"),
        Secrets::default(),
        &dir.path().join("b.db"),
    )
    .await;

    let t = 1_700_000_000_000;
    sink.send(vec![
        reading("greenhouse/node1/temperature", 21.5, t, Some("°C")),
        reading("my site/dev,1=a/rel hum", 0.1 + 0.2, t + 1, Some("g/m 3")),
        reading("s/\"q\"", -7.0, t + 2, None),
        reading("a\\b/x\\ y,z/c\\ d", 1e-9, t + 3, Some("\\u")),
        reading("farm/barn/rack 2/co2", 812.0, t + 4, None),
        reading("uptime", 3600.0, t + 5, None),
        reading("bad/nan", f64::NAN, t + 6, None),
    ])
    .await;
    let event = AlertEvent {
        rule: "too hot, \"really\"".into(),
        series: "greenhouse/node1/temperature".into(),
        state: AlertState::Firing,
        severity: Severity::Critical,
        value: Some(31.25),
        unit: Some("°C".into()),
        ts: t + 7,
        message: "greenhouse is \"hot\"\nsee C:\\logs".into(),
        notify: vec![],
    };
    sink.tx
        .send(InfluxInput::Events(vec![event]))
        .await
        .unwrap();
    let s = sink.shutdown().await;
    assert_eq!(
        (s.accepted, s.written, s.rejected, s.backlog, s.dropped),
        (8, 7, 1, 0, 0),
        "{s:?}"
    );

    let tag_keys = [
        "site", "device", "series", "unit", "rule", "severity", "state",
    ];
    let got: BTreeSet<String> = rows(
        &influx.query("sensors", "SELECT * FROM /.*/").await,
        &tag_keys,
    )
    .iter()
    .map(|r| format!("{r:?}"))
    .collect();
    let f = |v: f64| BTreeMap::from([("value".to_string(), serde_json::json!(v))]);
    let expected: Vec<Row> = vec![
        (
            "temperature".into(),
            tags(&[
                ("site", "greenhouse"),
                ("device", "node1"),
                ("series", "greenhouse/node1/temperature"),
                ("unit", "°C"),
            ]),
            f(21.5),
            t,
        ),
        (
            "rel hum".into(),
            tags(&[
                ("site", "my site"),
                ("device", "dev,1=a"),
                ("series", "my site/dev,1=a/rel hum"),
                ("unit", "g/m 3"),
            ]),
            f(0.1 + 0.2),
            t + 1,
        ),
        (
            "\"q\"".into(),
            tags(&[("site", "s"), ("series", "s/\"q\"")]),
            f(-7.0),
            t + 2,
        ),
        // InfluxDB 1.x cannot select a measurement with a backslash before a space, so
        // the encoder leaves that backslash out of the measurement (not of the tags).
        (
            "c d".into(),
            tags(&[
                ("site", "a\\b"),
                ("device", "x\\ y,z"),
                ("series", "a\\b/x\\ y,z/c\\ d"),
                ("unit", "\\u"),
            ]),
            f(1e-9),
            t + 3,
        ),
        (
            "co2".into(),
            tags(&[
                ("site", "farm"),
                ("device", "barn/rack 2"),
                ("series", "farm/barn/rack 2/co2"),
            ]),
            f(812.0),
            t + 4,
        ),
        (
            "uptime".into(),
            tags(&[("series", "uptime")]),
            f(3600.0),
            t + 5,
        ),
        (
            "alerts".into(),
            tags(&[
                ("rule", "too hot, \"really\""),
                ("series", "greenhouse/node1/temperature"),
                ("severity", "critical"),
                ("state", "firing"),
            ]),
            BTreeMap::from([
                (
                    "message".to_string(),
                    serde_json::json!("greenhouse is \"hot\"\nsee C:\\logs"),
                ),
                ("value".to_string(), serde_json::json!(31.25)),
            ]),
            t + 7,
        ),
    ];
    let want: BTreeSet<String> = expected.iter().map(|r| format!("{r:?}")).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn v2_write_reaches_victoria_metrics() {
    let Some(vm) = VictoriaMetrics::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = InfluxConfig {
        url: vm.url(),
        api: InfluxApi::V2,
        org: "home".into(),
        bucket: "sensors".into(),
        batch_size: 2,
        flush_interval: CfgDuration::from_millis(50),
        ..InfluxConfig::default()
    };
    let secrets = Secrets {
        token: Some(Secret::new("t0ken")),
        password: None,
    };
    let sink = RunningSink::start(&cfg, secrets, &dir.path().join("b.db")).await;
    let t = now_ms() - 60_000;
    sink.send(vec![
        reading("greenhouse/node1/temperature", 21.5, t, Some("°C")),
        reading("greenhouse/node1/temperature", 22.25, t + 1000, Some("°C")),
        reading("greenhouse/node 2,b=c/humidity", 40.0, t + 2000, None),
    ])
    .await;
    let s = sink.shutdown().await;
    assert_eq!((s.written, s.backlog, s.rejected), (3, 0, 0), "{s:?}");

    let series = vm
        .export(r#"{__name__=~"temperature_value|humidity_value"}"#)
        .await;
    type Exported = (String, BTreeMap<String, String>, Vec<f64>, Vec<i64>);
    let mut got: Vec<Exported> = series
        .iter()
        .map(|s| {
            let mut labels: BTreeMap<String, String> =
                serde_json::from_value(s["metric"].clone()).expect("labels are strings");
            let name = labels.remove("__name__").unwrap();
            labels.remove("db");
            let values = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let ts = s["timestamps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            (name, labels, values, ts)
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            (
                "humidity_value".to_string(),
                tags(&[
                    ("site", "greenhouse"),
                    ("device", "node 2,b=c"),
                    ("series", "greenhouse/node 2,b=c/humidity")
                ]),
                vec![40.0],
                vec![t + 2000],
            ),
            (
                "temperature_value".to_string(),
                tags(&[
                    ("site", "greenhouse"),
                    ("device", "node1"),
                    ("series", "greenhouse/node1/temperature"),
                    ("unit", "°C")
                ]),
                vec![21.5, 22.25],
                vec![t, t + 1000],
            ),
        ]
    );
}

#[tokio::test]
async fn health_check_says_what_is_wrong() {
    // Nothing listens: unreachable, with the address.
    let url = format!("http://127.0.0.1:{}", free_port());
    let e = health_check_with(&v1_cfg(&url, "sensors"), Secrets::default())
        .await
        .unwrap_err();
    assert!(matches!(e, HealthError::Unreachable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("InfluxDB at {url} is unreachable: ")),
        "{e}"
    );

    // v2 without the token in the environment.
    let v2 = InfluxConfig {
        url: url.clone(),
        org: "o".into(),
        bucket: "b".into(),
        ..InfluxConfig::default()
    };
    let e = health_check_with(&v2, Secrets::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("export $CENTINELA_INFLUX_TOKEN"),
        "{e}"
    );

    let Some(influx) = Influxd::start_with(true).await else {
        return;
    };
    influx.create_db("sensors").await;
    let secrets = |pw: &str| Secrets {
        token: None,
        password: Some(Secret::new(pw)),
    };
    let mut cfg = v1_cfg(&influx.url(), "sensors");
    cfg.username = Some("admin".into());
    health_check_with(&cfg, secrets("admin-secret"))
        .await
        .expect("healthy");

    // Wrong password: 401.
    let e = health_check_with(&cfg, secrets("wrong")).await.unwrap_err();
    assert!(
        matches!(e, HealthError::BadCredentials { status: 401, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("refused the credentials (401)"),
        "{e}"
    );
    assert!(e.to_string().contains("$CENTINELA_INFLUX_PASSWORD"), "{e}");
    assert!(
        !e.to_string().contains("wrong"),
        "the password must not be shown: {e}"
    );

    // Missing database.
    cfg.database = "nope".into();
    let e = health_check_with(&cfg, secrets("admin-secret"))
        .await
        .unwrap_err();
    assert!(matches!(e, HealthError::MissingDatabase { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("database \"nope\" not found at {}", influx.url())),
        "{e}"
    );

    // v2 API asked of a 1.x server.
    let v2 = InfluxConfig {
        url: influx.url(),
        ..v2
    };
    let e = health_check_with(
        &v2,
        Secrets {
            token: Some(Secret::new("t")),
            password: None,
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, HealthError::NoV2Api { .. }), "{e:?}");
    assert!(e.to_string().contains("set api = \"v1\""), "{e}");
}

/// Sums `count(value)` and `sum(value)` over every measurement.
async fn count_and_sum(influx: &Influxd, db: &str) -> (i64, f64) {
    let a = influx
        .query(db, "SELECT count(\"value\"), sum(\"value\") FROM /.*/")
        .await;
    let mut n = 0;
    let mut sum = 0.0;
    for s in a["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        n += s["values"][0][1].as_i64().unwrap();
        sum += s["values"][0][2].as_f64().unwrap();
    }
    (n, sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_loses_nothing_and_writes_nothing_twice() {
    let Some(mut influx) = Influxd::start().await else {
        return;
    };
    influx.create_db("sensors").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = RunningSink::start(
        &v1_cfg(&influx.url(), "sensors"),
        Secrets::default(),
        &dir.path().join("b.db"),
    )
    .await;

    let series = [
        "greenhouse/node1/temperature",
        "greenhouse/node1/humidity",
        "cellar/probe/temperature",
    ];
    let total: usize = 60_000;
    let t0 = now_ms() - 3_600_000;
    let mut max_backlog = 0;
    for chunk in 0..total / 200 {
        if chunk == total / 200 / 3 {
            influx.stop();
        }
        if chunk == 2 * total / 200 / 3 {
            influx.restart().await;
        }
        let batch = (chunk * 200..(chunk + 1) * 200)
            .map(|i| reading(series[i % 3], i as f64, t0 + i as i64, None))
            .collect();
        sink.send(batch).await;
        max_backlog = max_backlog.max(sink.stats.snapshot().backlog);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sink.wait_until("every point written", Duration::from_secs(60), |s| {
        s.written >= total as u64 && s.backlog == 0
    })
    .await;
    let s = sink.shutdown().await;
    assert!(
        s.failed_writes > 0 && max_backlog > 0,
        "the outage was not seen: {s:?}, max backlog {max_backlog}"
    );
    assert_eq!(
        (s.accepted, s.dropped, s.rejected, s.backlog),
        (total as u64, 0, 0, 0),
        "{s:?}"
    );

    let (n, sum) = count_and_sum(&influx, "sensors").await;
    assert_eq!(n, total as i64, "points stored");
    assert_eq!(sum, (total * (total - 1) / 2) as f64, "each value once");
}

#[tokio::test]
async fn full_backlog_drops_the_oldest_counts_them_and_keeps_the_rest_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let backlog = dir.path().join("centinela.db.influx-backlog.db");
    let down = format!("http://127.0.0.1:{}", free_port());
    let mut cfg = v1_cfg(&down, "sensors");
    cfg.batch_size = 100;
    cfg.backlog_max = 1_000;
    cfg.flush_interval = CfgDuration::from_secs(60);
    let sink = RunningSink::start(&cfg, Secrets::default(), &backlog).await;
    let t0 = now_ms() - 3_600_000;
    for b in 0..50 {
        sink.send(
            (b * 100..(b + 1) * 100)
                .map(|i| reading("site/dev/m", i as f64, t0 + i, None))
                .collect(),
        )
        .await;
    }
    let s = sink.shutdown().await;
    assert_eq!(
        (s.accepted, s.written, s.backlog, s.dropped, s.rejected),
        (5_000, 0, 1_000, 4_000, 0),
        "{s:?}"
    );

    // InfluxDB comes up; a new sink (as after a restart) replays the backlog file.
    let Some(influx) = Influxd::start().await else {
        return;
    };
    influx.create_db("sensors").await;
    cfg.url = influx.url();
    let sink = RunningSink::start(&cfg, Secrets::default(), &backlog).await;
    assert_eq!(sink.stats.snapshot().backlog, 1_000);
    sink.wait_until("backlog replayed", Duration::from_secs(30), |s| {
        s.backlog == 0
    })
    .await;
    let s = sink.shutdown().await;
    assert_eq!(s.written, 1_000, "{s:?}");

    let a = influx.query("sensors", "SELECT \"value\" FROM \"m\"").await;
    let values: Vec<i64> = a["results"][0]["series"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[1].as_f64().unwrap() as i64)
        .collect();
    assert_eq!(values.len(), 1_000);
    // Whole batches were kept, the newest among them.
    let mut per_batch: BTreeMap<i64, usize> = BTreeMap::new();
    for v in &values {
        *per_batch.entry(v / 100).or_default() += 1;
    }
    assert!(per_batch.values().all(|&n| n == 100), "{per_batch:?}");
    assert!(
        per_batch.contains_key(&49),
        "the newest batch is kept: {per_batch:?}"
    );
}
