//! The screen as a new user meets it, at 80×24 and 160×45: the chart's legend beside
//! the data, not over it; the footer's first hints; panes sized by what they hold;
//! whole units and help lines; bad payloads, silences, acknowledgements and a stopped
//! service all visible; odd characters in names escaped.

mod support;

use std::sync::Arc;
use support::tui_fixture;

use centinela::model::{AlertState, LiveEvent, LogLevel, Severity};
use centinela::tui::state::Silence;
use centinela::tui::{App, Options};
use crossterm::event::KeyCode;
use tui_fixture::*;

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 45)];

fn sized(w: u16, h: u16) -> App {
    let mut app = app();
    app.set_size(w, h);
    app
}

/// The left column of a line (series and alerts) when the events have their own.
fn left(line: &str) -> &str {
    line.split("││").next().unwrap_or(line)
}

fn is_braille(c: char) -> bool {
    ('\u{2801}'..='\u{28ff}').contains(&c)
}

#[test]
fn the_chart_legend_sits_in_the_bottom_border_and_the_newest_spike_is_drawn() {
    for (w, h) in SIZES {
        let mut app = sized(w, h);
        // greenhouse/node2/temperature: flat, then a spike to the top at the newest end.
        for _ in 0..3 {
            app.on_key(ch('j'), NOW);
        }
        app.on_key(key(KeyCode::Enter), NOW);
        let mut pts: Vec<_> = (0..300).map(|i| (NOW - 300_000 + i * 1000, 25.0)).collect();
        for p in pts.iter_mut().rev().take(8) {
            p.1 = 45.0;
        }
        app.set_history("greenhouse/node2/temperature", pts);
        let s = render(&mut app);
        println!("{w}×{h}\n{s}");
        let lines: Vec<&str> = s.lines().collect();
        let legend = lines
            .iter()
            .position(|l| l.contains("too-hot > 30"))
            .expect("legend shown");
        assert!(
            lines[legend].starts_with('└'),
            "the legend is not in the bottom border at {w}×{h}:\n{s}"
        );
        assert!(
            lines[legend].contains("greenhouse/node2/temperature"),
            "{s}"
        );
        // The spike reaches the top plot row at the right edge, where a legend box
        // used to be drawn.
        let top_row = lines
            .iter()
            .skip(2)
            .find(|l| l.chars().any(is_braille))
            .expect("a line is drawn");
        let right: String = top_row.chars().skip(w as usize * 3 / 4).collect::<String>();
        assert!(
            right.chars().any(is_braille),
            "the newest, highest values are not drawn at {w}×{h}:\n{s}"
        );
    }
}

#[test]
fn the_footer_shows_help_and_quit_first_and_only_whole_hints() {
    for (w, h) in SIZES {
        let mut app = sized(w, h);
        let s = render(&mut app);
        let footer = s.lines().last().unwrap();
        assert!(
            footer.starts_with(" ?  help   q  quit"),
            "{w}×{h}: {footer:?}"
        );
        // Every hint shown is whole: the line ends with one of the hint words.
        let end = footer.trim_end();
        assert!(
            ["move", "detail", "pane", "ack", "silence", "filter", "sort"]
                .iter()
                .any(|k| end.ends_with(k)),
            "{w}×{h}: {footer:?}"
        );
        if w >= 160 {
            assert!(footer.contains("o  sort"), "{footer:?}");
        }
    }
}

/// Five firing alerts and ten series.
fn busy(w: u16, h: u16) -> App {
    let mut app = sized(w, h);
    let batch: Vec<_> = (0..5)
        .map(|i| {
            reading(
                &format!("store/shelf{i}/stock"),
                3.0,
                NOW - 500,
                Some("bottles"),
            )
        })
        .collect();
    app.apply(LiveEvent::Readings(Arc::from(batch)), NOW);
    for i in 0..5 {
        app.apply(
            LiveEvent::Alert(alert(
                "low-stock",
                &format!("store/shelf{i}/stock"),
                AlertState::Firing,
                Severity::Warning,
                3.0,
                "bottles",
                NOW - 20_000,
            )),
            NOW,
        );
    }
    app.tick(NOW);
    app
}

