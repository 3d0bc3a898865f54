//! Where a command finds its configuration when `--config` is not given, and what a
//! user who may not read it is told: `$XDG_CONFIG_HOME/centinela/centinela.toml` is
//! looked in, and a file behind a directory of mode 750 (like /etc/centinela on a Pi,
//! for the user `pi` outside the group centinela) is an error naming the directory, its
//! group and the fix, never a quiet fall back to the embedded default.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_centinela");

/// `centinela ARGS` from `cwd` with `XDG_CONFIG_HOME` set and no `CENTINELA_CONFIG`.
fn centinela(cwd: &Path, xdg: &Path, user: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", BIN]);
            c
        }
        None => Command::new(BIN),
    };
    cmd.args(args)
        .current_dir(cwd)
        .env("XDG_CONFIG_HOME", xdg)
        .env_remove("CENTINELA_CONFIG")
        .output()
        .unwrap()
}

const CONFIG: &str = "[broker]\nlisten = \"127.0.0.1:18830\"\n";

#[test]
fn the_users_own_config_is_found_in_xdg_config_home() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    std::fs::create_dir_all(xdg.join("centinela")).unwrap();
    let file = xdg.join("centinela/centinela.toml");
    std::fs::write(&file, CONFIG).unwrap();
    let out = centinela(dir.path(), &xdg, None, &["validate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("ok: {}", file.display())),
        "{stdout}"
    );
}

/// Whether this test can switch to an unprivileged user (root with runuser and the
/// user `nobody`); says SKIPPED otherwise.
fn can_run_as_nobody() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n");
    let runuser = Command::new("runuser").arg("--help").output().is_ok();
    let nobody = Command::new("getent")
        .args(["passwd", "nobody"])
        .output()
        .is_ok_and(|o| o.status.success());
    if root.unwrap_or(false) && runuser && nobody {
        return true;
    }
    eprintln!("SKIPPED: needs root, runuser and the user nobody to try an unreadable config");
    false
}

/// A directory laid out like /etc/centinela: mode 750, owned by root and a group
/// `nobody` is not in, holding the configuration.
fn locked_dir(parent: &Path) -> std::path::PathBuf {
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let locked = parent.join("centinela");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join("centinela.toml"), CONFIG).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o750)).unwrap();
    locked
}

#[test]
fn an_unreadable_config_is_named_with_the_fix_not_replaced_by_the_default() {
    if !can_run_as_nobody() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    let locked = locked_dir(&xdg);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // Found by the lookup (no --config) though nobody cannot even see into the
    // directory; the same for validate and for tui, before the screen is taken.
    for args in [&["validate"][..], &["tui"][..]] {
        let out = centinela(dir.path(), &xdg, Some("nobody"), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("centinela.toml: cannot read"), "{err}");
        assert!(err.contains("ermission denied"), "{err}");
        assert!(
            err.contains(&format!("{} is mode 750", locked.display())),
            "{err}"
        );
        assert!(err.contains("sudo usermod -aG root $USER"), "{err}");
        assert!(!err.contains("embedded default"), "{err}");
    }

    // Given the file to read, the same answer.
    let file = locked.join("centinela.toml");
    let out = centinela(
        dir.path(),
        &xdg,
        Some("nobody"),
        &["validate", "--config", file.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("usermod -aG root"), "{err}");
}
