//! Binding, routing, access control, health and stats, graceful shutdown.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::body::{Body, Response};
use http::{HeaderValue, Method, Request, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use provider_auth::{AuthManager, Provider};
use provider_config::ModelProviderInfo;
use serde::Serialize;

use crate::TRACING_TARGET;
use crate::access::{from_another_site, loopback_host, presents_key};
use crate::error::{ProxyError, ProxyErrorCode, answer};
use crate::limits::Proof;
use crate::route::{Counters, Route, Shared};

/// Health: `{"status":"ok"}`.
const HEALTH_PATH: &str = "/_modelauth/health";
/// The counters of every provider.
const STATS_PATH: &str = "/_modelauth/stats";
/// Prometheus (OpenMetrics text) metrics.
const METRICS_PATH: &str = "/_modelauth/metrics";
/// Readiness: 200 while every provider holds a usable token (or needs none).
const READY_PATH: &str = "/_modelauth/ready";

/// Where the proxy listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8585";
/// Largest request body buffered for a replay after an auth failure (8 MiB).
pub const DEFAULT_MAX_REPLAY_BYTES: usize = 8 * 1024 * 1024;
/// How long a request body that is being buffered (for a replay) may stall before the
/// request is answered 408.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most request-body bytes buffered for replays at once, process-wide (128 MiB): over
/// it, bodies stream through without replay, so slow uploads cannot take the memory.
pub const DEFAULT_REPLAY_BUDGET_BYTES: usize = 128 * 1024 * 1024;
/// How long requests in flight may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client connection may wait before its next request head is complete: a
/// connection that sends nothing, or a head that never ends, is closed after it (75 s, as
/// nginx's `keepalive_timeout`; every OpenAI SDK closes its idle connections sooner).
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// One provider served by the proxy, at `http://HOST:PORT/<id>`.
#[derive(Debug, Clone)]
pub struct ProxyProvider {
    /// The provider id (the first path segment).
    pub id: String,
    /// Its config.
    pub info: ModelProviderInfo,
    /// Its auth manager (shares the process-wide cache of its auth config).
    pub auth: Arc<dyn AuthManager>,
    /// Why its credential cannot be had, when it cannot: the route is served, and answers
    /// `token_unavailable` with this reason (health and stats say it too).
    pub unavailable: Option<String>,
}

impl ProxyProvider {
    /// A provider served under `id`.
    pub fn new(id: impl Into<String>, info: ModelProviderInfo, auth: Arc<dyn AuthManager>) -> Self {
        Self {
            id: id.into(),
            info,
            auth,
            unavailable: None,
        }
    }

    /// A provider whose credential could not be set up (`error`): the proxy still starts,
    /// and this route answers 502 `token_unavailable` with the reason, while the other
    /// providers are served.
    pub fn unavailable(
        id: impl Into<String>,
        info: ModelProviderInfo,
        error: provider_auth::AuthError,
    ) -> Self {
        let id = id.into();
        let reason = error.to_string();
        Self {
            auth: Arc::new(provider_auth::UnavailableAuthManager::new(
                id.as_str(),
                error,
            )),
            id,
            info,
            unavailable: Some(reason),
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
    /// Scoped client keys (`--client-keys`): each request must present one, and reaches
    /// only what that key allows. Replaceable while serving ([`Proxy::client_keys_handle`]).
    pub client_keys: Option<crate::keys::ClientKeys>,
    /// Largest request body buffered for a replay after an auth failure.
    pub max_replay_bytes: usize,
    /// How long a client connection may wait before its next request head is complete
    /// (idle between requests included).
    pub client_idle_timeout: Duration,
    /// How long a body being buffered for replay may stall (then 408).
    pub body_idle_timeout: Duration,
    /// The most bytes buffered for replays at once, process-wide.
    pub replay_budget_bytes: usize,
    /// The most client connections open at once (`None`: from the open-file limit, see
    /// [`crate::limits`]).
    pub max_connections: Option<usize>,
    /// The most client connections one remote (non-loopback) address may hold (`None`: a
    /// quarter of the total, at least 16).
    pub max_connections_per_peer: Option<usize>,
    /// How long a new connection has to send a request that passes the access check
    /// ([`crate::limits::FIRST_HEAD_DEADLINE`] by default).
    pub first_request_deadline: Duration,
    /// How long requests in flight may go on once stopping ([`SHUTDOWN_GRACE`] by default).
    pub shutdown_grace: Duration,
    /// Listen on this Unix-domain socket instead of `listen`.
    pub unix_socket: Option<UnixSocket>,
}

/// A Unix-domain socket to listen on: its path and its file mode (who may connect is who
/// may write to it, so 0600 serves only this user).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnixSocket {
    /// The socket's path.
    pub path: std::path::PathBuf,
    /// Its permission bits (default [`DEFAULT_SOCKET_MODE`]).
    pub mode: u32,
}

/// The mode of a Unix-domain socket the proxy creates: this user only.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

impl ProxyConfig {
    /// A config for `providers` on `listen`, no client key, the default replay limit.
    pub fn new(listen: SocketAddr, providers: Vec<ProxyProvider>) -> Self {
        Self {
            listen,
            providers,
            client_key: None,
            client_keys: None,
            max_replay_bytes: DEFAULT_MAX_REPLAY_BYTES,
            client_idle_timeout: DEFAULT_CLIENT_IDLE_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            replay_budget_bytes: DEFAULT_REPLAY_BUDGET_BYTES,
            max_connections: None,
            max_connections_per_peer: None,
            first_request_deadline: crate::limits::FIRST_HEAD_DEADLINE,
            shutdown_grace: SHUTDOWN_GRACE,
            unix_socket: None,
        }
    }

    /// The same config with another first-request deadline.
    pub fn with_first_request_deadline(mut self, deadline: Duration) -> Self {
        self.first_request_deadline = deadline;
        self
    }

    /// The same config listening on the Unix-domain socket `path` (created with `mode`, a
    /// stale socket left by a stopped proxy replaced) instead of its TCP address.
    pub fn with_unix_socket(mut self, path: impl Into<std::path::PathBuf>, mode: u32) -> Self {
        self.unix_socket = Some(UnixSocket {
            path: path.into(),
            mode,
        });
        self
    }

    /// The same config with another shutdown grace.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The same config with a cap on client connections (total, and per remote address).
    pub fn with_max_connections(mut self, total: usize, per_peer: usize) -> Self {
        self.max_connections = Some(total);
        self.max_connections_per_peer = Some(per_peer);
        self
    }

    /// The same config with another body idle timeout (see [`DEFAULT_BODY_IDLE_TIMEOUT`]).
    pub fn with_body_idle_timeout(mut self, timeout: Duration) -> Self {
        self.body_idle_timeout = timeout;
        self
    }

    /// The same config with another replay budget (see [`DEFAULT_REPLAY_BUDGET_BYTES`]).
    pub fn with_replay_budget_bytes(mut self, bytes: usize) -> Self {
        self.replay_budget_bytes = bytes;
        self
    }

    /// The same config requiring `key` from every client.
    /// The same config with scoped client keys (see [`ProxyConfig::client_keys`]).
    pub fn with_client_keys(mut self, keys: crate::keys::ClientKeys) -> Self {
        self.client_keys = Some(keys);
        self
    }

    /// The same config requiring `key` of every client (see [`ProxyConfig::client_key`]).
    pub fn with_client_key(mut self, key: impl Into<String>) -> Self {
        self.client_key = Some(key.into());
        self
    }

    /// The same config with another replay limit.
    pub fn with_max_replay_bytes(mut self, bytes: usize) -> Self {
        self.max_replay_bytes = bytes;
        self
    }

    /// The same config with another client idle timeout (see
    /// [`DEFAULT_CLIENT_IDLE_TIMEOUT`]).
    pub fn with_client_idle_timeout(mut self, timeout: Duration) -> Self {
        self.client_idle_timeout = timeout;
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

/// A bound proxy, ready to serve.
pub struct Proxy {
    listener: Listener,
    shared: Arc<Shared>,
}

/// Where the proxy accepts connections.
enum Listener {
    Tcp(tokio::net::TcpListener),
    /// A Unix-domain socket, removed when the proxy stops.
    Unix {
        listener: tokio::net::UnixListener,
        path: std::path::PathBuf,
        /// Whether the proxy made the socket (and so removes it when it stops); an
        /// inherited one belongs to whoever made it (systemd).
        owned: bool,
    },
}

/// A listening socket handed to the proxy ready-made: systemd's socket activation
/// (`LISTEN_FDS`), or an application's own.
#[derive(Debug)]
#[non_exhaustive]
pub enum InheritedListener {
    /// A TCP socket.
    Tcp(std::net::TcpListener),
    /// A Unix-domain socket.
    Unix(std::os::unix::net::UnixListener),
}

/// An accepted connection.
enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listener::Tcp(listener) => listener
                .accept()
                .await
                .map(|(tcp, peer)| Accepted::Tcp(tcp, peer)),
            Listener::Unix { listener, .. } => listener
                .accept()
                .await
                .map(|(unix, _)| Accepted::Unix(unix)),
        }
    }
}

/// Binds the Unix-domain socket of `socket`: under a temporary name beside it, given its
/// mode, then renamed into place, so that it is never reachable with wider permissions. A
/// socket already at the path that nothing answers on (a stopped proxy's) is replaced; one
/// that answers is in use.
fn bind_unix(socket: &UnixSocket) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(&socket.path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        if std::os::unix::net::UnixStream::connect(&socket.path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process is listening on it",
            ));
        }
    }
    let mut temporary = socket.path.clone().into_os_string();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = std::path::PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let listener = tokio::net::UnixListener::bind(&temporary)?;
    let placed = std::fs::set_permissions(
        &temporary,
        std::fs::Permissions::from_mode(socket.mode & 0o777),
    )
    .and_then(|()| std::fs::rename(&temporary, &socket.path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    Ok(listener)
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
        Self::build(config, None).await
    }

    /// Checks the config and serves `listener` (systemd's socket activation: the socket
    /// systemd made and passed in `LISTEN_FDS`), in place of the config's address. An
    /// inherited Unix-domain socket is left in place when the proxy stops.
    pub async fn bind_inherited(
        config: ProxyConfig,
        listener: InheritedListener,
    ) -> Result<Self, ProxyError> {
        Self::build(config, Some(listener)).await
    }

    /// Makes the listener the config asks for, and says its port (0 for a socket file).
    async fn listen(config: &ProxyConfig) -> Result<(Listener, u16), ProxyError> {
        Ok(match &config.unix_socket {
            Some(socket) => {
                let listener = bind_unix(socket).map_err(|source| ProxyError::BindUnix {
                    path: socket.path.clone(),
                    source,
                })?;
                (
                    Listener::Unix {
                        listener,
                        path: socket.path.clone(),
                        owned: true,
                    },
                    0,
                )
            }
            None => {
                let listener =
                    tokio::net::TcpListener::bind(config.listen)
                        .await
                        .map_err(|source| ProxyError::Bind {
                            addr: config.listen,
                            source,
                        })?;
                let port = listener
                    .local_addr()
                    .map_or(config.listen.port(), |a| a.port());
                (Listener::Tcp(listener), port)
            }
        })
    }

    /// Takes an inherited listener into the runtime.
    fn adopt(inherited: InheritedListener) -> std::io::Result<(Listener, u16)> {
        Ok(match inherited {
            InheritedListener::Tcp(listener) => {
                listener.set_nonblocking(true)?;
                let port = listener.local_addr()?.port();
                (
                    Listener::Tcp(tokio::net::TcpListener::from_std(listener)?),
                    port,
                )
            }
            InheritedListener::Unix(listener) => {
                listener.set_nonblocking(true)?;
                let path = listener
                    .local_addr()?
                    .as_pathname()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default();
                (
                    Listener::Unix {
                        listener: tokio::net::UnixListener::from_std(listener)?,
                        path,
                        owned: false,
                    },
                    0,
                )
            }
        })
    }

    async fn build(
        config: ProxyConfig,
        inherited: Option<InheritedListener>,
    ) -> Result<Self, ProxyError> {
        let keyed = config.client_key.is_some() || config.client_keys.is_some();
        if !config.listen.ip().is_loopback() && !keyed {
            return Err(ProxyError::NotLoopback {
                addr: config.listen,
            });
        }
        if config.providers.is_empty() {
            return Err(ProxyError::NoProviders);
        }
        let (listener, port) = match inherited {
            Some(inherited) => {
                Self::adopt(inherited).map_err(|source| ProxyError::Inherited { source })?
            }
            None => Self::listen(&config).await?,
        };
        if let Listener::Tcp(tcp) = &listener
            && let Ok(addr) = tcp.local_addr()
            && !addr.ip().is_loopback()
            && !keyed
        {
            return Err(ProxyError::NotLoopback { addr });
        }
        let unix_socket = matches!(listener, Listener::Unix { .. });
        let mut routes = BTreeMap::new();
        for p in config.providers {
            let problem = |source: Box<dyn std::error::Error + Send + Sync>| ProxyError::Provider {
                provider: p.id.clone(),
                source,
            };
            let provider = Provider::new(&p.id, p.info, p.auth);
            let headers = provider
                .headers()
                .map_err(|e| problem(Box::new(e)))?
                .clone();
            let base = provider
                .info()
                .endpoint_url("")
                .map_err(|e| problem(Box::new(e)))?;
            let http = crate::upstream::client(provider.info().connect_timeout())
                .map_err(|e| problem(Box::new(e)))?;
            let mut without_query = base.clone();
            without_query.set_query(None);
            let base_prefix = without_query.as_str().trim_end_matches('/').to_owned();
            let base_query = base.query().filter(|q| !q.is_empty()).map(str::to_owned);
            let route = Route {
                provider,
                base,
                base_prefix,
                base_query,
                headers,
                http,
                counters: Counters::default(),
                unavailable: p.unavailable,
                last_scrubber: std::sync::Mutex::default(),
            };
            routes.insert(p.id, Arc::new(route));
        }
        let max_connections = config.max_connections.unwrap_or_else(|| {
            crate::limits::default_max_connections(
                routes.len(),
                crate::upstream::POOL_MAX_IDLE_PER_HOST,
            )
        });
        let per_peer = config
            .max_connections_per_peer
            .unwrap_or((max_connections / 4).max(16));
        Ok(Self {
            listener,
            shared: Arc::new(Shared {
                routes,
                client_key: config.client_key.map(String::into_bytes),
                client_keys: config
                    .client_keys
                    .map(|keys| std::sync::RwLock::new(Arc::new(keys))),
                port,
                unix_socket,
                max_replay_bytes: config.max_replay_bytes,
                client_idle_timeout: config.client_idle_timeout,
                body_idle_timeout: config.body_idle_timeout,
                shutdown_grace: config.shutdown_grace,
                replay_budget: Arc::new(crate::route::ReplayBudget::new(
                    config.replay_budget_bytes,
                )),
                refused: AtomicU64::new(0),
                slots: crate::limits::Slots::new(
                    max_connections,
                    per_peer,
                    config.first_request_deadline,
                ),
            }),
        })
    }

    /// The Unix-domain socket served, when the config named one.
    pub fn unix_socket_path(&self) -> Option<&std::path::Path> {
        match &self.listener {
            Listener::Unix { path, .. } => Some(path),
            Listener::Tcp(_) => None,
        }
    }

    /// The bound address (with the real port when the config asked for port 0; for a
    /// Unix-domain socket, `127.0.0.1:0`).
    pub fn local_addr(&self) -> SocketAddr {
        match &self.listener {
            Listener::Tcp(listener) => listener.local_addr().ok(),
            Listener::Unix { .. } => None,
        }
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], self.shared.port)))
    }

    /// The served provider ids, in order.
    pub fn provider_ids(&self) -> Vec<String> {
        self.shared.routes.keys().cloned().collect()
    }

    /// Why a served provider's credential is unavailable, if it is.
    pub fn unavailable(&self, id: &str) -> Option<&str> {
        self.shared.routes.get(id)?.unavailable.as_deref()
    }

    /// A handle to replace the scoped client keys while the proxy serves (a reload), when
    /// it was given some.
    pub fn client_keys_handle(&self) -> Option<ClientKeysHandle> {
        self.shared
            .client_keys
            .is_some()
            .then(|| ClientKeysHandle(self.shared.clone()))
    }

    /// A handle to read the counters while the proxy serves.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.shared.clone())
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets requests in flight
    /// finish for up to the config's `shutdown_grace` ([`SHUTDOWN_GRACE`] by default).
    ///
    /// HTTP/1.1 on plain TCP, every connection on a task of its own (websocket upgrades
    /// included). Small answers go out at once: `TCP_NODELAY` on every accepted socket.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        // Every connection task holds a receiver: the sender sees when the last one is gone.
        let (stopping, stop) = tokio::sync::watch::channel(false);
        let mut shutdown = std::pin::pin!(shutdown);
        let local = self.local_addr();
        loop {
            // When the proxy is full, the next connection waits in the kernel's queue until
            // a place frees (or an unproven connection gives its place up).
            let accepted = tokio::select! {
                accepted = async {
                    self.shared.slots.room().await;
                    self.listener.accept().await
                } => accepted,
                () = &mut shutdown => break,
            };
            let accepted = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    wait_after_accept_error(&e).await;
                    continue;
                }
            };
            match accepted {
                Accepted::Tcp(tcp, peer) => {
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
                    let Some(slot) = self.shared.slots.take(peer.ip(), fd) else {
                        tracing::debug!(
                            target: TRACING_TARGET,
                            "a remote address holds its share of connections; one more is closed"
                        );
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    // Without a client key, only this user's processes (and root's) are
                    // served.
                    let foreign =
                        !self.shared.keyed() && crate::access::another_local_user(peer, local);
                    self.spawn_connection(tcp, slot, foreign, &stop);
                }
                Accepted::Unix(unix) => {
                    // The socket file's permissions decide who may connect.
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&unix);
                    let local_peer = std::net::IpAddr::from([127, 0, 0, 1]);
                    let Some(slot) = self.shared.slots.take(local_peer, fd) else {
                        continue;
                    };
                    self.spawn_connection(unix, slot, false, &stop);
                }
            }
        }
        if let Listener::Unix {
            path, owned: true, ..
        } = &self.listener
        {
            let _ = std::fs::remove_file(path);
        }
        drop(self.listener);
        drop(stop);
        let _ = stopping.send(true);
        tokio::select! {
            () = stopping.closed() => {}
            () = tokio::time::sleep(self.shared.shutdown_grace) => {}
        }
    }

    /// Serves one accepted connection on a task of its own, until it ends, its place is
    /// taken, or the proxy stops (then its request in flight is answered first).
    fn spawn_connection<IO>(
        &self,
        io: IO,
        mut slot: crate::limits::Slot,
        foreign: bool,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let shared = self.shared.clone();
        let proof = slot.proof();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let shared = shared.clone();
            let proof = proof.clone();
            async move {
                let in_flight = proof.in_flight();
                let (mut parts, body) =
                    respond(&shared, request.map(crate::body::boxed), &proof, foreign)
                        .await
                        .into_parts();
                // The body as it is, wrapped (not boxed again) to count the request in
                // flight until it ends, for its connection and its provider.
                let provider = parts.extensions.remove::<crate::limits::Counted>();
                let body = crate::limits::Tracked::new(body, in_flight, provider);
                Ok::<_, Infallible>(http::Response::from_parts(parts, body))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            // Bounds the wait for each request head, from the connection's start or the
            // end of the previous answer: a client that sends nothing, or a head that
            // never ends, does not hold a connection for ever.
            .timer(TokioTimer::new())
            .header_read_timeout(self.shared.client_idle_timeout)
            .max_buf_size(crate::limits::CONNECTION_BUFFER_BYTES)
            .serve_connection(TokioIo::new(slot.watch(io)), service)
            .with_upgrades();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            // A client that goes away mid-request ends only its own connection.
            tokio::select! {
                _ = connection.as_mut() => return,
                // No accepted request in time, or its place went to a waiting one.
                () = slot.must_close() => return,
                _ = stop.changed() => {}
            }
            // Stopping: the request in flight is answered, then the connection closes.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
            drop(stop);
            drop(slot);
        });
    }
}

