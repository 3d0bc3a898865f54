//! The terminal's state, pure: what the live bus has said (series, alerts, status,
//! log) and where the person is (screen, pane, selection, filter, popups).
//!
//! Sits at the end of the stream: [`App::apply`] folds each [`LiveEvent`] in,
//! [`App::on_key`] and [`App::on_mouse`] turn input into [`Action`]s (a
//! [`Control`] for the engine, a history request, quit). Nothing here does I/O or reads
//! the clock: `now` comes in as an argument, so every screen is reproducible in tests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};
use ratatui::text::Span;

use crate::model::{
    topic_matches, AlertEvent, AlertState, Control, LiveEvent, LogLevel, PipelineStatus, Reading,
    SeriesId, Severity, Timestamp,
};

use super::format;

/// Recent values kept per series for the sparkline and as the chart's fallback: five
/// minutes at 1 Hz.
pub const RECENT_CAP: usize = 300;
/// Lines kept in the event log.
pub const LOG_CAP: usize = 500;
/// Alert transitions kept for the detail view's history.
pub const ALERT_HISTORY_CAP: usize = 2_000;
/// Below this size the layout does not fit and a message is shown instead.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 15;
/// Bad payloads are told in the event log at most this often.
pub const DECODE_LOG_EVERY_MS: i64 = 10_000;
/// Redraw at most this often.
pub const REDRAW_INTERVAL_MS: u64 = 100;
/// History points kept for a chart after downsampling (min and max per bucket).
const CHART_BUCKETS: usize = 600;

/// Settings of the viewer.
#[derive(Debug, Clone)]
pub struct Options {
    /// A series without a reading for this long is shown as stale.
    pub stale_after_ms: i64,
    /// Who the engine records for acknowledgements and silences.
    pub by: String,
    /// Where things are, shown in the help popup: (what, text), e.g. the demo's
    /// broker address, database path and a `mosquitto_sub` command to try.
    pub about: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            stale_after_ms: 60_000,
            by: "tui".to_string(),
            about: Vec::new(),
        }
    }
}

/// What the colour of a series row says, from calm to loud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesState {
    Ok,
    Stale,
    Silenced,
    Acked,
    Pending,
    Firing(Severity),
}

impl SeriesState {
    pub fn rank(self) -> u8 {
        match self {
            SeriesState::Ok => 0,
            SeriesState::Stale => 1,
            SeriesState::Silenced => 2,
            SeriesState::Acked => 3,
            SeriesState::Pending => 4,
            SeriesState::Firing(Severity::Info) => 5,
            SeriesState::Firing(Severity::Warning) => 6,
            SeriesState::Firing(Severity::Critical) => 7,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SeriesState::Ok => "ok",
            SeriesState::Stale => "stale",
            SeriesState::Silenced => "silenced",
            SeriesState::Acked => "acked",
            SeriesState::Pending => "pending",
            SeriesState::Firing(s) => s.as_str(),
        }
    }
}

/// What is known of one series.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: SeriesId,
    /// `None` for a series only known from an alert (a deadman on a silent sensor).
    pub value: Option<f64>,
    pub unit: Option<Arc<str>>,
    /// (event time, value), oldest first, at most [`RECENT_CAP`].
    pub recent: VecDeque<(Timestamp, f64)>,
    /// When this viewer last received a reading (wall clock): ages and staleness use
    /// it, so a device with a wrong clock is not shown as stale.
    pub seen_at: Option<Timestamp>,
}

/// One alert as the alerts pane shows it; gone once resolved.
#[derive(Debug, Clone)]
pub struct Alert {
    pub rule: String,
    pub series: String,
    /// Pending, Firing, Repeat, Acknowledged or Flapping.
    pub state: AlertState,
    pub severity: Severity,
    /// When it started firing (or pending).
    pub since: Timestamp,
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub message: String,
}

impl Alert {
    /// `rule/series`, as the engine names it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.rule, self.series)
    }

    pub fn is_firing(&self) -> bool {
        matches!(
            self.state,
            AlertState::Firing | AlertState::Repeat | AlertState::Flapping
        )
    }
}

/// A silence this viewer asked for; the engine keeps the real list.
#[derive(Debug, Clone)]
pub struct Silence {
    pub pattern: String,
    pub until: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub ts: Timestamp,
    pub level: LogLevel,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Series,
    Alerts,
    Log,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Value,
    Age,
    State,
}

impl SortKey {
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::Value => "value",
            SortKey::Age => "age",
            SortKey::State => "state",
        }
    }

    fn next(self) -> Self {
        match self {
            SortKey::Name => SortKey::Value,
            SortKey::Value => SortKey::Age,
            SortKey::Age => SortKey::State,
            SortKey::State => SortKey::Name,
        }
    }
}

/// The time span of the detail chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    M5,
    H1,
    H24,
}

impl Range {
    pub const ALL: [Range; 3] = [Range::M5, Range::H1, Range::H24];

    pub fn millis(self) -> i64 {
        match self {
            Range::M5 => 5 * 60_000,
            Range::H1 => 3_600_000,
            Range::H24 => 86_400_000,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Range::M5 => "5m",
            Range::H1 => "1h",
            Range::H24 => "24h",
        }
    }
}

