//! Storage stages: SQLite (always on) and its pure chunk codec.

pub mod chunk;
pub mod sqlite;
