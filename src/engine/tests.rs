//! Table tests pinning the semantics of DESIGN.md "Rules", property tests for
//! hysteresis and the sliding aggregates, and restore.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::config::{Agg, Duration};
use crate::model::{AlertEvent, AlertState as S, Control, Reading};

const M: i64 = 60_000;

#[derive(serde::Deserialize)]
struct Rules {
    rules: Vec<RuleConfig>,
}

fn rules(toml: &str) -> Vec<RuleConfig> {
    toml::from_str::<Rules>(toml)
        .expect("test rules parse")
        .rules
}

fn cfg(flap: u32) -> EngineConfig {
    EngineConfig {
        flap_transitions: flap,
        flap_window: Duration::from_secs(600),
        tick: Duration::from_secs(1),
    }
}

/// An engine with flapping detection off unless a test turns it on.
struct H {
    e: Engine,
    units: Option<Arc<str>>,
}

impl H {
    fn new(toml: &str) -> H {
        H {
            e: Engine::new(&rules(toml), &cfg(0)),
            units: None,
        }
    }
    fn with_cfg(toml: &str, c: EngineConfig) -> H {
        H {
            e: Engine::new(&rules(toml), &c),
            units: None,
        }
    }
    /// A reading of `series` at `ts` (and the wall clock at `ts`).
    fn at(&mut self, series: &str, ts: i64, v: f64) -> Vec<AlertEvent> {
        let mut out = Vec::new();
        let r = Reading {
            series: Arc::from(series),
            value: v,
            ts,
            unit: self.units.clone(),
        };
        self.e.on_reading(&r, ts, &mut out);
        out
    }
    fn tick(&mut self, now: i64) -> Vec<AlertEvent> {
        let mut out = Vec::new();
        self.e.tick(now, &mut out);
        out
    }
    fn ctl(&mut self, c: Control, now: i64) -> Result<Vec<AlertEvent>, ControlError> {
        self.e.control(&c, now)
    }
}

fn states(evs: &[AlertEvent]) -> Vec<S> {
    evs.iter().map(|e| e.state).collect()
}

const HOT: &str = r##"
[[rules]]
name = "hot"
series = "gh/+/t"
kind = "threshold"
above = 30.0
notify = ["telegram"]
"##;

#[test]
fn threshold_equal_is_not_above_and_default_clear_is_the_threshold() {
    let mut h = H::new(HOT);
    // (value, expected events)
    let table: &[(f64, &[S])] = &[
        (30.0, &[]),
        (30.0001, &[S::Firing]),
        (30.0, &[]), // not < 30: stays firing
        (31.0, &[]),
        (29.999, &[S::Resolved]),
        (30.0, &[]),
        (31.0, &[S::Firing]),
    ];
    for (i, (v, want)) in table.iter().enumerate() {
        let evs = h.at("gh/a/t", i as i64 * 1000, *v);
        assert_eq!(states(&evs), *want, "reading {i} = {v}");
    }
}

#[test]
fn below_with_clear_hysteresis() {
    let mut h = H::new(
        r##"[[rules]]
name = "cold"
series = "#"
kind = "threshold"
below = 5.0
clear = 7.0
"##,
    );
    let table: &[(f64, &[S])] = &[
        (5.0, &[]),
        (4.9, &[S::Firing]),
        (6.9, &[]),
        (7.0, &[]),
        (7.1, &[S::Resolved]),
        (6.0, &[]),
        (5.0, &[]),
        (4.0, &[S::Firing]),
    ];
    for (i, (v, want)) in table.iter().enumerate() {
        assert_eq!(states(&h.at("x", i as i64, *v)), *want, "reading {i} = {v}");
    }
}

#[test]
fn above_with_clear_hysteresis() {
    let mut h = H::new(&format!("{HOT}clear = 28.0\n"));
    let table: &[(f64, &[S])] = &[
        (31.0, &[S::Firing]),
        (29.0, &[]),
        (28.0, &[]), // not < 28
        (27.9, &[S::Resolved]),
        (29.0, &[]),
        (30.0, &[]),
        (30.1, &[S::Firing]),
    ];
    for (i, (v, want)) in table.iter().enumerate() {
        assert_eq!(
            states(&h.at("gh/a/t", i as i64, *v)),
            *want,
            "reading {i} = {v}"
        );
    }
}

#[test]
fn for_is_event_time_and_fires_exactly_at_the_boundary() {
    let mut h = H::new(&format!("{HOT}for = \"2m\"\n"));
    let evs = h.at("gh/a/t", 0, 31.0);
    assert_eq!(states(&evs), [S::Pending]);
    assert!(evs[0].notify.is_empty(), "pending is never sent");
    // The wall clock passing does not fire a pending alert: only readings do.
    assert!(h.tick(10 * M).is_empty());
    assert!(h.at("gh/a/t", 2 * M - 1, 31.0).is_empty());
    let evs = h.at("gh/a/t", 2 * M, 31.0);
    assert_eq!(states(&evs), [S::Firing]);
    assert_eq!(evs[0].ts, 2 * M);
    assert_eq!(evs[0].notify, ["telegram"]);
}

#[test]
fn pending_that_clears_is_recorded_but_not_sent_and_restarts() {
    let mut h = H::new(&format!("{HOT}for = \"2m\"\nclear = 25.0\n"));
    assert_eq!(states(&h.at("gh/a/t", 0, 31.0)), [S::Pending]);
    // 30 is not above 30: the condition is off, pending is cancelled (clear only
    // matters once firing).
    let evs = h.at("gh/a/t", M, 30.0);
    assert_eq!(
        states(&evs),
        [S::Cancelled],
        "never `resolved`: it never fired"
    );
    assert!(evs[0].notify.is_empty());
    assert_eq!(
        evs[0].message,
        "gh/a/t is back to 30 after 1m pending: cancelled, never fired"
    );
    assert_eq!(states(&h.at("gh/a/t", 90_000, 31.0)), [S::Pending]);
    // 2 minutes after the first reading, but only 30 s after the new pending start.
    assert!(h.at("gh/a/t", 2 * M, 31.0).is_empty());
    assert_eq!(states(&h.at("gh/a/t", 90_000 + 2 * M, 31.0)), [S::Firing]);
}

