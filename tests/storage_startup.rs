//! What `centinela run` refuses at start-up, as a user sees it: a database another
//! instance writes to, a damaged database, a database that cannot be written. Each
//! refusal exits 1 with an error that says what is wrong and what to do.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use centinela::model::{Reading, SeriesId};
use centinela::store::sqlite;
use support::process::KillOnDrop;

fn config(dir: &Path, port: u16, db: &Path) -> PathBuf {
    let path = dir.join(format!("c{port}.toml"));
    std::fs::write(
        &path,
        format!(
            "[broker]\nlisten = \"127.0.0.1:{port}\"\n[ingest]\ntopics = [\"sensors/#\"]\nprefix = \"sensors\"\n\
             [storage.sqlite]\npath = \"{}\"\n",
            db.display()
        ),
    )
    .unwrap();
    path
}

fn centinela(args: &[&str], cfg: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_centinela"));
    c.args(args).arg("--config").arg(cfg);
    c
}

/// Runs to the end (at most 20 s).
fn run_to_end(mut c: Command) -> Output {
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_second_instance_on_the_same_database_refuses_and_names_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let port = support::mqtt::free_port();
    let first = KillOnDrop(
        centinela(&["run"], &config(dir.path(), port, &db))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the first instance never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run_to_end(centinela(
        &["run"],
        &config(dir.path(), support::mqtt::free_port(), &db),
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("in use by another process (pid {}", first.0.id())),
        "{err}"
    );
    drop(first);
    // Once the first has gone, the lock is free again (even after a kill).
    let lock = sqlite::startup::lock(&db).expect("lock released with the process");
    drop(lock);
}

/// A database with a few hundred pages of readings, closed (checkpointed): 40 points
/// per series and flush, so each flush writes a chunk row per series.
async fn filled_db(db: &Path) {
    let pool = sqlite::open(db).await.unwrap();
    let mut w = sqlite::Writer::new(pool.clone());
    for flush in 0..40 {
        let batch: Vec<Reading> = (0..300)
            .flat_map(|k| (0..40).map(move |p| (k, p)))
            .map(|(k, p)| Reading {
                series: SeriesId::from(format!("site/node{k}/t").as_str()),
                value: (flush * k + p) as f64 * 0.37,
                ts: 1_700_000_000_000 + flush * 40_000 + p * 1000,
                unit: Some(Arc::from("°C")),
            })
            .collect();
        w.add(&batch);
        w.flush().await.unwrap();
    }
    pool.close().await;
}

#[tokio::test]
async fn a_damaged_database_refuses_to_start_and_db_check_names_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    filled_db(&db).await;
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len > 100 * 4096, "only {len} bytes");
    // Garbage over a few pages in the middle of the file.
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096;
    let mid = (bytes.len() / page / 2) * page;
    for b in &mut bytes[mid..mid + 4 * page] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let cfg = config(dir.path(), support::mqtt::free_port(), &db);

    let out = run_to_end(centinela(&["run"], &cfg));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("centinela db check"), "{err}");

    let out = run_to_end(centinela(
        &["db", "check", "--db", db.to_str().unwrap()],
        &cfg,
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is damaged"), "{err}");

    // The recovery README describes: sqlite3's .recover into a new file.
    if Command::new("sqlite3").arg("-version").output().is_err() {
        println!(
            "SKIPPED: the recovery route (no sqlite3 shell; .ci/install-storage.sh installs it)"
        );
        return;
    }
    let recovered = dir.path().join("recovered.db");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "sqlite3 '{}' .recover | sqlite3 '{}'",
            db.display(),
            recovered.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let out = run_to_end(centinela(
        &["db", "check", "--db", recovered.to_str().unwrap()],
        &cfg,
    ));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok"));
    // And what was readable is there to read.
    let out = run_to_end(centinela(
        &[
            "readings",
            "--db",
            recovered.to_str().unwrap(),
            "--series",
            "site/node1/t",
        ],
        &cfg,
    ));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_database_that_cannot_be_written_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    filled_db(&db).await;
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(&db)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        println!("SKIPPED: chattr +i failed (needs root and a file system with attributes)");
        return;
    }
    let out = run_to_end(centinela(
        &["run"],
        &config(dir.path(), support::mqtt::free_port(), &db),
    ));
    chattr("-i");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot be written"), "{err}");
    assert!(err.contains("refusing to start"), "{err}");
}
