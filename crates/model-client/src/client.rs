//! The HTTP model client: one request path for every endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::BoxStream;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use provider_auth::{AuthManager, AuthRetry, RequestAuth};
use provider_config::{ModelProviderInfo, WireApi};
use serde_json::Value;
use url::Url;

use crate::error::ClientError;
use crate::events::{ModelList, ResponseEvent};
use crate::retry::{MAX_RETRY_AFTER, backoff, retry_after};
use crate::sse::SseParser;

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("modelauth/", env!("CARGO_PKG_VERSION"));

/// Most of an error body kept for messages.
const ERROR_BODY_EXCERPT_CHARS: usize = 300;

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
            .field("provider", &self.inner.provider)
            .field("host", &self.inner.host)
            .field("wire_api", &self.inner.info.wire_api)
            .field("auth", &self.inner.auth)
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
    provider: Arc<str>,
    info: ModelProviderInfo,
    auth: Arc<dyn AuthManager>,
    headers: HeaderMap,
    host: String,
    models_url: Url,
    responses_url: Url,
    chat_url: Url,
}

#[derive(Debug, Clone, Copy)]
enum Wire {
    Responses,
    Chat,
}

impl ModelClient {
    /// A client for `provider_id` using `auth` for credentials. Reads the variables of
    /// `env_http_headers` now.
    pub fn new(
        provider_id: &str,
        info: ModelProviderInfo,
        auth: Arc<dyn AuthManager>,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| ClientError::Config {
                provider: provider_id.into(),
                detail: format!("cannot build the HTTP client: {e}"),
            })?;
        Self::with_http_client(provider_id, info, auth, http)
    }

    /// Like [`ModelClient::new`] with a caller-built `reqwest::Client` (proxies, TLS roots...).
    pub fn with_http_client(
        provider_id: &str,
        info: ModelProviderInfo,
        auth: Arc<dyn AuthManager>,
        http: reqwest::Client,
    ) -> Result<Self, ClientError> {
        let provider: Arc<str> = provider_id.into();
        let config_error = |detail: String| ClientError::Config {
            provider: provider.clone(),
            detail,
        };
        let url = |path: &str| info.endpoint_url(path).map_err(config_error);
        let models_url = url("models")?;
        let responses_url = url("responses")?;
        let chat_url = url("chat/completions")?;
        let host = match (models_url.host_str(), models_url.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => info.base_url.clone(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        for (name, value) in info.extra_headers(|var| std::env::var(var).ok()) {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| config_error(format!("`{name}` is not a valid header name")))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| config_error(format!("the value of header `{name}` is not valid")))?;
            // Configured headers often carry keys: never shown by `Debug`.
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                counters: Counters::default(),
                http,
                provider,
                info,
                auth,
                headers,
                host,
                models_url,
                responses_url,
                chat_url,
            }),
        })
    }

    /// The provider id.
    pub fn provider_id(&self) -> &str {
        &self.inner.provider
    }

    /// The provider config.
    pub fn provider(&self) -> &ModelProviderInfo {
        &self.inner.info
    }

    /// The auth manager (shared with any realtime client built for the provider).
    pub fn auth_manager(&self) -> &Arc<dyn AuthManager> {
        &self.inner.auth
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

    /// `GET /models`.
    pub async fn list_models(&self) -> Result<ModelList, ClientError> {
        let response = self.send(Method::GET, &self.inner.models_url, None).await?;
        response.json::<ModelList>().await.map_err(|e| {
            self.decode_error(format!(
                "the model list is not `{{\"data\": [{{\"id\": ...}}]}}`: {}",
                e.without_url()
            ))
        })
    }

    /// `POST /responses` with `stream: false`; the JSON answer.
    pub async fn create_response(&self, request: &Value) -> Result<Value, ClientError> {
        let mut body = request.clone();
        if let Value::Object(o) = &mut body {
            o.insert("stream".to_owned(), Value::Bool(false));
        }
        let response = self
            .send(Method::POST, &self.inner.responses_url, Some(&body))
            .await?;
        response.json::<Value>().await.map_err(|e| {
            self.decode_error(format!("the response is not JSON: {}", e.without_url()))
        })
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
        match self.inner.info.wire_api {
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
        let first = self.send(Method::POST, &url, Some(&body)).await?;
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
            if yielded || reopened >= self.inner.info.stream_max_retries {
                let _ = tx.send(Err(err)).await;
                return;
            }
            tracing::debug!(target: "model_client", provider = %self.inner.provider, error = %err, "reopening the stream");
            tokio::time::sleep(backoff(u32::try_from(reopened).unwrap_or(u32::MAX))).await;
            reopened += 1;
            response = match self.send(Method::POST, &url, Some(&body)).await {
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
        let idle = self.inner.info.stream_idle_timeout();
        let mut body = response.bytes_stream();
        let mut parser = SseParser::default();
        loop {
            let chunk = match tokio::time::timeout(idle, body.next()).await {
                Err(_) => {
                    return Err(ClientError::StreamIdle {
                        provider: self.inner.provider.clone(),
                        idle_ms: self.inner.info.stream_idle_timeout_ms,
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
            let events = parser.feed(&chunk).map_err(|e| self.decode_error(e))?;
            for sse in events {
                let event = match wire {
                    Wire::Chat if sse.data.trim() == "[DONE]" => {
                        ResponseEvent::Completed { data: Value::Null }
                    }
                    _ => {
                        let data: Value = serde_json::from_str(&sse.data).map_err(|e| {
                            self.decode_error(format!("an event's data is not JSON ({e})"))
                        })?;
                        match wire {
                            Wire::Responses => {
                                ResponseEvent::from_responses(sse.event.as_deref(), data)
                            }
                            Wire::Chat => ResponseEvent::from_chat(data),
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
    ) -> Result<reqwest::Response, ClientError> {
        let inner = &self.inner;
        let streaming = body.is_some_and(|b| b.get("stream") == Some(&Value::Bool(true)));
        let body = match body {
            Some(v) => Some(serde_json::to_vec(v).map_err(|e| self.decode_error(e.to_string()))?),
            None => None,
        };
        let mut auth = RequestAuth::new(inner.auth.clone());
        let mut retries = 0u64;
        loop {
            let authorization = auth.authorization().await?;
            // The credential replaces any Authorization header from the config.
            let mut headers = inner.headers.clone();
            if let Some(value) = authorization {
                headers.insert(header::AUTHORIZATION, value);
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
            // A stream's first bytes are bounded by the idle timeout too.
            let outcome = match streaming {
                true => {
                    match tokio::time::timeout(inner.info.stream_idle_timeout(), request.send())
                        .await
                    {
                        Ok(outcome) => outcome,
                        Err(_) => {
                            return Err(ClientError::StreamIdle {
                                provider: inner.provider.clone(),
                                idle_ms: inner.info.stream_idle_timeout_ms,
                            });
                        }
                    }
                }
                false => request.send().await,
            };
            let can_retry = retries < inner.info.request_max_retries;
            let delay = match outcome {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    inner.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                    match auth.on_unauthorized().await? {
                        AuthRetry::Retry => {
                            tracing::debug!(target: "model_client", provider = %inner.provider, "401: retrying with a newer token");
                            continue;
                        }
                        AuthRetry::GiveUp { after_fresh_token } => {
                            return Err(self
                                .status_error(response, &auth, after_fresh_token)
                                .await);
                        }
                        _ => return Err(self.status_error(response, &auth, false).await),
                    }
                }
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retryable =
                        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    let wait = retry_after(response.headers());
                    if !retryable || !can_retry || wait.is_some_and(|w| w > MAX_RETRY_AFTER) {
                        return Err(self.status_error(response, &auth, false).await);
                    }
                    wait.unwrap_or_else(|| backoff(u32::try_from(retries).unwrap_or(u32::MAX)))
                }
                Err(e) => {
                    let retryable = e.is_connect() || e.is_timeout() || e.is_request();
                    if !retryable || !can_retry {
                        return Err(self.transport_error(&e));
                    }
                    backoff(u32::try_from(retries).unwrap_or(u32::MAX))
                }
            };
            retries += 1;
            inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "model_client", provider = %inner.provider, retry = retries, delay_ms = delay.as_millis(), "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn status_error(
        &self,
        mut response: reqwest::Response,
        auth: &RequestAuth,
        after_fresh_token: bool,
    ) -> ClientError {
        let status = response.status().as_u16();
        let mut raw = Vec::new();
        while raw.len() < 4096 {
            match tokio::time::timeout(Duration::from_secs(5), response.chunk()).await {
                Ok(Ok(Some(chunk))) => raw.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let body = auth.scrub_excerpt(&String::from_utf8_lossy(&raw), ERROR_BODY_EXCERPT_CHARS);
        ClientError::Status {
            provider: self.inner.provider.clone(),
            status,
            body,
            auth_after_fresh_token: after_fresh_token,
        }
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
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_body() || e.is_decode() {
            "the response body broke off"
        } else {
            "request failed"
        };
        let message = match root {
            Some(cause) => format!("{kind}: {cause}"),
            None => kind.to_owned(),
        };
        ClientError::Transport {
            provider: self.inner.provider.clone(),
            host: self.inner.host.clone(),
            message,
        }
    }

    fn decode_error(&self, detail: String) -> ClientError {
        ClientError::Decode {
            provider: self.inner.provider.clone(),
            detail,
        }
    }
}
