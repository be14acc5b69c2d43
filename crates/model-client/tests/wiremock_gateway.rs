//! `ModelClient` against a wiremock gateway, with real token scripts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use model_client::{ClientError, ModelClient, ModelsManager, ResponseEvent};
use provider_auth::{AuthError, auth_manager_for_provider};
use provider_config::{ModelProviderInfo, WireApi};
use support::{TokenScript, client, command_provider};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn models_body() -> serde_json::Value {
    serde_json::json!({"object": "list", "data": [{"id": "m1", "object": "model"}, {"id": "m2", "object": "model"}]})
}

fn ok_models() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(models_body())
}

fn unauthorized() -> ResponseTemplate {
    ResponseTemplate::new(401)
        .set_body_json(serde_json::json!({"error": {"message": "token expired"}}))
}

fn sse(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/event-stream")
        .set_body_string(body.to_owned())
}

/// Answers `GET /v1/models` sent with `Bearer <token>` by `response`, exactly `times` times.
async fn models_for_token(
    server: &MockServer,
    token: &str,
    response: ResponseTemplate,
    times: u64,
) {
    Mock::given(path("/v1/models"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(response)
        .expect(times)
        .mount(server)
        .await;
}

/// A command-auth client for `server` and the script behind it.
fn command_client(
    server: &MockServer,
) -> (
    TokenScript,
    ModelClient,
    std::sync::Arc<dyn provider_auth::AuthManager>,
) {
    let script = TokenScript::counting();
    let (client, auth) = client(&command_provider(&format!("{}/v1", server.uri()), &script));
    (script, client, auth)
}

async fn collect(stream: model_client::ResponseStream) -> Vec<Result<ResponseEvent, ClientError>> {
    stream.collect().await
}

#[tokio::test]
async fn provider_auth_command_supplies_bearer_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ok_models())
        .expect(1)
        .mount(&server)
        .await;
    let (script, client, _) = command_client(&server);
    let models = client.list_models().await.unwrap();
    let ids: Vec<&str> = models.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2"]);
    assert_eq!(script.runs(), 1);
}

#[tokio::test]
async fn provider_auth_command_refreshes_after_401() {
    let server = MockServer::start().await;
    models_for_token(&server, "tok-1", unauthorized(), 1).await;
    models_for_token(&server, "tok-2", ok_models(), 1).await;
    let (script, client, auth) = command_client(&server);
    assert_eq!(client.list_models().await.unwrap().data.len(), 2);
    assert_eq!(script.runs(), 2);
    assert_eq!(auth.stats().unwrap().refreshes_after_401, 1);
}

#[tokio::test]
async fn refresh_available_models_refreshes_provider_auth_after_401() {
    let server = MockServer::start().await;
    models_for_token(&server, "tok-1", ok_models(), 1).await;
    let (script, client, _) = command_client(&server);
    let models = ModelsManager::new(client, Duration::from_secs(300));
    assert_eq!(models.list().await.unwrap().data.len(), 2);
    assert_eq!(
        models.list().await.unwrap().data.len(),
        2,
        "served from the cache"
    );
    server.reset().await;
    // The gateway rotated: tok-1 is rejected, the next token works.
    models_for_token(&server, "tok-1", unauthorized(), 1).await;
    models_for_token(&server, "tok-2", ok_models(), 1).await;
    assert_eq!(models.refresh().await.unwrap().data.len(), 2);
    assert_eq!(script.runs(), 2);
}

#[tokio::test]
async fn second_401_is_returned_not_looped() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/models"))
        .respond_with(unauthorized())
        .expect(2)
        .mount(&server)
        .await;
    let (script, client, _) = command_client(&server);
    let err = client.list_models().await.unwrap_err();
    assert!(err.is_auth_failure_after_fresh_token());
    assert_eq!(err.status(), Some(401));
    let shown = err.to_string();
    assert!(shown.contains("rejected a freshly minted token"), "{shown}");
    assert!(!shown.contains("tok-"), "{shown}");
    assert_eq!(script.runs(), 2);
}

#[tokio::test]
async fn forbidden_is_returned_without_a_refresh() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/models"))
        .respond_with(ResponseTemplate::new(403).set_body_string("no access to this model"))
        .expect(1)
        .mount(&server)
        .await;
    let (script, client, _) = command_client(&server);
    let err = client.list_models().await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(err.to_string().contains("no access to this model"));
    assert_eq!(script.runs(), 1);
}

