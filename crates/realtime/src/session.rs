//! Connecting, and the session: JSON events in and out.

use std::sync::Arc;

use futures::{SinkExt as _, StreamExt as _};
use http::header;
use provider_auth::{AuthManager, Provider, RequestAuth, Scrubber, Verdict};
use provider_config::ModelProviderInfo;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::error::RealtimeError;
use transport::connect_tcp;

/// Largest message accepted from the server.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A realtime event: its `type` and every other field, kept as they came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealtimeEvent {
    /// The event type, e.g. `session.created`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The other fields.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl RealtimeEvent {
    /// An event of type `kind` with no other fields.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            fields: Map::new(),
        }
    }
}

/// Connects realtime sessions for one provider.
#[derive(Debug, Clone)]
pub struct RealtimeClient {
    provider: Provider,
}

/// An open websocket to the gateway (plain or TLS).
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An open websocket, as [`RealtimeClient::connect_socket`] returns it.
#[non_exhaustive]
pub struct OpenSocket {
    /// The socket, after its handshake.
    pub socket: Socket,
    /// The subprotocol the server chose, if any.
    pub protocol: Option<http::HeaderValue>,
    /// Handshakes the gateway refused with an auth status (`auth.reauth_on`) before this
    /// one succeeded with a newer token: 0, or 1 after a recovered rotation.
    pub auth_rejections: u32,
}

impl std::fmt::Debug for OpenSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSocket")
            .field("protocol", &self.protocol)
            .field("auth_rejections", &self.auth_rejections)
            .finish_non_exhaustive()
    }
}

/// An open realtime session.
#[derive(Debug)]
pub struct RealtimeSession {
    client: RealtimeClient,
    model: String,
    socket: Socket,
}

impl RealtimeClient {
    /// A client for `provider_id` using `auth` (the same manager the HTTP client uses).
    /// Reads the variables of `env_http_headers` now.
    pub fn new(provider_id: &str, info: ModelProviderInfo, auth: Arc<dyn AuthManager>) -> Self {
        Self::for_provider(Provider::new(provider_id, info, auth))
    }

    /// A client for `provider`, set up once and shared with the HTTP client and the proxy.
    pub fn for_provider(provider: Provider) -> Self {
        Self { provider }
    }

    /// Opens a session for `model`: `RealtimeClient::new(...).connect(model)` in one call.
    pub async fn connect(
        provider_id: &str,
        info: ModelProviderInfo,
        auth: Arc<dyn AuthManager>,
        model: &str,
    ) -> Result<RealtimeSession, RealtimeError> {
        Self::new(provider_id, info, auth).open(model).await
    }

    /// Opens a session for `model`.
    pub async fn open(&self, model: &str) -> Result<RealtimeSession, RealtimeError> {
        let socket = self.handshake(model).await?;
        Ok(RealtimeSession {
            client: self.clone(),
            model: model.to_owned(),
            socket,
        })
    }

