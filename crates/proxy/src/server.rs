//! Binding, routing, access control, health and stats, graceful shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header;
use provider_auth::AuthManager;
use provider_config::ModelProviderInfo;
use serde::Serialize;

use crate::access::{loopback_host, presents_key};
use crate::error::{ProxyError, ProxyErrorCode, answer};

/// Where the proxy listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8585";
/// Largest request body buffered for a replay after an auth failure (8 MiB).
pub const DEFAULT_MAX_REPLAY_BYTES: usize = 8 * 1024 * 1024;
/// How long requests in flight may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// One provider served by the proxy, at `http://HOST:PORT/<id>`.
#[derive(Debug, Clone)]
pub struct ProxyProvider {
    /// The provider id (the first path segment).
    pub id: String,
    /// Its config.
    pub info: ModelProviderInfo,
    /// Its auth manager (shares the process-wide cache of its auth config).
    pub auth: Arc<dyn AuthManager>,
}

impl ProxyProvider {
    /// A provider served under `id`.
    pub fn new(id: impl Into<String>, info: ModelProviderInfo, auth: Arc<dyn AuthManager>) -> Self {
        Self {
            id: id.into(),
            info,
            auth,
        }
    }
}

/// What to serve, and how.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// The listen address (port 0: any free port).
    pub listen: SocketAddr,
    /// The providers.
    pub providers: Vec<ProxyProvider>,
    /// The key every request must present, if any (required to listen off loopback).
    pub client_key: Option<String>,
    /// Largest request body buffered for a replay after an auth failure.
    pub max_replay_bytes: usize,
}

impl ProxyConfig {
    /// A config for `providers` on `listen`, no client key, the default replay limit.
    pub fn new(listen: SocketAddr, providers: Vec<ProxyProvider>) -> Self {
        Self {
            listen,
            providers,
            client_key: None,
            max_replay_bytes: DEFAULT_MAX_REPLAY_BYTES,
        }
    }

    /// The same config requiring `key` from every client.
    pub fn with_client_key(mut self, key: impl Into<String>) -> Self {
        self.client_key = Some(key.into());
        self
    }

    /// The same config with another replay limit.
    pub fn with_max_replay_bytes(mut self, bytes: usize) -> Self {
        self.max_replay_bytes = bytes;
        self
    }
}

/// Counters of one provider, as `GET /_modelauth/stats` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProviderStats {
    /// Requests received for this provider.
    pub requests: u64,
    /// Requests replayed with a fresh token after an auth failure.
    pub replays: u64,
    /// Auth-failure answers from the gateway.
    pub upstream_auth_failures: u64,
    /// Token command runs (the provider's cache).
    pub command_runs: u64,
    /// Answers the proxy made itself (token unavailable, upstream unreachable or timed out).
    pub errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) replays: AtomicU64,
    pub(crate) upstream_auth_failures: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// A provider as the request handlers see it.
pub(crate) struct Route {
    pub(crate) id: String,
    pub(crate) info: ModelProviderInfo,
    /// `base_url` with the provider's `query_params`, parsed once at bind.
    pub(crate) base: url::Url,
    pub(crate) auth: Arc<dyn AuthManager>,
    pub(crate) headers: http::HeaderMap,
    pub(crate) header_secrets: Vec<String>,
    pub(crate) http: crate::upstream::UpstreamClient,
    pub(crate) counters: Counters,
}