#[tokio::test]
async fn gateway_echoing_the_token_is_redacted() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/models"))
        .respond_with(ResponseTemplate::new(400).set_body_string("bad token tok-1 for this route"))
        .mount(&server)
        .await;
    let (_script, client, _) = command_client(&server);
    let shown = client.list_models().await.unwrap_err().to_string();
    assert!(
        shown.contains("bad token [REDACTED] for this route") && !shown.contains("tok-1"),
        "{shown}"
    );
}

#[tokio::test]
async fn failed_command_sends_no_request() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ok_models())
        .expect(0)
        .mount(&server)
        .await;
    let script = TokenScript::new("echo 'no credentials' >&2\nexit 1");
    let (client, _) = client(&command_provider(&format!("{}/v1", server.uri()), &script));
    let err = client.list_models().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Auth(AuthError::Command { .. })),
        "{err:?}"
    );
    assert!(client.stream_prompt("m", "hi").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_run_the_command_once() {
    let server = MockServer::start().await;
    // The gateway takes 500 ms to answer the stale token, so all 64 requests are in flight
    // with it before the first 401 comes back.
    models_for_token(
        &server,
        "tok-1",
        unauthorized().set_delay(Duration::from_millis(500)),
        64,
    )
    .await;
    models_for_token(&server, "tok-2", ok_models(), 64).await;
    let (script, client, auth) = command_client(&server);
    auth.credential().await.unwrap();
    let requests: Vec<_> = (0..64)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.list_models().await })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap().unwrap().data.len(), 2);
    }
    assert_eq!(script.runs(), 2, "one initial run and one rotation");
    assert_eq!(auth.stats().unwrap().refreshes_after_401, 1);
}

#[tokio::test]
async fn retries_429_honouring_retry_after() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/models"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/models"))
        .respond_with(ok_models())
        .expect(1)
        .mount(&server)
        .await;
    let (_script, client, _) = command_client(&server);
    let started = Instant::now();
    client.list_models().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
}

#[tokio::test]
async fn retries_5xx_then_gives_up() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/models"))
        .respond_with(ResponseTemplate::new(503).set_body_string("overloaded"))
        .expect(3)
        .mount(&server)
        .await;
    let script = TokenScript::counting();
    let mut info = command_provider(&format!("{}/v1", server.uri()), &script);
    info.request_max_retries = 2;
    let (client, _) = client(&info);
    let err = client.list_models().await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(err.to_string().contains("overloaded"));
    assert_eq!(script.runs(), 1);
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported_without_the_url() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let script = TokenScript::counting();
    let mut info = command_provider(&format!("http://127.0.0.1:{port}/v1"), &script);
    info.request_max_retries = 1;
    info.query_params
        .insert("key".to_owned(), "secret-query".to_owned());
    let (client, _) = client(&info);
    let err = client.list_models().await.unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert!(
        shown.contains(&format!("cannot reach 127.0.0.1:{port}")),
        "{shown}"
    );
    assert!(!shown.contains("secret-query"), "{shown}");
}

