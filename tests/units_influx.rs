//! A sensor that sends JSON with a unit and then plain numbers stays one series in a
//! real InfluxDB: one tag set, with its unit.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::influx_servers;

use centinela::config::{Config, Duration as CfgDuration, InfluxApi, InfluxConfig};
use centinela::service::{Options, Service};
use influx_servers::Influxd;
use support::mqtt::{free_port, Publisher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_reading_after_one_with_a_unit_keeps_the_series_tags() {
    let Some(influx) = Influxd::start().await else {
        eprintln!("!!! SKIPPED: influxd is not installed (.ci/install-influx.sh installs it)");
        return;
    };
    influx.create_db("sensors").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = Config::default();
    cfg.broker.listen = format!("127.0.0.1:{port}").parse().unwrap();
    cfg.storage.influxdb = Some(InfluxConfig {
        url: influx.url(),
        api: InfluxApi::V1,
        database: "sensors".into(),
        batch_size: 10,
        flush_interval: CfgDuration::from_millis(50),
        timeout: CfgDuration::from_secs(2),
        ..InfluxConfig::default()
    });
    let svc = Service::start(
        cfg,
        Options {
            db_path: Some(dir.path().join("c.db")),
        },
    )
    .await
    .unwrap();
    let mut p = Publisher::connect(port, "units", None).await;
    let t0 = support::clock::past_t0();
    p.publish(
        "sensors/gh/n1/temperature",
        format!(r#"{{"value":21.5,"unit":"°C","ts":{t0}}}"#),
    )
    .await;
    p.wait_acked(1).await;
    p.publish("sensors/gh/n1/temperature", "21.7").await;
    p.publish(
        "sensors/gh/n1/temperature",
        format!(r#"{{"value":21.9,"ts":{}}}"#, t0 + 2_000),
    )
    .await;
    p.wait_acked(3).await;
    let stats = svc.influx_stats.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.written.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "written {:?}", stats.snapshot());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    svc.shutdown().await.unwrap();
    let v = influx
        .query("sensors", "SHOW SERIES FROM temperature")
        .await;
    let keys: Vec<String> = v["results"][0]["series"][0]["values"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|k| k[0].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(keys.len(), 1, "one sensor, one tag set: {v}");
    assert!(keys[0].contains("unit=°C"), "{keys:?}");
    let v = influx
        .query("sensors", "SELECT count(value) FROM temperature")
        .await;
    assert_eq!(v["results"][0]["series"][0]["values"][0][1], 3, "{v}");
}
