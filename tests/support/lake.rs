//! The data-lake tests' common ground: a service configuration with a rule and the
//! HTTP endpoint, and the python readers (DuckDB, pyarrow) that read the lake back.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Writes `centinela.toml` in `dir`: the broker on `port`, SQLite in `dir/c.db`, the
/// HTTP endpoint on `http`, a rule `hot` (`lab/+/temperature` above 30), then `extra`.
pub fn write_config(dir: &Path, port: u16, http: u16, extra: &str) -> PathBuf {
    let path = dir.join("centinela.toml");
    let text = format!(
        "[broker]\nlisten = \"127.0.0.1:{port}\"\n\n[storage.sqlite]\npath = \"{}\"\nflush_interval = \"200ms\"\n\n\
         [engine]\ntick = \"100ms\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n\
         [[rules]]\nname = \"hot\"\nseries = \"lab/+/temperature\"\nkind = \"threshold\"\nabove = 30.0\n\n{extra}",
        dir.join("c.db").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Whether python3 can import each of `modules`; prints SKIPPED when not.
pub fn python_with(modules: &[&str]) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {}", modules.join(", "))])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!(
            "SKIPPED: python3 with {} not found (.ci/install-parquet.sh)",
            modules.join(" and ")
        );
    }
    ok
}

/// Runs the python `script` with the lake's `root` as its argument; the JSON it prints.
pub fn read_lake(script: &str, root: &Path) -> Value {
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}
