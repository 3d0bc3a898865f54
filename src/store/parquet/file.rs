//! One part file: readings encoded as Parquet (pure, into any `Write`), and written
//! atomically into its hour's partition.
//!
//! Schema (one row per reading, sorted by series then time):
//!
//! ```text
//! message reading {
//!   required binary series (STRING);
//!   required int64  ts (TIMESTAMP(MILLIS,true));   -- UTC
//!   required double value;
//!   optional binary unit (STRING);
//! }
//! ```
//!
//! Atomic: the file is written as `.part-N.parquet.tmp`, synced, then linked to
//! `part-N.parquet` (a link fails instead of replacing a file that exists, so two
//! writers never overwrite each other's part) and the temporary name removed. Readers
//! that glob `*.parquet` never see half a file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{Compression, GzipLevel};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::model::{Reading, Timestamp};

pub const HOUR_MS: i64 = 3_600_000;

const SCHEMA: &str = "message reading {
  required binary series (STRING);
  required int64 ts (TIMESTAMP(MILLIS,true));
  required double value;
  optional binary unit (STRING);
}";

/// Why a part file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: cannot encode Parquet: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
}

/// The start of the UTC hour `ts` falls in.
pub fn hour_of(ts: Timestamp) -> Timestamp {
    ts.div_euclid(HOUR_MS) * HOUR_MS
}

/// `root/date=YYYY-MM-DD/hour=HH` for the hour starting at `hour`.
pub fn partition(root: &Path, hour: Timestamp) -> PathBuf {
    let (date, hh) = match chrono::DateTime::from_timestamp_millis(hour) {
        Some(t) => (t.format("%Y-%m-%d").to_string(), t.format("%H").to_string()),
        // Beyond chrono's range (±262,000 years): still a folder of its own.
        None => (format!("ms{hour}"), "00".to_string()),
    };
    root.join(format!("date={date}")).join(format!("hour={hh}"))
}

