//! Compiled rules and the per-alert evaluation state of each kind.
//!
//! A [`RuleConfig`] becomes a [`Rule`] once, when the engine starts; each alert
//! (rule, series) then carries an [`EvalState`] that turns one reading into a
//! [`Verdict`] in O(1) amortised time: threshold rules keep nothing, rate rules keep
//! the readings of their window, window rules keep running sums and monotonic deques.

use std::collections::VecDeque;

use crate::config::{Agg, RuleConfig, RuleKind};
use crate::model::{Severity, Timestamp};

use super::render::Template;

/// Which side of the threshold is "on".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Above,
    Below,
}

impl Dir {
    /// On: strictly beyond the threshold (a value equal to it is not above/below).
    #[inline]
    pub(crate) fn on(self, v: f64, threshold: f64) -> bool {
        match self {
            Dir::Above => v > threshold,
            Dir::Below => v < threshold,
        }
    }

    /// Resolves a firing alert: strictly back past `clear`.
    #[inline]
    pub(crate) fn off(self, v: f64, clear: f64) -> bool {
        match self {
            Dir::Above => v < clear,
            Dir::Below => v > clear,
        }
    }

    pub(crate) fn word(self) -> &'static str {
        match self {
            Dir::Above => "above",
            Dir::Below => "below",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Threshold {
        dir: Dir,
        threshold: f64,
        clear: f64,
    },
    Window {
        agg: Agg,
        window: i64,
        dir: Dir,
        threshold: f64,
        clear: f64,
    },
    Rate {
        window: i64,
        rise: Option<f64>,
        fall: Option<f64>,
    },
    Deadman {
        silence: i64,
        expect: Vec<String>,
    },
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub name: String,
    pub pattern: String,
    pub kind: Kind,
    pub config_kind: RuleKind,
    pub severity: Severity,
    pub notify: Vec<String>,
    /// `for` in ms; 0 fires on the first reading that is on.
    pub for_ms: i64,
    pub repeat_ms: Option<i64>,
    /// The user's `message`, when given (pending, firing, repeat).
    pub template: Option<Template>,
    /// The user's `message_resolved`, when given.
    pub template_resolved: Option<Template>,
    /// Defaults when `message` / `message_resolved` are absent.
    pub default_active: Template,
    pub default_active_down: Template,
    pub default_resolved: Template,
    /// Always the default: a cancelled pending alert is for the history only.
    pub default_cancelled: Template,
}

impl Rule {
    /// Compiles a validated rule; `None` (with the reason) for one validation would
    /// have refused.
    pub(crate) fn compile(c: &RuleConfig) -> Result<Rule, String> {
        let threshold_of = |c: &RuleConfig| -> Result<(Dir, f64, f64), String> {
            match (c.above, c.below) {
                (Some(a), None) => Ok((Dir::Above, a, c.clear.unwrap_or(a))),
                (None, Some(b)) => Ok((Dir::Below, b, c.clear.unwrap_or(b))),
                _ => Err("needs exactly one of `above` and `below`".into()),
            }
        };
        let ms = |d: Option<crate::config::Duration>, what: &str| -> Result<i64, String> {
            match d {
                Some(d) if !d.is_zero() => Ok(d.as_millis()),
                _ => Err(format!("needs a `{what}` longer than zero")),
            }
        };
        let kind = match c.kind {
            RuleKind::Threshold => {
                let (dir, threshold, clear) = threshold_of(c)?;
                Kind::Threshold {
                    dir,
                    threshold,
                    clear,
                }
            }
            RuleKind::Window => {
                let (dir, threshold, clear) = threshold_of(c)?;
                let agg = c.agg.ok_or("needs `agg`")?;
                Kind::Window {
                    agg,
                    window: ms(c.window, "window")?,
                    dir,
                    threshold,
                    clear,
                }
            }
            RuleKind::Rate => {
                if c.rise.is_none() && c.fall.is_none() {
                    return Err("needs `rise` and/or `fall`".into());
                }
                Kind::Rate {
                    window: ms(c.window, "window")?,
                    rise: c.rise,
                    fall: c.fall,
                }
            }
            RuleKind::Deadman => Kind::Deadman {
                silence: ms(c.silence, "silence")?,
                expect: c.expect.clone(),
            },
        };
        let for_ms = match c.kind {
            // A deadman rule is about time without readings; `for` has no meaning there.
            RuleKind::Deadman => 0,
            _ => c.for_.map_or(0, |d| d.as_millis()),
        };
        let d = super::render::default_templates(&kind, for_ms);
        Ok(Rule {
            name: c.name.clone(),
            pattern: c.series.clone(),
            config_kind: c.kind,
            kind,
            severity: c.severity,
            notify: c.notify.clone(),
            for_ms,
            repeat_ms: c.repeat.filter(|d| !d.is_zero()).map(|d| d.as_millis()),
            template: c.message.as_deref().map(Template::parse),
            template_resolved: c.message_resolved.as_deref().map(Template::parse),
            default_active: Template::parse(&d.active),
            default_active_down: Template::parse(&d.active_down),
            default_resolved: Template::parse(&d.resolved),
            default_cancelled: Template::parse(&d.cancelled),
        })
    }

