//! centinela: a terminal-first IoT monitoring and alerting tool in one binary.
//!
//! ```text
//!  sensors (simulators/ | real devices)
//!     │ MQTT publish  sensors/<site>/<device>/<metric>  (number, or JSON)
//!     ▼
//!  broker        embedded rumqttd (default)  |  any external broker
//!     │ in-process link when embedded; rumqttc client when external
//!     ▼
//!  source::mqtt ──► decode (pure) ──► Reading
//!     ▼
//!  engine        rules per series; alert state machine; emits AlertEvent
//!     ├─► store::sqlite     readings (chunks), rollups, alerts, alert state
//!     ├─► store::influx     line protocol batches; replays its backlog (optional)
//!     ├─► notify            outbox ► email | telegram (+ bot) | webhook | mqtt republish
//!     └─► live bus          summaries for the terminal
//! ```
//!
//! # Layout
//! - [`model`]: the plain data that flows (readings, alert events).
//! - [`config`]: TOML config, defaults and validation with file:line:col errors.
//! - [`format`]: numbers and units as people read them, and plain-text tables.
//! - [`broker`]: the embedded MQTT broker.
//! - [`source`]: MQTT in (in-process link or external client) and the pure decoder.
//! - [`engine`]: rule evaluation and the alert lifecycle, pure.
//! - [`store`]: SQLite (chunks, rollups, catalogue, alerts); InfluxDB (line protocol,
//!   durable backlog).
//! - [`notify`]: durable outbox, per-channel workers, email, Telegram (and its bot),
//!   webhook, MQTT republish, `doctor`.
//! - [`service`]: the topology: tasks, bounded channels, shutdown.
//! - [`homeassistant`]: MQTT discovery of alert states for Home Assistant (optional).
//! - [`tui`]: the terminal UI (in-process, or attached through the broker).
//! - [`http`]: the `/metrics` and `/healthz` endpoint (self-monitoring).
//! - [`systemd`]: readiness, reload, stop and watchdog notifications to systemd.
//! - [`cli`]: the `centinela` command.

pub mod backoff;
pub mod bench;
pub mod broker;
pub mod build_info;
pub mod cli;
pub mod clidoc;
pub mod config;
pub mod control;
pub mod engine;
pub mod format;
pub mod homeassistant;
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod limits;
pub mod live;
pub mod logging;
pub mod model;
pub mod notify;
pub mod service;
pub mod shutdown;
pub mod source;
pub mod status;
pub mod store;
pub mod systemd;
pub mod tui;
