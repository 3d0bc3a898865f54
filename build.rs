//! Build information for `centinela --version`: the commit (from `git rev-parse`, or
//! `$CENTINELA_COMMIT` when building from a tarball; "unknown" without either) and the
//! target triple.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=CENTINELA_COMMIT");
    let commit = std::env::var("CENTINELA_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let id = git(&["rev-parse", "--short=12", "HEAD"])?;
            // A new commit or checkout moves HEAD's reflog: build again then.
            for path in ["HEAD", "logs/HEAD"] {
                if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            Some(id)
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CENTINELA_COMMIT={commit}");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=CENTINELA_TARGET={target}");
}