/// The detail view of one series.
#[derive(Debug, Clone)]
pub struct Detail {
    pub series: String,
    pub range: Range,
    /// Stored history (downsampled), once loaded; the recent values fill in until then
    /// and after its last point.
    pub history: Option<Vec<(Timestamp, f64)>>,
}

/// A small modal window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Popup {
    Help,
    /// One line of the event log in full.
    Event(LogLine),
    /// Editing the series filter.
    Filter {
        input: String,
    },
    /// Asking how long to silence `targets[target]` for.
    Silence {
        input: String,
        targets: Vec<String>,
        target: usize,
        error: Option<String>,
    },
}

/// A horizontal line on the detail chart: the threshold of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The rule's series pattern (MQTT wildcards).
    pub pattern: String,
    /// E.g. `too-hot > 30`.
    pub label: String,
    pub value: f64,
}

/// What the shell around the state must do after an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Quit,
    /// Send to the engine (in-process channel or `centinela/control`).
    Control(Control),
    /// Fetch stored history of `series` since `since` and hand it to [`App::set_history`].
    LoadDetail {
        series: String,
        since: Timestamp,
    },
}

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
}

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

/// Everything the terminal shows.
#[derive(Debug)]
pub struct App {
    pub opts: Options,
    series: HashMap<SeriesId, Series>,
    /// The rows of the series table: filtered and sorted, rebuilt by [`App::prepare`].
    order: Vec<SeriesId>,
    order_stale: bool,
    /// Widest name and unit among the rows, for the layout.
    name_width: u16,
    unit_width: u16,
    /// Open alerts by (series, rule).
    alerts: BTreeMap<(String, String), Alert>,
    /// The rows of the alerts pane, rebuilt by [`App::prepare`].
    alert_order: Vec<(String, String)>,
    alerts_stale: bool,
    alert_history: VecDeque<AlertEvent>,
    silences: Vec<Silence>,
    /// The engine's silences as last read from the store (any source: Telegram, other
    /// viewers, the control topic).
    engine_silences: Vec<Silence>,
    log: VecDeque<LogLine>,
    status: Option<PipelineStatus>,
    status_at: Timestamp,
    /// Bad payloads by reason and in all as last told in the event log, and when.
    decode_told: (Vec<(String, u64)>, u64, Option<Timestamp>),
    /// Events the live bus dropped because this viewer fell behind.
    lagged: u64,
    feed_closed: bool,
    thresholds: Vec<Threshold>,
    filter: Option<String>,
    sort: SortKey,
    reverse: bool,
    focus: Focus,
    /// Selected row and first shown row per pane (series, alerts, log).
    sel: [usize; 3],
    offset: [usize; 3],
    /// The selected series by name, so the selection follows it when rows move.
    selected_name: Option<SeriesId>,
    detail: Option<Detail>,
    popup: Option<Popup>,
    flash: Option<(String, Timestamp)>,
    size: Rect,
    now: Timestamp,
    /// Something visible changed since the last draw.
    pub dirty: bool,
}

impl App {
    pub fn new(opts: Options, now: Timestamp) -> Self {
        Self {
            opts,
            series: HashMap::new(),
            order: Vec::new(),
            order_stale: false,
            name_width: 0,
            unit_width: 0,
            alerts: BTreeMap::new(),
            alert_order: Vec::new(),
            alerts_stale: false,
            alert_history: VecDeque::new(),
            silences: Vec::new(),
            engine_silences: Vec::new(),
            log: VecDeque::new(),
            status: None,
            status_at: 0,
            decode_told: (Vec::new(), 0, None),
            lagged: 0,
            feed_closed: false,
            thresholds: Vec::new(),
            filter: None,
            sort: SortKey::Name,
            reverse: false,
            focus: Focus::Series,
            sel: [0; 3],
            offset: [0; 3],
            selected_name: None,
            detail: None,
            popup: None,
            flash: None,
            size: Rect::new(0, 0, 80, 24),
            now,
            dirty: true,
        }
    }

    // ---- the live bus ------------------------------------------------------------

    /// Folds one event of the live bus into the state.
    pub fn apply(&mut self, ev: LiveEvent, now: Timestamp) {
        self.now = self.now.max(now);
        self.dirty = true;
        match ev {
            LiveEvent::Readings(batch) => {
                for r in batch.iter() {
                    let s = match self.series.get_mut(&*r.series) {
                        Some(s) => s,
                        None => {
                            self.order_stale = true;
                            self.series
                                .entry(r.series.clone())
                                .or_insert_with(|| Series::new(r.series.clone()))
                        }
                    };
                    s.value = Some(r.value);
                    if r.unit.is_some() && r.unit != s.unit {
                        s.unit.clone_from(&r.unit);
                        self.order_stale = true;
                    }
                    if s.recent.len() == RECENT_CAP {
                        s.recent.pop_front();
                    }
                    s.recent.push_back((r.ts, r.value));
                    s.seen_at = Some(now);
                }
            }
            LiveEvent::Alert(ev) => self.apply_alert(ev),
            LiveEvent::Status(s) => {
                self.note_decode_errors(&s, now);
                self.status = Some(s);
                self.status_at = now;
            }
            LiveEvent::Log { ts, level, text } => self.push_log(ts, level, text),
        }
    }

