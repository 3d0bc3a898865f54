//! A SQLite file in a temporary directory with the project's migrations applied, and
//! alert events to put in it.

use std::path::Path;
use std::time::Duration;

use centinela::config::OutboxConfig;
use centinela::model::{AlertEvent, AlertState, Severity};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub async fn open(path: &Path) -> SqlitePool {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .unwrap();
    sqlx::migrate!().run(&pool).await.unwrap();
    pool
}

/// A retry policy fast enough for tests.
pub fn fast_policy() -> OutboxConfig {
    OutboxConfig {
        backoff_min: centinela::config::Duration::from_millis(100),
        backoff_max: centinela::config::Duration::from_millis(400),
        poll_interval: centinela::config::Duration::from_millis(50),
        ..OutboxConfig::default()
    }
}

pub fn event(series: &str, state: AlertState, value: f64, ts: i64, notify: &[&str]) -> AlertEvent {
    let sign = if state == AlertState::Resolved {
        "≤"
    } else {
        ">"
    };
    AlertEvent {
        rule: "greenhouse-hot".into(),
        series: series.into(),
        state,
        severity: Severity::Critical,
        value: Some(value),
        unit: Some("°C".into()),
        ts,
        message: format!("{series} {value} °C {sign} 30"),
        notify: notify.iter().map(|s| s.to_string()).collect(),
    }
}
