//! The open-files limit against `broker.max_connections`: every MQTT connection holds a
//! descriptor, so a soft limit below the connections allowed plus what the rest of the
//! service keeps open (database, HTTP, outgoing connections) would refuse sensors once
//! many are connected. `centinela run` warns at start; the unit sets `LimitNOFILE=`.

/// Descriptors the service keeps open beside the broker's connections: the database
/// and its WAL, the HTTP endpoint, SMTP/Telegram/InfluxDB connections, the journal.
pub const RESERVED_FDS: u64 = 64;

/// The soft "Max open files" limit from the text of `/proc/self/limits`; `None` when
/// unlimited or not found.
pub fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
}

/// The warning for a soft limit `soft` with `max_connections` allowed, if it is too low.
pub fn too_low(soft: u64, max_connections: usize) -> Option<String> {
    let needed = max_connections as u64 + RESERVED_FDS;
    (soft < needed).then(|| {
        format!(
            "the open-files limit is {soft}, below broker.max_connections ({max_connections}) + \
             {RESERVED_FDS}: connections past about {} will be refused; raise LimitNOFILE= \
             (systemctl edit centinela) to {needed} or more, or lower max_connections",
            soft.saturating_sub(RESERVED_FDS)
        )
    })
}

/// Warns when this process's open-files limit does not fit `max_connections`.
pub fn check_open_files(max_connections: usize) {
    let Ok(text) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    if let Some(msg) = soft_open_files(&text).and_then(|s| too_low(s, max_connections)) {
        tracing::warn!("{msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str =
        "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max cpu time              unlimited            unlimited            seconds   \n\
        Max open files            1024                 524288               files     \n\
        Max locked memory         8388608              8388608              bytes     \n";

    #[test]
    fn the_soft_limit_is_read_from_proc_limits() {
        assert_eq!(soft_open_files(LIMITS), Some(1024));
        assert_eq!(
            soft_open_files(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert_eq!(soft_open_files(""), None);
    }

    #[test]
    fn a_limit_below_the_connections_warns_with_the_fix() {
        let msg = too_low(1024, 1000).unwrap();
        assert!(msg.contains("1024") && msg.contains("LimitNOFILE"), "{msg}");
        assert!(msg.contains("1064 or more"), "{msg}");
        assert_eq!(too_low(2048, 1000), None);
        assert_eq!(too_low(1064, 1000), None);
    }
}
