//! Log lines as the journal, a terminal and a log shipper see them, from the real
//! binary: journal priorities when `JOURNAL_STREAM` names stderr, `--log-format json`,
//! `--log-level`, `--version`, and colours on a terminal only without `NO_COLOR`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_centinela");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config for `run` on a free port with its database in `dir`.
fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("centinela.toml");
    let text = format!(
        "[broker]\nlisten = \"127.0.0.1:{}\"\n\n[storage.sqlite]\npath = \"{}\"\n",
        free_port(),
        dir.join("centinela.db").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `centinela ARGS run --config …` with the open-files limit lowered to 512 (so
/// it warns at start), stderr into `log`; `journal` sets `JOURNAL_STREAM` to that
/// file's device and inode, as systemd does for a service logging to the journal.
fn start(dir: &Path, log: &Path, journal: bool, args: &[&str]) -> Child {
    let cfg = config(dir);
    let err = std::fs::File::create(log).unwrap();
    let meta = err.metadata().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 512 && exec \"$@\"")
        .arg("sh")
        .arg(BIN)
        .args(args)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    if journal {
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    } else {
        // What a child of a service sees after redirecting stderr: the variable stays,
        // the stream is another file.
        cmd.env(
            "JOURNAL_STREAM",
            format!("{}:{}", meta.dev(), meta.ino() + 1),
        );
    }
    cmd.spawn().unwrap()
}

/// Waits (at most 20 s) until the log holds a line containing `what`; stops the
/// service with SIGTERM and returns the whole log.
fn wait_and_stop(mut child: Child, log: &Path, what: &str) -> String {
    let done = |t: &str| t.contains(what);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(log).unwrap_or_default();
        if done(&text) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("centinela exited early ({status}):\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(done(&text), "no {what:?} within 20 s:\n{text}");
    std::fs::read_to_string(log).unwrap()
}

#[test]
fn on_the_journal_a_warning_arrives_as_priority_4_and_info_as_6() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let child = start(dir.path(), &log, true, &[]);
    let text = wait_and_stop(child, &log, "open-files limit is 512");
    let warning = text
        .lines()
        .find(|l| l.contains("open-files limit is 512"))
        .unwrap();
    assert!(warning.starts_with("<4>"), "{text}");
    assert!(warning.contains("LimitNOFILE"), "{text}");
    let starting = text.lines().find(|l| l.contains("starting")).unwrap();
    assert!(starting.starts_with("<6>"), "{text}");
    // The journal has its own timestamps, and no terminal colours belong there.
    for line in text.lines().filter(|l| !l.is_empty()) {
        assert!(
            line.starts_with('<'),
            "line without a priority: {line:?}\n{text}"
        );
        assert!(!line.contains('\x1b'), "{text}");
        assert!(!line[3..].trim_start().starts_with("20"), "{text}");
    }
}

#[test]
fn a_journal_stream_naming_another_file_gets_plain_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let child = start(dir.path(), &log, false, &[]);
    let text = wait_and_stop(child, &log, "open-files limit is 512");
    let warning = text
        .lines()
        .find(|l| l.contains("open-files limit is 512"))
        .unwrap();
    assert!(warning.starts_with("20"), "{text}");
    assert!(warning.contains("WARN"), "{text}");
    assert!(!text.contains("<4>") && !text.contains('\x1b'), "{text}");
}

#[test]
fn log_format_json_writes_one_object_per_line_with_its_level() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let child = start(
        dir.path(),
        &log,
        false,
        &["--log-format", "json", "--log-level", "warn"],
    );
    let text = wait_and_stop(child, &log, "open-files limit is 512");
    let objects: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let warning = objects
        .iter()
        .find(|o| {
            o["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("open-files limit is 512"))
        })
        .unwrap();
    assert_eq!(warning["level"], "WARN");
    // --log-level warn hides the "starting" line the default level (info) shows.
    assert!(objects.iter().all(|o| o["level"] != "INFO"), "{text}");
}

#[test]
fn version_names_the_commit_and_the_target() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let expected_start = format!("centinela {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected_start), "{text}");
    let arch = std::env::consts::ARCH;
    assert!(text.contains(&format!(", {arch}-")), "{text}");
    assert!(text.trim_end().ends_with(')'), "{text}");
    // The commit is the checkout's when built from git (or "unknown" without one).
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let commit = text
        .split("(commit ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap();
    assert!(
        commit == "unknown" || commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{text}"
    );
    if let Some(head) = head {
        // A commit made since the build would differ; the build script reruns on one.
        assert_eq!(commit, head, "{text}");
    }
}

#[test]
fn an_invalid_log_level_is_a_usage_error_naming_the_value() {
    let out = Command::new(BIN)
        .args(["--log-level", "loud", "validate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"loud\" is not a log level"), "{err}");
}

/// What `centinela run` writes to a terminal (a pseudo-terminal from `script`) when its
/// broker port is taken, so it logs its start and exits; `no_color` sets `NO_COLOR=1`.
fn on_a_terminal(no_color: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = dir.path().join("centinela.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"127.0.0.1:{port}\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
             [storage.sqlite]\npath = \"{}\"\n",
            dir.path().join("centinela.db").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "script", "-qec"])
        .arg(format!("{BIN} run --config {}", config.display()))
        .arg("/dev/null")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd.output().expect("script (util-linux) runs");
    drop(taken);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn on_a_terminal_logs_are_coloured_unless_no_color_is_set() {
    let coloured = on_a_terminal(false);
    assert!(coloured.contains("no [[rules]] configured"), "{coloured}");
    assert!(
        coloured.contains("\x1b["),
        "a terminal gets colours:\n{coloured}"
    );
    let plain = on_a_terminal(true);
    assert!(plain.contains("no [[rules]] configured"), "{plain}");
    assert!(
        !plain.contains('\x1b'),
        "NO_COLOR=1 leaves out every escape sequence:\n{plain:?}"
    );
    assert!(plain.contains("WARN"), "{plain}");
}