    /// The websocket URL: base_url's host and path + `/realtime?model=M`, ws or wss.
    pub fn url(&self, model: &str) -> Result<Url, RealtimeError> {
        let mut url = self
            .provider
            .info()
            .endpoint_url("realtime")
            .map_err(|source| RealtimeError::Url {
                provider: self.provider.shared_id(),
                source,
            })?;
        url.query_pairs_mut().append_pair("model", model);
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|()| {
            self.config_error(format!(
                "cannot make a websocket URL from `{}`",
                self.provider.info().base_url
            ))
        })?;
        Ok(url)
    }

    fn config_error(&self, detail: String) -> RealtimeError {
        RealtimeError::Config {
            provider: self.provider.shared_id(),
            detail,
        }
    }

    async fn handshake(&self, model: &str) -> Result<Socket, RealtimeError> {
        let url = self.url(model)?;
        let socket = self
            .connect_socket(&url, &http::HeaderMap::new())
            .await?
            .socket;
        tracing::debug!(target: "realtime", provider = %self.provider.id(), model, "realtime session opened");
        Ok(socket)
    }

    /// Opens a websocket to any `ws://` or `wss://` `url` of this provider: the provider's
    /// headers, then `extra_headers` (e.g. a client's `Sec-WebSocket-Protocol`), then the
    /// credential; one reconnect after a handshake 401; the environment's proxy; bounded by
    /// `websocket_connect_timeout_ms`. Returns the socket, the subprotocol the server chose
    /// and how many handshakes were refused on the way. This is the one websocket handshake
    /// path (the credential proxy uses it too).
    pub async fn connect_socket(
        &self,
        url: &Url,
        extra_headers: &http::HeaderMap,
    ) -> Result<OpenSocket, RealtimeError> {
        let mut auth = self.provider.request();
        let mut auth_rejections = 0;
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES))
            .max_write_buffer_size(MAX_MESSAGE_BYTES);
        loop {
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|e| self.config_error(format!("invalid websocket request: {e}")))?;
            // The same headers as every HTTP request (one place builds them).
            let base = self
                .provider
                .headers()
                .map_err(|source| RealtimeError::Header {
                    provider: self.provider.shared_id(),
                    source,
                })?;
            let headers = request.headers_mut();
            for (name, value) in base.iter().chain(extra_headers) {
                headers.insert(name, value.clone());
            }
            for (name, value) in auth.credential_headers().await? {
                headers.insert(name, value);
            }
            let connect = self.open_socket(request, config, url);
            let result = match tokio::time::timeout(
                self.provider.info().websocket_connect_timeout(),
                connect,
            )
            .await
            {
                Err(_) => {
                    return Err(RealtimeError::ConnectTimeout {
                        provider: self.provider.shared_id(),
                        host: self.provider.host().to_owned(),
                        timeout_ms: self.provider.info().websocket_connect_timeout_ms,
                    });
                }
                Ok(result) => result,
            };
            // The handshake's answer: 101 Switching Protocols, or the status refusing it.
            let status = match &result {
                Ok(_) => 101,
                Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
                Err(e) => return Err(self.connection_error(e)),
            };
            if self.provider.is_reauth_status(status) {
                auth_rejections += 1;
            }
            let verdict = auth.after_status(status).await?;
            match result {
                Ok((socket, protocol)) => {
                    return Ok(OpenSocket {
                        socket,
                        protocol,
                        auth_rejections,
                    });
                }
                Err(tungstenite::Error::Http(response)) => {
                    let after_fresh_token = match verdict {
                        Verdict::Retry => {
                            tracing::debug!(target: "realtime", provider = %self.provider.id(), "handshake 401: reconnecting with a newer token");
                            continue;
                        }
                        Verdict::Rejected { after_fresh_token } => after_fresh_token,
                        _ => false,
                    };
                    let body = response
                        .body()
                        .as_deref()
                        .map(|b| {
                            self.scrubber(Some(&auth))
                                .excerpt(&String::from_utf8_lossy(b), EXCERPT_CHARS)
                        })
                        .unwrap_or_default();
                    return Err(self.handshake_error(status, body, after_fresh_token));
                }
                Err(e) => return Err(self.connection_error(&e)),
            }
        }
    }

    /// TCP (directly, or through the proxy the environment names), then TLS and the
    /// websocket handshake.
    async fn open_socket(
        &self,
        request: tungstenite::handshake::client::Request,
        config: WebSocketConfig,
        url: &Url,
    ) -> Result<(Socket, Option<http::HeaderValue>), tungstenite::Error> {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(443);
        let socket = connect_tcp(url.scheme() == "wss", host, port)
            .await
            .map_err(tungstenite::Error::Io)?;
        socket.set_nodelay(true).map_err(tungstenite::Error::Io)?;
        // The one TLS configuration (the platform's trust store), for `wss` only.
        let tls = if url.scheme() == "wss" {
            let config = transport::tls_config()
                .map_err(|e| tungstenite::Error::Io(std::io::Error::other(e)))?;
            Some(tokio_tungstenite::Connector::Rustls(config))
        } else {
            None
        };
        tokio_tungstenite::client_async_tls_with_config(request, socket, Some(config), tls)
            .await
            .map(|(socket, response)| {
                let protocol = response
                    .headers()
                    .get(header::SEC_WEBSOCKET_PROTOCOL)
                    .cloned();
                (socket, protocol)
            })
    }

    /// The scrubber for this provider's gateway text (see [`Provider::scrubber`]).
    fn scrubber(&self, auth: Option<&RequestAuth>) -> Scrubber {
        self.provider.scrubber(auth)
    }

    fn handshake_error(
        &self,
        status: u16,
        body: String,
        auth_after_fresh_token: bool,
    ) -> RealtimeError {
        RealtimeError::Handshake {
            provider: self.provider.shared_id(),
            status,
            body,
            auth_after_fresh_token,
        }
    }

    fn connection_error(&self, e: &tungstenite::Error) -> RealtimeError {
        RealtimeError::Connection {
            provider: self.provider.shared_id(),
            host: self.provider.host().to_owned(),
            message: e.to_string(),
        }
    }
}

