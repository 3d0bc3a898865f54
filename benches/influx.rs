//! Line protocol encoding and compression, the CPU side of the InfluxDB sink.
//!
//! `cargo bench --bench influx`. The sink's throughput against a real influxd is
//! measured by the ignored test `sink_throughput_against_influxd` in tests/influx.rs.

use std::hint::black_box;

use centinela::model::Reading;
use centinela::store::influx::{client, line};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn readings(n: usize) -> Vec<Reading> {
    let series: Vec<std::sync::Arc<str>> = (0..1_000)
        .map(|i| format!("site{}/node{}/metric{}", i % 10, i, i % 7).into())
        .collect();
    let unit: std::sync::Arc<str> = "°C".into();
    (0..n)
        .map(|i| Reading {
            series: series[i % series.len()].clone(),
            value: 20.0 + (i % 1000) as f64 / 7.0,
            ts: 1_700_000_000_000 + i as i64,
            unit: Some(unit.clone()),
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let batch = readings(5_000);
    let mut g = c.benchmark_group("influx");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("encode 5000 readings", |b| {
        let mut out = String::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for r in &batch {
                line::encode_reading(&mut out, r).unwrap();
            }
            black_box(out.len())
        })
    });
    g.bench_function("encode + gzip 5000 readings", |b| {
        let mut out = String::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for r in &batch {
                line::encode_reading(&mut out, r).unwrap();
            }
            black_box(client::gzip(out.as_bytes()).len())
        })
    });
    g.finish();
    let mut out = String::new();
    for r in &batch {
        line::encode_reading(&mut out, r).unwrap();
    }
    eprintln!(
        "5000 readings: {} bytes of line protocol ({:.0} B/point), {} gzipped ({:.1} B/point)",
        out.len(),
        out.len() as f64 / 5000.0,
        client::gzip(out.as_bytes()).len(),
        client::gzip(out.as_bytes()).len() as f64 / 5000.0
    );
}

criterion_group!(benches, encode);
criterion_main!(benches);
