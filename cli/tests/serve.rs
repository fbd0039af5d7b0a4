//! The server's own limits, over real TCP: a request whose headers trickle in is cut
//! off, headers over the limit are refused, and an ordinary request still gets its
//! answer with the peer's address known.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use cafe_app::serve::{HEADER_TIMEOUT, MAX_HEADER_BYTES, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn server() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route(
        "/peer",
        axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, router, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Reads until the server closes the connection (or `limit` passes); what it sent.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut got)).await;
    read.ok().map(|_| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn headers_sent_too_slowly_are_cut_off() {
    let (addr, _stop) = server().await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // ...and the rest of the headers never come.
    let answer = until_closed(&mut slow, HEADER_TIMEOUT * 3).await;
    assert!(answer.is_some(), "still open after {:?}", HEADER_TIMEOUT * 3);
    assert!(
        started.elapsed() >= HEADER_TIMEOUT,
        "cut off early: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn headers_over_the_limit_are_refused_and_an_ordinary_request_is_answered() {
    let (addr, _stop) = server().await;
    let mut big = TcpStream::connect(addr).await.unwrap();
    let padding = "a".repeat(MAX_HEADER_BYTES * 2);
    let request = format!("GET /peer HTTP/1.1\r\nHost: x\r\nX-Padding: {padding}\r\n\r\n");
    let _ = big.write_all(request.as_bytes()).await;
    let answer = until_closed(&mut big, Duration::from_secs(5)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut ok, Duration::from_secs(5)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("127.0.0.1"), "the peer's address: {answer:?}");
}
