//! The live bus folded into the state: readings, alert transitions, the pipeline's
//! status, the event log, and what the shell sets (size, clock, history, thresholds).

use std::sync::Arc;

use ratatui::layout::Rect;

use crate::model::{
    AlertEvent, AlertState, LiveEvent, LogLevel, PipelineStatus, Reading, SeriesId, Severity,
    Timestamp,
};

use super::{
    downsample, Alert, App, LogLine, Series, Threshold, ALERT_HISTORY_CAP, CHART_BUCKETS,
    DECODE_LOG_EVERY_MS, LOG_CAP, RECENT_CAP,
};
use crate::tui::format;

impl App {
    /// Folds one event of the live bus into the state.
    pub fn apply(&mut self, ev: LiveEvent, now: Timestamp) {
        self.now = self.now.max(now);
        self.dirty = true;
        match ev {
            LiveEvent::Readings(batch) => {
                for r in batch.iter() {
                    let s = match self.series.get_mut(&*r.series) {
                        Some(s) => s,
                        None => {
                            self.order_stale = true;
                            self.series
                                .entry(r.series.clone())
                                .or_insert_with(|| Series::new(r.series.clone()))
                        }
                    };
                    s.value = Some(r.value);
                    if r.unit.is_some() && r.unit != s.unit {
                        s.unit.clone_from(&r.unit);
                        self.order_stale = true;
                    }
                    if s.recent.len() == RECENT_CAP {
                        s.recent.pop_front();
                    }
                    s.recent.push_back((r.ts, r.value));
                    s.seen_at = Some(now);
                }
            }
            LiveEvent::Alert(ev) => self.apply_alert(ev),
            LiveEvent::Status(s) => {
                self.note_decode_errors(&s, now);
                self.note_cluster(&s, now);
                self.status = Some(s);
                self.status_at = now;
            }
            LiveEvent::Log { ts, level, text } => self.push_log(ts, level, text),
        }
    }