    /// Folds in what happened before the viewer started (open alerts, last values);
    /// readings are aged by their own time, not as if just received.
    /// Readings from several sources (the service's catalogue, its database) are
    /// applied oldest first, so the newest value of a series is the one kept.
    pub fn apply_initial(&mut self, events: Vec<LiveEvent>, now: Timestamp) {
        let mut readings: Vec<Reading> = Vec::new();
        let mut others = Vec::new();
        for ev in events {
            match ev {
                LiveEvent::Readings(batch) => readings.extend(batch.iter().cloned()),
                ev => others.push(ev),
            }
        }
        readings.sort_by(|a, b| a.ts.cmp(&b.ts).then_with(|| a.series.cmp(&b.series)));
        // The same last value from two sources is one point.
        readings.dedup_by(|a, b| a.ts == b.ts && a.series == b.series);
        for r in readings {
            let at = r.ts.min(now);
            self.apply(LiveEvent::Readings(Arc::from([r])), at);
        }
        for ev in others {
            self.apply(ev, now);
        }
        self.now = self.now.max(now);
    }

    fn apply_alert(&mut self, ev: AlertEvent) {
        let key = (ev.series.clone(), ev.rule.clone());
        let level = match ev.state {
            AlertState::Firing | AlertState::Repeat if ev.severity == Severity::Critical => {
                LogLevel::Error
            }
            AlertState::Firing | AlertState::Repeat | AlertState::Flapping => LogLevel::Warn,
            _ => LogLevel::Info,
        };
        let value = ev
            .value
            .map(|v| format!(" = {}", format::value_unit(v, ev.unit.as_deref())))
            .unwrap_or_default();
        self.push_log(
            ev.ts,
            level,
            format!(
                "{} {} {}{value} {}",
                ev.state,
                ev.severity,
                ev.alert_id(),
                ev.message
            )
            .trim_end()
            .to_string(),
        );
        if !self.series.contains_key(ev.series.as_str()) {
            let name: SeriesId = Arc::from(ev.series.as_str());
            self.series.insert(name.clone(), Series::new(name));
            self.order_stale = true;
        }
        match ev.state {
            AlertState::Resolved | AlertState::Cancelled | AlertState::Ok => {
                self.alerts.remove(&key);
            }
            state => {
                let entry = self.alerts.entry(key).or_insert_with(|| Alert {
                    rule: ev.rule.clone(),
                    series: ev.series.clone(),
                    state,
                    severity: ev.severity,
                    since: ev.ts,
                    value: None,
                    unit: None,
                    message: String::new(),
                });
                // A pending alert that fires starts its firing age then.
                if entry.state == AlertState::Pending && state != AlertState::Pending {
                    entry.since = ev.ts;
                }
                entry.state = state;
                entry.severity = ev.severity;
                entry.value = ev.value.or(entry.value);
                entry.unit = ev.unit.clone().or(entry.unit.take());
                entry.message.clone_from(&ev.message);
            }
        }
        self.alerts_stale = true;
        self.order_stale = true;
        if self.alert_history.len() == ALERT_HISTORY_CAP {
            self.alert_history.pop_front();
        }
        self.alert_history.push_back(ev);
    }

    /// Tells in the event log which kinds of bad payload arrived since it last told,
    /// at most every [`DECODE_LOG_EVERY_MS`].
    fn note_decode_errors(&mut self, s: &PipelineStatus, now: Timestamp) {
        if s.decode_errors_total <= self.decode_told.1
            || self
                .decode_told
                .2
                .is_some_and(|t| now - t < DECODE_LOG_EVERY_MS)
        {
            return;
        }
        let before = |r: &str| {
            self.decode_told
                .0
                .iter()
                .find(|(x, _)| x == r)
                .map_or(0, |(_, n)| *n)
        };
        let mut parts: Vec<String> = s
            .decode_errors
            .iter()
            .filter(|(r, n)| *n > before(r))
            .map(|(r, n)| format!("{} {}", n - before(r), r.replace('_', " ")))
            .collect();
        let new = s.decode_errors_total - self.decode_told.1;
        if parts.is_empty() {
            parts.push(format!("{new}"));
        }
        let text = format!(
            "bad payloads skipped: {} ({} in all; topics in the service's log)",
            parts.join(", "),
            s.decode_errors_total
        );
        self.decode_told = (s.decode_errors.clone(), s.decode_errors_total, Some(now));
        self.push_log(now, LogLevel::Warn, text);
    }

    fn push_log(&mut self, ts: Timestamp, level: LogLevel, text: String) {
        if self.log.len() == LOG_CAP {
            self.log.pop_back();
        }
        self.log.push_front(LogLine { ts, level, text });
        self.dirty = true;
    }

    /// The live bus dropped `n` events because this viewer fell behind.
    pub fn note_lagged(&mut self, n: u64, now: Timestamp) {
        self.lagged += n;
        self.push_log(
            now,
            LogLevel::Warn,
            format!("viewer fell behind: {n} live events skipped"),
        );
    }

