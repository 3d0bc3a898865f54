//! The screen areas: how the overview and the detail view share the terminal, from
//! its size and what the panes hold.

use ratatui::layout::Rect;
use ratatui::text::Span;

use super::App;
use crate::tui::format;

/// The screen areas, computed the same way for drawing and for mouse hits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Areas {
    pub header: Rect,
    pub series: Rect,
    pub alerts: Rect,
    pub log: Rect,
    pub chart: Rect,
    pub history: Rect,
    pub footer: Rect,
    /// Width of the series table's sparkline column (0: none).
    pub trend: u16,
}

/// What the panes hold, so the layout can give room where the text is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Content {
    /// Rows of the series table and of the alerts pane.
    pub series: usize,
    pub alerts: usize,
    /// Widest series name and unit, in columns.
    pub name_width: u16,
    pub unit_width: u16,
    /// Widest event line on screen (time stamp included), in columns.
    pub log_width: u16,
    /// The owner column (this instance's name) when clustered, else 0.
    pub owner_width: u16,
}

/// The owner column is at most this wide (longer instance names are cut).
pub const OWNER_MAX: u16 = 24;

/// At least this wide, the events get a column of their own beside the series table
/// and the alerts; narrower, the three panes are stacked.
pub const COLUMNS_FROM: u16 = 140;

impl Content {
    /// Columns the series table needs to show every name and unit whole, with a
    /// sparkline `trend` wide (borders included).
    pub fn series_width(&self, trend: u16) -> u16 {
        // state, name, value, unit, [trend], age; one space between columns.
        let mut w = 10 + self.name_width.max(6) + 8 + self.unit_width.max(4) + 5 + 4;
        if trend > 0 {
            w += trend + 1;
        }
        if self.owner_width > 0 {
            w += self.owner_width.max(5) + 1;
        }
        w + 2
    }
}

impl Areas {
    /// Overview: header, series table, alerts and events, footer. Narrow, the three
    /// panes are stacked; from [`COLUMNS_FROM`] columns the events get a column of
    /// their own as wide as their text, beside the series table and the alerts as
    /// wide as theirs. Heights follow what each pane holds: the alerts pane shows
    /// every open alert (up to half the screen), the series table takes what its rows
    /// need, the events the rest. Detail: header, chart, alert history, footer.
    pub fn compute(area: Rect, c: &Content) -> Self {
        let header = Rect { height: 1, ..area };
        let footer = Rect {
            y: area.bottom().saturating_sub(1),
            height: 1,
            ..area
        };
        let body = Rect {
            y: area.y + 1,
            height: area.height.saturating_sub(2),
            ..area
        };
        let h = body.height;
        // Bordered tables: two borders and a header row around the rows.
        let alerts_want = (c.alerts as u16).saturating_add(3).max(4);
        let series_want = (c.series as u16).saturating_add(3).max(5);
        let (series, alerts, log, trend) = if area.width >= COLUMNS_FROM {
            let log_min = 40u16;
            // The sparkline is the first thing to give up for the events' text, but
            // a short one stays while the events keep 80 columns.
            let trend = [24u16, 12, 0]
                .into_iter()
                .find(|t| c.series_width(*t) + log_min.max(c.log_width + 2) <= area.width)
                .unwrap_or(if c.series_width(12) + 80 <= area.width {
                    12
                } else {
                    0
                });
            let left_w = c
                .series_width(trend)
                .clamp(60, area.width.saturating_sub(log_min));
            let alerts_h = alerts_want.min(h / 2);
            // The alerts take what the series rows leave: more alerts may come.
            let series_h = series_want.max(h / 3).min(h - alerts_h);
            let alerts_h = h - series_h;
            let left = Rect {
                width: left_w,
                ..body
            };
            (
                Rect {
                    height: series_h,
                    ..left
                },
                Rect {
                    y: body.y + series_h,
                    height: alerts_h,
                    ..left
                },
                Rect {
                    x: body.x + left_w,
                    width: body.width - left_w,
                    ..body
                },
                trend,
            )
        } else {
            let log_min = 4u16.min(h);
            let alerts_h = alerts_want.min(h / 2);
            let series_h = series_want
                .min(h.saturating_sub(alerts_h + log_min))
                .max(5.min(h.saturating_sub(alerts_h)));
            let log_h = h.saturating_sub(alerts_h + series_h);
            let trend = if area.width >= 100 {
                24
            } else if area.width >= 80 {
                12
            } else {
                0
            };
            (
                Rect {
                    height: series_h,
                    ..body
                },
                Rect {
                    y: body.y + series_h,
                    height: alerts_h,
                    ..body
                },
                Rect {
                    y: body.y + series_h + alerts_h,
                    height: log_h,
                    ..body
                },
                trend,
            )
        };
        let hist_h = (body.height / 4).clamp(4, 10).min(body.height);
        let chart = Rect {
            height: body.height - hist_h,
            ..body
        };
        let history = Rect {
            y: chart.bottom(),
            height: hist_h,
            ..body
        };
        Self {
            header,
            series,
            alerts,
            log,
            chart,
            history,
            footer,
            trend,
        }
    }

    /// Rows of data a bordered table with a header row shows in `r`.
    pub fn table_rows(r: Rect) -> usize {
        r.height.saturating_sub(3) as usize
    }

    /// Lines a bordered list shows in `r`.
    pub fn list_rows(r: Rect) -> usize {
        r.height.saturating_sub(2) as usize
    }
}

impl App {
    /// What the panes hold, for the layout.
    pub fn content(&self) -> Content {
        let rows = self.size.height as usize;
        let log_width = self
            .log
            .iter()
            .skip(self.offset[2])
            .take(rows)
            .map(|l| Span::raw(format::printable(&l.text)).width() + 9)
            .max()
            .unwrap_or(0)
            .min(u16::MAX as usize) as u16;
        Content {
            series: self.order.len(),
            alerts: self.alert_order.len(),
            name_width: self.name_width,
            unit_width: self.unit_width,
            log_width,
            owner_width: self.cluster.as_ref().map_or(0, |c| {
                (Span::raw(format::printable(&c.instance)).width() as u16).min(OWNER_MAX)
            }),
        }
    }

    /// The screen areas for the current size and content.
    pub fn areas(&self) -> Areas {
        Areas::compute(self.size, &self.content())
    }
}
