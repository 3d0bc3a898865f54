//! The series table: one row per series with its state, last value and unit, a
//! sparkline of recent values and the age of the last reading. Only the rows on
//! screen are built, so a thousand series cost what thirty do.

use ratatui::layout::{Alignment, Constraint, Margin, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Row, Scrollbar, ScrollbarOrientation, ScrollbarState, Table, TableState,
};
use ratatui::Frame;

use super::format;
use super::state::{App, Areas, Focus, SeriesState};
use super::theme;

/// The series' name, then `acked` when one of its alerts is acknowledged and the
/// state label says something louder.
pub fn name_with_marks(app: &App, name: &str, st: SeriesState) -> Vec<Span<'static>> {
    let mut spans = vec![Span::raw(format::printable(name).into_owned())];
    if st != SeriesState::Acked && app.is_acked(name) {
        spans.push(Span::styled(" acked", theme::state(SeriesState::Acked)));
    }
    spans
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let (sel, offset) = app.selection(Focus::Series);
    let (sort, reverse) = app.sort();
    let mut title = vec![
        Span::styled(" Series ", theme::TITLE),
        Span::raw(format!("{} of {} ", app.rows().len(), app.series_count())),
        Span::styled(
            format!(
                "· sort {}{} ",
                sort.label(),
                if reverse { " ↑" } else { "" }
            ),
            theme::DIM,
        ),
    ];
    if let Some(n) = app
        .status()
        .map(|s| s.decode_errors_total)
        .filter(|n| *n > 0)
    {
        // Messages that gave no reading: how many and why, so a wrong payload format
        // shows here rather than as a silent gap.
        let why: Vec<String> = app
            .status()
            .into_iter()
            .flat_map(|s| &s.decode_errors)
            .map(|(r, n)| format!("{n} {}", r.replace('_', " ")))
            .collect();
        let short = format!("· {n} bad payloads ");
        let long = format!("· bad payloads: {} ", why.join(", "));
        let used: usize = title.iter().map(Span::width).sum();
        let text = if why.is_empty() || used + long.chars().count() + 2 > area.width as usize {
            short
        } else {
            long
        };
        title.push(Span::styled(text, theme::WARN));
    }
    if let Some(f) = app.filter() {
        title.push(Span::styled(format!("· filter {f} "), theme::WARN));
    }
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme::border(app.focus() == Focus::Series))
        .title(Line::from(title));

    let trend = app.areas().trend as usize;
    let now = app.now();
    let rows = app
        .rows()
        .iter()
        .skip(offset)
        .take(Areas::table_rows(area))
        .filter_map(|name| {
            let s = app.series(name)?;
            let st = app.series_state(name);
            let style = theme::state(st);
            let value = s
                .value
                .map(format::value)
                .unwrap_or_else(|| "-".to_string());
            let mut cells = vec![
                Cell::from(Span::styled(format!("● {}", st.label()), style)),
                Cell::from(Line::from(name_with_marks(app, &s.name, st))),
                Cell::from(
                    Line::from(Span::styled(
                        value,
                        if st == SeriesState::Stale {
                            theme::DIM
                        } else {
                            style
                        },
                    ))
                    .alignment(Alignment::Right),
                ),
                Cell::from(Span::styled(
                    format::printable(s.unit.as_deref().unwrap_or("")),
                    theme::DIM,
                )),
            ];
            if trend > 0 {
                let line = format::sparkline(s.recent.iter().map(|p| p.1), s.recent.len(), trend);
                cells.push(Cell::from(Span::styled(line, style)));
            }
            cells.push(Cell::from(
                Line::from(format::age_since(s.seen_at, now)).alignment(Alignment::Right),
            ));
            Some(Row::new(cells))
        });

    let mut header = vec!["state", "series", "value", "unit"];
    let mut widths = vec![
        Constraint::Length(10),
        Constraint::Fill(1),
        Constraint::Length(8),
        // Units are short words (°C, ppm, bottles): shown whole.
        Constraint::Length(app.content().unit_width.max(4)),
    ];
    if trend > 0 {
        header.push("trend");
        widths.push(Constraint::Length(trend as u16));
    }
    header.push("  age");
    widths.push(Constraint::Length(5));
    let header = Row::new(header.into_iter().enumerate().map(|(i, h)| {
        let line = Line::from(h);
        Cell::from(if i == 2 {
            line.alignment(Alignment::Right)
        } else {
            line
        })
    }))
    .style(theme::HEADER_ROW);

    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(theme::SELECTED)
        .column_spacing(1);
    let mut state =
        TableState::default().with_selected((!app.rows().is_empty()).then_some(sel - offset));
    frame.render_stateful_widget(table, area, &mut state);
    let shown = Areas::table_rows(area);
    if app.rows().len() > shown {
        // Where the view is in the whole list, on the right border.
        let bar = Scrollbar::new(ScrollbarOrientation::VerticalRight)
            .begin_symbol(None)
            .end_symbol(None);
        let mut pos = ScrollbarState::new(app.rows().len().saturating_sub(shown)).position(offset);
        frame.render_stateful_widget(
            bar,
            area.inner(Margin {
                vertical: 2,
                horizontal: 0,
            }),
            &mut pos,
        );
    }
    if app.rows().is_empty() {
        let msg = if app.series_count() == 0 {
            "no readings yet"
        } else {
            "no series match the filter"
        };
        let inner = Rect {
            x: area.x + 2,
            y: area.y + 2,
            width: area.width.saturating_sub(4),
            height: 1.min(area.height.saturating_sub(3)),
        };
        frame.render_widget(Line::styled(msg, theme::DIM), inner);
    }
}
