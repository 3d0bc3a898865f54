//! Simulated IoT sensors for centinela: realistic readings, scheduled faults, and an
//! MQTT publisher.
//!
//! This crate sits at the very start of the stream — it plays the part of the devices:
//!
//! ```text
//!  scenario (TOML) ─► Simulator::tick(now) ─► Message{topic,payload} ─► publish() ─► MQTT broker
//!                       models + faults          (pure, seeded)           (rumqttc)      │
//!                                                                                       ▼
//!                                                              centinela: decode ► engine ► stores …
//! ```
//!
//! # Layout
//!
//! - [`scenario`]: the TOML format, the embedded scenarios, checks.
//! - [`models`]: what a healthy sensor of each kind reads at a given time.
//! - [`sim`]: the pure core — scenario + seed + time in, messages out, faults applied.
//! - [`publish`]: the async shell that sends those messages to a broker.
//! - [`broker_url`]: the broker address type (`mqtt://`, `mqtts://`) and its TLS files,
//!   shared with the service.
//! - [`cli`]: [`SimulateArgs`] and [`run`], shared by `centinela-sim` and `centinela simulate`.

pub mod broker_url;
pub mod cli;
pub mod models;
pub mod publish;
pub mod scenario;
pub mod sim;

pub use broker_url::{BrokerUrl, Tls};
pub use cli::{exit_code, run, SimulateArgs};
pub use publish::{publish, PublishError, PublishOptions, PublishStats};
pub use scenario::{
    FaultKind, Format, Malformed, Scenario, ScenarioError, SensorKind, DEFAULT_SCENARIO,
};
pub use sim::{FaultWindow, Message, Simulator};
