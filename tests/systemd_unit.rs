//! The shipped systemd unit, checked by systemd's own tools: `systemd-analyze security
//! --offline=yes` must rate its exposure 2.0 or lower ("OK" or better), and
//! `systemd-analyze verify` must find nothing to complain about. Both are skipped, with a
//! message on stderr, on machines without systemd-analyze (`.ci/install-ops.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_centinela");

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/centinela.service")
}

fn analyze_available() -> bool {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!(
                "SKIPPED: systemd-analyze is not installed; the systemd unit was not checked \
                 (run .ci/install-ops.sh)"
            );
            false
        }
    }
}

/// The figure of the "Overall exposure level for X: 1.2 OK" line.
fn overall_exposure(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let after = line.rsplit_once(": ")?.1;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn exposure_figure_is_parsed() {
    let sample = "✗ UMask=   Files created by service are group-readable by default   0.1\n\n\
                  → Overall exposure level for centinela.service: 1.2 OK 🙂\n";
    assert_eq!(overall_exposure(sample), Some(1.2));
    assert_eq!(
        overall_exposure("→ Overall exposure level for x.service: 9.6 UNSAFE 😨"),
        Some(9.6)
    );
    assert_eq!(overall_exposure("no summary"), None);
}

#[test]
fn unit_is_rated_ok_or_better_by_systemd_analyze_security() {
    if !analyze_available() {
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    let exposure =
        overall_exposure(&text).unwrap_or_else(|| panic!("no overall exposure in:\n{text}\n{err}"));
    eprintln!("systemd-analyze security: overall exposure {exposure}");
    assert!(
        exposure <= 2.0,
        "exposure {exposure} is above 2.0; the failing checks:\n{}",
        text.lines()
            .filter(|l| l.starts_with('✗'))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Checks the unit's syntax and its commands. `verify` needs the binaries it names to
/// exist, so it runs on a copy whose `/usr/bin/centinela` is the binary just built.
#[test]
fn unit_passes_systemd_analyze_verify() {
    if !analyze_available() {
        return;
    }
    let text = std::fs::read_to_string(unit_path()).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/centinela run"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("centinela.service");
    std::fs::write(&copy, text.replace("/usr/bin/centinela", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // verify warns about unknown keys without failing: any line naming the unit counts.
    let complaints: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("centinela.service"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {}\n{err}",
        out.status
    );
}

/// The settings the service cannot work without, whatever the hardening says.
#[test]
fn unit_keeps_what_the_service_needs() {
    let text = std::fs::read_to_string(unit_path()).unwrap();
    let has = |line: &str| text.lines().any(|l| l.trim() == line);
    for line in [
        "Type=notify",
        "ExecStartPre=/usr/bin/centinela validate --config /etc/centinela/centinela.toml",
        "ExecStart=/usr/bin/centinela run --config /etc/centinela/centinela.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=centinela",
        "ConfigurationDirectory=centinela",
        "User=centinela",
        "EnvironmentFile=-/etc/centinela/centinela.env",
    ] {
        assert!(has(line), "missing {line:?}");
    }
    assert!(text.lines().any(|l| l.starts_with("WatchdogSec=")));
    // TCP (MQTT, SMTP, Telegram, InfluxDB) and AF_UNIX (sd_notify, journald) stay open.
    let families = text
        .lines()
        .find_map(|l| l.strip_prefix("RestrictAddressFamilies="))
        .unwrap_or("");
    for f in ["AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(
            families.split_whitespace().any(|x| x == f),
            "RestrictAddressFamilies lacks {f}"
        );
    }
    assert!(!has("PrivateNetwork=yes"));
}

/// A configuration error (exit 2) is not restarted, anything else that keeps failing
/// stops after a few tries, and the open-files limit fits the broker's connections.
#[test]
fn unit_does_not_loop_and_fits_max_connections() {
    let text = std::fs::read_to_string(unit_path()).unwrap();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .trim()
            .to_string()
    };
    assert_eq!(value("RestartPreventExitStatus"), "2");
    let burst: u32 = value("StartLimitBurst").parse().unwrap();
    assert!((1..=10).contains(&burst), "StartLimitBurst={burst}");
    let nofile: u64 = value("LimitNOFILE").parse().unwrap();
    let max = centinela::config::Config::default().broker.max_connections as u64;
    assert!(
        nofile >= max + centinela::limits::RESERVED_FDS,
        "LimitNOFILE={nofile} is below max_connections {max} + {}",
        centinela::limits::RESERVED_FDS
    );
    // Documentation= names the man page the package installs.
    let docs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Documentation="))
        .flat_map(str::split_whitespace)
        .collect();
    assert!(docs.contains(&"man:centinela(1)"), "{docs:?}");
    assert!(
        docs.contains(&"file:///usr/share/doc/centinela/README.md"),
        "{docs:?}"
    );
}
