//! Message rendering, pure: alert events in, subjects and bodies out (email text and
//! HTML, Telegram HTML split under its 4096-character limit). No I/O, no clock.

use std::fmt::Write as _;

use crate::model::{format_ts, AlertEvent, AlertState, Severity};

/// Telegram's limit on one message's text.
pub const TELEGRAM_LIMIT: usize = 4096;

/// The word in brackets at the start of a subject: what a person must know first.
pub fn label(e: &AlertEvent) -> &'static str {
    match e.state {
        AlertState::Firing | AlertState::Repeat | AlertState::Pending => match e.severity {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        },
        AlertState::Resolved | AlertState::Ok => "RESOLVED",
        AlertState::Cancelled => "CANCELLED",
        AlertState::Acknowledged => "ACK",
        AlertState::Flapping => "FLAPPING",
    }
}

/// A value as people read it (see [`crate::format`]), unit after a space; empty
/// when there is none.
pub fn value(v: Option<f64>, unit: Option<&str>) -> String {
    crate::format::opt_with_unit(v, unit)
}

/// The one-line summary of an event: the rule's rendered message when there is one
/// (`greenhouse/node1/temperature 31.2 °C > 30`), else series and value.
pub fn summary(e: &AlertEvent) -> String {
    let msg = e.message.split_whitespace().collect::<Vec<_>>().join(" ");
    if !msg.is_empty() {
        return msg;
    }
    let v = value(e.value, e.unit.as_deref());
    if v.is_empty() {
        format!("{} ({})", e.series, e.rule)
    } else {
        format!("{} {v} ({})", e.series, e.rule)
    }
}

/// Email subject of one event: `[CRITICAL] greenhouse/node1/temperature 31.2 °C > 30`.
pub fn subject(e: &AlertEvent) -> String {
    let repeat = if e.state == AlertState::Repeat {
        " (still firing)"
    } else {
        ""
    };
    format!("[{}] {}{repeat}", label(e), summary(e))
}

/// Email subject of a digest: `[DIGEST] 12 alerts: 3 critical, 2 warning, 7 resolved`.
pub fn digest_subject(events: &[&AlertEvent]) -> String {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for e in events {
        let l = label(e);
        match counts.iter_mut().find(|(k, _)| *k == l) {
            Some((_, n)) => *n += 1,
            None => counts.push((l, 1)),
        }
    }
    let order = ["CRITICAL", "WARNING", "INFO", "FLAPPING", "ACK", "RESOLVED"];
    counts.sort_by_key(|(l, _)| order.iter().position(|o| o == l));
    let parts: Vec<String> = counts
        .iter()
        .map(|(l, n)| format!("{n} {}", l.to_lowercase()))
        .collect();
    format!("[DIGEST] {} alerts: {}", events.len(), parts.join(", "))
}

fn detail_lines(e: &AlertEvent) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("Alert", e.alert_id()),
        ("State", e.state.to_string()),
        ("Severity", e.severity.to_string()),
    ];
    let val = value(e.value, e.unit.as_deref());
    if !val.is_empty() {
        v.push(("Value", val));
    }
    v.push(("Time", format_ts(e.ts)));
    v
}

/// Plain-text body: one block per event.
pub fn email_text(events: &[&AlertEvent]) -> String {
    let mut s = String::new();
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            s.push_str("\n----\n\n");
        }
        let _ = writeln!(s, "[{}] {}\n", label(e), summary(e));
        for (k, v) in detail_lines(e) {
            let _ = writeln!(s, "{k:<9} {v}");
        }
    }
    s.push_str("\n-- \ncentinela\n");
    s
}

/// HTML body: one table per event, every value escaped.
pub fn email_html(events: &[&AlertEvent]) -> String {
    let mut s = String::from("<!DOCTYPE html>\n<html><body style=\"font-family:sans-serif\">\n");
    for e in events {
        let color = match (e.state, e.severity) {
            (AlertState::Resolved | AlertState::Ok, _) => "#2e7d32",
            (_, Severity::Critical) => "#c62828",
            (_, Severity::Warning) => "#ef6c00",
            (_, Severity::Info) => "#1565c0",
        };
        let _ = writeln!(
            s,
            "<h3 style=\"color:{color}\">[{}] {}</h3>\n<table>",
            label(e),
            escape_html(&summary(e))
        );
        for (k, v) in detail_lines(e) {
            let _ = writeln!(
                s,
                "<tr><td><b>{k}</b></td><td>{}</td></tr>",
                escape_html(&v)
            );
        }
        s.push_str("</table>\n");
    }
    s.push_str("<p style=\"color:#777\">centinela</p>\n</body></html>\n");
    s
}