    pub(crate) fn is_deadman(&self) -> bool {
        matches!(self.kind, Kind::Deadman { .. })
    }

    pub(crate) fn fresh_state(&self) -> EvalState {
        match &self.kind {
            Kind::Threshold { .. } | Kind::Deadman { .. } => EvalState::None,
            Kind::Rate { .. } => EvalState::Rate(VecDeque::new()),
            Kind::Window { agg, .. } => EvalState::Window(WindowState::new(*agg)),
        }
    }
}

/// What one reading says about an alert's condition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verdict {
    /// The condition is on: pending/firing may start or continue.
    pub on: bool,
    /// A firing alert resolves (past `clear`; for rate rules simply "not on").
    pub off: bool,
    /// What drove the decision: the value, the aggregate or the delta.
    pub value: f64,
}

/// Per-alert memory of a rule kind.
#[derive(Debug, Clone)]
pub(crate) enum EvalState {
    None,
    /// Readings with ts ≥ newest − window, oldest first.
    Rate(VecDeque<(Timestamp, f64)>),
    Window(WindowState),
}

impl EvalState {
    /// Feeds one reading (in timestamp order) and judges it.
    #[inline]
    pub(crate) fn judge(&mut self, kind: &Kind, ts: Timestamp, v: f64) -> Verdict {
        match (kind, self) {
            (
                Kind::Threshold {
                    dir,
                    threshold,
                    clear,
                },
                _,
            ) => Verdict {
                on: dir.on(v, *threshold),
                off: dir.off(v, *clear),
                value: v,
            },
            (
                Kind::Window {
                    window,
                    dir,
                    threshold,
                    clear,
                    ..
                },
                EvalState::Window(w),
            ) => {
                let a = w.push(ts, v, *window);
                // Until a whole window has been seen the alert keeps its state.
                let full = w.full(ts, *window);
                Verdict {
                    on: full && dir.on(a, *threshold),
                    off: full && dir.off(a, *clear),
                    value: a,
                }
            }
            (Kind::Rate { window, rise, fall }, EvalState::Rate(q)) => {
                let d = rate_push(q, ts, v, *window);
                let on = rise.is_some_and(|r| d > r) || fall.is_some_and(|f| d < -f);
                Verdict {
                    on,
                    off: !on,
                    value: d,
                }
            }
            // Deadman is handled by the engine (last_seen); a reading is never "on".
            _ => Verdict {
                on: false,
                off: true,
                value: v,
            },
        }
    }
}

/// Pushes a reading and returns delta = v − value of the oldest reading with
/// ts ≥ now − window (the reading itself when it is alone).
pub(crate) fn rate_push(
    q: &mut VecDeque<(Timestamp, f64)>,
    ts: Timestamp,
    v: f64,
    window: i64,
) -> f64 {
    q.push_back((ts, v));
    let lo = ts.saturating_sub(window);
    while q.front().is_some_and(|&(t, _)| t < lo) {
        q.pop_front();
    }
    // The reading just pushed has ts ≥ lo, so the queue is not empty.
    q.front().map_or(0.0, |&(_, first)| v - first)
}

