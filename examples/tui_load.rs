//! Load check of the terminal UI: 1,000 series at 1 Hz (100 readings every 100 ms,
//! the way the live bus batches them), some alerts and a status each second.
//!
//! - `cargo run --release --example tui_load` renders into ratatui's TestBackend at
//!   the redraw cap for 20 s and prints the CPU used, as % of one core.
//! - `... -- --seconds 60 --sort value --size 200x60` changes the run.
//! - `... -- --live` runs the real terminal UI on this feed instead (quit with q);
//!   acknowledgements and silences are answered as an engine would, so the keys can
//!   be tried by hand or in tmux.
//! - `... -- --broker mqtt://HOST:PORT` attaches the terminal UI to a broker instead
//!   (readings under `sensors/`, `centinela/alerts/#`, `centinela/status`), with
//!   `MQTT_USERNAME` / `MQTT_PASSWORD` from the environment when set.
//!
//! Measured on a 2-core x86_64 machine (release build, shared with other builds):
//! headless 160×50 at 10 draws/s, 0.5 % of one core sorted by name and 0.7 % sorted
//! by state (0.5–0.65 ms a draw); the real UI in a 160×50 tmux pane, feed included,
//! 0.6 % of one core over 20 s (`/proc/PID/stat`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use centinela::model::{
    now_ms, AlertEvent, AlertState, Control, LiveEvent, PipelineStatus, Reading, SeriesId,
    Severity, Timestamp,
};
use centinela::tui::{self, App, Options, RunOptions, Threshold};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use tokio::sync::{broadcast, mpsc, oneshot};

const SERIES: usize = 1_000;
const TICK: Duration = Duration::from_millis(100);

struct Feed {
    names: Vec<SeriesId>,
    units: [Option<Arc<str>>; 3],
    step: u64,
}

impl Feed {
    fn new() -> Self {
        let metrics = ["temperature", "humidity", "co2"];
        let names = (0..SERIES)
            .map(|i| {
                Arc::from(format!("site{}/node{:03}/{}", i / 300, i / 3, metrics[i % 3]).as_str())
            })
            .collect();
        Self {
            names,
            units: [
                Some(Arc::from("°C")),
                Some(Arc::from("%")),
                Some(Arc::from("ppm")),
            ],
            step: 0,
        }
    }

    /// One tick's worth: a tenth of the series, so each reports once a second.
    fn batch(&mut self, now: Timestamp) -> Vec<LiveEvent> {
        let part = (self.step % 10) as usize;
        let t = self.step as f64 / 10.0;
        let readings: Vec<Reading> = (part * SERIES / 10..(part + 1) * SERIES / 10)
            .map(|i| {
                let base = [21.0, 45.0, 600.0][i % 3];
                let swing = [4.0, 10.0, 150.0][i % 3];
                let value = base + swing * ((t / 30.0 + i as f64).sin());
                Reading {
                    series: self.names[i].clone(),
                    value: (value * 100.0).round() / 100.0,
                    ts: now,
                    unit: self.units[i % 3].clone(),
                }
            })
            .collect();
        let mut out = vec![LiveEvent::Readings(Arc::from(readings))];
        if part == 0 {
            out.push(LiveEvent::Status(PipelineStatus {
                broker: "embedded 127.0.0.1:1883".into(),
                broker_up: true,
                storage: "sqlite ./centinela.db".into(),
                storage_ok: true,
                readings_per_s: SERIES as f64,
                received_total: self.step * 100,
                stored_total: self.step * 100,
                decode_errors_total: 0,
                decode_errors: Vec::new(),
                outbox_pending: 0,
                outbox_dead: 0,
                outputs: Vec::new(),
                offline: false,
            }));
        }
        // Every 5 s an alert fires on some series, and one resolves.
        if self.step.is_multiple_of(50) {
            let i = (self.step / 50 * 37) as usize % SERIES;
            out.push(LiveEvent::Alert(alert(
                &self.names[i],
                AlertState::Firing,
                now,
            )));
            let j = ((self.step / 50).saturating_sub(3) * 37) as usize % SERIES;
            if self.step >= 150 {
                out.push(LiveEvent::Alert(alert(
                    &self.names[j],
                    AlertState::Resolved,
                    now,
                )));
            }
        }
        self.step += 1;
        out
    }
}

fn alert(series: &str, state: AlertState, now: Timestamp) -> AlertEvent {
    let severity = if series.ends_with("co2") {
        Severity::Critical
    } else {
        Severity::Warning
    };
    AlertEvent {
        rule: format!("{}-high", series.rsplit('/').next().unwrap_or("x")),
        series: series.to_string(),
        state,
        severity,
        value: Some(1.0),
        unit: None,
        ts: now,
        message: format!("{series} out of range"),
        notify: vec!["telegram".into()],
    }
}

