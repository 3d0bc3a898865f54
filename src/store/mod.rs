//! Storage stages downstream of the engine.
//!
//! - [`sqlite`]: always on: readings as chunks ([`chunk`] is the pure codec), rollups,
//!   the series catalogue, alerts history and alert state.
//! - [`influx`]: the optional InfluxDB sink (line protocol over HTTP, durable backlog).

pub mod backup;
pub mod chunk;
pub mod influx;
pub mod sqlite;
