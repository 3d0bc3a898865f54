//! Compaction: once a partition (an hour or a day, of readings or of alert events) has
//! closed, its part files are merged into one file (several past `max_rows`), rows
//! sorted by series then time, and the merged set replaces the old one in one step.
//! Blocking: runs on the lake task's blocking thread, between writes.
//!
//! ```text
//!  dir/readings/date=…/hour=01/  part-a part-b … part-l     (live: what readers glob)
//!  dir/.staging/readings-date=…_hour=01/  merged-…          (built, synced, then
//!                       renameat2(staging, live, RENAME_EXCHANGE): one atomic swap)
//!  dir/readings/date=…/hour=01/  merged-…                   (live)
//!  dir/.staging/readings-date=…_hour=01/  part-a … part-l   (old set, then removed)
//! ```
//!
//! A reader globbing the live tree sees either the old set or the merged one, never
//! both and never neither: no row twice, none missing. A query that listed the old
//! names just before the swap and opens them after it fails (file not found) rather
//! than answering wrong; run it again. After a crash, whatever `.staging` holds is
//! either a merged set never swapped in or an old set already swapped out: in both
//! cases the live folder is whole, so start-up removes `.staging` entirely.
//!
//! Other writers: the service's own part files are written on the same thread, never
//! during a merge; `centinela export --parquet` holds `dir/.lock` (an flock) while it
//! writes, as a merge does, so a merge never runs while an export adds files. As a
//! second guard the live folder is listed again just before the swap (changed: the
//! merge is dropped and tried later), and a part file found in the old set after the
//! swap that was not merged is moved back into the live folder.
//!
//! A filesystem without `RENAME_EXCHANGE` (some network and FUSE filesystems) answers
//! EINVAL: compaction is then logged once and switched off; the part files stay as
//! they are (every row still read once).

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::config::Partition;
use super::file::{
    io_err, partition_dir, sync_dir, write_file, EventRow, Layout, PartError, Table,
};
use super::read::{list_parts, Rows};
use super::ParquetStats;
use crate::logging::Throttle;
use crate::model::{now_ms, Reading, Timestamp};

/// The folder under the lake's root where merged sets are built and old sets removed.
pub const STAGING: &str = ".staging";
/// The lock file merges and exports hold while they change partitions.
pub const LOCK: &str = ".lock";
/// Partitions merged in one round at most, and the work a round starts new merges
/// within: writes wait for a round, so a large lake is caught up on a bit at a time.
const MAX_PER_ROUND: usize = 16;
const ROUND_BUDGET: Duration = Duration::from_secs(2);
/// Partitions remembered to merge at most (a lake of many years, caught up on later).
const MAX_PENDING: usize = 100_000;
/// How long to wait after a failed or refused round (the lock held by an export).
const RETRY: i64 = 30_000;

/// An flock on `dir/.lock`, released when dropped.
pub struct LakeLock(#[expect(dead_code, reason = "held for its lock")] File);

impl LakeLock {
    fn open(root: &Path) -> Result<File, PartError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        let path = root.join(LOCK);
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))
    }

    /// Waits for the lock.
    pub fn acquire(root: &Path) -> Result<Self, PartError> {
        let f = Self::open(root)?;
        f.lock().map_err(io_err(&root.join(LOCK)))?;
        Ok(LakeLock(f))
    }

    /// The lock if no one holds it.
    pub fn try_acquire(root: &Path) -> Result<Option<Self>, PartError> {
        let f = Self::open(root)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(LakeLock(f))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io_err(&root.join(LOCK))(e)),
        }
    }
}

/// Why a merge did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Part(#[from] PartError),
    #[error(
        "{path}: this filesystem cannot swap folders atomically (renameat2 RENAME_EXCHANGE: \
         {source}); part files are left unmerged"
    )]
    Unsupported {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: merged {merged} rows, the files hold {held}; left unmerged")]
    Count {
        path: PathBuf,
        merged: u64,
        held: u64,
    },
}

/// What a merge of one partition did.
#[derive(Debug, PartialEq, Eq)]
pub enum Merged {
    /// Files in, files out, rows.
    Done {
        files: usize,
        into: usize,
        rows: u64,
    },
    /// One file or none, or only merged files: nothing to do.
    Nothing,
    /// A file came or went meanwhile: dropped, to be tried again.
    Changed,
}

