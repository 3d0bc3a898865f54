//! Backtesting (`centinela replay`): the configured rules run over recorded readings
//! in timestamp order, with the readings' time as the clock, and nothing is sent.
//!
//! The engine is the live one: `tick` runs at the multiples of `engine.tick` in
//! replayed time (skipping stretches where nothing can be due), so deadman rules
//! fire at last_seen + `silence` as soon as the replayed clock passes it, and
//! `repeat`, silences and flapping behave as they would have. A tick at a multiple of
//! `engine.tick` runs before the readings of a later timestamp and after those of an
//! equal one.

use std::collections::{HashMap, HashSet};

use crate::config::{EngineConfig, RuleConfig, RuleKind};
use crate::model::{AlertEvent, AlertState, Reading, Severity, Timestamp};

use super::{human_ms, Engine};

/// What one rule did over the replayed readings.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSummary {
    pub rule: String,
    pub kind: Option<RuleKind>,
    pub severity: Severity,
    /// Transitions to firing.
    pub fired: u64,
    /// Distinct series that fired.
    pub series_fired: usize,
    /// Messages that would have been sent (firing, repeat, ack, resolved, flapping),
    /// after silences and flapping: events with a non-empty `notify`, one per event
    /// whatever the number of channels (a rule without `notify` sends none).
    pub notifications: u64,
    /// Time spent firing, summed over its alerts (alerts still firing at the end count
    /// up to the last reading).
    pub firing_ms: i64,
    /// The longest single firing.
    pub longest_ms: i64,
}

/// Everything a replay produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayReport {
    /// Every transition, in the order the engine emitted them.
    pub events: Vec<AlertEvent>,
    /// One per configured rule, in config order.
    pub rules: Vec<RuleSummary>,
    pub readings: u64,
    pub series: usize,
    /// Readings older than the newest of their series, or not a finite number (moved
    /// no rule state).
    pub ignored: u64,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct Acc {
    fired: u64,
    notifications: u64,
    series: HashSet<String>,
    firing_ms: i64,
    longest_ms: i64,
}

/// A replay fed one reading at a time (readings in timestamp order), for input too
/// large to sort in memory; [`replay`] sorts and feeds a whole set.
#[derive(Debug)]
pub struct Replayer {
    engine: Engine,
    severities: HashMap<String, Severity>,
    clock: Option<Timestamp>,
    from: Option<Timestamp>,
    last_tick: Option<Timestamp>,
    events: Vec<AlertEvent>,
    open: HashMap<(String, String), Timestamp>,
    acc: HashMap<String, Acc>,
    readings: u64,
    series: HashSet<crate::model::SeriesId>,
    buf: Vec<AlertEvent>,
}

impl Replayer {
    pub fn new(rules: &[RuleConfig], cfg: &EngineConfig) -> Replayer {
        Replayer {
            engine: Engine::new(rules, cfg),
            severities: rules.iter().map(|r| (r.name.clone(), r.severity)).collect(),
            clock: None,
            from: None,
            last_tick: None,
            events: Vec::new(),
            open: HashMap::new(),
            acc: HashMap::new(),
            readings: 0,
            series: HashSet::new(),
            buf: Vec::new(),
        }
    }

    /// Feeds one reading; returns the events it (and the ticks before it) caused.
    /// A reading older than an earlier one of its series is ignored, as live.
    pub fn push(&mut self, r: &Reading) -> &[AlertEvent] {
        let first = self.events.len();
        if self.clock.is_none() {
            // Start watching (deadman `expect`) at the first replayed instant.
            self.from = Some(r.ts);
            self.run_tick(r.ts);
        }
        self.advance(r.ts, false);
        self.readings += 1;
        if !self.series.contains(&*r.series) {
            self.series.insert(r.series.clone());
        }
        self.engine.on_reading(r, r.ts, &mut self.buf);
        self.clock = Some(self.clock.map_or(r.ts, |c| c.max(r.ts)));
        self.observe();
        &self.events[first..]
    }

    /// Runs the ticks up to the last reading and sums up.
    pub fn finish(mut self) -> ReplayReport {
        if let Some(c) = self.clock {
            self.advance(c, true);
            for ((rule, _), since) in std::mem::take(&mut self.open) {
                let acc = self.acc.entry(rule).or_default();
                acc.firing_ms += c - since;
                acc.longest_ms = acc.longest_ms.max(c - since);
            }
        }
        let rules = self
            .engine
            .rule_stats()
            .iter()
            .map(|s| {
                let acc = self.acc.remove(&s.rule).unwrap_or_default();
                RuleSummary {
                    rule: s.rule.clone(),
                    kind: s.kind,
                    severity: self.severities.get(&s.rule).copied().unwrap_or_default(),
                    fired: acc.fired,
                    series_fired: acc.series.len(),
                    notifications: acc.notifications,
                    firing_ms: acc.firing_ms,
                    longest_ms: acc.longest_ms,
                }
            })
            .collect();
        ReplayReport {
            events: self.events,
            rules,
            readings: self.readings,
            series: self.series.len(),
            ignored: self.engine.ignored_readings(),
            from: self.from,
            to: self.clock,
        }
    }

