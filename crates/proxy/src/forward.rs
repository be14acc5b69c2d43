//! Forwarding one HTTP request: routing, header rules, the credential, replay after an auth
//! failure, streaming both ways.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::body::{Body, BoxError, Request, Response};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt as _};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use provider_auth::{AuthError, RequestAuth, Verdict};

use crate::TRACING_TARGET;
use crate::error::{ProxyErrorCode, answer, token_unavailable};
use crate::headers::{drop_not_forwarded, scrub_headers};
use crate::idle::IdleBounded;
use crate::route::{Reservation, Route, Shared, upstream_headers, upstream_url};
use crate::sse::ScrubbedEvents;

/// Most of an error answer's body read (to scrub it) before it goes back to the client.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Largest error body scrubbed on the event loop itself (a fraction of a millisecond).
const SCRUB_INLINE_BYTES: usize = 8 * 1024;

type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

/// A request body: buffered (can be replayed; its bytes held against the replay budget)
/// or streaming through (cannot).
enum Payload {
    Buffered {
        bytes: Bytes,
        /// Held until the request is done, then given back to the budget.
        _held: Reservation,
    },
    Streaming(Option<BodyStream>),
}

/// Why a body could not be read for a replay.
enum BodyFailure {
    /// The client stopped sending mid-body for longer than the body idle timeout.
    Stalled,
    /// The body broke off.
    Broken,
}

/// Every request that is not health or stats.
pub(crate) async fn handle(shared: &Shared, request: Request) -> Response {
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let trimmed = path.trim_start_matches('/');
    let (id, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    let Some(route) = shared.routes.get(id).cloned() else {
        let known: Vec<&str> = shared.routes.keys().map(String::as_str).collect();
        let asked = match id {
            "" => "the path names no provider".to_owned(),
            // The id as the client sent it (visible ASCII, as hyper parsed it), if short.
            id if id.len() <= 64 => format!("no provider `{id}` here"),
            _ => "no such provider here".to_owned(),
        };
        return answer(
            ProxyErrorCode::UnknownProvider,
            format!("{asked}; this proxy serves /{}/...", known.join("/..., /")),
        );
    };
    if let Some(key) = request.extensions().get::<crate::keys::ScopedKey>()
        && !key.allows(route.id(), rest)
    {
        shared
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The key's name, never the key; the path only.
        tracing::info!(
            target: TRACING_TARGET,
            provider = %route.id(),
            key = %key.name,
            method = %request.method(),
            path = %format!("/{rest}"),
            "refused: the client key does not reach this provider or path"
        );
        return answer(
            ProxyErrorCode::KeyOutOfScope,
            format!(
                "the client key `{}` does not reach provider `{}` at this path",
                key.name,
                route.id()
            ),
        );
    }
    route.count(|c| &c.requests);
    let response = for_route(shared, &route, request, rest, started).await;
    route.answered(response)
}

/// A request for `route`, `rest` being the path after its id.
async fn for_route(
    shared: &Shared,
    route: &Arc<Route>,
    request: Request,
    rest: &str,
    started: Instant,
) -> Response {
    if has_dot_segment(rest) {
        route.count(|c| &c.errors);
        return answer(
            ProxyErrorCode::InvalidPath,
            format!(
                "the path has a `.` or `..` segment (perhaps percent-encoded, or with a `;` parameter), a control character or a character outside ASCII; this proxy forwards only plain paths under /{}/",
                route.id()
            ),
        );
    }
    let method = request.method().clone();
    if method == http::Method::CONNECT || method == http::Method::TRACE {
        route.count(|c| &c.errors);
        return answer(
            ProxyErrorCode::MethodNotAllowed,
            format!(
                "{method} is not forwarded: it would carry the credential to be echoed or tunnelled"
            ),
        );
    }
    let rest = rest.to_owned();
    let (mut response, replayed) = if is_websocket(request.headers()) {
        (crate::websocket::relay(route, request, &rest).await, false)
    } else {
        forward(route, request, &rest, shared).await
    };
    let hint = doubled_v1_hint(route, &rest, response.status());
    if let Some(hint) = hint {
        response
            .headers_mut()
            .insert(HINT_HEADER, http::HeaderValue::from_static(hint));
    }
    // Path only: the query may hold a key, header values are never logged.
    tracing::info!(
        target: TRACING_TARGET,
        provider = %route.id(),
        method = %method,
        path = %format!("/{rest}"),
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis(),
        replayed,
        hint = hint.unwrap_or_default(),
        "request"
    );
    response
}

/// The header that carries a hint about a likely misconfiguration of the client.
pub(crate) const HINT_HEADER: &str = "x-modelauth-hint";

/// A 404 for `/<id>/v1/...` when the provider's `base_url` already ends in `/v1`: the
/// client most likely set its base URL to `http://HOST:PORT/<id>/v1`, and the gateway got
/// `.../v1/v1/...`.
fn doubled_v1_hint(route: &Route, rest: &str, status: StatusCode) -> Option<&'static str> {
    (status == StatusCode::NOT_FOUND
        && (rest == "v1" || rest.starts_with("v1/"))
        && route.base_prefix.ends_with("/v1"))
    .then_some(
        "the provider's base_url already ends in /v1, so this went to .../v1/v1/...; set the client's base URL to http://HOST:PORT/<provider> without /v1",
    )
}

