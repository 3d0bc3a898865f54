//! `packaging/install.sh` as a Pi owner runs it, staged into a temporary `DESTDIR` so the
//! machine is left alone: which files land where, with which modes and contents, that a
//! second run keeps the configuration and the secrets a person edited, that a broker
//! already listening on the MQTT port turns the new configuration to external mode, and
//! that `--uninstall` (and `--purge`) take it all away again.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_centinela");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port nothing listens on, so the check for an existing broker finds none.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn install(dest: &Path, bin: &str) -> Output {
    install_with(dest, &[bin], unused_port(), None)
}

/// Runs install.sh with `args`, checking `port` for a broker, with `path` as PATH.
fn install_with(dest: &Path, args: &[&str], port: u16, path: Option<&Path>) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(repo().join("packaging/install.sh"))
        .args(args)
        .env("DESTDIR", dest)
        .env("CENTINELA_BROKER_PORT", port.to_string());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "install.sh failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn staged_install_puts_every_file_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = install(d, BIN);
    let stdout = String::from_utf8_lossy(&out.stdout);

    let bin = d.join("usr/bin/centinela");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(
        std::fs::metadata(&bin).unwrap().len(),
        std::fs::metadata(BIN).unwrap().len()
    );

    // The default configuration is what `centinela config` prints, and it validates.
    let config = d.join("etc/centinela/centinela.toml");
    let printed = Command::new(BIN).arg("config").output().unwrap();
    assert_eq!(std::fs::read(&config).unwrap(), printed.stdout);
    assert_eq!(mode(&config), 0o640);
    assert_eq!(mode(&d.join("etc/centinela")), 0o750);
    let v = Command::new(&bin)
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));

    let env = d.join("etc/centinela/centinela.env");
    assert_eq!(mode(&env), 0o600);
    let env_text = std::fs::read_to_string(&env).unwrap();
    for var in [
        "#CENTINELA_MQTT_PASSWORD=",
        "#CENTINELA_SMTP_PASSWORD=",
        "#CENTINELA_TELEGRAM_TOKEN=",
        "#CENTINELA_INFLUX_TOKEN=",
    ] {
        assert!(env_text.lines().any(|l| l == var), "{var} missing");
    }

    assert!(d.join("var/lib/centinela").is_dir());
    assert_eq!(mode(&d.join("var/lib/centinela")), 0o750);

    let unit = d.join("lib/systemd/system/centinela.service");
    assert_eq!(
        std::fs::read_to_string(&unit).unwrap(),
        std::fs::read_to_string(repo().join("systemd/centinela.service")).unwrap()
    );
    assert_eq!(mode(&unit), 0o644);
    assert!(!d.join("etc/systemd/system/centinela.service").exists());

    // The man page the unit's Documentation= names, completions, licences.
    let man = d.join("usr/share/man/man1/centinela.1.gz");
    let page = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc \"$0\"")
        .arg(&man)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&page.stdout).contains(".TH centinela 1"));
    for f in [
        "usr/share/bash-completion/completions/centinela",
        "usr/share/zsh/vendor-completions/_centinela",
        "usr/share/fish/vendor_completions.d/centinela.fish",
        "usr/share/doc/centinela/README.md",
        "usr/share/doc/centinela/LICENSE-MIT",
        "usr/share/doc/centinela/LICENSE-APACHE",
    ] {
        let p = d.join(f);
        assert!(
            std::fs::metadata(&p).map(|m| m.len() > 0).unwrap_or(false),
            "{f} missing"
        );
        assert_eq!(mode(&p), 0o644, "{f}");
    }
    let bash =
        std::fs::read_to_string(d.join("usr/share/bash-completion/completions/centinela")).unwrap();
    assert!(bash.contains("complete -F _centinela"), "{bash}");

    // A staged install never touches the machine's users or systemd.
    assert!(stdout.contains("systemctl not run"), "{stdout}");
    assert!(stdout.contains("user centinela not created"), "{stdout}");
}

#[test]
fn a_second_run_keeps_the_edited_config_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install(d, BIN);
    let config = d.join("etc/centinela/centinela.toml");
    let env = d.join("etc/centinela/centinela.env");
    let mine = "[broker]\nlisten = \"0.0.0.0:1883\"\nallow_anonymous = true\n";
    std::fs::write(&config, mine).unwrap();
    std::fs::write(&env, "CENTINELA_TELEGRAM_TOKEN=123:abc\n").unwrap();
    // Someone loosened the secrets' mode: the upgrade tightens it again.
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = install(d, BIN);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), mine);
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "CENTINELA_TELEGRAM_TOKEN=123:abc\n"
    );
    assert_eq!(mode(&env), 0o600);
    assert!(stdout.contains("kept existing"), "{stdout}");
}