    /// The live bus ended (the service stopped).
    pub fn note_closed(&mut self, now: Timestamp) {
        if !self.feed_closed {
            self.feed_closed = true;
            self.push_log(
                now,
                LogLevel::Error,
                "live feed closed: the service stopped".to_string(),
            );
        }
    }

    /// Stored history of a series for the detail chart (ascending by time).
    pub fn set_history(&mut self, series: &str, points: Vec<(Timestamp, f64)>) {
        if let Some(d) = self.detail.as_mut().filter(|d| d.series == series) {
            d.history = Some(downsample(points, CHART_BUCKETS));
            self.dirty = true;
        }
    }

    /// The thresholds of the configured rules, drawn on the detail chart of every
    /// series their pattern matches.
    pub fn set_thresholds(&mut self, thresholds: Vec<Threshold>) {
        self.thresholds = thresholds;
        self.dirty = true;
    }

    /// The terminal's size, for the layout, paging and mouse hits.
    pub fn set_size(&mut self, width: u16, height: u16) {
        self.size = Rect::new(0, 0, width, height);
        self.dirty = true;
    }

    /// Moves the clock; marks the screen dirty once a second while ages are shown.
    pub fn tick(&mut self, now: Timestamp) {
        if now / 1000 != self.now / 1000 && (!self.series.is_empty() || !self.alerts.is_empty()) {
            self.dirty = true;
        }
        if let Some((_, at)) = &self.flash {
            if now - at > 5_000 {
                self.flash = None;
                self.dirty = true;
            }
        }
        self.now = self.now.max(now);
    }

    /// Rebuilds the sorted rows and keeps the selections in view. Call before drawing.
    pub fn prepare(&mut self) {
        self.silences.retain(|s| s.until > self.now);
        self.engine_silences.retain(|s| s.until > self.now);
        if self.order_stale || matches!(self.sort, SortKey::Value | SortKey::Age | SortKey::State) {
            self.rebuild_order();
        }
        if self.alerts_stale {
            self.rebuild_alert_order();
        }
        self.clamp_all();
    }

    fn rebuild_order(&mut self) {
        self.order_stale = false;
        let filter = self.filter.as_deref();
        let mut rows: Vec<&Series> = self
            .series
            .values()
            .filter(|s| filter.is_none_or(|f| filter_matches(f, &s.name)))
            .collect();
        let now = self.now;
        match self.sort {
            SortKey::Name => rows.sort_unstable_by(|a, b| a.name.cmp(&b.name)),
            SortKey::Value => rows.sort_unstable_by(|a, b| {
                let (x, y) = (
                    a.value.unwrap_or(f64::NEG_INFINITY),
                    b.value.unwrap_or(f64::NEG_INFINITY),
                );
                y.total_cmp(&x).then_with(|| a.name.cmp(&b.name))
            }),
            SortKey::Age => rows.sort_unstable_by(|a, b| {
                a.seen_at
                    .unwrap_or(i64::MIN)
                    .cmp(&b.seen_at.unwrap_or(i64::MIN))
                    .then_with(|| a.name.cmp(&b.name))
            }),
            SortKey::State => {
                let mut keyed: Vec<(u8, &Series)> = rows
                    .iter()
                    .map(|s| (self.state_of(s, now).rank(), *s))
                    .collect();
                keyed.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
                rows = keyed.into_iter().map(|(_, s)| s).collect();
            }
        }
        if self.reverse {
            rows.reverse();
        }
        let width = |t: &str| Span::raw(format::printable(t)).width().min(200) as u16;
        self.name_width = rows.iter().map(|s| width(&s.name)).max().unwrap_or(0);
        self.unit_width = rows
            .iter()
            .filter_map(|s| s.unit.as_deref())
            .map(width)
            .max()
            .unwrap_or(0)
            .min(16);
        self.order = rows.into_iter().map(|s| s.name.clone()).collect();
        if let Some(name) = &self.selected_name {
            if let Some(i) = self.order.iter().position(|n| n == name) {
                self.sel[0] = i;
            }
        }
    }

    fn rebuild_alert_order(&mut self) {
        self.alerts_stale = false;
        let mut keys: Vec<(&(String, String), &Alert)> = self.alerts.iter().collect();
        keys.sort_by(|(ka, a), (kb, b)| {
            (a.state == AlertState::Pending)
                .cmp(&(b.state == AlertState::Pending))
                .then(b.severity.cmp(&a.severity))
                .then(b.since.cmp(&a.since))
                .then(ka.cmp(kb))
        });
        self.alert_order = keys.into_iter().map(|(k, _)| k.clone()).collect();
    }

    fn clamp_all(&mut self) {
        let areas = self.areas();
        let lens = [self.order.len(), self.alert_order.len(), self.log.len()];
        let heights = [
            Areas::table_rows(areas.series),
            Areas::table_rows(areas.alerts),
            Areas::list_rows(areas.log),
        ];
        for i in 0..3 {
            self.sel[i] = self.sel[i].min(lens[i].saturating_sub(1));
            let h = heights[i].max(1);
            if self.sel[i] < self.offset[i] {
                self.offset[i] = self.sel[i];
            } else if self.sel[i] >= self.offset[i] + h {
                self.offset[i] = self.sel[i] + 1 - h;
            }
            self.offset[i] = self.offset[i].min(lens[i].saturating_sub(h));
        }
        self.selected_name = self.order.get(self.sel[0]).cloned();
    }

