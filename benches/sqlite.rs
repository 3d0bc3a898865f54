//! Throughput of the SQLite batch writer: `store::sqlite::Writer` add + flush of 1,000
//! series × N points (one chunk row per series per flush) on a temporary file with the
//! real settings (WAL, synchronous = NORMAL).
//!
//! `cargo bench --bench sqlite` (add `-- --quick` for a short run).

use std::sync::Arc;

use centinela::model::Reading;
use centinela::store::sqlite::{self, Writer};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const SERIES: usize = 1_000;

fn readings(points: usize, round: i64) -> Vec<Reading> {
    let names: Vec<Arc<str>> = (0..SERIES)
        .map(|i| Arc::from(format!("site/dev{}/m{}", i / 10, i % 10)))
        .collect();
    let base = round * points as i64 * 1000;
    let mut out = Vec::with_capacity(SERIES * points);
    for p in 0..points {
        for (i, name) in names.iter().enumerate() {
            out.push(Reading {
                series: name.clone(),
                value: 20.0 + ((i + p) % 50) as f64 / 10.0,
                ts: base + p as i64 * 1000,
                unit: None,
            });
        }
    }
    out
}

fn writer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pool = rt
        .block_on(sqlite::open(&dir.path().join("bench.db")))
        .expect("the database opens");
    let mut w = Writer::new(pool);
    let mut g = c.benchmark_group("sqlite_writer");
    g.sample_size(10);
    for points in [10usize, 100] {
        g.throughput(Throughput::Elements((SERIES * points) as u64));
        let mut round = 0;
        g.bench_function(format!("1000_series_x_{points}_points"), |b| {
            b.iter_batched(
                || {
                    round += 1;
                    readings(points, round)
                },
                |batch| {
                    w.add(&batch);
                    rt.block_on(w.flush()).expect("flush")
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, writer);
criterion_main!(benches);
