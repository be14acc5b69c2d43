//! The HTTP model client: one request path for every endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::BoxStream;
use http::{HeaderMap, Method, StatusCode, header};
use provider_auth::{AuthManager, Provider, RequestAuth, Scrubber, Verdict};
use provider_config::{MAX_RESPONSE_BYTES, ModelProviderInfo, WireApi};
use serde_json::Value;
use url::Url;

use crate::error::ClientError;
use crate::events::{ModelList, ResponseEvent};
use crate::retry::{MAX_RETRY_AFTER, backoff, retry_after};
use event_stream::SseParser;

pub use provider_auth::USER_AGENT;

/// Most of an error body kept for messages.
const ERROR_BODY_EXCERPT_CHARS: usize = 300;
/// Most of an error body read: enough for the excerpt, whatever the gateway sends.
const ERROR_BODY_READ_BYTES: usize = 16 * 1024;
/// Most redirects followed, all to the configured origin.
const MAX_REDIRECTS: usize = 5;

/// A stream of response events.
pub type ResponseStream = BoxStream<'static, Result<ResponseEvent, ClientError>>;

/// An HTTP client for one provider. Cheap to clone; clones share the connection pool and
/// the auth manager (and so the token cache).
#[derive(Clone)]
pub struct ModelClient {
    inner: Arc<Inner>,
}

/// Shows the provider and host only: URLs may carry keys in their query, headers in values.
impl std::fmt::Debug for ModelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelClient")
            .field("provider", &self.inner.provider.id())
            .field("host", &self.inner.provider.host())
            .field("wire_api", &self.inner.provider.info().wire_api)
            .field("auth", self.inner.provider.manager())
            .finish_non_exhaustive()
    }
}

/// What a client has sent and seen, across all its clones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// HTTP attempts sent (retries included).
    pub attempts: u64,
    /// 401 answers received.
    pub unauthorized: u64,
    /// Retries after 429, 5xx or connection errors.
    pub retries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    attempts: AtomicU64,
    unauthorized: AtomicU64,
    retries: AtomicU64,
}

struct Inner {
    counters: Counters,
    http: reqwest::Client,
    provider: Provider,
    /// The provider's headers, checked when the client was made.
    headers: HeaderMap,
    models_url: Url,
    responses_url: Url,
    chat_url: Url,
}

/// How long one request may take.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// The whole logical request, retries included, ends by this instant.
    Deadline(Instant),
    /// Waits for headers, and between body chunks, are bounded by this silence.
    Idle(Duration),
}

#[derive(Debug, Clone, Copy)]
enum Wire {
    Responses,
    Chat,
}

impl ModelClient {
    /// A client for `provider_id` using `auth` for credentials. Reads the variables of
    /// `env_http_headers` now. Connects are bounded by `connect_timeout_ms`, and redirects
    /// are followed only to the configured origin (scheme, host and port): no credential or
    /// configured header ever goes to another host.
    pub fn new(
        provider_id: &str,
        info: ModelProviderInfo,
        auth: Arc<dyn AuthManager>,
    ) -> Result<Self, ClientError> {
        Self::for_provider(Provider::new(provider_id, info, auth))
    }

