//! The endpoint's server: axum routes on hyper's HTTP/1.1 connection builder, which
//! sets what a small endpoint on a long-running device needs and `axum::serve` does
//! not expose: a request head of at most [`MAX_REQUEST_BYTES`] (431 past it), a
//! [`IO_TIMEOUT`] to send it, one request per connection, and at most
//! [`MAX_CONNECTIONS`] served at once (more are closed without an answer).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::{
    render_health, render_metrics, Health, Metrics, IO_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST_BYTES,
};

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Binds the endpoint's listener (port 0 picks a free one; see `local_addr`).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Binds `addr` and serves `/healthz` and `/metrics` until `shutdown` turns true (or its
/// sender is dropped). `snapshot` is called once per request.
pub async fn serve(
    addr: SocketAddr,
    snapshot: impl Fn() -> (Metrics, Health) + Send + Sync + 'static,
    shutdown: watch::Receiver<bool>,
) -> Result<(), HttpError> {
    let listener = bind(addr).await?;
    serve_on(listener, snapshot, shutdown).await;
    Ok(())
}

type Snapshot = Arc<dyn Fn() -> (Metrics, Health) + Send + Sync>;

/// `GET /metrics` and `GET /healthz`; 405 (with `Allow: GET`) for other methods on
/// them, 404 elsewhere. A query string does not change the path.
fn router(snapshot: Snapshot) -> Router {
    Router::new()
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(snapshot)
}

async fn metrics(State(snapshot): State<Snapshot>) -> Response {
    let (m, _) = snapshot();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&m),
    )
        .into_response()
}

async fn healthz(State(snapshot): State<Snapshot>) -> Response {
    let (_, h) = snapshot();
    let (status, body) = render_health(&h);
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET")],
        "GET only\n",
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: try /metrics or /healthz\n",
    )
        .into_response()
}

/// [`serve`] on a listener already bound.
pub async fn serve_on(
    listener: TcpListener,
    snapshot: impl Fn() -> (Metrics, Health) + Send + Sync + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(Arc::new(snapshot));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if let Ok(a) = listener.local_addr() {
        tracing::info!(addr = %a, "metrics and health endpoint listening");
    }
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "http accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "http: too many connections, closing");
                    continue;
                };
                let service = TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(IO_TIMEOUT)
                        .max_buf_size(MAX_REQUEST_BYTES)
                        .keep_alive(false)
                        .title_case_headers(true)
                        .serve_connection(TokioIo::new(stream), service);
                    // Reading the request and writing the answer, however slow the client.
                    match tokio::time::timeout(2 * IO_TIMEOUT, conn).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "http connection"),
                        Err(_) => tracing::debug!(%peer, "http: client too slow, closed"),
                    }
                    drop(permit);
                });
            }
        }
    }
}
