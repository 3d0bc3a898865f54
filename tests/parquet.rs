//! The Parquet data lake as a user gets it: `centinela run` with `[output.parquet]`,
//! readings published by a real MQTT client over TCP, the part files read back with
//! DuckDB and pyarrow; `centinela export --parquet` from the SQLite database; a lake
//! folder on a disk that fills up and frees again.
//!
//! The readers are the python `duckdb` and `pyarrow` packages (`.ci/install-parquet.sh`
//! installs them); without them these tests print `SKIPPED` and pass.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::lake::{self, read_lake, write_config};
use support::mqtt::{free_port, Publisher};
use support::process::{centinela, start_service, stop, wait_for};

/// Reads a lake with both readers and prints one JSON object: for each reader and each
/// table, the rows (ordered) and the type of `ts`.
const READ_LAKE: &str = r#"
import json, sys
import duckdb
import pyarrow as pa, pyarrow.dataset as ds
root = sys.argv[1]
out = {}
con = duckdb.connect()
for table, cols in (("readings", "series, value, unit"), ("alerts", "rule, series, state, severity, value, unit, message")):
    glob = f"{root}/{table}/**/*.parquet"
    try:
        rows = con.execute(
            f"SELECT epoch_ms(ts), {cols}, CAST(date AS VARCHAR), hour, typeof(ts) "
            f"FROM read_parquet('{glob}', hive_partitioning = true) ORDER BY ts, series"
        ).fetchall()
    except duckdb.IOException:
        rows = []
    out[f"duckdb_{table}"] = [list(r) for r in rows]
    try:
        t = ds.dataset(f"{root}/{table}", format="parquet", partitioning="hive").to_table()
    except (FileNotFoundError, pa.ArrowInvalid):
        out[f"pyarrow_{table}"] = {"rows": [], "ts": None}
        continue
    ts_type = t.schema.field("ts").type
    d = t.to_pydict()
    n = t.num_rows
    names = [c.strip() for c in cols.split(",")]
    rows = sorted(
        ([int(d["ts"][i].timestamp() * 1000)] + [d[c][i] for c in names] for i in range(n)),
        key=lambda r: (r[0], r[1] if table == "readings" else r[2]),
    )
    out[f"pyarrow_{table}"] = {"rows": rows, "ts": str(ts_type)}
print(json.dumps(out))
"#;

/// `GET path` on the HTTP endpoint: (status, body).
fn get(http: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |b| b.1).to_string();
    (status, body)
}

