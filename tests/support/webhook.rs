//! A webhook receiver on a free loopback port: records every event it accepts (body,
//! idempotency key, arrival time) as it arrives, and can be made slow or failing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

/// One accepted event.
#[derive(Clone, Debug)]
pub struct Got {
    /// The `Idempotency-Key` header (empty when missing).
    pub key: String,
    pub body: Value,
    pub at: Instant,
}

/// Answers 204 and records the event; 503 (recording nothing) while `failing`; takes
/// `delay` per request first.
#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<Mutex<Vec<Got>>>,
    pub failing: Arc<Mutex<bool>>,
    pub delay: Arc<Mutex<Duration>>,
    /// Every request, failed ones included.
    pub requests: Arc<Mutex<u32>>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    *r.requests.lock().unwrap() += 1;
    let delay = *r.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    if *r.failing.lock().unwrap() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    r.got.lock().unwrap().push(Got {
        key,
        body,
        at: Instant::now(),
    });
    StatusCode::NO_CONTENT
}

impl Receiver {
    /// Starts a receiver; returns it and its URL (`http://127.0.0.1:PORT/alerts`).
    pub async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        let app = Router::new()
            .route("/alerts", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/alerts", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, url)
    }

    /// How many events were accepted.
    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// The bodies of the accepted events, in arrival order.
    pub fn bodies(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|g| g.body.clone())
            .collect()
    }

    /// `(rule, state)` of every accepted event.
    pub fn states(&self) -> Vec<(String, String)> {
        self.bodies()
            .iter()
            .map(|e| {
                (
                    e["rule"].as_str().unwrap_or_default().to_string(),
                    e["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    pub fn set_failing(&self, failing: bool) {
        *self.failing.lock().unwrap() = failing;
    }
}
