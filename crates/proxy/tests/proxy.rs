//! The proxy in front of the dev gateway and wiremock on `127.0.0.1:0`, with real token
//! scripts, driven by plain HTTP and websocket clients and by `async-openai`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use dev_gateway::{DevGateway, Fault, GatewayConfig, Route};
use futures::{SinkExt as _, StreamExt as _};
use provider_auth::auth_manager_for_provider;
use provider_config::ModelProviderInfo;
use proxy::{Proxy, ProxyConfig, ProxyError, ProxyProvider, StatsHandle};
use test_support::TokenScript;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A token script printing the file `token` beside it (set with `write("token", ...)`).
fn printing_file() -> TokenScript {
    TokenScript::new("cat \"$D/token\"")
}

/// A running proxy; it stops when dropped.
struct Running {
    base: String,
    stats: StatsHandle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    fn url(&self, rest: &str) -> String {
        format!("{}{rest}", self.base)
    }

    /// `POST /dev/responses` with an empty JSON body; the answer, once its head is in.
    async fn post_responses(&self) -> reqwest::Response {
        http()
            .post(self.url("/dev/responses"))
            .body("{}")
            .send()
            .await
            .unwrap()
    }
}

async fn start(config: ProxyConfig) -> Running {
    let proxy = Proxy::bind(config).await.unwrap();
    let base = format!("http://{}", proxy.local_addr());
    let stats = proxy.stats_handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(proxy.serve(async {
        let _ = stopped.await;
    }));
    Running {
        base,
        stats,
        _stop: stop,
    }
}

fn provider(base_url: &str, script: &TokenScript) -> ProxyProvider {
    provider_with(info_for(base_url, script))
}

/// A provider at `base_url` whose token comes from `script`.
fn info_for(base_url: &str, script: &TokenScript) -> ModelProviderInfo {
    let mut info = ModelProviderInfo::new("Test", base_url);
    info.auth = Some(script.auth());
    info
}

fn provider_with(info: ModelProviderInfo) -> ProxyProvider {
    let auth = auth_manager_for_provider("dev", &info, None).unwrap();
    ProxyProvider::new("dev", info, auth)
}

fn on_loopback(providers: Vec<ProxyProvider>) -> ProxyConfig {
    ProxyConfig::new("127.0.0.1:0".parse().unwrap(), providers)
}

/// The dev gateway, a script printing its current token, and a proxy in front.
async fn dev_setup() -> (DevGateway, TokenScript, Running) {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let script = printing_file();
    script.write("token", &gw.mint_token().access_token);
    let running = start(on_loopback(vec![provider(&gw.base_url(), &script)])).await;
    (gw, script, running)
}

/// A wiremock gateway that answers every GET with an empty model list.
async fn answering_every_get() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": []})))
        .mount(&upstream)
        .await;
    upstream
}

/// A proxy in front of a wiremock gateway whose base URL is `/v1`.
async fn in_front_of(upstream: &MockServer, script: &TokenScript) -> Running {
    start(on_loopback(vec![provider(
        &format!("{}/v1", upstream.uri()),
        script,
    )]))
    .await
}

