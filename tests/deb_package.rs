//! The Debian package as an admin meets it: `dpkg -i` puts every file in place with its
//! owner and mode and makes the service account, the unit's `ExecStartPre` check passes
//! as the service user, `dpkg -r` keeps the configuration and the data, and
//! `dpkg --purge` leaves the machine as it was before the install.
//!
//! It installs a package on this machine, so it runs only when `CENTINELA_DEB` names
//! the `.deb` (`.ci/deb.sh` builds it and sets it), as root, with dpkg, on a machine
//! where centinela is not installed; otherwise it prints SKIPPED and passes.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package to test, or why the test cannot run here.
fn package() -> Result<PathBuf, String> {
    let deb = std::env::var_os("CENTINELA_DEB")
        .map(PathBuf::from)
        .ok_or("CENTINELA_DEB is not set (.ci/deb.sh builds the package and sets it)")?;
    if !deb.is_file() {
        return Err(format!("no package at {}", deb.display()));
    }
    if run("id", &["-u"]).stdout != b"0\n" {
        return Err("not root: dpkg -i needs root".into());
    }
    if Command::new("dpkg").arg("--version").output().is_err() {
        return Err("no dpkg on this machine".into());
    }
    let status = run("dpkg-query", &["-W", "-f=${Status}", "centinela"]);
    if String::from_utf8_lossy(&status.stdout).contains("installed") {
        return Err(
            "centinela is already installed here; this test wants a machine without it".into(),
        );
    }
    if run("getent", &["passwd", "centinela"]).status.success() {
        return Err("a user centinela exists already (a source install?)".into());
    }
    // Purge removes these whole: never those of another install.
    for p in ["/usr/bin/centinela", "/etc/centinela", "/var/lib/centinela"] {
        if Path::new(p).exists() {
            return Err(format!("{p} exists already (a source install?)"));
        }
    }
    Ok(deb)
}

/// Everything the package may touch: its files and directories, systemd's enablement
/// links and state, the account.
fn snapshot() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let roots = [
        "/usr/bin/centinela",
        "/etc/centinela",
        "/var/lib/centinela",
        "/lib/systemd/system/centinela.service",
        "/usr/lib/systemd/system/centinela.service",
        "/etc/systemd/system",
        "/var/lib/systemd/deb-systemd-helper-enabled",
        "/var/lib/systemd/deb-systemd-helper-masked",
        "/usr/share/doc/centinela",
        "/usr/share/man/man1/centinela.1.gz",
        "/usr/share/bash-completion/completions/centinela",
        "/usr/share/zsh/vendor-completions/_centinela",
        "/usr/share/fish/vendor_completions.d/centinela.fish",
    ];
    let mut todo: Vec<PathBuf> = roots.iter().map(PathBuf::from).collect();
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        out.insert(format!(
            "{} {:o} {}:{}",
            p.display(),
            m.mode(),
            m.uid(),
            m.gid()
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    for db in ["passwd", "group"] {
        let o = run("getent", &[db, "centinela"]);
        out.insert(format!(
            "{db}: {}",
            String::from_utf8_lossy(&o.stdout).trim()
        ));
    }
    out
}

fn mode_owner(p: &str) -> (u32, String) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let owner = ok("stat", &["-c", "%U:%G", p]).trim().to_string();
    (m.permissions().mode() & 0o7777, owner)
}

#[test]
fn install_check_remove_and_purge_leave_the_machine_as_it_was() {
    let deb = match package() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED: the Debian package was not installed: {why}");
            return;
        }
    };
    let before = snapshot();
    let deb = deb.to_str().unwrap();
    let out = ok("dpkg", &["-i", deb]);
    eprintln!("dpkg -i: {out}");

    // Installed: the binary runs and says what it is.
    let version = ok("/usr/bin/centinela", &["--version"]);
    assert!(version.starts_with("centinela "), "{version}");

    // The service account, without login, its home the state directory.
    let passwd = ok("getent", &["passwd", "centinela"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields[5], "/var/lib/centinela", "{passwd}");
    assert!(fields[6].ends_with("nologin"), "{passwd}");
    assert!(
        fields[2].parse::<u32>().unwrap() < 1000,
        "not a system uid: {passwd}"
    );

    // Owners and modes.
    assert_eq!(
        mode_owner("/etc/centinela"),
        (0o750, "root:centinela".into())
    );
    assert_eq!(
        mode_owner("/etc/centinela/centinela.toml"),
        (0o640, "root:centinela".into())
    );
    assert_eq!(
        mode_owner("/etc/centinela/centinela.env"),
        (0o600, "root:root".into())
    );
    assert_eq!(
        mode_owner("/var/lib/centinela"),
        (0o750, "centinela:centinela".into())
    );
    assert_eq!(mode_owner("/usr/bin/centinela").0, 0o755);

    // Both files in /etc are conffiles: an upgrade never overwrites an edited one.
    let conffiles = ok("dpkg-query", &["--control-show", "centinela", "conffiles"]);
    for f in [
        "/etc/centinela/centinela.toml",
        "/etc/centinela/centinela.env",
    ] {
        assert_eq!(
            conffiles.lines().filter(|l| l.trim() == f).count(),
            1,
            "{conffiles}"
        );
    }

    // The unit where packages put theirs, as shipped; man page and completions.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string("/lib/systemd/system/centinela.service").unwrap();
    assert_eq!(
        unit,
        std::fs::read_to_string(repo.join("systemd/centinela.service")).unwrap()
    );
    let man = ok("sh", &["-c", "gzip -dc /usr/share/man/man1/centinela.1.gz"]);
    assert!(
        man.contains(".TH centinela 1") && man.contains(".SH FILES"),
        "{man}"
    );
    for f in [
        "/usr/share/bash-completion/completions/centinela",
        "/usr/share/zsh/vendor-completions/_centinela",
        "/usr/share/fish/vendor_completions.d/centinela.fish",
        "/usr/share/doc/centinela/LICENSE-MIT",
        "/usr/share/doc/centinela/LICENSE-APACHE",
        "/usr/share/doc/centinela/README.md",
    ] {
        assert!(std::fs::metadata(f).unwrap().len() > 0, "{f}");
    }

    // Started as far as systemd starts it before the service: ExecStartPre, as the
    // service's user, reads the configuration through the group's access.
    let pre = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .unwrap();
    let mut args = vec!["-u", "centinela", "--"];
    args.extend(pre.split_whitespace());
    let checked = ok("runuser", &args);
    assert!(
        checked.contains("ok: /etc/centinela/centinela.toml"),
        "{checked}"
    );

    // Remove: the program goes; configuration, data and the account stay.
    std::fs::write("/var/lib/centinela/centinela.db", b"readings").unwrap();
    ok("dpkg", &["-r", "centinela"]);
    assert!(!Path::new("/usr/bin/centinela").exists());
    assert!(!Path::new("/lib/systemd/system/centinela.service").exists());
    assert!(Path::new("/etc/centinela/centinela.toml").exists());
    assert!(Path::new("/etc/centinela/centinela.env").exists());
    assert!(Path::new("/var/lib/centinela/centinela.db").exists());
    assert!(run("getent", &["passwd", "centinela"]).status.success());

    // Purge: nothing left of it.
    ok("dpkg", &["--purge", "centinela"]);
    let after = snapshot();
    let added: Vec<_> = after.difference(&before).collect();
    let removed: Vec<_> = before.difference(&after).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "purge left the machine changed:\nadded {added:#?}\nremoved {removed:#?}"
    );
    let status = run("dpkg-query", &["-W", "-f=${Status}", "centinela"]);
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains("installed"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
}
