//! `centinela kafka status`: what the brokers say about this configuration's topics and
//! consumer group — brokers reachable, topics with their partition counts, the group's
//! members and the partitions each one owns, committed offsets and lag per partition.
//! It asks the brokers only (it does not join the group), so it works beside running
//! instances and when none runs.

use std::fmt::Write as _;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaSourceConfig;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One partition of an input topic.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset (`None`: nothing committed yet).
    pub committed: Option<i64>,
    /// Low and high watermarks.
    pub start: i64,
    pub end: i64,
    /// The member owning it now, if the group is active.
    pub owner: Option<String>,
}

impl PartitionStatus {
    /// Messages not yet committed by the group.
    pub fn lag(&self) -> i64 {
        (self.end - self.committed.unwrap_or(self.start)).max(0)
    }
}

/// What `kafka status` found.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub brokers: Vec<String>,
    /// (topic, what it is for, partitions or `None` when missing).
    pub topics: Vec<(String, &'static str, Option<usize>)>,
    pub group_state: String,
    /// (member id, client host, owned partitions as `topic[p]`).
    pub members: Vec<(String, String, Vec<String>)>,
    pub partitions: Vec<PartitionStatus>,
}

impl Status {
    /// Whether everything the source needs is there (brokers answered, input topics
    /// exist; the changelog and alerts topics are created when an instance starts).
    pub fn ok(&self) -> bool {
        !self.brokers.is_empty() && self.topics.iter().all(|t| t.2.is_some() || t.1 != "input")
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "brokers: {}", self.brokers.join(", "));
        for (t, what, n) in &self.topics {
            match n {
                Some(n) => {
                    let _ = writeln!(o, "ok   topic {t:<32} {n} partitions ({what})");
                }
                None if *what == "input" => {
                    let _ = writeln!(o, "FAIL topic {t:<32} missing ({what})");
                }
                None => {
                    let _ = writeln!(
                        o,
                        "     topic {t:<32} not there yet ({what}; created when an instance starts)"
                    );
                }
            }
        }
        let _ = writeln!(
            o,
            "group: {} ({} members)",
            self.group_state,
            self.members.len()
        );
        for (id, host, parts) in &self.members {
            let _ = writeln!(o, "  {id} {host}: {}", parts.join(","));
        }
        let _ = writeln!(
            o,
            "{:<28} {:>10} {:>10} {:>8}  owner",
            "partition", "committed", "end", "lag"
        );
        for p in &self.partitions {
            let committed = p.committed.map_or("-".to_string(), |c| c.to_string());
            let _ = writeln!(
                o,
                "{:<28} {:>10} {:>10} {:>8}  {}",
                format!("{}[{}]", p.topic, p.partition),
                committed,
                p.end,
                p.lag(),
                p.owner.as_deref().unwrap_or("-")
            );
        }
        let lag: i64 = self.partitions.iter().map(PartitionStatus::lag).sum();
        let _ = writeln!(o, "total lag: {lag}");
        o
    }
}

/// Asks the brokers. Fails when none answers.
pub fn status(cfg: &KafkaSourceConfig) -> Result<Status, String> {
    let mut c = crate::store::kafka::client_config(&cfg.brokers, &cfg.security())?;
    c.set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().map_err(|e| format!("client: {e}"))?;
    let md = consumer
        .fetch_metadata(None, TIMEOUT)
        .map_err(|e| format!("brokers {} do not answer: {e}", cfg.brokers.join(",")))?;
    let mut st = Status {
        brokers: md
            .brokers()
            .iter()
            .map(|b| format!("{} at {}:{}", b.id(), b.host(), b.port()))
            .collect(),
        ..Status::default()
    };
    let count = |name: &str| {
        md.topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| t.partitions().len())
            .filter(|&n| n > 0)
    };
    for t in &cfg.topics {
        st.topics.push((t.clone(), "input", count(t)));
    }
    let changelog = cfg.changelog_topic();
    st.topics.push((
        changelog.clone(),
        "alert state changelog",
        count(&changelog),
    ));
    if let Some(a) = &cfg.alerts_topic {
        st.topics.push((a.clone(), "alert events", count(a)));
    }
    let mut owner_of = std::collections::HashMap::new();
    match consumer.fetch_group_list(Some(&cfg.group_id), TIMEOUT) {
        Ok(list) => {
            if let Some(g) = list.groups().first() {
                st.group_state = g.state().to_string();
                for m in g.members() {
                    let parts = m.assignment().map(decode_assignment).unwrap_or_default();
                    let mut names = Vec::new();
                    for (t, ps) in &parts {
                        for p in ps {
                            owner_of.insert((t.clone(), *p), m.client_host().to_string());
                            names.push(format!("{t}[{p}]"));
                        }
                    }
                    st.members
                        .push((m.id().to_string(), m.client_host().to_string(), names));
                }
            }
        }
        Err(e) => st.group_state = format!("unknown ({e})"),
    }
    let mut tpl = TopicPartitionList::new();
    for t in &cfg.topics {
        for p in 0..count(t).unwrap_or(0) as i32 {
            tpl.add_partition(t, p);
        }
    }
    let committed = consumer
        .committed_offsets(tpl.clone(), TIMEOUT)
        .unwrap_or_else(|_| tpl.clone());
    for e in tpl.elements() {
        let (start, end) = consumer
            .fetch_watermarks(e.topic(), e.partition(), TIMEOUT)
            .unwrap_or((0, 0));
        let c = committed
            .find_partition(e.topic(), e.partition())
            .and_then(|x| match x.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        st.partitions.push(PartitionStatus {
            topic: e.topic().to_string(),
            partition: e.partition(),
            committed: c,
            start,
            end,
            owner: owner_of
                .get(&(e.topic().to_string(), e.partition()))
                .cloned(),
        });
    }
    Ok(st)
}

/// The partitions in a member's assignment (the consumer protocol's
/// `ConsumerProtocolAssignment`: version, then topics with their partitions).
pub fn decode_assignment(b: &[u8]) -> Vec<(String, Vec<i32>)> {
    fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
        let (h, t) = b.split_at_checked(N)?;
        *b = t;
        h.try_into().ok()
    }
    fn go(mut b: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
        let b = &mut b;
        take::<2>(b)?;
        let topics = i32::from_be_bytes(take::<4>(b)?);
        let mut out = Vec::new();
        for _ in 0..topics.max(0) {
            let len = i16::from_be_bytes(take::<2>(b)?).max(0) as usize;
            let (name, rest) = b.split_at_checked(len)?;
            *b = rest;
            let name = String::from_utf8_lossy(name).into_owned();
            let n = i32::from_be_bytes(take::<4>(b)?);
            let mut ps = Vec::new();
            for _ in 0..n.max(0) {
                ps.push(i32::from_be_bytes(take::<4>(b)?));
            }
            out.push((name, ps));
        }
        Some(out)
    }
    go(b).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_lists_its_topics_and_partitions() {
        let mut b = vec![0, 1, 0, 0, 0, 1, 0, 2];
        b.extend(b"in");
        b.extend([0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decode_assignment(&b), [("in".to_string(), vec![3, 5])]);
        assert!(decode_assignment(&b[..9]).is_empty(), "cut short");
    }
}
