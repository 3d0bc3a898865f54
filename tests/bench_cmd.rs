//! `centinela bench` as a user runs it: short paced runs of the whole pipeline (QoS 0
//! and 1) and of the embedded broker alone; the counts add up, the JSON carries the
//! documented fields, the table and the progress lines are printed. No timing is
//! asserted: this machine is shared.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_centinela");

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("bench.toml");
    std::fs::write(
        &path,
        "[storage.sqlite]\nflush_interval = \"200ms\"\n\n[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    path
}

fn bench(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    Command::new(BIN)
        .arg("bench")
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .env_remove("CENTINELA_CONFIG")
        .output()
        .unwrap()
}

fn json(o: &Output) -> Value {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {out}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} is not a count: {v}"))
}

#[test]
fn a_paced_pipeline_run_stores_everything_it_published_and_reports_it_as_json() {
    let o = bench(&[
        "--duration",
        "2s",
        "--rate",
        "2000",
        "--series",
        "200",
        "--json",
    ]);
    let r = json(&o);
    for field in [
        "mode",
        "broker",
        "qos",
        "published",
        "received",
        "readings",
        "stored",
        "lost",
        "lost_in_broker",
        "decode_errors",
        "publish_rate",
        "received_rate",
        "stored_rate",
        "latency",
        "peak_rss_mib",
        "cpu_s_per_million",
        "db_bytes_per_reading",
    ] {
        assert!(r.get(field).is_some(), "no {field} in {r}");
    }
    assert_eq!(r["mode"], "pipeline");
    assert_eq!(r["broker"], "embedded");
    let published = u(&r, "published");
    assert!(published > 0, "{r}");
    assert_eq!(published, u(&r, "received") + u(&r, "lost"), "{r}");
    assert_eq!(u(&r, "lost"), 0, "{r}");
    assert_eq!(u(&r, "lost_in_broker"), 0, "{r}");
    // Plain numbers: one reading a message, every one stored.
    assert_eq!(u(&r, "readings"), u(&r, "received"), "{r}");
    assert_eq!(u(&r, "stored"), u(&r, "readings"), "{r}");
    assert_eq!(u(&r, "decode_errors"), 0, "{r}");
    // The latency probe's threshold crossings came back as alert events.
    let lat = &r["latency"];
    assert!(u(lat, "samples") > 0, "{r}");
    for k in ["p50_ms", "p99_ms", "max_ms"] {
        assert!(lat[k].as_f64().is_some(), "{k}: {r}");
    }
    assert!(r["peak_rss_mib"].as_f64().unwrap() > 0.0, "{r}");
}

#[test]
fn at_qos_1_every_message_is_acknowledged_and_stored() {
    let o = bench(&[
        "--duration",
        "1s",
        "--rate",
        "2000",
        "--qos",
        "1",
        "--publishers",
        "2",
        "--json",
    ]);
    let r = json(&o);
    assert_eq!(r["qos"], 1);
    let acked = u(&r, "acked");
    assert!(acked > 0, "{r}");
    // The probe's messages (QoS 0) are published too, not acknowledged.
    assert!(acked <= u(&r, "published"), "{r}");
    assert_eq!(u(&r, "lost"), 0, "{r}");
    assert_eq!(u(&r, "stored"), u(&r, "received"), "{r}");
}

#[test]
fn the_embedded_broker_alone_relays_to_a_raw_subscriber() {
    let o = bench(&["--raw", "--messages", "20000", "--rate", "20000", "--json"]);
    let r = json(&o);
    assert_eq!(r["mode"], "raw");
    assert_eq!(u(&r, "published"), 20_000, "{r}");
    assert_eq!(u(&r, "received") + u(&r, "lost"), 20_000, "{r}");
    assert_eq!(u(&r, "lost"), 0, "{r}");
    assert!(r["stored"].is_null(), "{r}");
    assert!(r["latency"].is_null(), "{r}");
}

#[test]
fn a_person_gets_progress_lines_and_a_table() {
    let o = bench(&["--duration", "2s", "--rate", "1000", "--series", "10"]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("published") && l.contains("stored") && l.ends_with("/s")),
        "no progress line in: {err}"
    );
    for row in [
        "published",
        "received",
        "stored",
        "lost",
        "publish→alert",
        "peak RSS",
        "CPU",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(row)),
            "no {row} row in:\n{out}"
        );
    }
}