#[test]
fn rate_window_includes_the_reading_exactly_window_old() {
    let mut h = H::new(
        r##"[[rules]]
name = "warming"
series = "#"
kind = "rate"
window = "1m"
rise = 5.0
"##,
    );
    assert!(h.at("c", 0, 10.0).is_empty());
    assert!(h.at("c", 30_000, 12.0).is_empty());
    // oldest with ts ≥ 60000 − 60000 is the one at 0: delta 5.5 > 5
    let evs = h.at("c", M, 15.5);
    assert_eq!(states(&evs), [S::Firing]);
    assert_eq!(evs[0].value, Some(5.5));
    assert_eq!(evs[0].message, "c rose by 5.5 within 1m, more than 5");
    // now the oldest in the window is the one at 30 s: delta 3.5
    let evs = h.at("c", M + 1, 15.5);
    assert_eq!(states(&evs), [S::Resolved]);
    assert_eq!(evs[0].value, Some(3.5));
    // delta exactly 5 is not more than 5
    assert!(h.at("c", 10 * M, 0.0).is_empty());
    assert!(h.at("c", 10 * M + 1, 5.0).is_empty());
}

#[test]
fn rate_fall() {
    let mut h = H::new(
        r##"[[rules]]
name = "dropping"
series = "#"
kind = "rate"
window = "10m"
fall = 2.0
"##,
    );
    h.units = Some(Arc::from("kg"));
    assert!(h.at("stock", 0, 10.0).is_empty());
    assert!(
        h.at("stock", M, 8.0).is_empty(),
        "−2 is not a fall of more than 2"
    );
    let evs = h.at("stock", 2 * M, 7.9);
    assert_eq!(states(&evs), [S::Firing]);
    assert!((evs[0].value.unwrap() + 2.1).abs() < 1e-9);
    assert_eq!(
        evs[0].message,
        "stock fell by 2.1 kg within 10m, more than 2"
    );
}

#[test]
fn window_range_is_inclusive_at_both_ends() {
    let mut h = H::new(
        r##"[[rules]]
name = "co2"
series = "#"
kind = "window"
agg = "avg"
window = "1m"
above = 20.0
"##,
    );
    assert_eq!(states(&h.at("r", 0, 20.0)), Vec::<S>::new());
    // [0, 60000] holds 20 and 22.2: avg 21.1
    let evs = h.at("r", M, 22.2);
    assert_eq!(states(&evs), [S::Firing]);
    assert_eq!(evs[0].value, Some(21.1));
    assert_eq!(evs[0].message, "average of r over 1m is 21.1, above 20");
    // [1, 60001]: the reading at 0 has left; (22.2 + 20) / 2 = 21.1, still firing
    assert!(h.at("r", M + 1, 20.0).is_empty());
    // [60000, 120000]: 22.2, 20, 17 → 19.73 < 20 (clear defaults to the threshold)
    let evs = h.at("r", 2 * M, 17.0);
    assert_eq!(states(&evs), [S::Resolved]);
}

/// The aggregate after each reading, read back from the snapshot of an alert that
/// fires on the first reading and so tracks its value.
#[test]
fn every_aggregate_over_the_same_readings() {
    let readings = [
        (0, 4.0),
        (10_000, 1.0),
        (20_000, 9.0),
        (30_000, 2.0),
        (70_000, 5.0),
    ];
    // window 60 s: after the last reading the window [10000, 70000] holds 1, 9, 2, 5
    let table = [
        ("avg", 4.25),
        ("min", 1.0),
        ("max", 9.0),
        ("sum", 17.0),
        ("count", 4.0),
        ("spread", 8.0),
    ];
    for (agg, want) in table {
        let mut h = H::new(&format!(
            "[[rules]]\nname = \"w\"\nseries = \"#\"\nkind = \"window\"\nagg = \"{agg}\"\nwindow = \"1m\"\nabove = -1000.0\n"
        ));
        for (ts, v) in readings {
            h.at("s", ts, v);
        }
        let snap = h.e.snapshot(70_000);
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].value, Some(want), "agg {agg}");
    }
}

#[test]
fn deadman_fires_stamped_last_seen_plus_silence_and_next_reading_resolves() {
    let mut h = H::new(
        r##"[[rules]]
name = "silent"
series = "#"
kind = "deadman"
silence = "5m"
notify = ["telegram"]
"##,
    );
    assert!(h.at("gh/a/t", 0, 21.5).is_empty());
    assert!(h.tick(5 * M - 1).is_empty());
    // The tick runs late; the event is stamped at the deadline, not at the tick.
    let evs = h.tick(5 * M + 700);
    assert_eq!(states(&evs), [S::Firing]);
    assert_eq!(evs[0].ts, 5 * M);
    assert_eq!(evs[0].value, Some(21.5));
    assert_eq!(evs[0].message, "gh/a/t has sent nothing for 5m");
    assert_eq!(evs[0].notify, ["telegram"]);
    assert!(h.tick(6 * M).is_empty());
    let evs = h.at("gh/a/t", 7 * M, 22.0);
    assert_eq!(states(&evs), [S::Resolved]);
    assert_eq!(evs[0].ts, 7 * M);
    assert_eq!(evs[0].message, "gh/a/t reports again: 22, after 2m firing");
    // The deadline moves with each reading.
    assert!(h.tick(7 * M + 5 * M - 1).is_empty());
    assert_eq!(states(&h.tick(12 * M)), [S::Firing]);
}

