//! Throughput of the rules engine on one core: threshold rules over 1,000 series, and
//! window and rate rules at growing window sizes (flat figures = O(1) amortised per
//! reading).
//!
//! `cargo bench --bench engine` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use centinela::config::{EngineConfig, RuleConfig};
use centinela::engine::Engine;
use centinela::model::{AlertEvent, Reading};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[derive(serde::Deserialize)]
struct Rules {
    rules: Vec<RuleConfig>,
}

fn rules(toml: &str) -> Vec<RuleConfig> {
    toml::from_str::<Rules>(toml)
        .expect("bench rules parse")
        .rules
}

/// Readings of `series` series, one per series per second, round robin, `seconds`
/// long; `value(series, second)`.
fn batch(series: usize, seconds: i64, value: impl Fn(usize, i64) -> f64) -> Vec<Reading> {
    let names: Vec<Arc<str>> = (0..series)
        .map(|i| Arc::from(format!("site/dev{i}/t")))
        .collect();
    let unit: Arc<str> = Arc::from("°C");
    let mut out = Vec::with_capacity(series * seconds as usize);
    for s in 0..seconds {
        for (i, name) in names.iter().enumerate() {
            out.push(Reading {
                series: name.clone(),
                value: value(i, s),
                ts: s * 1000,
                unit: Some(unit.clone()),
            });
        }
    }
    out
}

/// Feeds the same batch again and again, moved forward in time each round so every
/// reading is evaluated (never dropped as out of order). Only the feeding is timed.
fn feed(
    c: &mut Criterion,
    group: &str,
    name: &str,
    rule_toml: &str,
    mut readings: Vec<Reading>,
    warm_rounds: usize,
) {
    let span = readings.last().map_or(0, |r| r.ts) + 1000;
    let mut engine = Engine::new(&rules(rule_toml), &EngineConfig::default());
    let mut out: Vec<AlertEvent> = Vec::new();
    let shift = |readings: &mut [Reading]| {
        for r in readings.iter_mut() {
            r.ts += span;
        }
    };
    for _ in 0..warm_rounds {
        for r in &readings {
            engine.on_reading(r, r.ts, &mut out);
        }
        shift(&mut readings);
    }
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(readings.len() as u64));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                out.clear();
                let t = Instant::now();
                for r in &readings {
                    engine.on_reading(black_box(r), r.ts, &mut out);
                }
                total += t.elapsed();
                shift(&mut readings);
            }
            total
        })
    });
    g.finish();
}

const THRESHOLD: &str = r#"
[[rules]]
name = "hot"
series = "site/+/t"
kind = "threshold"
above = 30.0
clear = 28.0
notify = ["telegram"]
"#;

fn threshold(c: &mut Criterion) {
    // 1,000 series × 100 s = 100,000 readings per round.
    feed(
        c,
        "threshold_1000_series",
        "quiet",
        THRESHOLD,
        batch(1000, 100, |_, _| 20.0),
        1,
    );
    // Each series goes above for one reading in 50: 4% of readings are transitions
    // (firing + resolved), each rendering a message.
    feed(
        c,
        "threshold_1000_series",
        "4pct_transitions",
        THRESHOLD,
        batch(1000, 100, |i, s| {
            if (s + i as i64) % 50 == 0 {
                31.0
            } else {
                20.0
            }
        }),
        1,
    );
}

fn windowed(c: &mut Criterion) {
    let wave = |i: usize, s: i64| 20.0 + ((s * 7 + i as i64 * 13) % 17) as f64;
    for window in [10, 100, 1000] {
        for agg in ["avg", "max", "spread"] {
            let toml = format!(
                "[[rules]]\nname = \"w\"\nseries = \"site/+/t\"\nkind = \"window\"\nagg = \"{agg}\"\nwindow = \"{window}s\"\nabove = 1000.0\n"
            );
            // 100 series × 1,000 s; one warm round fills every window.
            feed(
                c,
                &format!("window_{agg}"),
                &format!("{window}s"),
                &toml,
                batch(100, 1000, wave),
                1,
            );
        }
        let toml = format!(
            "[[rules]]\nname = \"r\"\nseries = \"site/+/t\"\nkind = \"rate\"\nwindow = \"{window}s\"\nrise = 1000.0\n"
        );
        feed(
            c,
            "rate",
            &format!("{window}s"),
            &toml,
            batch(100, 1000, wave),
            1,
        );
    }
}

criterion_group!(benches, threshold, windowed);
criterion_main!(benches);
