//! Storage faults against the real SQLite writer: a disk that fills and frees again, a
//! database file made immutable for a moment, a stop while the disk is still full.
//! Nothing acknowledged may be lost while the fault lasts, the database must not stay
//! locked, and a stop that cannot write everything must say so.
//!
//! These tests mount a small tmpfs and use `chattr`: they need root (as in CI) and print
//! `SKIPPED` otherwise.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::notify_db;

use centinela::model::{AlertState, Reading, SeriesId};
use centinela::store::sqlite::{self, AlertBatch, StoreMsg, StoreStats, Writer, WriterConfig};
use sqlx::Connection;
use tokio::sync::mpsc;

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("SKIPPED: cannot mount a tmpfs (these tests need root)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with a filler file; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        for _ in 0..100_000 {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        // The last partial blocks.
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

fn readings(batch: usize, series: usize, base: i64) -> Vec<Reading> {
    (0..series)
        .map(|k| Reading {
            series: SeriesId::from(format!("fault/s{k}").as_str()),
            value: batch as f64,
            ts: base + batch as i64 * 1000,
            unit: None,
        })
        .collect()
}

struct Running {
    tx: mpsc::Sender<StoreMsg>,
    stats: Arc<StoreStats>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_writer(db: &Path) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let pool = sqlite::open(db).await.unwrap();
    let outbox = centinela::notify::Outbox::new(pool.clone());
    let w = Writer::new(pool).with_outbox(outbox);
    let stats = w.stats.clone();
    let (tx, rx) = mpsc::channel(64);
    let cfg = WriterConfig {
        flush_interval: Duration::from_millis(100),
        retention: Duration::from_secs(3600 * 24 * 365 * 100),
        rollup_retention: Duration::from_secs(3600 * 24 * 365 * 100),
        maintenance_interval: Duration::from_secs(3600),
    };
    let task = tokio::spawn(sqlite::run_writer(w, rx, cfg));
    Running { tx, stats, task }
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when another connection can take the write lock at once.
async fn write_lock_free(db: &Path) -> bool {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_millis(0));
    let Ok(mut c) = sqlx::SqliteConnection::connect_with(&opts).await else {
        return false;
    };
    let ok = sqlx::query("BEGIN IMMEDIATE").execute(&mut c).await.is_ok();
    let _ = sqlx::query("ROLLBACK").execute(&mut c).await;
    let _ = c.close().await;
    ok
}

async fn stored_in_db(db: &Path) -> (usize, i64, i64) {
    let pool = sqlite::open_existing(db).await.unwrap();
    let n = sqlite::query_readings(&pool, "fault/#", 0)
        .await
        .unwrap()
        .len();
    let alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts")
        .fetch_one(&pool)
        .await
        .unwrap();
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    (n, alerts, outbox)
}

/// The writer is fed through a full disk: the failed flushes roll back, the database
/// is not left locked, everything is kept and written once space is back, and the alert
/// raised meanwhile reaches the alerts table and the outbox.
#[tokio::test]
async fn a_full_disk_that_frees_again_costs_no_reading_and_no_alert() {
    let Some(fs) = Tmpfs::mount("3m") else { return };
    let db = fs.path().join("c.db");
    let w = start_writer(&db).await;
    let base = 1_700_000_000_000;
    let series = 50;
    for b in 0..20 {
        w.tx.send(StoreMsg::Readings(readings(b, series, base).into()))
            .await
            .unwrap();
    }
    wait_until("the first readings stored", Duration::from_secs(10), || {
        w.stats.stored.load(Ordering::Relaxed) == 20 * series as u64
    })
    .await;

    let filler = fs.fill();
    let mut sent = 20;
    let mut alerted = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    // Keep the stream going until the writer has failed a few times.
    while w.stats.failing.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "no write failed on a full disk");
        w.tx.send(StoreMsg::Readings(readings(sent, series, base).into()))
            .await
            .unwrap();
        sent += 1;
        if !alerted {
            alerted = true;
            let event = notify_db::event(
                "fault/s1",
                AlertState::Firing,
                99.0,
                base + 1000 * sent as i64,
                &["email"],
            );
            w.tx.send(StoreMsg::Alerts(AlertBatch {
                events: vec![event],
                ..AlertBatch::default()
            }))
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, detail) = w.stats.health(centinela::model::now_ms());
    assert!(!ok, "healthy while writes fail: {detail}");
    assert!(detail.contains("writes failing"), "{detail}");
    // The failed transactions were rolled back: nobody holds the write lock for long.
    let mut free = false;
    for _ in 0..20 {
        if write_lock_free(&db).await {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(free, "the database stays locked after a failed flush");

    std::fs::remove_file(&filler).unwrap();
    let total = (sent * series) as u64;
    wait_until(
        "everything written once the disk has room",
        Duration::from_secs(20),
        || {
            w.stats.stored.load(Ordering::Relaxed) == total
                && w.stats.failing.load(Ordering::Relaxed) == 0
                && w.stats.alerts_pending.load(Ordering::Relaxed) == 0
        },
    )
    .await;
    assert!(w.stats.health(centinela::model::now_ms()).0);
    drop(w.tx);
    w.task.await.unwrap();
    assert_eq!(w.stats.pending.load(Ordering::Relaxed), 0);
    let (n, alerts, outbox) = stored_in_db(&db).await;
    assert_eq!(n as u64, total, "readings in the database");
    assert_eq!((alerts, outbox), (1, 1), "the alert and its notification");
    assert_eq!(w.stats.dropped.load(Ordering::Relaxed), 0);
}

/// `chattr +i` on the write-ahead log for a moment: the same recovery.
#[tokio::test]
async fn an_immutable_database_for_a_moment_costs_no_reading() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let w = start_writer(&db).await;
    let base = 1_700_000_000_000;
    let series = 20;
    w.tx.send(StoreMsg::Readings(readings(0, series, base).into()))
        .await
        .unwrap();
    wait_until("the first readings stored", Duration::from_secs(10), || {
        w.stats.stored.load(Ordering::Relaxed) == series as u64
    })
    .await;
    let wal = dir.path().join("c.db-wal");
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(&wal)
            .arg(&db)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        println!("SKIPPED: chattr +i failed (needs root and a file system with attributes)");
        return;
    }
    let mut sent = 1;
    let deadline = Instant::now() + Duration::from_secs(15);
    while w.stats.failing.load(Ordering::Relaxed) < 2 {
        if Instant::now() > deadline {
            chattr("-i");
            panic!("no write failed on an immutable database");
        }
        w.tx.send(StoreMsg::Readings(readings(sent, series, base).into()))
            .await
            .unwrap();
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(chattr("-i"));
    let total = (sent * series) as u64;
    wait_until(
        "everything written once the file is writable",
        Duration::from_secs(20),
        || {
            w.stats.stored.load(Ordering::Relaxed) == total
                && w.stats.failing.load(Ordering::Relaxed) == 0
        },
    )
    .await;
    assert!(write_lock_free(&db).await, "the database stays locked");
    drop(w.tx);
    w.task.await.unwrap();
    let (n, _, _) = stored_in_db(&db).await;
    assert_eq!(n as u64, total);
}

/// `centinela run` stopped (SIGTERM) while its disk is full: it does not claim that
/// everything was flushed; it exits 1 and says how many readings were not written.
#[tokio::test]
async fn a_stop_on_a_full_disk_says_what_was_not_written() {
    let Some(fs) = Tmpfs::mount("3m") else { return };
    let port = support::mqtt::free_port();
    let cfg = fs.path().join("c.toml");
    // The configuration lives beside, not on the tmpfs (it must stay readable).
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join(cfg.file_name().unwrap());
    std::fs::write(
        &cfg,
        format!(
            "[broker]\nlisten = \"127.0.0.1:{port}\"\n[ingest]\ntopics = [\"sensors/#\"]\nprefix = \"sensors\"\n\
             [storage.sqlite]\npath = \"{}\"\nflush_interval = \"200ms\"\n",
            fs.path().join("c.db").display()
        ),
    )
    .unwrap();
    let log_path = cfg_dir.path().join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_centinela"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the broker never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut publisher = support::mqtt::Publisher::connect(port, "fault-pub", None).await;
    for i in 0..50 {
        publisher.publish(&format!("sensors/a/b{i}"), "1").await;
    }
    publisher.wait_acked(50).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    fs.fill();
    for i in 0..200 {
        publisher
            .publish(&format!("sensors/a/b{}", i % 50), "2")
            .await;
    }
    publisher.wait_acked(250).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the service did not stop within 25 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(1), "exit code; log:\n{log}");
    assert!(!log.contains("everything flushed"), "{log}");
    assert!(log.contains("alert batches were not written"), "{log}");
}

