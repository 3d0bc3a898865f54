//! The whole stream into InfluxDB: readings published over MQTT reach a real influxd
//! through the service, and an InfluxDB outage in the middle loses nothing.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::influx_servers;

use centinela::config::{Config, Duration as CfgDuration, InfluxApi, InfluxConfig};
use centinela::service::{Options, Service};
use influx_servers::Influxd;
use support::mqtt::{free_port, Publisher};

async fn count(influx: &Influxd) -> u64 {
    let v = influx
        .query("sensors", "SELECT count(value) FROM metric")
        .await;
    v["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_influxdb_and_an_outage_loses_none() {
    let Some(mut influx) = Influxd::start().await else {
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
        batch_size: 100,
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
    let mut p = Publisher::connect(port, "influx-e2e", None).await;
    let t0 = support::clock::past_t0();
    let total = 3000;
    for i in 0..total {
        if i == total / 3 {
            p.wait_acked(i as u64).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            influx.stop();
        }
        if i == 2 * total / 3 {
            p.wait_acked(i as u64).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            influx.restart().await;
        }
        p.publish(
            "sensors/site/dev/metric",
            format!(r#"{{"value":{i},"ts":{}}}"#, t0 + i * 1000),
        )
        .await;
    }
    p.wait_acked(total as u64).await;
    let stats = svc.influx_stats.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.written.load(Ordering::Relaxed) < total as u64 {
        assert!(Instant::now() < deadline, "written {:?}", stats.snapshot());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    svc.shutdown().await.unwrap();
    assert_eq!(count(&influx).await, total as u64, "{:?}", stats.snapshot());
    let s = stats.snapshot();
    assert_eq!((s.dropped, s.rejected, s.backlog), (0, 0, 0), "{s:?}");
}
