//! The terminal UI: the last stop of the live bus.
//!
//! ```text
//!  live bus (broadcast LiveEvent) ──► state::App::apply ──► widgets draw ──► terminal
//!  keys, mouse ──► state::App::on_key / on_mouse ──► Action ──► Control ──► engine
//!                                                        └──► HistorySource (SQLite)
//! ```
//!
//! [`state`] is pure and holds everything shown; the widgets ([`header`],
//! [`series_table`], [`alerts`], [`log`], [`detail`], [`help`], [`footer`]) each draw
//! one part of the screen from it; [`run`] is the thin async shell that owns the
//! terminal. In `centinela demo` the bus is in-process; `centinela tui --broker URL`
//! feeds the same bus from the broker with [`remote`].
//!
//! The terminal is restored on quit, on panic (a hook) and on SIGTERM/SIGHUP. The
//! screen is redrawn at most every [`state::REDRAW_INTERVAL_MS`] and only when
//! something changed (at least once a second while ages are shown).

pub mod alerts;
pub mod detail;
pub mod footer;
pub mod format;
pub mod header;
pub mod help;
pub mod log;
pub mod remote;
pub mod seed;
pub mod series_table;
pub mod state;
pub mod theme;

use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use crossterm::event::{DisableMouseCapture, EnableMouseCapture, Event, EventStream};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use futures_util::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Alignment, Rect};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::{Frame, Terminal};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::{RuleConfig, RuleKind};
use crate::model::{now_ms, Control, LiveEvent, Timestamp};
pub use state::{Action, App, Options, Threshold};

/// Where the detail chart's history comes from (the SQLite store, when reachable).
///
/// Called on a blocking thread (`spawn_blocking`), so an implementation may block, or
/// run an async query with `tokio::runtime::Handle::block_on`.
pub trait HistorySource: Send + Sync {
    /// Points of `series` with `ts >= since`, ascending by time.
    fn history(&self, series: &str, since: Timestamp) -> Vec<(Timestamp, f64)>;
}

/// Where the person's acknowledgements and silences go: the engine's control channel
/// in-process, or the broker through the remote feed.
pub trait ControlSink: Send + 'static {
    /// Hands `control` on without waiting. When the receiver answers (the engine's
    /// words, or why it refused), it does so on `reply`; dropping `reply` means no
    /// answer will come. An `Err` says why the request could not be handed on.
    fn send(
        &self,
        control: Control,
        reply: oneshot::Sender<Result<String, String>>,
    ) -> Result<(), String>;
}

/// A plain channel of requests: no answers (the remote feed publishes them).
impl ControlSink for mpsc::Sender<Control> {
    fn send(
        &self,
        control: Control,
        _reply: oneshot::Sender<Result<String, String>>,
    ) -> Result<(), String> {
        self.try_send(control).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => "the service is busy, try again".to_string(),
            mpsc::error::TrySendError::Closed(_) => "the service has stopped".to_string(),
        })
    }
}

/// Why the terminal UI stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("terminal I/O failed: {0}")]
    Terminal(#[from] io::Error),
}

/// Settings of [`run`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub app: Options,
    /// Drawn on the detail chart; see [`thresholds_from_rules`].
    pub thresholds: Vec<Threshold>,
    /// Applied before the live bus: what happened before the viewer started (the
    /// alerts already open, the last value of each series), so they show at once.
    pub initial: Vec<LiveEvent>,
    /// The service's database, when reachable: the engine's silences are read from it
    /// every [`SILENCES_EVERY`] (they send no event of their own).
    pub db: Option<sqlx::SqlitePool>,
}

/// How often the engine's silences are read from the database.
pub const SILENCES_EVERY: Duration = Duration::from_secs(3);

