//! `packaging/install.sh` as a Pi owner runs it, staged into a temporary `DESTDIR` so the
//! machine is left alone: which files land where, with which modes and contents, and
//! that a second run keeps the configuration and the secrets a person edited.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_centinela");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn install(dest: &Path, bin: &str) -> Output {
    let out = Command::new("sh")
        .arg(repo().join("packaging/install.sh"))
        .arg(bin)
        .env("DESTDIR", dest)
        .output()
        .unwrap();
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

    let unit = d.join("etc/systemd/system/centinela.service");
    assert_eq!(
        std::fs::read_to_string(&unit).unwrap(),
        std::fs::read_to_string(repo().join("systemd/centinela.service")).unwrap()
    );
    assert_eq!(mode(&unit), 0o644);

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
