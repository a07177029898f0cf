//! The HTTP/1.1 server: its own accept loop instead of `axum::serve`, for the limits that
//! one lacks.
//!
//! Invariants:
//! - at most `TALLY_MAX_CONNECTIONS` connections are open at once; one accepted above that is
//!   closed at once (and counted), so a flood of idle or slow clients cannot take every file
//!   descriptor. `http_connections_open` (gauge) and `http_connections_refused_total`
//!   (counter) are exported;
//! - a connection whose request headers do not all arrive within `TALLY_HEADER_READ_TIMEOUT_MS`
//!   is closed, whether it is new or idle between keep-alive requests (hyper's header read
//!   timeout, which runs only with a timer: `axum::serve` sets none, so a half-sent request
//!   held its connection forever);
//! - on shutdown the listener stops accepting, every connection finishes its in-flight
//!   request and closes (idle ones at once), and `serve` returns when the last one is gone
//!   (or after the request deadline plus the header timeout, whichever comes first).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// On shutdown, the longest wait for open connections to finish.
    pub drain_limit: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains the connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // `true` asks every connection to finish its in-flight request and close.
    let (close_tx, close_rx) = watch::channel(false);
    metrics::gauge!("http_connections_max").set(limits.max_connections as f64);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection that died in the backlog:
                    // pause rather than spin, and keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let (app, close) = (app.clone(), close_rx.clone());
        tokio::spawn(async move {
            let _open = OpenConnection::new();
            connection(stream, peer, app, limits, close).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = close_tx.send(true);
    // Every slot back: the last connection has closed. A request in flight ends within its
    // deadline, a half-sent one within the header timeout: past both, stop waiting.
    let all_closed = slots.acquire_many(limits.max_connections as u32);
    if tokio::time::timeout(limits.drain_limit, all_closed).await.is_err() {
        tracing::warn!("stopping with connections still open after {:?}", limits.drain_limit);
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut close: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(tower::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.oneshot(req.map(axum::body::Body::new)).await.unwrap_or_else(|e| match e {})) }
    }));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = *close.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            changed = close.changed(), if !closing => {
                // A closed channel also means the server is going away.
                if changed.is_err() || *close.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Counts an open connection in `http_connections_open` for as long as it lives.
struct OpenConnection;

impl OpenConnection {
    fn new() -> OpenConnection {
        metrics::gauge!("http_connections_open").increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("http_connections_open").decrement(1.0);
    }
}
