//! Popups: the key help (`?`), the filter prompt (`/`) and the silence prompt (`s`).

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::state::{App, Popup};
use super::theme;

/// The keys, one line each; a second line of a key starts with an empty key. Lines are
/// kept short enough for the smallest screen, so none wraps.
const KEYS: &[(&str, &str)] = &[
    ("↑ ↓  j k", "move in the pane"),
    ("PgUp PgDn", "a page; g G: first, last"),
    ("Tab", "next pane: series, alerts, events"),
    ("Enter", "series detail: chart, thresholds, alerts"),
    ("", "on an event: the event in full"),
    ("1 2 3", "in detail: chart over 5 min, 1 h, 24 h"),
    ("Esc", "back; clears the filter"),
    ("a", "acknowledge the selected alert"),
    ("s", "silence the series or rule (asks how long)"),
    ("u", "lift the silence of the series"),
    ("/", "filter series: part of the name, or MQTT + and #"),
    ("o  O", "sort by name, value, age, state; reverse"),
    ("mouse", "click selects, click again opens, wheel scrolls"),
    ("q  Ctrl-C", "quit"),
];

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    match app.popup() {
        Some(Popup::Help) => draw_help(frame, area, app),
        Some(Popup::Event(line)) => {
            let title = format!(" Event at {} ", crate::model::format_ts(line.ts));
            let r = centered(area, area.width.saturating_sub(8).min(100), 8);
            frame.render_widget(Clear, r);
            let block = Block::default()
                .borders(Borders::ALL)
                .border_style(theme::border(true))
                .title(Span::styled(title, theme::TITLE))
                .title_bottom(Line::styled(" Esc closes ", theme::DIM));
            let text = Paragraph::new(Line::styled(
                super::format::printable(&line.text).into_owned(),
                theme::level(line.level),
            ))
            .block(block)
            .wrap(Wrap { trim: false });
            frame.render_widget(text, r);
        }
        Some(Popup::Filter { input }) => {
            let lines = vec![
                Line::from(vec![
                    Span::raw("filter: "),
                    Span::styled(format!("{input}▏"), theme::TITLE),
                ]),
                Line::styled(
                    "part of a name, or MQTT wildcards: greenhouse/+/temperature, lab/#",
                    theme::DIM,
                ),
                Line::styled("Enter apply · Esc clear", theme::DIM),
            ];
            prompt(frame, area, " Filter series ", lines);
        }
        Some(Popup::Silence {
            input,
            targets,
            target,
            error,
        }) => {
            let mut lines = vec![
                Line::from(vec![
                    Span::raw("silence "),
                    Span::styled(targets[*target].clone(), theme::TITLE),
                ]),
                Line::from(vec![
                    Span::raw("for:     "),
                    Span::styled(format!("{input}▏"), theme::TITLE),
                ]),
            ];
            if let Some(e) = error {
                lines.push(Line::styled(e.clone(), theme::WARN));
            } else if targets.len() > 1 {
                lines.push(Line::styled(
                    format!(
                        "Tab: silence {} instead",
                        targets[(*target + 1) % targets.len()]
                    ),
                    theme::DIM,
                ));
            } else {
                lines.push(Line::styled("e.g. 30m, 1h, 2d", theme::DIM));
            }
            lines.push(Line::styled("Enter send · Esc cancel", theme::DIM));
            prompt(frame, area, " Silence notifications ", lines);
        }
        None => {}
    }
}

fn draw_help(frame: &mut Frame, area: Rect, app: &App) {
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:>10}  "), theme::TITLE),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::from(vec![
        Span::styled("    states  ", theme::DIM),
        Span::styled("ok ", theme::GOOD),
        Span::styled("pending ", theme::state(super::state::SeriesState::Pending)),
        Span::styled("info ", theme::severity(crate::model::Severity::Info)),
        Span::styled("warning ", theme::severity(crate::model::Severity::Warning)),
        Span::styled(
            "critical",
            theme::severity(crate::model::Severity::Critical),
        ),
    ]));
    lines.push(Line::from(vec![
        Span::raw("            "),
        Span::styled("acked ", theme::state(super::state::SeriesState::Acked)),
        Span::styled(
            "silenced ",
            theme::state(super::state::SeriesState::Silenced),
        ),
        Span::styled("stale", theme::state(super::state::SeriesState::Stale)),
    ]));
    if !app.opts.about.is_empty() {
        lines.push(Line::raw(""));
        for (what, text) in &app.opts.about {
            lines.push(Line::from(vec![
                Span::styled(format!("{what:>10}  "), theme::TITLE),
                Span::raw(text.clone()),
            ]));
        }
    }
    let w = lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 4;
    let r = centered(area, w, lines.len() as u16 + 2);
    frame.render_widget(Clear, r);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme::border(true))
        .title(Span::styled(" Keys · Esc closes ", theme::TITLE));
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        r,
    );
}

fn prompt(frame: &mut Frame, area: Rect, title: &str, lines: Vec<Line>) {
    let r = centered(area, 72, lines.len() as u16 + 2);
    frame.render_widget(Clear, r);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(ratatui::style::Color::Yellow))
        .title(Span::styled(title.to_string(), theme::TITLE));
    frame.render_widget(Paragraph::new(lines).block(block), r);
}

/// A `w`×`h` rectangle in the middle of `area`, shrunk to fit.
fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}