/// Whether the path below the provider id has a `.` or `..` segment, literal or
/// percent-encoded (also twice, `%252e`), with `/` or `\` (also percent-encoded) as
/// separators and path parameters (`..;x`) cut; or a control byte or anything outside
/// ASCII once decoded. URL normalisation (here or at the gateway, some of which strip `;`
/// parameters or NFKC-normalise `．` to `.`) would resolve one against the provider's base
/// path, so `/corp/../../admin` would carry the credential to `/admin`.
fn has_dot_segment(rest: &str) -> bool {
    // Most paths have no dot, escape, separator or parameter to look at.
    if !rest
        .bytes()
        .any(|b| matches!(b, b'.' | b'%' | b'\\' | b';') || !(0x21..0x7f).contains(&b))
    {
        return false;
    }
    // Decoded until nothing changes (`%252e` is `%2e` is `.`), a few rounds at most.
    let mut bytes = rest.as_bytes().to_vec();
    for _ in 0..4 {
        let next = percent_decoded(&bytes);
        if next == bytes {
            break;
        }
        bytes = next;
    }
    // A control byte (`%00`, `%09`) or anything outside ASCII (an overlong `%c0%ae`, a
    // fullwidth `．` that NFKC-normalising servers read as `.`) is refused outright.
    if bytes.iter().any(|b| !(0x20..0x7f).contains(b)) {
        return true;
    }
    bytes.split(|b| matches!(b, b'/' | b'\\')).any(|segment| {
        // Path parameters (`..;jsessionid=x`) are cut before servers resolve dots.
        let name = segment.split(|b| *b == b';').next().unwrap_or_default();
        name == b"." || name == b".."
    })
}

