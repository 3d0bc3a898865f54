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
//!     ├─► notify            outbox ► email | telegram (+ bot) | webhook | mqtt republish
//!     └─► live bus          summaries for the terminal
//! ```
//!
//! # Layout
//! - [`model`]: the plain data that flows (readings, alert events).
//! - [`config`]: TOML config, defaults and validation with file:line:col errors.
//! - [`broker`]: the embedded MQTT broker.
//! - [`source`]: MQTT in (in-process link or external client) and the pure decoder.
//! - [`engine`]: rule evaluation and the alert lifecycle, pure.
//! - [`store`]: SQLite (chunks, rollups, catalogue, alerts).
//! - [`notify`]: durable outbox, per-channel workers, email, Telegram (and its bot),
//!   webhook, MQTT republish, `doctor`.
//! - [`service`]: the topology: tasks, bounded channels, shutdown.
//! - [`cli`]: the `centinela` command.

pub mod config;
pub mod model;
pub mod notify;