#[test]
fn deadman_expected_series_is_watched_from_the_first_tick() {
    let mut h = H::new(
        r##"[[rules]]
name = "silent"
series = "gh/#"
kind = "deadman"
silence = "5m"
expect = ["gh/never/t"]
"##,
    );
    assert!(h.tick(1000).is_empty());
    assert!(h.tick(1000 + 5 * M - 1).is_empty());
    let evs = h.tick(1000 + 5 * M);
    assert_eq!(states(&evs), [S::Firing]);
    assert_eq!(
        (evs[0].series.as_str(), evs[0].ts, evs[0].value),
        ("gh/never/t", 1000 + 5 * M, None)
    );
}

#[test]
fn out_of_order_reading_moves_nothing_and_is_counted() {
    let mut h = H::new(HOT);
    assert_eq!(states(&h.at("gh/a/t", 100, 31.0)), [S::Firing]);
    assert!(h.at("gh/a/t", 50, 10.0).is_empty());
    assert_eq!(h.e.ignored_readings(), 1);
    assert_eq!(h.e.snapshot(100)[0].state, S::Firing);
    // Equal timestamps are not older: evaluated.
    assert_eq!(states(&h.at("gh/a/t", 100, 10.0)), [S::Resolved]);
    // Not a number: ignored too.
    assert!(h.at("gh/a/t", 200, f64::NAN).is_empty());
    assert_eq!(h.e.ignored_readings(), 2);
    // Another series has its own order.
    assert_eq!(states(&h.at("gh/b/t", 60, 31.0)), [S::Firing]);
    assert_eq!(h.e.ignored_readings(), 2);
}

#[test]
fn rules_apply_only_to_matching_series() {
    let mut h = H::new(HOT);
    assert!(h.at("gh/a/h", 0, 99.0).is_empty());
    assert!(h.at("gh/a/b/t", 0, 99.0).is_empty());
    assert_eq!(h.at("gh/z/t", 0, 99.0)[0].alert_id(), "hot/gh/z/t");
}

#[test]
fn repeat_until_acknowledged_and_ack_lasts_until_resolved() {
    let mut h = H::new(&format!("{HOT}repeat = \"10m\"\n"));
    assert_eq!(states(&h.at("gh/a/t", 0, 31.0)), [S::Firing]);
    assert!(h.tick(10 * M - 1).is_empty());
    let evs = h.tick(10 * M);
    assert_eq!(states(&evs), [S::Repeat]);
    assert_eq!(evs[0].notify, ["telegram"]);
    assert!(h.tick(15 * M).is_empty());
    let evs = h
        .ctl(
            Control::Ack {
                alert: "hot/gh/a/t".into(),
                by: "ana".into(),
            },
            16 * M,
        )
        .unwrap();
    assert_eq!(states(&evs), [S::Acknowledged]);
    assert_eq!(evs[0].message, "hot/gh/a/t acknowledged by ana");
    assert_eq!(h.e.snapshot(16 * M)[0].state, S::Acknowledged);
    assert!(h.tick(60 * M).is_empty(), "no repeats once acknowledged");
    let err = h
        .ctl(
            Control::Ack {
                alert: "hot/gh/a/t".into(),
                by: "bo".into(),
            },
            61 * M,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "alert hot/gh/a/t was already acknowledged by ana"
    );
    let evs = h.at("gh/a/t", 62 * M, 20.0);
    assert_eq!(states(&evs), [S::Resolved]);
    assert_eq!(evs[0].notify, ["telegram"]);
    // A new firing needs a new ack.
    assert_eq!(states(&h.at("gh/a/t", 63 * M, 31.0)), [S::Firing]);
    assert_eq!(states(&h.tick(73 * M)), [S::Repeat]);
}

#[test]
fn ack_by_rule_name_and_clear_errors() {
    let mut h = H::new(HOT);
    h.at("gh/a/t", 0, 31.0);
    h.at("gh/b/t", 0, 31.0);
    h.at("gh/c/t", 0, 10.0);
    let err = h
        .ctl(
            Control::Ack {
                alert: "hot/gh/c/t".into(),
                by: "ana".into(),
            },
            1,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "alert hot/gh/c/t is ok, not firing: only a firing alert can be acknowledged"
    );
    let err = h
        .ctl(
            Control::Ack {
                alert: "hot/gh/zz/t".into(),
                by: "ana".into(),
            },
            1,
        )
        .unwrap_err();
    assert!(matches!(err, ControlError::UnknownAlert(_)), "{err}");
    assert!(err.to_string().contains("rule/series"), "{err}");
    let evs = h
        .ctl(
            Control::Ack {
                alert: "hot".into(),
                by: "ana".into(),
            },
            1,
        )
        .unwrap();
    let mut ids: Vec<String> = evs.iter().map(AlertEvent::alert_id).collect();
    ids.sort();
    assert_eq!(ids, ["hot/gh/a/t", "hot/gh/b/t"]);
    let err = h
        .ctl(
            Control::Ack {
                alert: "hot".into(),
                by: "ana".into(),
            },
            2,
        )
        .unwrap_err();
    assert_eq!(err, ControlError::NothingToAck("hot".into()));
}

