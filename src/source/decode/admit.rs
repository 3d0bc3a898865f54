//! Admission of one reading: its series name and unit checked ([`super::super::name`]),
//! its timestamp inside the window ([`super::Limits`]), a retained message newer than
//! what is known, the number of series bounded; names and units interned.

use std::cell::Cell;
use std::sync::Arc;

use super::super::name::{check_series, printable};
use super::value::show_ts;
use super::{DecodeError, Decoder, Known, Stamp, MAX_INTERNED};
use crate::model::{Reading, SeriesId, Timestamp};

impl Decoder {
    /// Checks one reading and appends it to `out`, or lists why not in `refused`.
    pub(super) fn emit(
        &mut self,
        name: &str,
        value: f64,
        stamp: Stamp,
        unit: Option<Arc<str>>,
        out: &mut Vec<Reading>,
    ) {
        if let Err(problem) = check_series(name) {
            self.refused.push(DecodeError::InvalidSeries {
                problem,
                series: printable(name),
            });
            return;
        }
        let ts = stamp.ts;
        if self
            .limits
            .max_future_ms
            .is_some_and(|f| ts > stamp.now.saturating_add(f))
        {
            self.refused.push(DecodeError::FutureTimestamp {
                series: name.to_string(),
                ts: show_ts(ts),
            });
            return;
        }
        if self
            .limits
            .max_past_ms
            .is_some_and(|p| ts < stamp.now.saturating_sub(p))
        {
            self.refused.push(DecodeError::TooOld {
                series: name.to_string(),
                ts: show_ts(ts),
            });
            return;
        }
        // A retained message is news only with its own timestamp, newer than the last.
        let verdict = |last: Timestamp| match (stamp.retained, stamp.own) {
            (false, _) => None,
            (true, false) => Some(DecodeError::RetainedWithoutTs {
                series: name.to_string(),
            }),
            (true, true) if ts <= last => Some(DecodeError::RetainedNotNewer {
                series: name.to_string(),
                ts: show_ts(ts),
            }),
            (true, true) => None,
        };
        let (series, problem) = match self.names.get(name) {
            Some(k) => {
                let problem = verdict(k.last.get());
                if problem.is_none() && ts > k.last.get() {
                    k.last.set(ts);
                }
                (k.id.clone(), problem)
            }
            None => {
                if let Some(max) = self.limits.max_series.filter(|m| self.names.len() >= *m) {
                    self.refused.push(DecodeError::TooManySeries {
                        series: name.to_string(),
                        max,
                    });
                    return;
                }
                let id: SeriesId = Arc::from(name);
                let problem = verdict(Timestamp::MIN);
                if self.names.len() < MAX_INTERNED {
                    let last = if problem.is_none() {
                        ts
                    } else {
                        Timestamp::MIN
                    };
                    self.names.insert(
                        name.into(),
                        Known {
                            id: id.clone(),
                            last: Cell::new(last),
                        },
                    );
                }
                (id, problem)
            }
        };
        if let Some(p) = problem {
            self.refused.push(p);
            return;
        }
        out.push(Reading {
            series,
            value,
            ts,
            unit,
        });
    }

    pub(super) fn intern_unit(&mut self, unit: &str) -> Arc<str> {
        if let Some(u) = self.units.get(unit) {
            return u.clone();
        }
        let u: Arc<str> = Arc::from(unit);
        if self.units.len() < 1024 {
            self.units.insert(unit.into(), u.clone());
        }
        u
    }
}
