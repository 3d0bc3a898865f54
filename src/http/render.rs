//! Rendering what `/metrics` and `/healthz` answer: the Prometheus text exposition
//! format (version 0.0.4) and the health JSON. Pure functions of a snapshot.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Health, HistogramSnapshot, Kind, Metrics, StageHealth, Verdict};
use crate::build_info;

/// The `/healthz` answer: HTTP status and JSON body
/// `{"healthy":bool,"status":"ok"|"degraded"|"down","problems":[…],"stages":[…]}`.
/// 503 only when an essential stage is down; degraded (a stage the stream can do
/// without is down: InfluxDB, the lake, a notification channel) is 200, with the
/// reasons under `problems`, so a probe that restarts on 503 does not restart the
/// service for a peer it cannot fix.
pub fn render_health(health: &Health) -> (u16, String) {
    #[derive(Serialize)]
    struct Body<'a> {
        healthy: bool,
        status: Verdict,
        problems: Vec<String>,
        stages: &'a [StageHealth],
    }
    let healthy = health.healthy();
    let status = health.verdict();
    let body = serde_json::to_string(&Body {
        healthy,
        status,
        problems: health.problems(),
        stages: &health.stages,
    })
    // Serializing plain strings and booleans cannot fail; keep a valid answer anyway.
    .unwrap_or_else(|_| format!("{{\"healthy\":{healthy},\"stages\":[]}}"));
    (if status == Verdict::Down { 503 } else { 200 }, body)
}

