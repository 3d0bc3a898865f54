//! The `process_*` figures of `/metrics` (as every Prometheus client library names
//! them), read from `/proc/self` at each scrape. Linux only: elsewhere they are left out.

/// `write_bytes` of `/proc/self/io`: bytes this process caused to be sent to storage.
pub fn disk_bytes_written() -> Option<u64> {
    parse_proc_io_write_bytes(&std::fs::read_to_string("/proc/self/io").ok()?)
}

/// The `write_bytes:` field of a `/proc/<pid>/io` text.
pub fn parse_proc_io_write_bytes(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Resident memory of this process, from `VmRSS` in `/proc/self/status`.
pub fn resident_memory_bytes() -> Option<u64> {
    parse_proc_status_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// `VmRSS:   1234 kB` of a `/proc/<pid>/status` text, in bytes.
pub fn parse_proc_status_rss(text: &str) -> Option<u64> {
    let v = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Clock ticks per second in `/proc` times (`USER_HZ`): 100 on every Linux
/// architecture centinela builds for (x86_64, aarch64, armv7).
const USER_HZ: f64 = 100.0;

/// CPU time, open files and start time of this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Process {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// File descriptors open now (sockets included).
    pub open_fds: u64,
    /// The soft limit on open files (`LimitNOFILE`), if it is not unlimited.
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl Process {
    /// This process's figures now, or `None` where `/proc` does not have them.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let (ticks, start_ticks) = parse_proc_stat_cpu_ticks(&stat)?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|t| parse_proc_limits_max_files(&t));
        Some(Self {
            cpu_seconds: ticks as f64 / USER_HZ,
            open_fds,
            max_fds,
            start_time_seconds: boot as f64 + start_ticks as f64 / USER_HZ,
        })
    }
}

/// `utime + stime` and `starttime` (fields 14, 15 and 22, in clock ticks) of a
/// `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from its last `)`.
pub fn parse_proc_stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some((field(14)? + field(15)?, field(22)?))
}

/// The soft `Max open files` limit of a `/proc/<pid>/limits` text (`None` when
/// unlimited or absent).
pub fn parse_proc_limits_max_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let io = "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 0\nwrite_bytes: 81920\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_proc_io_write_bytes(io), Some(81920));
        assert_eq!(parse_proc_io_write_bytes("rchar: 1\n"), None);
        let status =
            "Name:\tcentinela\nVmHWM:\t  9000 kB\nVmRSS:\t    8192 kB\nRssAnon:\t 100 kB\n";
        assert_eq!(parse_proc_status_rss(status), Some(8192 * 1024));
        // This process: Linux has both files.
        assert!(resident_memory_bytes().unwrap() > 0);
        assert!(disk_bytes_written().is_some());
    }

    #[test]
    fn stat_fields_are_counted_past_a_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 50 0 0 20 0 4 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(parse_proc_stat_cpu_ticks(stat), Some((300, 123_456)));
        assert_eq!(parse_proc_stat_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn the_soft_open_files_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             95567                95567                processes\n\
                      Max open files            65536                524288               files\n";
        assert_eq!(parse_proc_limits_max_files(limits), Some(65536));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_proc_limits_max_files(unlimited), None);
    }

    #[test]
    fn this_process_has_figures() {
        let p = Process::read().expect("Linux has /proc/self");
        assert!(p.open_fds >= 3, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started before now, and not before this machine booted a year ago.
        assert!(p.start_time_seconds <= now + 1.0, "{p:?}");
        assert!(p.start_time_seconds > now - 366.0 * 86_400.0, "{p:?}");
        assert!(p.cpu_seconds >= 0.0, "{p:?}");
    }
}
