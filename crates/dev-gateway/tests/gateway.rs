//! The dev gateway over real HTTP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dev_gateway::{DevGateway, Fault, GatewayConfig, Route};

async fn get_models(gw: &DevGateway, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/models", gw.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn minted_tokens_work_until_rotation() {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let minted: serde_json::Value = reqwest::Client::new()
        .post(gw.token_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(minted["token_type"], "Bearer");
    assert_eq!(minted["expires_in"], 300);
    let token = minted["access_token"].as_str().unwrap().to_owned();
    let ok = get_models(&gw, &token).await;
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["data"][0]["id"], "dev-small");
    gw.rotate();
    let rejected = get_models(&gw, &token).await;
    assert_eq!(rejected.status(), 401);
    assert_eq!(get_models(&gw, "made-up").await.status(), 401);
    let counters = gw.counters();
    assert_eq!(counters.requests(Route::Models), 3);
    assert_eq!(counters.unauthorized(Route::Models), 2);
    assert_eq!(counters.tokens_minted, 1);
}

#[tokio::test]
async fn tokens_expire() {
    let gw =
        DevGateway::start(GatewayConfig::default().with_token_lifetime(Duration::from_millis(500)))
            .await
            .unwrap();
    let token = gw.mint_token();
    assert_eq!(get_models(&gw, &token.access_token).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get_models(&gw, &token.access_token).await.status(), 401);
}

#[tokio::test]
async fn faults_apply_for_the_given_number_of_requests() {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let token = gw.mint_token().access_token;
    gw.set_fault_times(
        Route::Models,
        Fault::TooManyRequests {
            retry_after_secs: 3,
        },
        1,
    );
    let limited = get_models(&gw, &token).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "3");
    assert_eq!(get_models(&gw, &token).await.status(), 200);
    gw.set_fault(Route::Models, Some(Fault::ServerError));
    assert_eq!(get_models(&gw, &token).await.status(), 500);
    assert_eq!(get_models(&gw, &token).await.status(), 500);
    gw.set_fault(Route::Models, None);
    assert_eq!(get_models(&gw, &token).await.status(), 200);
}

#[tokio::test]
async fn responses_stream_sse_events() {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let token = gw.mint_token().access_token;
    let text = reqwest::Client::new()
        .post(format!("{}/responses", gw.base_url()))
        .bearer_auth(&token)
        .json(&serde_json::json!({"model": "dev-small", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("event: response.created\n"), "{text}");
    assert!(text.contains("\"delta\":\"hi\""), "{text}");
    assert!(text.contains("event: response.completed"), "{text}");
}

#[tokio::test]
async fn faults_can_be_set_over_http() {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let token = gw.mint_token().access_token;
    let admin = |body: serde_json::Value| {
        let url = format!("http://{}/admin/fault", gw.addr());
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        admin(serde_json::json!({"route": "models", "fault": "unauthorized", "times": 1})).await,
        200
    );
    assert_eq!(get_models(&gw, &token).await.status(), 401);
    assert_eq!(get_models(&gw, &token).await.status(), 200);
    assert_eq!(
        admin(serde_json::json!({"route": "models", "fault": "server_error"})).await,
        200
    );
    assert_eq!(get_models(&gw, &token).await.status(), 500);
    assert_eq!(
        admin(serde_json::json!({"route": "models", "fault": "none"})).await,
        200
    );
    assert_eq!(get_models(&gw, &token).await.status(), 200);
    assert_eq!(
        admin(serde_json::json!({"route": "models", "fault": "explode"})).await,
        400
    );
    assert_eq!(
        admin(serde_json::json!({"route": "nowhere", "fault": "none"})).await,
        400
    );
}
