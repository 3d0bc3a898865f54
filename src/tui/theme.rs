//! Colours and styles shared by the widgets: one place, so the screen reads as one.

use ratatui::style::{Color, Modifier, Style};

use super::state::SeriesState;
use crate::model::{LogLevel, Severity};

pub const TITLE: Style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
pub const DIM: Style = Style::new().fg(Color::DarkGray);
pub const KEY: Style = Style::new().fg(Color::Black).bg(Color::Gray);
pub const GOOD: Style = Style::new().fg(Color::Green);
pub const BAD: Style = Style::new()
    .fg(Color::White)
    .bg(Color::Red)
    .add_modifier(Modifier::BOLD);
pub const WARN: Style = Style::new().fg(Color::Yellow);
pub const SELECTED: Style = Style::new()
    .bg(Color::Rgb(40, 50, 70))
    .add_modifier(Modifier::BOLD);
pub const HEADER_ROW: Style = Style::new()
    .fg(Color::Gray)
    .add_modifier(Modifier::UNDERLINED);

pub fn severity(s: Severity) -> Style {
    match s {
        Severity::Critical => Style::new()
            .fg(Color::LightRed)
            .add_modifier(Modifier::BOLD),
        Severity::Warning => Style::new().fg(Color::Yellow),
        Severity::Info => Style::new().fg(Color::LightBlue),
    }
}

pub fn state(s: SeriesState) -> Style {
    match s {
        SeriesState::Ok => Style::new().fg(Color::Green),
        SeriesState::Stale => Style::new().fg(Color::DarkGray),
        SeriesState::Silenced => Style::new().fg(Color::Magenta),
        SeriesState::Acked => Style::new().fg(Color::Cyan),
        SeriesState::Pending => Style::new().fg(Color::LightMagenta),
        SeriesState::Firing(sev) => severity(sev),
    }
}

pub fn level(l: LogLevel) -> Style {
    match l {
        LogLevel::Info => Style::new().fg(Color::Gray),
        LogLevel::Warn => Style::new().fg(Color::Yellow),
        LogLevel::Error => Style::new().fg(Color::LightRed),
    }
}

/// A pane's border: bright when it has the focus.
pub fn border(focused: bool) -> Style {
    if focused {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new().fg(Color::DarkGray)
    }
}
