//! The realtime client against the dev gateway on loopback, with real token scripts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dev_gateway::{DevGateway, Fault, GatewayConfig, Route};
use model_client::ModelClient;
use provider_auth::{AuthManager, auth_manager_for_provider};
use provider_config::ModelProviderInfo;
use realtime::{RealtimeClient, RealtimeError, RealtimeEvent};
use test_support::TokenScript;

/// Writes a fresh token of `gw` for the `n`-th run of a `TokenScript::from_files()`.
fn put(tokens: &TokenScript, n: usize, gw: &DevGateway) {
    tokens.put_token(n, &gw.mint_token().access_token);
}

/// A provider at `base_url` using `tokens` for its tokens.
fn provider(tokens: &TokenScript, base_url: &str) -> ModelProviderInfo {
    let mut info = ModelProviderInfo::new("Dev", base_url);
    info.auth = Some(tokens.auth());
    info
}

async fn setup() -> (
    DevGateway,
    TokenScript,
    ModelProviderInfo,
    Arc<dyn AuthManager>,
) {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let tokens = TokenScript::from_files();
    put(&tokens, 1, &gw);
    put(&tokens, 2, &gw);
    let info = provider(&tokens, &gw.base_url());
    let auth = auth_manager_for_provider("dev", &info, None).unwrap();
    (gw, tokens, info, auth)
}

#[tokio::test]
async fn handshake_carries_the_command_token_and_a_session_runs() {
    let (gw, tokens, info, auth) = setup().await;
    let mut session = RealtimeClient::connect("dev", info, auth, "dev-small")
        .await
        .unwrap();
    let greeting = session.next_event().await.unwrap().unwrap();
    assert_eq!(greeting.kind, "session.created");
    assert_eq!(greeting.fields["session"]["model"], "dev-small");
    session
        .send_json(
            serde_json::json!({"type": "response.create", "response": {"instructions": "ping"}}),
        )
        .await
        .unwrap();
    let mut kinds = Vec::new();
    let mut text = String::new();
    loop {
        let event = session.next_event().await.unwrap().unwrap();
        if let Some(d) = event.fields.get("delta").and_then(|d| d.as_str()) {
            text.push_str(d);
        }
        kinds.push(event.kind.clone());
        if event.kind == "response.done" {
            break;
        }
    }
    assert_eq!(kinds.first().map(String::as_str), Some("response.created"));
    assert_eq!(text, "Hello from the dev gateway. You said: ping");
    session.close().await.unwrap();
    assert_eq!(tokens.runs(), 1);
    assert_eq!(gw.counters().realtime_sessions, 1);
}

#[tokio::test]
async fn rotated_token_on_handshake_costs_one_extra_run() {
    let (gw, tokens, info, auth) = setup().await;
    let client = RealtimeClient::new("dev", info, auth);
    let mut session = client.open("dev-small").await.unwrap();
    assert_eq!(
        session.next_event().await.unwrap().unwrap().kind,
        "session.created"
    );
    gw.rotate();
    put(&tokens, 2, &gw);
    session.reconnect().await.unwrap();
    assert_eq!(
        session.next_event().await.unwrap().unwrap().kind,
        "session.created"
    );
    assert_eq!(tokens.runs(), 2);
    let counters = gw.counters();
    assert_eq!(counters.requests(Route::Realtime), 3);
    assert_eq!(counters.unauthorized(Route::Realtime), 1);
}

#[tokio::test]
async fn always_401_handshake_fails_after_exactly_two_handshakes() {
    let (gw, tokens, info, auth) = setup().await;
    gw.set_fault(Route::Realtime, Some(Fault::Unauthorized));
    let err = RealtimeClient::connect("dev", info, auth, "dev-small")
        .await
        .unwrap_err();
    assert!(err.is_auth_failure_after_fresh_token(), "{err:?}");
    assert!(
        err.to_string().contains("rejected a freshly minted token"),
        "{err}"
    );
    assert_eq!(gw.counters().requests(Route::Realtime), 2);
    assert_eq!(tokens.runs(), 2);
}

