//! Alerts the service raises about itself: a notification channel that keeps failing.
//! They live in the engine like the alerts of rules — stored with their state, listed
//! by `centinela alerts`, shown in the TUI, acknowledged and silenced the same way,
//! notified through the engine's events (and so through the outbox) — but their state
//! is set by the part of the service that sees the trouble ([`SystemAlert`] on the
//! engine stage's input), not judged from readings.
//!
//! Each is declared once at start ([`Engine::declare_system`]): a built-in rule that
//! matches only its own series, and its alert, so a stored state is restored and an
//! ack finds it. No user rule is attached to the series, and no reading is stored.

use std::collections::VecDeque;
use std::sync::Arc;

use super::rule::Rule;
use super::{Alert, Engine, Phase, RuleStats, Slot};
use crate::config::RuleConfig;
use crate::model::{AlertEvent, Severity, Timestamp};

/// A change of a system alert, sent to the engine stage.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemAlert {
    /// The built-in rule (`centinela-delivery-failing`).
    pub rule: String,
    /// Its series (`notify/telegram`).
    pub series: String,
    /// Firing (the trouble started) or resolved (it ended).
    pub firing: bool,
    /// When the trouble started or ended.
    pub ts: Timestamp,
    /// What people are told.
    pub message: String,
    /// The channels told (the others than the one in trouble).
    pub notify: Vec<String>,
}

/// The declaration of a system alert: its rule, series, severity and channels.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemRule {
    pub rule: String,
    pub series: String,
    pub severity: Severity,
    pub notify: Vec<String>,
}

impl Engine {
    /// Declares a system alert (idempotent). Call before [`Engine::restore`] so its
    /// stored state comes back.
    pub fn declare_system(&mut self, d: &SystemRule) {
        let known = self.rules.iter().position(|r| r.name == d.rule);
        let ri = match known {
            Some(ri) => ri,
            None => {
                let config = RuleConfig {
                    name: d.rule.clone(),
                    // Matched against this one series only; see below.
                    series: d.series.clone(),
                    kind: crate::config::RuleKind::Threshold,
                    above: Some(0.5),
                    below: None,
                    clear: None,
                    for_: None,
                    severity: d.severity,
                    notify: d.notify.clone(),
                    repeat: None,
                    message: None,
                    message_resolved: None,
                    window: None,
                    rise: None,
                    fall: None,
                    agg: None,
                    silence: None,
                    expect: Vec::new(),
                };
                let Ok(rule) = Rule::compile(&config) else {
                    return;
                };
                self.stats.push(RuleStats {
                    rule: rule.name.clone(),
                    kind: None,
                    ..RuleStats::default()
                });
                self.rules.push(rule);
                self.rules.len() - 1
            }
        };
        // A rule per channel would be many names; one rule name with a series per
        // channel is one alert each: widen the rule's pattern to the series family.
        if self.rules[ri].pattern != d.series {
            self.rules[ri].pattern = family(&self.rules[ri].pattern, &d.series);
        }
        let series: Arc<str> = Arc::from(d.series.as_str());
        let si = match self.index.get(&*series) {
            Some(&si) => si as usize,
            None => {
                // Not slot_of: user rules (a `#` deadman, say) must not watch it.
                self.slots.push(Slot {
                    newest: Timestamp::MIN,
                    last_value: None,
                    unit: None,
                    alerts: Vec::new(),
                });
                let si = self.slots.len() - 1;
                self.index.insert(series.clone(), si as u32);
                si
            }
        };
        if self.slots[si]
            .alerts
            .iter()
            .any(|&ai| self.alerts[ai as usize].rule == ri)
        {
            return;
        }
        let eval = self.rules[ri].fresh_state();
        self.slots[si].alerts.push(self.alerts.len() as u32);
        self.alerts.push(Alert {
            rule: ri,
            slot: si,
            series,
            phase: Phase::Ok,
            since: 0,
            value: None,
            last_seen: None,
            watch_since: None,
            lasted: None,
            last_notified: None,
            told: false,
            acked_by: None,
            flapping: false,
            transitions: VecDeque::new(),
            last_transition: 0,
            dirty: false,
            seen: false,
            eval,
            parked: false,
        });
    }

    /// Applies a change of a declared system alert; the events (firing, resolved) go
    /// to `out`. An undeclared one is ignored with a warning.
    pub fn system(&mut self, s: &SystemAlert, now: Timestamp, out: &mut Vec<AlertEvent>) {
        let found = self.index.get(s.series.as_str()).and_then(|&si| {
            self.slots[si as usize]
                .alerts
                .iter()
                .map(|&ai| ai as usize)
                .find(|&ai| self.rules[self.alerts[ai].rule].name == s.rule)
        });
        let Some(ai) = found else {
            tracing::warn!(rule = %s.rule, series = %s.series, "system alert not declared: ignored");
            return;
        };
        let to = if s.firing { Phase::Firing } else { Phase::Ok };
        if self.alerts[ai].phase == to {
            return;
        }
        let at = out.len();
        let value = Some(if s.firing { 1.0 } else { 0.0 });
        self.transition(ai, to, s.ts, value, now, out);
        if let Some(ev) = out.get_mut(at) {
            ev.message = s.message.clone();
            if !ev.notify.is_empty() {
                ev.notify = s.notify.clone();
            }
        }
    }
}

