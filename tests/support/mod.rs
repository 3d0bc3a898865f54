//! Helpers shared by the integration tests: real servers on free loopback ports.
#![allow(dead_code)]

pub mod clock;
pub mod http;
pub mod mqtt;
