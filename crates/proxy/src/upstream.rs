//! The client the proxy forwards with: hyper's pooled HTTP/1.1 client, nothing on top. TCP
//! with `TCP_NODELAY`, directly or through the HTTP proxy the environment names
//! ([`transport::connect_tcp`]: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`); TLS with
//! rustls and the platform's trust store for `https` gateways, as the rest of modelauth;
//! connecting and the TLS handshake bounded together by `connect_timeout_ms`. It follows no
//! redirect and retries nothing: those decisions belong to the client behind the proxy.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::body::Body;
use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

/// What a failed connect says (a plain-text reason; the proxy adds provider and host).
type ConnectError = Box<dyn std::error::Error + Send + Sync>;

/// How long an idle keep-alive connection to a gateway stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The most idle keep-alive connections kept to one gateway: after a burst, the rest close
/// (each is a file descriptor the proxy's client connections may need).
pub(crate) const POOL_MAX_IDLE_PER_HOST: usize = 128;

/// The pooled client of one provider.
pub(crate) type UpstreamClient = Client<Connector, Body>;

/// A client for one provider's gateway.
pub(crate) fn client(connect_timeout: Duration) -> Result<UpstreamClient, transport::TlsError> {
    // The one TLS configuration; ALPN (`http/1.1`) is set on this copy by the builder below.
    let tls = transport::tls_config()?.as_ref().clone();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(Tcp);
    Ok(Client::builder(TokioExecutor::new())
        // An idle pooled connection is closed after 90 s, as reqwest does in the clients.
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .http1_max_buf_size(crate::limits::CONNECTION_BUFFER_BYTES)
        .build(Connector {
            https,
            timeout: connect_timeout,
        }))
}

/// TCP to the gateway, or a tunnel through the environment's proxy.
#[derive(Clone, Copy)]
pub(crate) struct Tcp;

impl tower_service::Service<Uri> for Tcp {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let secure = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other("the URL has no host"))?;
            let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
            let tcp = transport::connect_tcp(secure, host, port).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tcp))
        })
    }
}

/// [`Tcp`] with TLS for https, the whole bounded by the connect timeout.
#[derive(Clone)]
pub(crate) struct Connector {
    https: HttpsConnector<Tcp>,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connect = self.https.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connect).await {
                Ok(result) => result,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no connection within {} ms (connect_timeout_ms)",
                        timeout.as_millis()
                    ),
                )
                .into()),
            }
        })
    }
}
