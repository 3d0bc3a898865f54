//! Log output: `tracing` lines, compact or JSON, at the configured level unless
//! `--log-level` or `RUST_LOG` says otherwise, with the embedded broker's noise kept in
//! proportion ([`QuietBroker`]).
//!
//! Colours only on a terminal and never with `NO_COLOR` set. When stderr is the journal
//! (systemd sets `JOURNAL_STREAM` to its device and inode), each line starts with its
//! priority, `<3>` error, `<4>` warning, `<6>` info, `<7>` debug, as sd-daemon(3)
//! describes, so `journalctl -p warning` shows the warnings; the journal keeps its own
//! timestamps, so lines carry none.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

use crate::model::now_ms;

/// How each log line is written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One compact line of text per event.
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields).
    Json,
}

/// What the command line says about logging, for every later [`init`].
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--log-level`: a level or filter that wins over `RUST_LOG` and `[log] level`.
    pub level: Option<String>,
    pub format: LogFormat,
}

static OVERRIDES: OnceLock<Overrides> = OnceLock::new();

/// Records the command line's logging options; the first call wins.
pub fn set_overrides(o: Overrides) {
    let _ = OVERRIDES.set(o);
}

/// The filter of a level or filter string, with the embedded broker's and SQLite's
/// chatter kept at warnings unless the string names them.
fn filter_of(level: &str) -> String {
    format!("{level},rumqttd=warn,rumqttd::server::broker=off,rumqttc=warn,sqlx=warn")
}

/// Checks a `--log-level` value: a level (`debug`) or an `EnvFilter` directive list
/// (`centinela=debug,rumqttd=info`). A bare word must be a level: `EnvFilter` would take
/// `loud` as a target name and quietly log nothing more.
pub fn parse_filter(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let hint = "e.g. debug, or centinela=debug,rumqttd=info";
    for d in s.split(',').map(str::trim) {
        if !d.contains(['=', '[']) && !LEVELS.contains(&d.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{s:?} is not a log level or filter: {d:?} is not one of {}; {hint}",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("{s:?} is not a log level or filter ({e}); {hint}"))
}

/// Whether `NO_COLOR` asks for no colours (set and not empty, as no-color.org says).
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`, in decimal) names the file with this
/// device and inode.
fn journal_stream_is(var: &str, dev: u64, ino: u64) -> bool {
    var.split_once(':').is_some_and(|(d, i)| {
        d.trim().parse::<u64>() == Ok(dev) && i.trim().parse::<u64>() == Ok(ino)
    })
}

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM` for a
/// service whose output goes there, and a child that redirected stderr keeps the
/// variable but not the stream, so the device and inode must match.
pub fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => journal_stream_is(&var.to_string_lossy(), m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// The syslog priority sd-daemon(3) reads from a `<N>` line prefix.
fn priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// An event format that starts each line with its journal priority.
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The formatting layer: text or JSON, with journal priorities or not.
fn fmt_layer(format: LogFormat, journal: bool, ansi: bool, writer: BoxMakeWriter) -> BoxedLayer {
    use tracing_subscriber::fmt;
    match (format, journal) {
        (LogFormat::Json, false) => fmt::layer().json().with_writer(writer).boxed(),
        (LogFormat::Json, true) => fmt::layer()
            .json()
            .event_format(JournalPriority(fmt::format().json()))
            .with_writer(writer)
            .boxed(),
        (LogFormat::Text, false) => fmt::layer()
            .compact()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        (LogFormat::Text, true) => fmt::layer()
            .event_format(JournalPriority(fmt::format().compact().without_time()))
            .with_ansi(false)
            .with_writer(writer)
            .boxed(),
    }
}

/// Logs at `level` to `file` (appending), or to stderr when `None`. `--log-level`
/// wins over `RUST_LOG`, which wins over `level`. A second call does nothing.
pub fn init(level: &str, file: Option<&Path>) {
    use std::io::IsTerminal;
    let o = OVERRIDES.get().cloned().unwrap_or_default();
    let filter = match &o.level {
        Some(l) => tracing_subscriber::EnvFilter::new(filter_of(l)),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter_of(level))),
    };
    let opened = file.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let layer = match opened {
        Some(f) => fmt_layer(
            o.format,
            false,
            false,
            BoxMakeWriter::new(std::sync::Mutex::new(f)),
        ),
        None => {
            let journal = stderr_is_journal();
            let ansi = !journal && std::io::stderr().is_terminal() && !no_color();
            fmt_layer(o.format, journal, ansi, BoxMakeWriter::new(std::io::stderr))
        }
    };
    // The format first: the filters after it decide for every layer.
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(QuietBroker::default())
        .with(filter)
        .try_init();
}

/// Keeps two kinds of the embedded broker's log lines in proportion:
/// - when a client sends DISCONNECT and then closes its socket, rumqttd's router sees
///   the disconnection twice and logs "no-connection id N is already gone" at ERROR for
///   the second: every sensor that connects, publishes and disconnects would put an
///   ERROR in the journal, so it is dropped;
/// - when a subscriber falls behind the broker's buffer, rumqttd warns twice for every
///   read that skips ahead, thousands of lines a second in an overrun: the line that
///   names the filter is let through at most every 10 s, the other is dropped. (For the
///   pipeline's own subscription the source counts and reports the messages lost.)
#[derive(Default)]
pub struct QuietBroker {
    /// When a cursor jump was last let through (ms since the Unix epoch).
    last_jump: AtomicI64,
}

/// Whether `meta` is one of the spans rumqttd's router opens for every packet it routes
/// (`publish`, its topic formatted with `Debug`) and every batch or event it reads.
/// Being error-level spans they pass every level filter, and recording their fields
/// cost a third of the router's CPU at 10,000 messages a second; they are disabled.
/// The broker's log lines stay, without that span context.
fn per_packet_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span()
        && meta.target() == "rumqttd::router::routing"
        && matches!(meta.name(), "publish" | "incoming_payload" | "[>] incoming")
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for QuietBroker {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        !per_packet_span(meta)
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let target = event.metadata().target();
        if !target.starts_with("rumqttd") {
            return true;
        }
        let mut f = BrokerFields::default();
        event.record(&mut f);
        if target == "rumqttd::router::routing" && f.message.ends_with("is already gone") {
            return false;
        }
        if target == "rumqttd::segments" && f.message.contains("jumping to head") {
            return false;
        }
        if f.error.starts_with("Read cursor start jumped") {
            let now = now_ms();
            let last = self.last_jump.load(Ordering::Relaxed);
            return now - last >= 10_000
                && self
                    .last_jump
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
        }
        true
    }
}

#[derive(Default)]
struct BrokerFields {
    message: String,
    error: String,
}

impl tracing::field::Visit for BrokerFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "error" => self.error = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "error" => self.error = format!("{value:?}").trim_matches('"').to_string(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::prelude::*;

    use super::{fmt_layer, journal_stream_is, LogFormat, QuietBroker};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` under the service's layers and returns what they printed.
    fn logged(f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::registry()
            .with(QuietBroker::default())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || out.clone()),
            );
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// What `f` logs through the formatting layer of `format`, journal or not.
    fn formatted(format: LogFormat, journal: bool, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let writer = tracing_subscriber::fmt::writer::BoxMakeWriter::new(move || out.clone());
        let subscriber =
            tracing_subscriber::registry().with(fmt_layer(format, journal, false, writer));
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn journal_lines_start_with_their_priority_and_carry_no_timestamp() {
        let log = formatted(LogFormat::Text, true, || {
            tracing::error!("disk full");
            tracing::warn!(series = "a/b", "stale");
            tracing::info!("started");
            tracing::debug!("detail");
        });
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "{log}");
        assert!(lines[0].starts_with("<3>ERROR"), "{log}");
        assert!(lines[1].starts_with("<4> WARN"), "{log}");
        assert!(
            lines[1].contains("stale") && lines[1].contains("series=\"a/b\""),
            "{log}"
        );
        assert!(lines[2].starts_with("<6> INFO"), "{log}");
        assert!(lines[3].starts_with("<7>DEBUG"), "{log}");
    }

    #[test]
    fn text_lines_off_the_journal_have_a_timestamp_and_no_prefix() {
        let log = formatted(LogFormat::Text, false, || tracing::warn!("stale"));
        assert!(log.starts_with("20"), "{log}");
        assert!(!log.contains('<') && !log.contains('\x1b'), "{log}");
    }

    #[test]
    fn json_lines_are_objects_with_level_and_fields() {
        let log = formatted(LogFormat::Json, false, || {
            tracing::warn!(series = "a/b", "stale")
        });
        let v: serde_json::Value = serde_json::from_str(log.trim()).unwrap();
        assert_eq!(v["level"], "WARN", "{log}");
        assert_eq!(v["fields"]["message"], "stale", "{log}");
        assert_eq!(v["fields"]["series"], "a/b", "{log}");
        let journal = formatted(LogFormat::Json, true, || tracing::warn!("stale"));
        let rest = journal
            .strip_prefix("<4>")
            .unwrap_or_else(|| panic!("{journal}"));
        serde_json::from_str::<serde_json::Value>(rest.trim()).unwrap();
    }

    #[test]
    fn log_level_takes_levels_and_directives_and_refuses_typos() {
        use super::parse_filter;
        for ok in [
            "debug",
            "WARN",
            "centinela=debug,rumqttd=info",
            "info,sqlx=debug",
        ] {
            assert_eq!(parse_filter(ok).as_deref(), Ok(ok));
        }
        for bad in ["loud", "debug,verbose", "centinela=loud", ""] {
            let e = parse_filter(bad).unwrap_err();
            assert!(e.contains("is not a log level"), "{bad}: {e}");
        }
    }

    #[test]
    fn journal_stream_must_name_this_device_and_inode() {
        assert!(journal_stream_is("8:12345", 8, 12345));
        assert!(!journal_stream_is("8:12345", 8, 12346));
        assert!(!journal_stream_is("9:12345", 8, 12345));
        assert!(!journal_stream_is("", 8, 12345));
        assert!(!journal_stream_is("8-12345", 8, 12345));
    }

    #[test]
    fn the_double_disconnect_error_is_dropped_and_other_errors_are_kept() {
        let log = logged(|| {
            tracing::error!(target: "rumqttd::router::routing", "no-connection id {} is already gone", 2);
            tracing::error!(target: "rumqttd::router::routing", "Failed to append to commitlog");
            tracing::error!(target: "centinela::service", "no-connection id 3 is already gone");
        });
        assert!(!log.contains("id 2 is already gone"), "{log}");
        assert!(log.contains("Failed to append to commitlog"), "{log}");
        assert!(log.contains("id 3 is already gone"), "{log}");
    }

    #[test]
    fn the_router_per_packet_spans_are_off_and_its_lines_stay() {
        let log = logged(|| {
            let publish = tracing::error_span!(target: "rumqttd::router::routing", "publish", topic = ?bytes::Bytes::from_static(b"sensors/a"), pkid = 0);
            assert!(publish.is_disabled());
            let _g = publish.enter();
            tracing::error!(target: "rumqttd::router::routing", "Failed to append to commitlog");
            let connect = tracing::error_span!(target: "rumqttd::router::routing", "incoming_connect", client_id = "pi");
            assert!(!connect.is_disabled());
            let _c = connect.enter();
            tracing::warn!(target: "rumqttd::router::routing", "Dropping connection");
        });
        assert!(log.contains("Failed to append to commitlog"), "{log}");
        assert!(!log.contains("sensors/a"), "{log}");
        assert!(log.contains("incoming_connect{client_id=\"pi\"}"), "{log}");
    }

    #[test]
    fn an_overrun_warns_once_per_10_s_not_twice_per_read() {
        let log = logged(|| {
            for i in 0..1000u64 {
                tracing::warn!(target: "rumqttd::segments", "given index {} less than head {}, jumping to head", i, i + 4385);
                let error = format!(
                    "Read cursor start jumped from {:?} to {:?} on {}",
                    (i, 1),
                    (i + 1, 4385),
                    "sensors/#"
                );
                tracing::warn!(target: "rumqttd::router::routing", request_cursor = ?(i, 1), error);
            }
            tracing::warn!(target: "rumqttd::router::routing", "Dropping connection");
        });
        assert!(!log.contains("jumping to head"), "{log}");
        assert_eq!(log.matches("Read cursor start jumped").count(), 1, "{log}");
        assert!(log.contains("on sensors/#"), "{log}");
        assert!(log.contains("Dropping connection"), "{log}");
    }
}

/// One warning per `every` at most, counting the ones it held back in between: what
/// keeps a flood of bad input from flooding the log too.
#[derive(Debug)]
pub struct Throttle {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
    held_back: u64,
}

impl Throttle {
    pub fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(warnings held back since the last one)` when one may be logged now.
    pub fn ready(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= self.every)
        {
            self.last = Some(now);
            Some(std::mem::take(&mut self.held_back))
        } else {
            self.held_back += 1;
            None
        }
    }
}
