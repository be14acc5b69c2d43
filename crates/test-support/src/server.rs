//! A real, hostile HTTP and websocket server on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::SinkExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::secrets::echo_in_every_encoding;

/// Largest request head read.
const MAX_HEAD: usize = 128 * 1024;

/// What the server does, chosen by the first path segment of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A well-behaved gateway: a model list, or a complete SSE stream saying "hi".
    Ok,
    /// Reads the request and never answers.
    Silent,
    /// 200 headers, then one body byte a second.
    Drip200,
    /// 401 headers, then one body byte a second.
    Drip401,
    /// A 200 body of 1 GiB, as fast as it can be taken.
    Huge,
    /// A 401 body of 1 GiB.
    Huge401,
    /// 200 headers, ten bytes of body, then a TCP reset.
    Reset,
    /// 400 echoing every credential and configured key it has seen, in every encoding.
    Echo400,
    /// 401 echoing every credential it has seen (so the client retries once, and the
    /// second answer echoes both generations).
    Echo401,
    /// A success that echoes the credential where no error is: an `x-echo-auth: Bearer
    /// TOKEN` header on a model list or an SSE stream whose ordinary text delta quotes the
    /// token; over a websocket, an ordinary JSON event that quotes the handshake's
    /// `Authorization`.
    Echo200,
    /// An SSE stream whose event data is not JSON.
    SseGarbage,
    /// An SSE stream with a line that is not UTF-8.
    SseNotUtf8,
    /// An SSE `error` event whose message carries escape codes and the token.
    SseError,
    /// A valid stream with a byte-order mark and lone `\r` line endings.
    SseBomCr,
    /// `data: aaaa...` without a line end, forever.
    SseEndless,
    /// One text delta, then silence.
    SseHold,
    /// One text delta, then the connection closes.
    SseTruncated,
    /// 307 to the same path on another server (`redirect-PORT`).
    Redirect(u16),
    /// Websocket: a close frame with escape codes and the token in its reason.
    WsClose,
    /// Websocket: a text frame that is not JSON, with escape codes and the token.
    WsNotJson,
    /// Websocket: a 17 MiB text frame.
    WsGiant,
    /// Websocket: a binary frame.
    WsBinary,
    /// Websocket: the connection drops right after the handshake.
    WsAbrupt,
}

