//! `[output.parquet]`: where the data lake lives, how it is cut into files, and how
//! much it may hold in memory while the folder cannot be written.
//!
//! ```toml
//! [output.parquet]
//! dir = "/var/lib/centinela/lake"   # required
//! partition = "hour"                # or "day": date=YYYY-MM-DD[/hour=HH] folders
//! flush_interval = "5m"             # a part file is closed at least this often
//! max_rows = 250000                 # ... or as soon as it holds this many readings
//! compression = "snappy"            # or "gzip", "none"
//! max_buffered_rows = 1000000       # held while writes fail; the oldest go past it
//! compact = true                    # merge a closed partition's part files into one
//! ```
//!
//! `compact`: once a partition has ended (and twice `flush_interval` more, at least
//! 5 s, for its last and late part files), its part files are merged into one file
//! (several past `max_rows`) and swapped in atomically, so a day is 24 files instead of
//! 288 (see [`super::compact`]). Off, every flush stays a file of its own.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{key, Duration, Invalid};

/// How the files are spread over folders: one folder per UTC hour or per UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Partition {
    /// `date=YYYY-MM-DD/hour=HH`
    #[default]
    Hour,
    /// `date=YYYY-MM-DD`
    Day,
}

impl Partition {
    /// The length of one partition, in ms.
    pub fn period_ms(self) -> i64 {
        match self {
            Partition::Hour => 3_600_000,
            Partition::Day => 86_400_000,
        }
    }

    /// The start of the partition `ts` falls in (UTC).
    pub fn start_of(self, ts: i64) -> i64 {
        ts.div_euclid(self.period_ms()) * self.period_ms()
    }
}

/// How the column data in a part file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Fast, the usual choice of Spark and pyarrow.
    #[default]
    Snappy,
    /// Smaller files, more CPU.
    Gzip,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetConfig {
    /// The root of the lake: `dir/readings/…` and `dir/alerts/…`.
    pub dir: PathBuf,
    pub partition: Partition,
    /// The longest a reading waits in memory before its part file is closed: what a
    /// crash (power cut, kill -9) can cost the lake. SQLite has those readings all the
    /// same (`centinela export --parquet` writes them).
    pub flush_interval: Duration,
    /// A part file is closed early once this many readings wait.
    pub max_rows: usize,
    pub compression: Codec,
    /// Readings held in memory while the folder cannot be written (a full disk, a
    /// read-only mount), retried meanwhile; past this the oldest are dropped, counted
    /// and logged. About 50 bytes each.
    pub max_buffered_rows: usize,
    /// Merge the part files of closed partitions into one (atomically swapped in).
    pub compact: bool,
}

impl Default for ParquetConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            partition: Partition::Hour,
            flush_interval: Duration::from_secs(300),
            max_rows: 250_000,
            compression: Codec::Snappy,
            max_buffered_rows: 1_000_000,
            compact: true,
        }
    }
}

impl ParquetConfig {
    /// How files are laid out and encoded.
    pub fn layout(&self) -> super::Layout {
        super::Layout {
            partition: self.partition,
            codec: self.compression,
            max_rows: self.max_rows,
        }
    }

    pub fn validate(&self) -> Vec<Invalid> {
        let at = |f: &str| [key("output"), key("parquet"), key(f)];
        let mut out = Vec::new();
        if self.dir.as_os_str().is_empty() {
            out.push(Invalid::new(
                &at("dir"),
                "must name a folder, e.g. dir = \"/var/lib/centinela/lake\"",
            ));
        }
        if self.flush_interval.is_zero() {
            out.push(Invalid::new(
                &at("flush_interval"),
                "must be longer than zero",
            ));
        }
        if self.max_rows == 0 {
            out.push(Invalid::new(&at("max_rows"), "must be at least 1"));
        }
        if self.max_buffered_rows < self.max_rows {
            out.push(Invalid::new(
                &at("max_buffered_rows"),
                format!("must be at least max_rows ({})", self.max_rows),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_dir_is_enough_and_the_defaults_hold() {
        let cfg = Config::parse("[output.parquet]\ndir = \"/lake\"\n", "c.toml").unwrap();
        let p = cfg.output.parquet.unwrap();
        assert_eq!(p.dir, std::path::Path::new("/lake"));
        assert_eq!(p.partition, super::Partition::Hour);
        assert_eq!(p.flush_interval.std().as_secs(), 300);
        assert_eq!(p.compression, super::Codec::Snappy);
        assert!(p.compact);
        assert!(Config::parse("", "c.toml")
            .unwrap()
            .output
            .parquet
            .is_none());
    }

    #[test]
    fn mistakes_name_the_field() {
        let e = Config::parse("[output.parquet]\nflush_interval = \"0s\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("output.parquet.dir"), "{e}");
        let e = Config::parse(
            "[output.parquet]\ndir = \"l\"\nflush_interval = \"0s\"\n",
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("c.toml:3:"), "{e}");
        assert!(e.contains("output.parquet.flush_interval"), "{e}");
        let e = Config::parse(
            "[output.parquet]\ndir = \"l\"\ncompression = \"lzo\"\n",
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("compression"), "{e}");
    }

    #[test]
    fn the_commented_example_in_the_default_file_works_once_uncommented() {
        let text = crate::config::DEFAULT_TOML;
        let start = text.find("# [output.parquet]").unwrap();
        let block: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let cfg = Config::parse(&block, "default").unwrap();
        let p = cfg.output.parquet.unwrap();
        assert_eq!(p.dir, std::path::Path::new("/var/lib/centinela/lake"));
        assert_eq!(p.max_buffered_rows, 1_000_000);
    }

    #[test]
    fn partitions_start_on_utc_boundaries() {
        use super::Partition::{Day, Hour};
        assert_eq!(Hour.start_of(3_600_000 * 5 + 1), 3_600_000 * 5);
        assert_eq!(Day.start_of(86_400_000 + 5), 86_400_000);
        assert_eq!(Hour.start_of(-1), -3_600_000);
    }
}
