//! Every screen of the terminal UI rendered from fixture state into ratatui's
//! TestBackend, checked for what a person reads on it.

mod support;

use centinela::model::LiveEvent;
use crossterm::event::KeyCode;
use support::tui_fixture;
use tui_fixture::*;

#[test]
fn overview_shows_series_values_states_and_header_figures() {
    let mut app = app();
    let s = render(&mut app);
    println!("{s}");
    // Header: broker, storage, rate, outbox, influx backlog.
    let header = s.lines().next().unwrap();
    for want in [
        "● broker embedded 127.0.0.1:1883",
        "812.4 readings/s",
        "outbox 2 pending  1 dead",
        "influx backlog 17",
    ] {
        assert!(header.contains(want), "header lacks {want:?}: {header}");
    }
    app.set_size(160, 36);
    let wide = render(&mut app);
    assert!(
        wide.lines()
            .next()
            .unwrap()
            .contains("● sqlite /var/lib/centinela/centinela.db"),
        "{wide}"
    );
    app.set_size(120, 36);
    // Series rows: name, value right-aligned with its unit, state, age.
    let row = line_with(&s, "greenhouse/node1/temperature");
    assert!(row.contains("● ok"), "{row}");
    assert!(row.contains("21.5 °C"), "{row}");
    assert!(
        row.trim_end_matches('│').trim_end().ends_with("1s"),
        "{row}"
    );
    let row = line_with(&s, "lab/node7/co2  ");
    assert!(
        row.contains("● critical") && row.contains("619 ppm"),
        "{row}"
    );
    let row = line_with(&s, "greenhouse/node2/temperature  ");
    assert!(
        row.contains("● warning") && row.contains("31.213 °C"),
        "{row}"
    );
    let row = line_with(&s, "cellar/node3/temperature");
    assert!(
        row.contains("● stale") && row.contains("12.25 °C") && row.contains("5m"),
        "{row}"
    );
    let row = line_with(&s, "greenhouse/node1/humidity  ");
    assert!(row.contains("● pending") && row.contains("40.5 %"), "{row}");
    // Sparkline drawn for a changing series.
    assert!(line_with(&s, "lab/node7/co2  ").contains('█'));
    // Values line up on the right edge of the value column.
    let col = |needle: &str, v: &str| line_with(&s, needle).find(v).map(|i| i + v.len());
    assert_eq!(
        col("cellar/node3/temperature", "12.25"),
        col("lab/node7/co2  ", "619")
    );
    // Series sorted by name.
    let pos = |n: &str| s.find(n).unwrap();
    assert!(
        pos("cellar/node3") < pos("greenhouse/node1/humidity")
            && pos("greenhouse/node2") < pos("lab/node7/co2  ")
    );
    // Footer key hints.
    assert!(s.lines().last().unwrap().contains("Enter  detail"));
}

