//! The integrations for other clients, against wiremock with real token scripts: a
//! `reqwest_middleware` client, a hyper client under `AuthLayer`, and the synchronous
//! header accessor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use provider_auth::{
    AuthLayer, AuthManager, AuthMiddleware, Provider, auth_manager_for_provider,
    cached_credential_headers,
};
use provider_config::ModelProviderInfo;
use test_support::TokenScript;
use tower::{Service as _, ServiceExt as _};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// `GET /v1/models` answered `status` for `Bearer <token>`.
async fn answer(server: &MockServer, token: &str, status: u16) {
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(ResponseTemplate::new(status).set_body_string("{}"))
        .mount(server)
        .await;
}

fn provider(server: &MockServer, script: &TokenScript) -> ModelProviderInfo {
    let mut info = ModelProviderInfo::new("Corp", format!("{}/v1", server.uri()));
    info.auth = Some(script.auth());
    info
}

fn middleware_client(info: &ModelProviderInfo) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::for_provider(
            &Provider::from_config("corp", info.clone(), None).unwrap(),
        ))
        .build()
}

#[tokio::test]
async fn reqwest_middleware_adds_the_token_and_retries_once_after_401() {
    let server = MockServer::start().await;
    answer(&server, "tok-1", 401).await;
    answer(&server, "tok-2", 200).await;
    let script = TokenScript::counting();
    let info = provider(&server, &script);
    let client = middleware_client(&info);
    let url = format!("{}/v1/models", server.uri());
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(script.runs(), 2, "one run, one run after the 401");
    // The next request goes straight out with the newer token.
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(script.runs(), 2);
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn reqwest_middleware_returns_a_second_rejection_as_it_came() {
    let server = MockServer::start().await;
    answer(&server, "tok-1", 401).await;
    answer(&server, "tok-2", 401).await;
    let script = TokenScript::counting();
    let client = middleware_client(&provider(&server, &script));
    let response = client
        .get(format!("{}/v1/models", server.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "one retry"
    );
    assert_eq!(script.runs(), 2);
}

#[tokio::test]
async fn reqwest_middleware_honours_reauth_on_403_and_never_a_stream_twice() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer tok-2"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let script = TokenScript::counting();
    let mut info = provider(&server, &script);
    info.auth.as_mut().unwrap().reauth_on = vec![401, 403];
    let client = middleware_client(&info);
    let url = format!("{}/v1/responses", server.uri());
    // A streamed body cannot be replayed: the 403 comes back, the token is refreshed.
    let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok("{\"input\":"), Ok("\"hi\"}")];
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let response = client.post(&url).body(streamed).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    assert_eq!(script.runs(), 2, "the rejection was reported");
    // A replayable body after a 403 is sent again with the newer token.
    let response = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 200);
}

type TowerClient = provider_auth::AuthService<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
>;

/// A hyper client under `AuthLayer` for `info`, and a `GET /v1/models` for it.
fn tower_client(
    server: &MockServer,
    info: &ModelProviderInfo,
) -> (TowerClient, http::Request<Full<Bytes>>) {
    let hyper_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>();
    let client = tower::ServiceBuilder::new()
        .layer(AuthLayer::for_provider(
            &Provider::from_config("corp", info.clone(), None).unwrap(),
        ))
        .service(hyper_client);
    let request = http::Request::get(format!("{}/v1/models", server.uri()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    (client, request)
}

#[tokio::test]
async fn tower_layer_adds_the_token_and_retries_once_after_401() {
    let server = MockServer::start().await;
    answer(&server, "tok-1", 401).await;
    answer(&server, "tok-2", 200).await;
    let script = TokenScript::counting();
    let info = provider(&server, &script);
    let (mut client, request) = tower_client(&server, &info);
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"{}");
    assert_eq!(script.runs(), 2);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn tower_layer_fails_closed_when_no_token_can_be_had() {
    let server = MockServer::start().await;
    let script = TokenScript::new("echo 'no session' >&2\nexit 3");
    let info = provider(&server, &script);
    let (mut client, request) = tower_client(&server, &info);
    let err = client
        .ready()
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exited with status 3"), "{err}");
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "nothing was sent"
    );
}

#[tokio::test]
async fn cached_headers_are_there_without_waiting_once_obtained() {
    let script = TokenScript::new(
        "echo '{\"access_token\": \"tok-'$N'\", \"expires_in\": 3600, \"headers\": {\"x-tenant\": \"t-'$N'\"}}'",
    );
    let mut info = ModelProviderInfo::new("Corp", "https://gw.example.com/v1");
    let mut auth = script.auth();
    auth.format = provider_config::TokenFormat::Json;
    info.auth = Some(auth);
    let manager: Arc<dyn AuthManager> = auth_manager_for_provider("corp", &info, None).unwrap();
    assert!(
        cached_credential_headers(manager.as_ref()).is_none(),
        "nothing yet"
    );
    assert_eq!(script.runs(), 0, "the accessor never runs the command");
    let sent = manager.credential().await.unwrap().unwrap();
    let headers = cached_credential_headers(manager.as_ref()).unwrap();
    let shown: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        shown,
        [
            ("authorization".to_owned(), "Bearer tok-1".to_owned()),
            ("x-tenant".to_owned(), "t-1".to_owned())
        ]
    );
    assert!(headers.iter().all(|(_, v)| v.is_sensitive()));
    // After a rejection is reported, the accessor gives the newer token.
    manager.unauthorized(&sent).await.unwrap();
    let headers = cached_credential_headers(manager.as_ref()).unwrap();
    assert_eq!(headers[0].1.to_str().unwrap(), "Bearer tok-2");
    assert_eq!(script.runs(), 2);
}