impl Fault {
    fn parse(segment: &str) -> Option<Fault> {
        if let Some(port) = segment.strip_prefix("redirect-") {
            return port.parse().ok().map(Fault::Redirect);
        }
        Some(match segment {
            "ok" => Fault::Ok,
            "silent" => Fault::Silent,
            "drip200" => Fault::Drip200,
            "drip401" => Fault::Drip401,
            "huge" => Fault::Huge,
            "huge401" => Fault::Huge401,
            "reset" => Fault::Reset,
            "echo400" => Fault::Echo400,
            "echo401" => Fault::Echo401,
            "echo200" => Fault::Echo200,
            "sse_garbage" => Fault::SseGarbage,
            "sse_not_utf8" => Fault::SseNotUtf8,
            "sse_error" => Fault::SseError,
            "sse_bom_cr" => Fault::SseBomCr,
            "sse_endless" => Fault::SseEndless,
            "sse_hold" => Fault::SseHold,
            "sse_truncated" => Fault::SseTruncated,
            "ws_close" => Fault::WsClose,
            "ws_not_json" => Fault::WsNotJson,
            "ws_giant" => Fault::WsGiant,
            "ws_binary" => Fault::WsBinary,
            "ws_abrupt" => Fault::WsAbrupt,
            _ => return None,
        })
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// `GET /ok/v1/models HTTP/1.1`.
    pub request_line: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<SeenRequest>>,
    open: AtomicUsize,
}

impl Shared {
    /// Every credential-like header value seen so far (`Authorization` without its scheme,
    /// `api-key`, `x-api-key`).
    fn secrets(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        let mut out: Vec<String> = Vec::new();
        for r in seen.iter() {
            for (name, value) in &r.headers {
                let secret = match name.as_str() {
                    "authorization" => value.strip_prefix("Bearer ").unwrap_or(value),
                    "api-key" | "x-api-key" => value,
                    _ => continue,
                };
                if !out.iter().any(|s| s == secret) {
                    out.push(secret.to_owned());
                }
            }
        }
        out
    }
}

/// The server; it stops when dropped.
pub struct HostileServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl HostileServer {
    /// Starts the server on its own thread (usable from sync and async tests alike).
    pub fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let (addr, stop) = crate::serve_on_thread(move |stream| serve(stream, state.clone()));
        Self {
            addr,
            shared,
            stop: Some(stop),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL that selects `fault`: `http://ADDR/<fault>/v1`.
    pub fn base_url(&self, fault: &str) -> String {
        format!("http://{}/{fault}/v1", self.addr)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    shared.open.fetch_add(1, Ordering::SeqCst);
    let _guard = OpenGuard(shared.clone());
    let Some(request) = read_head(&mut stream).await else {
        return;
    };
    shared.seen.lock().unwrap().push(request.clone());
    let path = request
        .request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let fault = path
        .split('/')
        .nth(1)
        .and_then(Fault::parse)
        .unwrap_or(Fault::Ok);
    let websocket = request
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if websocket && !matches!(fault, Fault::Silent | Fault::Echo401 | Fault::Echo400) {
        return serve_websocket(stream, &request, fault).await;
    }
    let secrets = shared.secrets();
    let token = secrets.first().cloned().unwrap_or_default();
    let _ = match fault {
        Fault::Ok if path.ends_with("/models") => {
            respond(&mut stream, 200, "application/json", MODELS.as_bytes()).await
        }
        Fault::Ok => respond(&mut stream, 200, "text/event-stream", HI_STREAM.as_bytes()).await,
        Fault::Silent => {
            let mut buf = [0u8; 1024];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            Ok(())
        }
        Fault::Drip200 | Fault::Drip401 => {
            let status = if fault == Fault::Drip200 { 200 } else { 401 };
            drip(&mut stream, status).await
        }
        Fault::Huge | Fault::Huge401 => {
            let status = if fault == Fault::Huge { 200 } else { 401 };
            huge(&mut stream, status).await
        }
        Fault::Reset => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"data\":[";
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.set_zero_linger();
            Ok(())
        }
        Fault::Echo400 | Fault::Echo401 => {
            let status = if fault == Fault::Echo400 { 400 } else { 401 };
            let body = echo_in_every_encoding(&secrets);
            respond(&mut stream, status, "text/plain", body.as_bytes()).await
        }
        Fault::SseGarbage => {
            sse(&mut stream, b"event: response.created\ndata: {not json\n\n").await
        }
        Fault::SseNotUtf8 => sse(&mut stream, b"data: \xff\xfe\xfd\n\n").await,
        Fault::Echo200 => {
            let (content_type, body) = if path.ends_with("/models") {
                ("application/json", MODELS.to_owned())
            } else {
                let delta = serde_json::json!({
                    "type": "response.output_text.delta",
                    "delta": format!("your key is {token}"),
                });
                (
                    "text/event-stream",
                    format!("event: response.output_text.delta\ndata: {delta}\n\n"),
                )
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nx-echo-auth: Bearer {token}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await
        }
        Fault::SseError => {
            let message = format!(
                "\u{1b}[2J\u{1b}[31mboom: your token {token} (json {}) is bad\u{7}",
                serde_json::to_string(&token).unwrap_or_default()
            );
            let event = serde_json::json!({"type": "error", "error": {"message": message}});
            sse(
                &mut stream,
                format!("event: error\ndata: {event}\n\n").as_bytes(),
            )
            .await
        }
        Fault::SseBomCr => {
            let body = "\u{FEFF}event: response.output_text.delta\rdata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\r\rdata: {\"type\":\"response.completed\"}\r\r";
            sse(&mut stream, body.as_bytes()).await
        }
        Fault::SseEndless => endless(&mut stream).await,
        Fault::SseHold | Fault::SseTruncated => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n";
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(DELTA.as_bytes()).await;
            if fault == Fault::SseHold {
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            }
            Ok(())
        }
        Fault::Redirect(port) => {
            let location = format!(
                "http://127.0.0.1:{port}/echo400/v1/{}",
                path.rsplit('/').next().unwrap_or_default()
            );
            let head = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await
        }
        _ => respond(&mut stream, 404, "text/plain", b"no such fault").await,
    };
}

const MODELS: &str = r#"{"object":"list","data":[{"id":"m1","object":"model"}]}"#;
const DELTA: &str = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n";
const HI_STREAM: &str = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\"}\n\n";

async fn read_head(stream: &mut TcpStream) -> Option<SeenRequest> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_HEAD || stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // Read the body too: closing with unread input would reset the connection.
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_HEAD);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(SeenRequest {
        request_line,
        headers,
    })
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    // One write: a client that reads the head may take only what came with it (a
    // websocket handshake answer does), so the body travels in the same segment.
    let mut answer = format!(
        "HTTP/1.1 {status} Status\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body);
    stream.write_all(&answer).await
}

async fn sse(stream: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await
}

async fn drip(stream: &mut TcpStream, status: u16) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} Status\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    for _ in 0..60_000 {
        stream.write_all(b" ").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

async fn huge(stream: &mut TcpStream, status: u16) -> std::io::Result<()> {
    let total: usize = 1 << 30;
    let head = format!(
        "HTTP/1.1 {status} Status\r\ncontent-type: application/json\r\ncontent-length: {total}\r\n\r\n{{\"data\":[{{\"id\":\""
    );
    stream.write_all(head.as_bytes()).await?;
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        stream.write_all(&chunk).await?;
        sent += chunk.len();
    }
    Ok(())
}

async fn endless(stream: &mut TcpStream) -> std::io::Result<()> {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: ";
    stream.write_all(head.as_bytes()).await?;
    let chunk = vec![b'a'; 64 * 1024];
    // 64 MiB at most: far past the client's event cap.
    for _ in 0..1024 {
        stream.write_all(&chunk).await?;
    }
    Ok(())
}

async fn serve_websocket(mut stream: TcpStream, request: &SeenRequest, fault: Fault) {
    let key = request.header("sec-websocket-key").unwrap_or_default();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).await.is_err() || fault == Fault::WsAbrupt {
        return;
    }
    let token = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let mut ws = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
    let message = match fault {
        Fault::WsClose => Message::Close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: format!("\u{1b}[31m{token}\u{7}").into(),
        })),
        Fault::WsNotJson => Message::text(format!("\u{1b}]0;owned\u{7}not json {token}")),
        Fault::Echo200 => Message::text(
            serde_json::json!({
                "type": "session.created",
                "session": {"authorization": format!("Bearer {token}")},
            })
            .to_string(),
        ),
        Fault::WsGiant => Message::text("x".repeat(17 << 20)),
        Fault::WsBinary => Message::binary(vec![0u8, 159, 146, 150]),
        _ => Message::text(r#"{"type":"session.created"}"#),
    };
    let _ = ws.send(message).await;
    // Keep the connection until the client goes.
    let _ = futures::StreamExt::next(&mut ws).await;
}
