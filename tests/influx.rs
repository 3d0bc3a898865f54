//! The InfluxDB sink against real servers: InfluxDB 1.x (v1 write API, InfluxQL read
//! back), VictoriaMetrics (v2 write API, export read back), outages, the backlog bound,
//! the health check, and the Grafana dashboards' queries.
//!
//! Servers come from `.ci/install-influx.sh`; without them each test says so and returns.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::grafana::{dashboards, grafana_dir};
use support::influx_servers;

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
            .send(InfluxInput::Readings(readings.into()))
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
    health_check_with(&cfg, secrets.clone())
        .await
        .expect("VictoriaMetrics takes v2 writes");
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

const DATASOURCE_UID: &str = "centinela-influxdb";

/// Every `datasource` object anywhere in `v`.
fn datasource_refs<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "datasource" {
                    out.push(x);
                }
                datasource_refs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| datasource_refs(x, out)),
        _ => {}
    }
}

#[test]
fn dashboards_are_valid_for_provisioning() {
    let ds = std::fs::read_to_string(grafana_dir().join("provisioning/datasources/influxdb.yaml"))
        .unwrap();
    assert!(
        ds.lines()
            .any(|l| l.trim() == format!("uid: {DATASOURCE_UID}")),
        "data source uid"
    );
    assert!(
        ds.contains("type: influxdb")
            && ds.contains("${INFLUX_URL}")
            && ds.contains("${INFLUX_TOKEN}")
    );
    let prov =
        std::fs::read_to_string(grafana_dir().join("provisioning/dashboards/centinela.yaml"))
            .unwrap();
    assert!(
        prov.contains("apiVersion: 1") && prov.contains("type: file") && prov.contains("path: ")
    );

    let all = dashboards();
    assert_eq!(
        all.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(),
        ["alerts.json", "overview.json"]
    );
    let mut uids = BTreeSet::new();
    for (name, d) in &all {
        let uid = d["uid"].as_str().unwrap_or_default();
        assert!(
            !uid.is_empty() && uid.len() <= 40 && uids.insert(uid.to_string()),
            "{name}: uid {uid:?}"
        );
        assert!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{name}: schemaVersion"
        );
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: title"
        );
        assert!(
            d.get("id").is_none_or(Value::is_null),
            "{name}: a provisioned dashboard has no fixed id"
        );
        let mut refs = Vec::new();
        datasource_refs(d, &mut refs);
        assert!(
            refs.len() > 5,
            "{name}: panels, targets and variables name their data source"
        );
        // Through the dashboard's `datasource` variable, whose default is the
        // provisioned data source (tests/grafana.rs checks the variable).
        for r in refs {
            let builtin = r["uid"] == "-- Grafana --" && r["type"] == "grafana";
            assert!(
                builtin || (r["type"] == "influxdb" && r["uid"] == "${datasource}"),
                "{name}: datasource {r}"
            );
        }
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{name}: duplicate panel id"
            );
            for k in ["x", "y", "w", "h"] {
                assert!(
                    p["gridPos"][k].is_u64(),
                    "{name}: panel {} gridPos",
                    p["id"]
                );
            }
            if p["type"] != "row" {
                let targets = p["targets"].as_array().unwrap();
                assert!(
                    !targets.is_empty(),
                    "{name}: panel {} has no query",
                    p["title"]
                );
                for t in targets {
                    assert_eq!(t["rawQuery"], true, "{name}: {t}");
                    assert!(
                        t["query"].as_str().is_some_and(|q| q.starts_with("SELECT")),
                        "{name}: {t}"
                    );
                }
            }
        }
    }
}

/// What Grafana puts in a regex for one value.
fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\^$.|?*+()[]{}/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Grafana's macros and variables, as it substitutes them before sending a query.
fn substitute(q: &str, vars: &BTreeMap<String, String>) -> String {
    let mut q = q
        .replace("$timeFilter", "time >= now() - 6h")
        .replace("$__interval_ms", "60000")
        .replace("$__interval", "1m");
    // Longest names first, so `$site` does not eat part of `$sites`.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        q = q.replace(&format!("${n}"), &vars[n]);
    }
    let left = q
        .match_indices('$')
        .any(|(i, _)| q[i + 1..].starts_with(|c: char| c.is_alphabetic() || c == '_' || c == '{'));
    assert!(!left, "unsubstituted variable in {q}");
    q
}

