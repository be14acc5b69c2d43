//! A credential-injecting loopback proxy, so that any OpenAI-compatible tool (the OpenAI
//! SDKs, curl, IDE plugins), which only knows a base URL and a static key, gets
//! command-backed tokens with no change: `http://HOST:PORT/<provider>/<rest>?<q>` goes to
//! `<base_url>/<rest>?<q>` with the provider's credential.
//!
//! The proxy is a client of the same libraries as everything else: credentials come only
//! through [`provider_auth::RequestAuth`] over the provider's scoped
//! [`provider_auth::AuthManager`] (one process-wide cache per auth config, refresh ahead,
//! single flight, the rejected-token breaker), websockets through
//! [`realtime::RealtimeClient::connect_socket`], and gateway text through the one
//! [`provider_auth::Scrubber`].
//!
//! What it guarantees:
//! - loopback only unless a client key is required; without a client key the `Host` header
//!   must be loopback (a page on another origin using DNS rebinding gets 403), and a
//!   browser's request from a page on another site (`Origin`) is refused;
//! - a path with a `.` or `..` segment is refused, never resolved against the base path;
//! - every inbound `Authorization`, `api-key` and `x-api-key` header is removed, and
//!   hop-by-hop headers are not forwarded; redirects are passed back, never followed;
//! - a request body up to the replay limit is replayed once after an auth failure; a larger
//!   one streams through and its 401 goes back to the client; nothing else is retried;
//! - response bodies stream through as they arrive, cut when the gateway goes silent for
//!   longer than `stream_idle_timeout_ms`; websocket upgrades are relayed both ways;
//! - what the gateway says that could echo the token is scrubbed before the client sees it:
//!   error bodies, redirect and error headers, SSE error events, websocket error frames,
//!   non-JSON frames and close reasons;
//! - log lines carry provider, method, path (no query), status, time and whether the
//!   request was replayed: never a token, a query string or a header value.
//!
//! # Platform and runtime
//!
//! Unix only, on any Tokio runtime. The CLI's `modelauth proxy` runs it on one thread (a
//! current-thread runtime), like one nginx worker: a request never waits for a second
//! thread to be scheduled. Server side: HTTP/1.1 with upgrades, on hyper. Upstream: hyper's
//! pooled HTTP/1.1 client, TLS by rustls with the platform's trust store, through the
//! proxy that `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` name (`NO_PROXY` respected), with a
//! `CONNECT` tunnel.
//!
//! # Errors
//!
//! Starting fails with a [`ProxyError`] (an address that cannot be bound, a non-loopback
//! address without a client key, a provider that cannot be served). At run time a request
//! that cannot be served gets one of the answers of [`ProxyErrorCode`] with its status and
//! a JSON body in the OpenAI error shape; the proxy itself keeps running.
//!
//! # Cancellation
//!
//! Stopping the server (the shutdown signal given to [`Proxy::serve`]) lets requests in
//! flight finish within a grace period; dropping a client connection drops its upstream
//! request and stream at once.

mod access;
mod body;
mod error;
mod forward;
mod headers;
mod idle;
mod keys;
pub mod limits;
mod metrics;
mod route;
mod server;
mod sse;
mod upstream;
mod websocket;

pub use error::{ProxyError, ProxyErrorCode};
pub use keys::{ClientKeys, ClientKeysError};
pub use server::{
    ClientKeysHandle, DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_CLIENT_IDLE_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_MAX_REPLAY_BYTES, DEFAULT_REPLAY_BUDGET_BYTES, DEFAULT_SOCKET_MODE, InheritedListener,
    ProviderStats, Proxy, ProxyConfig, ProxyProvider, SHUTDOWN_GRACE, StatsHandle, UnixSocket,
};

/// Target of this crate's tracing events (one per request).
pub const TRACING_TARGET: &str = "proxy";
