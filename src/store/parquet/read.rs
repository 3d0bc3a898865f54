//! Part files read back (blocking): the rows of one file in the order it holds them,
//! for compaction's merge, and the keys of the rows a partition folder already holds,
//! so an export adds only what the lake lacks. The parquet crate's record reader,
//! columns matched by name.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;

use super::file::{io_err, Names, PartError, Table};

/// The rows of one part file, in file order.
pub struct Rows<T> {
    path: PathBuf,
    rows: RowIter<'static>,
    names: Names,
    /// Rows the footer says the file holds.
    pub count: u64,
    _table: std::marker::PhantomData<T>,
}

impl<T: Table> Rows<T> {
    pub fn open(path: &Path) -> Result<Self, PartError> {
        let file = File::open(path).map_err(io_err(path))?;
        let reader = SerializedFileReader::new(file).map_err(|e| PartError::Read {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let count = u64::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0);
        Ok(Rows {
            path: path.to_path_buf(),
            rows: reader.into_iter(),
            names: Names::default(),
            count,
            _table: std::marker::PhantomData,
        })
    }
}

impl<T: Table> Iterator for Rows<T> {
    type Item = Result<T, PartError>;

    fn next(&mut self) -> Option<Self::Item> {
        let row = self.rows.next()?;
        let err = |why: String| PartError::Read {
            path: self.path.clone(),
            why,
        };
        Some(
            row.map_err(|e| err(e.to_string()))
                .and_then(|r| T::from_row(&r, &mut self.names).map_err(err)),
        )
    }
}

/// The names of the part files in a folder (`*.parquet`, not hidden), sorted; none
/// when the folder does not exist.
pub fn list_parts(dir: &Path) -> Result<Vec<String>, PartError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.')
            && name.ends_with(".parquet")
            && e.file_type().is_ok_and(|t| t.is_file())
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The keys of every row the part files in `dir` hold.
pub fn keys<T: Table>(dir: &Path) -> Result<HashSet<T::Key>, PartError> {
    let mut keys = HashSet::new();
    for name in list_parts(dir)? {
        for row in Rows::<T>::open(&dir.join(name))? {
            keys.insert(row?.key());
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Reading;
    use crate::store::parquet::file::{write_all, EventRow};
    use crate::store::parquet::ParquetConfig;

    #[test]
    fn what_is_written_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<Reading> = (0..50)
            .map(|i| Reading {
                series: Arc::from(if i % 2 == 0 { "a/t" } else { "b/h" }),
                value: f64::from(i) / 3.0,
                ts: 1_796_162_400_000 + i64::from(i),
                unit: (i % 2 == 0).then(|| Arc::from("°C")),
            })
            .collect();
        let out = write_all(dir.path(), &ParquetConfig::default().layout(), rows.clone());
        assert!(out.failed.is_none());
        let back: Vec<Reading> = Rows::open(&out.written[0].path)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut want = rows;
        want.sort_by(Reading::cmp_rows);
        assert_eq!(back.len(), want.len());
        for (b, w) in back.iter().zip(&want) {
            assert_eq!(
                (&*b.series, b.ts, b.value, b.unit.as_deref()),
                (&*w.series, w.ts, w.value, w.unit.as_deref())
            );
        }
        let part = out.written[0].path.parent().unwrap();
        assert_eq!(keys::<Reading>(part).unwrap().len(), 50);

        let e = EventRow {
            ts: 1_796_162_400_000,
            rule: "hot".into(),
            series: "a/t".into(),
            state: "firing".into(),
            severity: "critical".into(),
            value: None,
            unit: Some("°C".into()),
            message: "too hot".into(),
        };
        let out = write_all(
            dir.path(),
            &ParquetConfig::default().layout(),
            vec![e.clone()],
        );
        let back: Vec<EventRow> = Rows::open(&out.written[0].path)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(back, vec![e]);
    }

    #[test]
    fn a_file_of_another_kind_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.parquet");
        fs::write(&p, b"not parquet").unwrap();
        let e = Rows::<Reading>::open(&p).err().unwrap().to_string();
        assert!(e.contains("x.parquet"), "{e}");
        // A readings file read as alert events: a column is missing.
        let out = write_all(
            dir.path(),
            &ParquetConfig::default().layout(),
            vec![Reading {
                series: "s".into(),
                value: 1.0,
                ts: 1,
                unit: None,
            }],
        );
        let e = Rows::<EventRow>::open(&out.written[0].path)
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column rule"), "{e}");
    }
}
