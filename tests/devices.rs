//! Real devices' topics and payloads, through the example configurations in
//! config/examples/: each device format published by a real MQTT client (rumqttc over
//! TCP) through the embedded broker and through a real Mosquitto lands in SQLite as
//! the series and values the example's comments promise. Also: retained messages
//! across a restart, and a device whose clock is a thousand years ahead.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use centinela::config::{BrokerMode, Config};
use centinela::model::now_ms;
use centinela::service::{Options, Service};
use centinela::store::sqlite;
use rumqttc::QoS;
use support::mqtt::{free_port, Mosquitto, Publisher};
use support::process::wait_for;

/// One device message and the readings it must become.
struct Case {
    topic: &'static str,
    payload: String,
    want: Vec<(&'static str, f64)>,
}

fn case(topic: &'static str, payload: impl Into<String>, want: &[(&'static str, f64)]) -> Case {
    Case {
        topic,
        payload: payload.into(),
        want: want.to_vec(),
    }
}

/// A minute ago, in nanoseconds: a timestamp Telegraf could have put on its lines.
fn recent_ns() -> i64 {
    (now_ms() - 60_000) * 1_000_000
}

/// Every example with the messages its comments describe.
fn examples() -> Vec<(&'static str, Vec<Case>)> {
    let ns = recent_ns();
    vec![
        (
            "zigbee2mqtt.toml",
            vec![
                case(
                    "zigbee2mqtt/living_room",
                    r#"{"temperature":27.34,"humidity":44.72,"battery":97,"linkquality":65,"update":{"state":"idle"}}"#,
                    &[
                        ("zigbee/living_room/temperature", 27.34),
                        ("zigbee/living_room/humidity", 44.72),
                        ("zigbee/living_room/battery", 97.0),
                        ("zigbee/living_room/linkquality", 65.0),
                    ],
                ),
                case(
                    "zigbee2mqtt/front_door",
                    r#"{"contact":false,"battery":100,"voltage":3045,"linkquality":99}"#,
                    &[
                        ("zigbee/front_door/contact", 0.0),
                        ("zigbee/front_door/battery", 100.0),
                        ("zigbee/front_door/voltage", 3045.0),
                        ("zigbee/front_door/linkquality", 99.0),
                    ],
                ),
                case(
                    "zigbee2mqtt/desk_lamp",
                    r#"{"state":"ON","brightness":215,"color_temp":325}"#,
                    &[
                        ("zigbee/desk_lamp/brightness", 215.0),
                        ("zigbee/desk_lamp/color_temp", 325.0),
                    ],
                ),
                // Bridge topics have more levels than the filter: not read at all.
                case("zigbee2mqtt/bridge/state", r#"{"state":"online"}"#, &[]),
            ],
        ),
        (
            "tasmota.toml",
            vec![
                case(
                    "tele/kitchen/SENSOR",
                    r#"{"Time":"2026-11-20T10:00:00","AM2301":{"Temperature":22.3,"Humidity":40.1},"TempUnit":"C"}"#,
                    &[
                        ("tasmota/kitchen/AM2301/Temperature", 22.3),
                        ("tasmota/kitchen/AM2301/Humidity", 40.1),
                    ],
                ),
                case(
                    "tele/plug1/SENSOR",
                    r#"{"Time":"2026-11-20T10:00:00","ENERGY":{"TotalStartTime":"2026-01-01T00:00:00","Total":12.345,"Yesterday":0.512,"Today":0.128,"Power":45,"ApparentPower":52,"ReactivePower":26,"Factor":0.87,"Voltage":230,"Current":0.226}}"#,
                    &[
                        ("tasmota/plug1/ENERGY/Total", 12.345),
                        ("tasmota/plug1/ENERGY/Yesterday", 0.512),
                        ("tasmota/plug1/ENERGY/Today", 0.128),
                        ("tasmota/plug1/ENERGY/Power", 45.0),
                        ("tasmota/plug1/ENERGY/ApparentPower", 52.0),
                        ("tasmota/plug1/ENERGY/ReactivePower", 26.0),
                        ("tasmota/plug1/ENERGY/Factor", 0.87),
                        ("tasmota/plug1/ENERGY/Voltage", 230.0),
                        ("tasmota/plug1/ENERGY/Current", 0.226),
                    ],
                ),
                case("stat/kitchen/POWER", "ON", &[("tasmota/kitchen/power_on", 1.0)]),
            ],
        ),
        (
            "shelly.toml",
            vec![
                case(
                    "shellyplus1pm-441793d69718/status/switch:0",
                    r#"{"id":0,"source":"init","output":true,"apower":8.9,"voltage":237.5,"current":0.04,"aenergy":{"total":6.532,"by_minute":[45.907,47.197,45.981],"minute_ts":1654511700},"temperature":{"tC":23.5,"tF":74.4}}"#,
                    &[
                        ("shelly/shellyplus1pm-441793d69718/apower", 8.9),
                        ("shelly/shellyplus1pm-441793d69718/voltage", 237.5),
                        ("shelly/shellyplus1pm-441793d69718/current", 0.04),
                        ("shelly/shellyplus1pm-441793d69718/aenergy/total", 6.532),
                        ("shelly/shellyplus1pm-441793d69718/temperature/tC", 23.5),
                        ("shelly/shellyplus1pm-441793d69718/output", 1.0),
                    ],
                ),
                case(
                    "shellyplusht-b8d61a8b17cc/status/temperature:0",
                    r#"{"id":0,"tC":19.8,"tF":67.6}"#,
                    &[("shelly/shellyplusht-b8d61a8b17cc/temperature/tC", 19.8)],
                ),
                case(
                    "shellyplusht-b8d61a8b17cc/status/humidity:0",
                    r#"{"id":0,"rh":42.2}"#,
                    &[("shelly/shellyplusht-b8d61a8b17cc/humidity/rh", 42.2)],
                ),
            ],
        ),
        (
            "esphome.toml",
            vec![
                case(
                    "livingroom/sensor/temperature/state",
                    "21.4",
                    &[("esphome/livingroom/temperature", 21.4)],
                ),
                case(
                    "livingroom/sensor/humidity/state",
                    "48.2",
                    &[("esphome/livingroom/humidity", 48.2)],
                ),
                case(
                    "livingroom/binary_sensor/window/state",
                    "OFF",
                    &[("esphome/livingroom/window", 0.0)],
                ),
            ],
        ),
        (
            "homeassistant.toml",
            vec![
                case(
                    "homeassistant/sensor/outside_temperature/state",
                    "12.7",
                    &[("ha/sensor/outside_temperature", 12.7)],
                ),
                case(
                    "homeassistant/binary_sensor/front_door/state",
                    "off",
                    &[("ha/binary_sensor/front_door", 0.0)],
                ),
                case("homeassistant/switch/pump/state", "on", &[("ha/switch/pump", 1.0)]),
                // Attributes are not subscribed by this example.
                case(
                    "homeassistant/sensor/outside_temperature/unit_of_measurement",
                    "\"°C\"",
                    &[],
                ),
            ],
        ),
        (
            "telegraf.toml",
            vec![
                case(
                    "telegraf/pi4/cpu",
                    format!(
                        "cpu,cpu=cpu-total,host=pi4 usage_idle=97.5,usage_user=1.2,usage_system=0.9 {ns}"
                    ),
                    &[
                        ("telegraf/pi4/cpu/usage_idle", 97.5),
                        ("telegraf/pi4/cpu/usage_user", 1.2),
                        ("telegraf/pi4/cpu/usage_system", 0.9),
                    ],
                ),
                case(
                    "telegraf/pi4/system",
                    format!(
                        "system,host=pi4 load1=0.12,n_cpus=4i,uptime_format=\"3 days,  2:01\" {ns}\nmem,host=pi4 available=3017961472i,used_percent=21.3 {ns}"
                    ),
                    &[
                        ("telegraf/pi4/system/load1", 0.12),
                        ("telegraf/pi4/system/n_cpus", 4.0),
                        ("telegraf/pi4/mem/available", 3_017_961_472.0),
                        ("telegraf/pi4/mem/used_percent", 21.3),
                    ],
                ),
            ],
        ),
    ]
}

fn example(name: &str) -> Config {
    let path = format!("{}/config/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"))
}

