//! The simulators' fault injections against the real engine with the demo rules: each
//! fault triggers the rule made for it, on the series it hit, and nothing else fires.

use std::collections::{BTreeMap, BTreeSet};

use centinela::config::{Config, DEMO_TOML};
use centinela::engine::Engine;
use centinela::model::AlertState;
use centinela::source::decode::Decoder;
use centinela_sim::{Scenario, Simulator};

#[test]
fn every_fault_of_the_demo_scenario_fires_its_rule_and_only_there() {
    let cfg = Config::parse(DEMO_TOML, "demo").unwrap();
    for seed in [1, 2, 3] {
        let scenario = Scenario::load("demo").unwrap();
        let start = 1_795_600_000_000;
        let mut sim = Simulator::new(&scenario, seed, start).unwrap();
        let mut engine = Engine::new(&cfg.rules, &cfg.engine);
        let mut decoder = Decoder::new(&cfg.ingest.prefix, cfg.broker.max_payload);
        let mut fired: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut bad = 0;
        let (mut readings, mut events) = (Vec::new(), Vec::new());
        // Five minutes of the scenario, in steps of 250 ms of its clock.
        for now in (start..start + 5 * 60_000).step_by(250) {
            for m in sim.tick(now) {
                readings.clear();
                if decoder
                    .decode(&m.topic, &m.payload, now, &mut readings)
                    .is_err()
                {
                    bad += 1;
                }
                for r in &readings {
                    engine.on_reading(r, now, &mut events);
                }
            }
            engine.tick(now, &mut events);
            for e in events.drain(..) {
                if e.state == AlertState::Firing {
                    fired
                        .entry(e.rule.clone())
                        .or_default()
                        .insert(e.series.clone());
                }
            }
        }
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            fired.get("greenhouse-hot"),
            Some(&set(&["greenhouse/node1/temperature"])),
            "seed {seed}: {fired:?}"
        );
        assert_eq!(
            fired.get("coldroom-warming"),
            Some(&set(&["coldroom/room1/temperature"])),
            "seed {seed}: {fired:?}"
        );
        assert_eq!(
            fired.get("stock-low"),
            Some(&set(&["shop/shelf1/stock"])),
            "seed {seed}: {fired:?}"
        );
        assert_eq!(
            fired.get("humidity-stuck"),
            Some(&set(&["greenhouse/node1/humidity"])),
            "seed {seed}: {fired:?}"
        );
        assert_eq!(
            fired.get("pump-vibration"),
            Some(&set(&["factory/pump1/vibration"])),
            "seed {seed}: {fired:?}"
        );
        let silent = fired.get("sensor-silent").cloned().unwrap_or_default();
        assert!(
            !silent.is_empty() && silent.iter().all(|s| s.starts_with("coldroom/room2/")),
            "seed {seed}: {silent:?}"
        );
        assert_eq!(fired.len(), 6, "seed {seed}: {fired:?}");
        assert!(
            bad >= 5,
            "the malformed payloads are refused by the decoder ({bad})"
        );
    }
}
