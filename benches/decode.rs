//! Throughput of decode (topic + payload → readings) on one core: a plain number, a
//! JSON object with a value, and a JSON object of several fields, over 1,000 interned
//! series.
//!
//! `cargo bench --bench decode` (add `-- --quick` for a short run).

use std::hint::black_box;

use centinela::source::decode::Decoder;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SERIES: usize = 1_000;

fn run(c: &mut Criterion, name: &str, topics: &[String], payload: &[u8]) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(topics.len() as u64));
    let mut dec = Decoder::new("sensors", 64 * 1024);
    let mut out = Vec::with_capacity(8 * topics.len());
    g.bench_function(name, |b| {
        b.iter(|| {
            out.clear();
            for t in topics {
                dec.decode(
                    black_box(t),
                    black_box(payload),
                    1_700_000_000_000,
                    &mut out,
                )
                .expect("bench payloads decode");
            }
            black_box(out.len())
        })
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let metrics: Vec<String> = (0..SERIES)
        .map(|i| format!("sensors/site/dev{}/m{}", i / 10, i % 10))
        .collect();
    let devices: Vec<String> = (0..SERIES)
        .map(|i| format!("sensors/site/dev{i}"))
        .collect();
    run(c, "plain", &metrics, b"21.5");
    run(
        c,
        "json_value",
        &metrics,
        br#"{"value":21.5,"ts":1700000000000,"unit":"C"}"#,
    );
    run(
        c,
        "json_object_3_fields",
        &devices,
        br#"{"temperature":21.5,"humidity":40.5,"co2":612}"#,
    );
}

criterion_group!(benches, decode);
criterion_main!(benches);
