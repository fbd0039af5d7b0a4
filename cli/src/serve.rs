//! The HTTP server's accept loop, with the limits `axum::serve` leaves unset.
//!
//! `axum::serve` builds hyper without a timer, so hyper's header-read timeout never
//! runs: a client may trickle its request headers a byte at a time and hold a
//! connection (and its task) for as long as it likes (slowloris), and the headers'
//! buffer may grow to hyper's default of about 400 KiB. Here every connection gets
//! [`HEADER_TIMEOUT`] to send its headers and [`MAX_HEADER_BYTES`] for them (the body
//! has its own limit and timeout in the API's body extractor), and the peer's address
//! as `ConnectInfo`, which the observers' routes read.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Longest a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) accepted; a bearer token and the
/// usual headers take under 2 KiB. hyper answers a larger one with 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Serves `router` on `listener` until `shutdown` resolves, then lets the requests in
/// flight finish (the caller bounds how long it waits).
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = router.clone().map_request(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            request
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        tokio::spawn(graceful.watch(connection));
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
