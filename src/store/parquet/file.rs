//! Part files: rows encoded as Parquet (into any `Write`), and written atomically into
//! their partition folder. Blocking: called from a blocking thread.
//!
//! ```text
//! dir/readings/date=2026-12-02/hour=01/part-1796173200123-4242-0.parquet
//!     required binary series (STRING); required int64 ts (TIMESTAMP(MILLIS,true));
//!     required double value; optional binary unit (STRING)
//! dir/alerts/date=2026-12-02/hour=01/part-….parquet
//!     ts, rule, series, state, severity, optional value, optional unit, message
//! ```
//!
//! Rows are sorted by series then time within a file (good for compression and for the
//! min/max statistics readers skip pages with). A file is written as `.part-….tmp`,
//! synced, renamed to its final name and the folder synced: a reader that globs
//! `*.parquet` sees whole files only, and a renamed file survives a power cut. Names
//! carry the write time, the process id and a counter, so two writers (the service and
//! `centinela export`) never replace each other's files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parquet::basic::{Compression, GzipLevel};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::errors::{ParquetError, Result as PqResult};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{
    SerializedColumnWriter, SerializedFileWriter, SerializedRowGroupWriter,
};
use parquet::record::{Field, Row};
use parquet::schema::parser::parse_message_type;

use super::config::{Codec, Partition};
use crate::model::{AlertEvent, Reading, Timestamp};

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
        source: ParquetError,
    },
    #[error("{path}: cannot read it as a part file: {why}")]
    Read { path: PathBuf, why: String },
}

/// How files are laid out and encoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Layout {
    pub partition: Partition,
    pub codec: Codec,
    /// Rows in one file at most; more make further files in the same folder.
    pub max_rows: usize,
}

/// One part file written.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    /// The start of the partition it belongs to.
    pub start: Timestamp,
    pub rows: usize,
    pub bytes: u64,
}

/// A kind of row the lake holds: its folder, its schema and how its columns are written.
pub trait Table: Clone + Send + 'static {
    /// The folder under the lake's root.
    const NAME: &'static str;
    /// The Parquet message type.
    const SCHEMA: &'static str;
    fn ts(&self) -> Timestamp;
    /// The order within a file.
    fn cmp_rows(a: &Self, b: &Self) -> std::cmp::Ordering;
    fn write_columns<W: Write + Send>(
        rows: &[Self],
        rg: &mut SerializedRowGroupWriter<'_, W>,
    ) -> PqResult<()>;
    /// What makes a row the same row in two files (an export does not add it twice).
    type Key: std::hash::Hash + Eq + Send;
    fn key(&self) -> Self::Key;
    /// A row read back from a part file (columns by name, so any order is fine).
    fn from_row(row: &Row, names: &mut Names) -> Result<Self, String>;
}

/// Strings read back from files, shared: a partition repeats a few series names.
#[derive(Debug, Default)]
pub struct Names(std::collections::HashSet<Arc<str>>);

impl Names {
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        // Bounded: a hostile file with a million distinct strings shares nothing.
        if self.0.len() < 100_000 {
            self.0.insert(a.clone());
        }
        a
    }
}

/// The columns of a row read back, by name.
struct Cols<'a>(&'a Row);

impl Cols<'_> {
    fn field(&self, name: &str) -> Result<&Field, String> {
        self.0
            .get_column_iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, f)| f)
            .ok_or_else(|| format!("no column {name}"))
    }

    fn str(&self, name: &str, names: &mut Names) -> Result<Arc<str>, String> {
        self.opt_str(name, names)?
            .ok_or_else(|| format!("column {name} is null"))
    }

    fn opt_str(&self, name: &str, names: &mut Names) -> Result<Option<Arc<str>>, String> {
        match self.field(name)? {
            Field::Str(s) => Ok(Some(names.get(s))),
            Field::Null => Ok(None),
            f => Err(format!("column {name} holds {f:?}, not a string")),
        }
    }

    fn ts(&self, name: &str) -> Result<Timestamp, String> {
        match self.field(name)? {
            Field::TimestampMillis(t) | Field::Long(t) => Ok(*t),
            f => Err(format!("column {name} holds {f:?}, not a timestamp in ms")),
        }
    }

    fn opt_double(&self, name: &str) -> Result<Option<f64>, String> {
        match self.field(name)? {
            Field::Double(v) => Ok(Some(*v)),
            Field::Null => Ok(None),
            f => Err(format!("column {name} holds {f:?}, not a double")),
        }
    }
}

