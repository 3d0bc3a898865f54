//! SMTP one step at a time, each step under its own deadline: connect, TLS handshake,
//! greeting, EHLO, STARTTLS, AUTH, the mail itself (MAIL FROM, RCPT TO, DATA), QUIT.
//!
//! lettre's async transport bounds only the TCP connect: a server that accepts the
//! connection and then never speaks holds a send (and `doctor`) forever. Driving
//! lettre's connection step by step here bounds every step by `notify.email.timeout`
//! and names the step that hung, so a person reads "sent no greeting within 10s"
//! rather than nothing at all. No connection is kept between mails: alerts are rare,
//! and a connection cut in the middle of a command must never be used again.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::SmtpTls;

/// One step of an SMTP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Connect,
    /// Implicit TLS (port 465): connect, TLS handshake and greeting, which lettre does
    /// in one go.
    TlsConnect,
    Greeting,
    Ehlo,
    Starttls,
    Auth,
    Noop,
    Mail,
    Quit,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Connect => "connect",
            Step::TlsConnect => "TLS handshake and greeting",
            Step::Greeting => "greeting",
            Step::Ehlo => "EHLO",
            Step::Starttls => "STARTTLS and TLS handshake",
            Step::Auth => "AUTH (login)",
            Step::Noop => "NOOP",
            Step::Mail => "sending the mail (MAIL FROM, RCPT TO, DATA)",
            Step::Quit => "QUIT",
        })
    }
}

/// What went wrong in a step.
#[derive(Debug)]
pub enum Failure {
    /// The step did not finish within the deadline.
    TimedOut(Duration),
    Smtp(lettre::transport::smtp::Error),
    Io(std::io::Error),
}

/// A failed step: which one, and how.
#[derive(Debug)]
pub struct StepError {
    pub step: Step,
    pub failure: Failure,
}

impl StepError {
    /// The SMTP error, when the server answered (or the connection failed) rather than
    /// stayed silent.
    pub fn smtp(&self) -> Option<&lettre::transport::smtp::Error> {
        match &self.failure {
            Failure::Smtp(e) => Some(e),
            _ => None,
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self.failure, Failure::TimedOut(_))
            || self
                .smtp()
                .is_some_and(lettre::transport::smtp::Error::is_timeout)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.failure, self.step) {
            (Failure::TimedOut(d), Step::Greeting) => write!(
                f,
                "the server accepted the connection but sent no greeting within {}",
                crate::config::Duration(*d)
            ),
            (Failure::TimedOut(d), step) => write!(
                f,
                "no answer within {} ({step})",
                crate::config::Duration(*d)
            ),
            (Failure::Smtp(e), step) => write!(f, "{e} ({step})"),
            (Failure::Io(e), step) => write!(f, "{e} ({step})"),
        }
    }
}

impl std::error::Error for StepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.failure {
            Failure::Smtp(e) => Some(e),
            Failure::Io(e) => Some(e),
            Failure::TimedOut(_) => None,
        }
    }
}

/// Told each step as it starts (for `doctor`'s overall deadline).
pub type OnStep<'a> = &'a (dyn Fn(Step) + Send + Sync);

/// How to reach one SMTP server.
pub struct Smtp {
    host: String,
    port: u16,
    tls: Option<(SmtpTls, TlsParameters)>,
    credentials: Option<Credentials>,
    /// The deadline of each step.
    timeout: Duration,
    hello: ClientId,
}

impl Smtp {
    /// `tls`: `None` for a plain connection, else the mode (STARTTLS or implicit TLS)
    /// with its parameters.
    pub fn new(
        host: String,
        port: u16,
        tls: Option<(SmtpTls, TlsParameters)>,
        credentials: Option<Credentials>,
        timeout: Duration,
    ) -> Self {
        Smtp {
            host,
            port,
            tls,
            credentials,
            timeout,
            hello: ClientId::default(),
        }
    }