#[test]
fn silence_empties_notify_keeps_events_and_announces_when_it_ends() {
    let mut h = H::new(&format!("{HOT}repeat = \"1h\"\n"));
    let silence = |p: &str, until| Control::Silence {
        pattern: p.into(),
        until,
        reason: "maintenance".into(),
        by: "ana".into(),
    };
    h.ctl(silence("gh/#", 30 * M), 0).unwrap();
    h.ctl(silence("other/+/t", 30 * M), 0).unwrap();
    let evs = h.at("gh/a/t", M, 31.0);
    assert_eq!(states(&evs), [S::Firing]);
    assert!(evs[0].notify.is_empty(), "silenced: recorded, not sent");
    assert!(h.e.snapshot(M)[0].silenced);
    let mut other = H::new(HOT);
    other.ctl(silence("gh/b/#", 30 * M), 0).unwrap();
    assert_eq!(
        other.at("gh/a/t", M, 31.0)[0].notify,
        ["telegram"],
        "a silence on another series"
    );
    assert!(h.tick(30 * M - 1).is_empty());
    // The silence ends with the alert still firing: announced once.
    let evs = h.tick(30 * M);
    assert_eq!(states(&evs), [S::Repeat]);
    assert_eq!(evs[0].notify, ["telegram"]);
    assert!(h.e.silences().is_empty());
    assert!(h.tick(31 * M).is_empty());
    assert_eq!(
        states(&h.tick(90 * M)),
        [S::Repeat],
        "repeat counts from the announcement"
    );

    // Silence by rule name; resolved during it after being announced → told after.
    h.ctl(silence("hot", 200 * M), 100 * M).unwrap();
    let evs = h.at("gh/a/t", 110 * M, 10.0);
    assert_eq!(states(&evs), [S::Resolved]);
    assert!(evs[0].notify.is_empty());
    h.ctl(
        Control::Unsilence {
            pattern: Some("hot".into()),
            by: "ana".into(),
        },
        120 * M,
    )
    .unwrap();
    let evs = h.tick(120 * M);
    assert_eq!(states(&evs), [S::Resolved]);
    assert_eq!(evs[0].notify, ["telegram"]);
    assert!(h.tick(121 * M).is_empty());
}

#[test]
fn silence_requests_are_checked() {
    let mut h = H::new(HOT);
    let s = |p: &str, until| Control::Silence {
        pattern: p.into(),
        until,
        reason: String::new(),
        by: "x".into(),
    };
    assert!(matches!(
        h.ctl(s("gh/#", 10), 10),
        Err(ControlError::SilenceInPast { .. })
    ));
    assert!(matches!(
        h.ctl(s("gh/#/t", 100), 10),
        Err(ControlError::BadPattern { .. })
    ));
    assert!(matches!(
        h.ctl(s("", 100), 10),
        Err(ControlError::BadPattern { .. })
    ));
    let e = h
        .ctl(
            Control::Unsilence {
                pattern: Some("nope".into()),
                by: "x".into(),
            },
            10,
        )
        .unwrap_err();
    assert_eq!(e.to_string(), "no silence with pattern \"nope\"");
    h.ctl(s("gh/a/t", 100), 10).unwrap();
    h.ctl(s("gh/a/t", 200), 10).unwrap();
    let all = h.e.take_dirty_silences().unwrap();
    assert_eq!(all.len(), 1, "same pattern replaces");
    assert_eq!(all[0].until, 200);
    assert!(h.e.take_dirty_silences().is_none());
}

#[test]
fn flapping_holds_notifications_until_stable_then_announces_once() {
    let mut h = H::with_cfg(HOT, cfg(4));
    let mut all = Vec::new();
    // 4 transitions: not more than 4, normal notifications.
    for (i, v) in [31.0, 20.0, 31.0, 20.0].iter().enumerate() {
        let evs = h.at("gh/a/t", i as i64 * 10_000, *v);
        assert_eq!(evs[0].notify, ["telegram"], "transition {i}");
        all.extend(evs);
    }
    // The 5th within 10 minutes: flapping.
    let evs = h.at("gh/a/t", 40_000, 31.0);
    assert_eq!(states(&evs), [S::Firing, S::Flapping]);
    assert!(evs[0].notify.is_empty());
    assert_eq!(
        evs[1].notify,
        ["telegram"],
        "the flapping notice itself is sent"
    );
    assert!(evs[1].message.contains("flapping"), "{}", evs[1].message);
    let evs = h.at("gh/a/t", 50_000, 20.0);
    assert_eq!(states(&evs), [S::Resolved]);
    assert!(evs[0].notify.is_empty());
    let evs = h.at("gh/a/t", 60_000, 31.0);
    assert_eq!(
        states(&evs),
        [S::Firing],
        "one flapping event, not one per transition"
    );
    assert!(evs[0].notify.is_empty());
    assert!(h.e.snapshot(60_000)[0].flapping);
    // Stable for the flap window after the last transition: current state told once.
    assert!(h.tick(60_000 + 10 * M - 1).is_empty());
    let evs = h.tick(60_000 + 10 * M);
    assert_eq!(states(&evs), [S::Repeat]);
    assert_eq!(evs[0].notify, ["telegram"]);
    assert!(h.tick(60_000 + 20 * M).is_empty());
    assert!(!h.e.snapshot(0)[0].flapping);
}

#[test]
fn messages_from_templates_and_defaults() {
    let mut h = H::new(&format!(
        "{HOT}for = \"2m\"\nseverity = \"critical\"\nmessage = \"[{{severity}}] {{rule}}: {{series}} {{state}} at {{value}}{{unit}} (> {{threshold}} for {{duration}})\"\n"
    ));
    h.units = Some(Arc::from("°C"));
    h.at("gh/a/t", 0, 31.200000001);
    let evs = h.at("gh/a/t", 2 * M, 31.200000001);
    assert_eq!(
        evs[0].message,
        "[critical] hot: gh/a/t firing at 31.2 °C (> 30 for 2m)"
    );
    assert_eq!(evs[0].unit.as_deref(), Some("°C"));
    assert_eq!(evs[0].severity, Severity::Critical);

    let mut h = H::new(&format!("{HOT}for = \"2m\"\n"));
    h.units = Some(Arc::from("hPa"));
    h.at("gh/a/t", 0, 1013.25);
    let evs = h.at("gh/a/t", 2 * M, 1013.25);
    assert_eq!(evs[0].message, "gh/a/t is 1013.25 hPa, above 30 for 2m");
    let evs = h.at("gh/a/t", 3 * M, 12.0);
    assert_eq!(
        evs[0].message,
        "gh/a/t is back to 12 hPa (clear below 30) after 1m firing"
    );

    let mut h = H::new("[[rules]]\nname = \"n\"\nseries = \"#\"\nkind = \"window\"\nagg = \"count\"\nwindow = \"5m\"\nbelow = 2.0\n");
    h.units = Some(Arc::from("°C"));
    assert!(
        h.at("s", 0, 1.0).is_empty(),
        "no verdict before a whole window"
    );
    let evs = h.at("s", 6 * M, 1.0);
    assert_eq!(
        evs[0].message, "count of s over 5m is 1, below 2",
        "a count has no unit"
    );
    assert_eq!(evs[0].unit, None);
}

