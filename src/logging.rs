//! Log output: `tracing` lines, compact, without colours when not on a terminal (what
//! journald wants), at the configured level unless `RUST_LOG` says otherwise, with the
//! embedded broker's noise kept in proportion ([`QuietBroker`]).

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

use tracing_subscriber::prelude::*;

use crate::model::now_ms;

/// Logs at `level` to `file` (appending), or to stderr when `None`. A second call does
/// nothing.
pub fn init(level: &str, file: Option<&Path>) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},rumqttd=warn,rumqttd::server::broker=off,rumqttc=warn,sqlx=warn"
        ))
    });
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(QuietBroker::default());
    let fmt = tracing_subscriber::fmt::layer().compact();
    let opened = file.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let _ = match opened {
        Some(f) => registry
            .with(fmt.with_writer(std::sync::Mutex::new(f)).with_ansi(false))
            .try_init(),
        None => registry
            .with(
                fmt.with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
    };
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

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for QuietBroker {
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

    use super::QuietBroker;

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
