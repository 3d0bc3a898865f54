//! The terminal's state, pure: what the live bus has said (series, alerts, status,
//! log) and where the person is (screen, pane, selection, filter, popups).
//!
//! Sits at the end of the stream: [`App::apply`] folds each [`LiveEvent`] in,
//! [`App::on_key`] and [`App::on_mouse`] turn input into [`Action`]s (a
//! [`Control`] for the engine, a history request, quit). Nothing here does I/O or reads
//! the clock: `now` comes in as an argument, so every screen is reproducible in tests.
//!
//! # Layout
//! - this file: the constants, the types the widgets read and [`App`] itself;
//! - `feed`: folding the live bus (readings, alerts, status, log) into the state;
//! - `layout`: the screen areas, computed the same way for drawing and mouse hits;
//! - `view`: the rows as the widgets read them (order, filter, selection, chart);
//! - `input`: keys and mouse turned into [`Action`]s.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use ratatui::layout::Rect;

use crate::model::{
    AlertEvent, AlertState, Control, LogLevel, PipelineStatus, SeriesId, Severity, Timestamp,
};

mod feed;
mod input;
mod layout;
mod view;

pub use layout::{Areas, Content, COLUMNS_FROM};
pub use view::{downsample, filter_matches};

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

/// This instance in a Kafka cluster, from the `cluster` figure of the status
/// (`cluster NAME partitions N`).
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub instance: String,
    /// Partitions owned, as last told.
    pub partitions: u64,
    /// When the assignment last changed (wall clock): a series owned here has had a
    /// reading since.
    pub since: Timestamp,
}

/// The name of the status figure that says this instance is clustered.
pub const CLUSTER_FIGURE: &str = "cluster";

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
    /// Clustered (the status names this instance and its Kafka partitions): the
    /// instance's name, the status figure it came with, and when that last changed.
    cluster: Option<Cluster>,
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
            cluster: None,
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