#[test]
fn a_deadman_last_reading_waits_for_the_slow_save_and_transitions_do_not() {
    let toml = format!(
        "{HOT}[[rules]]\nname = \"silent\"\nseries = \"gh/#\"\nkind = \"deadman\"\nsilence = \"5m\"\n"
    );
    let mut h = H::new(&toml);
    h.at("gh/a/t", 0, 20.0);
    h.at("gh/b/t", 0, 20.0);
    assert!(h.e.take_changed().is_empty(), "only last readings moved");
    h.at("gh/a/t", M, 31.0); // hot fires
    let changed = h.e.take_changed();
    assert_eq!(
        changed
            .iter()
            .map(|r| (r.rule.as_str(), r.series.as_str()))
            .collect::<Vec<_>>(),
        [("hot", "gh/a/t")]
    );
    let all = h.e.take_dirty();
    let mut seen: Vec<_> = all
        .iter()
        .map(|r| (r.rule.as_str(), r.series.as_str(), r.last_seen))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [("silent", "gh/a/t", Some(M)), ("silent", "gh/b/t", Some(0))]
    );
    assert!(h.e.take_dirty().is_empty(), "nothing changed since");
}

#[test]
fn dirty_records_and_restore_keep_firing_quiet_and_pending_start() {
    let toml = format!(
        "{HOT}repeat = \"30m\"\n[[rules]]\nname = \"slow\"\nseries = \"gh/+/t\"\nkind = \"threshold\"\nabove = 30.0\nfor = \"2m\"\n\
         [[rules]]\nname = \"silent\"\nseries = \"gh/#\"\nkind = \"deadman\"\nsilence = \"5m\"\n"
    );
    let mut h = H::new(&toml);
    h.at("gh/a/t", 0, 31.0); // hot fires, slow pending from 0, silent watches from 0
    h.at("gh/a/t", M, 31.5);
    let recs = h.e.take_dirty();
    let find = |rule: &str| recs.iter().find(|r| r.rule == rule).unwrap().clone();
    let hot = find("hot");
    assert_eq!(
        (hot.state, hot.since, hot.notified, hot.last_notified),
        (S::Firing, 0, true, Some(0))
    );
    let slow = find("slow");
    assert_eq!((slow.state, slow.since), (S::Pending, 0));
    assert_eq!(find("silent").last_seen, Some(M));
    assert!(h.e.take_dirty().is_empty(), "nothing changed since");

    // kill -9; restart.
    let mut h = H::new(&toml);
    h.e.restore(recs.clone(), vec![], 2 * M);
    assert!(h.tick(2 * M).is_empty(), "firing is not announced again");
    let snap = h.e.snapshot(2 * M);
    assert_eq!(
        snap.iter()
            .map(|v| (v.rule.as_str(), v.state, v.since))
            .collect::<Vec<_>>(),
        [("hot", S::Firing, 0), ("slow", S::Pending, 0)]
    );
    // Still firing: no new Firing event; pending fires 2 min after its persisted start.
    let evs = h.at("gh/a/t", 2 * M, 31.0);
    assert_eq!(
        evs.iter()
            .map(|e| (e.rule.as_str(), e.state))
            .collect::<Vec<_>>(),
        [("slow", S::Firing)]
    );
    // repeat counts from the notification before the restart (at 0).
    assert!(h.tick(30 * M - 1).iter().all(|e| e.rule != "hot"));
    let evs = h.tick(30 * M);
    assert_eq!(
        evs.iter()
            .map(|e| (e.rule.as_str(), e.state))
            .collect::<Vec<_>>(),
        [("hot", S::Repeat)]
    );
    // The deadman deadline continues from the persisted last_seen.
    let mut h2 = H::new(&toml);
    h2.e.restore(vec![find("silent")], vec![], 2 * M);
    assert!(h2.tick(6 * M - 1).is_empty());
    let evs = h2.tick(6 * M);
    assert_eq!(
        (evs[0].rule.as_str(), evs[0].state, evs[0].ts),
        ("silent", S::Firing, 6 * M)
    );
}

#[test]
fn restore_drops_records_of_removed_rules_and_keeps_silences() {
    let mut h = H::new(HOT);
    let rec = AlertRecord {
        rule: "gone".into(),
        series: "gh/a/t".into(),
        state: S::Firing,
        since: 0,
        value: Some(1.0),
        unit: None,
        last_seen: Some(0),
        last_notified: Some(0),
        notified: true,
        acked_by: None,
        flapping: false,
    };
    let sil = |until| SilenceRecord {
        pattern: "#".into(),
        until,
        reason: "r".into(),
        by: "b".into(),
        created: 0,
    };
    h.e.restore(vec![rec], vec![sil(50), sil(500)], 100);
    assert!(h.e.snapshot(100).is_empty());
    assert_eq!(h.e.silences().len(), 1);
    // A restored newest timestamp makes older readings out of order.
    let mut h = H::new(HOT);
    let rec = AlertRecord {
        rule: "hot".into(),
        state: S::Ok,
        last_seen: Some(1000),
        ..h_rec()
    };
    h.e.restore(vec![rec], vec![], 2000);
    assert!(h.at("gh/a/t", 999, 40.0).is_empty());
    assert_eq!(h.e.ignored_readings(), 1);
}