/// Runs a panel or annotation query and returns how many rows came back.
async fn rows_of(influx: &Influxd, what: &str, q: &str) -> usize {
    let a = influx.query("sensors", q).await;
    let r = &a["results"][0];
    assert!(r["error"].is_null(), "{what}: {q}\n→ {a}");
    r["series"].as_array().map_or(0, |s| {
        s.iter()
            .map(|s| s["values"].as_array().map_or(0, Vec::len))
            .sum()
    })
}

/// The values a variable's query offers (SHOW TAG VALUES: column `value`; SHOW
/// MEASUREMENTS: column `name`).
async fn variable_values(influx: &Influxd, q: &str) -> Vec<String> {
    let a = influx.query("sensors", q).await;
    assert!(a["results"][0]["error"].is_null(), "{q}\n→ {a}");
    let mut out = BTreeSet::new();
    for s in a["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let col = s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .position(|c| c == "value" || c == "name")
            .unwrap();
        for v in s["values"].as_array().unwrap() {
            out.insert(v[col].as_str().unwrap().to_string());
        }
    }
    out.into_iter().collect()
}

#[tokio::test]
async fn every_dashboard_query_returns_rows_from_a_filled_influxdb() {
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
    let now = now_ms();
    let series = [
        ("greenhouse/node1/temperature", "°C"),
        ("greenhouse/node1/humidity", "%"),
        ("greenhouse/node 2/temperature", "°C"),
        ("cellar/probe/temperature", "°C"),
        ("home/power", "W"),
    ];
    let mut readings = Vec::new();
    for step in 0..180 {
        let ts = now - 30 * 60_000 + step * 10_000;
        for (i, (s, unit)) in series.iter().enumerate() {
            readings.push(reading(
                s,
                20.0 + i as f64 + (step % 7) as f64,
                ts,
                Some(unit),
            ));
        }
    }
    sink.send(readings).await;
    let event = |state, ts, value| AlertEvent {
        rule: "greenhouse-hot".into(),
        series: "greenhouse/node1/temperature".into(),
        state,
        severity: Severity::Critical,
        value: Some(value),
        unit: Some("°C".into()),
        ts,
        message: format!("greenhouse/node1/temperature is {value} °C"),
        notify: vec!["telegram".into()],
    };
    sink.tx
        .send(InfluxInput::Events(vec![
            event(AlertState::Firing, now - 20 * 60_000, 31.0),
            event(AlertState::Acknowledged, now - 15 * 60_000, 31.5),
            event(AlertState::Resolved, now - 10 * 60_000, 27.0),
        ]))
        .await
        .unwrap();
    let s = sink.shutdown().await;
    assert_eq!(s.written, 5 * 180 + 3, "{s:?}");

    let mut ran = 0;
    for (name, d) in dashboards() {
        // Variables in order, each query with the ones before it substituted: first as
        // "All" (allValue), then as the first value offered.
        let mut all = BTreeMap::new();
        let mut first = BTreeMap::new();
        let mut offered = BTreeMap::new();
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] == "datasource" {
                // Which InfluxDB: this one.
                continue;
            }
            let var = v["name"].as_str().unwrap().to_string();
            let q = v["query"].as_str().unwrap();
            let values_all = variable_values(&influx, &substitute(q, &all)).await;
            let values_first = variable_values(&influx, &substitute(q, &first)).await;
            assert!(
                !values_all.is_empty() && !values_first.is_empty(),
                "{name}: variable {var} offers nothing: {q}"
            );
            all.insert(var.clone(), v["allValue"].as_str().unwrap().to_string());
            first.insert(var.clone(), regex_escape(&values_first[0]));
            offered.insert(var, values_all);
            ran += 2;
        }
        let mut queries: Vec<(String, String, Option<String>)> = Vec::new();
        for p in d["panels"].as_array().unwrap() {
            let repeat = p["repeat"].as_str().map(str::to_string);
            for t in p["targets"].as_array().into_iter().flatten() {
                queries.push((
                    format!("panel {:?}", p["title"]),
                    t["query"].as_str().unwrap().into(),
                    repeat.clone(),
                ));
            }
        }
        for a in d["annotations"]["list"].as_array().unwrap() {
            if let Some(q) = a["query"].as_str() {
                queries.push((format!("annotation {:?}", a["name"]), q.into(), None));
            }
        }
        for (what, q, repeat) in queries {
            // A repeated panel gets one value of its variable per copy: try each. An
            // annotation filtered to the first site need not find an alert there, but
            // must run.
            let must_have_rows_for_first = !what.starts_with("annotation");
            let mut variants = vec![first.clone()];
            match &repeat {
                Some(r) => {
                    for value in &offered[r] {
                        let mut vars = all.clone();
                        vars.insert(r.clone(), regex_escape(value));
                        variants.push(vars);
                    }
                }
                None => variants.push(all.clone()),
            }
            for (i, vars) in variants.into_iter().enumerate() {
                let q = substitute(&q, &vars);
                let n = rows_of(&influx, &format!("{name}: {what}"), &q).await;
                assert!(
                    n > 0 || (i == 0 && !must_have_rows_for_first),
                    "{name}: {what} returned no rows:\n{q}"
                );
                ran += 1;
            }
        }
    }
    assert!(ran > 20, "only {ran} queries ran");

    // The ingest rate: one line per metric, which the panel adds up per time (its
    // `reduceRow` transformation): 5 series × 6 readings a minute = 0.5/s.
    let (_, overview) = dashboards()
        .into_iter()
        .find(|d| d.0 == "overview.json")
        .unwrap();
    let panel = overview["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Ingest rate (readings/s)")
        .unwrap();
    assert_eq!(panel["transformations"][0]["options"]["mode"], "reduceRow");
    let all: BTreeMap<String, String> = ["site", "device", "metric"]
        .iter()
        .map(|v| (v.to_string(), ".*".to_string()))
        .collect();
    let a = influx
        .query(
            "sensors",
            &substitute(panel["targets"][0]["query"].as_str().unwrap(), &all),
        )
        .await;
    let mut per_time: BTreeMap<i64, f64> = BTreeMap::new();
    for s in a["results"][0]["series"].as_array().unwrap() {
        for v in s["values"].as_array().unwrap() {
            *per_time.entry(v[0].as_i64().unwrap()).or_default() += v[1].as_f64().unwrap();
        }
    }
    let max = per_time.values().copied().fold(0.0, f64::max);
    assert!((max - 0.5).abs() < 1e-9, "max ingest rate {max}: {a}");
}

