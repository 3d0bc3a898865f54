//! systemd's notification protocol (`sd_notify`), without a crate: readiness, reload and
//! stop announcements, a status line for `systemctl status`, and the watchdog.
//!
//! It sits beside the stream, in the service's lifecycle: `centinela run` says [`ready`]
//! once every stage is up, [`reloading`] then [`ready`] around a SIGHUP reload,
//! [`stopping`] on SIGTERM, and [`run_watchdog`] feeds systemd's watchdog only while the
//! pipeline reports itself alive, so a stalled pipeline is restarted by systemd
//! (`WatchdogSec=` in `systemd/centinela.service`). A step of the start-up that may
//! outlast `TimeoutStartSec=` (copying the database aside and migrating its schema) runs
//! inside [`extending_timeout`], which asks for more time with `EXTEND_TIMEOUT_USEC`
//! until the step is done.
//!
//! Messages are datagrams to the `AF_UNIX` socket named by `$NOTIFY_SOCKET` (a path, or
//! an abstract name written with a leading `@`). Without `$NOTIFY_SOCKET` (not run by
//! systemd, or `Type=simple`) every function here does nothing.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The variable systemd sets to the notification socket of a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=VALUE` assignments, as in sd_notify(3)) to
/// `$NOTIFY_SOCKET`. `Ok(false)` when the variable is not set: nothing was sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) => {
            notify_to(&socket.to_string_lossy(), state)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Sends one datagram to the socket `socket` names: a filesystem path, or an abstract
/// name when it starts with `@`.
pub fn notify_to(socket: &str, state: &str) -> io::Result<()> {
    if socket.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty notification socket name",
        ));
    }
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), socket)?;
    }
    Ok(())
}

/// Sends and logs a failure: a lost notification must not stop the service.
fn send_logged(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "cannot notify systemd");
    }
}

/// Startup is complete: every stage runs. `Type=notify` units are "active" from here.
pub fn ready() {
    send_logged("READY=1");
}

/// Shutdown has begun: stages are draining and flushing.
pub fn stopping() {
    send_logged("STOPPING=1");
}

/// A reload (SIGHUP) has begun; say [`ready`] when the new configuration runs (or the
/// old one was kept).
pub fn reloading() {
    send_logged("RELOADING=1");
}

/// How much more time each `EXTEND_TIMEOUT_USEC` asks for.
pub const EXTEND_BY: Duration = Duration::from_secs(30);
/// How often it is asked for while a long step runs: well within [`EXTEND_BY`].
pub const EXTEND_EVERY: Duration = Duration::from_secs(10);

fn extend_message(by: Duration) -> String {
    format!("EXTEND_TIMEOUT_USEC={}", by.as_micros())
}

/// Runs `work` while asking systemd for more time: [`EXTEND_BY`] at once and again every
/// [`EXTEND_EVERY`] until `work` is done, so a long database migration is not killed by
/// `TimeoutStartSec=`. Without `$NOTIFY_SOCKET` it only runs `work`.
pub async fn extending_timeout<F: std::future::Future>(work: F) -> F::Output {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) => {
            extending_timeout_to(&socket.to_string_lossy(), EXTEND_EVERY, EXTEND_BY, work).await
        }
        None => work.await,
    }
}

/// [`extending_timeout`] towards a given socket, every `every`, for `by` each time.
pub async fn extending_timeout_to<F: std::future::Future>(
    socket: &str,
    every: Duration,
    by: Duration,
    work: F,
) -> F::Output {
    let every = every.max(Duration::from_millis(1));
    let message = extend_message(by);
    let send = || {
        if let Err(e) = notify_to(socket, &message) {
            tracing::warn!(error = %e, "cannot ask systemd for more start-up time");
        }
    };
    // At once, so even a step that ends before the first tick has said so.
    send();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticks.tick() => send(),
        }
    }
}

/// A one-line status shown by `systemctl status centinela`.
pub fn status(text: &str) {
    // A newline would start a new assignment: keep the status on one line.
    let line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    send_logged(&format!("STATUS={line}"));
}

/// How often to feed the watchdog: half of `$WATCHDOG_USEC`, when the watchdog is on and
/// meant for this process (`$WATCHDOG_PID` absent or equal to our pid).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] on given values, for tests.
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    my_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Sends `WATCHDOG=1` every `interval` while `health()` says the pipeline is alive; when
/// it says otherwise the watchdog goes unfed and systemd restarts the service once
/// `WatchdogSec` passes. Runs until the task is dropped or aborted; returns at once when
/// `$NOTIFY_SOCKET` is not set.
pub async fn run_watchdog(interval: Duration, health: impl Fn() -> bool) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    run_watchdog_to(&socket.to_string_lossy(), interval, health).await;
}

