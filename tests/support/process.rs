//! The `centinela` binary as a user runs it: one command and its output, or
//! `centinela run` in the background, waited for until it listens, stopped with SIGTERM
//! or killed when the test ends, however it ends.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_centinela");

/// `centinela ARGS` to its end, without the environment's config path or log filter.
pub fn centinela(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("CENTINELA_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `centinela run --config CONFIG`: stdout discarded, stderr piped (read it at the end,
/// with [`stop`]); change either before spawning.
pub fn service(config: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args(["run", "--config"])
        .arg(config)
        .env_remove("CENTINELA_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Spawns `cmd` and waits (30 s at the most) until something listens on `port`.
pub fn spawn_listening(cmd: &mut Command, port: u16) -> Child {
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the service did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// `centinela run --config CONFIG`, once it listens on `port` (its broker).
pub fn start_service(config: &Path, port: u16) -> Child {
    spawn_listening(&mut service(config), port)
}

/// SIGTERM, then the exit code and what the service wrote to stderr.
pub fn stop(mut child: Child) -> (Option<i32>, String) {
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let code = child.wait().unwrap().code();
    let mut log = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut log).unwrap();
    }
    (code, log)
}

/// Kills the process when the test ends, however it ends (a failed assertion too).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` until it holds; fails the test naming `what` after `secs` seconds.
pub async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
