//! The local viewer's login: each start of the service with the embedded broker makes
//! a random password for the user `centinela-viewer` (the rights of `centinela tui`:
//! subscribe to anything, send control requests) and writes it beside the database,
//! readable by its owner only. `centinela tui` on the same machine, run by a user who
//! can read the database, logs in with it when no username is given, so acknowledging
//! and silencing work without configuring a user, while anonymous clients cannot.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The user name of the local viewer login.
pub const VIEWER_USER: &str = "centinela-viewer";

/// Where the local viewer's password is kept for the database `db`: `<db>.viewer`.
pub fn viewer_file(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".viewer");
    PathBuf::from(s)
}

/// Makes a new local viewer login and writes its password (mode 0600).
pub fn write_viewer_login(db: &Path) -> std::io::Result<(String, String)> {
    let pass = super::random_secret().map_err(std::io::Error::other)?;
    let path = viewer_file(db);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    writeln!(tmp, "{pass}")?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok((VIEWER_USER.to_string(), pass))
}

/// The local viewer login of the service that uses the database `db`, when readable.
pub fn read_viewer_login(db: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(viewer_file(db)).ok()?;
    let pass = text.trim();
    (!pass.is_empty()).then(|| (VIEWER_USER.to_string(), pass.to_string()))
}
