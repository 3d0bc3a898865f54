//! Home Assistant MQTT discovery: alert states appear in Home Assistant without YAML.
//!
//! ```text
//!  live bus ─► AlertEvent ─► Discovery::on_event ─► (topic, payload) ─► broker ─► Home Assistant
//!  start    ─► Discovery::announce  (one binary_sensor per rule)
//! ```
//!
//! One `binary_sensor` (device class `problem`) per rule, on while any alert of the
//! rule fires, and one per alert (rule × series), announced the first time that alert
//! fires. Every entity is available while the service's retained status
//! (`centinela/status`, see `live.rs`) does not say `offline`: the service says so
//! when it stops, and with an external broker its last will says so when it dies.
//! The messages are retained, so Home Assistant learns them whenever it (re)connects.
//! Pure: it takes events and gives publications; `live.rs` sends them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::model::{AlertEvent, AlertState};

/// Home Assistant reads availability from the service's status: `offline` is set on
/// it when the service stopped or died (its last will).
const AVAILABILITY_TEMPLATE: &str =
    "{{ 'offline' if value_json.offline is defined and value_json.offline else 'online' }}";
/// Where the entities' states are published: `<STATE_PREFIX>/<rule>[/<series>]`.
pub const STATE_PREFIX: &str = "centinela/ha";

/// A retained publication.
pub type Publication = (String, Vec<u8>);

/// What is known of the alerts, to publish the rules' states.
#[derive(Debug)]
pub struct Discovery {
    prefix: String,
    rules: Vec<String>,
    /// Alerts that fire now, per rule.
    firing: BTreeMap<String, BTreeSet<String>>,
    /// Alerts already announced to Home Assistant.
    announced: BTreeSet<String>,
}

impl Discovery {
    /// `prefix` is Home Assistant's discovery prefix (`homeassistant`).
    pub fn new(prefix: &str, rules: impl IntoIterator<Item = String>) -> Discovery {
        Discovery {
            prefix: prefix.trim_end_matches('/').to_string(),
            rules: rules.into_iter().collect(),
            firing: BTreeMap::new(),
            announced: BTreeSet::new(),
        }
    }

    /// At start: one entity per rule.
    pub fn announce(&self) -> Vec<Publication> {
        self.rules.iter().map(|r| self.config(r, None)).collect()
    }

    /// What a transition changes in Home Assistant: the alert's entity (announced the
    /// first time it fires) and its rule's.
    pub fn on_event(&mut self, e: &AlertEvent) -> Vec<Publication> {
        let on = match e.state {
            AlertState::Firing | AlertState::Acknowledged | AlertState::Repeat => true,
            AlertState::Resolved => false,
            // Pending, flapping and the like change nothing a person acts on.
            _ => return Vec::new(),
        };
        let mut out = Vec::new();
        let id = e.alert_id();
        if on && self.announced.insert(id.clone()) {
            out.push(self.config(&e.rule, Some(&e.series)));
        }
        if !self.announced.contains(&id) {
            // Resolved before it was ever seen firing here: nothing to turn off.
            return out;
        }
        out.push((state_topic(&e.rule, Some(&e.series)), on_off(on)));
        let firing = self.firing.entry(e.rule.clone()).or_default();
        let before = !firing.is_empty();
        if on {
            firing.insert(e.series.clone());
        } else {
            firing.remove(&e.series);
        }
        let after = !firing.is_empty();
        if before != after || on {
            out.push((state_topic(&e.rule, None), on_off(after)));
        }
        out
    }

    fn config(&self, rule: &str, series: Option<&str>) -> Publication {
        let (object, name) = match series {
            None => (object_id(&format!("rule_{rule}")), rule.to_string()),
            Some(s) => (
                object_id(&format!("alert_{rule}_{s}")),
                format!("{rule} {s}"),
            ),
        };
        let body = json!({
            "name": name,
            "unique_id": format!("centinela_{object}"),
            "object_id": format!("centinela_{object}"),
            "state_topic": state_topic(rule, series),
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "problem",
            "availability_topic": crate::live::STATUS_TOPIC,
            "availability_template": AVAILABILITY_TEMPLATE,
            "device": {
                "identifiers": ["centinela"],
                "name": "centinela",
                "manufacturer": "centinela",
                "sw_version": env!("CARGO_PKG_VERSION"),
            },
        });
        let topic = format!("{}/binary_sensor/centinela/{object}/config", self.prefix);
        (topic, body.to_string().into_bytes())
    }
}

fn state_topic(rule: &str, series: Option<&str>) -> String {
    match series {
        None => format!("{STATE_PREFIX}/{rule}"),
        Some(s) => format!("{STATE_PREFIX}/{rule}/{s}"),
    }
}

fn on_off(on: bool) -> Vec<u8> {
    if on {
        b"ON".to_vec()
    } else {
        b"OFF".to_vec()
    }
}

/// Home Assistant's object ids: `[a-zA-Z0-9_-]`, everything else becomes `_`.
fn object_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;

    fn event(rule: &str, series: &str, state: AlertState) -> AlertEvent {
        AlertEvent {
            rule: rule.into(),
            series: series.into(),
            state,
            severity: Severity::Warning,
            value: Some(1.0),
            unit: None,
            ts: 0,
            message: String::new(),
            notify: Vec::new(),
        }
    }

    fn topics(p: &[Publication]) -> Vec<(String, String)> {
        p.iter()
            .map(|(t, b)| (t.clone(), String::from_utf8_lossy(b).into_owned()))
            .collect()
    }

    #[test]
    fn a_rule_and_its_alerts_become_binary_sensors() {
        let mut d = Discovery::new("homeassistant", ["hot".to_string()]);
        let start = topics(&d.announce());
        assert_eq!(
            start[0].0,
            "homeassistant/binary_sensor/centinela/rule_hot/config"
        );
        let cfg: serde_json::Value = serde_json::from_str(&start[0].1).unwrap();
        assert_eq!(cfg["state_topic"], "centinela/ha/hot");
        assert_eq!(cfg["availability_topic"], "centinela/status");
        assert_eq!(cfg["device_class"], "problem");
        assert_eq!(start.len(), 1);

        let fired = topics(&d.on_event(&event("hot", "gh/n1/t", AlertState::Firing)));
        assert_eq!(
            fired.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
            [
                "homeassistant/binary_sensor/centinela/alert_hot_gh_n1_t/config",
                "centinela/ha/hot/gh/n1/t",
                "centinela/ha/hot",
            ]
        );
        assert_eq!(fired[1].1, "ON");
        assert_eq!(fired[2].1, "ON");
        // A second alert of the rule: the rule stays on until both resolve.
        d.on_event(&event("hot", "gh/n2/t", AlertState::Firing));
        let one = topics(&d.on_event(&event("hot", "gh/n1/t", AlertState::Resolved)));
        assert_eq!(
            one,
            [("centinela/ha/hot/gh/n1/t".to_string(), "OFF".to_string())]
        );
        let both = topics(&d.on_event(&event("hot", "gh/n2/t", AlertState::Resolved)));
        assert_eq!(
            both.last().unwrap(),
            &("centinela/ha/hot".to_string(), "OFF".to_string())
        );
        assert!(d
            .on_event(&event("hot", "gh/n3/t", AlertState::Pending))
            .is_empty());
        assert!(d
            .on_event(&event("hot", "gh/n3/t", AlertState::Resolved))
            .is_empty());
    }
}