#[test]
fn alerts_pane_orders_by_severity_and_the_log_shows_transitions_and_failures() {
    let mut app = app();
    let s = render(&mut app);
    assert!(s.contains("Alerts 2 firing · 3 open"), "{s}");
    let crit = line_with(&s, "co2-high/lab/node7/co2");
    assert!(
        crit.contains("crit ")
            && crit.contains("firing")
            && crit.contains("612 ppm")
            && crit.contains("30s"),
        "{crit}"
    );
    let warn = line_with(&s, "too-hot/greenhouse/node2/temperature");
    assert!(
        warn.contains("warn ") && warn.contains("31.2 °C") && warn.contains("45s"),
        "{warn}"
    );
    let pending = line_with(&s, "dry/greenhouse/node1/humidity");
    assert!(pending.contains("pending"), "{pending}");
    let rows: Vec<&str> = s
        .lines()
        .filter(|l| l.starts_with("│crit") || l.starts_with("│warn") || l.starts_with("│info"))
        .collect();
    assert_eq!(rows.len(), 3, "{s}");
    assert!(
        rows[0].contains("co2-high/lab")
            && rows[1].contains("too-hot/greenhouse")
            && rows[2].contains("dry/greenhouse"),
        "{s}"
    );
    // Event log, newest first (wide enough to read whole lines).
    app.set_size(200, 36);
    let wide = render(&mut app);
    let log: Vec<&str> = wide
        .lines()
        .filter_map(|l| l.split('│').nth(3))
        .filter(|l| l.contains(':'))
        .collect();
    assert!(
        log[0].contains("telegram: delivery failed (HTTP 502), retry in 4s"),
        "{wide}"
    );
    assert!(
        log[1].contains("bad payloads skipped: 2 not a number, 1 malformed json"),
        "{wide}"
    );
    assert!(
        log[2].contains("pending info dry/greenhouse/node1/humidity = 40.5 %"),
        "{wide}"
    );
    assert!(
        log[3].contains("firing critical co2-high/lab/node7/co2 = 612 ppm"),
        "{wide}"
    );
    app.set_size(120, 36);

    // Acknowledged and resolved transitions change the pane.
    app.apply(
        LiveEvent::Alert(alert(
            "co2-high",
            "lab/node7/co2",
            centinela::model::AlertState::Acknowledged,
            centinela::model::Severity::Critical,
            612.0,
            "ppm",
            NOW,
        )),
        NOW,
    );
    app.apply(
        LiveEvent::Alert(alert(
            "too-hot",
            "greenhouse/node2/temperature",
            centinela::model::AlertState::Resolved,
            centinela::model::Severity::Warning,
            29.0,
            "°C",
            NOW,
        )),
        NOW,
    );
    let s = render(&mut app);
    assert!(
        line_with(&s, "co2-high/lab/node7/co2").contains("acked"),
        "{s}"
    );
    assert!(!s.contains("too-hot/greenhouse/node2/temperature  "), "{s}");
    assert!(line_with(&s, "lab/node7/co2  ").contains("● acked"));
    assert!(line_with(&s, "greenhouse/node2/temperature  ").contains("● ok"));
}

#[test]
fn a_lost_broker_shows_in_the_header() {
    let mut app = app();
    app.apply(LiveEvent::Status(status(false)), NOW);
    let s = render(&mut app);
    assert!(
        s.lines()
            .next()
            .unwrap()
            .contains("BROKER DOWN embedded 127.0.0.1:1883"),
        "{s}"
    );
    // Figures stop arriving: the header says the service is gone, and since when.
    app.tick(NOW + 12_000);
    let s = render(&mut app);
    let header = s.lines().next().unwrap();
    assert!(
        header.contains("SERVICE OFFLINE") && header.contains("no status for 12s"),
        "{s}"
    );
}

#[test]
fn detail_shows_chart_thresholds_and_alert_history() {
    let mut app = app();
    for _ in 0..3 {
        app.on_key(ch('j'), NOW);
    }
    render(&mut app);
    assert_eq!(app.selected_series(), Some("greenhouse/node2/temperature"));
    app.on_key(key(KeyCode::Enter), NOW);
    app.set_history(
        "greenhouse/node2/temperature",
        (0..300)
            .map(|i| (NOW - 300_000 + i * 1000, 25.0 + i as f64 / 100.0))
            .collect(),
    );
    let s = render(&mut app);
    println!("{s}");
    let title = line_with(&s, "greenhouse/node2/temperature");
    assert!(
        title.contains("31.213 °C") && title.contains("● warning"),
        "{title}"
    );
    assert!(
        title.contains("1 5m") && title.contains("2 1h") && title.contains("3 24h"),
        "{title}"
    );
    assert!(s.contains("too-hot > 30"), "threshold legend missing:\n{s}");
    assert!(s.contains("-5m") && s.contains("now"), "{s}");
    assert!(
        s.contains('⣀')
            || s.contains('⠤')
            || s.contains('⠒')
            || s.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
        "no line drawn:\n{s}"
    );
    let hist = line_with(&s, "too-hot 31.2 °C");
    assert!(hist.contains("too-hot 31.2 °C"), "{hist}");
    assert!(s.lines().last().unwrap().contains("5m/1h/24h"));
}

#[test]
fn detail_without_stored_history_falls_back_to_recent_values() {
    let mut app = app();
    app.on_key(ch('G'), NOW);
    app.on_key(key(KeyCode::Enter), NOW);
    let s = render(&mut app);
    assert!(
        line_with(&s, "lab/node7/co2 619 ppm").contains("loading history"),
        "{s}"
    );
    app.set_history("lab/node7/co2", Vec::new());
    let s = render(&mut app);
    assert!(!s.contains("loading") && s.contains("lab/node7/co2"), "{s}");
    // The recent two minutes fill the right part of the 5-minute chart.
    assert!(
        s.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
        "no line drawn:\n{s}"
    );
}

