//! Throughput of decode (topic + payload → readings) on one core: a plain number, a
//! JSON object with a value, and a JSON object of several fields, over 1,000 interned
//! series; then a Zigbee2MQTT-sized device message through an `[[ingest.map]]`
//! mapping (flattened, nested object and string fields included). Throughput is in
//! readings, so the per-reading cost of the mapping compares directly with
//! `json_object_3_fields`.
//!
//! `cargo bench --bench decode` (add `-- --quick` for a short run).

use std::hint::black_box;

use centinela::config::{MapConfig, MapFormat};
use centinela::source::decode::{Decoder, Limits};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SERIES: usize = 1_000;
const NOW: i64 = 1_700_000_000_000;

fn run(c: &mut Criterion, name: &str, mut dec: Decoder, topics: &[String], payload: &[u8]) {
    let mut out = Vec::with_capacity(16 * topics.len());
    for t in topics {
        dec.decode(t, payload, NOW, &mut out)
            .expect("bench payloads decode");
    }
    let per_pass = out.len() as u64;
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(per_pass));
    g.bench_function(name, |b| {
        b.iter(|| {
            out.clear();
            for t in topics {
                dec.decode(black_box(t), black_box(payload), NOW, &mut out)
                    .expect("bench payloads decode");
            }
            black_box(out.len())
        })
    });
    g.finish();
}

fn prefix_only() -> Decoder {
    Decoder::new("sensors", 64 * 1024)
}

fn decode(c: &mut Criterion) {
    let metrics: Vec<String> = (0..SERIES)
        .map(|i| format!("sensors/site/dev{}/m{}", i / 10, i % 10))
        .collect();
    let devices: Vec<String> = (0..SERIES)
        .map(|i| format!("sensors/site/dev{i}"))
        .collect();
    run(c, "plain", prefix_only(), &metrics, b"21.5");
    run(
        c,
        "json_value",
        prefix_only(),
        &metrics,
        br#"{"value":21.5,"ts":1700000000000,"unit":"C"}"#,
    );
    run(
        c,
        "json_object_3_fields",
        prefix_only(),
        &devices,
        br#"{"temperature":21.5,"humidity":40.5,"co2":612}"#,
    );

    // 100 Zigbee devices (a large home) × 11 numeric leaves (one is nested).
    let z2m_topics: Vec<String> = (0..SERIES / 10)
        .map(|i| format!("zigbee2mqtt/sensor_{i}"))
        .collect();
    let map = MapConfig {
        filter: "zigbee2mqtt/+".into(),
        series: "zigbee/{1}".into(),
        format: MapFormat::Auto,
        fields: vec![],
        ts: None,
        unit: None,
    };
    let limits = Limits {
        max_future_ms: Some(300_000),
        max_past_ms: Some(30 * 86_400_000),
        max_series: Some(100_000),
    };
    let mapped = Decoder::with_mappings("sensors", 64 * 1024, &[map], limits);
    run(
        c,
        "mapping_zigbee2mqtt_11_leaves",
        mapped,
        &z2m_topics,
        br#"{"battery":97,"contact":false,"device_temperature":24,"humidity":58.34,"linkquality":65,"power_outage_count":3,"pressure":1011.2,"temperature":21.72,"voltage":3005,"update":{"installed_version":1234,"latest_version":1234,"state":"idle"},"update_available":null}"#,
    );
}

criterion_group!(benches, decode);
criterion_main!(benches);