/// One round of percent-decoding; a `%` not followed by two hex digits stays as it is.
fn percent_decoded(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn forward(
    route: &Arc<Route>,
    request: Request,
    rest: &str,
    shared: &Shared,
) -> (Response, bool) {
    let url = upstream_url(route, rest, request.uri().query());
    let Ok(uri) = http::Uri::from_maybe_shared(bytes::Bytes::from(url)) else {
        route.count(|c| &c.errors);
        let detail = format!(
            "provider `{}`: the gateway URL is not a valid HTTP URI",
            route.id()
        );
        return (answer(ProxyErrorCode::UpstreamUnreachable, detail), false);
    };
    // The client's headers are kept, not the upstream ones: an attempt builds its own from
    // them (a replay is rare; a copy for it on every request is not).
    let (inbound, body) = request.into_parts();
    let declared = inbound
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut payload = match read_for_replay(body, shared, declared).await {
        Ok(p) => p,
        Err(BodyFailure::Stalled) => {
            route.count(|c| &c.errors);
            return (
                plain(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body stalled: nothing arrived for the body idle timeout",
                ),
                false,
            );
        }
        Err(BodyFailure::Broken) => {
            return (
                plain(StatusCode::BAD_REQUEST, "the request body broke off"),
                false,
            );
        }
    };
    let mut auth = route.provider.request();
    let mut replayed = false;
    loop {
        let credential = match auth.credential_headers().await {
            Ok(value) => value,
            Err(e) => {
                route.count(|c| &c.errors);
                return (token_unavailable(&e), replayed);
            }
        };
        let mut attempt = upstream_headers(route, &inbound.headers);
        for (name, value) in credential {
            attempt.insert(name, value);
        }
        // A streamed upload counts as the client speaking: the wait for the answer is
        // bounded by silence on both sides, not by the upload's length. (A buffered body
        // is sent at once: its wait needs no clock of its own.)
        let mut progress = None;
        let body = match &mut payload {
            Payload::Buffered { bytes, .. } => crate::body::full(bytes.clone()),
            Payload::Streaming(stream) => match stream.take() {
                Some(s) => {
                    let stamp = Arc::new(AtomicU64::new(crate::limits::now_ms()));
                    progress = Some(stamp.clone());
                    crate::body::from_stream(s.inspect(move |_| {
                        stamp.store(crate::limits::now_ms(), Ordering::Relaxed);
                    }))
                }
                None => crate::body::empty(),
            },
        };
        let mut upstream = http::Request::new(body);
        *upstream.method_mut() = inbound.method.clone();
        *upstream.uri_mut() = uri.clone();
        *upstream.headers_mut() = attempt;
        let send = route.http.request(upstream);
        let idle = route.info().stream_idle_timeout();
        let answered = match &progress {
            Some(progress) => within_silence(send, idle, progress).await,
            None => tokio::time::timeout(idle, send).await,
        };
        let response = match answered {
            Err(_) => {
                route.count(|c| &c.errors);
                return (
                    answer(
                        ProxyErrorCode::UpstreamTimeout,
                        format!(
                            "provider `{}`: the gateway sent no answer within {} ms (stream_idle_timeout_ms)",
                            route.id(),
                            route.info().stream_idle_timeout_ms
                        ),
                    ),
                    replayed,
                );
            }
            Ok(Err(e)) => {
                route.count(|c| &c.errors);
                let root = root_cause(&e);
                let timed_out = root
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
                let code = if timed_out {
                    ProxyErrorCode::UpstreamTimeout
                } else {
                    ProxyErrorCode::UpstreamUnreachable
                };
                return (answer(code, unreachable_message(route, root)), replayed);
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        if route.provider.is_reauth_status(status) {
            route.count(|c| &c.upstream_auth_failures);
            // Cannot be replayed: the 401 goes back, and the report makes the client's own
            // retry find a fresh token.
            if matches!(payload, Payload::Streaming(_)) {
                tokio::spawn(async move {
                    let _ = auth.after_status(status).await;
                });
                return (pass_back(route, response, None).await, replayed);
            }
        }
        match auth.after_status(status).await {
            Ok(Verdict::Retry) => {
                replayed = true;
                route.count(|c| &c.replays);
                continue;
            }
            // An answer, a static key, a second rejection, or the breaker holds runs back:
            // the answer goes back as it came.
            Ok(_) | Err(AuthError::Rejected { .. }) => {}
            Err(e) => {
                route.count(|c| &c.errors);
                return (token_unavailable(&e), replayed);
            }
        }
        return (pass_back(route, response, Some(&auth)).await, replayed);
    }
}

/// The innermost error: the reason itself (`Connection refused`, a TLS alert...).
fn root_cause<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut root = e;
    while let Some(next) = root.source() {
        root = next;
    }
    root
}

fn unreachable_message(route: &Route, root: &dyn std::error::Error) -> String {
    // The host only: the URL's query may hold a key.
    format!(
        "provider `{}`: cannot reach {}:{}: {root}",
        route.id(),
        route.base.host_str().unwrap_or_default(),
        route.base.port_or_known_default().unwrap_or_default()
    )
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(crate::body::full(text));
    *response.status_mut() = status;
    response
}

/// `future`'s output, unless `idle` passes with neither it nor `progress` (the ms clock
/// of the upload's last part) moving.
async fn within_silence<F: Future>(
    future: F,
    idle: Duration,
    progress: &AtomicU64,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut future = std::pin::pin!(future);
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    loop {
        let last = progress.load(Ordering::Relaxed);
        let waited = crate::limits::now_ms().saturating_sub(last);
        let left = Duration::from_millis(idle_ms.saturating_sub(waited));
        match tokio::time::timeout(left, future.as_mut()).await {
            Ok(output) => return Ok(output),
            // Silent for the whole bound: the upload made no progress since `last`.
            Err(elapsed) if progress.load(Ordering::Relaxed) == last => return Err(elapsed),
            Err(_) => {}
        }
    }
}

/// Buffers a body up to the replay limit, while the process-wide replay budget has room,
/// each part within the body idle timeout; a larger body (declared or found so), or one the
/// budget cannot hold, streams through instead.
async fn read_for_replay(
    body: Body,
    shared: &Shared,
    declared: Option<u64>,
) -> Result<Payload, BodyFailure> {
    let limit = shared.max_replay_bytes;
    let mut reservation = Reservation {
        budget: shared.replay_budget.clone(),
        bytes: 0,
    };
    // Most requests (a GET) have no body: no read, no timer.
    if hyper::body::Body::is_end_stream(&body) {
        return Ok(Payload::Buffered {
            bytes: Bytes::new(),
            _held: reservation,
        });
    }
    let mut stream = body.into_data_stream();
    let declared = match declared.map(usize::try_from) {
        Some(Ok(n)) if n <= limit => Some(n),
        None => None,
        Some(_) => return Ok(Payload::Streaming(Some(Box::pin(stream)))),
    };
    // A declared length is held against the budget at once and read into one buffer of
    // that size: no buffer grows by copying, so the memory used is what the budget counts.
    if let Some(n) = declared {
        if !shared.replay_budget.take(&mut reservation, n) {
            return Ok(Payload::Streaming(Some(Box::pin(stream))));
        }
        let mut buffered = BytesMut::with_capacity(n);
        while let Some(chunk) = next_part(&mut stream, shared).await? {
            if buffered.len() + chunk.len() > n {
                // More than declared: the server would have refused it; never buffer it.
                return Err(BodyFailure::Broken);
            }
            buffered.extend_from_slice(&chunk);
        }
        return Ok(Payload::Buffered {
            bytes: buffered.freeze(),
            _held: reservation,
        });
    }
    // No declared length: the parts are kept as they come, each held against the budget.
    let mut parts: Vec<Bytes> = Vec::new();
    let mut length = 0;
    while let Some(chunk) = next_part(&mut stream, shared).await? {
        if length + chunk.len() > limit || !shared.replay_budget.take(&mut reservation, chunk.len())
        {
            // What was read goes first; the budget it held is given back now.
            drop(reservation);
            let read = futures::stream::iter(parts.into_iter().chain([chunk]).map(Ok));
            return Ok(Payload::Streaming(Some(Box::pin(read.chain(stream)))));
        }
        length += chunk.len();
        parts.push(chunk);
    }
    if parts.len() <= 1 {
        return Ok(Payload::Buffered {
            bytes: parts.pop().unwrap_or_default(),
            _held: reservation,
        });
    }
    // Joined into one buffer, so that the replay has a length; the copy is held against the
    // budget while both exist, and the body streams through (without replay) when it cannot
    // be.
    let mut copy = Reservation {
        budget: shared.replay_budget.clone(),
        bytes: 0,
    };
    if !shared.replay_budget.take(&mut copy, length) {
        drop(reservation);
        let read = futures::stream::iter(parts.into_iter().map(Ok));
        return Ok(Payload::Streaming(Some(Box::pin(read))));
    }
    let mut joined = BytesMut::with_capacity(length);
    for part in parts {
        joined.extend_from_slice(&part);
    }
    drop(reservation);
    Ok(Payload::Buffered {
        bytes: joined.freeze(),
        _held: copy,
    })
}

/// The next part of a body being read for a replay, within the body idle timeout.
async fn next_part<E>(
    stream: &mut (impl Stream<Item = Result<Bytes, E>> + Unpin),
    shared: &Shared,
) -> Result<Option<Bytes>, BodyFailure> {
    match tokio::time::timeout(shared.body_idle_timeout, stream.next()).await {
        Err(_) => Err(BodyFailure::Stalled),
        Ok(None) => Ok(None),
        Ok(Some(chunk)) => chunk.map(Some).map_err(|_| BodyFailure::Broken),
    }
}

/// The gateway's answer for the client: status and headers (hop-by-hop ones dropped), the
/// body streamed as it arrives. Headers, at every status, are scrubbed of every token sent
/// to the provider, so an echo (`x-echo-auth`, a `Location` or a `WWW-Authenticate`) does
/// not carry one on. An event stream's events are checked whole (see [`ScrubbedEvents`]).
/// An error answer's body (status 400 and up) is read first, at most 64 KiB within
/// `request_timeout_ms`, and scrubbed too. Other bodies stream through as they are.
async fn pass_back(
    route: &Arc<Route>,
    response: http::Response<Incoming>,
    auth: Option<&RequestAuth>,
) -> Response {
    let (mut parts, body) = response.into_parts();
    drop_not_forwarded(&mut parts.headers);
    // Only status, headers and body go on: not the upstream's HTTP version, nor what
    // the client stored beside them (a reason phrase other than the standard one).
    parts.version = http::Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    let scrubber = route.scrubber(auth);
    scrub_headers(&scrubber, &mut parts.headers);
    if parts.status.as_u16() < 400 {
        // The upstream answer as it is, in place: every body frame goes on as it arrives,
        // until the gateway goes silent for longer than `stream_idle_timeout_ms`.
        let body = IdleBounded::new(body, route.clone());
        if parts.status.as_u16() >= 300 || !is_event_stream(&parts.headers) {
            return Response::from_parts(parts, crate::body::boxed(body));
        }
        // Events go on whole, checked: the length may change.
        parts.headers.remove(header::CONTENT_LENGTH);
        let events = ScrubbedEvents::new(body, route.clone(), scrubber);
        return Response::from_parts(parts, crate::body::boxed(events));
    }
    // The scrubbed body has another length, and goes back uncompressed.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    let raw = read_error_body(route, body).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    // Scrubbing 64 KiB against every recent token takes a fraction of a millisecond: a
    // large body is scrubbed on the blocking pool, so that the event loop keeps serving.
    let scrubbed = if text.len() <= SCRUB_INLINE_BYTES {
        scrubber.scrub_json(&text)
    } else {
        tokio::task::spawn_blocking(move || scrubber.scrub_json(&text))
            .await
            .unwrap_or_else(|_| "(the gateway's error body could not be scrubbed)".to_owned())
    };
    Response::from_parts(parts, crate::body::full(scrubbed))
}

/// An uncompressed `text/event-stream` answer (one whose events can be read).
fn is_event_stream(headers: &HeaderMap) -> bool {
    let events = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
        });
    events && !headers.contains_key(header::CONTENT_ENCODING)
}

