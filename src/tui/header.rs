//! The header line: broker and storage health, throughput, outbox and InfluxDB
//! backlog, from the pipeline's [`PipelineStatus`](crate::model::PipelineStatus).
//! The broker comes first and turns red when lost; the storage path comes last
//! because it is the part a narrow terminal can spare.

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
    let mut spans = vec![Span::styled(" centinela ", theme::TITLE), Span::raw(" ")];
    if app.feed_closed() {
        spans.push(Span::styled(" FEED CLOSED ", theme::BAD));
        spans.push(Span::raw("  "));
    }
    if app.lagged() > 0 {
        spans.push(Span::styled(
            format!("{} events skipped  ", app.lagged()),
            theme::WARN,
        ));
    }
    match app.status() {
        None => spans.push(Span::styled(
            "waiting for the service's status…",
            theme::WARN,
        )),
        Some(s) => {
            if s.broker_up {
                spans.push(Span::styled("● ", theme::GOOD));
                spans.push(Span::raw(format!("broker {}", s.broker)));
            } else {
                spans.push(Span::styled(
                    format!(" BROKER DOWN {} ", s.broker),
                    theme::BAD,
                ));
            }
            if !s.storage_ok && !s.storage.is_empty() {
                spans.push(Span::raw("  "));
                spans.push(Span::styled(
                    format!(" STORAGE FAILING {} ", s.storage),
                    theme::BAD,
                ));
            }
            // A viewer that lost the broker before the service said anything has no
            // figures to show, only the broker's state.
            if s.storage.is_empty() {
                spans.push(Span::styled(
                    "  no figures from the service yet",
                    theme::DIM,
                ));
                frame.render_widget(Paragraph::new(Line::from(spans)), area);
                return;
            }
            let old = app.now() - app.status_at();
            if old > STATUS_OLD_MS {
                spans.push(Span::styled(
                    format!("  status {} old", format::age(old)),
                    theme::WARN,
                ));
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
            spans.push(Span::raw(" readings/s  "));
            let outbox = Span::raw(format!("outbox {} pending", s.outbox_pending));
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
            } else {
                spans.push(Span::raw(" 0 dead"));
            }
            if let Some(b) = s.influx_backlog {
                let text = Span::raw(format!("  influx backlog {b}"));
                spans.push(if b > 0 { text.style(theme::WARN) } else { text });
            }
            if s.storage_ok {
                spans.push(Span::raw("  "));
                spans.push(Span::styled("● ", theme::GOOD));
                spans.push(Span::styled(s.storage.clone(), theme::DIM));
            }
        }
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