    /// A client for `provider`, set up once and shared with the websocket client and the
    /// proxy; otherwise as [`ModelClient::new`].
    pub fn for_provider(provider: Provider) -> Result<Self, ClientError> {
        // The one TLS configuration of the process (the platform's trust store), as the
        // websocket client and the proxy have it.
        let tls = transport::tls_config().map_err(|source| ClientError::Tls {
            provider: provider.shared_id(),
            source,
        })?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.as_ref().clone())
            .user_agent(USER_AGENT)
            .connect_timeout(provider.info().connect_timeout())
            .redirect(same_origin_redirects())
            .build()
            .map_err(|e| ClientError::Config {
                provider: provider.shared_id(),
                detail: format!("cannot build the HTTP client: {e}"),
            })?;
        Self::build(provider, http)
    }

    /// Like [`ModelClient::new`] with a caller-built `reqwest::Client` (proxies, TLS roots...).
    ///
    /// The caller's client decides about redirects and connect timeouts: build it with
    /// `redirect(reqwest::redirect::Policy::none())` (or a same-origin policy) so that
    /// configured headers never follow a redirect to another host.
    pub fn with_http_client(
        provider_id: &str,
        info: ModelProviderInfo,
        auth: Arc<dyn AuthManager>,
        http: reqwest::Client,
    ) -> Result<Self, ClientError> {
        Self::build(Provider::new(provider_id, info, auth), http)
    }

    fn build(provider: Provider, http: reqwest::Client) -> Result<Self, ClientError> {
        let url = |path: &str| {
            provider
                .info()
                .endpoint_url(path)
                .map_err(|source| ClientError::Url {
                    provider: provider.shared_id(),
                    source,
                })
        };
        let models_url = url("models")?;
        let responses_url = url("responses")?;
        let chat_url = url("chat/completions")?;
        let headers = provider
            .headers()
            .map_err(|source| ClientError::Header {
                provider: provider.shared_id(),
                source,
            })?
            .clone();
        if let Some(warning) = provider.info().cleartext_warning() {
            tracing::warn!(target: "model_client", provider = %provider.id(), "{warning}");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                counters: Counters::default(),
                http,
                provider,
                headers,
                models_url,
                responses_url,
                chat_url,
            }),
        })
    }

    /// The provider id.
    pub fn provider_id(&self) -> &str {
        self.inner.provider.id()
    }

    /// The provider config.
    pub fn provider(&self) -> &ModelProviderInfo {
        self.inner.provider.info()
    }

    /// The provider handle (shared with any realtime client built from it).
    pub fn provider_handle(&self) -> &Provider {
        &self.inner.provider
    }

    /// The auth manager (shared with any realtime client built for the provider).
    pub fn auth_manager(&self) -> &Arc<dyn AuthManager> {
        self.inner.provider.manager()
    }

    /// Attempts, 401s and retries so far.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        ClientStats {
            attempts: c.attempts.load(Ordering::Relaxed),
            unauthorized: c.unauthorized.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    /// `GET /models`. The whole exchange, retries included, is bounded by
    /// `request_timeout_ms`, and the body by 4 MiB.
    pub async fn list_models(&self) -> Result<ModelList, ClientError> {
        let bound = Bound::Deadline(Instant::now() + self.inner.provider.info().request_timeout());
        let response = self
            .send(Method::GET, &self.inner.models_url, None, bound)
            .await?;
        let body = self.read_body(response, bound).await?;
        serde_json::from_slice::<ModelList>(&body).map_err(|e| {
            self.decode_error(format!(
                "the model list is not `{{\"data\": [{{\"id\": ...}}]}}` (line {}, column {})",
                e.line(),
                e.column()
            ))
        })
    }

    /// `POST /responses` with `stream: false`; the JSON answer. A generation may take
    /// minutes: the wait is bounded by `stream_idle_timeout_ms` of silence, the body by
    /// 4 MiB.
    pub async fn create_response(&self, request: &Value) -> Result<Value, ClientError> {
        let mut body = request.clone();
        if let Value::Object(o) = &mut body {
            o.insert("stream".to_owned(), Value::Bool(false));
        }
        let bound = Bound::Idle(self.inner.provider.info().stream_idle_timeout());
        let response = self
            .send(Method::POST, &self.inner.responses_url, Some(&body), bound)
            .await?;
        let body = self.read_body(response, bound).await?;
        serde_json::from_slice::<Value>(&body).map_err(|e| {
            self.decode_error(format!(
                "the response is not JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })
    }

    /// Reads a whole non-streaming body within `bound`, at most [`MAX_RESPONSE_BYTES`].
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        bound: Bound,
    ) -> Result<Vec<u8>, ClientError> {
        let mut body = Vec::new();
        loop {
            let chunk = match bound {
                Bound::Deadline(at) => tokio::time::timeout_at(at.into(), response.chunk()).await,
                Bound::Idle(idle) => tokio::time::timeout(idle, response.chunk()).await,
            };
            match chunk {
                Err(_) => return Err(self.bound_error(bound)),
                Ok(Err(e)) if e.is_timeout() => return Err(self.bound_error(bound)),
                Ok(Err(e)) => return Err(self.transport_error(&e)),
                Ok(Ok(None)) => return Ok(body),
                Ok(Ok(Some(chunk))) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(ClientError::TooLarge {
                            provider: self.inner.provider.shared_id(),
                            host: self.inner.provider.host().to_owned(),
                            limit_bytes: MAX_RESPONSE_BYTES,
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
            }
        }
    }

    /// The error for a request that ran out of its bound.
    fn bound_error(&self, bound: Bound) -> ClientError {
        match bound {
            Bound::Deadline(_) => ClientError::Timeout {
                provider: self.inner.provider.shared_id(),
                host: self.inner.provider.host().to_owned(),
                timeout_ms: self.inner.provider.info().request_timeout_ms,
            },
            Bound::Idle(_) => ClientError::StreamIdle {
                provider: self.inner.provider.shared_id(),
                idle_ms: self.inner.provider.info().stream_idle_timeout_ms,
            },
        }
    }

    /// `POST /responses` with `stream: true`: the events as they arrive.
    pub async fn stream_response(&self, request: &Value) -> Result<ResponseStream, ClientError> {
        self.stream(Wire::Responses, request).await
    }

    /// `POST /chat/completions` with `stream: true`: text deltas and other chunks.
    pub async fn stream_chat(&self, request: &Value) -> Result<ResponseStream, ClientError> {
        self.stream(Wire::Chat, request).await
    }

    /// Streams a reply to `prompt` with the provider's `wire_api`.
    pub async fn stream_prompt(
        &self,
        model: &str,
        prompt: &str,
    ) -> Result<ResponseStream, ClientError> {
        match self.inner.provider.info().wire_api {
            WireApi::Chat => {
                let request = serde_json::json!({
                    "model": model,
                    "messages": [{"role": "user", "content": prompt}],
                });
                self.stream_chat(&request).await
            }
            _ => {
                let request = serde_json::json!({"model": model, "input": prompt});
                self.stream_response(&request).await
            }
        }
    }

    async fn stream(&self, wire: Wire, request: &Value) -> Result<ResponseStream, ClientError> {
        let mut body = request.clone();
        if let Value::Object(o) = &mut body {
            o.insert("stream".to_owned(), Value::Bool(true));
        }
        let url = match wire {
            Wire::Responses => self.inner.responses_url.clone(),
            Wire::Chat => self.inner.chat_url.clone(),
        };
        let bound = Bound::Idle(self.inner.provider.info().stream_idle_timeout());
        let first = self.send(Method::POST, &url, Some(&body), bound).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let client = self.clone();
        tokio::spawn(async move { client.pump(first, wire, url, body, tx).await });
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed())
    }

    /// Reads a stream into `tx`, reopening it while nothing has been yielded yet.
    async fn pump(
        self,
        mut response: reqwest::Response,
        wire: Wire,
        url: Url,
        body: Value,
        tx: tokio::sync::mpsc::Sender<Result<ResponseEvent, ClientError>>,
    ) {
        let mut yielded = false;
        let mut reopened = 0u64;
        loop {
            let err = match self.read_stream(response, wire, &tx, &mut yielded).await {
                Ok(()) => return,
                Err(e) => e,
            };
            if yielded || reopened >= self.inner.provider.info().stream_max_retries {
                let _ = tx.send(Err(err)).await;
                return;
            }
            tracing::debug!(target: "model_client", provider = %self.inner.provider.id(), error = %err, "reopening the stream");
            let pause = backoff(u32::try_from(reopened).unwrap_or(u32::MAX));
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(pause) => {}
            }
            reopened += 1;
            let bound = Bound::Idle(self.inner.provider.info().stream_idle_timeout());
            let reopen = self.send(Method::POST, &url, Some(&body), bound);
            let reopened_response = tokio::select! {
                () = tx.closed() => return,
                r = reopen => r,
            };
            response = match reopened_response {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
        }
    }

    /// `Ok` when the stream completed or the consumer went away.
    async fn read_stream(
        &self,
        response: reqwest::Response,
        wire: Wire,
        tx: &tokio::sync::mpsc::Sender<Result<ResponseEvent, ClientError>>,
        yielded: &mut bool,
    ) -> Result<(), ClientError> {
        let idle = self.inner.provider.info().stream_idle_timeout();
        let mut body = response.bytes_stream();
        let mut parser = SseParser::default();
        loop {
            // The consumer dropping the stream ends the read at once, closing the connection.
            let next = tokio::select! {
                () = tx.closed() => return Ok(()),
                next = tokio::time::timeout(idle, body.next()) => next,
            };
            let chunk = match next {
                Err(_) => {
                    return Err(ClientError::StreamIdle {
                        provider: self.inner.provider.shared_id(),
                        idle_ms: self.inner.provider.info().stream_idle_timeout_ms,
                    });
                }
                Ok(None) => {
                    return Err(
                        self.decode_error("the stream ended before it completed".to_owned())
                    );
                }
                Ok(Some(Err(e))) => return Err(self.transport_error(&e)),
                Ok(Some(Ok(chunk))) => chunk,
            };
            let events = parser
                .feed(&chunk)
                .map_err(|e| self.decode_error(e.to_string()))?;
            for sse in events {
                let event = match wire {
                    Wire::Chat if sse.data.trim() == "[DONE]" => {
                        ResponseEvent::Completed { data: Value::Null }
                    }
                    _ => {
                        let data: Value = serde_json::from_str(&sse.data).map_err(|e| {
                            self.decode_error(format!(
                                "an event's data is not JSON (line {}, column {})",
                                e.line(),
                                e.column()
                            ))
                        })?;
                        let event = match wire {
                            Wire::Responses => {
                                ResponseEvent::from_responses(sse.event.as_deref(), data)
                            }
                            Wire::Chat => ResponseEvent::from_chat(data),
                        };
                        // An error event's text is gateway text: scrubbed before anyone sees it.
                        match event {
                            ResponseEvent::Failed { .. } => event.scrubbed(&self.scrubber(None)),
                            other => other,
                        }
                    }
                };
                let terminal = event.is_terminal();
                if tx.send(Ok(event)).await.is_err() {
                    return Ok(());
                }
                *yielded = true;
                if terminal {
                    return Ok(());
                }
            }
        }
    }

    /// The one request path: credential -> send -> on 401 report and retry once ->
    /// on 429/5xx/connection errors back off and retry up to `request_max_retries`.
    /// No credential, no request.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        bound: Bound,
    ) -> Result<reqwest::Response, ClientError> {
        let inner = &self.inner;
        let body = match body {
            Some(v) => Some(serde_json::to_vec(v).map_err(|e| self.decode_error(e.to_string()))?),
            None => None,
        };
        let mut auth = inner.provider.request();
        let mut retries = 0u64;
        loop {
            let credential = auth.credential_headers().await?;
            // The credential replaces a configured header of the same name.
            let mut headers = inner.headers.clone();
            for (name, value) in credential {
                headers.insert(name, value);
            }
            let mut request = inner
                .http
                .request(method.clone(), url.clone())
                .headers(headers);
            if let Some(body) = &body {
                request = request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            inner.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let outcome = match bound {
                Bound::Deadline(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(self.bound_error(bound));
                    }
                    match tokio::time::timeout(left, request.timeout(left).send()).await {
                        Ok(Err(e)) if e.is_timeout() => return Err(self.bound_error(bound)),
                        Ok(outcome) => outcome,
                        Err(_) => return Err(self.bound_error(bound)),
                    }
                }
                // Waiting for the first bytes is bounded like silence inside a stream.
                Bound::Idle(idle) => match tokio::time::timeout(idle, request.send()).await {
                    Ok(outcome) => outcome,
                    Err(_) => return Err(self.bound_error(bound)),
                },
            };
            if let Ok(response) = &outcome {
                tracing::trace!(target: "model_client", provider = %inner.provider.id(), %method, path = url.path(), status = response.status().as_u16(), "response");
            }
            let can_retry = retries < inner.provider.info().request_max_retries;
            let (delay, why) = match outcome {
                Ok(response) => {
                    let status = response.status();
                    // 401, or a status of `auth.reauth_on` (403 for some gateways).
                    if auth.is_reauth_status(status.as_u16()) {
                        inner.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                    }
                    match auth.after_status(status.as_u16()).await? {
                        Verdict::Retry => {
                            tracing::debug!(target: "model_client", provider = %inner.provider.id(), %method, path = url.path(), status = status.as_u16(), "the gateway rejected the token: retrying with a newer one");
                            continue;
                        }
                        Verdict::Rejected { after_fresh_token } => {
                            return Err(self
                                .status_error(response, &method, &auth, after_fresh_token, bound)
                                .await);
                        }
                        _ if status.is_success() => return Ok(response),
                        _ => {}
                    }
                    let retryable =
                        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    let wait = retry_after(response.headers());
                    if !retryable || !can_retry || wait.is_some_and(|w| w > MAX_RETRY_AFTER) {
                        return Err(self
                            .status_error(response, &method, &auth, false, bound)
                            .await);
                    }
                    let why = match wait {
                        Some(w) => format!(
                            "HTTP {} (Retry-After {} ms)",
                            status.as_u16(),
                            w.as_millis()
                        ),
                        None => format!("HTTP {}", status.as_u16()),
                    };
                    (
                        wait.unwrap_or_else(|| backoff(u32::try_from(retries).unwrap_or(u32::MAX))),
                        why,
                    )
                }
                Err(e) => {
                    // A TLS failure (a certificate the system does not trust, a server
                    // that does not speak TLS) will fail the same way again.
                    let retryable =
                        (e.is_connect() || e.is_timeout() || e.is_request()) && !is_tls_failure(&e);
                    if !retryable || !can_retry {
                        return Err(self.transport_error(&e));
                    }
                    let delay = backoff(u32::try_from(retries).unwrap_or(u32::MAX));
                    (delay, transport_kind(&e).to_owned())
                }
            };
            retries += 1;
            inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "model_client", provider = %inner.provider.id(), %method, path = url.path(), retry = retries, delay_ms = delay.as_millis(), reason = %why, "retrying");
            if let Bound::Deadline(at) = bound
                && Instant::now() + delay >= at
            {
                return Err(self.bound_error(bound));
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// The error for a status answer, with a scrubbed excerpt of its body. The body is read
    /// only as far as the excerpt needs, within `request_timeout_ms` (and `bound`).
    async fn status_error(
        &self,
        mut response: reqwest::Response,
        method: &Method,
        auth: &RequestAuth,
        after_fresh_token: bool,
        bound: Bound,
    ) -> ClientError {
        let status = response.status().as_u16();
        let path = response.url().path().to_owned();
        let mut deadline = Instant::now() + self.inner.provider.info().request_timeout();
        if let Bound::Deadline(at) = bound {
            deadline = deadline.min(at);
        }
        let mut raw = Vec::new();
        while raw.len() < ERROR_BODY_READ_BYTES {
            match tokio::time::timeout_at(deadline.into(), response.chunk()).await {
                Ok(Ok(Some(chunk))) => raw.extend_from_slice(&chunk),
                _ => break,
            }
        }
        raw.truncate(ERROR_BODY_READ_BYTES);
        let body = self
            .scrubber(Some(auth))
            .excerpt(&String::from_utf8_lossy(&raw), ERROR_BODY_EXCERPT_CHARS);
        // A rejected token whose stated expiry is already past: say so (a stale helper
        // cache, or a clock that is off), not only "rejected".
        let expired_at = self
            .inner
            .provider
            .is_reauth_status(status)
            .then(|| self.inner.provider.manager().token_status())
            .flatten()
            .and_then(|s| s.stated_expiry)
            .filter(|at| *at <= std::time::SystemTime::now())
            .map(provider_auth::format_rfc3339);
        ClientError::Status {
            provider: self.inner.provider.shared_id(),
            method: method.to_string(),
            path,
            status,
            body,
            auth_after_fresh_token: after_fresh_token,
            expired_at,
        }
    }

    /// The scrubber for this provider's gateway text (see [`Provider::scrubber`]).
    fn scrubber(&self, auth: Option<&RequestAuth>) -> Scrubber {
        self.inner.provider.scrubber(auth)
    }

    /// What failed, in a few words: the kind of failure and its root cause. The URL is left
    /// out (its query may hold a key); the host is named by the error itself.
    fn transport_error(&self, e: &reqwest::Error) -> ClientError {
        let mut root: Option<&dyn std::error::Error> = None;
        let mut next = std::error::Error::source(e);
        while let Some(source) = next {
            root = Some(source);
            next = source.source();
        }
        let kind = transport_kind(e);
        let message = match root {
            Some(cause) => format!("{kind}: {cause}"),
            None => kind.to_owned(),
        };
        ClientError::Transport {
            provider: self.inner.provider.shared_id(),
            host: self.inner.provider.host().to_owned(),
            message,
        }
    }

    fn decode_error(&self, detail: String) -> ClientError {
        ClientError::Decode {
            provider: self.inner.provider.shared_id(),
            detail,
        }
    }
}

/// The kind of a transport failure, in a few words (also the reason a retry logs).
fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if is_tls_failure(e) {
        "TLS handshake failed"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "the response body broke off"
    } else {
        "request failed"
    }
}

/// Whether connecting failed in TLS: rustls reports its errors (an untrusted certificate, a
/// peer that does not speak TLS) as I/O errors of kind `InvalidData` while connecting.
fn is_tls_failure(e: &reqwest::Error) -> bool {
    if !e.is_connect() {
        return false;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::InvalidData {
                return true;
            }
            // An I/O error's `source` skips the error it wraps: look at that one too.
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        next = err.source();
    }
    false
}

/// Follows redirects only to the origin (scheme, host, port) of the first request.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt.previous().first().is_some_and(|first| {
            first.scheme() == attempt.url().scheme()
                && first.host_str() == attempt.url().host_str()
                && first.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if !same_origin || attempt.previous().len() > MAX_REDIRECTS {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}
