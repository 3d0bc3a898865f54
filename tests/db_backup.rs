//! Upgrading over an existing database: when a migration is pending, the database is
//! first copied to `centinela.db.bak-<schema version>`, the copy holds what was there,
//! the log says where it went, and nothing is copied when no migration is pending or the
//! database is new. Under systemd, the service asks for more start-up time
//! (`EXTEND_TIMEOUT_USEC`) while it copies and migrates, before it says it is ready.

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

/// `centinela run` on a database an older release left, as systemd starts it: the
/// notification socket (a datagram socket this test binds) hears `EXTEND_TIMEOUT_USEC`
/// for the copy and the migration before `READY=1`, and nothing asks for more time
/// once the database is up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_asks_systemd_for_more_time_while_it_migrates() {
    use std::os::unix::net::UnixDatagram;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("centinela.db");
    let older = old_database(&db).await;
    let config = dir.path().join("centinela.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"127.0.0.1:{port}\"\n\n[storage.sqlite]\npath = \"{}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();

    // Everything the service says until READY=1 (or 60 s).
    let until_ready = |sock: &UnixDatagram| {
        let mut said = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && !said.iter().any(|m: &String| m == "READY=1") {
            if let Ok(n) = sock.recv(&mut buf) {
                said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        said
    };
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_centinela"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("NOTIFY_SOCKET", &sock_path)
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let stop = |mut svc: std::process::Child| {
        let _ = Command::new("kill")
            .args(["-TERM", &svc.id().to_string()])
            .status();
        assert!(svc.wait().unwrap().success());
    };

    let svc = run();
    let said = until_ready(&sock);
    stop(svc);
    let ready = said.iter().position(|m| m == "READY=1");
    let extend = said
        .iter()
        .position(|m| m == "EXTEND_TIMEOUT_USEC=30000000");
    assert!(
        matches!((extend, ready), (Some(e), Some(r)) if e < r),
        "no EXTEND_TIMEOUT_USEC before READY=1: {said:?}"
    );
    assert!(
        said.iter()
            .any(|m| m.starts_with("STATUS=") && m.contains("migrating")),
        "{said:?}"
    );
    assert!(dir
        .path()
        .join(format!("centinela.db.bak-{older}"))
        .is_file());

    // Up to date now: the next start asks for no extra time.
    let svc = run();
    let said = until_ready(&sock);
    stop(svc);
    assert!(said.iter().any(|m| m == "READY=1"), "{said:?}");
    assert!(
        !said.iter().any(|m| m.starts_with("EXTEND_TIMEOUT_USEC")),
        "{said:?}"
    );
}
