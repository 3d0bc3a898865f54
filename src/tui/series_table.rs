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
    if let Some(f) = app.filter() {
        title.push(Span::styled(format!("· filter {f} "), theme::WARN));
    }
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme::border(app.focus() == Focus::Series))
        .title(Line::from(title));

    let trend = if area.width >= 100 {
        24
    } else if area.width >= 80 {
        12
    } else {
        0
    };
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
                Cell::from(Span::raw(&*s.name)),
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
                    s.unit.as_deref().unwrap_or("").to_string(),
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
        Constraint::Length(5),
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