/// After a failed `accept`: on at once when only that connection failed, else (out of file
/// descriptors, out of memory) a pause, so that the loop does not spin while it lasts.
async fn wait_after_accept_error(e: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::warn!(target: TRACING_TARGET, error = %e, "cannot accept a connection; pausing 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Every request: access control first (a request that passes it proves its connection),
/// then health, stats or a provider.
async fn respond(
    shared: &Arc<Shared>,
    request: Request<Body>,
    proof: &Proof,
    foreign: bool,
) -> Response {
    let mut request = request;
    // Scoped keys: the key decides (what it reaches is checked once the provider is known).
    let refused = match shared.scoped_key(request.headers()) {
        Some(Ok(key)) => {
            request.extensions_mut().insert(key);
            None
        }
        Some(Err(())) => Some(answer(
            ProxyErrorCode::ClientKeyRequired,
            "this proxy requires one of its client keys as `Authorization: Bearer KEY`, `api-key` or `x-api-key` (unknown, revoked and expired keys are refused)",
        )),
        None => refusal(shared, request.headers(), foreign),
    };
    if let Some(refused) = refused {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        // The path only (never the query or a header value), and why.
        tracing::info!(
            target: TRACING_TARGET,
            method = %request.method(),
            path = %request.uri().path(),
            status = refused.status().as_u16(),
            "refused before any provider (client key, local user, Host or Origin)"
        );
        return refused;
    }
    proof.mark();
    let path = request.uri().path();
    if [HEALTH_PATH, STATS_PATH, METRICS_PATH, READY_PATH].contains(&path) {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut answer = Response::new(crate::body::empty());
            *answer.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            answer
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
            return answer;
        }
        if path == METRICS_PATH {
            let mut answer = Response::new(crate::body::full(crate::metrics::render(shared)));
            answer.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            return answer;
        }
        if path == READY_PATH {
            return readiness(shared);
        }
        let unavailable: BTreeMap<&str, &str> = shared
            .routes
            .iter()
            .filter_map(|(id, r)| Some((id.as_str(), r.unavailable.as_deref()?)))
            .collect();
        let mut body = if path == HEALTH_PATH {
            serde_json::json!({"status": "ok"})
        } else {
            serde_json::json!({
                "providers": collect_stats(shared),
                "refused": shared.refused.load(Ordering::Relaxed),
                "replay_buffered_bytes": shared.replay_budget.used(),
                "connections": {
                    "open": shared.slots.open(),
                    "max": shared.slots.max(),
                },
            })
        };
        if !unavailable.is_empty() {
            body["unavailable"] = serde_json::json!(unavailable);
        }
        return crate::body::json(StatusCode::OK, &body);
    }
    crate::forward::handle(shared, request).await
}

/// `GET /_modelauth/ready`: 200 `{"status": "ready"}` while every provider holds a usable
/// token or needs none; else 503 naming each provider that does not, and why. A provider
/// without a token gets one fetched in the background (the cache's single flight and
/// backoff apply), so that a later probe can pass without any client request.
fn readiness(shared: &Shared) -> Response {
    let mut not_ready = BTreeMap::new();
    for (id, route) in &shared.routes {
        if let Some(reason) = &route.unavailable {
            not_ready.insert(id.as_str(), reason.clone());
            continue;
        }
        // No cache: a static key, or no credential at all.
        if route.provider.manager().stats().is_none()
            || route.provider.manager().token_status().is_some()
        {
            continue;
        }
        not_ready.insert(id.as_str(), "no usable token yet; fetching one".to_owned());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let auth = route.provider.manager().clone();
            runtime.spawn(async move {
                let _ = auth.credential().await;
            });
        }
    }
    if not_ready.is_empty() {
        return crate::body::json(StatusCode::OK, &serde_json::json!({"status": "ready"}));
    }
    let body = serde_json::json!({"status": "not ready", "providers": not_ready});
    crate::body::json(StatusCode::SERVICE_UNAVAILABLE, &body)
}