/// Draws the whole screen from the state. [`App::prepare`] must have run since the
/// last change.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < state::MIN_WIDTH || area.height < state::MIN_HEIGHT {
        let y = area.height / 2;
        let lines = vec![
            Line::from(format!(
                "terminal too small: {}×{}",
                area.width, area.height
            )),
            Line::from(format!(
                "centinela needs at least {}×{}",
                state::MIN_WIDTH,
                state::MIN_HEIGHT
            )),
            Line::from("q quits"),
        ];
        let r = Rect {
            y: area.y + y.saturating_sub(1),
            height: area.height.saturating_sub(y.saturating_sub(1)),
            ..area
        };
        frame.render_widget(
            Paragraph::new(lines)
                .alignment(Alignment::Center)
                .style(theme::WARN),
            r,
        );
        return;
    }
    let areas = app.areas();
    header::draw(frame, areas.header, app);
    if app.detail().is_some() {
        detail::draw_chart(frame, areas.chart, app);
        detail::draw_history(frame, areas.history, app);
    } else {
        series_table::draw(frame, areas.series, app);
        alerts::draw(frame, areas.alerts, app);
        log::draw(frame, areas.log, app);
    }
    footer::draw(frame, areas.footer, app);
    help::draw(frame, area, app);
}

/// The thresholds of threshold and window rules, as lines for the detail chart.
pub fn thresholds_from_rules(rules: &[RuleConfig]) -> Vec<Threshold> {
    let mut out = Vec::new();
    for r in rules
        .iter()
        .filter(|r| matches!(r.kind, RuleKind::Threshold | RuleKind::Window))
    {
        let agg = match (r.kind, r.agg) {
            (RuleKind::Window, Some(a)) => format!(" {}", format!("{a:?}").to_lowercase()),
            _ => String::new(),
        };
        for (op, v) in [(">", r.above), ("<", r.below)] {
            if let Some(value) = v {
                out.push(Threshold {
                    pattern: r.series.clone(),
                    label: format!("{}{agg} {op}", r.name),
                    value,
                });
            }
        }
    }
    out
}

/// Runs the terminal UI until the person quits, SIGTERM or SIGHUP: reads the live bus
/// from `rx`, sends acknowledgements and silences to `control` (showing its answer in
/// the footer), and asks `history` for the detail chart's history.
pub async fn run(
    mut rx: broadcast::Receiver<LiveEvent>,
    control: impl ControlSink,
    history: Option<Arc<dyn HistorySource>>,
    opts: RunOptions,
) -> Result<(), TuiError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;

    let mut guard = TerminalGuard::enter()?;
    let about = opts.app.about.clone();
    let mut app = App::new(opts.app, now_ms());
    app.set_thresholds(opts.thresholds);
    let now = now_ms();
    // Where things are, also in the event log (oldest first, so they read in order).
    for (what, text) in about.into_iter().rev() {
        app.apply(
            LiveEvent::Log {
                ts: now,
                level: crate::model::LogLevel::Info,
                text: if what.is_empty() {
                    text
                } else {
                    format!("{what}: {text}")
                },
            },
            now,
        );
    }
    app.apply_initial(opts.initial, now);
    let size = guard.terminal.size()?;
    app.set_size(size.width, size.height);

    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_millis(state::REDRAW_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (hist_tx, mut hist_rx) = mpsc::channel::<(String, Vec<(Timestamp, f64)>)>(4);
    let (answer_tx, mut answer_rx) = mpsc::channel::<Result<String, String>>(8);
    let (silences_tx, mut silences_rx) = mpsc::channel::<Vec<state::Silence>>(1);
    let silences_task = opts.db.map(|pool| {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SILENCES_EVERY);
            loop {
                every.tick().await;
                match seed::silences(&pool, now_ms()).await {
                    Ok(s) => {
                        if silences_tx.send(s).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot read silences"),
                }
            }
        })
    });
    let mut feed_open = true;

    loop {
        tokio::select! {
            _ = tick.tick() => {
                app.tick(now_ms());
                if app.dirty {
                    app.prepare();
                    guard.terminal.draw(|f| draw(f, &app))?;
                    app.dirty = false;
                }
            }
            ev = rx.recv(), if feed_open => {
                let now = now_ms();
                let mut next = Some(ev);
                // Drain what is already queued before going back to select.
                let mut budget = 1024;
                while let Some(ev) = next.take() {
                    match ev {
                        Ok(ev) => app.apply(ev, now),
                        Err(broadcast::error::RecvError::Lagged(n)) => app.note_lagged(n, now),
                        Err(broadcast::error::RecvError::Closed) => {
                            app.note_closed(now);
                            feed_open = false;
                            break;
                        }
                    }
                    budget -= 1;
                    if budget == 0 {
                        break;
                    }
                    next = match rx.try_recv() {
                        Ok(ev) => Some(Ok(ev)),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(broadcast::error::RecvError::Lagged(n))),
                        Err(broadcast::error::TryRecvError::Closed) => Some(Err(broadcast::error::RecvError::Closed)),
                        Err(broadcast::error::TryRecvError::Empty) => None,
                    };
                }
            }
            ev = keys.next() => {
                let now = now_ms();
                let action = match ev {
                    Some(Ok(Event::Key(k))) => app.on_key(k, now),
                    Some(Ok(Event::Mouse(m))) => app.on_mouse(m, now),
                    Some(Ok(Event::Resize(w, h))) => {
                        app.set_size(w, h);
                        None
                    }
                    Some(Ok(_)) => None,
                    Some(Err(e)) => return Err(e.into()),
                    None => break,
                };
                match action {
                    None => {}
                    Some(Action::Quit) => break,
                    Some(Action::Control(c)) => {
                        let (reply_tx, reply_rx) = oneshot::channel();
                        match control.send(c, reply_tx) {
                            Ok(()) => {
                                let tx = answer_tx.clone();
                                tokio::spawn(async move {
                                    // A dropped reply means no answer: the notice stays.
                                    if let Ok(answer) = reply_rx.await {
                                        let _ = tx.send(answer).await;
                                    }
                                });
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "control request not sent");
                                app.notice(format!("not sent: {e}"));
                            }
                        }
                    }
                    Some(Action::LoadDetail { series, since }) => match &history {
                        Some(h) => {
                            let (h, tx) = (h.clone(), hist_tx.clone());
                            tokio::spawn(async move {
                                let s = series.clone();
                                match tokio::task::spawn_blocking(move || h.history(&s, since)).await {
                                    Ok(points) => {
                                        let _ = tx.send((series, points)).await;
                                    }
                                    Err(e) => tracing::warn!(error = %e, "history query failed"),
                                }
                            });
                        }
                        None => app.set_history(&series, Vec::new()),
                    },
                }
            }
            Some((series, points)) = hist_rx.recv() => app.set_history(&series, points),
            Some(silences) = silences_rx.recv() => app.set_engine_silences(silences),
            Some(answer) = answer_rx.recv() => match answer {
                Ok(words) => app.notice(words),
                Err(why) => app.notice(format!("refused: {why}")),
            },
            _ = term.recv() => break,
            _ = hup.recv() => break,
        }
    }
    if let Some(t) = silences_task {
        t.abort();
    }
    drop(guard);
    Ok(())
}

