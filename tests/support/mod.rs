//! Helpers shared by the integration tests: real servers on free loopback ports, the
//! binary as a user runs it, and stand-ins for the services notifications go to.
#![expect(
    dead_code,
    reason = "one module for every test; none uses all of it (so this always holds)"
)]

pub mod clock;
pub mod grafana;
pub mod http;
pub mod influx_servers;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod lake;
pub mod mqtt;
pub mod notify_db;
pub mod process;
pub mod smtp_server;
pub mod telegram_standin;
pub mod tui_fixture;
pub mod webhook;