impl Route {
    pub(crate) fn count(&self, counter: impl Fn(&Counters) -> &AtomicU64) {
        counter(&self.counters).fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct Shared {
    pub(crate) routes: BTreeMap<String, Arc<Route>>,
    pub(crate) client_key: Option<Vec<u8>>,
    pub(crate) port: u16,
    pub(crate) max_replay_bytes: usize,
}

/// A bound proxy, ready to serve.
pub struct Proxy {
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.local_addr())
            .field("providers", &self.shared.routes.keys())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Checks the config and binds the listen address. A non-loopback address without a
    /// client key is refused.
    pub async fn bind(config: ProxyConfig) -> Result<Self, ProxyError> {
        if !config.listen.ip().is_loopback() && config.client_key.is_none() {
            return Err(ProxyError::NotLoopback {
                addr: config.listen,
            });
        }
        if config.providers.is_empty() {
            return Err(ProxyError::NoProviders);
        }
        let mut routes = BTreeMap::new();
        for p in config.providers {
            let problem = |detail: String| ProxyError::Provider {
                provider: p.id.clone(),
                detail,
            };
            let headers = provider_auth::provider_headers(&p.info).map_err(problem)?;
            let base = p.info.endpoint_url("").map_err(problem)?;
            let http = crate::upstream::client(p.info.connect_timeout()).map_err(problem)?;
            let route = Route {
                id: p.id.clone(),
                header_secrets: provider_auth::configured_header_values(&p.info),
                info: p.info,
                base,
                auth: p.auth,
                headers,
                http,
                counters: Counters::default(),
            };
            routes.insert(p.id, Arc::new(route));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: config.listen,
                source,
            })?;
        let port = listener
            .local_addr()
            .map_or(config.listen.port(), |a| a.port());
        Ok(Self {
            listener,
            shared: Arc::new(Shared {
                routes,
                client_key: config.client_key.map(String::into_bytes),
                port,
                max_replay_bytes: config.max_replay_bytes,
            }),
        })
    }

    /// The bound address (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], self.shared.port)))
    }

    /// The served provider ids, in order.
    pub fn provider_ids(&self) -> Vec<String> {
        self.shared.routes.keys().cloned().collect()
    }

    /// A handle to read the counters while the proxy serves.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.shared.clone())
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets requests in flight
    /// finish for up to [`SHUTDOWN_GRACE`].
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProxyError> {
        let app = Router::new()
            .route("/_modelauth/health", get(health))
            .route("/_modelauth/stats", get(stats))
            .fallback(crate::forward::handle)
            .layer(axum::middleware::from_fn_with_state(
                self.shared.clone(),
                access,
            ))
            .with_state(self.shared.clone());
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        };
        // Small answers go out at once (no Nagle delay on the client side of the hop).
        let listener = axum::serve::ListenerExt::tap_io(self.listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, app).with_graceful_shutdown(signal);
        let grace = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = serve => result.map_err(ProxyError::Serve),
            () = grace => Ok(()),
        }
    }
}

/// Reads a running proxy's counters.
#[derive(Clone)]
pub struct StatsHandle(Arc<Shared>);

impl std::fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StatsHandle").field(&self.get()).finish()
    }
}

impl StatsHandle {
    /// Every provider's counters, by id.
    pub fn get(&self) -> BTreeMap<String, ProviderStats> {
        collect_stats(&self.0)
    }
}

fn collect_stats(shared: &Shared) -> BTreeMap<String, ProviderStats> {
    shared
        .routes
        .iter()
        .map(|(id, r)| {
            let c = &r.counters;
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            (
                id.clone(),
                ProviderStats {
                    requests: load(&c.requests),
                    replays: load(&c.replays),
                    upstream_auth_failures: load(&c.upstream_auth_failures),
                    command_runs: r.auth.stats().map_or(0, |s| s.command_runs),
                    errors: load(&c.errors),
                },
            )
        })
        .collect()
}

async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(serde_json::json!({"providers": collect_stats(&shared)})).into_response()
}

/// Access control, before anything else: the client key when one is set, else a loopback
/// `Host`.
async fn access(
    State(shared): State<Arc<Shared>>,
    request: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    match &shared.client_key {
        Some(key) => {
            if !presents_key(request.headers(), key) {
                return answer(
                    ProxyErrorCode::ClientKeyRequired,
                    "this proxy requires its client key as `Authorization: Bearer KEY`, `api-key` or `x-api-key`",
                );
            }
        }
        None => {
            let host = request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok());
            if !loopback_host(host, shared.port) {
                return answer(
                    ProxyErrorCode::ForbiddenHost,
                    "the Host header must be 127.0.0.1, localhost or [::1] with this proxy's port",
                );
            }
        }
    }
    next.run(request).await
}
