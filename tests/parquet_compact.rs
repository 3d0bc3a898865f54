//! Compaction of the data lake as a user gets it: `centinela run` with
//! `[output.parquet]`, readings published over MQTT into past hours (closed
//! partitions), the part files of each closed hour merged into one, and DuckDB reading
//! the same rows before and after; lakes left as a crash mid-merge would leave them,
//! recovered at start; an export into a live lake that adds no row twice.
//!
//! The reader is the python `duckdb` package (`.ci/install-parquet.sh`); without it
//! these tests print `SKIPPED` and pass.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use serde_json::Value;
use support::http::{http_get, metric};
use support::lake::{self, read_lake};
use support::mqtt::{free_port, Publisher};
use support::process::{self, start_service, wait_for, BIN};

const HOUR: i64 = 3_600_000;

/// Every reading and alert event DuckDB reads from the lake, ordered, as
/// `{"readings": [[ts, series, value, date, hour]…], "alerts": [[ts, rule, series,
/// state, date, hour]…], "dupes": n}`. A query that meets a merge's swap (a file
/// listed, then gone) is run again, as a user would.
const READ_LAKE: &str = r#"
import duckdb, glob, json, sys, time
root = sys.argv[1]
out = {}
for table, cols, key in (("readings", "series, value", "series, ts"), ("alerts", "rule, series, state", "rule, series, state, ts")):
    g = f"{root}/{table}/**/*.parquet"
    if not glob.glob(g, recursive=True):
        out[table] = []
        continue
    for i in range(10):
        try:
            src = f"read_parquet('{g}', hive_partitioning = true)"
            rows = duckdb.sql(
                f"SELECT epoch_ms(ts), {cols}, CAST(date AS VARCHAR), hour FROM {src} ORDER BY ALL"
            ).fetchall()
            dupes = duckdb.sql(f"SELECT count(*) - count(DISTINCT ({key})) FROM {src}").fetchall()[0][0]
            break
        except duckdb.IOException:
            if i == 9:
                raise
            time.sleep(0.5)
    out[table] = [list(r) for r in rows]
    out[f"{table}_dupes"] = dupes
print(json.dumps(out))
"#;

fn rows<'a>(lake: &'a Value, table: &str) -> &'a Vec<Value> {
    lake[table].as_array().unwrap()
}

/// The data lake's configuration in `dir/lake`, merging closed hours unless `parquet`
/// says otherwise.
fn write_config(dir: &Path, port: u16, http: u16, parquet: &str) -> PathBuf {
    let extra = format!(
        "[output.parquet]\ndir = \"{}\"\nflush_interval = \"1s\"\n{parquet}",
        dir.join("lake").display()
    );
    lake::write_config(dir, port, http, &extra)
}

/// SIGTERM; asserts a clean exit without errors and returns the log.
fn stop(child: Child) -> String {
    let (code, log) = process::stop(child);
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    log
}

fn metric_of(http: u16, name: &str) -> u64 {
    metric(&http_get(http, "/metrics"), name).unwrap_or(0)
}

/// Publishes `n` readings, `step` ms apart from `t0`, alternating a temperature and a
/// humidity; the temperature goes over 30 once (an alert fires) and back (it resolves).
/// Returns how many were published.
async fn publish(port: u16, id: &str, n: usize, t0: i64, step: i64) -> u64 {
    let mut p = Publisher::connect(port, id, None).await;
    for i in 0..n {
        let ts = t0 + i as i64 * step;
        let (topic, value) = if i % 2 == 0 {
            let v = if i == n / 2 {
                35.0
            } else {
                20.0 + (i % 7) as f64
            };
            ("sensors/lab/n1/temperature", v)
        } else {
            ("sensors/lab/n2/humidity", 40.5 + i as f64)
        };
        p.publish(topic, format!(r#"{{"value":{value},"ts":{ts}}}"#))
            .await;
    }
    p.wait_acked(n as u64).await;
    n as u64
}

/// The part files (`*.parquet`) of each partition folder under `table`, and whether a
/// temporary file is left anywhere under `root`.
fn files_per_partition(root: &Path, table: &str) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.join(table)];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().ends_with(".parquet") {
                let rel = d.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                *out.entry(rel).or_default() += 1;
            }
        }
    }
    out
}

fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".tmp") {
                out.push(p);
            }
        }
    }
    out
}

fn staging_is_empty(lake: &Path) -> bool {
    std::fs::read_dir(lake.join(".staging")).map_or(true, |mut d| d.next().is_none())
}

/// The folder (relative to the lake) of the hour partition starting at `start`.
fn hour_dir(table: &str, start: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(start).unwrap();
    format!(
        "{table}/date={}/hour={}",
        t.format("%Y-%m-%d"),
        t.format("%H")
    )
}

/// Readings over MQTT into two closed hours, three flushes each: with `compact =
/// false` every flush stays a file; started again with compaction on, the service
/// merges each closed partition (readings and alerts) into one file at start, and
/// DuckDB reads exactly the same rows. Late readings into a merged hour make a new
/// part file there, merged in turn once the grace has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_partitions_become_one_file_and_duckdb_reads_the_same_rows() {
    if !lake::python_with(&["duckdb"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (port, http) = (free_port(), free_port());
    let config = write_config(dir.path(), port, http, "compact = false\n");
    let svc = start_service(&config, port);
    // From the middle of the hour before last to the middle of the last one: across a
    // partition boundary, both hours closed.
    let now = centinela::model::now_ms();
    let this_hour = now - now.rem_euclid(HOUR);
    let (a, b) = (this_hour - 2 * HOUR, this_hour - HOUR);
    let t0 = a + HOUR / 2;
    let mut sent = 0;
    for k in 0..3 {
        sent += publish(port, &format!("flush-{k}"), 60, t0 + k * 20_000, 60_000).await;
        wait_for("the batch in part files", 30, || {
            metric_of(http, "centinela_parquet_rows_written_total") == sent
        })
        .await;
    }
    stop(svc);
    let before = read_lake(READ_LAKE, &lake);
    assert_eq!(rows(&before, "readings").len() as u64, sent);
    assert!(
        rows(&before, "alerts").len() >= 2,
        "{:?}",
        rows(&before, "alerts")
    );
    let files = files_per_partition(&lake, "readings");
    assert_eq!(files[&hour_dir("readings", a)], 3, "{files:?}");
    assert_eq!(files[&hour_dir("readings", b)], 3, "{files:?}");

    // Compaction on (the default): the lake is caught up on at start.
    let config = write_config(dir.path(), port, http, "");
    let svc = start_service(&config, port);
    wait_for("every closed partition in one file", 60, || {
        let r = files_per_partition(&lake, "readings");
        let al = files_per_partition(&lake, "alerts");
        r.values().chain(al.values()).all(|&n| n == 1) && staging_is_empty(&lake)
    })
    .await;
    let after = read_lake(READ_LAKE, &lake);
    assert_eq!(after["readings"], before["readings"]);
    assert_eq!(after["alerts"], before["alerts"]);
    assert_eq!(after["readings_dupes"], 0);
    let merged = metric_of(http, "centinela_parquet_compacted_files_total");
    assert!(merged >= 6, "{merged}");
    assert!(metric_of(http, "centinela_parquet_compactions_total") >= 2);

    // Late readings into hour a: a new part file there, merged once the grace is over.
    let late = publish(port, "late", 20, a + 1_000, 7_000).await;
    wait_for("the late readings in a part file", 30, || {
        metric_of(http, "centinela_parquet_rows_written_total") == late
    })
    .await;
    wait_for("hour a merged again", 60, || {
        files_per_partition(&lake, "readings")[&hour_dir("readings", a)] == 1
            && staging_is_empty(&lake)
    })
    .await;
    let last = read_lake(READ_LAKE, &lake);
    let in_a = |v: &Value| {
        rows(v, "readings")
            .iter()
            .filter(|r| r[0].as_i64().is_some_and(|t| (a..a + HOUR).contains(&t)))
            .count()
    };
    assert_eq!(in_a(&last), in_a(&before) + late as usize);
    assert_eq!(rows(&last, "readings").len() as u64, sent + late);
    assert_eq!(last["readings_dupes"], 0);
    assert_eq!(
        metric_of(http, "centinela_parquet_compaction_errors_total"),
        0
    );
    stop(svc);
    assert!(temp_files(&lake).is_empty(), "{:?}", temp_files(&lake));
}

/// Writes `n` readings of two series into the hour starting at `start`, as `parts`
/// part files; returns the folder.
fn hour_of_parts(lake: &Path, start: i64, parts: usize, n: usize) -> PathBuf {
    use centinela::store::parquet::{write_all, ParquetConfig};
    let layout = ParquetConfig::default().layout();
    for k in 0..parts {
        let rows = (0..n)
            .map(|i| centinela::model::Reading {
                series: if i % 2 == 0 { "x/a" } else { "x/b" }.into(),
                value: (k * n + i) as f64,
                ts: start + (k * n + i) as i64 * 1_000,
                unit: None,
            })
            .collect();
        assert!(write_all(lake, &layout, rows).failed.is_none());
    }
    lake.join(hour_dir("readings", start))
}

/// A lake as a crash at each point of a merge leaves it, then a start: every partition
/// has exactly its rows, once, in one file, and nothing is left in `.staging`.
///
/// - hour 1: the merged set built in `.staging`, never swapped in (plus a half-written
///   temporary file beside it);
/// - hour 2: swapped, the old set still in `.staging`;
/// - hour 3: a temporary part file left in the live folder by a crash mid-write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_point_of_a_merge_leaves_every_row_once() {
    if !lake::python_with(&["duckdb"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let now = centinela::model::now_ms();
    let h = |k: i64| now - now.rem_euclid(HOUR) - k * HOUR;
    let staging = lake.join(".staging");

    // Hour 1: three parts live; in staging a merged copy of them and a partial file.
    let live1 = hour_of_parts(&lake, h(3), 3, 40);
    let stage1 = staging.join(hour_dir("readings", h(3)).replace('/', "_"));
    std::fs::create_dir_all(&stage1).unwrap();
    let scratch = dir.path().join("scratch");
    let merged = hour_of_parts(&scratch, h(3), 1, 120);
    for e in std::fs::read_dir(&merged).unwrap().flatten() {
        std::fs::rename(e.path(), stage1.join("merged-1-1-0.parquet")).unwrap();
    }
    std::fs::write(stage1.join(".merged-1-1-1.parquet.tmp"), b"PAR1 half").unwrap();

    // Hour 2: swapped in (one merged file live), the old three parts in staging.
    let live2 = hour_of_parts(&lake, h(4), 3, 40);
    let stage2 = staging.join(hour_dir("readings", h(4)).replace('/', "_"));
    std::fs::create_dir_all(&stage2).unwrap();
    for e in std::fs::read_dir(&live2).unwrap().flatten() {
        std::fs::rename(e.path(), stage2.join(e.file_name())).unwrap();
    }
    let merged = hour_of_parts(&scratch, h(4), 1, 120);
    for e in std::fs::read_dir(&merged).unwrap().flatten() {
        std::fs::rename(e.path(), live2.join("merged-2-2-0.parquet")).unwrap();
    }

    // Hour 3: two parts and a stale temporary file of a third.
    let live3 = hour_of_parts(&lake, h(5), 2, 40);
    let tmp = live3.join(".part-3-3-3.parquet.tmp");
    std::fs::write(&tmp, b"PAR1 half").unwrap();
    assert!(Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(&tmp)
        .status()
        .unwrap()
        .success());

    // What a reader of the live tree sees already: each row once.
    let before = read_lake(READ_LAKE, &lake);
    assert_eq!(rows(&before, "readings").len(), 120 + 120 + 80);
    assert_eq!(before["readings_dupes"], 0);

    let (port, http) = (free_port(), free_port());
    let config = write_config(dir.path(), port, http, "");
    let svc = start_service(&config, port);
    wait_for("recovery and the merges", 60, || {
        let f = files_per_partition(&lake, "readings");
        staging_is_empty(&lake) && f.values().all(|&n| n == 1) && !tmp.exists()
    })
    .await;
    stop(svc);
    let after = read_lake(READ_LAKE, &lake);
    assert_eq!(after["readings"], before["readings"]);
    assert_eq!(after["readings_dupes"], 0);
    for (live, n) in [(&live1, 120), (&live2, 120), (&live3, 80)] {
        let start = rows(&after, "readings")
            .iter()
            .filter(|r| {
                let dir = hour_dir(
                    "readings",
                    r[0].as_i64().unwrap() - r[0].as_i64().unwrap().rem_euclid(HOUR),
                );
                live.ends_with(dir)
            })
            .count();
        assert_eq!(start, n, "{}", live.display());
    }
    assert!(temp_files(&lake).is_empty(), "{:?}", temp_files(&lake));
}

/// `centinela export --parquet` into the lake the running service writes: every
/// reading is there once, not twice, and the summary says how many were there
/// already; into an empty folder it writes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_into_a_live_lake_adds_no_row_twice() {
    if !lake::python_with(&["duckdb"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (port, http) = (free_port(), free_port());
    let config = write_config(dir.path(), port, http, "");
    let svc = start_service(&config, port);
    let now = centinela::model::now_ms();
    let n = publish(port, "export-live", 80, now - 2 * HOUR, 60_000).await;
    wait_for("every reading in the lake and in SQLite", 30, || {
        metric_of(http, "centinela_parquet_rows_written_total") == n
            && metric_of(http, "centinela_readings_stored_total") == n
    })
    .await;
    let export = |to: &Path| {
        let o = Command::new(BIN)
            .args(["export", "--config", config.to_str().unwrap(), "--parquet"])
            .arg(to)
            .env_remove("CENTINELA_CONFIG")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let text = export(&lake);
    assert!(
        text.starts_with("wrote 0 readings and 0 alert events in 0 files"),
        "{text}"
    );
    assert!(
        text.contains(&format!("skipped {n} readings and ")),
        "{text}"
    );
    // Both hours of readings, named.
    let first = now - 2 * HOUR;
    let first = hour_dir("readings", first - first.rem_euclid(HOUR));
    assert!(text.contains(&first), "{text}");
    let got = read_lake(READ_LAKE, &lake);
    assert_eq!(rows(&got, "readings").len() as u64, n);
    assert_eq!(got["readings_dupes"], 0);
    assert_eq!(got["alerts_dupes"], 0);
    stop(svc);
    assert_eq!(
        rows(&read_lake(READ_LAKE, &lake), "readings").len() as u64,
        n
    );

    let empty = dir.path().join("empty");
    let text = export(&empty);
    assert!(
        text.starts_with(&format!("wrote {n} readings and ")),
        "{text}"
    );
    assert!(!text.contains("skipped"), "{text}");
    assert_eq!(
        rows(&read_lake(READ_LAKE, &empty), "readings").len() as u64,
        n
    );
}

/// kill -9 while the service catches up on a lake of many unmerged hours: what a
/// reader sees right after the kill, before any recovery, is every row once; the next
/// start finishes the job with the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_merges_leaves_every_row_once() {
    if !lake::python_with(&["duckdb"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let now = centinela::model::now_ms();
    let first = now - now.rem_euclid(HOUR) - 13 * HOUR;
    for k in 0..12 {
        hour_of_parts(&lake, first + k * HOUR, 12, 300);
    }
    let total = 12 * 12 * 300;
    let (port, http) = (free_port(), free_port());
    let config = write_config(dir.path(), port, http, "");
    let mut svc = start_service(&config, port);
    wait_for("the first merge", 60, || {
        metric_of(http, "centinela_parquet_compactions_total") >= 1
    })
    .await;
    svc.kill().unwrap();
    svc.wait().unwrap();
    let merged_before = files_per_partition(&lake, "readings")
        .values()
        .filter(|&&n| n == 1)
        .count();
    let left_in_staging = !staging_is_empty(&lake);
    let seen = read_lake(READ_LAKE, &lake);
    assert_eq!(rows(&seen, "readings").len(), total);
    assert_eq!(seen["readings_dupes"], 0);

    let svc = start_service(&config, port);
    wait_for("every hour in one file", 60, || {
        staging_is_empty(&lake)
            && files_per_partition(&lake, "readings")
                .values()
                .all(|&n| n == 1)
    })
    .await;
    stop(svc);
    let after = read_lake(READ_LAKE, &lake);
    assert_eq!(after["readings"], seen["readings"]);
    assert_eq!(after["readings_dupes"], 0);
    println!(
        "killed with {merged_before} of 12 hours merged (staging left: {left_in_staging}); \
         all 12 after a restart"
    );
}