/// Escapes a label value for the Prometheus text format: `\`, `"` and newline.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes `# HELP` and `# TYPE` of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Renders `m` in the Prometheus text exposition format (version 0.0.4).
pub fn render_metrics(m: &Metrics) -> String {
    let mut o = String::with_capacity(4096);
    let o = &mut o;

    family(
        o,
        "centinela_build_info",
        "gauge",
        "The version, commit and target of this binary (always 1).",
    );
    sample(
        o,
        "centinela_build_info",
        &[
            ("version", build_info::VERSION),
            ("commit", build_info::COMMIT),
            ("target", build_info::TARGET),
        ],
        1,
    );

    family(
        o,
        "centinela_readings_received_total",
        "counter",
        "Readings decoded from MQTT messages.",
    );
    sample(
        o,
        "centinela_readings_received_total",
        &[],
        m.readings_received,
    );
    family(
        o,
        "centinela_readings_stored_total",
        "counter",
        "Readings written to SQLite.",
    );
    sample(o, "centinela_readings_stored_total", &[], m.readings_stored);

    family(
        o,
        "centinela_decode_errors_total",
        "counter",
        "MQTT messages that could not be decoded, by reason.",
    );
    for (reason, n) in &m.decode_errors {
        sample(o, "centinela_decode_errors_total", &[("reason", reason)], n);
    }

    family(
        o,
        "centinela_skipped_fields_total",
        "counter",
        "Fields of device messages that were not numbers (strings, arrays): no reading, not an error.",
    );
    sample(o, "centinela_skipped_fields_total", &[], m.skipped_fields);

    family(
        o,
        "centinela_broker_lost_messages_total",
        "counter",
        "Messages the broker accepted that never reached the pipeline (its buffer overran).",
    );
    sample(
        o,
        "centinela_broker_lost_messages_total",
        &[],
        m.broker_lost,
    );

    family(
        o,
        "centinela_queue_depth",
        "gauge",
        "Items waiting in the channel in front of a stage.",
    );
    for q in &m.queues {
        sample(o, "centinela_queue_depth", &[("queue", &q.queue)], q.depth);
    }
    family(
        o,
        "centinela_queue_capacity",
        "gauge",
        "Capacity of the channel in front of a stage.",
    );
    for q in &m.queues {
        sample(
            o,
            "centinela_queue_capacity",
            &[("queue", &q.queue)],
            q.capacity,
        );
    }

    family(
        o,
        "centinela_outbox_pending",
        "gauge",
        "Notifications waiting for delivery, per channel.",
    );
    for c in &m.outbox {
        sample(
            o,
            "centinela_outbox_pending",
            &[("channel", &c.channel)],
            c.pending,
        );
    }
    family(
        o,
        "centinela_outbox_delivered_total",
        "counter",
        "Notifications delivered, per channel.",
    );
    for c in &m.outbox {
        sample(
            o,
            "centinela_outbox_delivered_total",
            &[("channel", &c.channel)],
            c.delivered,
        );
    }
    family(
        o,
        "centinela_outbox_dead",
        "gauge",
        "Notifications given up on after the last retry, per channel.",
    );
    for c in &m.outbox {
        sample(
            o,
            "centinela_outbox_dead",
            &[("channel", &c.channel)],
            c.dead,
        );
    }

    for x in m.outputs.iter().chain(&m.broker) {
        let kind = match x.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        family(o, x.name, kind, x.help);
        sample(o, x.name, &[], x.value);
    }
    #[cfg(feature = "kafka")]
    if let Some(n) = crate::notify::from_kafka::running() {
        kafka_notifier(o, &n);
    }
    for f in m.families.iter().filter(|f| !f.samples.is_empty()) {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        family(o, f.name, kind, f.help);
        for (labels, v) in &f.samples {
            let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            sample(o, f.name, &l, v);
        }
    }

    family(
        o,
        "centinela_alerts_firing",
        "gauge",
        "Alerts currently firing, by severity.",
    );
    for (severity, n) in &m.alerts_firing {
        sample(o, "centinela_alerts_firing", &[("severity", severity)], n);
    }

    if let Some(b) = m.disk_bytes_written {
        family(o, "centinela_disk_written_bytes_total", "counter", "Bytes the process caused to be written to storage (write_bytes of /proc/self/io), nearly all SQLite.");
        sample(o, "centinela_disk_written_bytes_total", &[], b);
    }
    if let Some(p) = &m.process {
        family(
            o,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        sample(o, "process_cpu_seconds_total", &[], p.cpu_seconds);
        family(
            o,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        sample(o, "process_open_fds", &[], p.open_fds);
        if let Some(max) = p.max_fds {
            family(
                o,
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
            );
            sample(o, "process_max_fds", &[], max);
        }
        family(
            o,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        );
        sample(
            o,
            "process_start_time_seconds",
            &[],
            format_args!("{:.2}", p.start_time_seconds),
        );
    }
    if let Some(b) = m.resident_memory_bytes {
        family(
            o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        sample(o, "process_resident_memory_bytes", &[], b);
    }
    family(
        o,
        "centinela_uptime_seconds",
        "gauge",
        "Seconds since the service started.",
    );
    sample(
        o,
        "centinela_uptime_seconds",
        &[],
        format_args!("{:.3}", m.uptime.as_secs_f64()),
    );

    // A labelled histogram's series come one after the other: HELP and TYPE once.
    let mut prev = "";
    for h in &m.histograms {
        if h.name != prev {
            family(o, h.name, "histogram", h.help);
            prev = h.name;
        }
        histogram(o, h);
    }

    std::mem::take(o)
}

/// The Kafka notifier's figures (`[notify] from_kafka = true`).
#[cfg(feature = "kafka")]
fn kafka_notifier(o: &mut String, n: &crate::notify::from_kafka::NotifierStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let rows = [
        ("centinela_kafka_notifier_messages_total", "counter", "Messages read from the alerts topic by the notifier.", &n.messages),
        ("centinela_kafka_notifier_bad_messages_total", "counter", "Messages of the alerts topic that are not alert events (skipped).", &n.bad),
        ("centinela_kafka_notifier_queued_total", "counter", "Notifications put into the outbox from the alerts topic (a message read again adds none).", &n.queued),
        ("centinela_kafka_notifier_settled_messages_total", "counter", "Messages of the alerts topic whose notifications are all final (delivered or given up).", &n.settled),
        ("centinela_kafka_notifier_commits_total", "counter", "Offset commits the notifier made (the offset of the oldest message not all delivered).", &n.commits),
        ("centinela_kafka_notifier_commit_errors_total", "counter", "Offset commits of the notifier that failed at once.", &n.commit_errors),
        ("centinela_kafka_notifier_handed_back_total", "counter", "Undelivered notifications handed back to the owner of their partition (at start and on revocation).", &n.handed_back),
        ("centinela_kafka_notifier_unknown_channel_total", "counter", "Channels named by alert events that this instance has no [notify.*] section for.", &n.unknown_channel),
        ("centinela_kafka_notifier_assigned_partitions", "gauge", "Partitions of the alerts topic this notifier owns now.", &n.assigned),
        ("centinela_kafka_notifier_open_messages", "gauge", "Messages read whose notifications are not all final yet; the offset commit waits for the oldest.", &n.open),
    ];
    for (name, kind, help, v) in rows {
        family(o, name, kind, help);
        sample(o, name, &[], v.load(Relaxed));
    }
}

/// A histogram's `_bucket` (cumulative, `le` in seconds), `_sum` and `_count` lines.
fn histogram(out: &mut String, h: &HistogramSnapshot) {
    let label: Vec<(&str, &str)> = h.label.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bucket = format!("{}_bucket", h.name);
    for (le, n) in &h.buckets {
        let le = le.to_string();
        let mut l = label.clone();
        l.push(("le", &le));
        sample(out, &bucket, &l, n);
    }
    let mut l = label.clone();
    l.push(("le", "+Inf"));
    sample(out, &bucket, &l, h.count);
    sample(
        out,
        &format!("{}_sum", h.name),
        &label,
        format_args!("{:.6}", h.sum),
    );
    sample(out, &format!("{}_count", h.name), &label, h.count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{OutboxCounts, Process, QueueDepth, Sample};
    use std::time::Duration;

    fn sample_metrics() -> Metrics {
        Metrics {
            families: Vec::new(),
            readings_received: 1200,
            readings_stored: 1100,
            decode_errors: vec![("not_a_number".into(), 3), ("too_large".into(), 1)],
            broker_lost: 7,
            skipped_fields: 4,
            queues: vec![QueueDepth {
                queue: "engine".into(),
                depth: 2,
                capacity: 64,
            }],
            outbox: vec![
                OutboxCounts {
                    channel: "email".into(),
                    pending: 1,
                    delivered: 9,
                    dead: 0,
                },
                OutboxCounts {
                    channel: "telegram".into(),
                    pending: 0,
                    delivered: 4,
                    dead: 2,
                },
            ],
            outputs: vec![
                Sample::counter(
                    "centinela_influx_points_written_total",
                    "Points InfluxDB acknowledged.",
                    40,
                ),
                Sample::gauge(
                    "centinela_influx_backlog_points",
                    "Points waiting in the durable InfluxDB backlog.",
                    10,
                ),
                Sample::counter(
                    "centinela_influx_points_rejected_total",
                    "Points InfluxDB refused; not retried.",
                    1,
                ),
            ],
            broker: vec![Sample::gauge(
                "centinela_broker_connections",
                "Client connections open on the embedded broker.",
                3,
            )],
            alerts_firing: vec![("critical".into(), 2), ("warning".into(), 0)],
            disk_bytes_written: Some(4096),
            resident_memory_bytes: Some(10 << 20),
            process: Some(Process {
                cpu_seconds: 12.34,
                open_fds: 17,
                max_fds: Some(65536),
                start_time_seconds: 1_796_000_000.5,
            }),
            histograms: vec![
                HistogramSnapshot {
                    name: "centinela_sqlite_flush_seconds",
                    help: "Flush time.",
                    label: None,
                    buckets: vec![(0.001, 3), (0.01, 5)],
                    count: 6,
                    sum: 0.25,
                },
                HistogramSnapshot {
                    name: "centinela_notification_delivery_seconds",
                    help: "Delivery time.",
                    label: Some(("channel", "email".into())),
                    buckets: vec![(1.0, 1)],
                    count: 1,
                    sum: 0.5,
                },
                HistogramSnapshot {
                    name: "centinela_notification_delivery_seconds",
                    help: "Delivery time.",
                    label: Some(("channel", "telegram".into())),
                    buckets: vec![(1.0, 0)],
                    count: 2,
                    sum: 7.0,
                },
            ],
            uptime: Duration::from_millis(61_500),
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn one_line_per_reason_channel_and_severity() {
        let text = render_metrics(&sample_metrics());
        let l = lines(&text);
        for want in [
            "centinela_readings_received_total 1200",
            "centinela_readings_stored_total 1100",
            "centinela_decode_errors_total{reason=\"not_a_number\"} 3",
            "centinela_decode_errors_total{reason=\"too_large\"} 1",
            "centinela_broker_lost_messages_total 7",
            "centinela_skipped_fields_total 4",
            "centinela_queue_depth{queue=\"engine\"} 2",
            "centinela_queue_capacity{queue=\"engine\"} 64",
            "centinela_outbox_pending{channel=\"email\"} 1",
            "centinela_outbox_delivered_total{channel=\"telegram\"} 4",
            "centinela_outbox_dead{channel=\"telegram\"} 2",
            "centinela_influx_backlog_points 10",
            "centinela_influx_points_rejected_total 1",
            "centinela_alerts_firing{severity=\"critical\"} 2",
            "centinela_alerts_firing{severity=\"warning\"} 0",
            "centinela_disk_written_bytes_total 4096",
            "process_resident_memory_bytes 10485760",
            "centinela_uptime_seconds 61.500",
            "process_cpu_seconds_total 12.34",
            "process_open_fds 17",
            "process_max_fds 65536",
            "process_start_time_seconds 1796000000.50",
            "centinela_sqlite_flush_seconds_bucket{le=\"0.001\"} 3",
            "centinela_sqlite_flush_seconds_bucket{le=\"0.01\"} 5",
            "centinela_sqlite_flush_seconds_bucket{le=\"+Inf\"} 6",
            "centinela_sqlite_flush_seconds_sum 0.250000",
            "centinela_sqlite_flush_seconds_count 6",
            "centinela_notification_delivery_seconds_bucket{channel=\"email\",le=\"1\"} 1",
            "centinela_notification_delivery_seconds_count{channel=\"telegram\"} 2",
            "centinela_notification_delivery_seconds_sum{channel=\"telegram\"} 7.000000",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
        assert_eq!(
            l.iter()
                .filter(|x| x.starts_with("centinela_decode_errors_total{"))
                .count(),
            2
        );
        let build = format!(
            "centinela_build_info{{version=\"{}\",commit=\"{}\",target=\"{}\"}} 1",
            build_info::VERSION,
            build_info::COMMIT,
            build_info::TARGET
        );
        assert!(l.contains(&build.as_str()), "missing {build} in\n{text}");
        assert_eq!(
            l.iter()
                .filter(|x| **x == "# TYPE centinela_notification_delivery_seconds histogram")
                .count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn every_sample_follows_its_help_and_type() {
        let text = render_metrics(&sample_metrics());
        let mut declared: Vec<(String, String)> = Vec::new();
        let mut helped = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.insert(rest.split(' ').next().unwrap().to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(helped.contains(name), "TYPE before HELP for {name}");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(
                    !declared.iter().any(|(n, _)| n == name),
                    "{name} declared twice"
                );
                declared.push((name.to_string(), kind.to_string()));
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let (last, kind) = declared.last().expect("sample before any TYPE");
                let family = match kind.as_str() {
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .unwrap_or(name),
                    _ => name,
                };
                assert_eq!(family, last, "sample outside its family: {line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counter without _total: {name}");
                }
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
    }

    #[test]
    #[cfg(feature = "kafka")]
    fn kafka_notifier_figures_follow_their_help_and_type() {
        let n = crate::notify::from_kafka::NotifierStats::default();
        n.messages.store(7, std::sync::atomic::Ordering::Relaxed);
        n.open.store(2, std::sync::atomic::Ordering::Relaxed);
        let mut o = String::new();
        kafka_notifier(&mut o, &n);
        let l = lines(&o);
        let at = l
            .iter()
            .position(|x| *x == "centinela_kafka_notifier_messages_total 7")
            .unwrap();
        assert_eq!(
            &l[at - 2..at],
            [
                "# HELP centinela_kafka_notifier_messages_total Messages read from the alerts topic by the notifier.",
                "# TYPE centinela_kafka_notifier_messages_total counter"
            ]
        );
        assert!(o.contains("# TYPE centinela_kafka_notifier_open_messages gauge\ncentinela_kafka_notifier_open_messages 2\n"), "{o}");
        assert_eq!(l.len(), 30, "{o}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
        let m = Metrics {
            decode_errors: vec![("bad \"json\"\\\n".into(), 1)],
            ..Metrics::default()
        };
        let text = render_metrics(&m);
        assert!(
            text.contains("centinela_decode_errors_total{reason=\"bad \\\"json\\\"\\\\\\n\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn optional_families_are_left_out() {
        let text = render_metrics(&Metrics::default());
        assert!(!text.contains("influx"), "{text}");
        assert!(!text.contains("process_resident_memory_bytes"), "{text}");
        assert!(text.contains("centinela_readings_received_total 0\n"));
    }

    #[test]
    fn health_is_down_only_when_an_essential_stage_is_and_degraded_otherwise() {
        let mut h = Health {
            stages: vec![
                StageHealth::essential("broker", true, "connected"),
                StageHealth::essential("sqlite", true, "last flush 0.4 s ago"),
            ],
        };
        let (status, body) = render_health(&h);
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["healthy"], true);
        assert_eq!(v["status"], "ok");
        assert_eq!(v["problems"], serde_json::json!([]));
        assert_eq!(v["stages"][1]["name"], "sqlite");
        assert_eq!(v["stages"][1]["essential"], true);
        assert_eq!(v["stages"][1]["detail"], "last flush 0.4 s ago");

        h.stages.push(StageHealth::new(
            "influxdb",
            false,
            "down since 12:00: \"refused\"",
        ));
        let (status, body) = render_health(&h);
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["healthy"], false);
        assert_eq!(v["status"], "degraded");
        assert_eq!(
            v["problems"],
            serde_json::json!(["influxdb: down since 12:00: \"refused\""])
        );
        assert_eq!(v["stages"][2]["ok"], false);
        assert_eq!(v["stages"][2]["essential"], false);

        h.stages[1] = StageHealth::essential("sqlite", false, "writes fail: disk full");
        let (status, body) = render_health(&h);
        assert_eq!(status, 503, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "down");
        assert_eq!(v["problems"].as_array().unwrap().len(), 2, "{body}");
    }
}
