//! The one error type of this crate.

use std::sync::Arc;

use provider_auth::AuthError;

/// Why a realtime connection or session failed. Never contains the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RealtimeError {
    /// No credential could be had: no handshake was attempted.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The handshake was answered with an HTTP error status.
    #[error("provider `{provider}`: {}", handshake_message(*.status, *.auth_after_fresh_token, .body))]
    Handshake {
        /// Provider id.
        provider: Arc<str>,
        /// HTTP status of the handshake answer.
        status: u16,
        /// The start of its body.
        body: String,
        /// A 401 to a token minted after a first 401.
        auth_after_fresh_token: bool,
    },
    /// The connect and handshake took longer than `websocket_connect_timeout_ms`.
    #[error(
        "provider `{provider}`: the websocket handshake with {host} did not finish within {timeout_ms} ms"
    )]
    ConnectTimeout {
        /// Provider id.
        provider: Arc<str>,
        /// Host and port.
        host: String,
        /// The limit.
        timeout_ms: u64,
    },
    /// The connection failed or broke.
    #[error("provider `{provider}`: websocket connection to {host} failed: {message}")]
    Connection {
        /// Provider id.
        provider: Arc<str>,
        /// Host and port.
        host: String,
        /// What failed.
        message: String,
    },
    /// The server closed the session.
    #[error("provider `{provider}`: the server closed the realtime session (code {code}{})", reason_suffix(.reason))]
    Closed {
        /// Provider id.
        provider: Arc<str>,
        /// Websocket close code (1005 when none was given).
        code: u16,
        /// Close reason, scrubbed like every gateway text.
        reason: String,
    },
    /// The server sent something that is not a JSON event with a `type`.
    #[error("provider `{provider}`: unexpected realtime message: {detail}")]
    Protocol {
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
    /// `base_url` does not make the websocket endpoint's URL.
    #[error("provider `{provider}`: cannot make the realtime URL")]
    Url {
        /// Provider id.
        provider: Arc<str>,
        /// Why.
        source: provider_config::EndpointUrlError,
    },
    /// The provider config cannot be used for a websocket.
    #[error("provider `{provider}`: {detail}")]
    Config {
        /// Provider id.
        provider: Arc<str>,
        /// What was wrong.
        detail: String,
    },
}

impl RealtimeError {
    /// Whether the gateway rejected a token minted after a first 401.
    pub fn is_auth_failure_after_fresh_token(&self) -> bool {
        matches!(
            self,
            RealtimeError::Handshake {
                auth_after_fresh_token: true,
                ..
            }
        )
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

fn handshake_message(status: u16, after_fresh: bool, body: &str) -> String {
    let mut msg = if after_fresh {
        format!(
            "the gateway rejected a freshly minted token on the websocket handshake (HTTP {status} twice)"
        )
    } else {
        format!("the websocket handshake was answered with HTTP {status}")
    };
    if !body.is_empty() {
        msg.push_str(": ");
        msg.push_str(body);
    }
    msg
}