/// Escapes text for Telegram's HTML parse mode and for HTML mail.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

fn icon(e: &AlertEvent) -> &'static str {
    match (e.state, e.severity) {
        (AlertState::Resolved | AlertState::Ok, _) => "✅",
        (AlertState::Cancelled, _) => "↩️",
        (AlertState::Acknowledged, _) => "👍",
        (AlertState::Flapping, _) => "🔁",
        (_, Severity::Critical) => "🔥",
        (_, Severity::Warning) => "⚠️",
        (_, Severity::Info) => "ℹ️",
    }
}

/// One event as a Telegram HTML block, never longer than `TELEGRAM_LIMIT`.
pub fn telegram_block(e: &AlertEvent) -> String {
    let head = format!(
        "{} <b>{}</b> <code>{}</code>",
        icon(e),
        label(e),
        escape_html(&e.alert_id())
    );
    let tail = format!("<i>{} · {}</i>", e.state, format_ts(e.ts));
    let room = TELEGRAM_LIMIT.saturating_sub(utf16_len(&head) + utf16_len(&tail) + 2);
    // Cut the text before escaping, so no entity is split.
    let mut text = summary(e);
    while utf16_len(&escape_html(&text)) > room {
        let keep = text
            .chars()
            .count()
            .saturating_sub(text.chars().count() / 10 + 2);
        text = text.chars().take(keep).collect::<String>();
        text.push('…');
    }
    format!("{head}\n{}\n{tail}", escape_html(&text))
}

