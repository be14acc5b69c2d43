//! `ModelClient` against the dev gateway: token rotation, slow streams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use dev_gateway::{DevGateway, Fault, GatewayConfig, Route};
use futures::StreamExt as _;
use model_client::{ClientError, ResponseEvent};
use support::{TokenScript, client, command_provider};

/// A token script printing, on its N-th run, the token the test wrote to `token-N`.
fn file_token_script() -> TokenScript {
    TokenScript::new("cat \"$D/token-$N\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_survives_rotation_with_one_extra_run() {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let script = file_token_script();
    for n in 1..=2 {
        std::fs::write(
            script.dir().join(format!("token-{n}")),
            gw.mint_token().access_token,
        )
        .unwrap();
    }
    let (client, _) = client(&command_provider(&gw.base_url(), &script));
    let models = client.list_models().await.unwrap();
    assert_eq!(models.data[0].id, "dev-small");
    gw.rotate();
    // Both tokens predate the rotation: mint a fresh second one.
    std::fs::write(script.dir().join("token-2"), gw.mint_token().access_token).unwrap();
    let events: Vec<ResponseEvent> = client
        .stream_prompt("dev-small", "hi")
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    let text: String = events
        .iter()
        .filter_map(ResponseEvent::text_delta)
        .collect();
    assert_eq!(text, "Hello from the dev gateway. You said: hi");
    assert_eq!(script.runs(), 2);
    assert_eq!(gw.counters().unauthorized(Route::Responses), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stream_mid_body_is_an_error_not_a_hang() {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let script = file_token_script();
    std::fs::write(script.dir().join("token-1"), gw.mint_token().access_token).unwrap();
    let mut info = command_provider(&gw.base_url(), &script);
    info.stream_idle_timeout_ms = 300;
    info.stream_max_retries = 1;
    let (client, _) = client(&info);
    gw.set_fault(
        Route::Responses,
        Some(Fault::SlowStream {
            delay: Duration::from_secs(2),
        }),
    );
    let items: Vec<Result<ResponseEvent, ClientError>> = client
        .stream_prompt("dev-small", "hi")
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(items.len(), 1);
    assert!(
        matches!(items[0], Err(ClientError::StreamIdle { idle_ms: 300, .. })),
        "{items:?}"
    );
    // Reopened once before any event was yielded.
    assert_eq!(gw.counters().requests(Route::Responses), 2);
}