/// The value of an unlabelled metric in `/metrics`.
fn metric(http: u16, name: &str) -> u64 {
    let (_, body) = get(http, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// The parquet stage of `/healthz`.
fn parquet_health(http: u16) -> (u16, Value) {
    let (status, body) = get(http, "/healthz");
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let stage = v["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "parquet"))
        .cloned()
        .unwrap_or(Value::Null);
    (status, stage)
}

/// What was published: (ts, series, value, unit).
type Published = Vec<(i64, String, f64, Option<String>)>;

/// Publishes `n` readings `step` ms apart from `t0` on two series (one with a unit); the
/// last but one, a temperature of 35, fires the rule `hot`.
async fn publish(port: u16, id: &str, n: usize, t0: i64, step: i64) -> Published {
    let mut p = Publisher::connect(port, id, None).await;
    let mut sent = Vec::new();
    for i in 0..n {
        let ts = t0 + i as i64 * step;
        let (topic, series, value, unit) = if i % 2 == 0 {
            (
                "sensors/lab/n1/temperature",
                "lab/n1/temperature",
                20.0 + i as f64 / 4.0,
                Some("°C"),
            )
        } else {
            (
                "sensors/lab/n2/humidity",
                "lab/n2/humidity",
                40.5 + i as f64,
                None,
            )
        };
        let value = if i == n - 2 { 35.0 } else { value.min(29.0) };
        let payload = match unit {
            Some(u) => format!(r#"{{"value":{value},"ts":{ts},"unit":"{u}"}}"#),
            None => format!(r#"{{"value":{value},"ts":{ts}}}"#),
        };
        p.publish(topic, payload).await;
        sent.push((ts, series.to_string(), value, unit.map(String::from)));
    }
    p.wait_acked(n as u64).await;
    sent.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    sent
}

/// The UTC date and hour of `ts`, as the partition folders name them.
fn date_hour(ts: i64) -> (String, String) {
    let t = chrono::DateTime::from_timestamp_millis(ts).unwrap();
    (t.format("%Y-%m-%d").to_string(), t.format("%H").to_string())
}

/// Every reader saw exactly `sent`, with units, in the partition of its time, and the
/// event of the rule `hot`.
fn assert_lake_holds(lake: &Value, sent: &Published) {
    let duck = lake["duckdb_readings"].as_array().unwrap();
    assert_eq!(duck.len(), sent.len(), "duckdb rows: {duck:?}");
    for (row, (ts, series, value, unit)) in duck.iter().zip(sent) {
        assert_eq!(row[0].as_i64(), Some(*ts), "{row}");
        assert_eq!(row[1].as_str(), Some(series.as_str()), "{row}");
        assert_eq!(row[2].as_f64(), Some(*value), "{row}");
        assert_eq!(row[3].as_str(), unit.as_deref(), "{row}");
        let (date, hour) = date_hour(*ts);
        assert_eq!(row[4].as_str(), Some(date.as_str()), "{row}");
        // DuckDB guesses the type of a hive value: `hour=01` stays the text "01" (a
        // leading zero is not a number to it), `hour=10` becomes the number 10.
        let read_hour = row[5]
            .as_str()
            .map(str::to_string)
            .or_else(|| row[5].as_i64().map(|h| format!("{h:02}")));
        assert_eq!(read_hour.as_deref(), Some(hour.as_str()), "{row}");
        assert_eq!(row[6].as_str(), Some("TIMESTAMP WITH TIME ZONE"), "{row}");
    }
    let arrow = &lake["pyarrow_readings"];
    assert_eq!(
        arrow["ts"].as_str(),
        Some("timestamp[ms, tz=UTC]"),
        "{arrow}"
    );
    let rows = arrow["rows"].as_array().unwrap();
    assert_eq!(rows.len(), sent.len());
    for (row, (ts, series, value, unit)) in rows.iter().zip(sent) {
        assert_eq!(row[0].as_i64(), Some(*ts), "{row}");
        assert_eq!(row[1].as_str(), Some(series.as_str()), "{row}");
        assert_eq!(row[2].as_f64(), Some(*value), "{row}");
        assert_eq!(row[3].as_str(), unit.as_deref(), "{row}");
    }
    let hot = sent.iter().find(|r| r.2 == 35.0).unwrap();
    for reader in ["duckdb_alerts", "pyarrow_alerts"] {
        let rows = match &lake[reader] {
            Value::Array(a) => a.clone(),
            v => v["rows"].as_array().unwrap().clone(),
        };
        let firing: Vec<&Value> = rows.iter().filter(|r| r[3] == "firing").collect();
        assert_eq!(firing.len(), 1, "{reader}: {rows:?}");
        let f = firing[0];
        assert_eq!(f[0].as_i64(), Some(hot.0), "{f}");
        assert_eq!(f[1], "hot");
        assert_eq!(f[2], "lab/n1/temperature");
        assert_eq!(f[5].as_f64(), Some(35.0));
        assert_eq!(f[6], "°C");
    }
}

/// The part files under `dir` (and no temporary file left), with their sizes.
fn part_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let ext = p.extension().and_then(|x| x.to_str()).unwrap_or_default();
                assert!(ext != "tmp", "a temporary file is left: {}", p.display());
                if ext == "parquet" {
                    out.push((p, e.metadata().unwrap().len()));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_published_over_tcp_are_read_back_by_duckdb_and_pyarrow() {
    if !lake::python_with(&["duckdb", "pyarrow"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (port, http) = (free_port(), free_port());
    // Read while the service runs: no merge of the closed hours may swap files under
    // pyarrow meanwhile (tests/parquet_compact.rs tests compaction).
    let extra = format!(
        "[output.parquet]\ndir = \"{}\"\nflush_interval = \"1s\"\ncompact = false\n",
        lake.display()
    );
    let config = write_config(dir.path(), port, http, &extra);
    let svc = start_service(&config, port);
    // Over an hour and a bit: two or three hour partitions.
    let n = 200;
    let t0 = centinela::model::now_ms() - 80 * 60_000;
    let sent = publish(port, "parquet-live", n, t0, 20_000).await;
    // Closed files appear while the service runs (flush_interval), not only at the stop.
    wait_for("every reading in a part file", 30, || {
        metric(http, "centinela_parquet_rows_written_total") == n as u64
    })
    .await;
    wait_for("the alert event in a part file", 30, || {
        metric(http, "centinela_parquet_events_written_total") >= 1
    })
    .await;
    let (status, stage) = parquet_health(http);
    assert_eq!(status, 200, "{stage}");
    assert_eq!(stage["ok"], true, "{stage}");
    assert_lake_holds(&read_lake(READ_LAKE, &lake), &sent);

    let (code, log) = stop(svc);
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    let files = part_files(&lake);
    let bytes: u64 = files.iter().map(|f| f.1).sum();
    println!(
        "{n} readings in {} files, {bytes} bytes ({:.1} bytes a reading with footers)",
        files.len(),
        bytes as f64 / n as f64
    );
    for (p, _) in &files {
        let rel = p
            .strip_prefix(&lake)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ok = (rel.starts_with("readings/date=") || rel.starts_with("alerts/date="))
            && rel.contains("/hour=")
            && rel.rsplit('/').next().unwrap().starts_with("part-");
        assert!(ok, "{rel}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_what_sqlite_holds_in_the_same_layout() {
    if !lake::python_with(&["duckdb", "pyarrow"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    // No [output.parquet]: the export needs only the database.
    let config = write_config(dir.path(), port, http, "");
    let svc = start_service(&config, port);
    let n = 120;
    // The last three hours, a reading every 90 s.
    let t0 = centinela::model::now_ms() - 3 * 3_600_000;
    let sent = publish(port, "parquet-export", n, t0, 90_000).await;
    wait_for("every reading in SQLite", 30, || {
        metric(http, "centinela_readings_stored_total") == n as u64
    })
    .await;
    let (code, log) = stop(svc);
    assert_eq!(code, Some(0), "{log}");

    let db = dir.path().join("c.db");
    let out = dir.path().join("export");
    let o = centinela(&[
        "export",
        "--db",
        db.to_str().unwrap(),
        "--parquet",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.starts_with(&format!("wrote {n} readings and 1 alert events in ")),
        "{text}"
    );
    assert_lake_holds(&read_lake(READ_LAKE, &out), &sent);

    // --series and --since pick a part: the humidity of the last hour and a half.
    let part = dir.path().join("part");
    let o = centinela(&[
        "export",
        "--db",
        db.to_str().unwrap(),
        "--parquet",
        part.to_str().unwrap(),
        "--series",
        "lab/+/humidity",
        "--since",
        "90m",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let since = centinela::model::now_ms() - 90 * 60_000;
    let want: Vec<_> = sent
        .iter()
        .filter(|r| r.1 == "lab/n2/humidity" && r.0 >= since)
        .collect();
    let got = read_lake(READ_LAKE, &part);
    let rows = got["duckdb_readings"].as_array().unwrap();
    // Readings a moment either side of the cut-off: the clock moved on between them.
    assert!(
        rows.len().abs_diff(want.len()) <= 2 && !rows.is_empty(),
        "{} rows, {} wanted",
        rows.len(),
        want.len()
    );
    assert!(rows.iter().all(|r| r[1] == "lab/n2/humidity"));
    assert!(got["duckdb_alerts"].as_array().unwrap().is_empty());

    // A folder that cannot be made is named.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let o = centinela(&[
        "export",
        "--db",
        db.to_str().unwrap(),
        "--parquet",
        blocker.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(blocker.to_str().unwrap()), "{err}");
}

/// A lake folder that cannot be written for a while: as root a small tmpfs filled to
/// the last byte (a full disk), otherwise folders made read-only with chmod.
enum Fault {
    Full { mount: tempfile::TempDir },
    ReadOnly { lake: PathBuf },
}

impl Fault {
    /// Where the lake goes, and the fault not yet on.
    fn prepare(dir: &Path) -> Option<(Fault, PathBuf)> {
        // Root ignores file modes, so it gets a full disk instead.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !root {
            let lake = dir.join("lake");
            return Some((Fault::ReadOnly { lake: lake.clone() }, lake));
        }
        let mount = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(mount.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("SKIPPED: root, but cannot mount a tmpfs");
            return None;
        }
        let lake = mount.path().join("lake");
        Some((Fault::Full { mount }, lake))
    }

    fn begin(&self) {
        match self {
            Fault::Full { mount } => {
                let mut f = std::fs::File::create(mount.path().join("filler")).unwrap();
                let block = vec![0u8; 64 * 1024];
                while f.write_all(&block).is_ok() {}
                while f.write_all(&[0u8; 512]).is_ok() {}
                while f.write_all(&[0u8]).is_ok() {}
                let _ = f.sync_all();
            }
            Fault::ReadOnly { lake } => chmod_dirs(lake, "0555"),
        }
    }

    fn end(&self) {
        match self {
            Fault::Full { mount } => std::fs::remove_file(mount.path().join("filler")).unwrap(),
            Fault::ReadOnly { lake } => chmod_dirs(lake, "0755"),
        }
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        if let Fault::Full { mount } = self {
            let _ = Command::new("umount").arg("-l").arg(mount.path()).status();
        }
    }
}

fn chmod_dirs(root: &Path, mode: &str) {
    let ok = Command::new("find")
        .arg(root)
        .args(["-type", "d", "-exec", "chmod", mode, "{}", "+"])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_that_cannot_be_written_is_unhealthy_and_loses_nothing_once_it_can() {
    if !lake::python_with(&["duckdb", "pyarrow"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some((fault, lake)) = Fault::prepare(dir.path()) else {
        return;
    };
    let (port, http) = (free_port(), free_port());
    let extra = format!(
        "[output.parquet]\ndir = \"{}\"\nflush_interval = \"1s\"\n",
        lake.display()
    );
    let config = write_config(dir.path(), port, http, &extra);
    let svc = start_service(&config, port);
    let t0 = centinela::model::now_ms() - 10 * 60_000;
    let mut sent = publish(port, "parquet-before", 40, t0, 1000).await;
    wait_for("the first readings in a part file", 30, || {
        metric(http, "centinela_parquet_rows_written_total") == 40
    })
    .await;

    fault.begin();
    sent.extend(publish(port, "parquet-during", 100, t0 + 60_000, 1000).await);
    wait_for("a failed write", 30, || {
        metric(http, "centinela_parquet_write_errors_total") >= 1
    })
    .await;
    let (status, stage) = parquet_health(http);
    // The stream goes on without the lake: degraded (200), with the reason.
    assert_eq!(status, 200, "{stage}");
    assert_eq!(stage["ok"], false, "{stage}");
    let detail = stage["detail"].as_str().unwrap().to_string();
    assert!(detail.starts_with("cannot write: "), "{detail}");
    assert!(detail.contains("readings held, retried"), "{detail}");
    // The stream goes on: SQLite takes every reading while the lake cannot.
    wait_for("every reading in SQLite meanwhile", 30, || {
        metric(http, "centinela_readings_stored_total") == 140
    })
    .await;
    wait_for("the lake holding the 100 it could not write", 30, || {
        metric(http, "centinela_parquet_rows_buffered") == 100
    })
    .await;
    assert_eq!(metric(http, "centinela_parquet_rows_written_total"), 40);

    fault.end();
    wait_for(
        "the held readings written once the folder can be",
        60,
        || metric(http, "centinela_parquet_rows_written_total") == 140,
    )
    .await;
    let (status, stage) = parquet_health(http);
    assert_eq!(status, 200, "{stage}");
    assert_eq!(metric(http, "centinela_parquet_rows_dropped_total"), 0);
    let (code, log) = stop(svc);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("cannot write a part file"), "{log}");
    assert!(log.contains("part files are written again"), "{log}");
    sent.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let rows = read_lake(READ_LAKE, &lake)["duckdb_readings"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rows.len(), sent.len(), "none lost, none twice");
    for (row, (ts, series, value, _)) in rows.iter().zip(&sent) {
        assert_eq!(row[0].as_i64(), Some(*ts), "{row}");
        assert_eq!(row[1].as_str(), Some(series.as_str()), "{row}");
        assert_eq!(row[2].as_f64(), Some(*value), "{row}");
    }
    part_files(&lake);
}

/// kill -9 in the middle of a steady stream: every file left is whole (both readers
/// read the folder), and what is missing is only the last `flush_interval` before the
/// kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_whole_files_and_loses_at_most_the_flush_interval() {
    if !lake::python_with(&["duckdb", "pyarrow"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (port, http) = (free_port(), free_port());
    let extra = format!(
        "[output.parquet]\ndir = \"{}\"\nflush_interval = \"2s\"\n",
        lake.display()
    );
    let config = write_config(dir.path(), port, http, &extra);
    let mut svc = start_service(&config, port);
    let mut p = Publisher::connect(port, "parquet-kill", None).await;
    // 100 readings a second for 7 s, stamped with the time they are sent.
    let mut sent = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(7) && sent.len() < 2_000 {
        let ts = centinela::model::now_ms();
        p.publish(
            "sensors/lab/n3/pressure",
            format!(r#"{{"value":{},"ts":{ts}}}"#, sent.len()),
        )
        .await;
        sent.push(ts);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.wait_acked(sent.len() as u64).await;
    let written_before = metric(http, "centinela_parquet_rows_written_total");
    svc.kill().unwrap();
    let killed_at = centinela::model::now_ms();
    svc.wait().unwrap();
    assert!(written_before > 0, "no file closed in 7 s");
    let rows = read_lake(READ_LAKE, &lake);
    let duck = rows["duckdb_readings"].as_array().unwrap();
    assert_eq!(
        rows["pyarrow_readings"]["rows"].as_array().unwrap().len(),
        duck.len()
    );
    let stored: std::collections::HashSet<i64> =
        duck.iter().filter_map(|r| r[0].as_i64()).collect();
    let lost: Vec<i64> = sent
        .iter()
        .copied()
        .filter(|t| !stored.contains(t))
        .collect();
    let window = lost.first().map_or(0, |first| killed_at - first);
    println!(
        "kill -9: {} of {} readings in the lake, {} lost, the oldest lost {window} ms before the kill",
        duck.len(),
        sent.len(),
        lost.len()
    );
    // flush_interval (2 s), plus the write itself, the way through the pipeline and
    // scheduling on a loaded machine.
    assert!(
        window <= 5_000,
        "lost readings from {window} ms before the kill"
    );
    // Everything older than that is there.
    let cut = killed_at - 5_000;
    assert!(sent
        .iter()
        .filter(|&&t| t < cut)
        .all(|t| stored.contains(t)));
    part_files(&lake);
}