/// The system alerts of a configuration: two per notification channel on
/// `notify/<channel>`, raised when it keeps failing (`centinela-delivery-failing`) and
/// when notifications through it end dead (`centinela-delivery-dead`).
pub fn system_rules(cfg: &crate::config::Config) -> Vec<SystemRule> {
    use crate::notify::worker::{health_series, RULE_DEAD, RULE_FAILING};
    let channels: Vec<String> = cfg
        .notify
        .channels()
        .into_iter()
        .map(str::to_string)
        .collect();
    let kinds = [
        (RULE_FAILING, Severity::Critical),
        (RULE_DEAD, Severity::Warning),
    ];
    kinds
        .iter()
        .flat_map(|&(rule, severity)| channels.iter().map(move |c| (rule, severity, c)))
        .map(|(rule, severity, c)| SystemRule {
            rule: rule.to_string(),
            series: health_series(c),
            severity,
            notify: channels.clone(),
        })
        .collect()
}

/// The narrowest pattern covering two series of the same depth: differing levels
/// become `+` (`notify/telegram` and `notify/email` → `notify/+`).
fn family(a: &str, b: &str) -> String {
    let (x, y): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
    if x.len() != y.len() {
        return "#".into();
    }
    x.iter()
        .zip(&y)
        .map(|(p, q)| if p == q { *p } else { "+" })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertState, Control};

    fn declared() -> Engine {
        let mut e = Engine::new(&[], &crate::config::EngineConfig::default());
        for ch in ["email", "webhook"] {
            e.declare_system(&SystemRule {
                rule: "centinela-delivery-failing".into(),
                series: format!("notify/{ch}"),
                severity: Severity::Critical,
                notify: vec!["email".into(), "webhook".into()],
            });
        }
        e
    }

    fn change(firing: bool, ts: Timestamp) -> SystemAlert {
        SystemAlert {
            rule: "centinela-delivery-failing".into(),
            series: "notify/email".into(),
            firing,
            ts,
            message: format!("email firing={firing}"),
            notify: vec!["webhook".into()],
        }
    }

    #[test]
    fn a_system_alert_fires_is_acknowledged_resolves_and_survives_a_restart() {
        let mut e = declared();
        let mut out = Vec::new();
        e.system(&change(true, 1_000), 1_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].state, out[0].alert_id().as_str()),
            (
                AlertState::Firing,
                "centinela-delivery-failing/notify/email"
            )
        );
        assert_eq!(out[0].message, "email firing=true");
        assert_eq!(out[0].notify, ["webhook"], "not the failing channel itself");
        // Again while firing: nothing new.
        e.system(&change(true, 1_500), 1_500, &mut out);
        assert_eq!(out.len(), 1);
        let acked = e
            .control(
                &Control::Ack {
                    alert: "centinela-delivery-failing/notify/email".into(),
                    by: "ops".into(),
                },
                2_000,
            )
            .unwrap();
        assert_eq!(acked[0].state, AlertState::Acknowledged);
        let snap = e.snapshot(2_000);
        assert_eq!(snap.len(), 1, "{snap:?}");
        assert_eq!(snap[0].acked_by.as_deref(), Some("ops"));

        // A restart: the stored state comes back onto the declared alert.
        let records = e.records();
        let mut e = declared();
        e.restore(records, Vec::new(), 3_000);
        assert_eq!(e.snapshot(3_000).len(), 1, "still firing after the restart");
        let mut out = Vec::new();
        e.system(&change(false, 4_000), 4_000, &mut out);
        assert_eq!(out[0].state, AlertState::Resolved);
        assert!(e.snapshot(4_000).is_empty());
    }

    #[test]
    fn user_rules_do_not_watch_the_system_series() {
        let rule: RuleConfig = toml::from_str(
            "name = \"quiet\"\nseries = \"#\"\nkind = \"deadman\"\nsilence = \"1s\"\n",
        )
        .unwrap();
        let mut e = Engine::new(&[rule], &crate::config::EngineConfig::default());
        e.declare_system(&SystemRule {
            rule: "centinela-delivery-failing".into(),
            series: "notify/email".into(),
            severity: Severity::Critical,
            notify: Vec::new(),
        });
        let mut out = Vec::new();
        e.tick(1_000_000, &mut out);
        e.tick(2_000_000, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}