impl Table for Reading {
    const NAME: &'static str = "readings";
    const SCHEMA: &'static str = "message reading {
        required binary series (STRING);
        required int64 ts (TIMESTAMP(MILLIS,true));
        required double value;
        optional binary unit (STRING);
    }";

    fn ts(&self) -> Timestamp {
        self.ts
    }

    fn cmp_rows(a: &Self, b: &Self) -> std::cmp::Ordering {
        a.series.cmp(&b.series).then(a.ts.cmp(&b.ts))
    }

    fn write_columns<W: Write + Send>(
        rows: &[Self],
        rg: &mut SerializedRowGroupWriter<'_, W>,
    ) -> PqResult<()> {
        column(rg, |c| {
            strings(c, rows.iter().map(|r| Some(&*r.series)), false)
        })?;
        column(rg, |c| times(c, rows.iter().map(|r| r.ts)))?;
        column(rg, |c| {
            doubles(c, rows.iter().map(|r| Some(r.value)), false)
        })?;
        column(rg, |c| {
            strings(c, rows.iter().map(|r| r.unit.as_deref()), true)
        })
    }

    type Key = (Arc<str>, Timestamp);

    fn key(&self) -> Self::Key {
        (self.series.clone(), self.ts)
    }

    fn from_row(row: &Row, names: &mut Names) -> Result<Self, String> {
        let c = Cols(row);
        Ok(Reading {
            series: c.str("series", names)?,
            ts: c.ts("ts")?,
            value: c
                .opt_double("value")?
                .ok_or_else(|| "column value is null".to_string())?,
            unit: c.opt_str("unit", names)?,
        })
    }
}

/// An alert event as the lake stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub ts: Timestamp,
    pub rule: Arc<str>,
    pub series: Arc<str>,
    pub state: Arc<str>,
    pub severity: Arc<str>,
    pub value: Option<f64>,
    pub unit: Option<Arc<str>>,
    pub message: Arc<str>,
}

impl From<&AlertEvent> for EventRow {
    fn from(e: &AlertEvent) -> Self {
        EventRow {
            ts: e.ts,
            rule: e.rule.as_str().into(),
            series: e.series.as_str().into(),
            state: e.state.as_str().into(),
            severity: e.severity.as_str().into(),
            value: e.value,
            unit: e.unit.as_deref().map(Arc::from),
            message: e.message.as_str().into(),
        }
    }
}

impl Table for EventRow {
    const NAME: &'static str = "alerts";
    const SCHEMA: &'static str = "message alert {
        required int64 ts (TIMESTAMP(MILLIS,true));
        required binary rule (STRING);
        required binary series (STRING);
        required binary state (STRING);
        required binary severity (STRING);
        optional double value;
        optional binary unit (STRING);
        required binary message (STRING);
    }";

    fn ts(&self) -> Timestamp {
        self.ts
    }

    fn cmp_rows(a: &Self, b: &Self) -> std::cmp::Ordering {
        a.ts.cmp(&b.ts)
    }

    fn write_columns<W: Write + Send>(
        rows: &[Self],
        rg: &mut SerializedRowGroupWriter<'_, W>,
    ) -> PqResult<()> {
        column(rg, |c| times(c, rows.iter().map(|r| r.ts)))?;
        column(rg, |c| {
            strings(c, rows.iter().map(|r| Some(&*r.rule)), false)
        })?;
        column(rg, |c| {
            strings(c, rows.iter().map(|r| Some(&*r.series)), false)
        })?;
        column(rg, |c| {
            strings(c, rows.iter().map(|r| Some(&*r.state)), false)
        })?;
        column(rg, |c| {
            strings(c, rows.iter().map(|r| Some(&*r.severity)), false)
        })?;
        column(rg, |c| doubles(c, rows.iter().map(|r| r.value), true))?;
        column(rg, |c| {
            strings(c, rows.iter().map(|r| r.unit.as_deref()), true)
        })?;
        column(rg, |c| {
            strings(c, rows.iter().map(|r| Some(&*r.message)), false)
        })
    }

    /// An event is one state change of one alert at one time.
    type Key = (Timestamp, Arc<str>, Arc<str>, Arc<str>);

    fn key(&self) -> Self::Key {
        (
            self.ts,
            self.rule.clone(),
            self.series.clone(),
            self.state.clone(),
        )
    }

    fn from_row(row: &Row, names: &mut Names) -> Result<Self, String> {
        let c = Cols(row);
        Ok(EventRow {
            ts: c.ts("ts")?,
            rule: c.str("rule", names)?,
            series: c.str("series", names)?,
            state: c.str("state", names)?,
            severity: c.str("severity", names)?,
            value: c.opt_double("value")?,
            unit: c.opt_str("unit", names)?,
            message: c.str("message", names)?,
        })
    }
}