#[test]
fn prime_refills_windows_without_events() {
    let toml = "[[rules]]\nname = \"avg\"\nseries = \"#\"\nkind = \"window\"\nagg = \"avg\"\nwindow = \"10m\"\nabove = 25.0\n\
                [[rules]]\nname = \"hot\"\nseries = \"#\"\nkind = \"threshold\"\nabove = 25.0\n";
    let mut h = H::new(toml);
    assert_eq!(h.e.max_window_ms(), Some(10 * M));
    let rec = AlertRecord {
        rule: "avg".into(),
        series: "s".into(),
        state: S::Firing,
        since: 0,
        value: Some(30.0),
        notified: true,
        ..h_rec()
    };
    h.e.restore(vec![rec], vec![], 5 * M);
    for m in 0..5 {
        h.e.prime(&Reading {
            series: Arc::from("s"),
            value: 30.0,
            ts: m * M,
            unit: None,
        });
    }
    // Without the primed history the lone 20 would resolve the average.
    assert!(h.at("s", 5 * M, 20.0).is_empty());
    assert_eq!(h.e.snapshot(5 * M)[0].value, Some(28.0 + 1.0 / 3.0));
}

fn h_rec() -> AlertRecord {
    AlertRecord {
        rule: String::new(),
        series: "gh/a/t".into(),
        state: S::Ok,
        since: 0,
        value: None,
        unit: None,
        last_seen: None,
        last_notified: None,
        notified: false,
        acked_by: None,
        flapping: false,
    }
}

#[test]
fn replay_fires_deadman_on_the_replayed_clock_and_sums_up() {
    let rs = rules(
        r##"[[rules]]
name = "hot"
series = "gh/+/t"
kind = "threshold"
above = 30.0
repeat = "10m"
notify = ["telegram"]

[[rules]]
name = "silent"
series = "gh/#"
kind = "deadman"
silence = "5m"
"##,
    );
    let t0 = 1_700_000_000_000;
    let mut readings = Vec::new();
    // gh/a/t every minute for an hour, hot from minute 10 to 35; gh/b/t stops at 20.
    for m in 0..=60 {
        let v = if (10..35).contains(&m) { 31.0 } else { 20.0 };
        readings.push(Reading {
            series: Arc::from("gh/a/t"),
            value: v,
            ts: t0 + m * M,
            unit: None,
        });
        if m <= 20 {
            readings.push(Reading {
                series: Arc::from("gh/b/t"),
                value: 20.0,
                ts: t0 + m * M,
                unit: None,
            });
        }
    }
    readings.reverse(); // replay sorts
    let rep = replay(&rs, &cfg(6), readings);
    let ev: Vec<(&str, &str, S, i64)> = rep
        .events
        .iter()
        .map(|e| {
            (
                e.rule.as_str(),
                e.series.as_str(),
                e.state,
                (e.ts - t0) / 1000,
            )
        })
        .collect();
    assert_eq!(
        ev,
        [
            ("hot", "gh/a/t", S::Firing, 600),
            ("hot", "gh/a/t", S::Repeat, 1200),
            ("silent", "gh/b/t", S::Firing, 1500),
            ("hot", "gh/a/t", S::Repeat, 1800),
            ("hot", "gh/a/t", S::Resolved, 2100),
        ]
    );
    assert_eq!(rep.readings, 61 + 21);
    let hot = &rep.rules[0];
    assert_eq!(
        (
            hot.fired,
            hot.notifications,
            hot.firing_ms,
            hot.series_fired
        ),
        (1, 4, 25 * M, 1)
    );
    let silent = &rep.rules[1];
    // still firing at the end: counted up to the last reading (minute 60)
    assert_eq!(
        (silent.fired, silent.notifications, silent.firing_ms),
        (1, 0, 35 * M)
    );
    let text = render_summary(&rep);
    let expected = "\
Replayed 82 readings of 2 series, 2023-11-14 22:13:20 UTC → 2023-11-14 23:13:20 UTC (1h).
5 events.

RULE    KIND       SEVERITY  FIRED  SERIES  NOTIFICATIONS  TIME FIRING  LONGEST
hot     threshold  warning       1       1              4          25m      25m
silent  deadman    warning       1       1              0          35m      35m
";
    assert!(text.starts_with(expected), "{text}");
}

// ---------------------------------------------------------------- properties

/// Values clustered on the threshold and the clear value so boundaries are hit.
fn value_near(threshold: f64, clear: f64) -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(threshold),
        Just(clear),
        Just(threshold + 0.5),
        Just(threshold - 0.5),
        Just(clear - 0.5),
        Just(clear + 0.5),
        (threshold - 20.0..threshold + 20.0),
    ]
}

fn hysteresis_case() -> impl Strategy<Value = (bool, f64, f64, i64, Vec<(i64, f64)>)> {
    (
        any::<bool>(),
        -10i32..10,
        0i32..6,
        prop_oneof![Just(0i64), 1i64..5_000],
    )
        .prop_flat_map(|(above, t, gap, for_ms)| {
            let threshold = f64::from(t);
            let clear = if above {
                threshold - f64::from(gap)
            } else {
                threshold + f64::from(gap)
            };
            let steps =
                proptest::collection::vec((0i64..2_000, value_near(threshold, clear)), 1..80);
            (
                Just(above),
                Just(threshold),
                Just(clear),
                Just(for_ms),
                steps,
            )
        })
}