    // ---- reading the state (for the widgets) ---------------------------------------

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
        }
    }

    /// The screen areas for the current size and content.
    pub fn areas(&self) -> Areas {
        Areas::compute(self.size, &self.content())
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    pub fn status(&self) -> Option<&PipelineStatus> {
        self.status.as_ref()
    }

    /// When the last status arrived.
    pub fn status_at(&self) -> Timestamp {
        self.status_at
    }

    pub fn lagged(&self) -> u64 {
        self.lagged
    }

    pub fn feed_closed(&self) -> bool {
        self.feed_closed
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    pub fn rows(&self) -> &[SeriesId] {
        &self.order
    }

    pub fn series(&self, name: &str) -> Option<&Series> {
        self.series.get(name)
    }

    /// Open alerts in pane order.
    pub fn alert_rows(&self) -> impl Iterator<Item = &Alert> {
        self.alert_order.iter().filter_map(|k| self.alerts.get(k))
    }

    pub fn alert_count(&self) -> usize {
        self.alerts.len()
    }

    /// Open alerts of one series.
    pub fn alerts_of<'a>(&'a self, series: &str) -> impl Iterator<Item = &'a Alert> + 'a {
        let series = series.to_string();
        self.alerts
            .range((series.clone(), String::new())..)
            .take_while(move |((s, _), _)| *s == series)
            .map(|(_, a)| a)
    }

    /// Transitions of one series' alerts, newest first.
    pub fn history_of<'a>(&'a self, series: &'a str) -> impl Iterator<Item = &'a AlertEvent> + 'a {
        self.alert_history
            .iter()
            .rev()
            .filter(move |e| e.series == series)
    }

    pub fn log(&self) -> &VecDeque<LogLine> {
        &self.log
    }

    pub fn filter(&self) -> Option<&str> {
        self.filter.as_deref()
    }

    pub fn sort(&self) -> (SortKey, bool) {
        (self.sort, self.reverse)
    }

    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// Selected row and first shown row of a pane.
    pub fn selection(&self, pane: Focus) -> (usize, usize) {
        let i = pane as usize;
        (self.sel[i], self.offset[i])
    }

    pub fn selected_series(&self) -> Option<&str> {
        self.order.get(self.sel[0]).map(|s| &**s)
    }

    pub fn selected_alert(&self) -> Option<&Alert> {
        self.alert_order
            .get(self.sel[1])
            .and_then(|k| self.alerts.get(k))
    }

    pub fn detail(&self) -> Option<&Detail> {
        self.detail.as_ref()
    }

    pub fn popup(&self) -> Option<&Popup> {
        self.popup.as_ref()
    }

    pub fn flash(&self) -> Option<&str> {
        self.flash.as_ref().map(|(m, _)| m.as_str())
    }

    pub fn size(&self) -> Rect {
        self.size
    }

    /// Whether the terminal is too small for the layout.
    pub fn too_small(&self) -> bool {
        self.size.width < MIN_WIDTH || self.size.height < MIN_HEIGHT
    }

    /// Thresholds of the rules whose pattern matches `series`.
    pub fn thresholds_for<'a>(
        &'a self,
        series: &'a str,
    ) -> impl Iterator<Item = &'a Threshold> + 'a {
        self.thresholds
            .iter()
            .filter(move |t| topic_matches(&t.pattern, series))
    }

    /// Whether a silence (the engine's, or one this viewer asked for) covers the alert.
    pub fn is_silenced(&self, a: &Alert) -> bool {
        self.all_silences().any(|s| {
            s.until > self.now && (topic_matches(&s.pattern, &a.series) || s.pattern == a.rule)
        })
    }

    fn all_silences(&self) -> impl Iterator<Item = &Silence> {
        self.silences.iter().chain(&self.engine_silences)
    }

    /// Until when notifications about `series` are silenced: by a silence of the
    /// series itself or of the rule of one of its alerts. `None` when not silenced.
    pub fn silenced_until(&self, series: &str) -> Option<Timestamp> {
        let rules: Vec<&str> = self.alerts_of(series).map(|a| a.rule.as_str()).collect();
        self.all_silences()
            .filter(|s| {
                s.until > self.now
                    && (topic_matches(&s.pattern, series) || rules.contains(&s.pattern.as_str()))
            })
            .map(|s| s.until)
            .max()
    }

    /// Whether one of the series' alerts is acknowledged.
    pub fn is_acked(&self, series: &str) -> bool {
        self.alerts_of(series)
            .any(|a| a.state == AlertState::Acknowledged)
    }

    /// The engine's silences, as read from the store; replaces the previous list.
    pub fn set_engine_silences(&mut self, silences: Vec<Silence>) {
        self.engine_silences = silences;
        self.order_stale = true;
        self.dirty = true;
    }

    /// The colour-giving state of a series.
    pub fn series_state(&self, name: &str) -> SeriesState {
        match self.series.get(name) {
            Some(s) => self.state_of(s, self.now),
            None => SeriesState::Ok,
        }
    }

    fn state_of(&self, s: &Series, now: Timestamp) -> SeriesState {
        let mut best = match s.seen_at {
            Some(t) if now - t <= self.opts.stale_after_ms => SeriesState::Ok,
            _ => SeriesState::Stale,
        };
        for a in self.alerts_of(&s.name) {
            let st = match a.state {
                AlertState::Pending => SeriesState::Pending,
                AlertState::Acknowledged => SeriesState::Acked,
                _ if self.is_silenced(a) => SeriesState::Silenced,
                _ => SeriesState::Firing(a.severity),
            };
            if st.rank() > best.rank() {
                best = st;
            }
        }
        // Notifications about it are held: say so rather than `ok` or `stale`.
        if best.rank() < SeriesState::Silenced.rank() && self.silenced_until(&s.name).is_some() {
            best = SeriesState::Silenced;
        }
        best
    }

    /// The points of the detail chart within its range: stored history, then the
    /// recent values after it.
    pub fn chart_points(&self) -> Vec<(Timestamp, f64)> {
        let Some(d) = &self.detail else {
            return Vec::new();
        };
        let since = self.now - d.range.millis();
        let mut pts: Vec<(Timestamp, f64)> = d
            .history
            .iter()
            .flatten()
            .copied()
            .filter(|p| p.0 >= since)
            .collect();
        let after = pts.last().map_or(since, |p| p.0 + 1);
        if let Some(s) = self.series.get(d.series.as_str()) {
            pts.extend(s.recent.iter().copied().filter(|p| p.0 >= after));
        }
        pts
    }

    // ---- input ---------------------------------------------------------------------

    /// Handles a key; returns what the shell must do, if anything.
    pub fn on_key(&mut self, key: KeyEvent, now: Timestamp) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        self.now = self.now.max(now);
        self.prepare();
        self.dirty = true;
        if key.modifiers.contains(KeyModifiers::CONTROL) && matches!(key.code, KeyCode::Char('c')) {
            return Some(Action::Quit);
        }
        if let Some(popup) = self.popup.take() {
            return self.on_popup_key(popup, key);
        }
        match key.code {
            KeyCode::Char('q') => return Some(Action::Quit),
            KeyCode::Char('?') | KeyCode::F(1) => self.popup = Some(Popup::Help),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-(self.page() as isize)),
            KeyCode::PageDown => self.move_by(self.page() as isize),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX / 2),
            KeyCode::Tab if self.detail.is_none() => self.cycle_focus(true),
            KeyCode::BackTab if self.detail.is_none() => self.cycle_focus(false),
            KeyCode::Enter if self.detail.is_none() => return self.open_detail(),
            KeyCode::Esc => {
                if self.detail.take().is_none() && self.filter.take().is_some() {
                    self.order_stale = true;
                }
            }
            KeyCode::Char('/') => {
                self.popup = Some(Popup::Filter {
                    input: self.filter.clone().unwrap_or_default(),
                })
            }
            KeyCode::Char('o') => {
                self.sort = self.sort.next();
                self.order_stale = true;
            }
            KeyCode::Char('O') => {
                self.reverse = !self.reverse;
                self.order_stale = true;
            }
            KeyCode::Char('a') => return self.ack(),
            KeyCode::Char('s') => self.ask_silence(),
            KeyCode::Char('u') => return self.unsilence(),
            KeyCode::Char(c @ '1'..='3') if self.detail.is_some() => {
                let range = Range::ALL[(c as u8 - b'1') as usize];
                let d = self.detail.as_mut()?;
                d.range = range;
                d.history = None;
                return Some(Action::LoadDetail {
                    series: d.series.clone(),
                    since: self.now - range.millis(),
                });
            }
            _ => self.dirty = false,
        }
        None
    }

    fn on_popup_key(&mut self, popup: Popup, key: KeyEvent) -> Option<Action> {
        match popup {
            Popup::Help => {
                if !matches!(
                    key.code,
                    KeyCode::Esc | KeyCode::Char('?' | 'q') | KeyCode::Enter | KeyCode::F(1)
                ) {
                    self.popup = Some(Popup::Help);
                }
                None
            }
            Popup::Event(line) => {
                if !matches!(key.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q')) {
                    self.popup = Some(Popup::Event(line));
                }
                None
            }
            Popup::Filter { mut input } => {
                match key.code {
                    KeyCode::Enter => {
                        let f = input.trim();
                        self.filter = (!f.is_empty()).then(|| f.to_string());
                        self.order_stale = true;
                        self.sel[0] = 0;
                        self.offset[0] = 0;
                        return None;
                    }
                    KeyCode::Esc => {
                        self.filter = None;
                        self.order_stale = true;
                        return None;
                    }
                    KeyCode::Backspace => {
                        input.pop();
                    }
                    KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        input.clear()
                    }
                    KeyCode::Char(c) if input.len() < 200 => input.push(c),
                    _ => {}
                }
                self.popup = Some(Popup::Filter { input });
                None
            }
            Popup::Silence {
                mut input,
                targets,
                mut target,
                mut error,
            } => {
                match key.code {
                    KeyCode::Esc => return None,
                    KeyCode::Enter => match input.parse::<crate::config::Duration>() {
                        Ok(d) if !d.is_zero() => {
                            let pattern = targets[target].clone();
                            let until = self.now.saturating_add(d.as_millis());
                            self.silences.push(Silence {
                                pattern: pattern.clone(),
                                until,
                            });
                            self.order_stale = true;
                            self.notice(format!("silence sent: {pattern} for {d}"));
                            return Some(Action::Control(Control::Silence {
                                pattern,
                                until,
                                reason: "silenced from the terminal".to_string(),
                                by: self.opts.by.clone(),
                            }));
                        }
                        Ok(_) => error = Some("the duration must be longer than zero".to_string()),
                        Err(_) => {
                            error = Some(format!("{input:?} is not a duration: try 30m, 1h, 2d"))
                        }
                    },
                    KeyCode::Tab => target = (target + 1) % targets.len(),
                    KeyCode::Backspace => {
                        input.pop();
                        error = None;
                    }
                    KeyCode::Char(c) if input.len() < 40 => {
                        input.push(c);
                        error = None;
                    }
                    _ => {}
                }
                self.popup = Some(Popup::Silence {
                    input,
                    targets,
                    target,
                    error,
                });
                None
            }
        }
    }

    /// Handles a mouse event: a click selects the row under it (a click on the
    /// selected series opens it), the wheel moves the selection of the pane under it.
    pub fn on_mouse(&mut self, ev: MouseEvent, now: Timestamp) -> Option<Action> {
        self.now = self.now.max(now);
        self.prepare();
        if self.popup.is_some() || self.too_small() {
            return None;
        }
        let areas = self.areas();
        let at = Position::new(ev.column, ev.row);
        let pane = if self.detail.is_some() {
            return None;
        } else if areas.series.contains(at) {
            Focus::Series
        } else if areas.alerts.contains(at) {
            Focus::Alerts
        } else if areas.log.contains(at) {
            Focus::Log
        } else {
            return None;
        };
        match ev.kind {
            MouseEventKind::ScrollUp => {
                self.focus = pane;
                self.move_by(-1);
            }
            MouseEventKind::ScrollDown => {
                self.focus = pane;
                self.move_by(1);
            }
            MouseEventKind::Down(MouseButton::Left) => {
                let area = [areas.series, areas.alerts, areas.log][pane as usize];
                // Border, then the header row for the two tables.
                let first = area.y + if pane == Focus::Log { 1 } else { 2 };
                if ev.row < first || ev.row + 1 >= area.bottom() {
                    self.focus = pane;
                    self.dirty = true;
                    return None;
                }
                let i = self.offset[pane as usize] + (ev.row - first) as usize;
                let len = [self.order.len(), self.alert_order.len(), self.log.len()][pane as usize];
                if i >= len {
                    self.focus = pane;
                    self.dirty = true;
                    return None;
                }
                let again = self.focus == pane && self.sel[pane as usize] == i;
                self.focus = pane;
                self.sel[pane as usize] = i;
                if pane == Focus::Series {
                    self.selected_name = self.order.get(i).cloned();
                }
                self.dirty = true;
                if again && pane != Focus::Log {
                    return self.open_detail();
                }
            }
            _ => return None,
        }
        None
    }

    fn page(&self) -> usize {
        let a = self.areas();
        match self.focus {
            Focus::Series => Areas::table_rows(a.series),
            Focus::Alerts => Areas::table_rows(a.alerts),
            Focus::Log => Areas::list_rows(a.log),
        }
        .max(1)
    }

    fn move_by(&mut self, d: isize) {
        if self.detail.is_some() {
            return;
        }
        let i = self.focus as usize;
        let len = [self.order.len(), self.alert_order.len(), self.log.len()][i];
        self.sel[i] = self.sel[i]
            .saturating_add_signed(d)
            .min(len.saturating_sub(1));
        if self.focus == Focus::Series {
            self.selected_name = self.order.get(self.sel[0]).cloned();
        }
        self.clamp_all();
    }

    fn cycle_focus(&mut self, forward: bool) {
        self.focus = match (self.focus, forward) {
            (Focus::Series, true) | (Focus::Log, false) => Focus::Alerts,
            (Focus::Alerts, true) | (Focus::Series, false) => Focus::Log,
            (Focus::Log, true) | (Focus::Alerts, false) => Focus::Series,
        };
    }

    fn open_detail(&mut self) -> Option<Action> {
        let series = match self.focus {
            Focus::Series => self.selected_series()?.to_string(),
            Focus::Alerts => self.selected_alert()?.series.clone(),
            Focus::Log => {
                let line = self.log.get(self.sel[2])?.clone();
                self.popup = Some(Popup::Event(line));
                return None;
            }
        };
        let range = Range::M5;
        self.detail = Some(Detail {
            series: series.clone(),
            range,
            history: None,
        });
        Some(Action::LoadDetail {
            series,
            since: self.now - range.millis(),
        })
    }

    /// The alert `a` and `s` act on: the selected one in the alerts pane, else the
    /// loudest open alert of the selected (or shown) series.
    fn target_alert(&self) -> Option<&Alert> {
        if self.detail.is_none() && self.focus == Focus::Alerts {
            return self.selected_alert();
        }
        let series = match &self.detail {
            Some(d) => d.series.as_str(),
            None => self.selected_series()?,
        };
        self.alerts_of(series)
            .max_by_key(|a| (a.is_firing(), a.severity, a.since))
    }

    fn ack(&mut self) -> Option<Action> {
        let Some(a) = self.target_alert() else {
            self.notice("no alert here to acknowledge".to_string());
            return None;
        };
        if !a.is_firing() {
            let msg = format!("{} is {}, not firing", a.id(), a.state);
            self.notice(msg);
            return None;
        }
        let alert = a.id();
        self.notice(format!("acknowledgement sent: {alert}"));
        Some(Action::Control(Control::Ack {
            alert,
            by: self.opts.by.clone(),
        }))
    }

    fn silence_targets(&self) -> Vec<String> {
        let alert = self.target_alert();
        let series = match (&self.detail, self.focus, alert) {
            (Some(d), _, _) => Some(d.series.clone()),
            (None, Focus::Alerts, Some(a)) => Some(a.series.clone()),
            (None, _, _) => self.selected_series().map(str::to_string),
        };
        let mut out: Vec<String> = series.into_iter().collect();
        if let Some(a) = alert {
            if !out.contains(&a.rule) {
                out.push(a.rule.clone());
            }
        }
        out
    }

    fn ask_silence(&mut self) {
        let targets = self.silence_targets();
        if targets.is_empty() {
            self.notice("nothing selected to silence".to_string());
            return;
        }
        self.popup = Some(Popup::Silence {
            input: "1h".to_string(),
            targets,
            target: 0,
            error: None,
        });
    }

    fn unsilence(&mut self) -> Option<Action> {
        let pattern = self.silence_targets().into_iter().next()?;
        self.silences.retain(|s| s.pattern != pattern);
        self.engine_silences.retain(|s| s.pattern != pattern);
        self.order_stale = true;
        self.notice(format!("unsilence sent: {pattern}"));
        Some(Action::Control(Control::Unsilence {
            pattern: Some(pattern),
            by: self.opts.by.clone(),
        }))
    }

    pub fn notice(&mut self, msg: String) {
        self.flash = Some((msg, self.now));
        self.dirty = true;
    }
}