fn rotate(gw: &DevGateway, script: &TokenScript) {
    gw.rotate();
    script.write("token", &gw.mint_token().access_token);
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// `STATUS BODY`, for a snapshot of the answers the proxy makes itself.
async fn error_line(response: reqwest::Response) -> String {
    format!(
        "{} {}",
        response.status().as_u16(),
        response.text().await.unwrap()
    )
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "proxy_error", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, body["error"]["code"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_gateway_sees_the_minted_token_and_none_of_the_clients_credentials() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("authorization", "Bearer minted-abc"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": []})))
        .expect(1)
        .mount(&upstream)
        .await;
    let script = TokenScript::new("echo minted-abc");
    let running = in_front_of(&upstream, &script).await;
    let response = http()
        .get(running.url("/dev/models"))
        .header("authorization", "Bearer dummy-key")
        .header("api-key", "dummy-key")
        .header("x-api-key", "dummy-key")
        .header("connection", "x-hop")
        .header("x-hop", "must not pass")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("expect", "100-continue")
        .header("x-kept", "yes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = upstream.received_requests().await.unwrap();
    let headers = &received[0].headers;
    assert_eq!(headers.get_all("authorization").iter().count(), 1);
    for gone in [
        "api-key",
        "x-api-key",
        "x-hop",
        "proxy-authorization",
        "expect",
    ] {
        assert!(!headers.contains_key(gone), "{gone} was forwarded");
    }
    assert_eq!(headers.get("x-kept").unwrap(), "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_1000_concurrent_requests_succeed_with_one_run() {
    let (gw, script, running) = dev_setup().await;
    let client = http();
    assert_eq!(
        client
            .get(running.url("/dev/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(script.runs(), 1);
    rotate(&gw, &script);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (client, url) = (client.clone(), running.url("/dev/models"));
            tokio::spawn(async move {
                client
                    .get(url)
                    .bearer_auth("dummy")
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    assert_eq!(script.runs(), 2, "one run for the rotation");
    let stats = &running.stats.get()["dev"];
    assert_eq!(stats.requests, 1001);
    assert!(
        stats.replays >= 1 && stats.replays == stats.upstream_auth_failures,
        "{stats:?}"
    );
    assert_eq!(stats.command_runs, 2);
}

#[tokio::test]
async fn a_401_to_a_body_over_the_replay_limit_goes_back_to_the_client() {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let script = printing_file();
    script.write("token", &gw.mint_token().access_token);
    let running =
        start(on_loopback(vec![provider(&gw.base_url(), &script)]).with_max_replay_bytes(1024))
            .await;
    let client = http();
    let small = serde_json::json!({"model": "dev-small", "input": "hi", "stream": true});
    assert_eq!(
        post_responses(&client, &running, &small).await.status(),
        200
    );
    rotate(&gw, &script);
    let big = serde_json::json!({"model": "dev-small", "input": "x".repeat(4096), "stream": true});
    let response = post_responses(&client, &running, &big).await;
    assert_eq!(response.status(), 401, "streamed through, not replayed");
    assert_eq!(running.stats.get()["dev"].replays, 0);
    // The 401 was reported: the client's own retry finds the fresh token.
    let retry = post_responses(&client, &running, &big).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(script.runs(), 2);
}

#[tokio::test]
async fn a_small_body_is_replayed_once_after_a_rotation() {
    let (gw, script, running) = dev_setup().await;
    let client = http();
    let body = serde_json::json!({"model": "dev-small", "input": "hi", "stream": true});
    assert_eq!(post_responses(&client, &running, &body).await.status(), 200);
    rotate(&gw, &script);
    let text = post_responses(&client, &running, &body)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("response.completed"), "{text}");
    assert_eq!(running.stats.get()["dev"].replays, 1);
    assert_eq!(gw.counters().unauthorized(Route::Responses), 1);
}

/// A body sent without a length (chunked) arrives in parts; they are joined for the
/// replay, which the gateway receives whole, with its length.
#[tokio::test]
async fn a_chunked_body_in_parts_is_replayed_whole() {
    let (gw, script, running) = dev_setup().await;
    let client = http();
    let body = serde_json::json!({"model": "dev-small", "input": "y".repeat(3000), "stream": true})
        .to_string()
        .into_bytes();
    let send = || {
        let parts: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(700).map(|part| Ok(part.to_vec())).collect();
        client
            .post(running.url("/dev/responses"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(parts)))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    rotate(&gw, &script);
    let text = send().await.unwrap().text().await.unwrap();
    assert!(text.contains("response.completed"), "{text}");
    assert_eq!(running.stats.get()["dev"].replays, 1);
    assert_eq!(gw.counters().unauthorized(Route::Responses), 1);
}

#[tokio::test]
async fn too_many_requests_and_server_errors_pass_through_unretried() {
    let (gw, _script, running) = dev_setup().await;
    for (fault, status) in [
        (
            Fault::TooManyRequests {
                retry_after_secs: 1,
            },
            429,
        ),
        (Fault::ServerError, 500),
    ] {
        gw.set_fault(Route::Models, Some(fault));
        let before = gw.counters().requests(Route::Models);
        let response = http().get(running.url("/dev/models")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        if status == 429 {
            assert_eq!(response.headers().get("retry-after").unwrap(), "1");
        }
        assert_eq!(gw.counters().requests(Route::Models), before + 1, "retried");
    }
}

#[tokio::test]
async fn sse_bytes_reach_the_client_before_the_stream_ends() {
    let (gw, _script, running) = dev_setup().await;
    gw.set_fault(
        Route::Responses,
        Some(Fault::SlowStream {
            delay: Duration::from_millis(300),
        }),
    );
    let started = Instant::now();
    let response = http()
        .post(running.url("/dev/responses"))
        .json(&serde_json::json!({"model": "dev-small", "input": "say hello", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    let first = started.elapsed();
    while body.next().await.is_some() {}
    let total = started.elapsed();
    assert!(
        first + Duration::from_millis(600) < total,
        "first bytes at {first:?}, end at {total:?}: the stream was held back"
    );
}

#[tokio::test]
async fn a_websocket_handshake_401_after_a_rotation_is_recovered_once() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let (gw, script, running) = dev_setup().await;
    http().get(running.url("/dev/models")).send().await.unwrap();
    rotate(&gw, &script);
    let url = running
        .url("/dev/realtime?model=dev-small")
        .replace("http://", "ws://");
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer dummy".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let first = socket.next().await.unwrap().unwrap();
    assert!(
        first.to_text().unwrap().contains("session.created"),
        "{first:?}"
    );
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            r#"{"type":"response.create","response":{"instructions":"hi"}}"#,
        ))
        .await
        .unwrap();
    let mut saw_done = false;
    while let Some(Ok(message)) = socket.next().await {
        if message
            .to_text()
            .unwrap_or_default()
            .contains("response.done")
        {
            saw_done = true;
            break;
        }
    }
    assert!(saw_done);
    assert_eq!(gw.counters().unauthorized(Route::Realtime), 1);
    assert_eq!(script.runs(), 2);
    // The refused handshake is counted, though the retry recovered it (as an HTTP 401 is).
    assert_eq!(running.stats.get()["dev"].upstream_auth_failures, 1);
}

#[tokio::test]
async fn each_error_the_proxy_makes_has_its_code_and_status() {
    let silent = test_support::HostileServer::start();
    let ok = TokenScript::new("echo tok");
    let failing = TokenScript::new("echo 'no session' >&2\nexit 3");
    let mut slow = ModelProviderInfo::new("Slow", silent.base_url("silent"));
    slow.auth = Some(ok.auth());
    slow.stream_idle_timeout_ms = 300;
    let mut down = ModelProviderInfo::new("Down", "http://127.0.0.1:1/v1");
    down.auth = Some(ok.auth());
    let mut broken = ModelProviderInfo::new("Broken", "http://127.0.0.1:1/v1");
    broken.auth = Some(failing.auth());
    let make = |id: &str, info: ModelProviderInfo| {
        let auth = auth_manager_for_provider(id, &info, None).unwrap();
        ProxyProvider::new(id, info, auth)
    };
    let running = start(on_loopback(vec![
        make("slow", slow),
        make("down", down),
        make("broken", broken),
    ]))
    .await;
    let client = http();
    let get = |rest: &str| client.get(running.url(rest)).send();
    let mut answers = Vec::new();
    for rest in [
        "/nope/models",
        "/broken/models",
        "/down/models",
        "/slow/models",
    ] {
        answers.push(error_line(get(rest).await.unwrap()).await);
    }
    // A foreign `Host` (DNS rebinding), then a page on another site.
    for (name, value) in [("host", "evil.example"), ("origin", "https://evil.example")] {
        let refused = client
            .get(running.url("/down/models"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        answers.push(error_line(refused).await);
    }
    let addr = running.base.trim_start_matches("http://");
    let (status, body) = raw_get(addr, "/down/../admin").await;
    answers.push(format!("{status} {body}"));
    let trace = client
        .request(reqwest::Method::TRACE, running.url("/down/models"))
        .send()
        .await
        .unwrap();
    answers.push(error_line(trace).await);
    // A websocket upgrade without its key (RFC 6455 §4.2.1).
    let not_an_upgrade = client
        .get(running.url("/down/realtime"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .send()
        .await
        .unwrap();
    answers.push(error_line(not_an_upgrade).await);
    let answers = answers
        .join("\n")
        .replace(&failing.dir().display().to_string(), "DIR");
    insta::assert_snapshot!("proxy_error_answers", answers);
    let stats = running.stats.get();
    assert_eq!(stats["broken"].errors, 1);
    assert_eq!(
        stats["down"].errors, 4,
        "unreachable, the climbing path, TRACE, then the upgrade without a key"
    );
}

#[tokio::test]
async fn an_answer_whose_gateway_goes_silent_mid_body_is_cut_after_the_idle_limit() {
    let hostile = test_support::HostileServer::start();
    let script = TokenScript::new("echo tok");
    let mut info = info_for(&hostile.base_url("sse_hold"), &script);
    info.stream_idle_timeout_ms = 300;
    let running = start(on_loopback(vec![provider_with(info)])).await;
    let mut answer = running.post_responses().await;
    assert_eq!(answer.status(), 200);
    let first = answer.chunk().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("response.output_text.delta"),
        "{first:?}"
    );
    // The gateway holds the stream open and sends nothing more: the proxy cuts it, and
    // the client sees a broken answer, not a complete one.
    let rest = tokio::time::timeout(Duration::from_secs(10), answer.chunk())
        .await
        .expect("the silent stream was never cut");
    assert!(rest.is_err(), "{rest:?}");
    assert_eq!(running.stats.get()["dev"].errors, 1);
}

#[tokio::test]
async fn a_client_connection_without_a_complete_request_head_is_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let upstream = MockServer::start().await;
    // An answer slower than the idle timeout: waiting for it is not idleness.
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(800)))
        .mount(&upstream)
        .await;
    let script = TokenScript::new("echo tok");
    let config = on_loopback(vec![provider(&format!("{}/v1", upstream.uri()), &script)])
        .with_client_idle_timeout(Duration::from_millis(300));
    let running = start(config).await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    let closed_within = |mut stream: tokio::net::TcpStream| async move {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
            .await
            .expect("the connection was never closed")
            .map(|_| rest)
    };
    // Silent from the start.
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(closed_within(silent).await.unwrap_or_default().is_empty());
    // A head that never ends.
    let mut partial = tokio::net::TcpStream::connect(&addr).await.unwrap();
    partial
        .write_all(b"GET /dev/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        .await
        .unwrap();
    let _ = closed_within(partial).await;
    // One slow request answered in full, then the idle keep-alive connection is closed.
    let mut kept = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!("GET /dev/models HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    kept.write_all(head.as_bytes()).await.unwrap();
    let answered = String::from_utf8(closed_within(kept).await.unwrap()).unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert_eq!(upstream.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_sse_error_event_that_echoes_the_token_reaches_the_client_scrubbed() {
    let hostile = test_support::HostileServer::start();
    let script = TokenScript::new("echo sk-proxy-SECRET-0123456789");
    let running = start(on_loopback(vec![provider(
        &hostile.base_url("sse_error"),
        &script,
    )]))
    .await;
    let answer = running.post_responses().await;
    assert_eq!(answer.status(), 200);
    let stream = answer.text().await.unwrap();
    assert!(!stream.contains("SECRET-0123456789"), "{stream}");
    // Still an SSE error event a client can read, its message scrubbed.
    let data = stream
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap();
    assert!(stream.starts_with("event: error\n"), "{stream}");
    let event: serde_json::Value = serde_json::from_str(data).unwrap();
    // The token and the escape codes inside the JSON string are gone.
    assert_eq!(
        event["error"]["message"],
        "boom: your token [REDACTED] (json \"[REDACTED]\") is bad"
    );
    assert!(stream.ends_with("\n\n"), "{stream:?}");
}

#[tokio::test]
async fn a_websocket_frame_that_echoes_the_token_reaches_the_client_scrubbed() {
    use tokio_tungstenite::tungstenite::Message;
    let hostile = test_support::HostileServer::start();
    let script = TokenScript::new("echo sk-proxy-SECRET-0123456789");
    let open = |fault: &str| {
        let info = info_for(&hostile.base_url(fault), &script);
        let auth = auth_manager_for_provider(fault, &info, None).unwrap();
        ProxyProvider::new(fault, info, auth)
    };
    let running = start(on_loopback(vec![open("ws_not_json"), open("ws_close")])).await;
    let ws_url = |id: &str| {
        running
            .url(&format!("/{id}/realtime?model=m"))
            .replace("http://", "ws://")
    };
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url("ws_not_json"))
        .await
        .unwrap();
    match socket.next().await.unwrap().unwrap() {
        Message::Text(text) => assert_eq!(text.as_str(), "not json [REDACTED]"),
        other => panic!("{other:?}"),
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url("ws_close"))
        .await
        .unwrap();
    match socket.next().await.unwrap().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(frame.reason.as_str(), "[REDACTED]"),
        other => panic!("{other:?}"),
    }
}

/// Found in trial: only the headers of 3xx/4xx/5xx answers were scrubbed, so a 2xx
/// `x-echo-auth: Bearer ...` handed the credential to a client that holds only the proxy's
/// key. Headers are scrubbed at every status; SSE events and websocket frames, read whole,
/// are scrubbed when they hold a copy of the token, even when they report no error.
#[tokio::test]
async fn a_success_that_echoes_the_token_reaches_the_client_scrubbed() {
    use tokio_tungstenite::tungstenite::Message;
    const SECRET: &str = "SECRET-0123456789";
    let hostile = test_support::HostileServer::start();
    let script = TokenScript::new("echo sk-proxy-SECRET-0123456789");
    let running = start(on_loopback(vec![provider(
        &hostile.base_url("echo200"),
        &script,
    )]))
    .await;
    let client = reqwest::Client::new();
    let models = client.get(running.url("/dev/models")).send().await.unwrap();
    assert_eq!(models.status(), 200);
    assert_eq!(
        models.headers().get("x-echo-auth").unwrap(),
        "Bearer [REDACTED]"
    );
    assert!(models.text().await.unwrap().contains("\"data\""));

    let stream = running.post_responses().await;
    assert_eq!(stream.status(), 200);
    assert!(
        !stream.headers()["x-echo-auth"]
            .to_str()
            .unwrap()
            .contains(SECRET)
    );
    let stream = stream.text().await.unwrap();
    assert!(!stream.contains(SECRET), "{stream}");
    let data = stream
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap();
    // Still the delta a client can read, as JSON.
    let event: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["delta"], "your key is [REDACTED]");

    let url = running
        .url("/dev/realtime?model=m")
        .replace("http://", "ws://");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    match socket.next().await.unwrap().unwrap() {
        Message::Text(text) => {
            let event: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            assert_eq!(event["type"], "session.created");
            assert_eq!(event["session"]["authorization"], "Bearer [REDACTED]");
        }
        other => panic!("{other:?}"),
    }
}

/// What a client saw of one answer: its status, then how its body went.
async fn outcome(answer: reqwest::Response, read_limit: Duration) -> (String, Vec<u8>) {
    let status = answer.status().as_u16();
    let mut answer = answer;
    let mut body = Vec::new();
    let deadline = tokio::time::Instant::now() + read_limit;
    let how = loop {
        if body.len() > 2 << 20 {
            break "over 2 MiB, still streaming";
        }
        match tokio::time::timeout_at(deadline, answer.chunk()).await {
            Err(_) => break "still streaming at the read limit",
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            Ok(Ok(None)) => break "complete",
            Ok(Err(_)) => break "cut",
        }
    };
    (format!("{status} {how}"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_gateway_through_the_proxy_is_bounded_and_never_echoes_the_token() {
    const TOKEN: &str = "sk-hostile-SECRET-0123456789";
    let hostile = test_support::HostileServer::start();
    let script = TokenScript::new(&format!("echo {TOKEN}"));
    let faults = [
        "ok",
        "silent",
        "drip200",
        "drip401",
        "huge",
        "huge401",
        "reset",
        "echo400",
        "echo401",
        "sse_garbage",
        "sse_not_utf8",
        "sse_error",
        "sse_bom_cr",
        "sse_endless",
        "sse_hold",
        "sse_truncated",
    ];
    let providers = faults
        .iter()
        .map(|fault| {
            let mut info = info_for(&hostile.base_url(fault), &script);
            info.request_timeout_ms = 1000;
            info.stream_idle_timeout_ms = 1500;
            let auth = auth_manager_for_provider(fault, &info, None).unwrap();
            ProxyProvider::new(*fault, info, auth)
        })
        .collect();
    let running = start(on_loopback(providers)).await;
    let client = http();
    let cases = faults.iter().map(|fault| {
        let request = client
            .post(running.url(&format!("/{fault}/responses")))
            .body("{}")
            .send();
        async move {
            let bounded = tokio::time::timeout(Duration::from_secs(15), async {
                outcome(request.await.unwrap(), Duration::from_secs(4)).await
            });
            let (seen, body) = bounded.await.expect("the case never ended");
            let text = String::from_utf8_lossy(&body);
            assert!(!text.contains("SECRET-0123456789"), "{fault}: {text}");
            if *fault == "huge401" {
                assert!(body.len() <= 64 * 1024, "{}", body.len());
            }
            format!("{fault:<14} {seen}")
        }
    });
    let table = futures::future::join_all(cases).await.join("\n");
    insta::assert_snapshot!("proxy_hostile_gateways", table);
    // The proxy is still there for the next client.
    let health = client.get(running.url("/_modelauth/health")).send().await;
    assert_eq!(health.unwrap().status(), 200);
}

/// One request written by hand (a client library would normalise the path first); the
/// status and the body of the answer.
async fn raw_get(addr: &str, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test]
async fn a_path_that_climbs_out_of_the_base_path_is_refused_and_never_sent() {
    let upstream = answering_every_get().await;
    let script = TokenScript::new("echo minted-abc");
    let running = in_front_of(&upstream, &script).await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    for climbing in [
        "/dev/../../admin",
        "/dev/%2e%2e/%2E%2E/admin",
        "/dev/x/..%2f..%2fadmin",
        "/dev/..\\admin",
        "/dev/./models",
        // Hardening round 3: path parameters, double encoding, control bytes, overlong
        // UTF-8 and fullwidth dots (raw and encoded).
        "/dev/x/..;/admin",
        "/dev/%252e%252e/admin",
        "/dev/x/..%00/admin",
        "/dev/x/..%09/admin",
        "/dev/x/%c0%ae%c0%ae/admin",
        "/dev/x/\u{ff0e}\u{ff0e}/admin",
        "/dev/x/%ef%bc%8e%ef%bc%8e/admin",
    ] {
        let (status, body) = raw_get(&addr, climbing).await;
        assert_eq!(status, 400, "{climbing}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_path", "{climbing}");
    }
    for plain in ["/dev/models/gpt-4.1", "/dev/files/a..b"] {
        assert_eq!(raw_get(&addr, plain).await.0, 200, "{plain}");
    }
    let paths: Vec<String> = upstream
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(paths, ["/v1/models/gpt-4.1", "/v1/files/a..b"]);
    assert_eq!(running.stats.get()["dev"].errors, 12);
}

/// The request head is bounded by the per-connection buffer (16 KiB, which also bounds the
/// proxy's memory under many uploads): a 12 KiB header (a large JWT, cookies) goes through,
/// a 20 KiB head gets 431 and never reaches the gateway.
#[tokio::test]
async fn a_request_head_over_16_kib_gets_431_and_is_never_sent() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let upstream = answering_every_get().await;
    let script = TokenScript::new("echo minted-abc");
    let running = in_front_of(&upstream, &script).await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    let send = |header_bytes: usize| {
        let addr = addr.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let request = format!(
                "GET /dev/models HTTP/1.1\r\nHost: {addr}\r\nX-Large: {}\r\nConnection: close\r\n\r\n",
                "a".repeat(header_bytes)
            );
            // A refused head may close the connection before all of it is written.
            let _ = stream.write_all(request.as_bytes()).await;
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let fits = send(12 * 1024).await;
    assert!(fits.starts_with("HTTP/1.1 200"), "{fits}");
    let too_large = send(20 * 1024).await;
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large}");
    assert_eq!(upstream.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_web_page_on_another_site_can_neither_call_the_proxy_nor_open_its_websocket() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let (gw, script, running) = dev_setup().await;
    let client = http();
    let get_with = |name: &'static str, value: &'static str| {
        client
            .get(running.url("/dev/models"))
            .header(name, value)
            .send()
    };
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let refused = get_with(name, value).await.unwrap();
        assert_eq!(
            error_code(refused).await,
            (403, "forbidden_origin".into()),
            "{name}: {value}"
        );
    }
    let url = running
        .url("/dev/realtime?model=dev-small")
        .replace("http://", "ws://");
    let mut hijack = url.as_str().into_client_request().unwrap();
    hijack
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(hijack).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            assert_eq!(answer.status(), 403);
        }
        other => panic!("the handshake was not refused: {other:?}"),
    }
    assert_eq!(gw.counters().requests(Route::Models), 0);
    assert_eq!(gw.counters().requests(Route::Realtime), 0);
    assert_eq!(script.runs(), 0, "no token is minted for a refused request");
    // Pages on this machine, applications' own schemes and plain clients are served.
    for (name, value) in [
        ("origin", "http://localhost:3000"),
        ("origin", "vscode-webview://1a2b3c"),
        ("sec-fetch-site", "none"),
    ] {
        assert_eq!(
            get_with(name, value).await.unwrap().status(),
            200,
            "{value}"
        );
    }
    let mut local = url.as_str().into_client_request().unwrap();
    local
        .headers_mut()
        .insert("origin", "http://127.0.0.1:5173".parse().unwrap());
    tokio_tungstenite::connect_async(local).await.unwrap();
    assert_eq!(gw.counters().requests(Route::Models), 3);
}

#[tokio::test]
async fn a_client_key_is_required_from_every_request_when_set() {
    let (gw, script, _) = dev_setup().await;
    let running = start(
        on_loopback(vec![provider(&gw.base_url(), &script)]).with_client_key("s3cret-client-key"),
    )
    .await;
    let client = http();
    let url = running.url("/dev/models");
    insta::assert_snapshot!(
        "proxy_client_key_required",
        error_line(client.get(&url).send().await.unwrap()).await
    );
    let wrong = client
        .get(&url)
        .bearer_auth("s3cret-client-kez")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(wrong).await, (401, "client_key_required".into()));
    let health = client
        .get(running.url("/_modelauth/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 401, "health is behind the key too");
    for (name, value) in [
        ("authorization", "Bearer s3cret-client-key"),
        ("api-key", "s3cret-client-key"),
        ("x-api-key", "s3cret-client-key"),
    ] {
        let response = client
            .get(&url)
            .header(name, value)
            .header("host", "anything.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
    }
}

#[tokio::test]
async fn a_non_loopback_address_needs_a_client_key() {
    let script = TokenScript::new("echo tok");
    let p = provider("http://127.0.0.1:1/v1", &script);
    let open = ProxyConfig::new("0.0.0.0:0".parse().unwrap(), vec![p.clone()]);
    let err = Proxy::bind(open).await.unwrap_err();
    assert!(matches!(err, ProxyError::NotLoopback { .. }), "{err}");
    let keyed = ProxyConfig::new("0.0.0.0:0".parse().unwrap(), vec![p]).with_client_key("k3y");
    assert!(Proxy::bind(keyed).await.is_ok());
}

/// `POST /dev/responses` with `body` through the proxy.
async fn post_responses(
    client: &reqwest::Client,
    running: &Running,
    body: &serde_json::Value,
) -> reqwest::Response {
    client
        .post(running.url("/dev/responses"))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn health_and_stats() {
    let (_gw, script, running) = dev_setup().await;
    let client = http();
    let health = get_json(&client, &running.url("/_modelauth/health")).await;
    assert_eq!(health, serde_json::json!({"status": "ok"}));
    client.get(running.url("/dev/models")).send().await.unwrap();
    let stats = get_json(&client, &running.url("/_modelauth/stats")).await;
    assert_eq!(
        stats,
        serde_json::json!({"providers": {"dev": {"requests": 1, "replays": 0, "upstream_auth_failures": 0, "command_runs": 1, "errors": 0}}, "refused": 0, "replay_buffered_bytes": 0, "connections": {"open": 1, "max": stats["connections"]["max"]}})
    );
    assert_eq!(script.runs(), 1);
    // Read-only: anything but GET and HEAD is refused, and reaches no provider.
    for path in ["/_modelauth/health", "/_modelauth/stats"] {
        let head = client.head(running.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "{path}");
        let post = client.post(running.url(path)).send().await.unwrap();
        assert_eq!(post.status(), 405, "{path}");
        assert_eq!(post.headers()["allow"], "GET,HEAD", "{path}");
    }
    // A foreign Host is refused before health or stats answer.
    let foreign = client
        .get(running.url("/_modelauth/stats"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(foreign).await, (403, "forbidden_host".into()));
    assert_eq!(running.stats.get()["dev"].requests, 1);
    // Refusals are counted (never with what was refused).
    let stats = get_json(&client, &running.url("/_modelauth/stats")).await;
    assert_eq!(stats["refused"], 1);
}

#[tokio::test]
async fn redirects_go_back_to_the_client_and_what_echoes_the_token_is_scrubbed() {
    let upstream = MockServer::start().await;
    Mock::given(path("/v1/moved"))
        .respond_with(
            ResponseTemplate::new(307).insert_header("location", "http://elsewhere.example/x"),
        )
        .mount(&upstream)
        .await;
    // A redirect that would carry the token on, in its URL.
    Mock::given(path("/v1/moved-with-token"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", "http://elsewhere.example/x?t=minted-xyz-123456"),
        )
        .mount(&upstream)
        .await;
    Mock::given(path("/v1/echo"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header(
                    "www-authenticate",
                    "Bearer error=\"invalid_token\", token=\"minted-xyz-123456\"",
                )
                .set_body_string(
                    "{\"error\":{\"message\":\"bad token minted-xyz-123456 \\u001b[31m\"}}",
                ),
        )
        .mount(&upstream)
        .await;
    // Over the size scrubbed inline: the token at the start, the middle and the end.
    let filler = "x".repeat(20 * 1024);
    Mock::given(path("/v1/echo-large"))
        .respond_with(ResponseTemplate::new(400).set_body_string(format!(
            "minted-xyz-123456 {filler} minted-xyz-123456 {filler} minted-xyz-123456"
        )))
        .mount(&upstream)
        .await;
    let script = TokenScript::new("echo minted-xyz-123456");
    let running = in_front_of(&upstream, &script).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let moved = client.get(running.url("/dev/moved")).send().await.unwrap();
    assert_eq!(moved.status(), 307);
    assert_eq!(
        moved.headers().get("location").unwrap(),
        "http://elsewhere.example/x"
    );
    let moved = client
        .get(running.url("/dev/moved-with-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 302);
    assert_eq!(
        moved.headers().get("location").unwrap(),
        "http://elsewhere.example/x?t=[REDACTED]"
    );
    let echo = client.get(running.url("/dev/echo")).send().await.unwrap();
    assert_eq!(echo.status(), 401);
    assert_eq!(
        echo.headers().get("www-authenticate").unwrap(),
        "Bearer error=\"invalid_token\", token=\"[REDACTED]\""
    );
    let echo = echo.text().await.unwrap();
    assert!(!echo.contains("minted-xyz"), "{echo}");
    // Still JSON, the escape code inside its string gone too.
    let parsed: serde_json::Value = serde_json::from_str(&echo).unwrap();
    assert_eq!(parsed["error"]["message"], "bad token [REDACTED] ");
    let large = client
        .get(running.url("/dev/echo-large"))
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 400);
    let large = large.text().await.unwrap();
    assert!(!large.contains("minted-xyz"), "{}", &large[..200]);
    assert_eq!(large.matches("[REDACTED]").count(), 3);
    assert!(large.len() > 40 * 1024, "{}", large.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_openai_lists_models_and_streams_a_chat_through_the_proxy() {
    use async_openai::Client;
    use async_openai::config::OpenAIConfig;
    use async_openai::types::chat::{
        ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
    };
    let (gw, script, running) = dev_setup().await;
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(running.url("/dev"))
            .with_api_key("dummy-key-the-proxy-replaces"),
    );
    let models = client.models().list().await.unwrap();
    let ids: Vec<&str> = models.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["dev-small", "dev-large"]);
    rotate(&gw, &script);
    let request = CreateChatCompletionRequestArgs::default()
        .model("dev-small")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("say hello")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap();
    let mut stream = client.chat().create_stream(request).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        for choice in chunk.unwrap().choices {
            text.push_str(choice.delta.content.as_deref().unwrap_or_default());
        }
    }
    assert!(!text.is_empty());
    assert_eq!(script.runs(), 2, "the rotation cost one run");
}

#[tokio::test]
async fn an_api_key_gateway_gets_the_providers_key_never_the_clients() {
    let upstream = MockServer::start().await;
    Mock::given(path("/v1/models"))
        .and(header("api-key", "minted-key-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": []})))
        .expect(1)
        .mount(&upstream)
        .await;
    let script = TokenScript::new("echo minted-key-1");
    let mut info = ModelProviderInfo::new("Azure", format!("{}/v1", upstream.uri()));
    let mut auth = script.auth();
    auth.header = "api-key".to_owned();
    auth.scheme = String::new();
    info.auth = Some(auth);
    let running = start(on_loopback(vec![provider_with(info)])).await;
    let response = http()
        .get(running.url("/dev/models"))
        .header("api-key", "client-dummy")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = upstream.received_requests().await.unwrap();
    assert_eq!(received[0].headers.get_all("api-key").iter().count(), 1);
    assert!(!received[0].headers.contains_key("authorization"));
}

#[tokio::test]
async fn the_clients_query_and_the_providers_query_params_both_reach_the_gateway() {
    let upstream = answering_every_get().await;
    let script = TokenScript::new("echo minted-abc");
    // A trailing slash on the base URL, as people write it.
    let mut info = ModelProviderInfo::new("Azure", format!("{}/openai/", upstream.uri()));
    info.auth = Some(script.auth());
    info.query_params = [("api-version".to_owned(), "2025-04-01".to_owned())].into();
    let running = start(on_loopback(vec![provider_with(info)])).await;
    for rest in [
        "/dev/deployments/gpt-4.1/chat/completions?limit=2&after=m%201",
        "/dev/models",
        "/dev/models?",
    ] {
        let status = http().get(running.url(rest)).send().await.unwrap().status();
        assert_eq!(status, 200, "{rest}");
    }
    let seen: Vec<String> = upstream
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{}?{}", r.url.path(), r.url.query().unwrap_or_default()))
        .collect();
    assert_eq!(
        seen,
        [
            "/openai/deployments/gpt-4.1/chat/completions?limit=2&after=m%201&api-version=2025-04-01",
            "/openai/models?api-version=2025-04-01",
            "/openai/models?api-version=2025-04-01",
        ]
    );
}

#[tokio::test]
async fn an_https_gateway_that_does_not_speak_tls_is_unreachable_and_says_where() {
    // The dev gateway speaks plain HTTP: addressed as https, the TLS handshake fails.
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let script = TokenScript::new("echo minted-abc");
    let https = gw.base_url().replacen("http://", "https://", 1);
    let running = start(on_loopback(vec![provider(&https, &script)])).await;
    let response = http().get(running.url("/dev/models")).send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_unreachable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("provider `dev`: cannot reach {}: ", gw.addr())),
        "{message}"
    );
    assert!(!message.contains("minted-abc"), "{message}");
    assert_eq!(gw.counters().requests(Route::Models), 0);
}

/// Found in trial (hardening round 3): `CONNECT` and `TRACE` were forwarded with the
/// credential (a gateway answering `TRACE` echoes it), and response headers the gateway
/// names in its own `Connection` header came back to the client.
#[tokio::test]
async fn connect_and_trace_are_refused_and_connection_named_response_headers_dropped() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("connection", "x-hop-secret")
                .insert_header("x-hop-secret", "hop-value")
                .insert_header("x-kept", "kept"),
        )
        .mount(&upstream)
        .await;
    let script = TokenScript::new("echo minted-abc");
    let running = in_front_of(&upstream, &script).await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    for method_name in ["TRACE", "CONNECT"] {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let request = format!(
            "{method_name} /dev/models HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 405"),
            "{method_name}: {answer}"
        );
        assert!(answer.contains("method_not_allowed"), "{answer}");
        assert!(!answer.contains("minted-abc"), "{answer}");
    }
    assert!(upstream.received_requests().await.unwrap().is_empty());
    assert_eq!(script.runs(), 0, "a refused method mints no token");
    let answer = http().get(running.url("/dev/models")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-kept"], "kept");
    assert!(answer.headers().get("x-hop-secret").is_none());
}

/// Found in trial (hardening round 3): a stalled request body was never timed out, and
/// replay buffers had no total (200 slow 8 MiB uploads took 1.75 GB). A body that stalls
/// while buffered gets 408; past the process-wide budget bodies stream through without
/// replay, and the budget is given back when requests end.
#[tokio::test]
async fn a_stalled_body_gets_408_and_replay_buffers_have_a_total() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let script = printing_file();
    script.write("token", &gw.mint_token().access_token);
    let running = start(
        on_loopback(vec![provider(&gw.base_url(), &script)])
            .with_body_idle_timeout(Duration::from_millis(300))
            .with_replay_budget_bytes(6000),
    )
    .await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    // 10 of 1,000 bytes, then silence.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /dev/responses HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":"
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stalled.read_to_string(&mut answer))
        .await
        .expect("a stalled body was never answered")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(script.runs(), 0, "a stalled body mints no token");
    // A token in the cache, for the rotation below to make stale.
    assert_eq!(
        http()
            .get(running.url("/dev/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // One upload holds most of the budget while it is slow: a second body, which the budget
    // cannot hold too, streams through, so its 401 after a rotation goes back unreplayed.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = format!(
        "{{\"model\":\"dev-small\",\"stream\":true,\"input\":\"{}\"}}",
        "y".repeat(5000)
    );
    let (first, last) = body.split_at(body.len() - 2);
    let head = format!(
        "POST /dev/responses HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{first}",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let client = http();
    // Wait until the proxy holds it (stats say how many bytes are buffered).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get_json(&client, &running.url("/_modelauth/stats")).await["replay_buffered_bytes"]
        .as_u64()
        .unwrap_or(0)
        < 4000
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow body was never buffered"
        );
        tokio::task::yield_now().await;
    }
    rotate(&gw, &script);
    let big = serde_json::json!({"model": "dev-small", "input": "x".repeat(3000), "stream": true});
    let over_budget = post_responses(&client, &running, &big).await;
    assert_eq!(over_budget.status(), 401, "streamed through, not replayed");
    // The slow upload ends, and is answered (with the token refreshed meanwhile).
    slow.write_all(last.as_bytes()).await.unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(running.stats.get()["dev"].replays, 0);
    // Its budget was given back: after another rotation the same body is buffered again,
    // so its 401 is replayed with a fresh token.
    assert_eq!(
        get_json(&client, &running.url("/_modelauth/stats")).await["replay_buffered_bytes"],
        0
    );
    rotate(&gw, &script);
    let again = post_responses(&client, &running, &big).await;
    assert_eq!(again.status(), 200);
    assert_eq!(running.stats.get()["dev"].replays, 1);
}

/// Found in trial: the client key is checked only after a full head, so connections that
/// never send one (or send only refused requests) held their places until the idle
/// timeout. A connection must pass the access check within the first-request deadline;
/// one that has is not bound by it.
#[tokio::test]
async fn a_connection_without_an_accepted_request_is_closed_at_the_deadline() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (gw, script, _running) = dev_setup().await;
    let deadline = Duration::from_millis(300);
    let running = start(
        on_loopback(vec![provider(&gw.base_url(), &script)])
            .with_client_key("k3y-for-the-deadline")
            .with_first_request_deadline(deadline),
    )
    .await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    /// Reads until the peer closes (`true`) or `limit` passes (`false`).
    async fn closed_within(tcp: &mut tokio::net::TcpStream, limit: Duration) -> bool {
        let mut buf = vec![0u8; 4096];
        let read_to_end = async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(limit, read_to_end).await.is_ok()
    }
    /// Sends a health request (with `key`, if any) and reads its answer's status line.
    async fn health(tcp: &mut tokio::net::TcpStream, key: Option<&str>) -> String {
        let auth = key
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        tcp.write_all(
            format!("GET /_modelauth/health HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tcp.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut refused = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut keyed = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert_eq!(
        health(&mut refused, None).await,
        "HTTP/1.1 401 Unauthorized"
    );
    assert_eq!(
        health(&mut keyed, Some("k3y-for-the-deadline")).await,
        "HTTP/1.1 200 OK"
    );
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(closed_within(&mut refused, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= deadline, "{:?}", started.elapsed());
    // Past the deadline, the connection that had a request accepted is still served.
    assert!(!closed_within(&mut keyed, deadline * 2).await);
    assert_eq!(
        health(&mut keyed, Some("k3y-for-the-deadline")).await,
        "HTTP/1.1 200 OK"
    );
}

/// Found in trial: a body over the replay limit got a 504 once `stream_idle_timeout_ms` had
/// passed in total, while its bytes still flowed. The bound is on silence: an upload that
/// takes three times the bound, a part every fifth of it, is answered.
#[tokio::test]
async fn a_streamed_upload_longer_than_the_idle_bound_is_answered_while_it_flows() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/upload"))
        .respond_with(ResponseTemplate::new(200).set_body_string("received"))
        .mount(&upstream)
        .await;
    let script = TokenScript::new("echo tok-upload");
    let mut info = info_for(&format!("{}/v1", upstream.uri()), &script);
    info.stream_idle_timeout_ms = 300;
    let running = start(on_loopback(vec![provider_with(info)]).with_max_replay_bytes(16)).await;
    let parts = futures::stream::unfold(0u32, |sent| async move {
        if sent == 15 {
            return None;
        }
        // The upload's pace is what is tested: a part every 60 ms, 900 ms in all.
        tokio::time::sleep(Duration::from_millis(60)).await;
        Some((Ok::<_, std::io::Error>(vec![b'x'; 64]), sent + 1))
    });
    let started = std::time::Instant::now();
    let answer = http()
        .post(running.url("/dev/upload"))
        .body(reqwest::Body::wrap_stream(parts))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "received");
    let received = upstream.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body.len(), 15 * 64);
}

/// Found in trial: a 502 `token_unavailable` carried the last 2 KiB of the command's stderr
/// (a `set -x` trace, curl's verbose lines) to a client that may hold only the proxy's key.
/// It carries at most the last 160 characters, where the script's own message is.
#[tokio::test]
async fn token_unavailable_carries_only_the_end_of_the_commands_stderr() {
    let script = TokenScript::new(
        "i=0\nwhile [ $i -lt 40 ]; do echo \"+ trace line $i of the helper\" >&2; i=$((i+1)); done\necho 'error: the session expired, run corp-login' >&2\nexit 3",
    );
    let running = start(on_loopback(vec![provider(
        "http://127.0.0.1:9/v1",
        &script,
    )]))
    .await;
    let answer = http().get(running.url("/dev/models")).send().await.unwrap();
    assert_eq!(answer.status(), 502);
    let body: serde_json::Value = answer.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.ends_with("error: the session expired, run corp-login"),
        "{message}"
    );
    assert!(!message.contains("trace line 1 "), "{message}");
    let stderr = message.split("stderr: ").nth(1).unwrap();
    assert!(
        stderr.starts_with("...") && stderr.chars().count() <= 163,
        "{stderr}"
    );
}

/// SPEC §8's local trust model: without a client key, the proxy serves only the processes
/// of the user who started it (and root's). A process of another user, here `curl` run as
/// `nobody`, gets 403 `forbidden_user` before any provider is reached. This needs root to
/// start a process as another user; without it, only the lookup is shown to work (the
/// unit test in `access.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_local_users_process_is_refused_without_a_client_key() {
    use std::os::unix::process::CommandExt as _;
    if !nix::unistd::geteuid().is_root() {
        // `.ci/run` runs as root (it installs packages), so CI always runs the whole test.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root"
        );
        eprintln!("not root: another user's process cannot be started here");
        return;
    }
    let upstream = answering_every_get().await;
    let script = TokenScript::new("echo tok-local-user");
    let open = start(on_loopback(vec![provider(
        &format!("{}/v1", upstream.uri()),
        &script,
    )]))
    .await;
    let keyed = start(
        on_loopback(vec![provider(&format!("{}/v1", upstream.uri()), &script)])
            .with_client_key("k3y-of-the-owner"),
    )
    .await;
    let as_nobody = |url: String, key: Option<&'static str>| {
        tokio::task::spawn_blocking(move || {
            let mut curl = std::process::Command::new("curl");
            curl.args(["-sS", "-o", "-", "-w", "\n%{http_code}", &url]);
            if let Some(key) = key {
                curl.args(["-H", &format!("Authorization: Bearer {key}")]);
            }
            let out = curl.uid(65534).gid(65534).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let refused = as_nobody(open.url("/dev/models"), None).await.unwrap();
    assert!(refused.ends_with("\n403"), "{refused}");
    assert!(refused.contains("\"forbidden_user\""), "{refused}");
    assert!(upstream.received_requests().await.unwrap().is_empty());
    // This user's own process is served.
    assert_eq!(
        http()
            .get(open.url("/dev/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // With a client key, the key decides, whoever the process belongs to.
    let served = as_nobody(keyed.url("/dev/models"), Some("k3y-of-the-owner"))
        .await
        .unwrap();
    assert!(served.ends_with("\n200"), "{served}");
}

/// Stopping lets a request in flight go on for the shutdown grace, and no longer: with a
/// grace of 300 ms (the default is 10 s), the proxy stops while the gateway still holds
/// the answer back (for an hour).
#[tokio::test]
async fn stopping_waits_for_requests_in_flight_only_for_the_shutdown_grace() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3600)))
        .mount(&upstream)
        .await;
    let script = TokenScript::new("echo tok-grace");
    let proxy = Proxy::bind(
        on_loopback(vec![provider(&format!("{}/v1", upstream.uri()), &script)])
            .with_shutdown_grace(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let url = format!("http://{}/dev/models", proxy.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(proxy.serve(async {
        let _ = stopped.await;
    }));
    let request = tokio::spawn(async move { http().get(url).send().await });
    // Until the gateway has the request (the proxy is forwarding it).
    while upstream
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty()
    {
        tokio::task::yield_now().await;
    }
    let stopping = std::time::Instant::now();
    stop.send(()).unwrap();
    serving.await.unwrap();
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "stopped after {took:?}"
    );
    request.abort();
}

/// The answers of scoped client keys: 401 for a key that is not one of them (or has
/// expired), 403 `key_out_of_scope` for one outside its providers or paths; the upstream
/// sees neither.
#[tokio::test]
async fn scoped_key_refusals_have_their_codes_and_messages() {
    let upstream = answering_every_get().await;
    let script = TokenScript::new("echo tok-scoped");
    let keys = proxy::ClientKeys::parse(
        "[keys.reader]\nkey = \"k-reader\"\npaths = [\"/models\"]\n\n[keys.gone]\nkey = \"k-gone\"\nexpires = \"2020-01-01T00:00:00Z\"\n",
    )
    .unwrap();
    let running = start(
        on_loopback(vec![provider(&format!("{}/v1", upstream.uri()), &script)])
            .with_client_keys(keys),
    )
    .await;
    let client = http();
    let get = |rest: &str, key: &str| client.get(running.url(rest)).bearer_auth(key).send();
    assert_eq!(get("/dev/models", "k-reader").await.unwrap().status(), 200);
    let answers = [
        error_line(get("/dev/files", "k-reader").await.unwrap()).await,
        error_line(get("/dev/models", "k-gone").await.unwrap()).await,
        error_line(get("/dev/models", "k-nope").await.unwrap()).await,
    ]
    .join("\n");
    insta::assert_snapshot!("proxy_scoped_key_answers", answers);
    assert_eq!(upstream.received_requests().await.unwrap().len(), 1);
}
