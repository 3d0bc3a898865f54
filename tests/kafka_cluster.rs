//! Several `centinela run` processes as one Kafka consumer group against a real Apache
//! Kafka 4 broker: alert state on the changelog topic, restored by the new owner when an
//! instance is killed (`kill -9`), and exactly-once alert events (read with
//! `read_committed`); notifications delivered from the alerts topic by notifier
//! instances (`[notify] from_kafka`) to a real SMTP server (aiosmtpd).
#![cfg(feature = "kafka")]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use support::kafka;
use support::smtp_server as smtp;

use kafka::{free_port, produce, read_settled, Kafka, Run};

fn config(mqtt_port: u16, http_port: u16, brokers: &str) -> String {
    format!(
        "[broker]\nlisten = \"127.0.0.1:{mqtt_port}\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
         [engine]\ntick = \"100ms\"\n\n\
         [storage.sqlite]\nflush_interval = \"200ms\"\n\n\
         [source.kafka]\nbrokers = [\"{brokers}\"]\ntopics = [\"eo-in\"]\ngroup_id = \"eo\"\n\
         alerts_topic = \"eo-alerts\"\ncommit_interval = \"200ms\"\n\n\
         [[rules]]\nname = \"hot\"\nseries = \"site/+/temp\"\nkind = \"threshold\"\nabove = 30.0\n\
         severity = \"critical\"\n"
    )
}

/// Series `s` (of 12, in partition s % 6): reading `i` (one a second) is above 30 from
/// i = 10 + s to 59 and from 80 on, so every series crosses the threshold twice and
/// resolves once.
fn value(s: usize, i: usize) -> f64 {
    if (10 + s..60).contains(&i) || i >= 80 {
        35.0 + s as f64
    } else {
        20.0 + s as f64 / 2.0
    }
}

fn readings(t0: i64, range: std::ops::Range<usize>) -> Vec<(i32, Option<String>, String)> {
    let mut out = Vec::new();
    for i in range {
        for s in 0..12 {
            out.push((
                (s % 6) as i32,
                Some(format!("site/s{s}/temp")),
                format!(
                    r#"{{"value":{},"ts":{}}}"#,
                    value(s, i),
                    t0 + i as i64 * 1000
                ),
            ));
        }
    }
    out
}