#[tokio::test]
async fn http_and_realtime_clients_share_one_token() {
    let (_gw, tokens, info, auth) = setup().await;
    let http = ModelClient::new("dev", info.clone(), auth.clone()).unwrap();
    http.list_models().await.unwrap();
    let mut session = RealtimeClient::connect(
        "dev",
        info.clone(),
        auth_manager_for_provider("dev", &info, None).unwrap(),
        "dev-small",
    )
    .await
    .unwrap();
    assert_eq!(
        session.next_event().await.unwrap().unwrap().kind,
        "session.created"
    );
    assert_eq!(tokens.runs(), 1);
}

#[tokio::test]
async fn connect_timeout_is_reported() {
    // Accepts TCP connections (the backlog) but never answers the handshake.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tokens = TokenScript::from_files();
    tokens.put_token(1, "unused");
    let mut info = provider(
        &tokens,
        &format!("http://{}/v1", silent.local_addr().unwrap()),
    );
    info.websocket_connect_timeout_ms = 300;
    let auth = auth_manager_for_provider("dev", &info, None).unwrap();
    let started = Instant::now();
    let err = RealtimeClient::connect("dev", info, auth, "dev-small")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RealtimeError::ConnectTimeout {
                timeout_ms: 300,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn server_close_mid_session_is_an_error_not_a_hang() {
    let (gw, _tokens, info, auth) = setup().await;
    gw.set_fault(Route::Realtime, Some(Fault::CloseAfterGreeting));
    let mut session = RealtimeClient::connect("dev", info, auth, "dev-small")
        .await
        .unwrap();
    assert_eq!(
        session.next_event().await.unwrap().unwrap().kind,
        "session.created"
    );
    let next = tokio::time::timeout(Duration::from_secs(5), session.next_event())
        .await
        .expect("the session hung after the server closed it");
    match next {
        Some(Err(RealtimeError::Closed { code, reason, .. })) => {
            assert_eq!(code, 1011);
            assert!(reason.contains("told to close"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn events_keep_unknown_fields() {
    let event: RealtimeEvent =
        serde_json::from_str(r#"{"type":"x.y","a":1,"nested":{"b":[true]}}"#).unwrap();
    assert_eq!(event.kind, "x.y");
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        serde_json::json!({"type":"x.y","a":1,"nested":{"b":[true]}})
    );
}

#[tokio::test]
async fn server_pings_are_answered() {
    let (_gw, _tokens, info, auth) = setup().await;
    let mut session = RealtimeClient::connect("dev", info, auth, "dev-small")
        .await
        .unwrap();
    assert_eq!(
        session.next_event().await.unwrap().unwrap().kind,
        "session.created"
    );
    session
        .send(&RealtimeEvent::new("debug.ping"))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), session.next_event())
        .await
        .expect("the pong never reached the server");
    assert_eq!(next.unwrap().unwrap().kind, "debug.pong_received");
}

#[tokio::test]
async fn a_configured_header_that_cannot_be_sent_is_an_error_as_over_http() {
    let (_gw, _tokens, mut info, auth) = setup().await;
    info.http_headers
        .insert("X-Team".to_owned(), "line\nbreak".to_owned());
    let err = RealtimeClient::connect("dev", info.clone(), auth.clone(), "dev-small")
        .await
        .unwrap_err();
    assert!(matches!(err, RealtimeError::Header { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "provider `dev`: cannot send its configured headers"
    );
    // The cause is carried, typed, not flattened into the message.
    let cause = std::error::Error::source(&err).expect("a source");
    assert_eq!(
        cause.downcast_ref::<provider_auth::InvalidHeader>(),
        Some(&provider_auth::InvalidHeader::Value {
            name: "x-team".to_owned()
        })
    );
    // The HTTP client refuses the same header the same way.
    let http = ModelClient::new("dev", info, auth).unwrap_err();
    assert!(
        matches!(&http, model_client::ClientError::Header { source, .. }
            if source.to_string() == cause.to_string()),
        "{http}"
    );
}