#[tokio::test]
async fn stream_idle_timeout_fires() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/responses"))
        .respond_with(
            sse("event: response.created\ndata: {\"type\":\"response.created\"}\n\n")
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let script = TokenScript::counting();
    let mut info = command_provider(&format!("{}/v1", server.uri()), &script);
    info.stream_idle_timeout_ms = 200;
    let (client, _) = client(&info);
    let started = Instant::now();
    let err = client.stream_prompt("m", "hi").await.err().unwrap();
    assert!(
        matches!(err, ClientError::StreamIdle { idle_ms: 200, .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn headers_and_query_params_applied() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/models"))
        .and(query_param("api-version", "2025-04-01"))
        .and(header("x-team", "agents"))
        .and(header("x-pkg", env!("CARGO_PKG_NAME")))
        .and(header("user-agent", model_client::USER_AGENT))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ok_models())
        .expect(1)
        .mount(&server)
        .await;
    let script = TokenScript::counting();
    let mut info = command_provider(&format!("{}/v1/", server.uri()), &script);
    info.query_params
        .insert("api-version".to_owned(), "2025-04-01".to_owned());
    info.http_headers
        .insert("X-Team".to_owned(), "agents".to_owned());
    // Replaced by the credential, and never shown.
    info.http_headers
        .insert("Authorization".to_owned(), "Bearer from-config".to_owned());
    info.env_http_headers
        .insert("X-Pkg".to_owned(), "CARGO_PKG_NAME".to_owned());
    info.env_http_headers.insert(
        "X-Missing".to_owned(),
        "MODELAUTH_UNSET_VAR_FOR_TEST".to_owned(),
    );
    let (client, _) = client(&info);
    client.list_models().await.unwrap();
    let shown = format!("{client:?}");
    assert!(
        !shown.contains("agents") && !shown.contains("from-config"),
        "{shown}"
    );
    assert!(!shown.contains("2025-04-01"), "{shown}");
    let received = server.received_requests().await.unwrap();
    assert!(!received[0].headers.contains_key("x-missing"));
    assert_eq!(
        received[0].headers.get_all("authorization").iter().count(),
        1
    );
}

#[tokio::test]
async fn env_key_and_bearer_token_providers_work() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/models"))
        .and(header(
            "authorization",
            format!("Bearer {}", env!("CARGO_PKG_NAME")).as_str(),
        ))
        .respond_with(ok_models())
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/models"))
        .and(header("authorization", "Bearer sk-static-1"))
        .respond_with(ok_models())
        .expect(1)
        .mount(&server)
        .await;
    let mut env_info = ModelProviderInfo::new("Env", format!("{}/v1", server.uri()));
    env_info.env_key = Some("CARGO_PKG_NAME".to_owned());
    let (client_a, _) = client(&env_info);
    client_a.list_models().await.unwrap();
    let mut static_info = ModelProviderInfo::new("Static", format!("{}/v1", server.uri()));
    static_info.experimental_bearer_token = Some("sk-static-1".to_owned());
    let (client_b, _) = client(&static_info);
    client_b.list_models().await.unwrap();
}

#[tokio::test]
async fn missing_env_key_says_which_var() {
    let mut info = ModelProviderInfo::new("Env", "http://127.0.0.1:9/v1");
    info.env_key = Some("MODELAUTH_TEST_MISSING_KEY".to_owned());
    let err = auth_manager_for_provider("envp", &info, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("`MODELAUTH_TEST_MISSING_KEY` is not set"),
        "{err}"
    );
}

#[tokio::test]
async fn responses_stream_typed_events_and_pass_unknown_ones_through() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .and(wiremock::matchers::body_partial_json(serde_json::json!({"model": "m", "stream": true})))
        .respond_with(sse(concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r1\"}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hel\"}\n\n",
            "event: response.reasoning.delta\ndata: {\"type\":\"response.reasoning.delta\",\"delta\":\"hmm\"}\n\n",
            "data: {\"type\":\"response.output_text.delta\",\"delta\":\"lo\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r1\"}}\n\n",
        )))
        .expect(1)
        .mount(&server)
        .await;
    let (_script, client, _) = command_client(&server);
    let events: Vec<ResponseEvent> = collect(client.stream_prompt("m", "hi").await.unwrap())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let kinds: Vec<&str> = events.iter().map(ResponseEvent::kind).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.output_text.delta",
            "response.reasoning.delta",
            "response.output_text.delta",
            "response.completed"
        ]
    );
    let text: String = events
        .iter()
        .filter_map(ResponseEvent::text_delta)
        .collect();
    assert_eq!(text, "Hello");
}

#[tokio::test]
async fn chat_wire_api_streams() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(wiremock::matchers::body_partial_json(serde_json::json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]})))
        .respond_with(sse(concat!(
            "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \"}}]}\n\n",
            "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"there\"}}]}\n\n",
            "data: [DONE]\n\n",
        )))
        .expect(1)
        .mount(&server)
        .await;
    let script = TokenScript::counting();
    let mut info = command_provider(&format!("{}/v1", server.uri()), &script);
    info.wire_api = WireApi::Chat;
    let (client, _) = client(&info);
    let events: Vec<ResponseEvent> = collect(client.stream_prompt("m", "hi").await.unwrap())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let text: String = events
        .iter()
        .filter_map(ResponseEvent::text_delta)
        .collect();
    assert_eq!(text, "Hi there");
    assert!(matches!(
        events.last(),
        Some(ResponseEvent::Completed { .. })
    ));
}