enum Via<'a> {
    Embedded,
    Mosquitto(&'a Mosquitto),
}

/// The example's mappings and rules, on a broker of the test's own.
fn configure(mut cfg: Config, via: &Via<'_>, id: &str) -> (Config, u16) {
    cfg.broker.username = None;
    cfg.broker.allow_anonymous = false;
    let port = match via {
        Via::Embedded => {
            let port = free_port();
            cfg.broker.mode = BrokerMode::Embedded;
            cfg.broker.listen = format!("127.0.0.1:{port}").parse().unwrap();
            port
        }
        Via::Mosquitto(m) => {
            cfg.broker.mode = BrokerMode::External;
            cfg.broker.url = Some(format!("mqtt://127.0.0.1:{}", m.port));
            cfg.broker.client_id = format!("centinela-{id}");
            m.port
        }
    };
    (cfg, port)
}

async fn wait_connected(svc: &Service) {
    let stats = svc.source_stats.clone();
    wait_for("the source to connect", 20, || {
        stats.connected.load(Ordering::Relaxed)
    })
    .await;
}

/// Publishes every example's messages through `via` and checks what is stored.
async fn every_example_lands_in_sqlite(via: Via<'_>) {
    for (name, cases) in examples() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let id = name.trim_end_matches(".toml");
        let (cfg, port) = configure(example(name), &via, id);
        let svc = Service::start(
            cfg,
            Options {
                db_path: Some(db.clone()),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        wait_connected(&svc).await;
        // Mosquitto has subscribed the service once its CONNACK came; give the
        // SUBSCRIBE a moment to land before publishing.
        tokio::time::sleep(Duration::from_millis(200)).await;

        let mut p = Publisher::connect(port, &format!("device-{id}"), None).await;
        for c in &cases {
            p.publish(c.topic, c.payload.clone()).await;
        }
        p.wait_acked(cases.len() as u64).await;
        let want: usize = cases.iter().map(|c| c.want.len()).sum();
        let stats = svc.source_stats.clone();
        wait_for(&format!("{name}: {want} readings"), 20, || {
            stats.readings.load(Ordering::Relaxed) as usize >= want
        })
        .await;
        // Anything more would be a series the example must not make.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            stats.readings.load(Ordering::Relaxed) as usize,
            want,
            "{name}: readings"
        );
        assert_eq!(
            stats.errors_total(),
            0,
            "{name}: {:?}",
            stats.errors_by_reason()
        );
        svc.shutdown().await.unwrap();

        let pool = sqlite::open_existing(&db).await.unwrap();
        let stored: BTreeMap<String, (i64, f64)> = sqlite::query_readings(&pool, "#", i64::MIN)
            .await
            .unwrap()
            .into_iter()
            .map(|(s, ts, v)| (s, (ts, v)))
            .collect();
        let expected: BTreeMap<String, f64> = cases
            .iter()
            .flat_map(|c| c.want.iter().map(|(s, v)| (s.to_string(), *v)))
            .collect();
        let got: BTreeMap<String, f64> = stored.iter().map(|(s, (_, v))| (s.clone(), *v)).collect();
        assert_eq!(got, expected, "{name}: stored series and values");
        if name == "telegraf.toml" {
            // Line protocol keeps the line's own timestamp (ns → ms).
            let ts = stored["telegraf/pi4/cpu/usage_idle"].0;
            assert!((now_ms() - 70_000..now_ms() - 50_000).contains(&ts), "{ts}");
        }
        pool.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_formats_through_the_embedded_broker() {
    every_example_lands_in_sqlite(Via::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_formats_through_an_external_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let Some(m) = Mosquitto::start(dir.path(), free_port(), None) else {
        eprintln!("SKIPPED: mosquitto is not installed");
        return;
    };
    every_example_lands_in_sqlite(Via::Mosquitto(&m)).await;
}

#[test]
fn every_example_validates() {
    let dir = format!("{}/config/examples", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_centinela"))
                .arg("validate")
                .arg("--config")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}{}",
                path.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 7, "only {n} examples");
}

/// A retained message is what a broker remembers, not news: after a restart it must not
/// be stored again with a fresh receive time (a dead device would look alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_not_stored_again_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(m) = Mosquitto::start(dir.path(), free_port(), None) else {
        eprintln!("SKIPPED: mosquitto is not installed");
        return;
    };
    let db = dir.path().join("c.db");
    let stamped = now_ms() - 5_000;
    let p = Publisher::connect(m.port, "retainer", None).await;
    // A device that died after publishing, retained, without a timestamp…
    p.client
        .publish(
            "livingroom/sensor/temperature/state",
            QoS::AtLeastOnce,
            true,
            "21.4",
        )
        .await
        .unwrap();
    // …and one whose retained message carries its own.
    p.client
        .publish(
            "sensors/attic/node1/temperature",
            QoS::AtLeastOnce,
            true,
            format!(r#"{{"value":30.5,"ts":{stamped}}}"#),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(p);

    let run = |client: &'static str| {
        let (cfg, _) = configure(example("esphome.toml"), &Via::Mosquitto(&m), client);
        let db = db.clone();
        async move {
            let svc = Service::start(cfg, Options { db_path: Some(db) })
                .await
                .unwrap();
            let stats = svc.source_stats.clone();
            wait_for("both retained messages", 20, || {
                stats.messages.load(Ordering::Relaxed) >= 2
            })
            .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let counts: BTreeMap<_, _> = stats.errors_by_reason().into_iter().collect();
            let readings = stats.readings.load(Ordering::Relaxed);
            svc.shutdown().await.unwrap();
            (readings, counts)
        }
    };
    // First start: the stamped one is news, the other is refused.
    let (readings, counts) = run("first").await;
    assert_eq!(readings, 1);
    assert_eq!(counts["retained_without_ts"], 1);
    assert_eq!(counts["retained_not_newer"], 0);
    // Restart (a new session, so Mosquitto delivers the retained messages again):
    // nothing is stored twice.
    let (readings, counts) = run("second").await;
    assert_eq!(readings, 0);
    assert_eq!(counts["retained_without_ts"], 1);
    assert_eq!(counts["retained_not_newer"], 1);

    let pool = sqlite::open_existing(&db).await.unwrap();
    let rows = sqlite::query_readings(&pool, "#", i64::MIN).await.unwrap();
    assert_eq!(
        rows,
        vec![("attic/node1/temperature".to_string(), stamped, 30.5)]
    );
}

/// A device whose clock says year 3000 once must not switch its series' alerts off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_from_the_year_3000_does_not_silence_a_series() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = dir.path().join("c.db");
    let mut cfg = Config::parse(
        "[[rules]]\nname = \"hot\"\nseries = \"lab/t\"\nkind = \"threshold\"\nabove = 30.0\n",
        "test",
    )
    .unwrap();
    cfg.broker.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let svc = Service::start(
        cfg,
        Options {
            db_path: Some(db.clone()),
        },
    )
    .await
    .unwrap();
    let mut p = Publisher::connect(port, "bad-clock", None).await;
    p.publish(
        "sensors/lab/t",
        r#"{"value":20,"ts":"3000-01-01T00:00:00Z"}"#,
    )
    .await;
    p.publish("sensors/lab/t", r#"{"value":21,"ts":0}"#).await;
    p.publish("sensors/lab/t", "35").await;
    p.wait_acked(3).await;
    let stats = svc.source_stats.clone();
    wait_for("one reading and two refusals", 20, || {
        stats.readings.load(Ordering::Relaxed) == 1 && stats.errors_total() == 2
    })
    .await;
    let counts: BTreeMap<_, _> = stats.errors_by_reason().into_iter().collect();
    assert_eq!(counts["future_timestamp"], 1);
    assert_eq!(counts["too_old"], 1);
    let pool = sqlite::open_existing(&db).await.unwrap();
    let mut fired = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fired.is_empty() && Instant::now() < deadline {
        fired = sqlite::query_alerts(&pool, i64::MIN, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.state == "firing")
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fired.len(), 1, "the 35 after the year-3000 reading fires");
    assert_eq!(
        (fired[0].rule.as_str(), fired[0].series.as_str()),
        ("hot", "lab/t")
    );
    svc.shutdown().await.unwrap();
    let rows = sqlite::query_readings(&pool, "#", i64::MIN).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, 35.0);
}