/// 64,000 new series in one flush, and an alert raised meanwhile: the alert reaches the
/// alerts table and the outbox within a few seconds, and the readings are all stored.
#[tokio::test]
async fn a_burst_of_new_series_does_not_hold_up_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let w = start_writer(&db).await;
    let base = 1_700_000_000_000;
    let n = 64_000;
    let started = Instant::now();
    for part in 0..(n / 8_000) {
        let batch: Vec<Reading> = (0..8_000)
            .map(|k| Reading {
                series: SeriesId::from(format!("burst/n{}/t", part * 8_000 + k).as_str()),
                value: 1.0,
                ts: base,
                unit: None,
            })
            .collect();
        w.tx.send(StoreMsg::Readings(batch.into())).await.unwrap();
    }
    let event = notify_db::event("burst/n1/t", AlertState::Firing, 99.0, base, &["email"]);
    w.tx.send(StoreMsg::Alerts(AlertBatch {
        events: vec![event],
        ..AlertBatch::default()
    }))
    .await
    .unwrap();
    let pool = sqlite::open_existing(&db).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts")
            .fetch_one(&pool)
            .await
            .unwrap();
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        if alerts == 1 && outbox == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the alert is not stored 5 s after a burst of {n} new series"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alert_after = started.elapsed();
    wait_until("the burst stored", Duration::from_secs(30), || {
        w.stats.stored.load(Ordering::Relaxed) == n as u64
    })
    .await;
    println!(
        "{n} new series: alert stored after {alert_after:?}, all readings after {:?}",
        started.elapsed()
    );
    drop(w.tx);
    w.task.await.unwrap();
}
