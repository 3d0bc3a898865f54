//! The Debian package as an admin meets it: `dpkg -i` puts every file in place with its
//! owner and mode and makes the service account, the unit's `ExecStartPre` check passes
//! as the service user, `dpkg -r` keeps the configuration and the data, and
//! `dpkg --purge` leaves the machine as it was before the install.
//!
//! It installs a package on this machine, so it runs only when `CENTINELA_DEB` names
//! the `.deb` (`.ci/deb.sh` builds it and sets it), as root, with dpkg, on a machine
//! where centinela is not installed; otherwise it prints SKIPPED and passes.
//!
//! The Raspberry Pi's package (`CENTINELA_DEB_ARM64`, also set by `.ci/deb.sh`) is not
//! installed here: it is unpacked and must hold the same files with the same modes,
//! owners, conffiles and maintainer scripts as the amd64 one, an aarch64 binary, and
//! that binary, run under qemu user-mode emulation, must print its version.

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
    assert_eq!(
        elf_machine(Path::new("/usr/bin/centinela")),
        62,
        "not an x86-64 binary"
    );

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

    // Installed completions load: bash registers a completion for the command and
    // offers its subcommands.
    let complete = ok(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/centinela && complete -p centinela",
        ],
    );
    assert!(complete.contains("centinela"), "{complete}");
    let offered = ok(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/centinela; \
             COMP_WORDS=(centinela ''); COMP_CWORD=1; COMP_LINE='centinela '; COMP_POINT=10; \
             $(complete -p centinela | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p') centinela '' centinela; \
             printf '%s\\n' \"${COMPREPLY[@]}\"",
        ],
    );
    for sub in ["run", "validate", "tui", "completions", "man"] {
        assert!(
            offered.lines().any(|l| l == sub),
            "bash does not offer `centinela {sub}`: {offered}"
        );
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

/// The files of a package as `dpkg-deb --contents` lists them: mode, owner and path
/// (sizes and dates differ between architectures and builds).
fn contents(deb: &Path) -> BTreeSet<String> {
    let list = ok("dpkg-deb", &["--contents", deb.to_str().unwrap()]);
    list.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 6, "dpkg-deb --contents: {l}");
            // perm owner/group size date time path [-> target]
            format!("{} {} {}", f[0], f[1], f[5..].join(" "))
        })
        .collect()
}

/// The control area (conffiles, maintainer scripts, without the `control` file whose
/// Architecture and sizes differ), unpacked: name → bytes.
fn control_files(deb: &Path, dir: &Path) -> Vec<(String, Vec<u8>)> {
    ok(
        "dpkg-deb",
        &["--control", deb.to_str().unwrap(), dir.to_str().unwrap()],
    );
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "control" && e.file_name() != "md5sums")
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn field(deb: &Path, name: &str) -> String {
    ok("dpkg-deb", &["--field", deb.to_str().unwrap(), name])
        .trim()
        .to_string()
}

/// `e_machine` of a little-endian 64-bit ELF file (62 x86-64, 183 AArch64).
fn elf_machine(path: &Path) -> u16 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..4],
        b"\x7fELF",
        "{}: not an ELF file",
        path.display()
    );
    assert_eq!(bytes[4], 2, "{}: not a 64-bit ELF file", path.display());
    assert_eq!(bytes[5], 1, "{}: not little-endian", path.display());
    u16::from_le_bytes([bytes[18], bytes[19]])
}

/// The first of `names` on PATH.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// What every package holds, whatever its architecture: the program, the unit where
/// packages put theirs (/usr/lib/systemd/system, which is /lib/systemd/system on a
/// merged-/usr system such as Debian 12 and Raspberry Pi OS bookworm), the two
/// conffiles, man page, completions, documentation and licences.
const PACKAGE_FILES: &[&str] = &[
    "./usr/bin/centinela",
    "./usr/lib/systemd/system/centinela.service",
    "./etc/centinela/centinela.toml",
    "./etc/centinela/centinela.env",
    "./usr/share/man/man1/centinela.1.gz",
    "./usr/share/bash-completion/completions/centinela",
    "./usr/share/zsh/vendor-completions/_centinela",
    "./usr/share/fish/vendor_completions.d/centinela.fish",
    "./usr/share/doc/centinela/README.md",
    "./usr/share/doc/centinela/RASPBERRY_PI.md",
    "./usr/share/doc/centinela/CHANGELOG.md",
    "./usr/share/doc/centinela/LICENSE-MIT",
    "./usr/share/doc/centinela/LICENSE-APACHE",
    "./usr/share/doc/centinela/copyright",
];