/// The next column of `rg`, written by `f` and closed.
fn column<W: Write + Send>(
    rg: &mut SerializedRowGroupWriter<'_, W>,
    f: impl FnOnce(&mut SerializedColumnWriter<'_>) -> PqResult<()>,
) -> PqResult<()> {
    let mut col = rg
        .next_column()?
        .ok_or_else(|| ParquetError::General("fewer columns in the schema than written".into()))?;
    f(&mut col)?;
    col.close()
}

/// Definition levels for an optional column (1 = present), and the values present.
fn levels<T>(values: impl Iterator<Item = Option<T>>) -> (Vec<i16>, Vec<T>) {
    let mut def = Vec::new();
    let mut present = Vec::new();
    for v in values {
        def.push(i16::from(v.is_some()));
        present.extend(v);
    }
    (def, present)
}

fn strings<'a>(
    col: &mut SerializedColumnWriter<'_>,
    values: impl Iterator<Item = Option<&'a str>>,
    optional: bool,
) -> PqResult<()> {
    let (def, present) = levels(values.map(|v| v.map(ByteArray::from)));
    let def = optional.then_some(def.as_slice());
    col.typed::<ByteArrayType>()
        .write_batch(&present, def, None)?;
    Ok(())
}

fn doubles(
    col: &mut SerializedColumnWriter<'_>,
    values: impl Iterator<Item = Option<f64>>,
    optional: bool,
) -> PqResult<()> {
    let (def, present) = levels(values);
    let def = optional.then_some(def.as_slice());
    col.typed::<DoubleType>().write_batch(&present, def, None)?;
    Ok(())
}

fn times(col: &mut SerializedColumnWriter<'_>, values: impl Iterator<Item = i64>) -> PqResult<()> {
    let v: Vec<i64> = values.collect();
    col.typed::<Int64Type>().write_batch(&v, None, None)?;
    Ok(())
}

