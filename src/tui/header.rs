//! The header line: broker and storage health, throughput, outbox and each output's
//! figure (the InfluxDB backlog, …), from the pipeline's [`PipelineStatus`](crate::model::PipelineStatus).
//! The broker comes first and turns red when lost; when the line does not fit, a
//! compact form drops the addresses and shortens the labels.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::format;
use super::state::App;
use super::theme;

/// Figures older than this are flagged: the service may have stopped.
const STATUS_OLD_MS: i64 = 5_000;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let fits = |l: &Line| l.width() <= area.width as usize;
    let line = [Fit::Full, Fit::NoStorage]
        .into_iter()
        .map(|f| header(app, f))
        .find(fits)
        .unwrap_or_else(|| header(app, Fit::Compact));
    frame.render_widget(Paragraph::new(line), area);
}

/// How much of the header to spell out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fit {
    Full,
    /// Without the storage path (shown only when failing).
    NoStorage,
    /// Without addresses and with short labels.
    Compact,
}

fn header(app: &App, fit: Fit) -> Line<'static> {
    let compact = fit == Fit::Compact;
    let mut spans = vec![Span::styled(" centinela ", theme::TITLE), Span::raw(" ")];
    if app.feed_closed() {
        spans.push(Span::styled(" FEED CLOSED ", theme::BAD));
        spans.push(Span::raw("  "));
    }
    if app.lagged() > 0 {
        let text = if compact {
            format!("{} skipped  ", app.lagged())
        } else {
            format!("{} events skipped  ", app.lagged())
        };
        spans.push(Span::styled(text, theme::WARN));
    }
    let Some(s) = app.status() else {
        spans.push(Span::styled(
            "waiting for the service's status…",
            theme::WARN,
        ));
        return Line::from(spans);
    };
    if s.broker_up && !s.offline {
        spans.push(Span::styled("● ", theme::GOOD));
        spans.push(Span::raw(if compact {
            "broker".to_string()
        } else {
            format!("broker {}", s.broker)
        }));
    } else {
        spans.push(Span::styled(
            format!(" BROKER DOWN {} ", s.broker),
            theme::BAD,
        ));
    }
    if !s.storage_ok && !s.storage.is_empty() {
        spans.push(Span::raw("  "));
        let text = if compact {
            " STORAGE FAILING ".to_string()
        } else {
            format!(" STORAGE FAILING {} ", s.storage)
        };
        spans.push(Span::styled(text, theme::BAD));
    }
    // A viewer that lost the broker before the service said anything has no figures
    // to show, only the broker's state.
    if s.storage.is_empty() {
        spans.push(Span::styled(
            "  no figures from the service yet",
            theme::DIM,
        ));
        return Line::from(spans);
    }
    let old = app.now() - app.status_at();
    if s.offline || old > STATUS_OLD_MS {
        // The figures are the service's last words: say so instead of showing them.
        spans.push(Span::raw("  "));
        spans.push(Span::styled(" SERVICE OFFLINE ", theme::BAD));
        spans.push(Span::styled(
            if compact {
                format!("  {} ago", format::age(old))
            } else if s.offline {
                "  it said goodbye; waiting for it to return".to_string()
            } else {
                format!("  no status for {}", format::age(old))
            },
            theme::WARN,
        ));
        return Line::from(spans);
    }
    spans.push(Span::raw("  "));
    let r = s.readings_per_s;
    let rate = if r.abs() < 1000.0 {
        format!("{r:.1}")
    } else {
        format::value(r)
    };
    spans.push(Span::styled(
        rate,
        Style::new().add_modifier(Modifier::BOLD),
    ));
    spans.push(Span::raw(if compact { "/s  " } else { " readings/s  " }));
    let outbox = Span::raw(format!(
        "outbox {}{}",
        s.outbox_pending,
        if compact { "" } else { " pending" }
    ));
    spans.push(if s.outbox_pending > 0 {
        outbox.style(theme::WARN)
    } else {
        outbox
    });
    if s.outbox_dead > 0 {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(
            format!(" {} dead ", s.outbox_dead),
            theme::BAD,
        ));
    } else if !compact {
        spans.push(Span::raw(" 0 dead"));
    }
    for o in &s.outputs {
        let text = Span::raw(if compact {
            format!("  {} {}", o.name, o.value)
        } else {
            format!("  {} {} {}", o.name, o.label, o.value)
        });
        spans.push(if o.warn {
            text.style(theme::WARN)
        } else {
            text
        });
    }
    if s.storage_ok && fit == Fit::Full {
        spans.push(Span::raw("  "));
        spans.push(Span::styled("● ", theme::GOOD));
        spans.push(Span::styled(s.storage.clone(), theme::DIM));
    }
    Line::from(spans)
}
