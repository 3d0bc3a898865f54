//! Source: MQTT messages in, readings out. [`decode`] is the pure part; [`mqtt`] reads
//! from the embedded broker's in-process link or from an external broker.

pub mod decode;
pub mod mqtt;
