//! A copy of the database before its schema changes: when a new release brings a
//! migration and the database already holds data, `centinela.db` is first copied to
//! `centinela.db.bak-<N>` (N: the schema version it had) with `VACUUM INTO`, which
//! writes a consistent copy even while the WAL holds recent writes. An older release
//! can open that copy again.

use std::path::{Path, PathBuf};

use sqlx::SqlitePool;

/// Where the copy of the database at `path` with schema version `version` goes.
pub fn backup_path(path: &Path, version: i64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".bak-{version}"));
    path.with_file_name(name)
}

/// The versions `migrator` has that the database at `pool` has not applied, and the
/// newest it has applied (`None`: no migrations table, a new database).
async fn pending(
    pool: &SqlitePool,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(Option<i64>, Vec<i64>), sqlx::Error> {
    let has_table: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await?;
    if has_table == 0 {
        return Ok((None, Vec::new()));
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
            .fetch_all(pool)
            .await?;
    let todo = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .map(|m| m.version)
        .collect();
    Ok((applied.iter().copied().max(), todo))
}

/// Whether `migrator` is about to change the schema of a database that has one already
/// (a new database, whose tables are made from nothing, says no): the case where
/// [`before_migrating`] copies it aside and the migration may take long.
pub async fn migration_pending(
    pool: &SqlitePool,
    migrator: &sqlx::migrate::Migrator,
) -> Result<bool, BackupError> {
    let (current, todo) = pending(pool, migrator).await.map_err(BackupError::Read)?;
    Ok(current.is_some() && !todo.is_empty())
}

/// Copies the database aside when `migrator` is about to change the schema of a
/// database that has one already, and says so. Returns where the copy went. An
/// existing copy of the same version is kept (it is the older one, from before an
/// attempt that failed), and a copy that cannot be made (a full disk) stops the
/// migration with the reason.
pub async fn before_migrating(
    pool: &SqlitePool,
    path: &Path,
    migrator: &sqlx::migrate::Migrator,
) -> Result<Option<PathBuf>, BackupError> {
    let (Some(current), todo) = pending(pool, migrator).await.map_err(BackupError::Read)? else {
        return Ok(None);
    };
    if todo.is_empty() {
        return Ok(None);
    }
    let target = todo.iter().copied().max().unwrap_or(current);
    let bak = backup_path(path, current);
    if bak.exists() {
        tracing::info!(
            database = %path.display(),
            backup = %bak.display(),
            "database schema {current} → {target}: keeping the existing copy from before"
        );
        return Ok(Some(bak));
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "VACUUM INTO '{}'",
        bak.display().to_string().replace('\'', "''")
    )))
    .execute(pool)
    .await
    .map_err(|source| BackupError::Copy {
        path: bak.display().to_string(),
        source,
    })?;
    tracing::info!(
        database = %path.display(),
        backup = %bak.display(),
        "database schema {current} → {target}: copied the database aside before migrating"
    );
    Ok(Some(bak))
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read the schema version: {0}")]
    Read(sqlx::Error),
    #[error(
        "cannot copy the database to {path} before migrating it ({source}); \
         nothing was changed: free some space (or move the database) and start again"
    )]
    Copy { path: String, source: sqlx::Error },
}