/// Replaces a running proxy's scoped client keys: requests after the replacement are
/// checked against the new set (a revoked key is refused from then on).
#[derive(Clone)]
pub struct ClientKeysHandle(Arc<Shared>);

impl std::fmt::Debug for ClientKeysHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKeysHandle")
    }
}

impl ClientKeysHandle {
    /// Serves `keys` from now on.
    pub fn replace(&self, keys: crate::keys::ClientKeys) {
        if let Some(current) = &self.0.client_keys {
            let mut current = match current.write() {
                Ok(current) => current,
                Err(poisoned) => poisoned.into_inner(),
            };
            *current = Arc::new(keys);
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
                    command_runs: r.provider.manager().stats().map_or(0, |s| s.command_runs),
                    errors: load(&c.errors),
                },
            )
        })
        .collect()
}

/// Access control, before anything else: the client key when one is set, else a process of
/// this user (`foreign`: another local user's), a loopback `Host` and no web page from
/// another site. The refusal, if any.
fn refusal(shared: &Shared, headers: &http::HeaderMap, foreign: bool) -> Option<Response> {
    match &shared.client_key {
        Some(key) => (!presents_key(headers, key)).then(|| {
            answer(
                ProxyErrorCode::ClientKeyRequired,
                "this proxy requires its client key as `Authorization: Bearer KEY`, `api-key` or `x-api-key`",
            )
        }),
        None if foreign => Some(answer(
            ProxyErrorCode::ForbiddenUser,
            "without a client key, this proxy serves only the processes of the user who started it",
        )),
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            if !shared.unix_socket && !loopback_host(host, shared.port) {
                return Some(answer(
                    ProxyErrorCode::ForbiddenHost,
                    "the Host header must be 127.0.0.1, localhost or [::1] with this proxy's port",
                ));
            }
            from_another_site(headers).then(|| {
                answer(
                    ProxyErrorCode::ForbiddenOrigin,
                    "a web page on another site may not use this proxy: only pages on 127.0.0.1, localhost or [::1] may, unless the proxy requires a client key",
                )
            })
        }
    }
}