/// Encodes `rows` (in the order given) as one Parquet file with one row group.
pub fn encode<T: Table, W: Write + Send>(out: W, rows: &[T], codec: Codec) -> PqResult<()> {
    let schema = Arc::new(parse_message_type(T::SCHEMA)?);
    let compression = match codec {
        Codec::Snappy => Compression::SNAPPY,
        Codec::Gzip => Compression::GZIP(GzipLevel::default()),
        Codec::None => Compression::UNCOMPRESSED,
    };
    let props = WriterProperties::builder()
        .set_compression(compression)
        .set_created_by(format!("centinela {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut w = SerializedFileWriter::new(out, schema, Arc::new(props))?;
    let mut rg = w.next_row_group()?;
    T::write_columns(rows, &mut rg)?;
    rg.close()?;
    w.close()?;
    Ok(())
}

/// `root/<table>/date=YYYY-MM-DD[/hour=HH]` for the partition starting at `start`.
pub fn partition_dir(root: &Path, table: &str, partition: Partition, start: Timestamp) -> PathBuf {
    let dir = root.join(table);
    match chrono::DateTime::from_timestamp_millis(start) {
        Some(t) => {
            let dir = dir.join(format!("date={}", t.format("%Y-%m-%d")));
            match partition {
                Partition::Hour => dir.join(format!("hour={}", t.format("%H"))),
                Partition::Day => dir,
            }
        }
        // Beyond chrono's range (±262,000 years): still a folder of its own.
        None => dir.join(format!("date=ms{start}")),
    }
}

/// Makes `dir` and its missing parents, syncing each parent that got a new entry, so
/// the folders of a renamed file survive a power cut too.
fn create_dirs_synced(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.exists() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => break,
        }
    }
    fs::create_dir_all(dir)?;
    for m in missing.iter().rev() {
        if let Some(parent) = m.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

/// Per-process counter in file names.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `rows` (all of the partition starting at `start`) as one new part file, sorted
/// as the table wants. Returns what was written.
pub fn write_part<T: Table>(
    root: &Path,
    layout: &Layout,
    start: Timestamp,
    rows: &mut [T],
) -> Result<Written, PartError> {
    let dir = partition_dir(root, T::NAME, layout.partition, start);
    create_dirs_synced(&dir).map_err(io_err(&dir))?;
    rows.sort_by(T::cmp_rows);
    let (path, bytes) = write_file(&dir, "part", rows, layout.codec)?;
    Ok(Written {
        path,
        start,
        rows: rows.len(),
        bytes,
    })
}

/// A closure turning an I/O error into a [`PartError`] naming `path`.
pub(super) fn io_err(path: &Path) -> impl Fn(io::Error) -> PartError {
    let path = path.to_path_buf();
    move |source| PartError::Io {
        path: path.clone(),
        source,
    }
}

/// A new file name in a folder: `<prefix>-<ms>-<pid>-<n>.parquet`, unique across
/// processes and within one.
pub(super) fn file_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}-{}.parquet",
        crate::model::now_ms(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `rows` (in the order given) as a new file `<prefix>-….parquet` in the
/// existing folder `dir`: a temporary file, synced, renamed, the folder synced.
/// Returns its path and size.
pub(super) fn write_file<T: Table>(
    dir: &Path,
    prefix: &str,
    rows: &[T],
    codec: Codec,
) -> Result<(PathBuf, u64), PartError> {
    let name = file_name(prefix);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = (|| {
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut buf = io::BufWriter::with_capacity(256 * 1024, file);
        encode(&mut buf, rows, codec).map_err(|source| match source {
            // A full disk comes back from the encoder as an I/O error: name it as such.
            ParquetError::External(e) => match e.downcast::<io::Error>() {
                Ok(e) => io_err(&tmp)(*e),
                Err(e) => PartError::Encode {
                    path: tmp.clone(),
                    source: ParquetError::External(e),
                },
            },
            source => PartError::Encode {
                path: tmp.clone(),
                source,
            },
        })?;
        let file = buf.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
        let bytes = file.metadata().map_err(io_err(&tmp))?.len();
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(dir).map_err(io_err(dir))?;
        Ok(bytes)
    })();
    match written {
        Ok(bytes) => Ok((path, bytes)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Syncs a folder, so the entries made or removed in it survive a power cut.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What [`write_all`] did: the files written and, if one failed, why and the rows
/// that were not written (to be tried again).
pub struct Outcome<T> {
    pub written: Vec<Written>,
    pub failed: Option<(PartError, Vec<T>)>,
}

/// Writes `rows` as one part file per partition they fall in (more when a partition
/// holds over `max_rows`). Stops at the first failure and hands back what is left.
pub fn write_all<T: Table>(root: &Path, layout: &Layout, rows: Vec<T>) -> Outcome<T> {
    let mut by_part: std::collections::BTreeMap<Timestamp, Vec<T>> = Default::default();
    for r in rows {
        by_part
            .entry(layout.partition.start_of(r.ts()))
            .or_default()
            .push(r);
    }
    let mut written = Vec::new();
    let max = layout.max_rows.max(1);
    let mut parts = by_part.into_iter();
    while let Some((start, mut rows)) = parts.next() {
        let mut done = 0;
        while done < rows.len() {
            let end = (done + max).min(rows.len());
            match write_part(root, layout, start, &mut rows[done..end]) {
                Ok(w) => written.push(w),
                Err(e) => {
                    let mut left: Vec<T> = rows.split_off(done);
                    left.extend(parts.flat_map(|(_, r)| r));
                    return Outcome {
                        written,
                        failed: Some((e, left)),
                    };
                }
            }
            done = end;
        }
    }
    Outcome {
        written,
        failed: None,
    }
}

/// Removes temporary files older than `age` under `root` (left by a crash mid-write).
/// Returns how many it removed.
pub fn remove_stale_temps(root: &Path, age: std::time::Duration) -> usize {
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    // Bounded: a lake has a few folders per partition; stop after a generous count.
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        seen += 1;
        if seen > 100_000 {
            break;
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let name = e.file_name();
            let name = name.to_string_lossy();
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|a| a >= age);
            if name.starts_with(".part-") && name.ends_with(".parquet.tmp") && old {
                removed += usize::from(fs::remove_file(&path).is_ok());
            }
        }
    }
    removed
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
    fn the_schemas_parse() {
        parse_message_type(<Reading as Table>::SCHEMA).unwrap();
        parse_message_type(<EventRow as Table>::SCHEMA).unwrap();
    }

    #[test]
    fn partitions_are_utc_folders() {
        // 2026-12-01T22:59:59.999Z and the next millisecond.
        let t = 1_796_165_999_999;
        let hour = |ts| Partition::Hour.start_of(ts);
        assert_eq!(
            partition_dir(Path::new("/lake"), "readings", Partition::Hour, hour(t)),
            Path::new("/lake/readings/date=2026-12-01/hour=22")
        );
        assert_eq!(
            partition_dir(Path::new("/lake"), "readings", Partition::Hour, hour(t + 1)),
            Path::new("/lake/readings/date=2026-12-01/hour=23")
        );
        assert_eq!(
            partition_dir(
                Path::new("l"),
                "alerts",
                Partition::Day,
                Partition::Day.start_of(-1)
            ),
            Path::new("l/alerts/date=1969-12-31")
        );
    }

    #[test]
    fn rows_go_to_their_partitions_as_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let h = 1_796_162_400_000;
        let layout = Layout {
            partition: Partition::Hour,
            codec: Codec::Snappy,
            max_rows: 2,
        };
        let rows = vec![
            r("b/x", h + 2, 2.0, None),
            r("a/x", h + 1, 1.0, Some("°C")),
            r("a/x", h + 3, 3.0, Some("°C")),
            r("a/x", h + 3_600_000, 4.0, None),
        ];
        let out = write_all(dir.path(), &layout, rows);
        assert!(out.failed.is_none());
        // Hour 22: 3 rows at 2 a file = 2 files; hour 23: 1.
        assert_eq!(out.written.len(), 3);
        assert_eq!(out.written.iter().map(|w| w.rows).sum::<usize>(), 4);
        let d22 = dir.path().join("readings/date=2026-12-01/hour=22");
        let names: Vec<String> = fs::read_dir(&d22)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
        assert!(names
            .iter()
            .all(|n| n.starts_with("part-") && n.ends_with(".parquet")));
        for w in &out.written {
            let bytes = fs::read(&w.path).unwrap();
            assert_eq!(&bytes[..4], b"PAR1");
            assert_eq!(&bytes[bytes.len() - 4..], b"PAR1");
            assert_eq!(bytes.len() as u64, w.bytes);
        }
    }

    #[test]
    fn a_failed_write_hands_the_rows_back_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let rows = vec![r("a", 1, 1.0, None), r("a", 3_600_001, 2.0, None)];
        let out = write_all(&blocker, &Layout::default(), rows);
        let (e, left) = out.failed.unwrap();
        assert!(e.to_string().contains("date=1970-01-01"), "{e}");
        assert_eq!(left.len(), 2);
        assert!(out.written.is_empty());
    }

    /// Sensor-like rows: `series` series, `per` readings each, 1 s apart, values a
    /// random walk with two decimals.
    fn sensor_rows(series: usize, per: usize) -> Vec<Reading> {
        let names: Vec<Arc<str>> = (0..series)
            .map(|i| Arc::from(format!("site/node{i}/temperature")))
            .collect();
        let unit: Arc<str> = Arc::from("°C");
        let mut rng = fastrand::Rng::with_seed(7);
        let mut rows = Vec::with_capacity(series * per);
        for (i, name) in names.iter().enumerate() {
            let mut v = 20.0 + i as f64;
            for j in 0..per {
                v += (rng.f64() - 0.5) / 10.0;
                rows.push(Reading {
                    series: name.clone(),
                    value: (v * 100.0).round() / 100.0,
                    ts: 1_796_162_400_000 + j as i64 * 1000,
                    unit: Some(unit.clone()),
                });
            }
        }
        rows
    }

    #[test]
    fn a_reading_costs_a_few_bytes_on_disk() {
        let rows = sensor_rows(20, 500);
        for (codec, most) in [(Codec::Snappy, 3.5), (Codec::Gzip, 3.0), (Codec::None, 6.0)] {
            let mut buf = Vec::new();
            encode(&mut buf, &rows, codec).unwrap();
            let per = buf.len() as f64 / rows.len() as f64;
            assert!(per < most, "{codec:?}: {per:.2} bytes a reading");
        }
    }

    #[test]
    fn alert_events_encode() {
        let mut buf = Vec::new();
        let e = EventRow {
            ts: 5,
            rule: "hot".into(),
            series: "a/b".into(),
            state: "firing".into(),
            severity: "critical".into(),
            value: None,
            unit: None,
            message: "m".into(),
        };
        encode(&mut buf, &[e.clone(), e], Codec::Gzip).unwrap();
        assert_eq!(&buf[..4], b"PAR1");
    }
}
