//! The state as the widgets read it: the sorted, filtered rows, the selection kept in
//! view, the open alerts and silences, and the chart's points.

use std::collections::VecDeque;

use ratatui::layout::Rect;
use ratatui::text::Span;

use crate::model::{topic_matches, AlertEvent, AlertState, PipelineStatus, SeriesId, Timestamp};

use super::{
    Alert, App, Areas, Detail, Focus, LogLine, Popup, Series, SeriesState, Silence, SortKey,
    Threshold, MIN_HEIGHT, MIN_WIDTH,
};
use crate::tui::format;

impl App {
    /// Rebuilds the sorted rows and keeps the selections in view. Call before drawing.
    pub fn prepare(&mut self) {
        self.silences.retain(|s| s.until > self.now);
        self.engine_silences.retain(|s| s.until > self.now);
        if self.order_stale || matches!(self.sort, SortKey::Value | SortKey::Age | SortKey::State) {
            self.rebuild_order();
        }
        if self.alerts_stale {
            self.rebuild_alert_order();
        }
        self.clamp_all();
    }

    fn rebuild_order(&mut self) {
        self.order_stale = false;
        let filter = self.filter.as_deref();
        let mut rows: Vec<&Series> = self
            .series
            .values()
            .filter(|s| filter.is_none_or(|f| filter_matches(f, &s.name)))
            .collect();
        let now = self.now;
        match self.sort {
            SortKey::Name => rows.sort_unstable_by(|a, b| a.name.cmp(&b.name)),
            SortKey::Value => rows.sort_unstable_by(|a, b| {
                let (x, y) = (
                    a.value.unwrap_or(f64::NEG_INFINITY),
                    b.value.unwrap_or(f64::NEG_INFINITY),
                );
                y.total_cmp(&x).then_with(|| a.name.cmp(&b.name))
            }),
            SortKey::Age => rows.sort_unstable_by(|a, b| {
                a.seen_at
                    .unwrap_or(i64::MIN)
                    .cmp(&b.seen_at.unwrap_or(i64::MIN))
                    .then_with(|| a.name.cmp(&b.name))
            }),
            SortKey::State => {
                let mut keyed: Vec<(u8, &Series)> = rows
                    .iter()
                    .map(|s| (self.state_of(s, now).rank(), *s))
                    .collect();
                keyed.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
                rows = keyed.into_iter().map(|(_, s)| s).collect();
            }
        }
        if self.reverse {
            rows.reverse();
        }
        let width = |t: &str| Span::raw(format::printable(t)).width().min(200) as u16;
        self.name_width = rows.iter().map(|s| width(&s.name)).max().unwrap_or(0);
        self.unit_width = rows
            .iter()
            .filter_map(|s| s.unit.as_deref())
            .map(width)
            .max()
            .unwrap_or(0)
            .min(16);
        self.order = rows.into_iter().map(|s| s.name.clone()).collect();
        if let Some(name) = &self.selected_name {
            if let Some(i) = self.order.iter().position(|n| n == name) {
                self.sel[0] = i;
            }
        }
    }

    fn rebuild_alert_order(&mut self) {
        self.alerts_stale = false;
        let mut keys: Vec<(&(String, String), &Alert)> = self.alerts.iter().collect();
        keys.sort_by(|(ka, a), (kb, b)| {
            (a.state == AlertState::Pending)
                .cmp(&(b.state == AlertState::Pending))
                .then(b.severity.cmp(&a.severity))
                .then(b.since.cmp(&a.since))
                .then(ka.cmp(kb))
        });
        self.alert_order = keys.into_iter().map(|(k, _)| k.clone()).collect();
    }

    pub(super) fn clamp_all(&mut self) {
        let areas = self.areas();
        let lens = [self.order.len(), self.alert_order.len(), self.log.len()];
        let heights = [
            Areas::table_rows(areas.series),
            Areas::table_rows(areas.alerts),
            Areas::list_rows(areas.log),
        ];
        for i in 0..3 {
            self.sel[i] = self.sel[i].min(lens[i].saturating_sub(1));
            let h = heights[i].max(1);
            if self.sel[i] < self.offset[i] {
                self.offset[i] = self.sel[i];
            } else if self.sel[i] >= self.offset[i] + h {
                self.offset[i] = self.sel[i] + 1 - h;
            }
            self.offset[i] = self.offset[i].min(lens[i].saturating_sub(h));
        }
        self.selected_name = self.order.get(self.sel[0]).cloned();
    }

    // ---- reading the state (for the widgets) ---------------------------------------

    pub fn now(&self) -> Timestamp {
        self.now
    }

    pub fn status(&self) -> Option<&PipelineStatus> {
        self.status.as_ref()
    }

    /// When the last status arrived.
    pub fn status_at(&self) -> Timestamp {
        self.status_at
    }