/// Whether the part files of a folder are worth merging: more than one, and at least
/// one not merged yet (merged sets cut by `max_rows` stay as they are).
fn worth_merging(names: &[String]) -> bool {
    names.len() > 1 && names.iter().any(|n| !n.starts_with("merged-"))
}

/// The staging folder of a live partition folder: `.staging/readings-date=…_hour=01`.
fn staging_for(root: &Path, live: &Path) -> PathBuf {
    let rel = live.strip_prefix(root).unwrap_or(live);
    let name = rel
        .iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("_");
    let name = name.replacen('_', "-", 1);
    root.join(STAGING).join(name)
}

/// A row waiting in the merge, from input `src`.
struct Head<T> {
    row: T,
    src: usize,
}

impl<T: Table> PartialEq for Head<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl<T: Table> Eq for Head<T> {}
impl<T: Table> PartialOrd for Head<T> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<T: Table> Ord for Head<T> {
    /// Reversed: the heap gives the smallest row first (ties in input order).
    fn cmp(&self, other: &Self) -> CmpOrdering {
        T::cmp_rows(&other.row, &self.row).then(other.src.cmp(&self.src))
    }
}

/// Merges the part files `names` of `live` (each sorted) into `stage`, `max_rows` a
/// file at most. Memory: one output file's rows and one row group per input.
fn merge_into<T: Table>(
    live: &Path,
    names: &[String],
    stage: &Path,
    layout: &Layout,
) -> Result<(usize, u64), CompactError> {
    let mut inputs = Vec::with_capacity(names.len());
    let mut held = 0;
    for n in names {
        let rows = Rows::<T>::open(&live.join(n))?;
        held += rows.count;
        inputs.push(rows);
    }
    let mut heap = BinaryHeap::with_capacity(inputs.len());
    for (src, input) in inputs.iter_mut().enumerate() {
        if let Some(row) = input.next() {
            heap.push(Head { row: row?, src });
        }
    }
    let max = layout.max_rows.max(1);
    let mut out: Vec<T> = Vec::with_capacity(max.min(held as usize));
    let (mut files, mut rows) = (0, 0u64);
    while let Some(Head { row, src }) = heap.pop() {
        out.push(row);
        if let Some(next) = inputs[src].next() {
            heap.push(Head { row: next?, src });
        }
        if out.len() >= max || heap.is_empty() {
            write_file(stage, "merged", &out, layout.codec)?;
            files += 1;
            rows += out.len() as u64;
            out.clear();
        }
    }
    if rows != held {
        return Err(CompactError::Count {
            path: live.to_path_buf(),
            merged: rows,
            held,
        });
    }
    Ok((files, rows))
}

/// Swaps two folders in one step (both must exist).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call; AT_FDCWD makes
    // them relative to the working folder, as std's own calls do.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::EINVAL))
}

/// Merges the part files of the live partition folder `live`, if it has several, and
/// swaps the merged set in. The caller holds the [`LakeLock`].
pub fn compact<T: Table>(
    root: &Path,
    layout: &Layout,
    live: &Path,
) -> Result<Merged, CompactError> {
    compact_with::<T>(root, layout, live, &mut |_| {})
}

/// The points of a merge a test can act at (as another writer would).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The merged set is built and synced; the live folder not listed again yet.
    Built,
    /// The live folder was listed again, unchanged; the swap comes next.
    Listed,
}

