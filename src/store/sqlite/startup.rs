//! What the service checks before it writes to a database: that no other process
//! writes to it (a lock file beside it, held with `flock`, naming the holder's PID),
//! that it can be written at all, and that it is not damaged (`PRAGMA quick_check`,
//! bounded in time). `centinela db check` runs the full `PRAGMA integrity_check`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqlitePool};

use super::StoreError;

/// How long the start-up `quick_check` may take; past it the check is skipped with a
/// warning (a large database on a slow SD card), not the start.
pub const QUICK_CHECK_LIMIT: Duration = Duration::from_secs(10);

/// The lock on a database, held while the service runs; released on drop (also when
/// the process dies: the kernel drops an `flock` with its file descriptor).
#[derive(Debug)]
pub struct DbLock {
    _file: File,
    pub path: PathBuf,
}

/// The lock file of the database at `db`: `<db>.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock on `db` (without waiting) and writes our PID into the lock file.
pub fn lock(db: &Path) -> Result<DbLock, StoreError> {
    let path = lock_path(db);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StoreError::NotWritable {
            path: path.display().to_string(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(StoreError::InUse {
                db: db.display().to_string(),
                lock: path.display().to_string(),
                pid: if holder.is_empty() {
                    "unknown".into()
                } else {
                    holder.to_string()
                },
            });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(StoreError::NotWritable {
                path: path.display().to_string(),
                source,
            })
        }
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.flush());
    if let Err(source) = written {
        return Err(StoreError::NotWritable {
            path: path.display().to_string(),
            source,
        });
    }
    Ok(DbLock { _file: file, path })
}

/// Refuses a database file that exists but cannot be opened for writing (a read-only
/// mount, `chattr +i`, permissions): the service would otherwise start and lose every
/// reading.
pub fn check_writable(db: &Path) -> Result<(), StoreError> {
    for path in [db.to_path_buf(), {
        let mut p = db.as_os_str().to_owned();
        p.push("-wal");
        PathBuf::from(p)
    }] {
        if path.exists() {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| StoreError::NotWritable {
                    path: path.display().to_string(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// The outcome of a check that found nothing wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    Ok,
    /// The time limit passed before the check finished.
    Unfinished,
    /// No database file yet.
    Missing,
}

/// Runs `PRAGMA quick_check` (or `integrity_check` when `full`) on `db`, interrupted
/// after `limit`. A damaged database is [`StoreError::Damaged`] with SQLite's findings.
pub async fn check(db: &Path, full: bool, limit: Option<Duration>) -> Result<Checked, StoreError> {
    if !db.exists() {
        return Ok(Checked::Missing);
    }
    let damaged = |detail: String| StoreError::Damaged {
        path: db.display().to_string(),
        detail,
    };
    let opts = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .busy_timeout(Duration::from_secs(5));
    let mut conn = match sqlx::SqliteConnection::connect_with(&opts).await {
        Ok(c) => c,
        Err(e) if is_corruption(&e) => return Err(damaged(e.to_string())),
        Err(source) => {
            return Err(StoreError::Open {
                path: db.display().to_string(),
                source,
            })
        }
    };
    if let Some(limit) = limit {
        let deadline = Instant::now() + limit;
        let mut handle = conn.lock_handle().await?;
        // Returning false interrupts the statement (SQLITE_INTERRUPT).
        handle.set_progress_handler(10_000, move || Instant::now() < deadline);
    }
    let sql = if full {
        "PRAGMA integrity_check(20)"
    } else {
        "PRAGMA quick_check(20)"
    };
    let result: Result<Vec<String>, sqlx::Error> =
        sqlx::query_scalar(sql).fetch_all(&mut conn).await;
    let _ = conn.close().await;
    match result {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => Ok(Checked::Ok),
        Ok(lines) => Err(damaged(lines.join("; "))),
        Err(e) if sqlite_code(&e) == Some(9) => Ok(Checked::Unfinished),
        Err(e) if is_corruption(&e) => Err(damaged(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

fn sqlite_code(e: &sqlx::Error) -> Option<i64> {
    let code = e.as_database_error()?.code()?;
    // Extended codes carry the primary one in their low byte.
    code.parse::<i64>().ok().map(|c| c & 0xff)
}

/// SQLITE_CORRUPT (11) or SQLITE_NOTADB (26).
fn is_corruption(e: &sqlx::Error) -> bool {
    matches!(sqlite_code(e), Some(11 | 26))
}

/// Opens the database the service writes to: takes its lock, refuses a file that cannot
/// be written or is damaged, then opens it as [`super::open`] does. The lock is held
/// as long as the returned [`DbLock`] lives.
pub async fn open_for_writing(db: &Path) -> Result<(SqlitePool, DbLock), StoreError> {
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let guard = lock(db)?;
    check_writable(db)?;
    match check(db, false, Some(QUICK_CHECK_LIMIT)).await? {
        Checked::Unfinished => tracing::warn!(
            db = %db.display(),
            limit_s = QUICK_CHECK_LIMIT.as_secs(),
            "quick_check did not finish in time: started without it (run `centinela db check`)"
        ),
        Checked::Ok | Checked::Missing => {}
    }
    let pool = super::open(db).await?;
    Ok((pool, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let held = lock(&db).unwrap();
        let err = lock(&db).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("c.db.lock"), "{err}");
        drop(held);
        lock(&db).unwrap();
    }
}
