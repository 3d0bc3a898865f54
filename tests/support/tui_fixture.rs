//! A fixture for the terminal UI tests: a state as a running greenhouse-and-lab
//! service would leave it, and a renderer to text through ratatui's TestBackend.

use std::sync::Arc;

use centinela::model::{
    AlertEvent, AlertState, LiveEvent, OutputStatus, PipelineStatus, Reading, Severity, Timestamp,
};
use centinela::tui::{self, App, Options, Threshold};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

/// 2026-11-26T05:00:00Z
pub const NOW: Timestamp = 1_795_669_200_000;

pub fn reading(series: &str, value: f64, ts: Timestamp, unit: Option<&str>) -> Reading {
    Reading {
        series: Arc::from(series),
        value,
        ts,
        unit: unit.map(Arc::from),
    }
}

pub fn alert(
    rule: &str,
    series: &str,
    state: AlertState,
    severity: Severity,
    value: f64,
    unit: &str,
    ts: Timestamp,
) -> AlertEvent {
    AlertEvent {
        rule: rule.into(),
        series: series.into(),
        state,
        severity,
        value: Some(value),
        unit: Some(unit.into()),
        ts,
        message: format!("{series} is {value} {unit}"),
        notify: vec!["telegram".into()],
    }
}

pub fn status(broker_up: bool) -> PipelineStatus {
    PipelineStatus {
        broker: "embedded 127.0.0.1:1883".into(),
        broker_up,
        storage: "sqlite /var/lib/centinela/centinela.db".into(),
        storage_ok: true,
        readings_per_s: 812.4,
        received_total: 1_000_000,
        stored_total: 999_000,
        decode_errors_total: 3,
        decode_errors: vec![("not_a_number".into(), 2), ("malformed_json".into(), 1)],
        outbox_pending: 2,
        outbox_dead: 1,
        outputs: vec![OutputStatus {
            name: "influx".into(),
            label: "backlog".into(),
            value: 17,
            warn: true,
        }],
        offline: false,
    }
}

/// Five series, two firing alerts (critical CO2, warning temperature), one pending,
/// one stale series, pipeline status, a threshold line.
pub fn app() -> App {
    let mut app = App::new(Options::default(), NOW - 600_000);
    app.set_size(120, 36);
    // The cellar stopped reporting 5 minutes ago.
    app.apply(
        LiveEvent::Readings(Arc::from(vec![reading(
            "cellar/node3/temperature",
            12.25,
            NOW - 300_000,
            Some("°C"),
        )])),
        NOW - 300_000,
    );
    for i in 0..120 {
        let ts = NOW - (120 - i) * 1000;
        let batch = vec![
            reading(
                "greenhouse/node1/temperature",
                21.0 + (i % 10) as f64 * 0.1,
                ts,
                Some("°C"),
            ),
            reading("greenhouse/node1/humidity", 40.5, ts, Some("%")),
            reading(
                "greenhouse/node2/temperature",
                28.0 + i as f64 * 0.027,
                ts,
                Some("°C"),
            ),
            reading("lab/node7/co2", 500.0 + i as f64, ts, Some("ppm")),
        ];
        app.apply(LiveEvent::Readings(Arc::from(batch)), ts);
    }
    app.apply(
        LiveEvent::Readings(Arc::from(vec![reading(
            "greenhouse/node1/temperature",
            21.5,
            NOW - 1000,
            Some("°C"),
        )])),
        NOW - 1000,
    );
    app.apply(
        LiveEvent::Alert(alert(
            "too-hot",
            "greenhouse/node2/temperature",
            AlertState::Firing,
            Severity::Warning,
            31.2,
            "°C",
            NOW - 45_000,
        )),
        NOW - 45_000,
    );
    app.apply(
        LiveEvent::Alert(alert(
            "co2-high",
            "lab/node7/co2",
            AlertState::Firing,
            Severity::Critical,
            612.0,
            "ppm",
            NOW - 30_000,
        )),
        NOW - 30_000,
    );
    app.apply(
        LiveEvent::Alert(alert(
            "dry",
            "greenhouse/node1/humidity",
            AlertState::Pending,
            Severity::Info,
            40.5,
            "%",
            NOW - 10_000,
        )),
        NOW - 10_000,
    );
    app.apply(LiveEvent::Status(status(true)), NOW);
    app.apply(
        LiveEvent::Log {
            ts: NOW - 2000,
            level: centinela::model::LogLevel::Error,
            text: "telegram: delivery failed (HTTP 502), retry in 4s".into(),
        },
        NOW,
    );
    app.set_thresholds(vec![Threshold {
        pattern: "greenhouse/+/temperature".into(),
        label: "too-hot >".into(),
        value: 30.0,
    }]);
    app.tick(NOW);
    app
}

/// The screen as text, one line per row.
pub fn render(app: &mut App) -> String {
    let size = app.size();
    let mut terminal =
        Terminal::new(TestBackend::new(size.width, size.height)).expect("test backend");
    app.prepare();
    terminal.draw(|f| tui::draw(f, app)).expect("draw");
    app.dirty = false;
    let buf = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

/// The line of the screen that contains `needle`.
pub fn line_with<'a>(screen: &'a str, needle: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{screen}"))
}

pub fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

pub fn ch(c: char) -> KeyEvent {
    key(KeyCode::Char(c))
}

pub fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}
