//! Where the configuration file is (`--config`, `CENTINELA_CONFIG`, the user's, the
//! system's, or the embedded default) and reading it, with a hint when it cannot be
//! read for its permissions.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, ConfigErrors, DEFAULT_TOML, LOCAL_PATH, SYSTEM_PATH};

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_all(path).map_err(|mut e| e.0.swap_remove(0))
}

/// Reads and validates the file at `path`, reporting every problem.
pub fn load_all(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: None,
            col: None,
            field: None,
            message: match e.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    format!("cannot read: {e}; {}", permission_hint(path))
                }
                _ => format!("cannot read: {e}"),
            },
        }])
    })?;
    Config::parse_all(&text, &file)
}

/// How to get read access to `path`: which directory or file stops this user, who may
/// read it, and the fixes (group membership, sudo, `--config`).
pub fn permission_hint(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    // The outermost of the file's ancestors (or the file) this user cannot read.
    let mut chain: Vec<&Path> = path
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    chain.reverse();
    let blocking = chain
        .into_iter()
        .find(|p| {
            if p.is_dir() {
                std::fs::read_dir(p).is_err()
            } else {
                std::fs::File::open(p).is_err()
            }
        })
        .unwrap_or(path);
    let what = match std::fs::metadata(blocking) {
        Ok(m) => {
            let group = group_name(m.gid()).unwrap_or_else(|| m.gid().to_string());
            format!(
                "{} is mode {:o}, for its owner and the group {group}: add yourself to that \
                 group (sudo usermod -aG {group} $USER, then log in again)",
                blocking.display(),
                m.mode() & 0o777
            )
        }
        Err(_) => format!("{} cannot be read by this user", blocking.display()),
    };
    format!("{what}, run the command with sudo, or pass --config with a file you can read")
}

/// The name of group `gid` from /etc/group.
fn group_name(gid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?;
        (id.parse::<u32>().ok()? == gid).then(|| name.to_string())
    })
}

/// The user's own configuration: `$XDG_CONFIG_HOME/centinela/centinela.toml`, else
/// `~/.config/centinela/centinela.toml`.
pub fn user_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("centinela").join("centinela.toml"))
}

/// `--config`, else `$CENTINELA_CONFIG` (clap fills it), else the first that exists of
/// the user's file ([`user_path`]), the system file and `./config/centinela.toml`;
/// `None` means the embedded default. A file this user may not even look at (inside a
/// directory without access, like /etc/centinela at mode 750 for a user outside its
/// group) counts as existing, so that loading it says why instead of quietly running
/// on the default.
pub fn resolve_path(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    user_path()
        .into_iter()
        .chain([SYSTEM_PATH, LOCAL_PATH].iter().map(PathBuf::from))
        .find(|p| match std::fs::metadata(p) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
        })
}

/// Loads the resolved file, or the embedded default when there is none.
pub fn load_or_default(given: Option<&Path>) -> Result<(Config, String), ConfigError> {
    load_or_default_all(given).map_err(|mut e| e.0.swap_remove(0))
}

/// [`load_or_default`], reporting every problem of the file.
pub fn load_or_default_all(given: Option<&Path>) -> Result<(Config, String), ConfigErrors> {
    match resolve_path(given) {
        Some(p) => Ok((load_all(&p)?, p.display().to_string())),
        None => Ok((
            Config::parse_all(DEFAULT_TOML, "<embedded default>")?,
            "<embedded default>".into(),
        )),
    }
}
