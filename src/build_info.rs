//! What this binary is: its version, the commit it was built from and its target
//! triple (set by `build.rs`), printed by `centinela --version`.

/// The crate version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit, 12 hex digits, or `unknown` when built outside a git checkout without
/// `$CENTINELA_COMMIT`.
pub const COMMIT: &str = env!("CENTINELA_COMMIT");
/// The target triple, e.g. `aarch64-unknown-linux-gnu`.
pub const TARGET: &str = env!("CENTINELA_TARGET");
/// `--version`: `0.1.0 (commit 1a2b3c4d5e6f, aarch64-unknown-linux-gnu)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CENTINELA_COMMIT"),
    ", ",
    env!("CENTINELA_TARGET"),
    ")"
);
