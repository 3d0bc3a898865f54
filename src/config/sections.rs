//! The small sections, each a serde struct with its defaults: `[storage]` (SQLite, its
//! retention and deadband), `[engine]`, `[log]`, `[http]` and `[homeassistant]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Duration, InfluxConfig};

/// `[homeassistant]`: alert states as Home Assistant entities, by MQTT discovery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantConfig {
    /// Publish the discovery messages (one `binary_sensor` per rule and per alert).
    pub discovery: bool,
    /// Home Assistant's discovery prefix.
    pub prefix: String,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        Self {
            discovery: true,
            prefix: "homeassistant".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub sqlite: SqliteConfig,
    /// Optional second store; absent means no InfluxDB.
    pub influxdb: Option<InfluxConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub flush_interval: Duration,
    /// Raw readings older than this are deleted.
    pub retention: Duration,
    /// Per-minute rollups are kept this long.
    pub rollup_retention: Duration,
    /// Store a reading only when it moved enough or enough time passed (first match
    /// wins); rollups and rules still see every reading.
    pub deadband: Vec<DeadbandConfig>,
}

/// `[[storage.sqlite.deadband]]`: spares the SD card readings that say nothing new.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadbandConfig {
    /// Series pattern (MQTT wildcards).
    pub series: String,
    /// Store when the value moved more than this from the last stored one…
    pub delta: f64,
    /// …or when this long passed since it (so a flat line still shows).
    #[serde(default = "default_max_interval")]
    pub max_interval: Duration,
}

fn default_max_interval() -> Duration {
    Duration::from_secs(300)
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: "/var/lib/centinela/centinela.db".into(),
            flush_interval: Duration::from_secs(2),
            retention: Duration::from_secs(30 * 86_400),
            rollup_retention: Duration::from_secs(365 * 86_400),
            deadband: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// More than `flap_transitions` transitions within `flap_window` make an alert flap
    /// (0 turns flapping detection off).
    pub flap_transitions: u32,
    pub flap_window: Duration,
    /// How often wall-clock checks run: deadman, repeat, the end of silences and of
    /// flapping. (`for` runs on event time, when readings arrive.)
    pub tick: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            flap_transitions: 6,
            flap_window: Duration::from_secs(600),
            tick: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `centinela=debug`, …; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the `/metrics` and `/healthz` endpoint.
    pub listen: SocketAddr,
    /// Listening on a non-loopback address must be asked for: the figures tell a lot
    /// about the site and the endpoint has no authentication.
    pub allow_remote: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9184)),
            allow_remote: false,
        }
    }
}