    /// Whether (and as what) this instance is clustered, from the status; a change of
    /// its partitions restarts who owns what (a series is owned here once it has a
    /// reading after the change).
    fn note_cluster(&mut self, s: &PipelineStatus, now: Timestamp) {
        let told = s.outputs.iter().find(|o| o.name == super::CLUSTER_FIGURE);
        let Some(o) = told else {
            self.cluster = None;
            return;
        };
        let instance = o
            .label
            .strip_suffix(" partitions")
            .unwrap_or(&o.label)
            .to_string();
        let same = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.instance == instance && c.partitions == o.value);
        if !same {
            self.order_stale = true;
            self.cluster = Some(super::Cluster {
                instance,
                partitions: o.value,
                since: now,
            });
        }
    }

    /// Folds in what happened before the viewer started (open alerts, last values);
    /// readings are aged by their own time, not as if just received.
    /// Readings from several sources (the service's catalogue, its database) are
    /// applied oldest first, so the newest value of a series is the one kept.
    pub fn apply_initial(&mut self, events: Vec<LiveEvent>, now: Timestamp) {
        let mut readings: Vec<Reading> = Vec::new();
        let mut others = Vec::new();
        for ev in events {
            match ev {
                LiveEvent::Readings(batch) => readings.extend(batch.iter().cloned()),
                ev => others.push(ev),
            }
        }
        readings.sort_by(|a, b| a.ts.cmp(&b.ts).then_with(|| a.series.cmp(&b.series)));
        // The same last value from two sources is one point.
        readings.dedup_by(|a, b| a.ts == b.ts && a.series == b.series);
        for r in readings {
            let at = r.ts.min(now);
            self.apply(LiveEvent::Readings(Arc::from([r])), at);
        }
        for ev in others {
            self.apply(ev, now);
        }
        self.now = self.now.max(now);
    }

    fn apply_alert(&mut self, ev: AlertEvent) {
        let key = (ev.series.clone(), ev.rule.clone());
        let level = match ev.state {
            AlertState::Firing | AlertState::Repeat if ev.severity == Severity::Critical => {
                LogLevel::Error
            }
            AlertState::Firing | AlertState::Repeat | AlertState::Flapping => LogLevel::Warn,
            _ => LogLevel::Info,
        };
        let value = ev
            .value
            .map(|v| format!(" = {}", format::value_unit(v, ev.unit.as_deref())))
            .unwrap_or_default();
        self.push_log(
            ev.ts,
            level,
            format!(
                "{} {} {}{value} {}",
                ev.state,
                ev.severity,
                ev.alert_id(),
                ev.message
            )
            .trim_end()
            .to_string(),
        );
        if !self.series.contains_key(ev.series.as_str()) {
            let name: SeriesId = Arc::from(ev.series.as_str());
            self.series.insert(name.clone(), Series::new(name));
            self.order_stale = true;
        }
        match ev.state {
            AlertState::Resolved | AlertState::Cancelled | AlertState::Ok => {
                self.alerts.remove(&key);
            }
            state => {
                let entry = self.alerts.entry(key).or_insert_with(|| Alert {
                    rule: ev.rule.clone(),
                    series: ev.series.clone(),
                    state,
                    severity: ev.severity,
                    since: ev.ts,
                    value: None,
                    unit: None,
                    message: String::new(),
                });
                // A pending alert that fires starts its firing age then.
                if entry.state == AlertState::Pending && state != AlertState::Pending {
                    entry.since = ev.ts;
                }
                entry.state = state;
                entry.severity = ev.severity;
                entry.value = ev.value.or(entry.value);
                entry.unit = ev.unit.clone().or(entry.unit.take());
                entry.message.clone_from(&ev.message);
            }
        }
        self.alerts_stale = true;
        self.order_stale = true;
        if self.alert_history.len() == ALERT_HISTORY_CAP {
            self.alert_history.pop_front();
        }
        self.alert_history.push_back(ev);
    }

    /// Tells in the event log which kinds of bad payload arrived since it last told,
    /// at most every [`DECODE_LOG_EVERY_MS`].
    fn note_decode_errors(&mut self, s: &PipelineStatus, now: Timestamp) {
        if s.decode_errors_total <= self.decode_told.1
            || self
                .decode_told
                .2
                .is_some_and(|t| now - t < DECODE_LOG_EVERY_MS)
        {
            return;
        }
        let before = |r: &str| {
            self.decode_told
                .0
                .iter()
                .find(|(x, _)| x == r)
                .map_or(0, |(_, n)| *n)
        };
        let mut parts: Vec<String> = s
            .decode_errors
            .iter()
            .filter(|(r, n)| *n > before(r))
            .map(|(r, n)| format!("{} {}", n - before(r), r.replace('_', " ")))
            .collect();
        let new = s.decode_errors_total - self.decode_told.1;
        if parts.is_empty() {
            parts.push(format!("{new}"));
        }
        let text = format!(
            "bad payloads skipped: {} ({} in all; topics in the service's log)",
            parts.join(", "),
            s.decode_errors_total
        );
        self.decode_told = (s.decode_errors.clone(), s.decode_errors_total, Some(now));
        self.push_log(now, LogLevel::Warn, text);
    }

    fn push_log(&mut self, ts: Timestamp, level: LogLevel, text: String) {
        if self.log.len() == LOG_CAP {
            self.log.pop_back();
        }
        self.log.push_front(LogLine { ts, level, text });
        self.dirty = true;
    }

    /// The live bus dropped `n` events because this viewer fell behind.
    pub fn note_lagged(&mut self, n: u64, now: Timestamp) {
        self.lagged += n;
        self.push_log(
            now,
            LogLevel::Warn,
            format!("viewer fell behind: {n} live events skipped"),
        );
    }

    /// The live bus ended (the service stopped).
    pub fn note_closed(&mut self, now: Timestamp) {
        if !self.feed_closed {
            self.feed_closed = true;
            self.push_log(
                now,
                LogLevel::Error,
                "live feed closed: the service stopped".to_string(),
            );
        }
    }

    /// Stored history of a series for the detail chart (ascending by time).
    pub fn set_history(&mut self, series: &str, points: Vec<(Timestamp, f64)>) {
        if let Some(d) = self.detail.as_mut().filter(|d| d.series == series) {
            d.history = Some(downsample(points, CHART_BUCKETS));
            self.dirty = true;
        }
    }

    /// The thresholds of the configured rules, drawn on the detail chart of every
    /// series their pattern matches.
    pub fn set_thresholds(&mut self, thresholds: Vec<Threshold>) {
        self.thresholds = thresholds;
        self.dirty = true;
    }

    /// The terminal's size, for the layout, paging and mouse hits.
    pub fn set_size(&mut self, width: u16, height: u16) {
        self.size = Rect::new(0, 0, width, height);
        self.dirty = true;
    }

    /// Moves the clock; marks the screen dirty once a second while ages are shown.
    pub fn tick(&mut self, now: Timestamp) {
        if now / 1000 != self.now / 1000 && (!self.series.is_empty() || !self.alerts.is_empty()) {
            self.dirty = true;
        }
        if let Some((_, at)) = &self.flash {
            if now - at > 5_000 {
                self.flash = None;
                self.dirty = true;
            }
        }
        self.now = self.now.max(now);
    }
}
