//! Requests from people to the engine: acknowledge, silence, lift a silence. They
//! arrive on `centinela/control` (parsed by the source), from the Telegram bot and from
//! the terminal, and reach the engine stage on one bounded channel created by the
//! service; each carries where to send the answer.
//!
//! This module sits beside the stream, below the service: sources and viewers use it
//! without importing the layer that wires them.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::stage::EngineView;
use crate::model::Control;

/// A request from a person to the engine, with where to send the answer.
#[derive(Debug)]
pub struct ControlRequest {
    pub control: Control,
    /// The words to answer with, or why it was refused.
    pub reply: Option<oneshot::Sender<Result<String, String>>>,
}

/// The Telegram bot's view of the service: the engine's published view, and its
/// control channel.
pub struct BotBridge {
    pub control: mpsc::Sender<ControlRequest>,
    pub view: watch::Receiver<Arc<EngineView>>,
}

impl BotBridge {
    fn alert_views(&self, firing_only: bool) -> Vec<crate::notify::bot::AlertView> {
        let view = self.view.borrow().clone();
        view.alerts
            .iter()
            .filter(|a| !firing_only || a.state != crate::model::AlertState::Pending)
            .map(|a| crate::notify::bot::AlertView {
                alert_id: a.alert_id(),
                state: a.state,
                severity: a.severity,
                value: a.value,
                unit: a.unit.clone(),
                since: a.since,
                message: a.message.clone(),
            })
            .collect()
    }

    fn last_values(&self, pattern: &str) -> Vec<crate::notify::bot::LastValue> {
        let view = self.view.borrow().clone();
        let mut v: Vec<_> = view
            .last
            .iter()
            .filter(|(s, _)| crate::model::topic_matches(pattern, s))
            .map(|(s, l)| crate::notify::bot::LastValue {
                series: s.to_string(),
                value: l.value,
                unit: l.unit.as_deref().map(str::to_string),
                ts: l.ts,
            })
            .collect();
        v.sort_by(|a, b| a.series.cmp(&b.series));
        v
    }
}

impl crate::notify::bot::BotBackend for BotBridge {
    fn status(&self) -> crate::notify::BoxFuture<'_, crate::notify::bot::StatusView> {
        let view = crate::notify::bot::StatusView {
            firing: self.alert_views(true),
            last: self.last_values("#"),
        };
        Box::pin(async move { view })
    }

    fn alerts(&self) -> crate::notify::BoxFuture<'_, Vec<crate::notify::bot::AlertView>> {
        let v = self.alert_views(true);
        Box::pin(async move { v })
    }

    fn last(
        &self,
        pattern: String,
    ) -> crate::notify::BoxFuture<'_, Vec<crate::notify::bot::LastValue>> {
        let v = self.last_values(&pattern);
        Box::pin(async move { v })
    }

    fn control(&self, control: Control) -> crate::notify::BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            self.control
                .send(ControlRequest {
                    control,
                    reply: Some(reply),
                })
                .await
                .map_err(|_| "the service is stopping".to_string())?;
            answer
                .await
                .map_err(|_| "the engine did not answer".to_string())?
        })
    }
}

/// The terminal's acks and silences go to the engine, and its answer comes back.
impl crate::tui::ControlSink for mpsc::Sender<ControlRequest> {
    fn send(
        &self,
        control: Control,
        reply: oneshot::Sender<Result<String, String>>,
    ) -> Result<(), String> {
        self.try_send(ControlRequest {
            control,
            reply: Some(reply),
        })
        .map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => "the engine is busy, try again".to_string(),
            mpsc::error::TrySendError::Closed(_) => "the service has stopped".to_string(),
        })
    }
}