#[test]
fn the_alerts_pane_shows_every_firing_alert_and_units_are_whole() {
    for (w, h) in SIZES {
        let mut app = busy(w, h);
        let s = render(&mut app);
        println!("{w}×{h}\n{s}");
        assert!(s.contains("Alerts 7 firing · 8 open"), "{s}");
        for i in 0..5 {
            let id = format!("low-stock/store/shelf{i}/stock");
            assert!(s.contains(&id), "{id} not shown at {w}×{h}:\n{s}");
        }
        // The unit column is as wide as the longest unit.
        app.on_key(ch('G'), NOW);
        let s = render(&mut app);
        let row = s
            .lines()
            .find(|l| l.contains("store/shelf4/stock") && l.starts_with("│●"))
            .unwrap_or_else(|| panic!("no series row at {w}×{h}:\n{s}"));
        assert!(row.contains("3 bottles"), "{row}");
        // And the event log still has room.
        assert!(s.contains("Events"), "{s}");
    }
}

#[test]
fn at_160_columns_the_events_get_the_width_their_text_needs() {
    let mut app = sized(160, 45);
    let long = "email: delivery to ops@example.org failed (421 try again), retry in 30s";
    app.apply(
        LiveEvent::Log {
            ts: NOW,
            level: LogLevel::Warn,
            text: long.into(),
        },
        NOW,
    );
    let s = render(&mut app);
    println!("{s}");
    assert!(s.contains(long), "event cut:\n{s}");
    // The series table keeps its names, values, units and sparklines.
    let row = s
        .lines()
        .map(left)
        .find(|l| l.starts_with("│●") && l.contains("lab/node7/co2"))
        .unwrap();
    assert!(row.contains("619 ppm"), "{row}");
    // The events pane is beside the series table, from the top, and wider than the
    // two fifths it had beside the alerts.
    let top = s.lines().nth(1).unwrap();
    assert!(top.contains("Series") && top.contains("Events"), "{top}");
    let events_from = top.chars().position(|c| c == '┐').unwrap() + 1;
    assert!(
        160 - events_from >= 84,
        "events {} wide: {top}",
        160 - events_from
    );
}

#[test]
fn the_help_popup_shows_each_line_whole() {
    for (w, h) in SIZES {
        let mut app = sized(w, h);
        app.opts = Options {
            about: vec![
                ("broker".into(), "mqtt://127.0.0.1:1883".into()),
                ("database".into(), "/tmp/.tmpAbC123/centinela.db".into()),
                (
                    "try".into(),
                    "mosquitto_sub -h 127.0.0.1 -p 1883 -t 'sensors/#' -v".into(),
                ),
            ],
            ..Options::default()
        };
        app.on_key(ch('?'), NOW);
        let s = render(&mut app);
        println!("{w}×{h}\n{s}");
        for want in [
            "series detail: chart, thresholds, alerts",
            "on an event: the event in full",
            "filter series: part of the name, or MQTT + and #",
            "click selects, click again opens, wheel scrolls",
            "mqtt://127.0.0.1:1883",
            "/tmp/.tmpAbC123/centinela.db",
            "mosquitto_sub -h 127.0.0.1 -p 1883 -t 'sensors/#' -v",
        ] {
            assert!(s.contains(want), "{want:?} not whole at {w}×{h}:\n{s}");
        }
    }
}

#[test]
fn bad_payloads_show_by_reason() {
    for (w, h) in SIZES {
        let mut app = sized(w, h);
        let s = render(&mut app);
        let title = line_with(&s, "Series");
        if w == 80 {
            assert!(
                title.contains("bad payloads: 2 not a number, 1 malformed json"),
                "{title}"
            );
        } else {
            // Beside the events the table is narrower: the count, the reasons below.
            assert!(title.contains("3 bad payloads"), "{title}");
        }
        assert!(
            s.contains("bad payloads skipped: 2 not a number, 1 malformed json"),
            "{w}×{h}:\n{s}"
        );
        // More arrive: the event log says which kinds (once per 10 s at most).
        let mut st = status(true);
        st.decode_errors_total = 8;
        st.decode_errors = vec![("not_a_number".into(), 7), ("malformed_json".into(), 1)];
        app.apply(LiveEvent::Status(st), NOW + 11_000);
        let s = render(&mut app);
        assert!(
            s.contains("bad payloads skipped: 5 not a number (8 in all;"),
            "{w}×{h}:\n{s}"
        );
    }
}

