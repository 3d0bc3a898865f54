//! Instruction count of the stream per reading, for a fixed input: decode (MQTT topic
//! and payload → reading) → rules engine (the bench rules: threshold, rate, window,
//! deadman) → SQLite writer (add, one flush per simulated second, the background
//! merge when it is due), on a temporary file with the real settings.
//!
//! The input is S series × R rounds, one reading per series per round, a round being
//! one second of event time, the flush clock moving with it: the same run executes
//! the same code, so counting its instructions gives a figure that does not move with
//! the load of the machine. Start-up (opening the database, the runtime) cancels out
//! when two runs of different lengths are subtracted:
//!
//! ```sh
//! cargo build --release --example per_reading
//! benches/instructions.sh            # S=10000, R=3 and R=8: instructions per reading
//! ```
//!
//! Run directly it prints the readings it handled and the wall time they took.

use std::time::Instant;

use centinela::config::{Config, EngineConfig};
use centinela::engine::Engine;
use centinela::model::{AlertEvent, Reading};
use centinela::source::decode::Decoder;
use centinela::store::sqlite::{self, Writer};

/// Event time of the first round: fixed, so every run sees the same minutes.
const START: i64 = 1_800_000_000_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let series: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pool = rt
        .block_on(sqlite::open(&dir.path().join("per_reading.db")))
        .expect("the database opens");
    let rules = Config::parse(centinela::bench::BENCH_RULES, "<bench rules>")
        .expect("the bench rules parse")
        .rules;
    let mut engine = Engine::new(&rules, &EngineConfig::default());
    let mut decoder = Decoder::new("sensors", 64 * 1024);
    let mut writer = Writer::new(pool);
    let topics: Vec<String> = (0..series)
        .map(|i| format!("sensors/bench/dev{}/m{}", i / 10, i % 10))
        .collect();
    let payloads: Vec<String> = (0..50)
        .map(|i| format!("{:.1}", 20.0 + i as f64 / 10.0))
        .collect();
    let mut readings: Vec<Reading> = Vec::with_capacity(series);
    let mut events: Vec<AlertEvent> = Vec::new();
    let t0 = Instant::now();
    let mut handled = 0u64;
    for round in 0..rounds {
        let now = START + round * 1000;
        readings.clear();
        for (i, topic) in topics.iter().enumerate() {
            let payload = &payloads[(i + round as usize) % payloads.len()];
            decoder
                .decode(topic, payload.as_bytes(), now, &mut readings)
                .expect("bench payloads decode");
        }
        for r in &readings {
            engine.on_reading(r, now, &mut events);
        }
        engine.tick(now, &mut events);
        events.clear();
        writer.add(&readings);
        handled += rt
            .block_on(writer.flush_at(now + 1000))
            .expect("the flush succeeds") as u64;
        rt.block_on(writer.merge_if_due(now + 1000))
            .expect("the merge succeeds");
    }
    println!(
        "{handled} readings of {series} series in {:.3} s",
        t0.elapsed().as_secs_f64()
    );
}
