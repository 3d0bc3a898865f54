//! Upgrading over an existing database: when a migration is pending, the database is
//! first copied to `centinela.db.bak-<schema version>`, the copy holds what was there,
//! the log says where it went, and nothing is copied when no migration is pending or the
//! database is new.

use std::sync::{Arc, Mutex};

use centinela::store::sqlite;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::SqlitePool;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A database as an older release left it: every migration but the last, and data.
async fn old_database(path: &std::path::Path) -> i64 {
    let pool = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    let migrator = sqlx::migrate!();
    let versions: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    let older = versions[versions.len() - 2];
    migrator.run_to(older, &pool).await.unwrap();
    sqlx::query("CREATE TABLE kept (x INTEGER)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO kept VALUES (42)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    older
}

async fn schema_version(path: &std::path::Path) -> i64 {
    let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .unwrap();
    let v = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_migration_copies_the_database_aside_first_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("centinela.db");
    let older = old_database(&db).await;
    let newest = sqlx::migrate!().iter().map(|m| m.version).max().unwrap();

    let buf = Buf::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || out.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let pool = sqlite::open(&db).await.unwrap();
    drop(guard);
    pool.close().await;

    let bak = dir.path().join(format!("centinela.db.bak-{older}"));
    assert!(bak.is_file(), "no {}", bak.display());
    assert_eq!(schema_version(&bak).await, older);
    assert_eq!(schema_version(&db).await, newest);
    let copy = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&bak))
        .await
        .unwrap();
    let x: i64 = sqlx::query_scalar("SELECT x FROM kept")
        .fetch_one(&copy)
        .await
        .unwrap();
    assert_eq!(x, 42);
    copy.close().await;

    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains(&format!("schema {older} → {newest}"))
            && log.contains("copied the database aside")
            && log.contains(&bak.display().to_string()),
        "{log}"
    );

    // Up to date now: opening again copies nothing more.
    std::fs::remove_file(&bak).unwrap();
    sqlite::open(&db).await.unwrap().close().await;
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".bak-")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_database_is_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("centinela.db");
    sqlite::open(&db).await.unwrap().close().await;
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".bak-")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_copy_of_the_same_version_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("centinela.db");
    let older = old_database(&db).await;
    let bak = dir.path().join(format!("centinela.db.bak-{older}"));
    std::fs::write(&bak, b"the copy from the first attempt").unwrap();
    sqlite::open(&db).await.unwrap().close().await;
    assert_eq!(
        std::fs::read(&bak).unwrap(),
        b"the copy from the first attempt"
    );
}