/// Alert events on the alerts topic (committed only), per (series, state).
/// Reads on for 3 s after `want` arrived, to catch duplicates.
fn events(k: &Kafka, want: usize) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for (_, key, v) in read_settled(k, &["eo-alerts"], want, Duration::from_secs(3)) {
        assert_eq!(key, format!("hot/{}", v["series"].as_str().unwrap()));
        *out.entry((
            v["series"].as_str().unwrap().to_string(),
            v["state"].as_str().unwrap().to_string(),
        ))
        .or_insert(0) += 1;
    }
    out
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_killed_instance_s_firing_alerts_stay_firing_unannounced_and_every_crossing_fires_once() {
    let started = Instant::now();
    let Some(k) = Kafka::start() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(k.create_topic("eo-in", 6, false));
    let dir = tempfile::tempdir().unwrap();
    let mut a = Run::start(
        dir.path(),
        "a",
        &config(free_port(), free_port(), &k.bootstrap()),
    );
    a.wait_log("partitions assigned", 1);
    let b_http = free_port();
    let mut b = Run::start(
        dir.path(),
        "b",
        &config(free_port(), b_http, &k.bootstrap()),
    );
    b.wait_log("owned=3", 1);
    a.wait_log("partitions revoked", 1);

    // First half: every series crosses once, on whichever instance owns it.
    let t0 = centinela::model::now_ms() - 3_600_000;
    produce(&k, "eo-in", &readings(t0, 0..40));
    let first = events(&k, 12);
    assert_eq!(first.len(), 12, "{first:?}");
    assert!(
        first.iter().all(|((_, st), n)| st == "firing" && *n == 1),
        "{first:?}"
    );
    let on_a: HashSet<String> = a.stored().into_keys().collect();
    assert_eq!(on_a.len(), 6, "three partitions, two series each: {on_a:?}");

    // Mid-stream: more readings on their way, then a crash.
    produce(&k, "eo-in", &readings(t0, 40..50));
    a.kill9();
    produce(&k, "eo-in", &readings(t0, 50..100));

    // b takes over a's partitions (after the session timeout) with their state.
    b.wait_log("partitions assigned", 2);
    b.wait_log("Kafka: alert state restored", 2);
    let deadline = Instant::now() + Duration::from_secs(90);
    let stored_b = loop {
        let s = b.stored();
        let done = on_a.iter().all(|x| s.get(x).copied().unwrap_or(0) >= 50);
        if done {
            break s;
        }
        assert!(Instant::now() < deadline, "b stored {s:?}\n{}", b.log());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(stored_b.len(), 12, "{stored_b:?}");

    // Exactly-once in the alerts topic: two firings and one resolution per series,
    // whichever instance judged them; the alerts firing on a when it died were not
    // announced again by b.
    let all = events(&k, 36);
    for s in 0..12 {
        let series = format!("site/s{s}/temp");
        let n = |st: &str| all.get(&(series.clone(), st.to_string())).copied();
        assert_eq!(n("firing"), Some(2), "{series}: {all:?}");
        assert_eq!(n("resolved"), Some(1), "{series}: {all:?}");
    }
    assert_eq!(all.values().sum::<usize>(), 36, "{all:?}");

    // Every reading produced is stored: on a until it died, then on b; the readings a
    // stored but had not committed are stored again by b (same series, time, value).
    let mut rows: HashMap<(String, String), f64> = HashMap::new();
    let (ra, rb) = (a.rows(), b.rows());
    let total = ra.len() + rb.len();
    for (series, ts, v) in ra.into_iter().chain(rb) {
        if let Some(old) = rows.insert((series.clone(), ts.clone()), v) {
            assert_eq!(old, v, "{series} {ts}");
        }
    }
    assert_eq!(rows.len(), 12 * 100, "distinct (series, time)");
    assert!(total >= 12 * 100, "{total}");

    // What b says about itself, and what the brokers say about the group.
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = http_get(b_http, "/metrics");
        let lag_lines = m
            .lines()
            .filter(|l| l.starts_with("centinela_kafka_source_lag{") && l.ends_with("} 0"))
            .count();
        if lag_lines == 6 {
            break m;
        }
        assert!(Instant::now() < deadline, "lag 0 on 6 partitions: {m}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        m.contains("centinela_kafka_source_assigned_partitions 6\n"),
        "{m}"
    );
    let restored = metric(&m, "centinela_kafka_restored_alerts_total");
    assert!(restored >= 6, "a's six firing alerts at least: {m}");
    assert!(metric(&m, "centinela_kafka_transactions_total") > 0, "{m}");
    assert!(
        m.contains("centinela_kafka_source_lag{topic=\"eo-in\",partition=\"0\"} 0\n"),
        "{m}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_centinela"))
        .args(["kafka", "status", "--config"])
        .arg(dir.path().join("b.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("eo-in") && text.contains("6 partitions (input)"),
        "{text}"
    );
    assert!(
        text.contains("eo-state") && text.contains("(alert state changelog)"),
        "{text}"
    );
    assert!(text.contains("group: Stable (1 members)"), "{text}");
    for p in 0..6 {
        assert!(text.contains(&format!("eo-in[{p}]")), "{text}");
    }
    assert!(text.contains("total lag: 0"), "{text}");
    b.stop();
    eprintln!(
        "stored {total} rows for 1200 readings ({} again after the crash); {:.1} s",
        total - 1200,
        started.elapsed().as_secs_f64()
    );
}

/// An instance for the notification test: `processor` judges readings of `nt-in` and
/// writes alert events to `nt-alerts` without notifying; otherwise a notifier of
/// group `nt-notify` delivering by e-mail.
fn notify_config(processor: bool, brokers: &str, smtp_port: u16) -> String {
    let role = if processor {
        format!(
            "[source.kafka]\nbrokers = [\"{brokers}\"]\ntopics = [\"nt-in\"]\ngroup_id = \"nt\"\n\
             alerts_topic = \"nt-alerts\"\ncommit_interval = \"200ms\"\n\n\
             [notify]\nfrom_kafka = true\nkafka_deliver = false\n\n\
             [[rules]]\nname = \"hot\"\nseries = \"site/+/temp\"\nkind = \"threshold\"\nabove = 30.0\n\
             severity = \"critical\"\nnotify = [\"email\"]\n\n"
        )
    } else {
        format!(
            "[output.kafka]\nbrokers = [\"{brokers}\"]\nreadings_topic = \"\"\nalerts_topic = \"nt-alerts\"\n\n\
             [notify]\nfrom_kafka = true\nkafka_group = \"nt-notify\"\n\n"
        )
    };
    format!(
        "[broker]\nlisten = \"127.0.0.1:{}\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n\n\
         [engine]\ntick = \"100ms\"\n\n[storage.sqlite]\nflush_interval = \"200ms\"\n\n{role}\
         [notify.email]\nsmtp = \"127.0.0.1:{smtp_port}\"\ntls = \"none\"\n\
         from = \"centinela <alerts@example.org>\"\nto = [\"ops@example.org\"]\n\n\
         [notify.outbox]\nbackoff_min = \"200ms\"\nbackoff_max = \"1s\"\nstorm_threshold = 100\n",
        free_port(),
        free_port()
    )
}

/// The `[http] listen` port of the instance `name` started in `dir`.
fn http_port(dir: &std::path::Path, name: &str) -> u16 {
    let text = std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    let listen = v["http"]["listen"].as_str().unwrap();
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

/// Rows a notifier has put into its outbox so far, from its log.
fn queued(r: &Run) -> usize {
    r.log()
        .lines()
        .filter(|l| l.contains("Kafka notifier: notifications queued"))
        .filter_map(|l| {
            l.split("queued=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum()
}

/// Waits (up to 60 s) until `f` holds, then returns its last value.
fn wait_until<T: std::fmt::Debug>(
    what: &str,
    mut get: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get();
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: {v:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (Message-ID, series) of every mail, checking that each is about one `state` alert.
fn mailed(s: &smtp::SmtpServer) -> Vec<(String, String)> {
    s.mails()
        .iter()
        .map(|m| {
            let text = m.text.clone().unwrap_or_default();
            let series = (0..6)
                .map(|i| format!("site/s{i}/temp"))
                .find(|x| text.contains(x.as_str()) || m.subject.contains(x.as_str()))
                .unwrap_or_else(|| panic!("no series in {m:?}"));
            (m.message_id.clone(), series)
        })
        .collect()
}

#[test]
fn notifiers_deliver_from_the_alerts_topic_once_and_a_killed_one_loses_nothing() {
    let started = Instant::now();
    let Some(k) = Kafka::start() else { return };
    let mut mail = smtp::SmtpServer::start();
    mail.down();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(k.create_topic("nt-in", 3, false));
    rt.block_on(k.create_topic("nt-alerts", 3, false));
    let dir = tempfile::tempdir().unwrap();
    let a = Run::start(
        dir.path(),
        "a",
        &notify_config(true, &k.bootstrap(), mail.port),
    );
    a.wait_log("partitions assigned", 1);
    let mut b = Run::start(
        dir.path(),
        "b",
        &notify_config(false, &k.bootstrap(), mail.port),
    );
    b.wait_log("Kafka notifier: partitions assigned", 1);

    // Six series over three partitions, each crossing once: six firing events, each
    // to be mailed. The mail server is down, so b queues them and cannot deliver.
    let t0 = centinela::model::now_ms() - 600_000;
    let msgs = |i0: usize, v: f64| -> Vec<(i32, Option<String>, String)> {
        let mut out = Vec::new();
        for i in i0..i0 + 3 {
            for s in 0..6 {
                out.push((
                    s % 3,
                    Some(format!("site/s{s}/temp")),
                    format!(r#"{{"value":{v},"ts":{}}}"#, t0 + i as i64 * 1000),
                ));
            }
        }
        out
    };
    produce(&k, "nt-in", &msgs(0, 20.0));
    produce(&k, "nt-in", &msgs(3, 35.0));
    wait_until("b queues six notifications", || queued(&b), |n| *n >= 6);
    // Not delivered, so not committed: the offsets stay where they were.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(kafka::committed(&k, "nt-notify", "nt-alerts", 3), 0);
    b.kill9();

    // c, another notifier of the group, takes b's partitions over and delivers all six
    // once the mail server is back.
    mail.up();
    let mut c = Run::start(
        dir.path(),
        "c",
        &notify_config(false, &k.bootstrap(), mail.port),
    );
    let got = wait_until("six mails", || mailed(&mail), |m| m.len() >= 6);
    wait_until(
        "c commits the six events",
        || kafka::committed(&k, "nt-notify", "nt-alerts", 3),
        // Offsets count the transactions' commit markers too: at least one per event.
        |n| *n >= 6,
    );
    // What c says about its notifier on /metrics.
    let c_http = http_port(dir.path(), "c");
    let m = wait_until(
        "c's notifier figures",
        || http_get(c_http, "/metrics"),
        |m| {
            metric(m, "centinela_kafka_notifier_settled_messages_total") >= 6
                && metric(m, "centinela_kafka_notifier_commits_total") >= 1
                && metric(m, "centinela_kafka_notifier_open_messages") == 0
        },
    );
    for (name, kind) in [
        ("centinela_kafka_notifier_messages_total", "counter"),
        ("centinela_kafka_notifier_queued_total", "counter"),
        ("centinela_kafka_notifier_commits_total", "counter"),
        ("centinela_kafka_notifier_handed_back_total", "counter"),
        ("centinela_kafka_notifier_assigned_partitions", "gauge"),
        ("centinela_kafka_notifier_open_messages", "gauge"),
    ] {
        assert!(
            m.contains(&format!("# TYPE {name} {kind}\n{name} ")),
            "{name}: {m}"
        );
        assert!(m.contains(&format!("# HELP {name} ")), "{name}: {m}");
    }
    assert!(
        metric(&m, "centinela_kafka_notifier_messages_total") >= 6,
        "{m}"
    );
    assert!(
        metric(&m, "centinela_kafka_notifier_queued_total") >= 6,
        "{m}"
    );
    assert_eq!(
        metric(&m, "centinela_kafka_notifier_assigned_partitions"),
        3,
        "{m}"
    );
    assert_eq!(
        metric(&m, "centinela_kafka_notifier_commit_errors_total"),
        0,
        "{m}"
    );
    // b comes back with its six undelivered rows: it hands them back (they were
    // delivered by c, the offsets say so) and sends nothing again.
    b = Run::start(
        dir.path(),
        "b",
        &notify_config(false, &k.bootstrap(), mail.port),
    );
    b.wait_log("handed_back=6", 1);
    b.wait_log("Kafka notifier: partitions assigned", 1);
    std::thread::sleep(Duration::from_secs(3));
    let got2 = mailed(&mail);
    assert_eq!(got2, got, "no mail twice");
    let series: HashSet<&String> = got.iter().map(|(_, s)| s).collect();
    assert_eq!(series.len(), 6, "{got:?}");

    // c leaves; b alone delivers the six resolutions and is killed right after the
    // mails went out, perhaps before its offsets were committed. Restarted, it reads
    // what was not committed again and sends nothing twice.
    c.stop();
    b.wait_log("owned=3", 1);
    produce(&k, "nt-in", &msgs(6, 20.0));
    wait_until("twelve mails", || mailed(&mail).len(), |n| *n >= 12);
    b.kill9();
    let committed_at_kill = kafka::committed(&k, "nt-notify", "nt-alerts", 3);
    b = Run::start(
        dir.path(),
        "b",
        &notify_config(false, &k.bootstrap(), mail.port),
    );
    wait_until(
        "b commits all twelve",
        || kafka::committed(&k, "nt-notify", "nt-alerts", 3),
        |n| *n >= 12 && *n >= committed_at_kill,
    );
    std::thread::sleep(Duration::from_secs(3));
    let all = mailed(&mail);
    assert_eq!(all.len(), 12, "{all:?}");
    let ids: HashSet<&String> = all.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 12, "one Message-ID per notification: {all:?}");
    // a, which raised every alert, mailed none itself (else there would be 24).
    assert!(
        !a.log().contains("Kafka notifier subscribed"),
        "{}",
        a.log()
    );
    b.stop();
    eprintln!(
        "12 notifications, 12 mails; {committed_at_kill} of 12 offsets committed when b was killed; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// `centinela kafka status` with `config`, the password in `CENTINELA_KAFKA_PASSWORD`.
fn status_with(dir: &std::path::Path, name: &str, config: &str, password: &str) -> (bool, String) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_centinela"))
        .args(["kafka", "status", "--config"])
        .arg(&path)
        .env("CENTINELA_KAFKA_PASSWORD", password)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn sasl_plain_and_scram_reach_the_brokers_with_the_password_from_the_environment() {
    let Some(k) = Kafka::start_sasl("centinela", "s3cret") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(k.create_topic("sasl-in", 3, false));
    let dir = tempfile::tempdir().unwrap();
    let config = |mechanism: &str| {
        format!(
            "[source.kafka]\nbrokers = [\"127.0.0.1:{}\"]\ntopics = [\"sasl-in\"]\n\
             group_id = \"sasl\"\nsecurity_protocol = \"sasl_plaintext\"\n\
             sasl_mechanism = \"{mechanism}\"\nsasl_username = \"centinela\"\n",
            k.sasl_port
        )
    };
    for mechanism in ["PLAIN", "SCRAM-SHA-256"] {
        let (ok, text) = status_with(dir.path(), "good", &config(mechanism), "s3cret");
        assert!(ok, "{mechanism}: {text}");
        assert!(
            text.contains("sasl-in") && text.contains("3 partitions (input)"),
            "{mechanism}: {text}"
        );
        let (ok, text) = status_with(dir.path(), "bad", &config(mechanism), "wrong");
        assert!(!ok, "{mechanism} with a wrong password: {text}");
        assert!(
            !text.contains("wrong"),
            "the password is not printed: {text}"
        );
    }
    // Without the variable: a clear error naming it.
    let path = dir.path().join("nopw.toml");
    std::fs::write(&path, config("PLAIN")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_centinela"))
        .args(["kafka", "status", "--config"])
        .arg(&path)
        .env_remove("CENTINELA_KAFKA_PASSWORD")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("CENTINELA_KAFKA_PASSWORD"), "{err}");
}

/// A benchmark, not a test (`cargo test --features kafka --test kafka_cluster -- --ignored
/// --nocapture bench`): one `centinela run` (the release binary when built:
/// `cargo build --release --features kafka`, else `CENTINELA_BENCH_BIN`) consuming a
/// topic of `CENTINELA_BENCH_N` (default 1,000,000) keyed readings flat out into SQLite,
/// beside `kcat` reading the same topic to its end. Prints readings/s and CPU seconds.
#[test]
#[ignore]
fn bench_one_instance_flat_out_beside_kcat() {
    let Some(k) = Kafka::start() else { return };
    let n: usize = std::env::var("CENTINELA_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let bin = std::env::var("CENTINELA_BENCH_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/centinela").to_string()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(k.create_topic("bench-in", 6, false));
    let msgs: Vec<(i32, Option<String>, String)> = (0..n)
        .map(|i| {
            let s = i % 1000;
            (
                (s % 6) as i32,
                Some(format!("site/d{s}/temp")),
                format!("{}", 20 + i % 7),
            )
        })
        .collect();
    let t = Instant::now();
    produce(&k, "bench-in", &msgs);
    eprintln!("produced {n} in {:.1} s", t.elapsed().as_secs_f64());

    if let Ok(out) = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "/usr/bin/time -f '%e %U %S' kcat -C -b {} -t bench-in -o beginning -e -q -f '%k %s\\n' | wc -l",
            k.bootstrap()
        ))
        .output()
    {
        eprintln!(
            "kcat: lines {} time(wall user sys) {}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let cfg = format!(
        "[broker]\nlisten = \"127.0.0.1:{}\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n\
         [storage.sqlite]\npath = \"{}\"\nflush_interval = \"250ms\"\n\n\
         [source.kafka]\nbrokers = [\"{}\"]\ntopics = [\"bench-in\"]\ngroup_id = \"bench\"\n\n\
         [[rules]]\nname = \"hot\"\nseries = \"site/+/temp\"\nkind = \"threshold\"\nabove = 30.0\n",
        free_port(),
        dir.path().join("b.db").display(),
        k.bootstrap()
    );
    let path = dir.path().join("b.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = std::process::Command::new(&bin)
        .args(["run", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cpu = |pid: u32| -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let f: Vec<&str> = s
            .rsplit_once(") ")
            .map(|x| x.1)
            .unwrap_or("")
            .split(' ')
            .collect();
        let tick = 100.0;
        let u: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let sy: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        (u + sy) / tick
    };
    // `CENTINELA_BENCH_PERF=FILE`: a perf profile (call graphs) of the whole run.
    let perf = std::env::var("CENTINELA_BENCH_PERF").ok().and_then(|out| {
        std::process::Command::new("perf")
            .args(["record", "-F", "499", "-g", "-o", &out, "-p"])
            .arg(child.id().to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()
    });
    // From the first message consumed (the group joined) to the last one consumed,
    // and to the last one stored (SQLite flushes every 250 ms here, so the end is
    // known to within that).
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, f64, u64)> = None;
    let mut consumed_at = None;
    let done = loop {
        let m = http_get(http, "/metrics");
        let consumed = metric(&m, "centinela_kafka_source_messages_total");
        let stored = metric(&m, "centinela_readings_stored_total");
        if consumed > 0 && first.is_none() {
            first = Some((Instant::now(), cpu(child.id()), consumed));
        }
        if consumed >= n as u64 && consumed_at.is_none() {
            consumed_at = Some(Instant::now());
        }
        if stored >= n as u64 {
            break (Instant::now(), cpu(child.id()));
        }
        assert!(
            Instant::now() < deadline,
            "consumed {consumed}, stored {stored}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (t0, c0, s0) = first.unwrap();
    let timed = (n as u64 - s0) as f64;
    let secs = (done.0 - t0).as_secs_f64();
    let consume_secs = (consumed_at.unwrap_or(done.0) - t0).as_secs_f64();
    let cpu_per_m = (done.1 - c0) / (timed / 1e6);
    eprintln!(
        "centinela ({bin}): {timed} readings consumed in {consume_secs:.2} s = {:.0} readings/s, \
         stored in {secs:.2} s = {:.0} readings/s; {:.2} CPU-s, {cpu_per_m:.2} CPU-s per million",
        timed / consume_secs,
        timed / secs,
        done.1 - c0
    );
    if let Some(mut p) = perf {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &p.id().to_string()])
            .status();
        let _ = p.wait();
    }
    let _ = child.kill();
    let _ = child.wait();
}

const WINDOW_RULES: &str = "[[rules]]\nname = \"avg\"\nseries = \"w/+/t\"\nkind = \"window\"\nagg = \"avg\"\n\
     window = \"20s\"\nabove = 30.0\n\n\
     [[rules]]\nname = \"rise\"\nseries = \"r/+/t\"\nkind = \"rate\"\nwindow = \"20s\"\nrise = 10.0\n";

fn window_config(brokers: &str) -> String {
    format!(
        "[broker]\nlisten = \"127.0.0.1:{}\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n\n\
         [engine]\ntick = \"100ms\"\n\n[storage.sqlite]\nflush_interval = \"200ms\"\n\n\
         [source.kafka]\nbrokers = [\"{brokers}\"]\ntopics = [\"wr-in\"]\ngroup_id = \"wr\"\n\
         alerts_topic = \"wr-alerts\"\ncommit_interval = \"200ms\"\n\n{WINDOW_RULES}",
        free_port(),
        free_port()
    )
}

/// Reading `i` (one a second of event time) of the two series: `w/a/t` (partition 0)
/// is 20, then 40 from i = 24, so its 20-second average passes 30 at i = 34; `r/a/t`
/// (partition 1) is 50, 20 from i = 24, 45 from i = 30 to 41: within any 20 seconds it
/// never rises by more than 10 — but from the 20s alone, 45 is a rise of 25.
fn window_readings(t0: i64, range: std::ops::Range<usize>) -> Vec<(i32, Option<String>, String)> {
    let json = |v: f64, i: usize| format!(r#"{{"value":{v},"ts":{}}}"#, t0 + i as i64 * 1000);
    let mut out = Vec::new();
    for i in range {
        let w = if i < 24 { 20.0 } else { 40.0 };
        out.push((0, Some("w/a/t".to_string()), json(w, i)));
        if i < 42 {
            let r = match i {
                0..24 => 50.0,
                24..30 => 20.0,
                _ => 45.0,
            };
            out.push((1, Some("r/a/t".to_string()), json(r, i)));
        }
    }
    out
}

/// The events one instance judging every reading would raise: (rule, series, state, ts).
fn single_instance(msgs: &[(i32, Option<String>, String)]) -> Vec<(String, String, String, i64)> {
    let cfg = centinela::config::Config::parse(
        &format!("[engine]\ntick = \"100ms\"\n\n{WINDOW_RULES}"),
        "rules.toml",
    )
    .unwrap();
    let mut rp = centinela::engine::Replayer::new(&cfg.rules, &cfg.engine);
    let mut out = Vec::new();
    let mut readings: Vec<centinela::model::Reading> = msgs
        .iter()
        .map(|(_, k, v)| {
            let j: serde_json::Value = serde_json::from_str(v).unwrap();
            centinela::model::Reading {
                series: k.as_deref().unwrap().into(),
                value: j["value"].as_f64().unwrap(),
                ts: j["ts"].as_i64().unwrap(),
                unit: None,
            }
        })
        .collect();
    readings.sort_by_key(|r| r.ts);
    for r in &readings {
        for e in rp.push(r) {
            out.push((
                e.rule.clone(),
                e.series.to_string(),
                e.state.to_string(),
                e.ts,
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn rate_and_window_rules_judge_across_a_handover_as_one_instance_would() {
    let started = Instant::now();
    let Some(k) = Kafka::start() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(k.create_topic("wr-in", 2, false));
    let dir = tempfile::tempdir().unwrap();
    let t0 = centinela::model::now_ms() - 600_000;
    let all = window_readings(t0, 0..60);
    let want = single_instance(&all);
    // The scenario means something: one firing, at i = 34, after the handover; none
    // for the rate rule.
    assert_eq!(
        want,
        [(
            "avg".to_string(),
            "w/a/t".to_string(),
            "firing".to_string(),
            t0 + 34_000
        )]
    );

    // a judges the first 26 seconds and commits them, then dies with a few more on
    // their way.
    let mut a = Run::start(dir.path(), "a", &window_config(&k.bootstrap()));
    a.wait_log("owned=2", 1);
    produce(&k, "wr-in", &window_readings(t0, 0..26));
    wait_until(
        "a commits the first 26 seconds",
        || kafka::committed(&k, "wr", "wr-in", 2),
        |n| *n >= 52,
    );
    produce(&k, "wr-in", &window_readings(t0, 26..28));
    a.kill9();

    // b takes both partitions over: its windows hold what a's held before it judges
    // the first reading (i = 26 or later).
    let mut b = Run::start(dir.path(), "b", &window_config(&k.bootstrap()));
    b.wait_log("Kafka: windows refilled", 1);
    produce(&k, "wr-in", &window_readings(t0, 28..60));
    wait_until(
        "b stores every reading of w/a/t",
        || b.stored().get("w/a/t").copied().unwrap_or(0),
        |n| *n >= 60 - 28,
    );
    let got: Vec<(String, String, String, i64)> = {
        let mut v: Vec<_> = read_settled(&k, &["wr-alerts"], want.len(), Duration::from_secs(3))
            .into_iter()
            .map(|(_, _, v)| {
                (
                    v["rule"].as_str().unwrap().to_string(),
                    v["series"].as_str().unwrap().to_string(),
                    v["state"].as_str().unwrap().to_string(),
                    v["ts_ms"].as_i64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(got, want, "{}", b.log());
    let refilled: u64 = b
        .log()
        .lines()
        .filter(|l| l.contains("Kafka: windows refilled"))
        .filter_map(|l| {
            l.split("readings=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(refilled >= 52, "the 26 seconds a committed: {}", b.log());
    b.stop();
    eprintln!(
        "refilled {refilled} readings; {} event(s) as one instance; {:.1} s",
        got.len(),
        started.elapsed().as_secs_f64()
    );
}