    pub fn lagged(&self) -> u64 {
        self.lagged
    }

    pub fn feed_closed(&self) -> bool {
        self.feed_closed
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    pub fn rows(&self) -> &[SeriesId] {
        &self.order
    }

    pub fn series(&self, name: &str) -> Option<&Series> {
        self.series.get(name)
    }

    /// Open alerts in pane order.
    pub fn alert_rows(&self) -> impl Iterator<Item = &Alert> {
        self.alert_order.iter().filter_map(|k| self.alerts.get(k))
    }

    pub fn alert_count(&self) -> usize {
        self.alerts.len()
    }

    /// Open alerts of one series.
    pub fn alerts_of<'a>(&'a self, series: &str) -> impl Iterator<Item = &'a Alert> + 'a {
        let series = series.to_string();
        self.alerts
            .range((series.clone(), String::new())..)
            .take_while(move |((s, _), _)| *s == series)
            .map(|(_, a)| a)
    }

    /// Transitions of one series' alerts, newest first.
    pub fn history_of<'a>(&'a self, series: &'a str) -> impl Iterator<Item = &'a AlertEvent> + 'a {
        self.alert_history
            .iter()
            .rev()
            .filter(move |e| e.series == series)
    }

    pub fn log(&self) -> &VecDeque<LogLine> {
        &self.log
    }

    pub fn filter(&self) -> Option<&str> {
        self.filter.as_deref()
    }

    pub fn sort(&self) -> (SortKey, bool) {
        (self.sort, self.reverse)
    }

    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// Selected row and first shown row of a pane.
    pub fn selection(&self, pane: Focus) -> (usize, usize) {
        let i = pane as usize;
        (self.sel[i], self.offset[i])
    }

    pub fn selected_series(&self) -> Option<&str> {
        self.order.get(self.sel[0]).map(|s| &**s)
    }

    pub fn selected_alert(&self) -> Option<&Alert> {
        self.alert_order
            .get(self.sel[1])
            .and_then(|k| self.alerts.get(k))
    }

    pub fn detail(&self) -> Option<&Detail> {
        self.detail.as_ref()
    }

    pub fn popup(&self) -> Option<&Popup> {
        self.popup.as_ref()
    }

    pub fn flash(&self) -> Option<&str> {
        self.flash.as_ref().map(|(m, _)| m.as_str())
    }

    pub fn size(&self) -> Rect {
        self.size
    }

    /// Whether the terminal is too small for the layout.
    pub fn too_small(&self) -> bool {
        self.size.width < MIN_WIDTH || self.size.height < MIN_HEIGHT
    }

    /// Thresholds of the rules whose pattern matches `series`.
    pub fn thresholds_for<'a>(
        &'a self,
        series: &'a str,
    ) -> impl Iterator<Item = &'a Threshold> + 'a {
        self.thresholds
            .iter()
            .filter(move |t| topic_matches(&t.pattern, series))
    }

    /// Whether a silence (the engine's, or one this viewer asked for) covers the alert.
    pub fn is_silenced(&self, a: &Alert) -> bool {
        self.all_silences().any(|s| {
            s.until > self.now && (topic_matches(&s.pattern, &a.series) || s.pattern == a.rule)
        })
    }

    fn all_silences(&self) -> impl Iterator<Item = &Silence> {
        self.silences.iter().chain(&self.engine_silences)
    }

    /// Until when notifications about `series` are silenced: by a silence of the
    /// series itself or of the rule of one of its alerts. `None` when not silenced.
    pub fn silenced_until(&self, series: &str) -> Option<Timestamp> {
        let rules: Vec<&str> = self.alerts_of(series).map(|a| a.rule.as_str()).collect();
        self.all_silences()
            .filter(|s| {
                s.until > self.now
                    && (topic_matches(&s.pattern, series) || rules.contains(&s.pattern.as_str()))
            })
            .map(|s| s.until)
            .max()
    }

    /// Whether one of the series' alerts is acknowledged.
    pub fn is_acked(&self, series: &str) -> bool {
        self.alerts_of(series)
            .any(|a| a.state == AlertState::Acknowledged)
    }

    /// The engine's silences, as read from the store; replaces the previous list.
    pub fn set_engine_silences(&mut self, silences: Vec<Silence>) {
        self.engine_silences = silences;
        self.order_stale = true;
        self.dirty = true;
    }

    /// The colour-giving state of a series.
    /// This instance's name in a Kafka cluster (`None` when not clustered).
    pub fn cluster(&self) -> Option<&super::Cluster> {
        self.cluster.as_ref()
    }

    /// Who owns `name` when clustered: this instance when the series has had a
    /// reading since its partitions last changed and is not stale (its partition is
    /// held here), else `None` (another instance, or not known until its next
    /// reading).
    pub fn owner(&self, name: &str) -> Option<&str> {
        let c = self.cluster.as_ref()?;
        let s = self.series.get(name)?;
        let seen = s.seen_at?;
        (seen >= c.since && self.now - seen <= self.opts.stale_after_ms)
            .then_some(c.instance.as_str())
    }

    pub fn series_state(&self, name: &str) -> SeriesState {
        match self.series.get(name) {
            Some(s) => self.state_of(s, self.now),
            None => SeriesState::Ok,
        }
    }

    fn state_of(&self, s: &Series, now: Timestamp) -> SeriesState {
        let mut best = match s.seen_at {
            Some(t) if now - t <= self.opts.stale_after_ms => SeriesState::Ok,
            _ => SeriesState::Stale,
        };
        for a in self.alerts_of(&s.name) {
            let st = match a.state {
                AlertState::Pending => SeriesState::Pending,
                AlertState::Acknowledged => SeriesState::Acked,
                _ if self.is_silenced(a) => SeriesState::Silenced,
                _ => SeriesState::Firing(a.severity),
            };
            if st.rank() > best.rank() {
                best = st;
            }
        }
        // Notifications about it are held: say so rather than `ok` or `stale`.
        if best.rank() < SeriesState::Silenced.rank() && self.silenced_until(&s.name).is_some() {
            best = SeriesState::Silenced;
        }
        best
    }

    /// The points of the detail chart within its range: stored history, then the
    /// recent values after it.
    pub fn chart_points(&self) -> Vec<(Timestamp, f64)> {
        let Some(d) = &self.detail else {
            return Vec::new();
        };
        let since = self.now - d.range.millis();
        let mut pts: Vec<(Timestamp, f64)> = d
            .history
            .iter()
            .flatten()
            .copied()
            .filter(|p| p.0 >= since)
            .collect();
        let after = pts.last().map_or(since, |p| p.0 + 1);
        if let Some(s) = self.series.get(d.series.as_str()) {
            pts.extend(s.recent.iter().copied().filter(|p| p.0 >= after));
        }
        pts
    }
}

