//! The errors of this crate: why a proxy cannot start, and the OpenAI-style answers it
//! makes itself.

use crate::body::Response;
use http::StatusCode;
use provider_auth::AuthError;

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A non-loopback listen address without a client key.
    #[error(
        "refusing to listen on {addr}: it is not a loopback address; require a client key to listen there"
    )]
    NotLoopback {
        /// The address asked for.
        addr: std::net::SocketAddr,
    },
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Creating the Unix-domain socket failed.
    #[error("cannot listen on unix:{}", path.display())]
    BindUnix {
        /// The socket's path.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An inherited listening socket (systemd's `LISTEN_FDS`) cannot be used.
    #[error("cannot use the inherited listening socket")]
    Inherited {
        /// The OS error.
        source: std::io::Error,
    },
    /// No provider to serve.
    #[error("no provider to serve")]
    NoProviders,
    /// A provider cannot be served: its headers, its URL or its upstream client cannot be
    /// made.
    #[error("provider `{provider}` cannot be served")]
    Provider {
        /// Provider id.
        provider: String,
        /// Why ([`provider_auth::InvalidHeader`], [`provider_config::EndpointUrlError`],
        /// [`transport::TlsError`]).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The codes of the errors the proxy makes itself (`error.code` in the JSON body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyErrorCode {
    /// 404: no such provider id in the path.
    UnknownProvider,
    /// 502: the token command failed.
    TokenUnavailable,
    /// 502: the gateway could not be reached.
    UpstreamUnreachable,
    /// 504: the gateway did not answer in time.
    UpstreamTimeout,
    /// 401: the client key is missing or wrong.
    ClientKeyRequired,
    /// 403: the `Host` header is not loopback.
    ForbiddenHost,
    /// 400: the path has a `.` or `..` segment, which would leave the provider's base path.
    InvalidPath,
    /// 403: a browser sent the request from a page on another site (`Origin`).
    ForbiddenOrigin,
    /// 405: `CONNECT` or `TRACE`, which are never forwarded with a credential (a gateway
    /// answering `TRACE` echoes the request, credential included).
    MethodNotAllowed,
    /// 403: without a client key, a process of another local user connected (Linux).
    ForbiddenUser,
    /// 403: a scoped client key (`--client-keys`) does not reach this provider or path.
    KeyOutOfScope,
    /// 400: a websocket upgrade that is not one (not a GET, no key, another version).
    InvalidUpgrade,
}

impl ProxyErrorCode {
    /// The code as it appears in the body.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyErrorCode::UnknownProvider => "unknown_provider",
            ProxyErrorCode::TokenUnavailable => "token_unavailable",
            ProxyErrorCode::UpstreamUnreachable => "upstream_unreachable",
            ProxyErrorCode::UpstreamTimeout => "upstream_timeout",
            ProxyErrorCode::ClientKeyRequired => "client_key_required",
            ProxyErrorCode::ForbiddenHost => "forbidden_host",
            ProxyErrorCode::InvalidPath => "invalid_path",
            ProxyErrorCode::ForbiddenOrigin => "forbidden_origin",
            ProxyErrorCode::MethodNotAllowed => "method_not_allowed",
            ProxyErrorCode::ForbiddenUser => "forbidden_user",
            ProxyErrorCode::KeyOutOfScope => "key_out_of_scope",
            ProxyErrorCode::InvalidUpgrade => "invalid_upgrade",
        }
    }

    /// The HTTP status of the answer.
    pub fn status(self) -> StatusCode {
        match self {
            ProxyErrorCode::UnknownProvider => StatusCode::NOT_FOUND,
            ProxyErrorCode::TokenUnavailable | ProxyErrorCode::UpstreamUnreachable => {
                StatusCode::BAD_GATEWAY
            }
            ProxyErrorCode::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyErrorCode::ClientKeyRequired => StatusCode::UNAUTHORIZED,
            ProxyErrorCode::ForbiddenHost
            | ProxyErrorCode::ForbiddenOrigin
            | ProxyErrorCode::ForbiddenUser
            | ProxyErrorCode::KeyOutOfScope => StatusCode::FORBIDDEN,
            ProxyErrorCode::InvalidPath | ProxyErrorCode::InvalidUpgrade => StatusCode::BAD_REQUEST,
            ProxyErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// An answer the proxy makes itself: `{"error": {"message", "type": "proxy_error", "code"}}`.
/// The message never holds a token, a command's stdout or a header value.
pub(crate) fn answer(code: ProxyErrorCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "error": {
            "message": message.into(),
            "type": "proxy_error",
            "code": code.as_str(),
        }
    });
    crate::body::json(code.status(), &body)
}

/// Most characters of a failed command's stderr in a `token_unavailable` answer.
const TOKEN_UNAVAILABLE_STDERR_CHARS: usize = 160;

/// The answer when the token command failed. The auth error already names the provider
/// and the program, never the token or stdout.
/// 502 `token_unavailable`: why there is no token, with at most the last 160 characters of
/// what the command printed on stderr (already scrubbed of every token sent).
pub(crate) fn token_unavailable(e: &AuthError) -> Response {
    let e = e.clone().with_short_stderr(TOKEN_UNAVAILABLE_STDERR_CHARS);
    // The proxy runs as `modelauth proxy`: name the command that signs in.
    let advice = match &e {
        AuthError::Command { provider, .. } if e.needs_terminal() => {
            format!(" with `modelauth login -p {provider}`")
        }
        _ => String::new(),
    };
    answer(
        ProxyErrorCode::TokenUnavailable,
        format!("no token: {e}{advice}"),
    )
}
