//! The event log, newest first: alert transitions, notification outcomes and
//! failures, ingest errors, and what the viewer itself noticed.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState};
use ratatui::Frame;

use super::format;
use super::state::{App, Areas, Focus};
use super::theme;
use crate::model::LogLevel;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let (sel, offset) = app.selection(Focus::Log);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme::border(app.focus() == Focus::Log))
        .title(Line::from(vec![
            Span::styled(" Events ", theme::TITLE),
            Span::styled(format!("{} ", app.log().len()), theme::DIM),
        ]));
    let items = app
        .log()
        .iter()
        .skip(offset)
        .take(Areas::list_rows(area))
        .map(|l| {
            ListItem::new(Line::from(vec![
                Span::styled(format::clock(l.ts), theme::DIM),
                Span::raw(" "),
                Span::styled(
                    format::printable(&l.text),
                    if l.level == LogLevel::Info {
                        ratatui::style::Style::new()
                    } else {
                        theme::level(l.level)
                    },
                ),
            ]))
        });
    let list = List::new(items)
        .block(block)
        .highlight_style(theme::SELECTED);
    let selected = (app.focus() == Focus::Log && !app.log().is_empty()).then_some(sel - offset);
    let mut state = ListState::default().with_selected(selected);
    frame.render_stateful_widget(list, area, &mut state);
}