#[test]
fn a_binary_that_cannot_run_here_gets_the_source_tree_config() {
    // A cross-built binary does not run on the build machine; stand in with a file that
    // is not a program.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("centinela-aarch64");
    std::fs::write(&fake, b"\x7fELF not for this machine").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dest = dir.path().join("root");
    install(&dest, fake.to_str().unwrap());
    assert_eq!(
        std::fs::read(dest.join("etc/centinela/centinela.toml")).unwrap(),
        std::fs::read(repo().join("config/centinela.toml")).unwrap()
    );
    assert_eq!(
        std::fs::read(dest.join("usr/bin/centinela")).unwrap(),
        std::fs::read(&fake).unwrap()
    );
}

#[test]
fn a_missing_binary_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg(repo().join("packaging/install.sh"))
        .arg(dir.path().join("nothing"))
        .env("DESTDIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cargo build --release"), "{err}");
    assert!(!dir.path().join("usr").exists());
}

/// The `[broker]` keys of a config file, as (key, value) pairs.
fn broker_keys(config: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(config).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    doc["broker"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

#[test]
fn a_broker_already_on_the_port_makes_the_new_config_external() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = install_with(d, &[BIN], port, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("a broker already listens on port {port}")),
        "{stdout}"
    );
    let config = d.join("etc/centinela/centinela.toml");
    let keys = broker_keys(&config);
    let url = format!("mqtt://127.0.0.1:{port}");
    assert!(
        keys.contains(&("mode".into(), "external".into())),
        "{keys:?}"
    );
    assert!(keys.contains(&("url".into(), url.clone())), "{keys:?}");
    let v = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));

    // Only a new configuration is changed: the person's own file is kept as it is.
    let mine = "[broker]\nlisten = \"0.0.0.0:1884\"\nallow_anonymous = true\n";
    std::fs::write(&config, mine).unwrap();
    install_with(d, &[BIN], port, None);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), mine);
    drop(listener);
}

#[test]
fn without_ss_the_kernel_tables_tell_of_the_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    // A PATH with the tools the script uses, but no ss.
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    for tool in [
        "sh", "install", "mktemp", "cp", "awk", "mv", "rm", "chmod", "gzip", "dirname", "id",
        "sed", "cat",
    ] {
        let found = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found"));
        std::os::unix::fs::symlink(found, bin_dir.join(tool)).unwrap();
    }
    assert!(!bin_dir.join("ss").exists());
    let dest = dir.path().join("root");
    let out = install_with(&dest, &[BIN], port, Some(&bin_dir));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("a broker already listens"), "{stdout}");
    let keys = broker_keys(&dest.join("etc/centinela/centinela.toml"));
    assert!(
        keys.contains(&("mode".into(), "external".into())),
        "{keys:?}"
    );
    drop(listener);
}

/// Regular files (and symlinks) under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn uninstall_keeps_config_and_data_and_purge_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install(d, BIN);
    std::fs::write(d.join("var/lib/centinela/centinela.db"), b"data").unwrap();

    let out = install_with(d, &["--uninstall"], unused_port(), None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("--uninstall --purge removes them"),
        "{stdout}"
    );
    assert_eq!(
        files_under(d),
        [
            "etc/centinela/centinela.env",
            "etc/centinela/centinela.toml",
            "var/lib/centinela/centinela.db"
        ]
    );

    install_with(d, &["--uninstall", "--purge"], unused_port(), None);
    assert_eq!(files_under(d), Vec::<String>::new());
    assert!(!d.join("etc/centinela").exists());
    assert!(!d.join("var/lib/centinela").exists());
}

#[test]
fn a_unit_an_earlier_install_left_in_etc_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = d.join("etc/systemd/system/centinela.service");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::write(&old, "[Service]\nExecStart=/usr/bin/centinela run\n").unwrap();
    let out = install(d, BIN);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!old.exists(), "{stdout}");
    assert!(old.with_extension("service.old").exists(), "{stdout}");
    assert!(stdout.contains("systemctl edit centinela"), "{stdout}");
    assert!(d.join("lib/systemd/system/centinela.service").exists());
}
