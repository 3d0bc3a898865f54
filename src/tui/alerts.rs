//! The alerts pane: open alerts by severity, newest first, pending ones last;
//! acknowledged and silenced ones marked.

use ratatui::layout::{Alignment, Constraint, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Row, Table, TableState};
use ratatui::Frame;

use super::format;
use super::state::{App, Areas, Focus};
use super::theme;
use crate::model::AlertState;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let (sel, offset) = app.selection(Focus::Alerts);
    let firing = app.alert_rows().filter(|a| a.is_firing()).count();
    let title = Line::from(vec![
        Span::styled(" Alerts ", theme::TITLE),
        Span::styled(
            format!("{firing} firing "),
            if firing > 0 {
                theme::severity(crate::model::Severity::Critical)
            } else {
                theme::GOOD
            },
        ),
        Span::styled(format!("· {} open ", app.alert_count()), theme::DIM),
    ]);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme::border(app.focus() == Focus::Alerts))
        .title(title);
    let now = app.now();
    let rows = app
        .alert_rows()
        .skip(offset)
        .take(Areas::table_rows(area))
        .map(|a| {
            let silenced = app.is_silenced(a);
            let (mark, dim) = match a.state {
                AlertState::Acknowledged => ("acked", true),
                AlertState::Pending => ("pending", false),
                AlertState::Flapping => ("flapping", false),
                _ if silenced => ("silenced", true),
                _ => ("firing", false),
            };
            let mut sev = theme::severity(a.severity);
            if dim {
                sev = sev
                    .remove_modifier(Modifier::BOLD)
                    .add_modifier(Modifier::DIM);
            }
            let value = a
                .value
                .map(|v| format::value_unit(v, a.unit.as_deref()))
                .unwrap_or_default();
            Row::new(vec![
                Cell::from(Span::styled(short(a.severity), sev)),
                Cell::from(Span::styled(mark, if dim { theme::DIM } else { sev })),
                Cell::from(format::printable(&a.id()).into_owned()),
                Cell::from(Line::from(value).alignment(Alignment::Right)),
                Cell::from(Line::from(format::age(now - a.since)).alignment(Alignment::Right)),
            ])
        });
    let header = Row::new(["sev", "state", "alert", "value", "for"].map(|h| {
        Cell::from(if h == "value" || h == "for" {
            Line::from(h).alignment(Alignment::Right)
        } else {
            Line::from(h)
        })
    }))
    .style(theme::HEADER_ROW);
    let widths = [
        Constraint::Length(4),
        Constraint::Length(8),
        Constraint::Fill(1),
        Constraint::Length(10),
        Constraint::Length(5),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(theme::SELECTED)
        .column_spacing(1);
    let selected = (app.focus() == Focus::Alerts && app.alert_count() > 0).then_some(sel - offset);
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut state);
    if app.alert_count() == 0 && area.height > 3 {
        let inner = Rect {
            x: area.x + 2,
            y: area.y + 2,
            width: area.width.saturating_sub(4),
            height: 1,
        };
        frame.render_widget(
            Line::styled("all quiet: no open alerts", theme::GOOD),
            inner,
        );
    }
}

/// Severity in four letters, to leave the width to the alert's name.
fn short(s: crate::model::Severity) -> &'static str {
    match s {
        crate::model::Severity::Critical => "crit",
        crate::model::Severity::Warning => "warn",
        crate::model::Severity::Info => "info",
    }
}
