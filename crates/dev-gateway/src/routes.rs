//! HTTP and websocket handlers.
// Handlers return a ready `Response` as their error, the usual axum shape.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::state::{Fault, Refusal, Route, Shared};

type AppState = Arc<Shared>;

pub(crate) fn router(shared: AppState) -> Router {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/v1/models", get(models))
        .route("/v1/responses", post(responses).get(responses_socket))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/messages", post(messages))
        .route("/v1/realtime", get(realtime))
        .route("/admin/rotate", post(rotate))
        .route("/admin/counters", get(counters))
        .route("/admin/fault", post(set_fault))
        .with_state(shared)
}

fn error(status: StatusCode, message: &str, code: &str) -> Response {
    let body =
        json!({"error": {"message": message, "type": "invalid_request_error", "code": code}});
    (status, axum::Json(body)).into_response()
}

fn unauthorized(refusal: &Refusal) -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        refusal.message(),
        "invalid_api_key",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"dev-gateway\""),
    );
    response
}

/// Counts the request, applies faults and checks the token. `Ok` carries a streaming fault
/// (slow stream, close) for the handler to apply.
fn admit(shared: &Shared, route: Route, headers: &HeaderMap) -> Result<Option<Fault>, Response> {
    let fault = shared.take_fault(route);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if fault == Some(Fault::Unauthorized) {
        let _ = shared.check(route, None);
        return Err(unauthorized(&Refusal::Unknown));
    }
    shared
        .check(route, authorization)
        .map_err(|r| unauthorized(&r))?;
    match fault {
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "slow down",
                "rate_limit_exceeded",
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Err(response)
        }
        Some(Fault::ServerError) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the dev gateway was told to fail",
            "server_error",
        )),
        other => Ok(other),
    }
}

async fn token(State(shared): State<AppState>) -> Response {
    let minted = shared.mint();
    axum::Json(json!({
        "access_token": minted.access_token,
        "token_type": "Bearer",
        "expires_in": minted.expires_in,
    }))
    .into_response()
}

async fn rotate(State(shared): State<AppState>) -> Response {
    shared.rotate();
    axum::Json(json!({"rotated": true})).into_response()
}

/// `POST /admin/fault`: `{"route": "models", "fault": "unauthorized", "times": 2}`; faults:
/// `unauthorized`, `too_many_requests` (`retry_after_secs`), `server_error`, `slow_stream`
/// (`delay_ms`), `close_after_greeting`, `none` (clears).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    route: Route,
    fault: String,
    #[serde(default)]
    times: Option<u32>,
    #[serde(default = "one")]
    retry_after_secs: u64,
    #[serde(default = "one_second_ms")]
    delay_ms: u64,
}

fn one() -> u64 {
    1
}

fn one_second_ms() -> u64 {
    1000
}

async fn set_fault(State(shared): State<AppState>, body: Bytes) -> Response {
    let request: FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string(), "invalid_fault"),
    };
    let fault = match request.fault.as_str() {
        "none" => None,
        "unauthorized" => Some(Fault::Unauthorized),
        "too_many_requests" => Some(Fault::TooManyRequests {
            retry_after_secs: request.retry_after_secs,
        }),
        "server_error" => Some(Fault::ServerError),
        "slow_stream" => Some(Fault::SlowStream {
            delay: Duration::from_millis(request.delay_ms),
        }),
        "close_after_greeting" => Some(Fault::CloseAfterGreeting),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("unknown fault `{other}`"),
                "invalid_fault",
            );
        }
    };
    shared.set_fault(request.route, fault, request.times);
    axum::Json(json!({"ok": true})).into_response()
}

async fn counters(State(shared): State<AppState>) -> Response {
    axum::Json(shared.counters()).into_response()
}

/// The `created` time of models and chunks (a fixed instant: answers are reproducible).
const CREATED: u64 = 1_767_225_600;

async fn models(State(shared): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(response) = admit(&shared, Route::Models, &headers) {
        return response;
    }
    let data: Vec<Value> = shared
        .config
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "dev-gateway"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// [`admit`], then the body as a JSON object and its `model`.
fn admit_json(
    shared: &Shared,
    route: Route,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Option<Fault>, Value, String), Response> {
    let fault = admit(shared, route, headers)?;
    let request = parse_body(body)?;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("dev-small")
        .to_owned();
    Ok((fault, request, model))
}

fn parse_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "the body is not a JSON object",
                "invalid_json",
            )
        })
}