/// Most of a handshake body or bad message kept for errors.
const EXCERPT_CHARS: usize = 300;

impl RealtimeSession {
    /// The model of this session.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Sends an event.
    pub async fn send(&mut self, event: &RealtimeEvent) -> Result<(), RealtimeError> {
        let text = serde_json::to_string(event).map_err(|e| self.protocol_error(e.to_string()))?;
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|e| self.client.connection_error(&e))
    }

    /// Sends a JSON object as an event; it must have a string `type`.
    pub async fn send_json(&mut self, event: Value) -> Result<(), RealtimeError> {
        let event: RealtimeEvent = serde_json::from_value(event).map_err(|_| {
            self.protocol_error("an event must be a JSON object with a string `type`".to_owned())
        })?;
        self.send(&event).await
    }

    /// The next server event. `None` after a clean close that this side started; a close
    /// by the server or a broken connection is an error. Pings are answered.
    pub async fn next_event(&mut self) -> Option<Result<RealtimeEvent, RealtimeError>> {
        loop {
            let message = match self.socket.next().await? {
                Ok(m) => m,
                Err(tungstenite::Error::ConnectionClosed) => return None,
                Err(e) => return Some(Err(self.client.connection_error(&e))),
            };
            match message {
                Message::Text(text) => {
                    return Some(serde_json::from_str::<RealtimeEvent>(&text).map_err(|_| {
                        self.protocol_error(format!(
                            "not a JSON event with a string `type`: {}",
                            self.client.scrubber(None).excerpt(&text, EXCERPT_CHARS)
                        ))
                    }));
                }
                Message::Binary(_) => {
                    return Some(Err(self.protocol_error("a binary message".to_owned())));
                }
                Message::Close(frame) => {
                    let (code, reason) = frame
                        .map(|f| {
                            let reason =
                                self.client.scrubber(None).excerpt(&f.reason, EXCERPT_CHARS);
                            (u16::from(f.code), reason)
                        })
                        .unwrap_or((1005, String::new()));
                    return Some(Err(RealtimeError::Closed {
                        provider: self.client.provider.shared_id(),
                        code,
                        reason,
                    }));
                }
                // Pings are answered by the protocol layer on the next read or write.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Closes the session cleanly (close frame, then the server's answer).
    pub async fn close(mut self) -> Result<(), RealtimeError> {
        match self.socket.close(None).await {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => {}
            Err(e) => return Err(self.client.connection_error(&e)),
        }
        // Drain until the server acknowledges the close.
        while let Some(Ok(_)) = self.socket.next().await {}
        Ok(())
    }

    /// Replaces the connection with a new one using the current token (for example after
    /// the server closed it, or before a long-lived session's token expires).
    pub async fn reconnect(&mut self) -> Result<(), RealtimeError> {
        let socket = self.client.handshake(&self.model).await?;
        let old = std::mem::replace(&mut self.socket, socket);
        drop(old);
        Ok(())
    }

    fn protocol_error(&self, detail: String) -> RealtimeError {
        RealtimeError::Protocol {
            provider: self.client.provider.shared_id(),
            detail,
        }
    }
}
