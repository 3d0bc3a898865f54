//! The detail view of one series: a line chart over the chosen range with the
//! thresholds of the matching rules as horizontal lines, and the series' alert
//! history under it.

use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Chart, Dataset, GraphType, List, ListItem, Paragraph,
};
use ratatui::Frame;

use super::format;
use super::state::{App, Areas, Range, SeriesState};
use super::theme;
use crate::model::AlertState;

pub fn draw_chart(frame: &mut Frame, area: Rect, app: &App) {
    let Some(d) = app.detail() else { return };
    let s = app.series(&d.series);
    let st = app.series_state(&d.series);
    let unit = s.and_then(|s| s.unit.as_deref());
    let mut title = vec![Span::styled(
        format!(" {} ", format::printable(&d.series)),
        theme::TITLE,
    )];
    if let Some(v) = s.and_then(|s| s.value) {
        title.push(Span::styled(
            format!("{} ", format::value_unit(v, unit)),
            theme::state(st),
        ));
    }
    let silenced = app
        .silenced_until(&d.series)
        .map(|until| format!("silenced for {} ", format::age(until - app.now())));
    match (st, &silenced) {
        (SeriesState::Silenced, Some(text)) => {
            title.push(Span::styled(format!("● {text}"), theme::state(st)));
        }
        (_, silenced) => {
            title.push(Span::styled(format!("● {} ", st.label()), theme::state(st)));
            if let Some(text) = silenced {
                title.push(Span::styled(
                    format!("· {text}"),
                    theme::state(SeriesState::Silenced),
                ));
            }
        }
    }
    if st != SeriesState::Acked && app.is_acked(&d.series) {
        title.push(Span::styled("· acked ", theme::state(SeriesState::Acked)));
    }
    if d.history.is_none() {
        title.push(Span::styled("· loading history… ", theme::WARN));
    }
    title.push(Span::styled(
        format!(
            "· seen {} ago ",
            format::age_since(s.and_then(|s| s.seen_at), app.now())
        ),
        theme::DIM,
    ));
    let mut ranges = vec![];
    for (i, r) in Range::ALL.iter().enumerate() {
        let style = if *r == d.range {
            theme::KEY
        } else {
            theme::DIM
        };
        ranges.push(Span::styled(format!(" {} {} ", i + 1, r.label()), style));
        ranges.push(Span::raw(" "));
    }
    let mut block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme::border(true))
        .title(Line::from(title))
        .title(Line::from(ranges).alignment(Alignment::Right));

    let now = app.now();
    let span_s = d.range.millis() as f64 / 1000.0;
    let points: Vec<(f64, f64)> = app
        .chart_points()
        .into_iter()
        .map(|(t, v)| ((t - now) as f64 / 1000.0, v))
        .collect();
    let thresholds: Vec<_> = app.thresholds_for(&d.series).collect();
    if points.is_empty() {
        frame.render_widget(block, area);
        let msg = if d.history.is_none() {
            "loading…"
        } else {
            "no readings in this range"
        };
        let inner = Rect {
            x: area.x + 2,
            y: area.y + 2,
            width: area.width.saturating_sub(4),
            height: 1.min(area.height.saturating_sub(3)),
        };
        frame.render_widget(
            Paragraph::new(Line::styled(
                format!("{msg} ({} of history)", d.range.label()),
                theme::DIM,
            )),
            inner,
        );
        return;
    }
    let (mut lo, mut hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    for t in &thresholds {
        lo = lo.min(t.value);
        hi = hi.max(t.value);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    let (lo, hi) = (lo - pad, hi + pad);
    let lines: Vec<[(f64, f64); 2]> = thresholds
        .iter()
        .map(|t| [(-span_s, t.value), (0.0, t.value)])
        .collect();
    let colours = [
        Color::LightRed,
        Color::Yellow,
        Color::LightBlue,
        Color::Magenta,
    ];
    // The legend goes in the bottom border, where it covers no data.
    let mut legend = vec![
        Span::styled("── ", Style::new().fg(Color::Cyan)),
        Span::raw(format!("{} ", format::printable(&d.series))),
    ];
    for (i, t) in thresholds.iter().enumerate() {
        legend.push(Span::styled(
            "── ",
            Style::new().fg(colours[i % colours.len()]),
        ));
        legend.push(Span::raw(format!(
            "{} {} ",
            t.label,
            format::value(t.value)
        )));
    }
    block = block.title_bottom(Line::from(legend).alignment(Alignment::Right));
    let mut datasets = vec![Dataset::default()
        .name(d.series.clone())
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(Style::new().fg(Color::Cyan))
        .data(&points)];
    for (i, (t, line)) in thresholds.iter().zip(&lines).enumerate() {
        datasets.push(
            Dataset::default()
                .name(format!("{} {}", t.label, format::value(t.value)))
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(colours[i % colours.len()]))
                .data(line),
        );
    }
    let half = format::age((span_s * 500.0) as i64);
    let x = Axis::default()
        .style(theme::DIM)
        .bounds([-span_s, 0.0])
        .labels([
            Span::raw(format!("-{}", d.range.label())),
            Span::raw(format!("-{half}")),
            Span::raw("now"),
        ]);
    let y = Axis::default().style(theme::DIM).bounds([lo, hi]).labels([
        Span::raw(format::value(lo)),
        Span::raw(format::value(lo.midpoint(hi))),
        Span::raw(format::value(hi)),
    ]);
    let chart = Chart::new(datasets)
        .block(block)
        .x_axis(x)
        .y_axis(y)
        .legend_position(None);
    frame.render_widget(chart, area);
}

pub fn draw_history(frame: &mut Frame, area: Rect, app: &App) {
    let Some(d) = app.detail() else { return };
    let items: Vec<ListItem> = app
        .history_of(&d.series)
        .take(Areas::list_rows(area))
        .map(|e| {
            let style = match e.state {
                AlertState::Firing | AlertState::Repeat | AlertState::Flapping => {
                    theme::severity(e.severity)
                }
                AlertState::Resolved => theme::GOOD,
                _ => Style::new(),
            };
            let value = e
                .value
                .map(|v| format!(" {}", format::value_unit(v, e.unit.as_deref())))
                .unwrap_or_default();
            ListItem::new(Line::from(vec![
                Span::styled(format::clock(e.ts), theme::DIM),
                Span::raw(" "),
                Span::styled(format!("{:<13}", e.state.as_str()), style),
                Span::styled(
                    format!("{:<8} ", e.severity.as_str()),
                    theme::severity(e.severity),
                ),
                Span::raw(format!("{}{value} ", format::printable(&e.rule))),
                Span::styled(format::printable(&e.message), theme::DIM),
            ]))
        })
        .collect();
    let empty = items.is_empty();
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme::border(false))
        .title(Span::styled(" Alert history ", theme::TITLE));
    frame.render_widget(List::new(items).block(block), area);
    if empty && area.height > 2 {
        let inner = Rect {
            x: area.x + 2,
            y: area.y + 1,
            width: area.width.saturating_sub(4),
            height: 1,
        };
        frame.render_widget(
            Line::styled(
                "no alerts for this series since the viewer started",
                theme::DIM,
            ),
            inner,
        );
    }
}
