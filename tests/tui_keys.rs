//! Key and mouse handling on the pure terminal state: what a person's keys do and
//! which requests reach the engine.

mod support;

use std::sync::Arc;
use support::tui_fixture;

use centinela::model::{AlertState, Control, LiveEvent, Severity};
use centinela::tui::state::{Action, Focus, SeriesState, SortKey, LOG_CAP, RECENT_CAP};
use crossterm::event::{KeyCode, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use tui_fixture::*;

fn rows(app: &centinela::tui::App) -> Vec<String> {
    app.rows().iter().map(|s| s.to_string()).collect()
}

#[test]
fn arrows_and_jk_move_the_selection_within_bounds() {
    let mut app = app();
    render(&mut app);
    assert_eq!(app.selected_series(), Some("cellar/node3/temperature"));
    app.on_key(ch('j'), NOW);
    app.on_key(key(KeyCode::Down), NOW);
    assert_eq!(app.selected_series(), Some("greenhouse/node1/temperature"));
    app.on_key(ch('k'), NOW);
    assert_eq!(app.selected_series(), Some("greenhouse/node1/humidity"));
    for _ in 0..10 {
        app.on_key(key(KeyCode::Down), NOW);
    }
    assert_eq!(app.selected_series(), Some("lab/node7/co2"));
    app.on_key(key(KeyCode::Up), NOW);
    app.on_key(ch('g'), NOW);
    assert_eq!(app.selected_series(), Some("cellar/node3/temperature"));
    app.on_key(key(KeyCode::Up), NOW);
    assert_eq!(app.selected_series(), Some("cellar/node3/temperature"));
}

#[test]
fn the_selection_follows_its_series_when_rows_move() {
    let mut app = app();
    app.on_key(ch('G'), NOW);
    assert_eq!(app.selected_series(), Some("lab/node7/co2"));
    // A new series sorted before it arrives.
    app.apply(
        LiveEvent::Readings(Arc::from(vec![reading("aaa/first", 1.0, NOW, None)])),
        NOW,
    );
    render(&mut app);
    assert_eq!(app.selected_series(), Some("lab/node7/co2"));
}

#[test]
fn tab_cycles_the_panes() {
    let mut app = app();
    assert_eq!(app.focus(), Focus::Series);
    app.on_key(key(KeyCode::Tab), NOW);
    assert_eq!(app.focus(), Focus::Alerts);
    app.on_key(key(KeyCode::Tab), NOW);
    assert_eq!(app.focus(), Focus::Log);
    app.on_key(key(KeyCode::BackTab), NOW);
    assert_eq!(app.focus(), Focus::Alerts);
    app.on_key(ch('j'), NOW);
    assert_eq!(
        app.selected_alert().unwrap().id(),
        "too-hot/greenhouse/node2/temperature"
    );
}

#[test]
fn filter_edits_applies_on_enter_and_esc_clears() {
    let mut app = app();
    app.on_key(ch('/'), NOW);
    for c in "greenhouse/+/temperaturX".chars() {
        app.on_key(ch(c), NOW);
    }
    app.on_key(key(KeyCode::Backspace), NOW);
    app.on_key(ch('e'), NOW);
    // Typing does not filter yet; 'q' in the prompt is text, not quit.
    assert_eq!(rows(&app).len(), 5);
    app.on_key(key(KeyCode::Enter), NOW);
    render(&mut app);
    assert_eq!(app.filter(), Some("greenhouse/+/temperature"));
    assert_eq!(
        rows(&app),
        [
            "greenhouse/node1/temperature",
            "greenhouse/node2/temperature"
        ]
    );

    app.on_key(ch('/'), NOW);
    assert_eq!(app.on_key(ch('q'), NOW), None);
    app.on_key(key(KeyCode::Esc), NOW);
    render(&mut app);
    assert_eq!(app.filter(), None);
    assert_eq!(rows(&app).len(), 5);

    // A plain word matches part of the name; Esc on the table clears it too.
    app.on_key(ch('/'), NOW);
    app.on_key(ch('C'), NOW);
    app.on_key(ch('O'), NOW);
    app.on_key(ch('2'), NOW);
    app.on_key(key(KeyCode::Enter), NOW);
    render(&mut app);
    assert_eq!(rows(&app), ["lab/node7/co2"]);
    app.on_key(key(KeyCode::Esc), NOW);
    render(&mut app);
    assert_eq!(rows(&app).len(), 5);
}

#[test]
fn o_cycles_the_sort_key_and_capital_o_reverses() {
    let mut app = app();
    render(&mut app);
    assert_eq!(app.sort(), (SortKey::Name, false));
    app.on_key(ch('o'), NOW);
    render(&mut app);
    assert_eq!(app.sort().0, SortKey::Value);
    assert_eq!(rows(&app)[0], "lab/node7/co2");
    assert_eq!(rows(&app)[4], "cellar/node3/temperature");
    app.on_key(ch('o'), NOW);
    render(&mut app);
    assert_eq!(app.sort().0, SortKey::Age);
    assert_eq!(rows(&app)[0], "cellar/node3/temperature", "oldest first");
    app.on_key(ch('o'), NOW);
    render(&mut app);
    assert_eq!(app.sort().0, SortKey::State);
    assert_eq!(
        rows(&app)[..3],
        [
            "lab/node7/co2",
            "greenhouse/node2/temperature",
            "greenhouse/node1/humidity"
        ]
    );
    app.on_key(ch('O'), NOW);
    render(&mut app);
    assert_eq!(rows(&app)[4], "lab/node7/co2");
    app.on_key(ch('o'), NOW);
    render(&mut app);
    assert_eq!(app.sort(), (SortKey::Name, true));
    assert_eq!(rows(&app)[0], "lab/node7/co2");
}

#[test]
fn a_acknowledges_the_selected_alert() {
    let mut app = app();
    app.on_key(key(KeyCode::Tab), NOW);
    let got = app.on_key(ch('a'), NOW);
    assert_eq!(
        got,
        Some(Action::Control(Control::Ack {
            alert: "co2-high/lab/node7/co2".into(),
            by: "tui".into()
        }))
    );
    assert!(render(&mut app).contains("acknowledgement sent: co2-high/lab/node7/co2"));
    app.on_key(ch('j'), NOW);
    let got = app.on_key(ch('a'), NOW);
    assert_eq!(
        got,
        Some(Action::Control(Control::Ack {
            alert: "too-hot/greenhouse/node2/temperature".into(),
            by: "tui".into()
        }))
    );
    // A pending alert cannot be acknowledged.
    app.on_key(ch('j'), NOW);
    assert_eq!(app.on_key(ch('a'), NOW), None);
    assert!(render(&mut app).contains("dry/greenhouse/node1/humidity is pending, not firing"));
}

#[test]
fn a_on_a_series_row_acknowledges_its_alert() {
    let mut app = app();
    app.on_key(ch('G'), NOW);
    let got = app.on_key(ch('a'), NOW);
    assert_eq!(
        got,
        Some(Action::Control(Control::Ack {
            alert: "co2-high/lab/node7/co2".into(),
            by: "tui".into()
        }))
    );
    app.on_key(ch('g'), NOW);
    assert_eq!(app.on_key(ch('a'), NOW), None, "the cellar has no alert");
}

#[test]
fn s_asks_for_a_duration_and_sends_a_silence() {
    let mut app = app();
    app.on_key(key(KeyCode::Tab), NOW);
    assert_eq!(app.on_key(ch('s'), NOW), None);
    app.on_key(key(KeyCode::Backspace), NOW);
    app.on_key(key(KeyCode::Backspace), NOW);
    for c in "30m".chars() {
        assert_eq!(app.on_key(ch(c), NOW), None);
    }
    let got = app.on_key(key(KeyCode::Enter), NOW + 5);
    assert_eq!(
        got,
        Some(Action::Control(Control::Silence {
            pattern: "lab/node7/co2".into(),
            until: NOW + 5 + 30 * 60_000,
            reason: "silenced from the terminal".into(),
            by: "tui".into(),
        }))
    );
    assert!(app.popup().is_none());
    // Known silence: the alert and its series show as silenced until it ends.
    let s = render(&mut app);
    assert!(
        line_with(&s, "co2-high/lab/node7/co2").contains("silenced"),
        "{s}"
    );
    assert_eq!(app.series_state("lab/node7/co2"), SeriesState::Silenced);
    app.tick(NOW + 31 * 60_000);
    render(&mut app);
    assert_eq!(
        app.series_state("lab/node7/co2"),
        SeriesState::Firing(Severity::Critical)
    );
}

#[test]
fn silence_can_target_the_rule_and_rejects_bad_durations() {
    let mut app = app();
    app.on_key(key(KeyCode::Tab), NOW);
    app.on_key(ch('j'), NOW);
    app.on_key(ch('s'), NOW);
    app.on_key(key(KeyCode::Tab), NOW);
    app.on_key(ch('x'), NOW);
    assert_eq!(app.on_key(key(KeyCode::Enter), NOW), None);
    assert!(app.popup().is_some());
    app.on_key(key(KeyCode::Backspace), NOW);
    match app.on_key(key(KeyCode::Enter), NOW) {
        Some(Action::Control(Control::Silence { pattern, until, .. })) => {
            assert_eq!(pattern, "too-hot");
            assert_eq!(until, NOW + 3_600_000);
        }
        other => panic!("{other:?}"),
    }
    // Esc cancels without sending.
    app.on_key(ch('s'), NOW);
    assert_eq!(app.on_key(key(KeyCode::Esc), NOW), None);
    assert!(app.popup().is_none());
}

#[test]
fn u_lifts_the_silence() {
    let mut app = app();
    app.on_key(ch('G'), NOW);
    assert_eq!(
        app.on_key(ch('u'), NOW),
        Some(Action::Control(Control::Unsilence {
            pattern: Some("lab/node7/co2".into()),
            by: "tui".into()
        }))
    );
}

#[test]
fn q_and_ctrl_c_quit() {
    let mut app = app();
    assert_eq!(app.on_key(ch('q'), NOW), Some(Action::Quit));
    app.on_key(ch('?'), NOW);
    assert_eq!(app.on_key(ctrl('c'), NOW), Some(Action::Quit));
    assert_eq!(
        app.on_key(
            crossterm::event::KeyEvent::new(KeyCode::Char('c'), KeyModifiers::NONE),
            NOW
        ),
        None
    );
}

#[test]
fn enter_opens_detail_and_number_keys_change_the_range() {
    let mut app = app();
    app.on_key(ch('G'), NOW);
    assert_eq!(
        app.on_key(key(KeyCode::Enter), NOW),
        Some(Action::LoadDetail {
            series: "lab/node7/co2".into(),
            since: NOW - 300_000
        })
    );
    assert_eq!(
        app.on_key(ch('2'), NOW),
        Some(Action::LoadDetail {
            series: "lab/node7/co2".into(),
            since: NOW - 3_600_000
        })
    );
    assert_eq!(
        app.on_key(ch('3'), NOW),
        Some(Action::LoadDetail {
            series: "lab/node7/co2".into(),
            since: NOW - 86_400_000
        })
    );
    // a in the detail view acknowledges this series' alert.
    assert!(
        matches!(app.on_key(ch('a'), NOW), Some(Action::Control(Control::Ack { alert, .. })) if alert == "co2-high/lab/node7/co2")
    );
    app.on_key(key(KeyCode::Esc), NOW);
    assert!(app.detail().is_none());
    // From the alerts pane, Enter opens the alert's series.
    app.on_key(key(KeyCode::Tab), NOW);
    app.on_key(ch('j'), NOW);
    assert_eq!(
        app.on_key(key(KeyCode::Enter), NOW),
        Some(Action::LoadDetail {
            series: "greenhouse/node2/temperature".into(),
            since: NOW - 300_000
        })
    );
}

#[test]
fn history_is_merged_with_recent_values_in_time_order() {
    let mut app = app();
    app.on_key(ch('G'), NOW);
    app.on_key(key(KeyCode::Enter), NOW);
    // Stored history ends 60 s ago; recent values fill in after it.
    app.set_history(
        "lab/node7/co2",
        vec![(NOW - 200_000, 400.0), (NOW - 60_000, 560.0)],
    );
    let pts = app.chart_points();
    assert_eq!(pts[0], (NOW - 200_000, 400.0));
    assert_eq!(pts[1], (NOW - 60_000, 560.0));
    assert_eq!(pts[2].0, NOW - 59_000);
    assert!(pts.windows(2).all(|w| w[0].0 < w[1].0));
    // History of another series is ignored.
    app.set_history("lab/node8/co2", vec![(NOW, 1.0)]);
    assert_eq!(app.chart_points().len(), pts.len());
}

#[test]
fn alert_stream_drives_the_series_colour() {
    let mut app = app();
    let s = "greenhouse/node1/temperature";
    assert_eq!(app.series_state(s), SeriesState::Ok);
    for (state, want) in [
        (AlertState::Pending, SeriesState::Pending),
        (AlertState::Firing, SeriesState::Firing(Severity::Critical)),
        (AlertState::Repeat, SeriesState::Firing(Severity::Critical)),
        (AlertState::Acknowledged, SeriesState::Acked),
        (AlertState::Resolved, SeriesState::Ok),
    ] {
        app.apply(
            LiveEvent::Alert(alert("frost", s, state, Severity::Critical, 1.0, "°C", NOW)),
            NOW,
        );
        assert_eq!(app.series_state(s), want, "after {state}");
    }
    assert_eq!(app.history_of(s).count(), 5);
    // No reading for longer than the staleness threshold: stale.
    app.tick(NOW + 61_000);
    assert_eq!(app.series_state(s), SeriesState::Stale);
    // An alert on a series never seen adds a row for it.
    app.apply(
        LiveEvent::Alert(alert(
            "deadman",
            "attic/node9/temperature",
            AlertState::Firing,
            Severity::Warning,
            3.0,
            "°C",
            NOW,
        )),
        NOW,
    );
    render(&mut app);
    assert!(rows(&app).contains(&"attic/node9/temperature".to_string()));
}

#[test]
fn buffers_are_bounded() {
    let mut app = app();
    for i in 0..(RECENT_CAP as i64 + 50) {
        app.apply(
            LiveEvent::Readings(Arc::from(vec![reading("x/y", i as f64, NOW + i, None)])),
            NOW + i,
        );
    }
    let s = app.series("x/y").unwrap();
    assert_eq!(s.recent.len(), RECENT_CAP);
    assert_eq!(s.recent.back().unwrap().1, (RECENT_CAP + 49) as f64);
    for i in 0..(LOG_CAP + 20) {
        app.apply(
            LiveEvent::Log {
                ts: NOW,
                level: centinela::model::LogLevel::Info,
                text: format!("line {i}"),
            },
            NOW,
        );
    }
    assert_eq!(app.log().len(), LOG_CAP);
    assert_eq!(app.log()[0].text, format!("line {}", LOG_CAP + 19));
}

#[test]
fn dirty_only_when_something_changed() {
    let mut app = app();
    render(&mut app);
    assert!(!app.dirty);
    app.tick(NOW + 100);
    assert!(!app.dirty, "same second, nothing new");
    app.tick(NOW + 1_000);
    assert!(app.dirty, "ages moved on");
    render(&mut app);
    app.apply(
        LiveEvent::Readings(Arc::from(vec![reading("lab/node7/co2", 1.0, NOW, None)])),
        NOW + 1_001,
    );
    assert!(app.dirty);
    render(&mut app);
    app.on_key(ch('z'), NOW + 1_002);
    assert!(!app.dirty, "an unbound key changes nothing");
    app.note_lagged(7, NOW + 1_003);
    assert!(app.dirty);
    assert_eq!(app.lagged(), 7);
    assert!(render(&mut app)
        .lines()
        .next()
        .unwrap()
        .contains("7 skipped"));
}

#[test]
fn mouse_click_selects_and_opens_and_the_wheel_scrolls() {
    let mut app = app();
    render(&mut app);
    let at = |column, row, kind| MouseEvent {
        kind,
        column,
        row,
        modifiers: KeyModifiers::NONE,
    };
    // Row 0 is the header line, 1 the table border, 2 the column names, 3 the first series.
    assert_eq!(
        app.on_mouse(at(20, 5, MouseEventKind::Down(MouseButton::Left)), NOW),
        None
    );
    assert_eq!(app.selected_series(), Some("greenhouse/node1/temperature"));
    assert_eq!(
        app.on_mouse(at(20, 5, MouseEventKind::Down(MouseButton::Left)), NOW),
        Some(Action::LoadDetail {
            series: "greenhouse/node1/temperature".into(),
            since: NOW - 300_000
        })
    );
    app.on_key(key(KeyCode::Esc), NOW);
    app.on_mouse(at(20, 5, MouseEventKind::ScrollDown), NOW);
    assert_eq!(app.selected_series(), Some("greenhouse/node2/temperature"));
    // A click in the alerts pane focuses it and selects the alert.
    let s = render(&mut app);
    let y = s
        .lines()
        .position(|l| l.contains("too-hot/greenhouse/node2/temperature"))
        .unwrap() as u16;
    app.on_mouse(at(10, y, MouseEventKind::Down(MouseButton::Left)), NOW);
    assert_eq!(app.focus(), Focus::Alerts);
    assert_eq!(app.selected_alert().unwrap().rule, "too-hot");
}

#[test]
fn initial_events_show_open_alerts_and_age_old_values() {
    let mut app = centinela::tui::App::new(centinela::tui::Options::default(), NOW);
    app.set_size(120, 30);
    app.apply_initial(
        vec![
            LiveEvent::Readings(Arc::from(vec![reading(
                "cellar/node3/temperature",
                12.25,
                NOW - 120_000,
                Some("°C"),
            )])),
            LiveEvent::Alert(alert(
                "deadman",
                "cellar/node3/temperature",
                AlertState::Firing,
                Severity::Critical,
                12.25,
                "°C",
                NOW - 60_000,
            )),
        ],
        NOW,
    );
    let s = render(&mut app);
    let row = line_with(&s, "│● critical cellar/node3/temperature");
    assert!(
        row.contains("12.25 °C") && row.trim_end_matches('│').trim_end().ends_with("2m"),
        "{row}"
    );
    assert!(
        line_with(&s, "deadman/cellar/node3/temperature").contains("1m"),
        "{s}"
    );
}