#[test]
fn silenced_and_acknowledged_series_are_marked_in_the_list_and_the_detail() {
    for (w, h) in SIZES {
        let mut app = sized(w, h);
        // A silence the engine holds (from Telegram, say), on a series with no alert.
        app.set_engine_silences(vec![Silence {
            pattern: "greenhouse/node1/temperature".into(),
            until: NOW + 3_600_000,
        }]);
        app.apply(
            LiveEvent::Alert(alert(
                "co2-high",
                "lab/node7/co2",
                AlertState::Acknowledged,
                Severity::Critical,
                612.0,
                "ppm",
                NOW,
            )),
            NOW,
        );
        let s = render(&mut app);
        println!("{w}×{h}\n{s}");
        let row = s
            .lines()
            .map(left)
            .find(|l| l.starts_with("│●") && l.contains("greenhouse/node1/temperature"))
            .unwrap();
        assert!(row.contains("● silenced"), "{row}");
        let row = s
            .lines()
            .map(left)
            .find(|l| l.starts_with("│●") && l.contains("lab/node7/co2"))
            .unwrap();
        assert!(row.contains("● acked"), "{row}");
        assert!(
            line_with(&s, "co2-high/lab/node7/co2  ").contains("acked"),
            "{s}"
        );
        // The detail view of the silenced series says so, with the time left.
        app.on_key(ch('g'), NOW);
        app.on_key(ch('j'), NOW);
        app.on_key(ch('j'), NOW);
        assert_eq!(app.selected_series(), Some("greenhouse/node1/temperature"));
        app.on_key(key(KeyCode::Enter), NOW);
        app.set_history("greenhouse/node1/temperature", Vec::new());
        let s = render(&mut app);
        let title = s.lines().nth(1).unwrap();
        assert!(title.contains("● silenced for 1h"), "{w}×{h}: {title}");
    }
}

#[test]
fn a_stopped_service_shows_offline_instead_of_its_last_figures() {
    for (w, h) in SIZES {
        // The service said goodbye (clean stop or its last will).
        let mut app = sized(w, h);
        let mut st = status(true);
        st.offline = true;
        st.outbox_pending = 0;
        st.outbox_dead = 0;
        app.apply(LiveEvent::Status(st), NOW);
        let s = render(&mut app);
        let header = s.lines().next().unwrap();
        assert!(header.contains("SERVICE OFFLINE"), "{w}×{h}: {header}");
        assert!(
            !header.contains('●') && !header.contains("outbox"),
            "{w}×{h}: {header}"
        );
        // Or it went quiet: after 5 s without a status the figures are stale.
        let mut app = sized(w, h);
        app.tick(NOW + 12_000);
        let s = render(&mut app);
        let header = s.lines().next().unwrap();
        assert!(
            header.contains("SERVICE OFFLINE") && header.contains("12s"),
            "{w}×{h}: {header}"
        );
        assert!(!header.contains("outbox"), "{w}×{h}: {header}");
    }
}

#[test]
fn control_characters_in_names_and_units_are_escaped() {
    for (w, h) in SIZES {
        let mut app = sized(w, h);
        app.apply(
            LiveEvent::Readings(Arc::from(vec![reading(
                "a\u{1b}[2Jb/\u{7}x",
                1.0,
                NOW,
                Some("u\nv"),
            )])),
            NOW,
        );
        let s = render(&mut app);
        assert!(!s.contains('\u{1b}') && !s.contains('\u{7}'), "{s}");
        let row = line_with(&s, "a\\u{1b}[2Jb/\\u{7}x");
        assert!(row.contains("u\\nv"), "{row}");
    }
}