/// Length as Telegram counts it (UTF-16 code units).
pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Joins blocks into messages of at most `limit` UTF-16 units, breaking only between
/// blocks (one alert is never cut across two messages).
pub fn split_messages(blocks: &[String], limit: usize) -> Vec<String> {
    const SEP: &str = "\n\n";
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for b in blocks {
        if !cur.is_empty() && utf16_len(&cur) + utf16_len(SEP) + utf16_len(b) > limit {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push_str(SEP);
        }
        cur.push_str(b);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The Telegram messages for `events`: one block each, a digest header when several.
pub fn telegram_messages(events: &[&AlertEvent]) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::with_capacity(events.len() + 1);
    if events.len() > 1 {
        blocks.push(format!("<b>{}</b>", escape_html(&digest_subject(events))));
    }
    blocks.extend(events.iter().map(|e| telegram_block(e)));
    split_messages(&blocks, TELEGRAM_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(state: AlertState, severity: Severity, message: &str) -> AlertEvent {
        AlertEvent {
            rule: "greenhouse-hot".into(),
            series: "greenhouse/node1/temperature".into(),
            state,
            severity,
            value: Some(31.2),
            unit: Some("°C".into()),
            ts: 1_700_000_000_000,
            message: message.into(),
            notify: vec![],
        }
    }

    #[test]
    fn subject_reads_well_on_a_phone() {
        let e = ev(
            AlertState::Firing,
            Severity::Critical,
            "greenhouse/node1/temperature 31.2 °C > 30",
        );
        assert_eq!(
            subject(&e),
            "[CRITICAL] greenhouse/node1/temperature 31.2 °C > 30"
        );
        let r = ev(
            AlertState::Resolved,
            Severity::Critical,
            "greenhouse/node1/temperature 27.9 °C ≤ 28",
        );
        assert_eq!(
            subject(&r),
            "[RESOLVED] greenhouse/node1/temperature 27.9 °C ≤ 28"
        );
        let rep = ev(AlertState::Repeat, Severity::Warning, "x\nover two lines");
        assert_eq!(subject(&rep), "[WARNING] x over two lines (still firing)");
        let bare = ev(AlertState::Firing, Severity::Info, "");
        assert_eq!(
            subject(&bare),
            "[INFO] greenhouse/node1/temperature 31.2 °C (greenhouse-hot)"
        );
    }

    #[test]
    fn values_are_short() {
        assert_eq!(value(Some(31.2), Some("°C")), "31.2 °C");
        assert_eq!(value(Some(30.0), None), "30");
        assert_eq!(value(Some(0.123_456), Some("")), "0.123456");
        assert_eq!(value(Some(0.000_42), None), "0.00042");
        assert_eq!(value(Some(4.099_250_000_000_000_5), Some("V")), "4.09925 V");
        assert_eq!(value(None, Some("°C")), "");
    }

    #[test]
    fn digest_subject_counts_by_label() {
        let a = ev(AlertState::Firing, Severity::Critical, "a");
        let b = ev(AlertState::Resolved, Severity::Critical, "b");
        let c = ev(AlertState::Firing, Severity::Warning, "c");
        assert_eq!(
            digest_subject(&[&b, &a, &c, &a]),
            "[DIGEST] 4 alerts: 2 critical, 1 warning, 1 resolved"
        );
    }

    #[test]
    fn bodies_escape_and_carry_the_details() {
        let e = ev(
            AlertState::Firing,
            Severity::Critical,
            "temp <b>31.2</b> & rising",
        );
        let html = email_html(&[&e]);
        assert!(
            html.contains("temp &lt;b&gt;31.2&lt;/b&gt; &amp; rising"),
            "{html}"
        );
        assert!(html.contains("2023-11-14T22:13:20.000Z"), "{html}");
        let text = email_text(&[&e]);
        assert!(
            text.starts_with("[CRITICAL] temp <b>31.2</b> & rising\n"),
            "{text}"
        );
        assert!(
            text.contains("Alert     greenhouse-hot/greenhouse/node1/temperature"),
            "{text}"
        );
        assert!(text.contains("Value     31.2 °C"), "{text}");
    }

    #[test]
    fn telegram_blocks_escape() {
        let e = ev(AlertState::Firing, Severity::Critical, "a<b & c>d");
        let b = telegram_block(&e);
        assert!(b.contains("a&lt;b &amp; c&gt;d"), "{b}");
        assert!(
            b.starts_with(
                "🔥 <b>CRITICAL</b> <code>greenhouse-hot/greenhouse/node1/temperature</code>"
            ),
            "{b}"
        );
    }

    #[test]
    fn long_digests_split_on_alert_boundaries() {
        let events: Vec<AlertEvent> = (0..200)
            .map(|i| {
                let mut e = ev(
                    AlertState::Firing,
                    Severity::Warning,
                    &format!("alert number {i} <{}>", "x".repeat(40)),
                );
                e.series = format!("site/node{i}/temperature");
                e
            })
            .collect();
        let refs: Vec<&AlertEvent> = events.iter().collect();
        let msgs = telegram_messages(&refs);
        assert!(msgs.len() > 1, "{} messages", msgs.len());
        let mut seen = 0;
        for m in &msgs {
            assert!(utf16_len(m) <= TELEGRAM_LIMIT, "{}", utf16_len(m));
            // Every block is whole: as many openings as closings of each tag.
            assert_eq!(m.matches("<code>").count(), m.matches("</code>").count());
            assert_eq!(m.matches("<i>").count(), m.matches("</i>").count());
            seen += m.matches("alert number ").count();
        }
        assert_eq!(seen, 200);
        for i in [0, 57, 199] {
            let hits = msgs
                .iter()
                .filter(|m| m.contains(&format!("alert number {i} ")))
                .count();
            assert_eq!(hits, 1, "alert {i}");
        }
    }

    #[test]
    fn one_huge_alert_is_cut_to_fit() {
        let e = ev(AlertState::Firing, Severity::Critical, &"<&>".repeat(3000));
        let b = telegram_block(&e);
        assert!(utf16_len(&b) <= TELEGRAM_LIMIT, "{}", utf16_len(&b));
        assert!(b.contains('…'));
        assert!(!b.contains("&am\n") && !b.ends_with('&'));
    }
}