/// CPU seconds used by this process so far (user + system, all threads).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name in parentheses; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    // After the command name come fields 3 (state) onwards: utime is field 14, stime 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        f.get(n - 3)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = field(14) + field(15);
    ticks as f64 / 100.0
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(url) = arg(&args, "--broker") {
        attach(url);
        return;
    }
    if args.iter().any(|a| a == "--live") {
        live();
        return;
    }
    let seconds: u64 = arg(&args, "--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let (w, h) = arg(&args, "--size")
        .and_then(|s| {
            s.split_once('x')
                .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        })
        .unwrap_or((160u16, 50u16));
    let mut app = App::new(Options::default(), now_ms());
    app.set_size(w, h);
    let sort_presses = match arg(&args, "--sort").as_deref() {
        Some("value") => 1,
        Some("age") => 2,
        Some("state") => 3,
        _ => 0,
    };
    for _ in 0..sort_presses {
        app.on_key(
            KeyEvent::new(KeyCode::Char('o'), KeyModifiers::NONE),
            now_ms(),
        );
    }
    let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    let mut feed = Feed::new();
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let mut draws = 0u64;
    let mut next = Instant::now();
    let mut draw_time = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(seconds) {
        let now = now_ms();
        for ev in feed.batch(now) {
            app.apply(ev, now);
        }
        app.tick(now);
        if app.dirty {
            let d = Instant::now();
            app.prepare();
            terminal.draw(|f| tui::draw(f, &app)).expect("draw");
            app.dirty = false;
            draw_time += d.elapsed();
            draws += 1;
        }
        next += TICK;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{} series at 1 Hz, {w}x{h}, sort {}: {draws} draws in {wall:.1} s ({:.1}/s), {:.2} ms per draw; CPU {:.2} s = {:.1} % of one core",
        app.series_count(),
        app.sort().0.label(),
        draws as f64 / wall,
        draw_time.as_secs_f64() * 1000.0 / draws.max(1) as f64,
        cpu,
        cpu / wall * 100.0
    );
}

type Reply = oneshot::Sender<Result<String, String>>;

/// The stand-in engine's control channel, answering each request.
struct EngineLink(mpsc::Sender<(Control, Reply)>);

impl tui::ControlSink for EngineLink {
    fn send(&self, control: Control, reply: Reply) -> Result<(), String> {
        self.0.try_send((control, reply)).map_err(|e| e.to_string())
    }
}

/// The real terminal UI on the synthetic feed, with a stand-in engine answering
/// acknowledgements so that the keys can be tried.
fn live() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (live_tx, live_rx) = broadcast::channel(1024);
        let (control_tx, mut control_rx) = mpsc::channel::<(Control, Reply)>(16);
        let tx = live_tx.clone();
        tokio::spawn(async move {
            let mut feed = Feed::new();
            let mut tick = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        for ev in feed.batch(now_ms()) {
                            let _ = tx.send(ev);
                        }
                    }
                    Some((c, reply)) = control_rx.recv() => {
                        let text = format!("engine received {c:?}");
                        let _ = tx.send(LiveEvent::Log { ts: now_ms(), level: centinela::model::LogLevel::Info, text });
                        let _ = reply.send(match &c {
                            Control::Ack { alert, .. } => Ok(format!("{alert} acknowledged")),
                            Control::Silence { pattern, .. } => Ok(format!("{pattern} silenced")),
                            Control::Unsilence { .. } => Err("no such silence".to_string()),
                        });
                        if let Control::Ack { alert, .. } = c {
                            if let Some(series) = alert.split_once('/').map(|(_, s)| s) {
                                let mut ev = self::alert(series, AlertState::Acknowledged, now_ms());
                                ev.rule = alert.split('/').next().unwrap_or_default().to_string();
                                let _ = tx.send(LiveEvent::Alert(ev));
                            }
                        }
                    }
                }
            }
        });
        let thresholds = vec![Threshold { pattern: "+/+/co2".into(), label: "co2-high >".into(), value: 700.0 }];
        if let Err(e) = tui::run(live_rx, EngineLink(control_tx), None, RunOptions { app: Options::default(), thresholds, initial: Vec::new(), db: None }).await {
            eprintln!("tui: {e}");
        }
    });
}

fn attach(url: String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let remote = tui::remote::RemoteOptions {
        url,
        tls: Default::default(),
        client_id: format!("centinela-tui-{}", std::process::id()),
        username: std::env::var("MQTT_USERNAME").ok(),
        password: std::env::var("MQTT_PASSWORD").ok(),
        prefix: "sensors".into(),
        topics: vec!["sensors/#".into()],
        map: Vec::new(),
        max_payload: 64 * 1024,
    };
    if let Err(e) = rt.block_on(tui::remote::attach(remote, None, RunOptions::default())) {
        eprintln!("tui: {e}");
    }
}