#[tokio::test]
async fn two_clients_share_one_token() {
    let server = MockServer::start().await;
    models_for_token(&server, "tok-1", ok_models(), 2).await;
    let script = TokenScript::counting();
    let info = command_provider(&format!("{}/v1", server.uri()), &script);
    let a = ModelClient::new(
        "corp",
        info.clone(),
        auth_manager_for_provider("corp", &info, None).unwrap(),
    )
    .unwrap();
    let b = ModelClient::new(
        "corp",
        info.clone(),
        auth_manager_for_provider("corp", &info, None).unwrap(),
    )
    .unwrap();
    a.list_models().await.unwrap();
    b.list_models().await.unwrap();
    assert_eq!(script.runs(), 1);
}

#[tokio::test]
async fn create_response_returns_json() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .and(wiremock::matchers::body_partial_json(
            serde_json::json!({"stream": false}),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"id": "r1", "status": "completed"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (_script, client, _) = command_client(&server);
    let v = client
        .create_response(&serde_json::json!({"model": "m", "input": "hi"}))
        .await
        .unwrap();
    assert_eq!(v["status"], "completed");
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed_and_carries_nothing_there() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(path("/v1/models"))
        .respond_with(ResponseTemplate::new(307).insert_header(
            "location",
            format!("{}/v1/models", elsewhere.uri()).as_str(),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/models"))
        .respond_with(ok_models())
        .mount(&elsewhere)
        .await;
    let script = TokenScript::counting();
    let mut info = command_provider(&format!("{}/v1", server.uri()), &script);
    info.http_headers
        .insert("X-Api-Key".to_owned(), "configured-key-123".to_owned());
    let (client, _) = client(&info);
    let err = client.list_models().await.unwrap_err();
    assert_eq!(err.status(), Some(307));
    assert!(
        err.to_string()
            .contains("a redirect to another host, which is not followed"),
        "{err}"
    );
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_redirect_on_the_same_origin_is_followed_with_the_credential() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/models"))
        .respond_with(ResponseTemplate::new(308).insert_header("location", "/v2/models"))
        .mount(&server)
        .await;
    Mock::given(path("/v2/models"))
        .and(header("authorization", "Bearer tok-1"))
        .and(header("x-api-key", "configured-key-123"))
        .respond_with(ok_models())
        .expect(1)
        .mount(&server)
        .await;
    let script = TokenScript::counting();
    let mut info = command_provider(&format!("{}/v1", server.uri()), &script);
    info.http_headers
        .insert("X-Api-Key".to_owned(), "configured-key-123".to_owned());
    let (client, _) = client(&info);
    assert_eq!(client.list_models().await.unwrap().data.len(), 2);
}

#[tokio::test]
async fn models_are_bounded_by_request_timeout_when_headers_never_come() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/models"))
        .respond_with(ok_models().set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let script = TokenScript::counting();
    let mut info = command_provider(&format!("{}/v1", server.uri()), &script);
    info.request_timeout_ms = 500;
    let (client, _) = client(&info);
    let started = Instant::now();
    let err = client.list_models().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let host = server.address().to_string();
    assert_eq!(
        err.to_string(),
        format!(
            "provider `corp`: {host} did not answer completely within 500 ms (request_timeout_ms)"
        )
    );
}

#[tokio::test]
async fn a_model_list_over_4_mib_is_refused_unread() {
    let server = MockServer::start().await;
    let big = format!(r#"{{"data":[{{"id":"{}"}}]}}"#, "m".repeat(5 << 20));
    Mock::given(path("/v1/models"))
        .respond_with(ResponseTemplate::new(200).set_body_string(big))
        .mount(&server)
        .await;
    let (_script, client, _) = command_client(&server);
    let err = client.list_models().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("is larger than 4 MiB and was not read"),
        "{err}"
    );
}

#[tokio::test]
async fn a_403_starts_recovery_only_when_reauth_on_says_so() {
    let server = MockServer::start().await;
    let forbidden = || {
        ResponseTemplate::new(403)
            .set_body_json(serde_json::json!({"error": {"message": "token expired"}}))
    };
    Mock::given(path("/v1/models"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(forbidden())
        .mount(&server)
        .await;
    Mock::given(path("/v1/models"))
        .and(header("authorization", "Bearer tok-2"))
        .respond_with(ok_models())
        .mount(&server)
        .await;
    // Default: a 403 is returned as it is.
    let plain = TokenScript::counting();
    let (plain_client, _) = client(&command_provider(&format!("{}/v1", server.uri()), &plain));
    assert_eq!(
        plain_client.list_models().await.unwrap_err().status(),
        Some(403)
    );
    assert_eq!(plain.runs(), 1);
    // reauth_on = [401, 403]: the 403 is recovered like a 401, with one more run.
    let script = TokenScript::counting();
    let mut info = command_provider(&format!("{}/v1", server.uri()), &script);
    if let Some(auth) = info.auth.as_mut() {
        auth.reauth_on = vec![401, 403];
    }
    let (recovering, _) = client(&info);
    assert_eq!(recovering.list_models().await.unwrap().data.len(), 2);
    assert_eq!(script.runs(), 2);
    assert_eq!(recovering.stats().unauthorized, 1);
}

#[tokio::test]
async fn an_api_key_gateway_gets_the_bare_token_in_its_header() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/models"))
        .and(header("api-key", "tok-1"))
        .respond_with(ok_models())
        .expect(1)
        .mount(&server)
        .await;
    let script = TokenScript::counting();
    let mut info = command_provider(&format!("{}/v1", server.uri()), &script);
    if let Some(auth) = info.auth.as_mut() {
        auth.header = "api-key".to_owned();
        auth.scheme = String::new();
    }
    let (client, _) = client(&info);
    assert_eq!(client.list_models().await.unwrap().data.len(), 2);
    let received = server.received_requests().await.unwrap();
    assert!(!received[0].headers.contains_key("authorization"));
}

#[tokio::test]
async fn helper_headers_reach_the_gateway_rotate_with_the_token_and_are_scrubbed() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/models"))
        .and(header("authorization", "Bearer tok-1"))
        .and(header("x-tenant", "tenant-secret-1"))
        .respond_with(unauthorized())
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/models"))
        .and(header("authorization", "Bearer tok-2"))
        .and(header("x-tenant", "tenant-secret-2"))
        .respond_with(
            ResponseTemplate::new(400).set_body_string("tenant tenant-secret-2 is not allowed"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let script = TokenScript::new(
        "echo '{\"token\":\"tok-'$N'\",\"headers\":{\"X-Tenant\":\"tenant-secret-'$N'\"}}'",
    );
    let mut info = command_provider(&format!("{}/v1", server.uri()), &script);
    if let Some(auth) = info.auth.as_mut() {
        auth.format = provider_config::TokenFormat::Json;
    }
    let (client, _) = client(&info);
    let err = client.list_models().await.unwrap_err().to_string();
    assert_eq!(
        err,
        "provider `corp`: GET /v1/models: the gateway answered HTTP 400 Bad Request: tenant [REDACTED] is not allowed"
    );
    assert_eq!(script.runs(), 2);
}

/// Found in trial: a gateway that answers 403 for a revoked token left the user stuck, and
/// the error did not say that `auth.reauth_on` can make a 403 get a new token.
#[tokio::test]
async fn a_403_says_how_to_make_it_get_a_new_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(403).set_body_string("token revoked"))
        .mount(&server)
        .await;
    let script = TokenScript::counting();
    let (client, _) = client(&command_provider(&format!("{}/v1", server.uri()), &script));
    let err = client.list_models().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "provider `corp`: GET /v1/models: the gateway answered HTTP 403 Forbidden: token revoked; if this gateway answers 403 for an expired or revoked token, set `auth.reauth_on = [401, 403]` so that a 403 gets a new token and one retry"
    );
    assert_eq!(script.runs(), 1);
}

#[tokio::test]
async fn a_404_names_method_and_path_and_hints_at_v1() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_string("no route"))
        .mount(&server)
        .await;
    let script = TokenScript::counting();
    let cases = [
        (
            format!("{}/openai", server.uri()),
            "provider `corp`: GET /openai/models: the gateway answered HTTP 404 Not Found: no route; is /v1 missing from base_url? most OpenAI-compatible gateways serve the API under /v1",
        ),
        (
            format!("{}/v1/v1", server.uri()),
            "provider `corp`: GET /v1/v1/models: the gateway answered HTTP 404 Not Found: no route; the path has /v1 twice: remove one from the end of base_url",
        ),
        (
            format!("{}/api/v1", server.uri()),
            "provider `corp`: GET /api/v1/models: the gateway answered HTTP 404 Not Found: no route; check that base_url is the API root, the URL below which /models is served",
        ),
    ];
    for (base_url, expected) in cases {
        let mut info = command_provider(&base_url, &script);
        info.query_params
            .insert("api-key".to_owned(), "query-secret-value".to_owned());
        let (client, _) = client(&info);
        let err = client.list_models().await.unwrap_err();
        assert_eq!(err.status(), Some(404));
        assert_eq!(err.to_string(), expected);
    }
}
