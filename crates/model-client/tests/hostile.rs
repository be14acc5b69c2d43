//! `ModelClient` against the hostile test server: what a misbehaving gateway cannot do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use support::{TokenScript, client, command_provider};
use test_support::HostileServer;

/// Polls `f` until it holds or `limit` passes.
async fn eventually(limit: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

#[tokio::test]
async fn dropping_a_stream_closes_its_connection_at_once() {
    let server = HostileServer::start();
    let script = TokenScript::counting();
    let mut info = command_provider(&server.base_url("sse_hold"), &script);
    // Long enough that only the drop can explain a prompt close.
    info.stream_idle_timeout_ms = 60_000;
    let (client, _) = client(&info);
    let mut stream = client.stream_prompt("m1", "hi").await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.text_delta(), Some("hi"));
    assert_eq!(server.open_connections(), 1);
    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || server.open_connections() == 0).await,
        "the connection stayed open after the stream was dropped"
    );
}

#[tokio::test]
async fn a_stream_without_a_final_event_is_an_error_not_an_end() {
    let server = HostileServer::start();
    let script = TokenScript::counting();
    let (client, _) = client(&command_provider(
        &server.base_url("sse_truncated"),
        &script,
    ));
    let mut stream = client.stream_prompt("m1", "hi").await.unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "provider `corp`: unexpected response: the stream ended before it completed"
    );
}

#[tokio::test]
async fn a_tls_failure_is_not_retried_and_says_tls() {
    // A listener that counts connections and answers a TLS hello in plain HTTP.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            );
        }
    });
    let script = TokenScript::counting();
    let info = command_provider(&format!("https://127.0.0.1:{port}/v1"), &script);
    assert_eq!(info.request_max_retries, 4);
    let (client, _) = client(&info);
    let err = client.list_models().await.unwrap_err().to_string();
    assert!(err.contains("TLS handshake failed"), "{err}");
    assert!(
        err.starts_with(&format!("provider `corp`: cannot reach 127.0.0.1:{port}")),
        "{err}"
    );
    // The client returns after its last retry: one connection in all means none was
    // retried (and so no backoff was waited).
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a TLS failure was retried"
    );
}