    /// The longest a whole session can take: every step at its deadline.
    pub fn session_deadline(&self) -> Duration {
        self.timeout * 8
    }

    async fn step<T, E, F>(&self, step: Step, on: OnStep<'_>, fut: F) -> Result<T, StepError>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<Failure>,
    {
        on(step);
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StepError {
                step,
                failure: e.into(),
            }),
            Err(_) => Err(StepError {
                step,
                failure: Failure::TimedOut(self.timeout),
            }),
        }
    }

    /// Connects, reads the greeting, says EHLO, upgrades to TLS and logs in.
    pub async fn open(&self, on: OnStep<'_>) -> Result<AsyncSmtpConnection, StepError> {
        let mut conn = match &self.tls {
            Some((SmtpTls::Tls, params)) => {
                let addr = (self.host.as_str(), self.port);
                let connect = AsyncSmtpConnection::connect_tokio1(
                    addr,
                    Some(self.timeout),
                    &self.hello,
                    Some(params.clone()),
                    None,
                );
                self.step(Step::TlsConnect, on, connect).await?
            }
            _ => {
                let tcp = self
                    .step(
                        Step::Connect,
                        on,
                        tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
                    )
                    .await?;
                let read = Arc::new(AtomicUsize::new(0));
                let stream = Counted {
                    inner: tcp,
                    read: read.clone(),
                };
                let hello =
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello);
                match self.step(Step::Greeting, on, hello).await {
                    Ok(c) => c,
                    // Something came: the greeting did, and EHLO is what failed.
                    Err(mut e) if read.load(Ordering::Relaxed) > 0 => {
                        e.step = Step::Ehlo;
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if let Some((SmtpTls::Starttls, params)) = &self.tls {
            self.step(
                Step::Starttls,
                on,
                conn.starttls(params.clone(), &self.hello),
            )
            .await?;
        }
        if let Some(credentials) = &self.credentials {
            self.step(Step::Auth, on, conn.auth(DEFAULT_MECHANISMS, credentials))
                .await?;
        }
        Ok(conn)
    }

    /// The whole session for one mail. Once the server accepted the mail, a failing
    /// QUIT no longer matters: the mail is sent.
    pub async fn send(
        &self,
        envelope: &Envelope,
        mail: &[u8],
        on: OnStep<'_>,
    ) -> Result<(), StepError> {
        let mut conn = self.open(on).await?;
        self.step(Step::Mail, on, conn.send(envelope, mail)).await?;
        let _ = self.step(Step::Quit, on, conn.quit()).await;
        Ok(())
    }

    /// Connects, logs in and says NOOP, as a send would before the mail.
    pub async fn check(&self, on: OnStep<'_>) -> Result<(), StepError> {
        let mut conn = self.open(on).await?;
        self.step(
            Step::Noop,
            on,
            conn.command(lettre::transport::smtp::commands::Noop),
        )
        .await?;
        let _ = self.step(Step::Quit, on, conn.quit()).await;
        Ok(())
    }
}

/// No one to tell.
pub fn quiet(_: Step) {}

impl From<lettre::transport::smtp::Error> for Failure {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        Failure::Smtp(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

/// The TCP stream, counting the bytes read (to tell a missing greeting from a failed
/// EHLO).
#[derive(Debug)]
struct Counted {
    inner: tokio::net::TcpStream,
    read: Arc<AtomicUsize>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Counted {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts and never writes: each step gives up at its deadline and
    /// says which step it was.
    #[tokio::test]
    async fn a_silent_server_fails_the_greeting_in_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let smtp = Smtp::new(
            "127.0.0.1".into(),
            port,
            None,
            None,
            Duration::from_millis(300),
        );
        let t = std::time::Instant::now();
        let e = smtp.check(&quiet).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(e.step, Step::Greeting);
        assert!(e.is_timeout());
        assert_eq!(
            e.to_string(),
            "the server accepted the connection but sent no greeting within 300ms"
        );
        hold.abort();
    }
}
