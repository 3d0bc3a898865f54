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
    frame.render_widget(Paragraph::new(keys_line(app, area.width)), area);
}

/// The key hints that fit in `width` columns: `? help` and `q quit` first, then the
/// keys of the screen in order of use, dropping what does not fit.
pub fn keys_line(app: &App, width: u16) -> Line<'static> {
    let keys: &[(&str, &str)] = if app.detail().is_some() {
        &[
            ("?", "help"),
            ("q", "quit"),
            ("Esc", "back"),
            ("1/2/3", "5m/1h/24h"),
            ("a", "ack"),
            ("s", "silence"),
        ]
    } else if app.focus() == Focus::Log {
        &[
            ("?", "help"),
            ("q", "quit"),
            ("↑↓", "scroll"),
            ("Enter", "full text"),
            ("Tab", "pane"),
            ("/", "filter"),
        ]
    } else {
        &[
            ("?", "help"),
            ("q", "quit"),
            ("↑↓", "move"),
            ("Enter", "detail"),
            ("Tab", "pane"),
            ("a", "ack"),
            ("s", "silence"),
            ("/", "filter"),
            ("o", "sort"),
        ]
    };
    let mut spans = Vec::with_capacity(keys.len() * 2);
    let mut used = 0usize;
    for (k, what) in keys {
        let key = Span::styled(format!(" {k} "), theme::KEY);
        let text = Span::raw(format!(" {what}  "));
        // The last hint may do without its trailing spaces.
        let w = key.width() + text.width();
        if used + w - 2 > width as usize {
            break;
        }
        used += w;
        spans.push(key);
        spans.push(text);
    }
    Line::from(spans)
}
