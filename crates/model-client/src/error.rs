//! The one error type of this crate.

use std::sync::Arc;

use provider_auth::AuthError;

/// Why a request failed. Never contains the token or the `Authorization` header.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No credential could be had: no request was sent.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The gateway answered with an error status (after any retries).
    #[error("provider `{provider}`: {method} {path}: {}", status_message(*.status, *.auth_after_fresh_token, .body, .path, .expired_at.as_deref()))]
    Status {
        /// Provider id.
        provider: Arc<str>,
        /// The request's method.
        method: String,
        /// The request's URL path (never its query, which may hold a key).
        path: String,
        /// HTTP status.
        status: u16,
        /// The start of the response body, control characters removed, tokens redacted.
        body: String,
        /// A 401 to a token minted after a first 401: the gateway rejected a fresh token.
        auth_after_fresh_token: bool,
        /// For a rejected token whose stated expiry had already passed: that expiry
        /// (RFC 3339).
        expired_at: Option<String>,
    },
    /// The gateway could not be reached (after any retries).
    #[error("provider `{provider}`: cannot reach {host}: {message}")]
    Transport {
        /// Provider id.
        provider: Arc<str>,
        /// Host and port of the base URL.
        host: String,
        /// What failed.
        message: String,
    },
    /// A bounded exchange (`GET /models`) did not finish within `request_timeout_ms`.
    #[error(
        "provider `{provider}`: {host} did not answer completely within {timeout_ms} ms (request_timeout_ms)"
    )]
    Timeout {
        /// Provider id.
        provider: Arc<str>,
        /// Host and port of the base URL.
        host: String,
        /// The limit.
        timeout_ms: u64,
    },
    /// A non-streaming response body was larger than the cap; it was not read further.
    #[error(
        "provider `{provider}`: the response from {host} is larger than {} MiB and was not read", limit_bytes >> 20
    )]
    TooLarge {
        /// Provider id.
        provider: Arc<str>,
        /// Host and port of the base URL.
        host: String,
        /// The cap.
        limit_bytes: usize,
    },
    /// A stream was silent for longer than `stream_idle_timeout_ms`.
    #[error("provider `{provider}`: the stream was idle for {idle_ms} ms (stream_idle_timeout_ms)")]
    StreamIdle {
        /// Provider id.
        provider: Arc<str>,
        /// The limit.
        idle_ms: u64,
    },
    /// The response could not be understood.
    #[error("provider `{provider}`: unexpected response: {detail}")]
    Decode {
        /// Provider id.
        provider: Arc<str>,
        /// What was wrong.
        detail: String,
    },
    /// A configured header (`http_headers`, `env_http_headers`) cannot be sent.
    #[error("provider `{provider}`: cannot send its configured headers")]
    Header {
        /// Provider id.
        provider: Arc<str>,
        /// Which header, and why (never its value).
        source: provider_auth::InvalidHeader,
    },
    /// `base_url` does not make an endpoint's URL.
    #[error("provider `{provider}`: cannot make an endpoint's URL")]
    Url {
        /// Provider id.
        provider: Arc<str>,
        /// Why.
        source: provider_config::EndpointUrlError,
    },
    /// The platform's TLS trust store cannot be loaded.
    #[error("provider `{provider}`: no TLS client configuration")]
    Tls {
        /// Provider id.
        provider: Arc<str>,
        /// What rustls said.
        source: transport::TlsError,
    },
    /// The provider config cannot be used to build requests.
    #[error("provider `{provider}`: {detail}")]
    Config {
        /// Provider id.
        provider: Arc<str>,
        /// What was wrong.
        detail: String,
    },
}

impl ClientError {
    /// The HTTP status, for status errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the gateway rejected a token minted after a first 401.
    pub fn is_auth_failure_after_fresh_token(&self) -> bool {
        matches!(
            self,
            ClientError::Status {
                auth_after_fresh_token: true,
                ..
            }
        )
    }
}

fn status_message(
    status: u16,
    after_fresh: bool,
    body: &str,
    path: &str,
    expired_at: Option<&str>,
) -> String {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut msg = if after_fresh {
        format!("the gateway rejected a freshly minted token (HTTP {status} {reason} twice)")
    } else if (300..400).contains(&status) {
        format!(
            "the gateway answered HTTP {status} {reason}, a redirect to another host, which is not followed"
        )
    } else {
        format!("the gateway answered HTTP {status} {reason}")
    };
    if !body.is_empty() {
        msg.push_str(": ");
        msg.push_str(body);
    }
    if let Some(hint) = not_found_hint(status, path) {
        msg.push_str("; ");
        msg.push_str(hint);
    }
    if status == 403 && !after_fresh {
        msg.push_str(
            "; if this gateway answers 403 for an expired or revoked token, set `auth.reauth_on = [401, 403]` so that a 403 gets a new token and one retry",
        );
    }
    if let Some(at) = expired_at {
        msg.push_str(&format!(
            "; the token states it expired at {at}: the helper printed an expired token (a stale cache of its own?) or this machine's clock is off"
        ));
    }
    msg
}

/// A 404 is most often a `base_url` with one `/v1` too few or too many.
fn not_found_hint(status: u16, path: &str) -> Option<&'static str> {
    if status != 404 {
        return None;
    }
    if path.contains("/v1/v1/") {
        Some("the path has /v1 twice: remove one from the end of base_url")
    } else if !path.contains("/v1/") {
        Some(
            "is /v1 missing from base_url? most OpenAI-compatible gateways serve the API under /v1",
        )
    } else {
        Some("check that base_url is the API root, the URL below which /models is served")
    }
}