/// The canned answer: a greeting that echoes the prompt, as word-sized deltas.
fn reply_words(prompt: &str) -> Vec<String> {
    let prompt: String = prompt.chars().take(200).collect();
    let text = if prompt.trim().is_empty() {
        "Hello from the dev gateway.".to_owned()
    } else {
        format!("Hello from the dev gateway. You said: {}", prompt.trim())
    };
    let words: Vec<&str> = text.split(' ').collect();
    let last = words.len().saturating_sub(1);
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == last {
                (*w).to_owned()
            } else {
                format!("{w} ")
            }
        })
        .collect()
}

/// The text of a Responses `input` (a string, or messages with text content).
fn input_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(input_text).collect::<Vec<_>>().join(" "),
        Value::Object(o) => o
            .get("content")
            .or_else(|| o.get("text"))
            .map(input_text)
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn sse(events: Vec<Event>, delay: Duration) -> Response {
    let stream = futures::stream::iter(events).then(move |event| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, Infallible>(event)
    });
    Sse::new(stream).into_response()
}

fn stream_delay(fault: Option<Fault>) -> Duration {
    match fault {
        Some(Fault::SlowStream { delay }) => delay,
        _ => Duration::ZERO,
    }
}

async fn responses(State(shared): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (fault, request, model) = match admit_json(&shared, Route::Responses, &headers, &body) {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    let words = reply_words(&input_text(request.get("input").unwrap_or(&Value::Null)));
    let text: String = words.concat();
    let id = format!("resp_{:08x}", fastrand::u32(..));
    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        return axum::Json(json!({
            "id": id, "object": "response", "status": "completed", "model": model,
            "output": [{"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": text}]}],
        }))
        .into_response();
    }
    sse(
        typed_events(response_events(&id, &model, &words)),
        stream_delay(fault),
    )
}