#[test]
fn help_popup_lists_the_keys() {
    let mut app = app();
    app.on_key(ch('?'), NOW);
    let s = render(&mut app);
    assert!(s.contains("Keys · Esc closes"), "{s}");
    assert!(line_with(&s, "acknowledge").contains(" a "), "{s}");
    assert!(s.contains("filter series: part of the name, or MQTT + and #"));
    app.on_key(key(KeyCode::Esc), NOW);
    assert!(!render(&mut app).contains("Keys · Esc closes"));
}

#[test]
fn a_too_small_terminal_shows_a_message() {
    let mut app = app();
    app.set_size(50, 12);
    let s = render(&mut app);
    assert!(s.contains("terminal too small: 50×12"), "{s}");
    assert!(s.contains("at least 60×15"));
    // And back.
    app.set_size(60, 15);
    let s = render(&mut app);
    assert!(!s.contains("too small") && s.contains("Series"), "{s}");
}

#[test]
fn filter_prompt_and_filtered_table() {
    let mut app = app();
    app.on_key(ch('/'), NOW);
    for c in "greenhouse/+/temperature".chars() {
        app.on_key(ch(c), NOW);
    }
    let s = render(&mut app);
    assert!(
        line_with(&s, "filter: ").contains("greenhouse/+/temperature"),
        "{s}"
    );
    app.on_key(key(KeyCode::Enter), NOW);
    let s = render(&mut app);
    assert!(
        s.contains("Series 2 of 5") && s.contains("filter greenhouse/+/temperature"),
        "{s}"
    );
    let rows = series_rows(&s);
    assert_eq!(rows.len(), 2, "{s}");
    assert!(
        rows[0].contains("greenhouse/node1/temperature")
            && rows[1].contains("greenhouse/node2/temperature"),
        "{s}"
    );
}

#[test]
fn silence_prompt_asks_for_a_duration() {
    let mut app = app();
    app.on_key(key(KeyCode::Tab), NOW);
    render(&mut app);
    app.on_key(ch('s'), NOW);
    let s = render(&mut app);
    println!("{s}");
    assert!(s.contains("Silence notifications"), "{s}");
    assert!(line_with(&s, "silence lab/node7/co2").contains("silence"));
    assert!(line_with(&s, "for:").contains("1h"));
    assert!(s.contains("Tab: silence co2-high instead"));
    app.on_key(ch('x'), NOW);
    app.on_key(key(KeyCode::Enter), NOW);
    let s = render(&mut app);
    assert!(s.contains("\"1hx\" is not a duration"), "{s}");
}

#[test]
fn narrow_terminal_stacks_the_panes() {
    let mut app = app();
    app.set_size(80, 30);
    let s = render(&mut app);
    println!("{s}");
    assert!(line_with(&s, "greenhouse/node1/temperature").contains("21.5 °C"));
    assert!(s.contains("co2-high/lab/node7/co2"));
    assert!(s.contains("Events"));
    assert!(s.find("Alerts").unwrap() < s.find("Events").unwrap());
}

/// The rows of the series table (they start with the state dot).
fn series_rows(screen: &str) -> Vec<&str> {
    screen.lines().filter(|l| l.starts_with("│●")).collect()
}

#[test]
fn the_header_goes_compact_when_narrow() {
    let mut app = app();
    app.set_size(70, 20);
    let s = render(&mut app);
    let header = s.lines().next().unwrap();
    for want in ["● broker", "812.4/s", "outbox 2", "1 dead", "influx 17"] {
        assert!(header.contains(want), "header lacks {want:?}: {header}");
    }
    app.apply(LiveEvent::Status(status(false)), NOW);
    let s = render(&mut app);
    assert!(s.lines().next().unwrap().contains("BROKER DOWN"), "{s}");
}

#[test]
fn enter_on_an_event_shows_it_in_full() {
    let mut app = app();
    app.set_size(80, 24);
    app.on_key(key(KeyCode::BackTab), NOW);
    app.on_key(key(KeyCode::Enter), NOW);
    let s = render(&mut app);
    assert!(s.contains("Event at 2026-11-26T04:59:58.000Z"), "{s}");
    assert!(
        s.contains("telegram: delivery failed (HTTP 502), retry in 4s"),
        "{s}"
    );
    app.on_key(key(KeyCode::Esc), NOW);
    assert!(!render(&mut app).contains("Event at"));
}