/// Throughput of the whole sink (encode, gzip, HTTP, influxd) — a measurement, not a
/// check: `cargo test --release --test influx -- --ignored --nocapture sink_throughput`.
/// `CENTINELA_BENCH_POINTS` (default 1,000,000) and `CENTINELA_BENCH_GZIP` (default 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run on demand"]
async fn sink_throughput_against_influxd() {
    let Some(influx) = Influxd::start().await else {
        return;
    };
    influx.create_db("sensors").await;
    let total: usize = std::env::var("CENTINELA_BENCH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let gzip = std::env::var("CENTINELA_BENCH_GZIP").map_or(true, |v| v != "0");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = v1_cfg(&influx.url(), "sensors");
    cfg.batch_size = 5_000;
    cfg.flush_interval = CfgDuration::from_secs(1);
    cfg.gzip = gzip;
    let sink = RunningSink::start(&cfg, Secrets::default(), &dir.path().join("b.db")).await;
    let series: Vec<Arc<str>> = (0..1_000)
        .map(|i| format!("site{}/node{}/metric{}", i % 10, i, i % 7).into())
        .collect();
    let t0 = now_ms() - 86_400_000;
    let start = Instant::now();
    for chunk in 0..total / 1_000 {
        let batch = (chunk * 1_000..(chunk + 1) * 1_000)
            .map(|i| Reading {
                series: series[i % 1_000].clone(),
                value: i as f64,
                ts: t0 + (i / 1_000) as i64,
                unit: None,
            })
            .collect();
        sink.send(batch).await;
    }
    let fed = start.elapsed();
    sink.wait_until("all written", Duration::from_secs(600), |s| {
        s.written >= total as u64
    })
    .await;
    let done = start.elapsed();
    let s = sink.shutdown().await;
    eprintln!(
        "sink throughput: {total} readings, 1000 series, batch 5000, gzip {gzip}: fed in {:.2} s, written in {:.2} s = {:.0} readings/s (backlog {}, failed writes {})",
        fed.as_secs_f64(),
        done.as_secs_f64(),
        total as f64 / done.as_secs_f64(),
        s.backlog,
        s.failed_writes
    );
    let (n, _) = count_and_sum(&influx, "sensors").await;
    assert_eq!(n, total as i64);
}

#[tokio::test]
async fn bad_points_are_rejected_and_counted_without_losing_their_neighbours() {
    let Some(influx) = Influxd::start().await else {
        return;
    };
    influx.create_db("sensors").await;
    // `value` of measurement `status` already holds strings (in the same shard): float
    // points there conflict and InfluxDB answers 400.
    let t0 = now_ms() - 60_000;
    let resp = reqwest::Client::new()
        .post(format!("{}/write?db=sensors&precision=ms", influx.url()))
        .body(format!("status,series=x value=\"ok\" {}\n", t0 - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = v1_cfg(&influx.url(), "sensors");
    cfg.batch_size = 16;
    cfg.flush_interval = CfgDuration::from_secs(60);
    let sink = RunningSink::start(&cfg, Secrets::default(), &dir.path().join("b.db")).await;
    let batch: Vec<Reading> = (0..16)
        .map(|i| {
            let series = if i == 3 || i == 11 {
                "plant/pump/status"
            } else {
                "plant/pump/pressure"
            };
            reading(series, i as f64, t0 + i, None)
        })
        .collect();
    sink.send(batch).await;
    // Closing the channel stops the sink as the shutdown signal does.
    let RunningSink {
        tx,
        stop: _stop,
        stats,
        task,
    } = sink;
    drop(tx);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("sink stops")
        .unwrap();
    let s = stats.snapshot();
    assert_eq!(
        (s.written, s.rejected, s.backlog, s.failed_writes),
        (14, 2, 0, 0),
        "{s:?}"
    );

    let a = influx
        .query(
            "sensors",
            "SELECT count(\"value\"), sum(\"value\") FROM \"pressure\"",
        )
        .await;
    assert_eq!(a["results"][0]["series"][0]["values"][0][1], 14, "{a}");
    assert_eq!(
        a["results"][0]["series"][0]["values"][0][2].as_f64(),
        Some((0..16).sum::<i64>() as f64 - 14.0),
        "{a}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_points_are_not_held_behind_a_long_backlog() {
    use centinela::store::influx::{client, line, Backlog};
    let Some(influx) = Influxd::start().await else {
        return;
    };
    influx.create_db("sensors").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    // A backlog of 300 batches of 500 points, as a long outage leaves behind.
    let t0 = now_ms() - 86_400_000;
    let mut backlog = Backlog::open(&path, 1_000_000).await.unwrap();
    for b in 0..300 {
        let mut text = String::new();
        for i in 0..500 {
            line::encode_reading(
                &mut text,
                &reading("old/dev/m", 1.0, t0 + b * 500 + i, None),
            )
            .unwrap();
        }
        assert_eq!(
            backlog
                .push(500, &client::gzip(text.as_bytes()), None)
                .await
                .unwrap(),
            0
        );
    }
    backlog.close().await.unwrap();

    let sink =
        RunningSink::start(&v1_cfg(&influx.url(), "sensors"), Secrets::default(), &path).await;
    assert_eq!(sink.stats.snapshot().backlog, 150_000);
    sink.send(vec![reading("live/dev/m", 42.0, now_ms(), None)])
        .await;
    let start = Instant::now();
    loop {
        let a = influx
            .query(
                "sensors",
                "SELECT count(\"value\") FROM \"m\" WHERE \"site\" = 'live'",
            )
            .await;
        if a["results"][0]["series"][0]["values"][0][1] == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the live point was not written"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = sink.stats.snapshot();
    assert!(
        s.backlog > 0,
        "the live point waited for the whole backlog: {s:?}"
    );
    sink.wait_until("backlog replayed", Duration::from_secs(60), |s| {
        s.backlog == 0
    })
    .await;
    let s = sink.shutdown().await;
    assert_eq!(s.written, 150_001, "{s:?}");
    let (n, _) = count_and_sum(&influx, "sensors").await;
    assert_eq!(n, 150_001);
}