/// The events of a streamed response, as the Responses API sends them for a message: the
/// item, its text deltas, the item done, then the response with its output (what Codex
/// and the SDKs read).
fn response_events(id: &str, model: &str, words: &[String]) -> Vec<Value> {
    let text: String = words.concat();
    let item_id = format!("msg_{:08x}", fastrand::u32(..));
    let message = |status: &str, content: Value| json!({"type": "message", "id": item_id, "role": "assistant", "status": status, "content": content});
    let done = message(
        "completed",
        json!([{"type": "output_text", "text": text, "annotations": []}]),
    );
    let mut events = vec![
        json!({"type": "response.created", "response": {"id": id, "status": "in_progress", "model": model}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": message("in_progress", json!([]))}),
    ];
    for w in words {
        events.push(json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": 0, "content_index": 0, "delta": w}));
    }
    events.push(json!({"type": "response.output_item.done", "output_index": 0, "item": done}));
    let usage =
        json!({"input_tokens": 1, "output_tokens": words.len(), "total_tokens": words.len() + 1});
    events.push(json!({"type": "response.completed", "response": {"id": id, "status": "completed", "model": model, "output": [done], "usage": usage}}));
    events
}

/// `GET /v1/responses`: the Responses API over a websocket. The client speaks first: each
/// `response.create` is answered with the events a streamed `POST` sends, each a JSON text
/// frame; anything else (`response.processed`, say) is ignored.
async fn responses_socket(
    State(shared): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let fault = match admit(&shared, Route::ResponsesSocket, &headers) {
        Ok(f) => f,
        Err(r) => return r,
    };
    ws.max_message_size(1 << 20)
        .on_upgrade(move |socket| responses_session(socket, fault))
}

async fn responses_session(mut socket: WebSocket, fault: Option<Fault>) {
    let delay = stream_delay(fault);
    while let Some(Ok(message)) = socket.recv().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(request) = serde_json::from_str::<Value>(&text) else {
            let error = json!({"type": "error", "error": {"message": "the event is not JSON"}});
            if send(&mut socket, &error).await.is_err() {
                return;
            }
            continue;
        };
        if request.get("type").and_then(Value::as_str) != Some("response.create") {
            continue;
        }
        let model = request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("dev-small")
            .to_owned();
        let words = reply_words(&input_text(request.get("input").unwrap_or(&Value::Null)));
        let id = format!("resp_{:08x}", fastrand::u32(..));
        for event in response_events(&id, &model, &words) {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if send(&mut socket, &event).await.is_err() {
                return;
            }
        }
    }
}

/// `POST /v1/messages`: a message in Anthropic's shape, streamed as its SSE events when the
/// request asks for a stream.
async fn messages(State(shared): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (fault, request, model) = match admit_json(&shared, Route::Messages, &headers, &body) {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    let words = reply_words(&input_text(request.get("messages").unwrap_or(&Value::Null)));
    let text: String = words.concat();
    let id = format!("msg_{:08x}", fastrand::u32(..));
    let usage = json!({"input_tokens": 1, "output_tokens": words.len()});
    let message = |content: Value, stop: Value| json!({"id": id, "type": "message", "role": "assistant", "model": model, "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage});
    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        return axum::Json(message(
            json!([{"type": "text", "text": text}]),
            json!("end_turn"),
        ))
        .into_response();
    }
    let mut events = vec![
        json!({"type": "message_start", "message": message(json!([]), Value::Null)}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ];
    for w in &words {
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": words.len()}}));
    events.push(json!({"type": "message_stop"}));
    sse(typed_events(events), stream_delay(fault))
}

/// SSE events named by their data's `type`, as the Responses and Messages APIs send them.
fn typed_events(events: Vec<Value>) -> Vec<Event> {
    events
        .into_iter()
        .map(|event| {
            let name = event["type"].as_str().unwrap_or_default().to_owned();
            sse_event(&name, event)
        })
        .collect()
}

fn sse_event(name: &str, data: Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

async fn chat(State(shared): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (fault, request, model) = match admit_json(&shared, Route::ChatCompletions, &headers, &body)
    {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    let prompt = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .map(input_text)
        .unwrap_or_default();
    let words = reply_words(&prompt);
    let id = format!("chatcmpl-{:08x}", fastrand::u32(..));
    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        return axum::Json(json!({
            "id": id, "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": words.concat()}}],
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        Event::default().data(
            json!({"id": id, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string(),
        )
    };
    let mut events = vec![chunk(json!({"role": "assistant"}), Value::Null)];
    for w in &words {
        events.push(chunk(json!({"content": w}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    events.push(Event::default().data("[DONE]"));
    sse(events, stream_delay(fault))
}

#[derive(serde::Deserialize)]
struct RealtimeQuery {
    model: Option<String>,
}

async fn realtime(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<RealtimeQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let fault = match admit(&shared, Route::Realtime, &headers) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let model = query.model.unwrap_or_else(|| "dev-small".to_owned());
    shared.session_opened();
    ws.max_message_size(1 << 20)
        .on_upgrade(move |socket| session(socket, model, fault))
}

async fn session(mut socket: WebSocket, model: String, fault: Option<Fault>) {
    let id = format!("sess_{:08x}", fastrand::u32(..));
    let greeting = json!({"type": "session.created", "session": {"id": id, "model": model}});
    if send(&mut socket, &greeting).await.is_err() {
        return;
    }
    if fault == Some(Fault::CloseAfterGreeting) {
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code: 1011,
                reason: "the dev gateway was told to close".into(),
            })))
            .await;
        return;
    }
    let delay = stream_delay(fault);
    while let Some(Ok(message)) = socket.recv().await {
        let text = match message {
            Message::Text(t) => t.to_string(),
            Message::Close(_) => break,
            Message::Pong(_) => {
                if send(&mut socket, &json!({"type": "debug.pong_received"}))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            _ => continue,
        };
        // `debug.ping` asks the server to ping the client; its pong is reported as an event.
        if text.contains("\"debug.ping\"") {
            if socket
                .send(Message::Ping(axum::body::Bytes::from_static(b"dev")))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let replies = realtime_replies(&text, &model);
        for reply in replies {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if send(&mut socket, &reply).await.is_err() {
                return;
            }
        }
    }
}

fn realtime_replies(text: &str, model: &str) -> Vec<Value> {
    let Ok(event) = serde_json::from_str::<Value>(text) else {
        return vec![json!({"type": "error", "error": {"message": "the event is not JSON"}})];
    };
    match event.get("type").and_then(Value::as_str) {
        Some("response.create") => {
            let id = format!("resp_{:08x}", fastrand::u32(..));
            let prompt = event
                .pointer("/response/instructions")
                .map(input_text)
                .unwrap_or_default();
            let mut out = vec![
                json!({"type": "response.created", "response": {"id": id, "status": "in_progress", "model": model}}),
            ];
            for w in reply_words(&prompt) {
                out.push(
                    json!({"type": "response.output_text.delta", "response_id": id, "delta": w}),
                );
            }
            out.push(
                json!({"type": "response.done", "response": {"id": id, "status": "completed"}}),
            );
            out
        }
        Some("session.update") => vec![
            json!({"type": "session.updated", "session": event.get("session").cloned().unwrap_or(json!({}))}),
        ],
        Some("conversation.item.create") => vec![
            json!({"type": "conversation.item.created", "item": event.get("item").cloned().unwrap_or(json!({}))}),
        ],
        Some(other) => vec![
            json!({"type": "error", "error": {"message": format!("unknown event type `{other}`")}}),
        ],
        None => vec![json!({"type": "error", "error": {"message": "the event has no `type`"}})],
    }
}

async fn send(socket: &mut WebSocket, event: &Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(event.to_string().into())).await
}
