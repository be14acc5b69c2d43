//! A local OpenAI-compatible gateway that mints short-lived tokens and checks them on every
//! HTTP request and websocket handshake. The demo, the tests and the benchmarks run against
//! it on `127.0.0.1:0`; nothing here is meant for production traffic.
//!
//! Routes (all but the token endpoint and admin routes need `Authorization: Bearer <token>`
//! with a token it minted, not rotated away and not expired):
//!
//! | route | what |
//! |---|---|
//! | `POST /oauth/token` | mints a token: `{"access_token","token_type":"Bearer","expires_in"}` |
//! | `GET /v1/models` | `{"object":"list","data":[{"id","object":"model"}]}` |
//! | `POST /v1/responses` | SSE `response.created`, `response.output_text.delta`..., `response.completed` (or JSON with `"stream": false`) |
//! | `POST /v1/chat/completions` | SSE `chat.completion.chunk`s then `[DONE]` (or JSON) |
//! | `GET /v1/responses` | websocket: each `response.create` (a Responses request's fields beside `"type"`) is answered with the events `POST` streams, one JSON text frame each; other events are ignored |
//! | `POST /v1/messages` | Anthropic's Messages API (as Claude Code calls it): SSE `message_start`, `content_block_delta`..., `message_stop` (or JSON without `"stream": true`); the token as `Authorization: Bearer` |
//! | `GET /v1/realtime?model=M` | websocket; the server speaks first with `session.created`; `response.create`, `session.update`, `conversation.item.create` are answered; `debug.ping` makes it ping the client and report the pong as `debug.pong_received` |
//! | `POST /admin/rotate` | every token minted so far gets 401 from now on |
//! | `GET /admin/counters` | the [`Counters`] as JSON |
//! | `POST /admin/fault` | `{"route": "models", "fault": "unauthorized", "times": 2}` sets a fault (see [`Fault`]; `"none"` clears) |

mod routes;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use state::{Counters, Fault, MintedToken, Route};

use state::Shared;

/// How the gateway behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Lifetime of minted tokens (default 300 s).
    pub token_lifetime: Duration,
    /// Model ids listed by `/v1/models`.
    pub models: Vec<String>,
    /// Port on 127.0.0.1 (default 0: any free port).
    pub port: u16,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            token_lifetime: Duration::from_secs(300),
            models: vec!["dev-small".to_owned(), "dev-large".to_owned()],
            port: 0,
        }
    }
}

impl GatewayConfig {
    /// The default config with another token lifetime.
    pub fn with_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// The default config on a fixed port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// Binding the listener failed.
    #[error("cannot listen on 127.0.0.1:{port}")]
    Bind {
        /// The port asked for.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running gateway. Dropping it stops the server.
#[derive(Debug)]
pub struct DevGateway {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl DevGateway {
    /// Starts the gateway on `127.0.0.1` (port 0 picks a free one).
    pub async fn start(config: GatewayConfig) -> Result<Self, GatewayError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
            .await
            .map_err(|source| GatewayError::Bind {
                port: config.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            port: config.port,
            source,
        })?;
        let shared = Arc::new(Shared::new(config));
        let app = routes::router(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(target: "dev_gateway", error = %e, "gateway stopped");
            }
        });
        Ok(Self {
            addr,
            shared,
            shutdown: Some(tx),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-compatible base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The token endpoint, `http://127.0.0.1:PORT/oauth/token`.
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth/token", self.addr)
    }

    /// Mints a token directly (as `POST /oauth/token` does).
    pub fn mint_token(&self) -> MintedToken {
        self.shared.mint()
    }

    /// Rotates: every token minted so far is answered with 401 from now on.
    pub fn rotate(&self) {
        self.shared.rotate();
    }

    /// Sets (or with `None` clears) a fault on a route, for every request.
    pub fn set_fault(&self, route: Route, fault: Option<Fault>) {
        self.shared.set_fault(route, fault, None);
    }

    /// Sets a fault on a route for the next `times` requests only.
    pub fn set_fault_times(&self, route: Route, fault: Fault, times: u32) {
        self.shared.set_fault(route, Some(fault), Some(times));
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }
}

impl Drop for DevGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
