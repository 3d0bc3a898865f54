//! What a person reads, from the real binary: the journal's line per alert transition,
//! resolved and cancelled texts in the history, the numbers in tables, every problem
//! of a configuration file at once, and spreadsheet times in `replay --csv`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::mqtt::{free_port, Publisher};
use support::process::{centinela, stderr, stdout, BIN};

fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let path = dir.join("centinela.toml");
    let text = format!(
        "[broker]\nlisten = \"127.0.0.1:{port}\"\nusername = \"texts\"\n\n[storage.sqlite]\npath = \"{}\"\nflush_interval = \"100ms\"\n\n[engine]\ntick = \"100ms\"\n\n{extra}",
        dir.join("c.db").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `centinela run` with its log in `log` (a file: it is read while the service runs).
fn start_service(config: &Path, port: u16, log: &Path) -> Child {
    let child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        // The user that publishes readings and acks (control needs a user with the right).
        .env("CENTINELA_MQTT_PASSWORD", "texts-password")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the service did not start listening on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn stop(mut child: Child) {
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

async fn wait_for_line(log: &Path, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| f(l)) {
            return l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line for {what} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn alerts_json(db: &Path) -> Vec<serde_json::Value> {
    let o = centinela(&["alerts", "--db", db.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const RULES: &str = "[[rules]]\nname = \"hot\"\nseries = \"gh/+/temperature\"\nkind = \"threshold\"\nabove = 30.0\nclear = 28.0\nseverity = \"critical\"\n\n\
                     [[rules]]\nname = \"damp\"\nseries = \"gh/+/humidity\"\nkind = \"threshold\"\nabove = 80.0\nfor = \"1h\"\n\n\
                     [[rules]]\nname = \"low\"\nseries = \"gh/+/battery\"\nkind = \"threshold\"\nbelow = 3.5\nseverity = \"info\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_tells_every_transition_and_the_history_says_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, RULES);
    let db = dir.path().join("c.db");
    let log = dir.path().join("run.log");
    let t0 = support::clock::past_t0();

    let svc = start_service(&config, port, &log);
    let mut p = Publisher::connect(port, "texts", Some(("texts", "texts-password"))).await;
    // JSON with a unit, then plain numbers: the series keeps its unit.
    let first = [
        (
            "sensors/gh/n1/temperature",
            format!(r#"{{"value":25,"unit":"°C","ts":{t0}}}"#),
        ),
        (
            "sensors/gh/n1/temperature",
            format!(r#"{{"value":31.200000000000003,"ts":{}}}"#, t0 + 1_000),
        ),
        (
            "sensors/gh/n1/humidity",
            format!(r#"{{"value":85,"ts":{}}}"#, t0 + 1_000),
        ),
        (
            "sensors/gh/n1/battery",
            format!(
                r#"{{"value":3.4099999999999997,"unit":"V","ts":{}}}"#,
                t0 + 1_000
            ),
        ),
    ];
    for (topic, payload) in &first {
        p.publish(topic, payload.clone()).await;
    }
    let n = first.len() as u64;
    p.wait_acked(n).await;

    let firing = wait_for_line(&log, "firing", |l| {
        l.contains("alert firing") && l.contains("rule=hot")
    })
    .await;
    assert!(
        firing.contains("WARN"),
        "critical firing is a warning: {firing}"
    );
    assert!(firing.contains("series=gh/n1/temperature"), "{firing}");
    assert!(firing.contains("value=31.2 °C"), "{firing}");
    assert!(firing.contains("state=firing"), "{firing}");
    assert!(
        firing.contains("gh/n1/temperature is 31.2 °C, above 30"),
        "{firing}"
    );
    let info = wait_for_line(&log, "info firing", |l| {
        l.contains("alert firing") && l.contains("rule=low")
    })
    .await;
    assert!(info.contains(" INFO "), "{info}");
    assert!(info.contains("value=3.41 V"), "{info}");

    // Acknowledged, then silenced: each a line.
    p.publish(
        "centinela/control",
        r#"{"action":"ack","alert":"hot/gh/n1/temperature","by":"ana"}"#,
    )
    .await;
    let ack = wait_for_line(&log, "acknowledged", |l| l.contains("alert acknowledged")).await;
    assert!(
        ack.contains("rule=hot") && ack.contains("state=acknowledged"),
        "{ack}"
    );
    assert!(ack.contains("value=31.2 °C"), "{ack}");
    let until = t0 * 2;
    p.publish(
        "centinela/control",
        format!(r#"{{"action":"silence","pattern":"low","until":{until},"reason":"battery ordered","by":"ana"}}"#),
    )
    .await;
    let silenced = wait_for_line(&log, "silenced", |l| l.contains("alert silenced")).await;
    assert!(
        silenced.contains("rule=low")
            && silenced.contains("series=gh/n1/battery")
            && silenced.contains("state=firing"),
        "{silenced}"
    );
    assert!(silenced.contains("value=3.41 V"), "{silenced}");

    // The pending humidity alert is cancelled; the temperature resolves.
    p.publish(
        "sensors/gh/n1/humidity",
        format!(r#"{{"value":70,"ts":{}}}"#, t0 + 60_000),
    )
    .await;
    p.publish(
        "sensors/gh/n1/temperature",
        format!(r#"{{"value":21.76,"ts":{}}}"#, t0 + 241_000),
    )
    .await;
    p.wait_acked(n + 4).await;
    let resolved = wait_for_line(&log, "resolved", |l| l.contains("alert resolved")).await;
    assert!(resolved.contains(" INFO "), "{resolved}");
    assert!(
        resolved.contains("rule=hot")
            && resolved.contains("value=21.76 °C")
            && resolved.contains("state=resolved"),
        "{resolved}"
    );
    assert!(
        resolved.contains("gh/n1/temperature is back to 21.76 °C (clear below 28) after 4m firing"),
        "{resolved}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while alerts_json(&db).len() < 6 {
        assert!(Instant::now() < deadline, "{:#?}", alerts_json(&db));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(svc);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("no [[rules]] configured"),
        "rules are configured: {text}"
    );
    // Pending and cancelled are for the history, not the journal at info.
    assert!(!text.contains("alert cancelled"), "{text}");

    let events = alerts_json(&db);
    let of = |rule: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["rule"] == rule)
            .map(|e| e["state"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(of("damp"), ["pending", "cancelled"], "{events:#?}");
    // (The ack is stamped with the wall clock, the others with the readings' time.)
    let mut hot = of("hot");
    hot.sort();
    assert_eq!(hot, ["acknowledged", "firing", "resolved"], "{events:#?}");
    let hot_firing = events
        .iter()
        .find(|e| e["rule"] == "hot" && e["state"] == "firing")
        .unwrap();
    assert_eq!(
        hot_firing["unit"], "°C",
        "a plain reading keeps the series' unit"
    );
    let cancelled = events.iter().find(|e| e["state"] == "cancelled").unwrap();
    assert_eq!(
        cancelled["message"],
        "gh/n1/humidity is back to 70 after 59s pending: cancelled, never fired"
    );
    let resolved = events.iter().find(|e| e["state"] == "resolved").unwrap();
    assert_eq!(
        resolved["message"],
        "gh/n1/temperature is back to 21.76 °C (clear below 28) after 4m firing"
    );

    // The table: numbers as written, a space before the unit, aligned columns.
    let o = centinela(&["alerts", "--db", db.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TIME"), "{table}");
    let value_end = lines[0].find("VALUE").unwrap() + "VALUE".len();
    let firing_row = lines
        .iter()
        .find(|l| l.contains(" firing ") && l.contains("hot/"))
        .unwrap();
    assert!(firing_row.contains("31.2  °C"), "{table}");
    assert_eq!(&firing_row[value_end - 4..value_end], "31.2", "{table}");
    let battery_row = lines.iter().find(|l| l.contains("low/")).unwrap();
    assert_eq!(&battery_row[value_end - 4..value_end], "3.41", "{table}");
    assert!(!table.contains("3.4099999"), "{table}");
    assert!(!table.contains("31.200000"), "{table}");

    // readings: the unit of the series beside every value.
    let o = centinela(&[
        "readings",
        "--db",
        db.to_str().unwrap(),
        "--series",
        "gh/n1/temperature",
    ]);
    let readings = stdout(&o);
    assert_eq!(readings.lines().count(), 4, "{readings}");
    for l in readings.lines().skip(1) {
        assert!(l.ends_with(" °C"), "{readings}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_warns_when_no_rules_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let log = dir.path().join("run.log");
    let svc = start_service(&config, port, &log);
    let line = wait_for_line(&log, "the warning", |l| {
        l.contains("no [[rules]] configured")
    })
    .await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("centinela config"), "{line}");
    stop(svc);
}

#[test]
fn validate_reports_every_problem_with_its_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[broker]\nlisten = \"127.0.0.1:1883\"\n\n\
         [[rules]]\nname = \"hot\"\nseries = \"#\"\nkind = \"threshold\"\nabove = \"35\"\n\n\
         [[rules]]\nname = \"chat\"\nseries = \"#\"\nkind = \"threshold\"\nabove = 1.0\nnotify = [\"slack\"]\n\n\
         [[rules]]\nname = \"cold\"\nseries = \"#\"\nkind = \"threshold\"\nbelow = 5.0\nclear = 4.0\nfor = 10\n",
    )
    .unwrap();
    let o = centinela(&["validate", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    let file = path.display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            format!("error: {file}:8:9: rules[0].above: expected a number (such as 35 or 35.5), found the text \"35\": write it without quotes, above = 35"),
            format!("error: {file}:15:11: rules[1].notify[0]: there is no channel type \"slack\": the channel types are email, telegram, webhook, mqtt (configured here: none)"),
            format!("error: {file}:22:9: rules[2].clear: clear = 4 is below the threshold 5: for `below` it must be ≥ 5"),
            format!("error: {file}:23:7: rules[2].for: expected a duration in quotes such as \"30s\", \"5m\" or \"2h\", found the number 10: write it with a unit, for = \"10s\""),
            "4 problems".to_string(),
        ],
        "{err}"
    );
}

#[test]
fn replay_reads_spreadsheet_times_in_the_zone_given() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        1,
        "[[rules]]\nname = \"hot\"\nseries = \"gh/+/t\"\nkind = \"threshold\"\nabove = 30.0\nclear = 28.0\n",
    );
    let csv = dir.path().join("sheet.csv");
    std::fs::write(
        &csv,
        "series,ts,value\ngh/a/t,2026-11-20 10:00:00,25\ngh/a/t,2026-11-20 10:01:00,31.5\ngh/a/t,\"2026-11-20 10:05:30\",27.099999999999998\n",
    )
    .unwrap();
    let run = |tz: Option<&str>| {
        let mut args = vec![
            "replay",
            "--config",
            config.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
        ];
        if let Some(z) = tz {
            args.extend(["--tz", z]);
        }
        centinela(&args)
    };
    let o = run(None);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let firing = text.lines().find(|l| l.contains("firing")).unwrap();
    assert!(firing.starts_with("2026-11-20T10:01:00.000Z"), "{text}");
    let resolved = text.lines().find(|l| l.contains("resolved")).unwrap();
    assert!(resolved.starts_with("2026-11-20T10:05:30.000Z"), "{text}");
    assert!(
        resolved.contains("gh/a/t is back to 27.1 (clear below 28) after 4m 30s firing"),
        "{text}"
    );

    let o = run(Some("+01:00"));
    assert!(o.status.success(), "{}", stderr(&o));
    let firing = stdout(&o);
    assert!(
        firing.contains("2026-11-20T09:01:00.000Z"),
        "10:01 at +01:00 is 09:01 UTC: {firing}"
    );
    let o = centinela(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
        "--tz",
        "+01:00",
        "--json",
    ]);
    let first: serde_json::Value =
        serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(first["ts"], "2026-11-20T09:01:00.000Z", "{}", stdout(&o));

    let o = run(Some("Mars/Olympus"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("+01:00"), "{}", stderr(&o));
}