async fn read_error_body(route: &Route, mut body: Incoming) -> Vec<u8> {
    let deadline = Instant::now() + route.info().request_timeout();
    let mut raw = Vec::new();
    while raw.len() < MAX_ERROR_BODY {
        match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    raw.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    raw.truncate(MAX_ERROR_BODY);
    raw
}

#[cfg(test)]
mod tests {
    use super::has_dot_segment;

    #[test]
    fn dot_segments_are_found_however_they_are_spelled() {
        for climbing in [
            "..",
            "../admin",
            "x/../../admin",
            "./models",
            "models/.",
            "%2e%2e/admin",
            "%2E%2e/admin",
            ".%2E/admin",
            "x/..%2f..%2fadmin",
            "x/..%2F..%5Cadmin",
            "..\\admin",
            // Found in trial (hardening round 3).
            "x/..;/admin",
            "x/..;jsessionid=1/admin",
            "%252e%252e/admin",
            "%25252e%25252e/admin",
            "x/..%00/admin",
            "x/..%09/admin",
            "x/%c0%ae%c0%ae/admin",
            "x/\u{ff0e}\u{ff0e}/admin",
            "x/%ef%bc%8e%ef%bc%8e/admin",
        ] {
            assert!(has_dot_segment(climbing), "{climbing}");
        }
        for plain in [
            "",
            "models",
            "chat/completions",
            "models/gpt-4.1",
            "files/a..b",
            "models/meta-llama%2FLlama-3.1",
            "deployments/x/chat/completions",
            ".well-known/x",
            "files/a;b",
            "models/x%20y",
        ] {
            assert!(!has_dot_segment(plain), "{plain}");
        }
    }
}
