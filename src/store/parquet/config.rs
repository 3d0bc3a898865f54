//! `[output.parquet]`: where the data lake lives and how large a part file may grow.
//!
//! ```toml
//! [output.parquet]
//! dir = "/var/lib/centinela/lake"   # required
//! max_rows = 250000                 # a part file is written early past this many rows
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{key, Invalid};

/// Rows held for one hour before a part file is written early (≈ 50 bytes a row in
/// memory: 250,000 rows ≈ 12 MB).
pub const DEFAULT_MAX_ROWS: usize = 250_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetConfig {
    /// The root of the lake: `dir/date=YYYY-MM-DD/hour=HH/part-N.parquet`.
    pub dir: PathBuf,
    /// A part file is written as soon as its hour holds this many rows, without
    /// waiting for the hour to close.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
}

fn default_max_rows() -> usize {
    DEFAULT_MAX_ROWS
}

impl ParquetConfig {
    pub fn validate(&self) -> Vec<Invalid> {
        let at = |f: &str| [key("output"), key("parquet"), key(f)];
        let mut out = Vec::new();
        if self.dir.as_os_str().is_empty() {
            out.push(Invalid::new(&at("dir"), "must name a folder"));
        }
        if self.max_rows == 0 {
            out.push(Invalid::new(&at("max_rows"), "must be at least 1"));
        }
        out
    }
}
