//! A real SMTP server (aiosmtpd) on 127.0.0.1 for the notification tests, started and
//! stopped by the test. Mails land as JSON summaries in a temporary directory.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One mail as the server received it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Mail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub subject: String,
    /// The To: header (every recipient), whatever the envelope said.
    pub to: String,
    pub message_id: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub login: Option<String>,
}

pub struct SmtpServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    auth: Option<(String, String)>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py")
}

impl SmtpServer {
    /// A server without AUTH.
    pub fn start() -> Self {
        Self::launch(free_port(), None)
    }

    /// A server that requires AUTH with this user and password.
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::launch(free_port(), Some((user.into(), password.into())))
    }

    fn launch(port: u16, auth: Option<(String, String)>) -> Self {
        let mut s = SmtpServer {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
            auth,
        };
        s.up();
        s
    }

    /// (Re)starts the server on the same port and directory; returns when it accepts.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(script())
            .arg(self.port.to_string())
            .arg(self.dir.path().join("mail"));
        if let Some((u, p)) = &self.auth {
            cmd.arg(u).arg(p);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect(
            "cannot run /usr/bin/python3 with aiosmtpd: run .ci/install-notify.sh (python3-aiosmtpd)",
        );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not open port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (SIGKILL by PID) and waits until the port is closed.
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The mails received so far, oldest first.
    pub fn mails(&self) -> Vec<Mail> {
        let Ok(rd) = std::fs::read_dir(self.dir.path().join("mail")) else {
            return vec![];
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits until at least `n` mails arrived (or `timeout` passed); returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.mails();
            if m.len() >= n || Instant::now() >= deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lines of AUTH attempts: `PLAIN user ok`.
    pub fn auth_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("mail/auth.log"))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