/// Encodes `rows` (in the order given) as one Parquet file with one row group.
pub fn encode<W: Write + Send>(out: W, rows: &[Reading]) -> parquet::errors::Result<()> {
    // The schema is a constant: parsing it cannot fail (see the test).
    let schema = Arc::new(parse_message_type(SCHEMA)?);
    let props = WriterProperties::builder()
        .set_compression(Compression::GZIP(GzipLevel::default()))
        .set_created_by(format!("centinela {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut w = SerializedFileWriter::new(out, schema, Arc::new(props))?;
    let mut rg = w.next_row_group()?;
    let mut column = 0;
    while let Some(mut col) = rg.next_column()? {
        match column {
            0 => {
                let v: Vec<ByteArray> = rows
                    .iter()
                    .map(|r| ByteArray::from(r.series.as_bytes().to_vec()))
                    .collect();
                col.typed::<ByteArrayType>().write_batch(&v, None, None)?;
            }
            1 => {
                let v: Vec<i64> = rows.iter().map(|r| r.ts).collect();
                col.typed::<Int64Type>().write_batch(&v, None, None)?;
            }
            2 => {
                let v: Vec<f64> = rows.iter().map(|r| r.value).collect();
                col.typed::<DoubleType>().write_batch(&v, None, None)?;
            }
            _ => {
                let def: Vec<i16> = rows.iter().map(|r| i16::from(r.unit.is_some())).collect();
                let v: Vec<ByteArray> = rows
                    .iter()
                    .filter_map(|r| r.unit.as_ref())
                    .map(|u| ByteArray::from(u.as_bytes().to_vec()))
                    .collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&v, Some(&def), None)?;
            }
        }
        col.close()?;
        column += 1;
    }
    rg.close()?;
    w.close()?;
    Ok(())
}

/// Writes `rows` (all of the hour starting at `hour`) as the next part file of that
/// hour's partition under `root`, sorted by series then time. Returns its path.
/// Blocking: call it from a blocking thread.
pub fn write_part(root: &Path, hour: Timestamp, rows: &mut [Reading]) -> Result<PathBuf, PartError> {
    let dir = partition(root, hour);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PartError::Io { path, source }
    };
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    rows.sort_by(|a, b| a.series.cmp(&b.series).then(a.ts.cmp(&b.ts)));
    let mut n = next_part(&dir).map_err(io_err(&dir))?;
    let tmp = dir.join(format!(".part-{n}.parquet.tmp"));
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut buf = io::BufWriter::new(file);
    let written = encode(&mut buf, rows)
        .map_err(|source| PartError::Encode {
            path: tmp.clone(),
            source,
        })
        .and_then(|()| {
            let file = buf
                .into_inner()
                .map_err(|e| io_err(&tmp)(e.into_error()))?;
            file.sync_all().map_err(io_err(&tmp))
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let path = loop {
        let path = dir.join(format!("part-{n}.parquet"));
        match fs::hard_link(&tmp, &path) {
            Ok(()) => break path,
            // Another writer took this number meanwhile: the next one.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(io_err(&path)(e));
            }
        }
    };
    fs::remove_file(&tmp).map_err(io_err(&tmp))?;
    // The new name must survive a power cut too.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&dir))?;
    Ok(path)
}

/// One more than the highest `part-N.parquet` in `dir` (0 when there is none).
fn next_part(dir: &Path) -> io::Result<u64> {
    let mut next = 0;
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let n = name
            .to_str()
            .and_then(|s| s.strip_prefix("part-"))
            .and_then(|s| s.strip_suffix(".parquet"))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(n) = n {
            next = next.max(n + 1);
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(series: &str, ts: i64, value: f64, unit: Option<&str>) -> Reading {
        Reading {
            series: Arc::from(series),
            value,
            ts,
            unit: unit.map(Arc::from),
        }
    }

    #[test]
    fn the_schema_parses() {
        parse_message_type(SCHEMA).unwrap();
    }

    #[test]
    fn hours_and_partitions_are_utc() {
        // 2026-12-01T22:59:59.999Z and the next millisecond.
        let t = 1_796_165_999_999;
        assert_eq!(hour_of(t), 1_796_162_400_000);
        assert_eq!(hour_of(t + 1), 1_796_166_000_000);
        assert_eq!(
            partition(Path::new("/lake"), hour_of(t)),
            Path::new("/lake/date=2026-12-01/hour=22")
        );
        assert_eq!(
            partition(Path::new("/lake"), hour_of(t + 1)),
            Path::new("/lake/date=2026-12-01/hour=23")
        );
        assert_eq!(hour_of(-1), -HOUR_MS);
        assert_eq!(
            partition(Path::new("l"), hour_of(-1)),
            Path::new("l/date=1969-12-31/hour=23")
        );
    }

    #[test]
    fn parts_are_numbered_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let hour = 1_796_162_400_000;
        let mut rows = vec![
            r("b/x", hour + 2, 2.0, None),
            r("a/x", hour + 1, 1.0, Some("°C")),
        ];
        let p0 = write_part(dir.path(), hour, &mut rows).unwrap();
        let p1 = write_part(dir.path(), hour, &mut rows).unwrap();
        assert!(p0.ends_with("date=2026-12-01/hour=22/part-0.parquet"), "{p0:?}");
        assert!(p1.ends_with("date=2026-12-01/hour=22/part-1.parquet"), "{p1:?}");
        // Sorted by series, then time.
        assert_eq!(&*rows[0].series, "a/x");
        let names: Vec<String> = fs::read_dir(p0.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
        let bytes = fs::read(&p0).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        assert_eq!(&bytes[bytes.len() - 4..], b"PAR1");
    }

    #[test]
    fn a_folder_that_cannot_be_made_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let e = write_part(&blocker, 0, &mut [r("a", 1, 1.0, None)]).unwrap_err();
        assert!(e.to_string().contains("date=1970-01-01"), "{e}");
    }
}