/// [`run_watchdog`] towards a given socket.
pub async fn run_watchdog_to(socket: &str, interval: Duration, health: impl Fn() -> bool) {
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_healthy = true;
    loop {
        ticks.tick().await;
        let healthy = health();
        if healthy {
            if !was_healthy {
                tracing::info!("pipeline healthy again: feeding the systemd watchdog");
            }
            if let Err(e) = notify_to(socket, "WATCHDOG=1") {
                tracing::warn!(error = %e, "cannot feed the systemd watchdog");
            }
        } else if was_healthy {
            tracing::error!(
                "pipeline unhealthy: not feeding the systemd watchdog (systemd restarts the \
                 service when WatchdogSec passes)"
            );
        }
        was_healthy = healthy;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn received(sock: &UnixDatagram) -> Vec<String> {
        sock.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let name = path.to_str().unwrap();
        notify_to(name, "READY=1").unwrap();
        notify_to(name, "STATUS=42 series").unwrap();
        assert_eq!(received(&server), ["READY=1", "STATUS=42 series"]);
    }

    #[test]
    fn datagrams_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "centinela-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(&format!("@{name}"), "WATCHDOG=1").unwrap();
        assert_eq!(received(&server), ["WATCHDOG=1"]);
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nobody");
        assert!(notify_to(missing.to_str().unwrap(), "READY=1").is_err());
        assert!(notify_to("", "READY=1").is_err());
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process() {
        assert_eq!(
            watchdog_interval_from(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        // Meant for another process (inherited environment).
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(None, None, 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 7), None);
    }

    #[tokio::test]
    async fn watchdog_is_fed_only_while_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        let name = path.to_str().unwrap().to_string();
        let task = tokio::spawn(async move {
            run_watchdog_to(&name, Duration::from_millis(20), move || {
                flag.load(Ordering::SeqCst)
            })
            .await;
        });

        // Generous waits: on a loaded machine a 20 ms tick can come late.
        let mut fed = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while fed.len() < 3 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            fed.extend(received(&server));
        }
        assert!(fed.len() >= 3, "fed {} times in 5 s", fed.len());
        assert!(fed.iter().all(|m| m == "WATCHDOG=1"), "{fed:?}");

        healthy.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        received(&server); // a tick may have been in flight
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            received(&server),
            Vec::<String>::new(),
            "fed while unhealthy"
        );

        healthy.store(true, Ordering::SeqCst);
        let mut again = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while again.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            again.extend(received(&server));
        }
        assert!(!again.is_empty(), "not fed after recovering");
        task.abort();
    }

    #[tokio::test]
    async fn a_long_step_asks_for_more_time_until_it_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let name = path.to_str().unwrap();
        // A step of ~400 ms, asking every 50 ms for 2 s more.
        let out = extending_timeout_to(
            name,
            Duration::from_millis(50),
            Duration::from_secs(2),
            async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                7
            },
        )
        .await;
        assert_eq!(out, 7);
        let sent = received(&server);
        // At once, then repeatedly (ticks may come late on a loaded machine: at least 2).
        assert!(sent.len() >= 2, "{sent:?}");
        assert!(
            sent.iter().all(|m| m == "EXTEND_TIMEOUT_USEC=2000000"),
            "{sent:?}"
        );
        // Nothing once the step is done.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(received(&server), Vec::<String>::new());

        // A quick step still says so once; a step never waits for a tick.
        let started = std::time::Instant::now();
        extending_timeout_to(name, Duration::from_secs(60), EXTEND_BY, async {}).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(received(&server), ["EXTEND_TIMEOUT_USEC=30000000"]);
    }

    #[tokio::test]
    async fn everything_is_a_no_op_without_notify_socket() {
        // Tests never set NOTIFY_SOCKET; the test runner is not a notify service.
        if std::env::var_os(NOTIFY_SOCKET).is_some() {
            return;
        }
        assert!(!notify("READY=1").unwrap());
        ready();
        status("x");
        assert_eq!(extending_timeout(async { 3 }).await, 3);
        // Returns at once instead of looping.
        tokio::time::timeout(
            Duration::from_secs(1),
            run_watchdog(Duration::from_millis(1), || true),
        )
        .await
        .unwrap();
    }
}