/// The series filter: with `+` or `#` an MQTT filter, otherwise a case-insensitive
/// part of the name.
pub fn filter_matches(filter: &str, name: &str) -> bool {
    if filter.contains(['+', '#']) {
        topic_matches(filter, name)
    } else {
        name.to_lowercase().contains(&filter.to_lowercase())
    }
}

/// At most `2 * buckets` points: the min and the max of each time bucket, in time
/// order, so spikes survive.
pub fn downsample(points: Vec<(Timestamp, f64)>, buckets: usize) -> Vec<(Timestamp, f64)> {
    if points.len() <= 2 * buckets || buckets == 0 {
        return points;
    }
    let (t0, t1) = (points[0].0, points[points.len() - 1].0);
    let span = (t1 - t0).max(1) as f64;
    let mut out = Vec::with_capacity(2 * buckets);
    type Point = (Timestamp, f64);
    // (bucket, lowest, highest) of the bucket being filled.
    let mut cur: Option<(usize, Point, Point)> = None;
    let flush = |out: &mut Vec<(Timestamp, f64)>, lo: (Timestamp, f64), hi: (Timestamp, f64)| {
        if lo.0 == hi.0 {
            out.push(lo);
        } else if lo.0 < hi.0 {
            out.extend([lo, hi]);
        } else {
            out.extend([hi, lo]);
        }
    };
    for p in points {
        let b = (((p.0 - t0) as f64 / span) * (buckets - 1) as f64) as usize;
        cur = match cur {
            Some((cb, lo, hi)) if cb == b => Some((
                cb,
                if p.1 < lo.1 { p } else { lo },
                if p.1 > hi.1 { p } else { hi },
            )),
            Some((_, lo, hi)) => {
                flush(&mut out, lo, hi);
                Some((b, p, p))
            }
            None => Some((b, p, p)),
        };
    }
    if let Some((_, lo, hi)) = cur {
        flush(&mut out, lo, hi);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_keeps_spikes_and_order() {
        let mut pts: Vec<(Timestamp, f64)> = (0..10_000).map(|i| (i as i64 * 1000, 20.0)).collect();
        pts[5_000].1 = 99.0;
        let out = downsample(pts, 100);
        assert!(out.len() <= 200, "{}", out.len());
        assert!(out.iter().any(|p| p.1 == 99.0));
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn filter_takes_wildcards_or_a_part_of_the_name() {
        assert!(filter_matches(
            "greenhouse/+/temperature",
            "greenhouse/node1/temperature"
        ));
        assert!(!filter_matches(
            "greenhouse/+",
            "greenhouse/node1/temperature"
        ));
        assert!(filter_matches("Node1", "greenhouse/node1/temperature"));
        assert!(!filter_matches("node2", "greenhouse/node1/temperature"));
    }
}