    /// Ticks at the multiples of the tick interval before `t` (or up to `t` when
    /// `inclusive`), only where the engine may have something to do.
    fn advance(&mut self, t: Timestamp, inclusive: bool) {
        let step = self.engine.tick_ms();
        while let Some(due) = self.engine.next_due() {
            let floor = self
                .last_tick
                .map_or(Timestamp::MIN, |l| l.saturating_add(1));
            let at = ceil_to(due.max(floor).max(self.from.unwrap_or(t)), step);
            if at > t || (at == t && !inclusive) {
                break;
            }
            self.run_tick(at);
        }
    }

    fn run_tick(&mut self, at: Timestamp) {
        self.engine.tick(at, &mut self.buf);
        self.last_tick = Some(at);
        self.observe();
    }

    fn observe(&mut self) {
        for ev in self.buf.drain(..) {
            if !ev.notify.is_empty() {
                self.acc.entry(ev.rule.clone()).or_default().notifications += 1;
            }
            match ev.state {
                AlertState::Firing => {
                    let acc = self.acc.entry(ev.rule.clone()).or_default();
                    acc.fired += 1;
                    acc.series.insert(ev.series.clone());
                    self.open
                        .insert((ev.rule.clone(), ev.series.clone()), ev.ts);
                }
                AlertState::Resolved => {
                    if let Some(since) = self.open.remove(&(ev.rule.clone(), ev.series.clone())) {
                        let acc = self.acc.entry(ev.rule.clone()).or_default();
                        acc.firing_ms += ev.ts - since;
                        acc.longest_ms = acc.longest_ms.max(ev.ts - since);
                    }
                }
                _ => {}
            }
            self.events.push(ev);
        }
    }
}

/// The zone a recorded time without an offset is read in (`replay --tz`): UTC, a
/// fixed offset (`+01:00`, `-0530`), or the machine's local zone (`local`, with its
/// daylight saving time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    #[default]
    Utc,
    Fixed(chrono::FixedOffset),
    Local,
}

impl std::str::FromStr for Zone {
    type Err = String;

    fn from_str(s: &str) -> Result<Zone, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" || t == "+00:00" {
            return Ok(Zone::Utc);
        }
        if t.eq_ignore_ascii_case("local") {
            return Ok(Zone::Local);
        }
        let bad = || format!("{s:?} is not a zone: give UTC, local, or an offset such as +01:00");
        let (sign, rest) = match t.as_bytes().first() {
            Some(b'+') => (1, &t[1..]),
            Some(b'-') => (-1, &t[1..]),
            _ => return Err(bad()),
        };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
            return Err(bad());
        }
        let h: i32 = digits[..2].parse().map_err(|_| bad())?;
        let m: i32 = if digits.len() == 4 {
            digits[2..].parse().map_err(|_| bad())?
        } else {
            0
        };
        if h > 14 || m > 59 {
            return Err(bad());
        }
        chrono::FixedOffset::east_opt(sign * (h * 3600 + m * 60))
            .map(Zone::Fixed)
            .ok_or_else(bad)
    }
}

/// A recorded time as people and spreadsheets write it, in epoch ms: epoch
/// milliseconds, RFC 3339 (`2026-11-20T10:00:00Z`, `2026-11-20 10:00:00+01:00`), or a
/// time without offset (`2026-11-20 10:00:00`, `2026-11-20T10:00`, `2026/11/20
/// 10:00:00.250`), read in `zone`.
pub fn parse_time(text: &str, zone: Zone) -> Result<Timestamp, String> {
    use chrono::TimeZone;
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    let iso = t.replacen(' ', "T", 1);
    for s in [t, iso.as_str()] {
        if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(d.timestamp_millis());
        }
    }
    let naive = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y/%m/%dT%H:%M:%S%.f",
        "%Y/%m/%dT%H:%M",
    ]
    .iter()
    .find_map(|f| chrono::NaiveDateTime::parse_from_str(&iso, f).ok())
    .ok_or_else(|| {
        format!(
            "ts {t:?} is not a time: give epoch milliseconds, RFC 3339 (2026-11-20T10:00:00Z) \
             or a spreadsheet time (2026-11-20 10:00:00, read as UTC unless --tz says otherwise)"
        )
    })?;
    let at = match zone {
        Zone::Utc => Some(naive.and_utc().timestamp_millis()),
        Zone::Fixed(o) => o
            .from_local_datetime(&naive)
            .single()
            .map(|d| d.timestamp_millis()),
        Zone::Local => chrono::Local
            .from_local_datetime(&naive)
            .earliest()
            .map(|d| d.timestamp_millis()),
    };
    at.ok_or_else(|| format!("ts {t:?} does not exist in the local zone (a daylight saving gap)"))
}

fn ceil_to(x: Timestamp, step: i64) -> Timestamp {
    let r = x.rem_euclid(step);
    if r == 0 {
        x
    } else {
        x.saturating_add(step - r)
    }
}