fn compact_with<T: Table>(
    root: &Path,
    layout: &Layout,
    live: &Path,
    at: &mut dyn FnMut(Step),
) -> Result<Merged, CompactError> {
    let names = list_parts(live)?;
    if !worth_merging(&names) {
        return Ok(Merged::Nothing);
    }
    let stage = staging_for(root, live);
    let staging = root.join(STAGING);
    fs::create_dir_all(&staging).map_err(io_err(&staging))?;
    remove_all(&stage)?;
    fs::create_dir(&stage).map_err(io_err(&stage))?;
    let built = merge_into::<T>(live, &names, &stage, layout).and_then(|(files, rows)| {
        sync_dir(&stage).map_err(io_err(&stage))?;
        sync_dir(&staging).map_err(io_err(&staging))?;
        Ok((files, rows))
    });
    let (files, rows) = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = remove_all(&stage);
            return Err(e);
        }
    };
    at(Step::Built);
    if list_parts(live)? != names {
        remove_all(&stage)?;
        return Ok(Merged::Changed);
    }
    at(Step::Listed);
    if let Err(source) = exchange(&stage, live) {
        let _ = remove_all(&stage);
        return Err(match source.raw_os_error() {
            Some(libc::EINVAL | libc::ENOSYS | libc::ENOTSUP) => CompactError::Unsupported {
                path: live.to_path_buf(),
                source,
            },
            _ => io_err(live)(source).into(),
        });
    }
    // The swap is in the parents' entries: make it survive a power cut.
    if let Some(parent) = live.parent() {
        sync_dir(parent).map_err(io_err(parent))?;
    }
    sync_dir(&staging).map_err(io_err(&staging))?;
    // `stage` now holds the old set. A file not merged (a writer that ignored the
    // lock) goes back to the live folder.
    let mut back = false;
    for n in list_parts(&stage)? {
        if names.binary_search(&n).is_err() {
            fs::rename(stage.join(&n), live.join(&n)).map_err(io_err(&live.join(&n)))?;
            back = true;
        }
    }
    if back {
        sync_dir(live).map_err(io_err(live))?;
    }
    remove_all(&stage)?;
    sync_dir(&staging).map_err(io_err(&staging))?;
    Ok(Merged::Done {
        files: names.len(),
        into: files,
        rows,
    })
}

/// Removes a folder and what it holds, if it exists.
fn remove_all(dir: &Path) -> Result<(), PartError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(dir)(e)),
        _ => Ok(()),
    }
}

/// Removes what a crash left in `.staging` (a merged set never swapped in, or an old
/// set already swapped out: the live folders are whole either way). The caller holds
/// the [`LakeLock`]. Returns how many folders it removed.
pub fn recover(root: &Path) -> Result<usize, PartError> {
    let staging = root.join(STAGING);
    let entries = match fs::read_dir(&staging) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(&staging)(e)),
    };
    let mut n = 0;
    for e in entries {
        let path = e.map_err(io_err(&staging))?.path();
        if path.is_dir() {
            remove_all(&path)?;
        } else {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        n += 1;
    }
    if n > 0 {
        sync_dir(&staging).map_err(io_err(&staging))?;
    }
    Ok(n)
}

/// Which table a partition folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Readings,
    Alerts,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Readings => <Reading as Table>::NAME,
            Kind::Alerts => <EventRow as Table>::NAME,
        }
    }
}

/// The partition folders of the lake whose partition ended before `closed_before` and
/// that are worth merging, with their table and start.
pub fn scan(root: &Path, partition: Partition, closed_before: Timestamp) -> Vec<(Kind, PathBuf)> {
    let mut out = Vec::new();
    for kind in [Kind::Readings, Kind::Alerts] {
        let table = root.join(kind.name());
        for (date, day_dir) in sub_dirs(&table, "date=") {
            let Some(day) = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_millis())
            else {
                continue;
            };
            let folders: Vec<(Timestamp, PathBuf)> = match partition {
                Partition::Day => vec![(day, day_dir)],
                Partition::Hour => sub_dirs(&day_dir, "hour=")
                    .into_iter()
                    .filter_map(|(h, d)| Some((day + h.parse::<i64>().ok()? * 3_600_000, d)))
                    .collect(),
            };
            for (start, dir) in folders {
                // Only folders of the layout configured now (their names say so).
                if partition_dir(root, kind.name(), partition, start) != dir
                    || start + partition.period_ms() > closed_before
                {
                    continue;
                }
                if list_parts(&dir).is_ok_and(|n| worth_merging(&n)) {
                    out.push((kind, dir));
                    if out.len() >= MAX_PENDING {
                        return out;
                    }
                }
            }
        }
    }
    out
}

/// The sub-folders of `dir` named `<prefix><value>`: (value, path).
fn sub_dirs(dir: &Path, prefix: &str) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some((name.strip_prefix(prefix)?.to_string(), e.path()))
        })
        .collect()
}

/// The lake task's compaction schedule: which partitions to merge and when. Moved into
/// the blocking thread for a round and handed back.
pub struct Compactor {
    root: PathBuf,
    layout: Layout,
    /// How long after a partition's end (or its last write) it is merged.
    grace: i64,
    /// Partition folders to merge, and from when (wall clock, ms).
    pending: BTreeMap<PathBuf, (Kind, Timestamp)>,
    /// When to walk the whole lake again for partitions to merge (others' exports).
    next_scan: Timestamp,
    recovered: bool,
    /// The filesystem cannot swap folders: compaction is off.
    off: bool,
    /// No round before this after a failed or refused one.
    retry_at: Timestamp,
    error_log: Throttle,
}

