//! Source: MQTT messages in, readings out. [`decode`] is the pure part, with
//! [`map`] (topic mappings, JSON flattening), [`line`] (InfluxDB line protocol) and
//! [`name`] (which series names and units are accepted); [`mqtt`] reads from the
//! embedded broker's in-process link or from an external broker.
//! [`csv`] reads the `series,ts,value` files that `replay --csv` judges.

pub mod csv;
pub mod decode;
mod external;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod line;
pub mod map;
pub mod mqtt;
pub mod name;
