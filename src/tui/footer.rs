//! The footer line: the keys that work here, or the answer to the last action.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::state::{App, Focus};
use super::theme;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    if let Some(msg) = app.flash() {
        frame.render_widget(
            Paragraph::new(Line::from(Span::styled(format!(" {msg}"), theme::WARN))),
            area,
        );
        return;
    }
    let keys: &[(&str, &str)] = if app.detail().is_some() {
        &[
            ("1/2/3", "5m/1h/24h"),
            ("a", "ack"),
            ("s", "silence"),
            ("Esc", "back"),
            ("?", "help"),
            ("q", "quit"),
        ]
    } else if app.focus() == Focus::Log {
        &[
            ("↑↓", "scroll"),
            ("Enter", "full text"),
            ("Tab", "pane"),
            ("/", "filter"),
            ("?", "help"),
            ("q", "quit"),
        ]
    } else {
        &[
            ("↑↓", "move"),
            ("Enter", "detail"),
            ("Tab", "pane"),
            ("a", "ack"),
            ("s", "silence"),
            ("/", "filter"),
            ("o", "sort"),
            ("?", "help"),
            ("q", "quit"),
        ]
    };
    let mut spans = Vec::with_capacity(keys.len() * 3);
    for (k, what) in keys {
        spans.push(Span::styled(format!(" {k} "), theme::KEY));
        spans.push(Span::raw(format!(" {what}  ")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