impl Compactor {
    pub fn new(root: PathBuf, layout: Layout, flush_interval: Duration) -> Self {
        // Twice the flush interval: the partition's last part files are written by
        // then, and late readings of a burst land before the merge, not after it.
        let grace = i64::try_from(flush_interval.as_millis().saturating_mul(2))
            .unwrap_or(i64::MAX)
            .max(5_000);
        Compactor {
            root,
            layout,
            grace,
            pending: BTreeMap::new(),
            next_scan: 0,
            recovered: false,
            off: false,
            retry_at: 0,
            error_log: Throttle::new(Duration::from_secs(600)),
        }
    }

    /// A part file was written into the partition starting at `start`.
    pub fn touched(&mut self, kind: Kind, dir: PathBuf, start: Timestamp) {
        if self.off {
            return;
        }
        let due = (start + self.layout.partition.period_ms()).max(now_ms()) + self.grace;
        if self.pending.len() < MAX_PENDING || self.pending.contains_key(&dir) {
            let e = self.pending.entry(dir).or_insert((kind, due));
            e.1 = e.1.max(due);
        }
    }

    /// When the next round is due (wall clock, ms), if ever.
    pub fn due(&self) -> Option<Timestamp> {
        if self.off {
            return None;
        }
        let next = self.pending.values().map(|p| p.1).min();
        let next = next.map_or(self.next_scan, |n| n.min(self.next_scan));
        Some(next.max(self.retry_at))
    }