impl Series {
    fn new(name: SeriesId) -> Self {
        Self {
            name,
            value: None,
            unit: None,
            recent: VecDeque::new(),
            seen_at: None,
        }
    }
}

/// The series filter: with `+` or `#` an MQTT filter, otherwise a case-insensitive
/// part of the name.
pub fn filter_matches(filter: &str, name: &str) -> bool {
    if filter.contains(['+', '#']) {
        topic_matches(filter, name)
    } else {
        name.to_lowercase().contains(&filter.to_lowercase())
    }
}

/// At most `2 * buckets` points: the min and the max of each time bucket, in time
/// order, so spikes survive.
pub fn downsample(points: Vec<(Timestamp, f64)>, buckets: usize) -> Vec<(Timestamp, f64)> {
    if points.len() <= 2 * buckets || buckets == 0 {
        return points;
    }
    let (t0, t1) = (points[0].0, points[points.len() - 1].0);
    let span = (t1 - t0).max(1) as f64;
    let mut out = Vec::with_capacity(2 * buckets);
    type Point = (Timestamp, f64);
    // (bucket, lowest, highest) of the bucket being filled.
    let mut cur: Option<(usize, Point, Point)> = None;
    let flush = |out: &mut Vec<(Timestamp, f64)>, lo: (Timestamp, f64), hi: (Timestamp, f64)| {
        if lo.0 == hi.0 {
            out.push(lo);
        } else if lo.0 < hi.0 {
            out.extend([lo, hi]);
        } else {
            out.extend([hi, lo]);
        }
    };
    for p in points {
        let b = (((p.0 - t0) as f64 / span) * (buckets - 1) as f64) as usize;
        cur = match cur {
            Some((cb, lo, hi)) if cb == b => Some((
                cb,
                if p.1 < lo.1 { p } else { lo },
                if p.1 > hi.1 { p } else { hi },
            )),
            Some((_, lo, hi)) => {
                flush(&mut out, lo, hi);
                Some((b, p, p))
            }
            None => Some((b, p, p)),
        };
    }
    if let Some((_, lo, hi)) = cur {
        flush(&mut out, lo, hi);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_keeps_spikes_and_order() {
        let mut pts: Vec<(Timestamp, f64)> = (0..10_000).map(|i| (i as i64 * 1000, 20.0)).collect();
        pts[5_000].1 = 99.0;
        let out = downsample(pts, 100);
        assert!(out.len() <= 200, "{}", out.len());
        assert!(out.iter().any(|p| p.1 == 99.0));
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn filter_takes_wildcards_or_a_part_of_the_name() {
        assert!(filter_matches(
            "greenhouse/+/temperature",
            "greenhouse/node1/temperature"
        ));
        assert!(!filter_matches(
            "greenhouse/+",
            "greenhouse/node1/temperature"
        ));
        assert!(filter_matches("Node1", "greenhouse/node1/temperature"));
        assert!(!filter_matches("node2", "greenhouse/node1/temperature"));
    }
}
