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
    let owner_width = app.content().owner_width;
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
            if owner_width > 0 {
                // Held here, or by another instance (or not known until its next reading).
                cells.push(Cell::from(match app.owner(name) {
                    Some(who) => Span::raw(format::printable(who).into_owned()),
                    None => Span::styled("–", theme::DIM),
                }));
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
    if owner_width > 0 {
        header.push("owner");
        widths.push(Constraint::Length(owner_width.max(5)));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use crate::model::{LiveEvent, OutputStatus, PipelineStatus, Reading};
    use crate::tui::state::{App, Options};

    const NOW: i64 = 1_800_000_000_000;

    fn readings(names: &[&str], at: i64) -> LiveEvent {
        LiveEvent::Readings(Arc::from(
            names
                .iter()
                .map(|n| Reading {
                    series: Arc::from(*n),
                    value: 21.5,
                    ts: at,
                    unit: None,
                })
                .collect::<Vec<_>>(),
        ))
    }

    fn status(cluster: Option<(&str, u64)>) -> LiveEvent {
        LiveEvent::Status(PipelineStatus {
            broker: "embedded 127.0.0.1:1883".into(),
            broker_up: true,
            storage: "sqlite c.db".into(),
            storage_ok: true,
            outputs: cluster
                .map(|(name, n)| OutputStatus {
                    name: "cluster".into(),
                    label: format!("{name} partitions"),
                    value: n,
                    warn: n == 0,
                })
                .into_iter()
                .collect(),
            ..Default::default()
        })
    }

    fn screen(app: &mut App) -> String {
        let size = app.size();
        let mut t = Terminal::new(TestBackend::new(size.width, size.height)).unwrap();
        app.prepare();
        t.draw(|f| crate::tui::draw(f, app)).unwrap();
        let buf = t.backend().buffer();
        let mut out = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn line<'a>(s: &'a str, needle: &str) -> &'a str {
        s.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{s}"))
    }

    #[test]
    fn clustered_the_table_shows_which_series_this_instance_owns() {
        let mut app = App::new(Options::default(), NOW);
        app.set_size(120, 30);
        app.apply(readings(&["gh/a/t", "gh/b/t"], NOW - 2000), NOW - 2000);
        // Not clustered: no owner column.
        app.apply(status(None), NOW - 1500);
        let s = screen(&mut app);
        assert!(!line(&s, "series").contains("owner"), "{s}");

        // Clustered: the readings that come after the assignment are of series whose
        // partitions this instance holds.
        app.apply(status(Some(("node-1", 3))), NOW - 1000);
        app.apply(readings(&["gh/a/t"], NOW - 500), NOW - 500);
        app.tick(NOW);
        let s = screen(&mut app);
        assert!(line(&s, "series").contains("owner"), "{s}");
        assert!(line(&s, "gh/a/t").contains("node-1"), "{s}");
        let b = line(&s, "gh/b/t");
        assert!(!b.contains("node-1") && b.contains('–'), "{s}");
        assert!(
            line(&s, "cluster").contains("cluster node-1 partitions 3"),
            "{s}"
        );

        // A partition moved away: nothing is known to be owned here until readings
        // come again.
        app.apply(status(Some(("node-1", 2))), NOW + 100);
        let s = screen(&mut app);
        assert!(!line(&s, "gh/a/t").contains("node-1"), "{s}");
        app.apply(readings(&["gh/b/t"], NOW + 200), NOW + 200);
        let s = screen(&mut app);
        assert!(line(&s, "gh/b/t").contains("node-1"), "{s}");
    }
}