proptest! {
    /// For `above`: never fires (nor goes pending) on a value ≤ threshold, never
    /// resolves a firing alert while value ≥ clear; and it does fire on a value >
    /// threshold once `for` has passed, and does resolve on a value < clear.
    /// Mirrored for `below`.
    #[test]
    fn threshold_hysteresis((above, threshold, clear, for_ms, steps) in hysteresis_case()) {
        let dir = if above { "above" } else { "below" };
        let for_line = if for_ms > 0 { format!("for = \"{for_ms}ms\"\n") } else { String::new() };
        let mut h = H::new(&format!(
            "[[rules]]\nname = \"r\"\nseries = \"#\"\nkind = \"threshold\"\n{dir} = {threshold:?}\nclear = {clear:?}\n{for_line}"
        ));
        let on = |v: f64| if above { v > threshold } else { v < threshold };
        let off = |v: f64| if above { v < clear } else { v > clear };
        let mut ts = 0;
        let mut state = S::Ok;
        let mut pending_since = 0;
        for (dt, v) in steps {
            ts += dt;
            let evs = h.at("s", ts, v);
            prop_assert!(evs.len() <= 1);
            for e in &evs {
                prop_assert_eq!(e.value, Some(v));
                match e.state {
                    S::Firing => {
                        prop_assert!(on(v), "fired on {} ({} {})", v, dir, threshold);
                        prop_assert!(state == S::Ok && for_ms == 0 || state == S::Pending && ts >= pending_since + for_ms);
                    }
                    S::Pending => {
                        prop_assert!(on(v) && for_ms > 0 && state == S::Ok);
                        pending_since = ts;
                    }
                    S::Resolved if state == S::Firing => prop_assert!(off(v), "resolved on {} (clear {})", v, clear),
                    S::Resolved => prop_assert!(false, "resolved while {:?}", state),
                    S::Cancelled => prop_assert!(state == S::Pending && !on(v)),
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
                state = if matches!(e.state, S::Resolved | S::Cancelled) { S::Ok } else { e.state };
            }
            // Liveness: what must have happened did.
            if on(v) {
                prop_assert_ne!(state, S::Ok);
                if for_ms == 0 { prop_assert_eq!(state, S::Firing); }
            } else {
                prop_assert_ne!(state, S::Pending);
            }
            if state == S::Pending { prop_assert!(ts < pending_since + for_ms, "pending past `for` on a reading that is on"); }
            if off(v) { prop_assert_ne!(state, S::Firing); }
        }
    }

    /// The O(1) window aggregates equal a direct computation over [t − w, t].
    #[test]
    fn window_aggregates_match_direct_computation(
        steps in proptest::collection::vec((0i64..50, -100.0f64..100.0), 1..300),
        w in 1i64..200,
    ) {
        for agg in [Agg::Avg, Agg::Min, Agg::Max, Agg::Sum, Agg::Count, Agg::Spread] {
            let mut st = rule::WindowState::new(agg);
            let mut seen: Vec<(i64, f64)> = Vec::new();
            let mut ts = 0;
            for &(dt, v) in &steps {
                ts += dt;
                seen.push((ts, v));
                let got = st.push(ts, v, w);
                let inside: Vec<f64> = seen.iter().filter(|(t, _)| *t >= ts - w && *t <= ts).map(|&(_, v)| v).collect();
                let min = inside.iter().copied().fold(f64::INFINITY, f64::min);
                let max = inside.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = inside.iter().sum();
                let want = match agg {
                    Agg::Avg => sum / inside.len() as f64,
                    Agg::Min => min,
                    Agg::Max => max,
                    Agg::Sum => sum,
                    Agg::Count => inside.len() as f64,
                    Agg::Spread => max - min,
                };
                prop_assert!((got - want).abs() < 1e-6, "{:?}: got {} want {}", agg, got, want);
                prop_assert!(st.held() <= inside.len(), "memory bounded by the window");
            }
        }
    }

    /// Rate delta = value now − value of the oldest reading with ts ≥ now − window.
    #[test]
    fn rate_delta_matches_definition(
        steps in proptest::collection::vec((0i64..50, -100.0f64..100.0), 1..300),
        w in 1i64..200,
    ) {
        let mut q = std::collections::VecDeque::new();
        let mut seen: Vec<(i64, f64)> = Vec::new();
        let mut ts = 0;
        for (dt, v) in steps {
            ts += dt;
            seen.push((ts, v));
            let got = rule::rate_push(&mut q, ts, v, w);
            let oldest = seen.iter().find(|(t, _)| *t >= ts - w).unwrap().1;
            prop_assert_eq!(got, v - oldest);
            prop_assert!(q.len() <= seen.iter().filter(|(t, _)| *t >= ts - w).count());
        }
    }
}

#[test]
fn replay_streams_events_and_orders_ticks_after_readings_of_the_same_instant() {
    let rs = rules(
        "[[rules]]\nname = \"silent\"\nseries = \"#\"\nkind = \"deadman\"\nsilence = \"5m\"\n",
    );
    let r = |ts: i64| Reading {
        series: Arc::from("s"),
        value: 1.0,
        ts,
        unit: None,
    };
    let mut rp = Replayer::new(&rs, &cfg(6));
    assert!(rp.push(&r(0)).is_empty());
    // A reading exactly at the deadline comes before the tick of that instant.
    assert!(rp.push(&r(5 * M)).is_empty());
    // The next reading is 6 min later: the tick at 10 min fires (stamped 10 min), then
    // this reading resolves it; both come back from this push, in that order.
    let evs: Vec<(S, i64)> = rp
        .push(&r(11 * M))
        .iter()
        .map(|e| (e.state, e.ts))
        .collect();
    assert_eq!(evs, [(S::Firing, 10 * M), (S::Resolved, 11 * M)]);
    let rep = rp.finish();
    assert_eq!((rep.rules[0].fired, rep.rules[0].firing_ms), (1, M));
    assert_eq!(
        render_summary(&ReplayReport {
            events: vec![],
            rules: vec![],
            readings: 0,
            series: 0,
            ignored: 0,
            from: None,
            to: None
        }),
        "No readings to replay.\n0 events.\n\nNo rules configured.\n"
    );
}

#[test]
fn window_rules_wait_for_a_whole_window_before_judging() {
    let mut h = H::new("[[rules]]\nname = \"stuck\"\nseries = \"#\"\nkind = \"window\"\nagg = \"spread\"\nwindow = \"1m\"\nbelow = 0.05\n");
    // A fresh series has a spread of 0: that is not a stuck sensor yet.
    assert!(h.at("s", 0, 20.0).is_empty());
    assert!(h.at("s", 30_000, 20.0).is_empty());
    // A whole minute of the same value is.
    let evs = h.at("s", 60_000, 20.0);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].state, AlertState::Firing);
    // It moves again: resolved.
    let evs = h.at("s", 70_000, 20.5);
    assert_eq!(evs[0].state, AlertState::Resolved);
}

