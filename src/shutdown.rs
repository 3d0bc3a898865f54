//! One shutdown for the whole pipeline: a [`Trigger`] that the service keeps and a
//! [`Shutdown`] token that every stage holds (as mini-redis's `Shutdown`).
//!
//! - Beginning: [`Trigger::begin`] flips the token; a stage sees it with
//!   [`Shutdown::recv`] (async) or [`Shutdown::is_shutdown`] (from a plain thread).
//! - Completion: every token carries a clone of one `mpsc::Sender`; when the last token
//!   is dropped — every stage has returned — [`Trigger::completed`] resolves.
//!
//! Not every stage stops when the token flips. The source stops taking messages; the
//! stages after it (engine, outputs) keep draining their input and end when it closes,
//! so the order of shutdown stays front to back and nothing in flight is lost. They
//! hold a token all the same, so that completion waits for them.

use tokio::sync::{mpsc, watch};

/// Held by every stage: says when shutdown has begun; dropped when the stage is done.
#[derive(Debug, Clone)]
pub struct Shutdown {
    begun: watch::Receiver<bool>,
    /// Never sent on: its only job is to be dropped (see [`Trigger::completed`]).
    _alive: mpsc::Sender<()>,
}

impl Shutdown {
    /// Whether shutdown has begun (cheap; usable from a blocking thread).
    pub fn is_shutdown(&self) -> bool {
        *self.begun.borrow()
    }

    /// Resolves once shutdown has begun (at once if it already has). Also resolves when
    /// the trigger is gone: no one is left to say "stop", so stop.
    pub async fn recv(&mut self) {
        // `wait_for` returns an error only when the sender is dropped.
        let _ = self.begun.wait_for(|b| *b).await;
    }

    /// The signal as a plain `watch` receiver, for stages whose API takes one (true once
    /// shutdown has begun). Such a receiver does not count toward completion.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.begun.clone()
    }
}

/// Kept by the service: starts the shutdown and waits for it to complete.
#[derive(Debug)]
pub struct Trigger {
    begin: watch::Sender<bool>,
    alive: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
}

impl Default for Trigger {
    fn default() -> Self {
        Self::new()
    }
}

impl Trigger {
    pub fn new() -> Self {
        let (begin, _) = watch::channel(false);
        let (alive, done) = mpsc::channel(1);
        Self { begin, alive, done }
    }

    /// A token for one more stage.
    pub fn token(&self) -> Shutdown {
        Shutdown {
            begun: self.begin.subscribe(),
            _alive: self.alive.clone(),
        }
    }

    /// Tells every stage that shutdown has begun.
    pub fn begin(&self) {
        self.begin.send_replace(true);
    }

    /// Resolves when every token handed out has been dropped.
    pub async fn completed(self) {
        let Trigger {
            begin,
            alive,
            mut done,
        } = self;
        drop(alive);
        // Nothing is ever sent: `recv` returns `None` once the last token is gone.
        let _ = done.recv().await;
        drop(begin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn completion_waits_for_the_last_token() {
        let trigger = Trigger::new();
        let mut a = trigger.token();
        let b = trigger.token();
        assert!(!a.is_shutdown());
        let stage = tokio::spawn(async move {
            a.recv().await;
            // Drains for a while after the signal, then returns (dropping `a`).
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        trigger.begin();
        assert!(b.is_shutdown());
        let late = trigger.token();
        assert!(
            late.is_shutdown(),
            "a token taken after the start sees it too"
        );
        drop((b, late));
        let started = tokio::time::Instant::now();
        trigger.completed().await;
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(stage.is_finished());
    }

    #[tokio::test]
    async fn a_watch_from_the_token_sees_the_signal() {
        let trigger = Trigger::new();
        let mut w = trigger.token().watch();
        assert!(!*w.borrow());
        trigger.begin();
        w.changed().await.unwrap();
        assert!(*w.borrow());
        trigger.completed().await;
    }
}
