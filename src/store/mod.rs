//! Storage stages downstream of the engine.
//!
//! - [`influx`]: the optional InfluxDB sink (line protocol over HTTP, durable backlog).

pub mod influx;