#[test]
fn arm64_package_holds_what_the_amd64_one_does_and_its_binary_runs_on_aarch64() {
    let Some(arm64) = std::env::var_os("CENTINELA_DEB_ARM64").map(PathBuf::from) else {
        eprintln!(
            "SKIPPED: CENTINELA_DEB_ARM64 is not set (`.ci/deb.sh arm64` builds the package and sets it)"
        );
        return;
    };
    assert!(arm64.is_file(), "no package at {}", arm64.display());
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no dpkg-deb on this machine");
        return;
    }

    assert_eq!(field(&arm64, "Package"), "centinela");
    assert_eq!(field(&arm64, "Architecture"), "arm64");
    let version = field(&arm64, "Version");
    assert!(
        version.starts_with(&format!("{}-", env!("CARGO_PKG_VERSION"))),
        "Version {version}"
    );
    let depends = field(&arm64, "Depends");
    assert!(
        depends.contains("libc6") && depends.contains("passwd"),
        "Depends: {depends}"
    );

    let files = contents(&arm64);
    for f in PACKAGE_FILES {
        assert!(
            files.iter().any(|l| l.ends_with(&format!(" {f}"))),
            "{f} is not in the arm64 package:\n{files:#?}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let arm64_control = control_files(&arm64, &tmp.path().join("control-arm64"));
    let conffiles = arm64_control
        .iter()
        .find(|(n, _)| n == "conffiles")
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let mut listed: Vec<&str> = conffiles.lines().map(str::trim).collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        [
            "/etc/centinela/centinela.env",
            "/etc/centinela/centinela.toml"
        ],
        "conffiles"
    );
    for script in ["postinst", "postrm", "prerm"] {
        assert!(
            arm64_control.iter().any(|(n, _)| n == script),
            "no {script} in the arm64 package"
        );
    }

    // The same package as the one tested by installing it, but for the Pi.
    match std::env::var_os("CENTINELA_DEB").map(PathBuf::from) {
        Some(amd64) => {
            assert_eq!(field(&amd64, "Architecture"), "amd64");
            assert_eq!(field(&amd64, "Version"), version);
            let amd64_files = contents(&amd64);
            let only_amd64: Vec<_> = amd64_files.difference(&files).collect();
            let only_arm64: Vec<_> = files.difference(&amd64_files).collect();
            assert!(
                only_amd64.is_empty() && only_arm64.is_empty(),
                "the packages differ:\nonly in amd64 {only_amd64:#?}\nonly in arm64 {only_arm64:#?}"
            );
            assert_eq!(
                control_files(&amd64, &tmp.path().join("control-amd64")),
                arm64_control,
                "conffiles and maintainer scripts differ between amd64 and arm64"
            );
        }
        None => eprintln!(
            "CENTINELA_DEB is not set: the arm64 package was not compared with the amd64 one"
        ),
    }

    // Unpacked: the unit as shipped, and a binary for the Pi's processor.
    let root = tmp.path().join("root");
    ok(
        "dpkg-deb",
        &["--extract", arm64.to_str().unwrap(), root.to_str().unwrap()],
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_eq!(
        std::fs::read_to_string(root.join("usr/lib/systemd/system/centinela.service")).unwrap(),
        std::fs::read_to_string(repo.join("systemd/centinela.service")).unwrap()
    );
    let bin = root.join("usr/bin/centinela");
    assert_eq!(elf_machine(&bin), 183, "not an AArch64 binary");

    let Some(qemu) = on_path(&["qemu-aarch64-static", "qemu-aarch64"]) else {
        eprintln!(
            "SKIPPED (the rest): no qemu-aarch64-static on PATH (.ci/aarch64.sh installs qemu-user-static); the arm64 binary was not run"
        );
        return;
    };
    // glibc for aarch64 (libc6-arm64-cross, with gcc-aarch64-linux-gnu) is the loader's
    // root, as for the unit tests under qemu.
    let out = Command::new(&qemu)
        .args(["-L", "/usr/aarch64-linux-gnu"])
        .arg(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", qemu.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} {} --version: {}\n{stdout}\n{}",
        qemu.display(),
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!("centinela {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(
        stdout.starts_with(&expected)
            && stdout.trim_end().ends_with(", aarch64-unknown-linux-gnu)"),
        "centinela --version under qemu: {stdout}"
    );
    eprintln!(
        "arm64 package: {} files; under qemu: {}",
        files.len(),
        stdout.trim()
    );
}