/// Set while the terminal is in raw mode on the alternate screen, so the panic hook
/// only restores what was changed.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Owns the terminal while the UI runs; puts it back as it was when dropped.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    fn enter() -> io::Result<Self> {
        HOOK.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                prev(info);
            }));
        });
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut out = io::stdout();
        if let Err(e) = crossterm::execute!(out, EnterAlternateScreen, EnableMouseCapture) {
            restore();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(out)) {
            Ok(mut terminal) => {
                terminal.clear()?;
                Ok(Self { terminal })
            }
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the alternate screen and raw mode, shows the cursor. Idempotent.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = crossterm::execute!(
            io::stdout(),
            DisableMouseCapture,
            LeaveAlternateScreen,
            crossterm::cursor::Show
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_come_from_threshold_and_window_rules() {
        let rules: Vec<RuleConfig> = [
            r#"name = "too-hot"
               series = "greenhouse/+/temperature"
               kind = "threshold"
               above = 30.0"#,
            r#"name = "co2-avg"
               series = "lab/#"
               kind = "window"
               agg = "avg"
               window = "5m"
               above = 800
               below = 300"#,
            r##"name = "rising"
               series = "#"
               kind = "rate"
               window = "1m"
               rise = 5"##,
        ]
        .iter()
        .map(|s| toml::from_str(s).expect("rule"))
        .collect();
        assert_eq!(
            thresholds_from_rules(&rules),
            vec![
                Threshold {
                    pattern: "greenhouse/+/temperature".into(),
                    label: "too-hot >".into(),
                    value: 30.0
                },
                Threshold {
                    pattern: "lab/#".into(),
                    label: "co2-avg avg >".into(),
                    value: 800.0
                },
                Threshold {
                    pattern: "lab/#".into(),
                    label: "co2-avg avg <".into(),
                    value: 300.0
                },
            ]
        );
    }
}
