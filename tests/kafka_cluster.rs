//! Several `centinela run` processes as one Kafka consumer group against a real Apache
//! Kafka 4 broker: alert state on the changelog topic, restored by the new owner when an
//! instance is killed (`kill -9`), and exactly-once alert events (read with
//! `read_committed`).
#![cfg(feature = "kafka")]

#[path = "support/kafka.rs"]
mod kafka;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use kafka::{free_port, produce, read_settled, Kafka, Run};

fn config(mqtt_port: u16, brokers: &str) -> String {
    format!(
        "[broker]\nlisten = \"127.0.0.1:{mqtt_port}\"\n\n[engine]\ntick = \"100ms\"\n\n\
         [storage.sqlite]\nflush_interval = \"200ms\"\n\n\
         [source.kafka]\nbrokers = [\"{brokers}\"]\ntopics = [\"eo-in\"]\ngroup_id = \"eo\"\n\
         alerts_topic = \"eo-alerts\"\ncommit_interval = \"200ms\"\n\n\
         [[rules]]\nname = \"hot\"\nseries = \"site/+/temp\"\nkind = \"threshold\"\nabove = 30.0\n\
         severity = \"critical\"\n"
    )
}

/// Series `s` (of 12, in partition s % 6): reading `i` (one a second) is above 30 from
/// i = 10 + s to 59 and from 80 on, so every series crosses the threshold twice and
/// resolves once.
fn value(s: usize, i: usize) -> f64 {
    if (10 + s..60).contains(&i) || i >= 80 {
        35.0 + s as f64
    } else {
        20.0 + s as f64 / 2.0
    }
}

fn readings(t0: i64, range: std::ops::Range<usize>) -> Vec<(i32, Option<String>, String)> {
    let mut out = Vec::new();
    for i in range {
        for s in 0..12 {
            out.push((
                (s % 6) as i32,
                Some(format!("site/s{s}/temp")),
                format!(
                    r#"{{"value":{},"ts":{}}}"#,
                    value(s, i),
                    t0 + i as i64 * 1000
                ),
            ));
        }
    }
    out
}

/// Alert events on the alerts topic (committed only), per (series, state).
/// Reads on for 3 s after `want` arrived, to catch duplicates.
fn events(k: &Kafka, want: usize) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for (_, key, v) in read_settled(k, &["eo-alerts"], want, Duration::from_secs(3)) {
        assert_eq!(key, format!("hot/{}", v["series"].as_str().unwrap()));
        *out.entry((
            v["series"].as_str().unwrap().to_string(),
            v["state"].as_str().unwrap().to_string(),
        ))
        .or_insert(0) += 1;
    }
    out
}

#[test]
fn a_killed_instance_s_firing_alerts_stay_firing_unannounced_and_every_crossing_fires_once() {
    let started = Instant::now();
    let Some(k) = Kafka::start() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(k.create_topic("eo-in", 6, false));
    let dir = tempfile::tempdir().unwrap();
    let mut a = Run::start(dir.path(), "a", &config(free_port(), &k.bootstrap()));
    a.wait_log("partitions assigned", 1);
    let mut b = Run::start(dir.path(), "b", &config(free_port(), &k.bootstrap()));
    b.wait_log("owned=3", 1);
    a.wait_log("partitions revoked", 1);

    // First half: every series crosses once, on whichever instance owns it.
    let t0 = centinela::model::now_ms() - 3_600_000;
    produce(&k, "eo-in", &readings(t0, 0..40));
    let first = events(&k, 12);
    assert_eq!(first.len(), 12, "{first:?}");
    assert!(
        first.iter().all(|((_, st), n)| st == "firing" && *n == 1),
        "{first:?}"
    );
    let on_a: HashSet<String> = a.stored().into_keys().collect();
    assert_eq!(on_a.len(), 6, "three partitions, two series each: {on_a:?}");

    // Mid-stream: more readings on their way, then a crash.
    produce(&k, "eo-in", &readings(t0, 40..50));
    std::thread::sleep(Duration::from_millis(300));
    a.kill9();
    produce(&k, "eo-in", &readings(t0, 50..100));

    // b takes over a's partitions (after the session timeout) with their state.
    b.wait_log("partitions assigned", 2);
    b.wait_log("Kafka: alert state restored", 2);
    let deadline = Instant::now() + Duration::from_secs(90);
    let stored_b = loop {
        let s = b.stored();
        let done = on_a.iter().all(|x| s.get(x).copied().unwrap_or(0) >= 50);
        if done {
            break s;
        }
        assert!(Instant::now() < deadline, "b stored {s:?}\n{}", b.log());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(stored_b.len(), 12, "{stored_b:?}");

    // Exactly-once in the alerts topic: two firings and one resolution per series,
    // whichever instance judged them; the alerts firing on a when it died were not
    // announced again by b.
    let all = events(&k, 36);
    for s in 0..12 {
        let series = format!("site/s{s}/temp");
        let n = |st: &str| all.get(&(series.clone(), st.to_string())).copied();
        assert_eq!(n("firing"), Some(2), "{series}: {all:?}");
        assert_eq!(n("resolved"), Some(1), "{series}: {all:?}");
    }
    assert_eq!(all.values().sum::<usize>(), 36, "{all:?}");

    // Every reading produced is stored: on a until it died, then on b; the readings a
    // stored but had not committed are stored again by b (same series, time, value).
    let mut rows: HashMap<(String, String), f64> = HashMap::new();
    let (ra, rb) = (a.rows(), b.rows());
    let total = ra.len() + rb.len();
    for (series, ts, v) in ra.into_iter().chain(rb) {
        if let Some(old) = rows.insert((series.clone(), ts.clone()), v) {
            assert_eq!(old, v, "{series} {ts}");
        }
    }
    assert_eq!(rows.len(), 12 * 100, "distinct (series, time)");
    assert!(total >= 12 * 100, "{total}");
    b.stop();
    eprintln!(
        "stored {total} rows for 1200 readings ({} again after the crash); {:.1} s",
        total - 1200,
        started.elapsed().as_secs_f64()
    );
}