/// Sliding aggregate over readings with ts in [newest − window, newest].
///
/// avg/sum/count keep the readings and a running sum (re-summed from scratch after
/// as many evictions as there are readings, so rounding cannot drift and the cost
/// stays O(1) amortised); min/max keep monotonic deques; spread keeps both.
#[derive(Debug, Clone)]
pub(crate) struct WindowState {
    agg: Agg,
    items: VecDeque<(Timestamp, f64)>,
    sum: f64,
    evicted: usize,
    mins: VecDeque<(Timestamp, f64)>,
    maxs: VecDeque<(Timestamp, f64)>,
    /// Timestamp of the first reading seen: the aggregate means nothing until the
    /// series has reported for a whole window (the spread of one reading is 0).
    first: Option<Timestamp>,
}

impl WindowState {
    /// Whether the readings seen so far span a whole window ending at `ts`.
    pub(crate) fn full(&self, ts: Timestamp, window: i64) -> bool {
        self.first.is_some_and(|f| ts.saturating_sub(window) >= f)
    }

    pub(crate) fn new(agg: Agg) -> Self {
        Self {
            agg,
            items: VecDeque::new(),
            sum: 0.0,
            evicted: 0,
            mins: VecDeque::new(),
            maxs: VecDeque::new(),
            first: None,
        }
    }

    /// Adds a reading (timestamps non-decreasing) and returns the aggregate.
    pub(crate) fn push(&mut self, ts: Timestamp, v: f64, window: i64) -> f64 {
        self.first.get_or_insert(ts);
        let lo = ts.saturating_sub(window);
        let (use_items, use_min, use_max) = match self.agg {
            Agg::Avg | Agg::Sum | Agg::Count => (true, false, false),
            Agg::Min => (false, true, false),
            Agg::Max => (false, false, true),
            Agg::Spread => (false, true, true),
        };
        if use_items {
            self.items.push_back((ts, v));
            self.sum += v;
            while let Some(&(t, old)) = self.items.front() {
                if t >= lo {
                    break;
                }
                self.items.pop_front();
                self.sum -= old;
                self.evicted += 1;
            }
            if self.evicted > self.items.len().max(32) {
                self.sum = self.items.iter().map(|&(_, x)| x).sum();
                self.evicted = 0;
            }
        }
        if use_min {
            while self.mins.back().is_some_and(|&(_, x)| x >= v) {
                self.mins.pop_back();
            }
            self.mins.push_back((ts, v));
            while self.mins.front().is_some_and(|&(t, _)| t < lo) {
                self.mins.pop_front();
            }
        }
        if use_max {
            while self.maxs.back().is_some_and(|&(_, x)| x <= v) {
                self.maxs.pop_back();
            }
            self.maxs.push_back((ts, v));
            while self.maxs.front().is_some_and(|&(t, _)| t < lo) {
                self.maxs.pop_front();
            }
        }
        // The newest reading is always inside the window, so every deque in use holds
        // at least it; the `map_or` defaults are never taken.
        let min = || self.mins.front().map_or(v, |&(_, x)| x);
        let max = || self.maxs.front().map_or(v, |&(_, x)| x);
        match self.agg {
            Agg::Avg => self.sum / self.items.len().max(1) as f64,
            Agg::Sum => self.sum,
            Agg::Count => self.items.len() as f64,
            Agg::Min => min(),
            Agg::Max => max(),
            Agg::Spread => max() - min(),
        }
    }

    /// Readings held (for tests of the memory bound).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.items.len().max(self.mins.len()).max(self.maxs.len())
    }
}

pub(crate) fn agg_name(agg: Agg) -> &'static str {
    match agg {
        Agg::Avg => "average",
        Agg::Min => "minimum",
        Agg::Max => "maximum",
        Agg::Sum => "sum",
        Agg::Count => "count",
        Agg::Spread => "spread",
    }
}