    /// One round: recovery first (once), a walk of the lake when due, then the due
    /// partitions, within [`ROUND_BUDGET`].
    pub fn round(&mut self, stats: &ParquetStats) {
        let now = now_ms();
        let lock = match LakeLock::try_acquire(&self.root) {
            Ok(Some(l)) => l,
            Ok(None) => {
                tracing::debug!("Parquet: the lake is locked (an export); merging later");
                self.retry_at = now + RETRY;
                return;
            }
            Err(e) => return self.failed(now, stats, &CompactError::Part(e)),
        };
        if !self.recovered {
            match recover(&self.root) {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(
                            folders = n,
                            "Parquet: removed what an interrupted merge left in {STAGING}"
                        );
                    }
                    self.recovered = true;
                }
                Err(e) => return self.failed(now, stats, &CompactError::Part(e)),
            }
        }
        if self.next_scan <= now {
            let closed_before = now - self.grace;
            for (kind, dir) in scan(&self.root, self.layout.partition, closed_before) {
                if self.pending.len() >= MAX_PENDING {
                    break;
                }
                self.pending.entry(dir).or_insert((kind, now));
            }
            self.next_scan = now + self.layout.partition.period_ms();
        }
        let started = Instant::now();
        let due: Vec<(PathBuf, Kind)> = self
            .pending
            .iter()
            .filter(|p| p.1 .1 <= now)
            .take(MAX_PER_ROUND)
            .map(|(d, p)| (d.clone(), p.0))
            .collect();
        let (mut parts, mut files, mut into) = (0, 0, 0);
        for (dir, kind) in due {
            if started.elapsed() > ROUND_BUDGET {
                break;
            }
            self.pending.remove(&dir);
            let merged = match kind {
                Kind::Readings => compact::<Reading>(&self.root, &self.layout, &dir),
                Kind::Alerts => compact::<EventRow>(&self.root, &self.layout, &dir),
            };
            match merged {
                Ok(Merged::Done {
                    files: f,
                    into: i,
                    rows,
                }) => {
                    stats.compactions.fetch_add(1, Ordering::Relaxed);
                    stats.files_compacted.fetch_add(f as u64, Ordering::Relaxed);
                    tracing::debug!(dir = %dir.display(), files = f, into = i, rows, "Parquet: partition merged");
                    parts += 1;
                    files += f;
                    into += i;
                }
                Ok(Merged::Nothing) => {}
                Ok(Merged::Changed) => {
                    self.pending.insert(dir, (kind, now + self.grace));
                }
                Err(e @ CompactError::Unsupported { .. }) => {
                    tracing::warn!("Parquet: {e}; compaction is off");
                    self.off = true;
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    // Tried again at the next walk of the lake.
                    self.failed(now, stats, &e);
                }
            }
        }
        drop(lock);
        if parts > 0 {
            tracing::info!(
                partitions = parts,
                files,
                into,
                "Parquet: merged the part files of closed partitions"
            );
        }
    }

    fn failed(&mut self, now: Timestamp, stats: &ParquetStats, e: &CompactError) {
        stats.compaction_errors.fetch_add(1, Ordering::Relaxed);
        self.retry_at = now + RETRY;
        if let Some(held_back) = self.error_log.ready() {
            tracing::warn!(held_back, "Parquet: cannot merge part files: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::parquet::file::write_all;
    use crate::store::parquet::read::keys;

    const H: i64 = 1_796_162_400_000;

    fn r(series: &str, ts: i64, value: f64) -> Reading {
        Reading {
            series: Arc::from(series),
            value,
            ts,
            unit: None,
        }
    }

    fn layout(max_rows: usize) -> Layout {
        Layout {
            max_rows,
            ..Layout::default()
        }
    }

    /// Three flushes of two series into one hour: three part files.
    fn three_parts(root: &Path, layout: &Layout) -> PathBuf {
        for k in 0..3 {
            let rows = (0..10)
                .map(|i| {
                    r(
                        if i % 2 == 0 { "b" } else { "a" },
                        H + k * 100 + i,
                        i as f64,
                    )
                })
                .collect();
            assert!(write_all(root, layout, rows).failed.is_none());
        }
        partition_dir(root, "readings", Partition::Hour, H)
    }

    fn all_rows(dir: &Path) -> Vec<(String, i64, f64)> {
        list_parts(dir)
            .unwrap()
            .iter()
            .flat_map(|n| Rows::<Reading>::open(&dir.join(n)).unwrap())
            .map(|r| {
                let r = r.unwrap();
                (r.series.to_string(), r.ts, r.value)
            })
            .collect()
    }

    #[test]
    fn a_closed_partition_becomes_one_sorted_file() {
        let root = tempfile::tempdir().unwrap();
        let layout = layout(1000);
        let live = three_parts(root.path(), &layout);
        assert_eq!(list_parts(&live).unwrap().len(), 3);
        let mut before = all_rows(&live);
        let m = compact::<Reading>(root.path(), &layout, &live).unwrap();
        assert_eq!(
            m,
            Merged::Done {
                files: 3,
                into: 1,
                rows: 30
            }
        );
        let names = list_parts(&live).unwrap();
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with("merged-"), "{names:?}");
        let after = all_rows(&live);
        before.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        assert_eq!(after, before, "the same rows, sorted by series then time");
        // Nothing left in staging, and a second run does nothing.
        assert_eq!(fs::read_dir(root.path().join(STAGING)).unwrap().count(), 0);
        assert_eq!(
            compact::<Reading>(root.path(), &layout, &live).unwrap(),
            Merged::Nothing
        );
    }

    #[test]
    fn max_rows_cuts_the_merged_set_and_it_stays_cut() {
        let root = tempfile::tempdir().unwrap();
        let layout = layout(12);
        let live = three_parts(root.path(), &layout);
        let m = compact::<Reading>(root.path(), &layout, &live).unwrap();
        assert_eq!(
            m,
            Merged::Done {
                files: 3,
                into: 3,
                rows: 30
            }
        );
        assert_eq!(keys::<Reading>(&live).unwrap().len(), 30);
        let rows = all_rows(&live);
        let mut sorted = rows.clone();
        sorted.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        assert_eq!(rows, sorted, "files in name order continue each other");
        assert_eq!(
            compact::<Reading>(root.path(), &layout, &live).unwrap(),
            Merged::Nothing
        );
        // A late part: all four merged again.
        write_all(root.path(), &layout, vec![r("a", H + 5_000, 9.0)]);
        let m = compact::<Reading>(root.path(), &layout, &live).unwrap();
        assert_eq!(
            m,
            Merged::Done {
                files: 4,
                into: 3,
                rows: 31
            }
        );
    }

    #[test]
    fn a_file_that_cannot_be_read_leaves_the_partition_as_it_was() {
        let root = tempfile::tempdir().unwrap();
        let layout = layout(1000);
        let live = three_parts(root.path(), &layout);
        fs::write(live.join("part-0-0-0.parquet"), b"PAR1 not really").unwrap();
        let e = compact::<Reading>(root.path(), &layout, &live)
            .unwrap_err()
            .to_string();
        assert!(e.contains("part-0-0-0.parquet"), "{e}");
        assert_eq!(list_parts(&live).unwrap().len(), 4);
        assert_eq!(fs::read_dir(root.path().join(STAGING)).unwrap().count(), 0);
    }

    /// Another writer adds a part file while the merge is built: the merge is dropped
    /// and the next one takes it. One that slips in just before the swap is moved back.
    #[test]
    fn a_part_file_added_during_a_merge_is_never_lost() {
        let root = tempfile::tempdir().unwrap();
        let layout = layout(1000);
        let live = three_parts(root.path(), &layout);
        let late = |v: f64| {
            let out = write_all(root.path(), &layout, vec![r("late", H + 1, v)]);
            assert!(out.failed.is_none());
        };
        let m = compact_with::<Reading>(root.path(), &layout, &live, &mut |s| {
            if s == Step::Built {
                late(1.0);
            }
        })
        .unwrap();
        assert_eq!(m, Merged::Changed);
        assert_eq!(list_parts(&live).unwrap().len(), 4);
        assert_eq!(all_rows(&live).len(), 31);
        assert_eq!(fs::read_dir(root.path().join(STAGING)).unwrap().count(), 0);

        let m = compact_with::<Reading>(root.path(), &layout, &live, &mut |s| {
            if s == Step::Listed {
                late(2.0);
            }
        })
        .unwrap();
        assert_eq!(
            m,
            Merged::Done {
                files: 4,
                into: 1,
                rows: 31
            }
        );
        // The merged file and the late one, moved back: every row once.
        assert_eq!(list_parts(&live).unwrap().len(), 2);
        let rows = all_rows(&live);
        assert_eq!(rows.len(), 32);
        assert_eq!(rows.iter().filter(|r| r.0 == "late").count(), 2);
        assert_eq!(fs::read_dir(root.path().join(STAGING)).unwrap().count(), 0);
    }

    #[test]
    fn the_lock_is_held_by_one_at_a_time() {
        let root = tempfile::tempdir().unwrap();
        let held = LakeLock::acquire(root.path()).unwrap();
        assert!(LakeLock::try_acquire(root.path()).unwrap().is_none());
        drop(held);
        assert!(LakeLock::try_acquire(root.path()).unwrap().is_some());
    }

    #[test]
    fn the_walk_finds_closed_partitions_with_several_files() {
        let root = tempfile::tempdir().unwrap();
        let layout = layout(1000);
        let live = three_parts(root.path(), &layout);
        // One file an hour later: not worth merging.
        write_all(root.path(), &layout, vec![r("a", H + 3_600_000, 1.0)]);
        let found = scan(root.path(), Partition::Hour, H + 7_200_000);
        assert_eq!(found, vec![(Kind::Readings, live.clone())]);
        // Not closed yet.
        assert!(scan(root.path(), Partition::Hour, H + 3_599_999).is_empty());
        // A day layout does not take hour folders for its own.
        assert!(scan(root.path(), Partition::Day, H + 86_400_000 * 2).is_empty());
    }

    #[test]
    fn a_round_recovers_walks_and_merges_and_counts() {
        let root = tempfile::tempdir().unwrap();
        let layout = layout(1000);
        let live = three_parts(root.path(), &layout);
        let leftover = root.path().join(STAGING).join("readings-date=x_hour=00");
        fs::create_dir_all(&leftover).unwrap();
        fs::write(leftover.join("part-1.parquet"), b"x").unwrap();
        let stats = ParquetStats::default();
        let mut c = Compactor::new(root.path().into(), layout, Duration::from_secs(1));
        assert_eq!(c.due(), Some(0));
        c.round(&stats);
        assert!(!leftover.exists());
        assert_eq!(list_parts(&live).unwrap().len(), 1);
        assert_eq!(stats.compactions.load(Ordering::Relaxed), 1);
        assert_eq!(stats.files_compacted.load(Ordering::Relaxed), 3);
        // The next walk in an hour; a late part is merged after the grace.
        assert!(c.due().unwrap() > now_ms() + 3_000_000);
        write_all(root.path(), &layout, vec![r("a", H + 1, 1.0)]);
        c.touched(Kind::Readings, live.clone(), H);
        let due = c.due().unwrap();
        assert!(due >= now_ms() + 4_000 && due <= now_ms() + 5_000, "{due}");
    }
}