#[test]
fn resolved_text_is_not_the_firing_text() {
    // The README's template for firing; resolved gets its own default.
    let mut h = H::new(&format!(
        "{HOT}clear = 33.0\nabove = 35.0\nfor = \"20s\"\nmessage = \"{{series}} is {{value}}{{unit}}, above {{threshold}} for {{duration}}\"\n"
    ).replace("above = 30.0\n", "").replace("gh/+/t", "greenhouse/+/temperature"));
    h.units = Some(Arc::from("°C"));
    h.at("greenhouse/node1/temperature", 0, 36.0);
    let evs = h.at("greenhouse/node1/temperature", 20_000, 36.2);
    assert_eq!(
        evs[0].message,
        "greenhouse/node1/temperature is 36.2 °C, above 35 for 20s"
    );
    let evs = h.at("greenhouse/node1/temperature", 20_000 + 4 * M, 21.76);
    assert_eq!(states(&evs), [S::Resolved]);
    assert_eq!(
        evs[0].message,
        "greenhouse/node1/temperature is back to 21.76 °C (clear below 33) after 4m firing"
    );
    assert_eq!(evs[0].notify, ["telegram"]);

    // `message_resolved` replaces the default.
    let mut h = H::new(&format!(
        "{HOT}message_resolved = \"{{rule}}: {{series}} ok at {{value}}{{unit}}, fired {{lasted}}\"\n"
    ));
    h.units = Some(Arc::from("V"));
    h.at("gh/a/t", 0, 31.0);
    let evs = h.at("gh/a/t", 90_000, 3.901);
    assert_eq!(evs[0].message, "hot: gh/a/t ok at 3.901 V, fired 1m 30s");

    // A below rule clears above.
    let mut h = H::new(
        "[[rules]]\nname = \"low\"\nseries = \"#\"\nkind = \"threshold\"\nbelow = 3.5\nclear = 3.7\n",
    );
    h.at("b", 0, 3.4);
    let evs = h.at("b", 45_000, 3.8);
    assert_eq!(
        evs[0].message,
        "b is back to 3.8 (clear above 3.7) after 45s firing"
    );
}

#[test]
fn adopted_firing_alert_stays_firing_unannounced_and_readings_it_had_not_seen_are_judged() {
    let toml = r#"[[rules]]
name = "hot"
series = "gh/+/t"
kind = "threshold"
above = 30.0
notify = ["telegram"]
"#;
    let mut old = H::new(toml);
    assert_eq!(states(&old.at("gh/a/t", 1_000, 35.0)), [S::Firing]);
    let handed = old.e.take_dirty();
    // The new owner has seen newer readings of the series before (it owned it once).
    let mut new = H::new(toml);
    assert!(new.at("gh/a/t", 50_000, 20.0).is_empty());
    assert_eq!(new.e.adopt(handed), 1);
    // Still firing, not announced again; a reading after the record's last one counts.
    assert!(new.at("gh/a/t", 2_000, 36.0).is_empty());
    assert_eq!(new.e.snapshot(2_000)[0].state, S::Firing);
    assert_eq!(states(&new.at("gh/a/t", 3_000, 20.0)), [S::Resolved]);
}

#[test]
fn released_series_do_no_tick_work_until_a_reading_comes_back() {
    let mut h = H::new(
        r##"[[rules]]
name = "silent"
series = "#"
kind = "deadman"
silence = "5m"
"##,
    );
    assert!(h.at("gh/a/t", 0, 21.5).is_empty());
    h.e.release(["gh/a/t"]);
    assert!(h.tick(10 * M).is_empty(), "another instance watches it now");
    assert!(h.at("gh/a/t", 11 * M, 21.0).is_empty());
    assert_eq!(states(&h.tick(16 * M)), [S::Firing]);
}

#[test]
fn adopted_history_refills_windows_without_events_and_replaces_stale_ones() {
    let toml = "[[rules]]\nname = \"avg\"\nseries = \"w/#\"\nkind = \"window\"\nagg = \"avg\"\nwindow = \"10s\"\nabove = 30.0\n\
                [[rules]]\nname = \"rise\"\nseries = \"r/#\"\nkind = \"rate\"\nwindow = \"10s\"\nrise = 10.0\n";
    let reading = |series: &str, ts: i64, value: f64| Reading {
        series: Arc::from(series),
        value,
        ts,
        unit: None,
    };
    // What the other instance judged: w at 20 for ten seconds, r at 50.
    let history: Vec<Reading> = (0..10)
        .flat_map(|i| {
            [
                reading("w/a", i * 1000, 20.0),
                reading("r/a", i * 1000, 50.0),
            ]
        })
        .collect();
    let mut new = H::new(toml);
    // This instance owned r/a once: its stale low window must not count.
    assert!(new.at("r/a", -60_000, 10.0).is_empty());
    assert_eq!(new.e.adopt_with_history(Vec::new(), &history), 0);
    // The window is full at once (a fresh one would wait ten seconds) and holds the
    // twenties: 40 alone does not lift the average above 30...
    for s in 10..15 {
        assert!(new.at("w/a", s * 1000, 40.0).is_empty(), "{s}");
    }
    // ...until enough of the window is 40: (5 × 20 + 6 × 40) / 11 > 30.
    assert_eq!(states(&new.at("w/a", 15_000, 40.0)), [S::Firing]);
    // r fell from 50 to 45: no rise (a fresh window would take 45 as its start and
    // call 56 a rise of 11; with the history it is 6).
    assert!(new.at("r/a", 10_000, 45.0).is_empty());
    assert!(new.at("r/a", 10_500, 56.0).is_empty());
}