/// Runs `rules` over `readings` (sorted here by timestamp, stably) and reports every
/// transition and a summary per rule.
pub fn replay(
    rules: &[RuleConfig],
    cfg: &EngineConfig,
    readings: impl IntoIterator<Item = Reading>,
) -> ReplayReport {
    let mut all: Vec<Reading> = readings.into_iter().collect();
    all.sort_by_key(|r| r.ts);
    let mut rp = Replayer::new(rules, cfg);
    for r in &all {
        rp.push(r);
    }
    rp.finish()
}

/// The summary table printed after a replay.
pub fn render_summary(rep: &ReplayReport) -> String {
    let mut out = String::new();
    match (rep.from, rep.to) {
        (Some(from), Some(to)) => out.push_str(&format!(
            "Replayed {} readings of {} series, {} → {} ({}).\n",
            thousands(rep.readings),
            thousands(rep.series as u64),
            when(from),
            when(to),
            human_ms(to - from)
        )),
        _ => out.push_str("No readings to replay.\n"),
    }
    let transitions = rep
        .events
        .iter()
        .filter(|e| e.state != AlertState::Acknowledged)
        .count();
    out.push_str(&format!("{} events.", thousands(transitions as u64)));
    if rep.ignored > 0 {
        out.push_str(&format!(
            " {} readings were older than their series' newest (or not numbers) and moved no rule.",
            thousands(rep.ignored)
        ));
    }
    out.push_str("\n\n");
    if rep.rules.is_empty() {
        out.push_str("No rules configured.\n");
        return out;
    }
    let header = [
        "RULE",
        "KIND",
        "SEVERITY",
        "FIRED",
        "SERIES",
        "NOTIFICATIONS",
        "TIME FIRING",
        "LONGEST",
    ];
    let rows: Vec<Vec<String>> = rep
        .rules
        .iter()
        .map(|r| {
            let dur = |ms: i64| {
                if ms > 0 {
                    human_ms(ms)
                } else {
                    "-".to_string()
                }
            };
            vec![
                r.rule.clone(),
                r.kind.map_or("?", kind_name).to_string(),
                r.severity.to_string(),
                thousands(r.fired),
                thousands(r.series_fired as u64),
                thousands(r.notifications),
                dur(r.firing_ms),
                dur(r.longest_ms),
            ]
        })
        .collect();
    // Text columns left-aligned, figures right-aligned.
    use crate::format::Align::{Left, Right};
    let align = [Left, Left, Left, Right, Right, Right, Right, Right];
    out.push_str(&crate::format::table(&header, &align, &rows));
    out.push_str(
        "\nNOTIFICATIONS: messages that would have been sent after repeat, silences and flapping \
         (one per event, whatever the number of channels; a rule without `notify` sends none).\n",
    );
    out
}

fn kind_name(k: RuleKind) -> &'static str {
    match k {
        RuleKind::Threshold => "threshold",
        RuleKind::Rate => "rate",
        RuleKind::Window => "window",
        RuleKind::Deadman => "deadman",
    }
}

fn when(ts: Timestamp) -> String {
    match chrono::DateTime::from_timestamp_millis(ts) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => ts.to_string(),
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreadsheet_times_are_read_in_the_zone_given() {
        let utc = 1_795_168_800_000; // 2026-11-20T10:00:00Z
        let plus1: Zone = "+01:00".parse().unwrap();
        let table: &[(&str, Zone, Timestamp)] = &[
            ("2026-11-20 10:00:00", Zone::Utc, utc),
            ("2026-11-20T10:00:00", Zone::Utc, utc),
            ("2026-11-20 10:00", Zone::Utc, utc),
            ("2026/11/20 10:00:00.250", Zone::Utc, utc + 250),
            ("2026-11-20 10:00:00", plus1, utc - 3_600_000),
            (
                "2026-11-20 10:00:00",
                "-0530".parse().unwrap(),
                utc + 19_800_000,
            ),
            // An offset in the text wins over the zone.
            ("2026-11-20T10:00:00Z", plus1, utc),
            ("2026-11-20 10:00:00+02:00", Zone::Utc, utc - 7_200_000),
            ("1795168800000", plus1, utc),
        ];
        for (text, zone, want) in table {
            assert_eq!(parse_time(text, *zone), Ok(*want), "{text} in {zone:?}");
        }
        assert!(parse_time("yesterday", Zone::Utc)
            .unwrap_err()
            .contains("2026-11-20 10:00:00"));
        assert!("+25:00".parse::<Zone>().is_err());
        assert!("Europe/Madrid"
            .parse::<Zone>()
            .unwrap_err()
            .contains("+01:00"));
        assert_eq!("utc".parse::<Zone>(), Ok(Zone::Utc));
        assert_eq!("local".parse::<Zone>(), Ok(Zone::Local));
    }

    #[test]
    fn ceil_and_thousands() {
        assert_eq!(ceil_to(1001, 1000), 2000);
        assert_eq!(ceil_to(2000, 1000), 2000);
        assert_eq!(ceil_to(-1, 1000), 0);
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(thousands(100), "100");
    }
}
