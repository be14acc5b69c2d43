//! A websocket realtime client for OpenAI-compatible gateways, on the same scoped
//! [`provider_auth::AuthManager`] as the HTTP client: there is no second auth path.
//!
//! [`RealtimeClient::connect`] opens `ws(s)://{base_url host and path}/realtime?model=M`
//! with `Authorization: Bearer` from the manager (never in the URL), the provider's
//! `query_params` and headers, bounded by `websocket_connect_timeout_ms`. A 401 on the
//! handshake reports the credential and reconnects once with a fresh token; a second 401 is
//! an error saying the gateway rejected a freshly minted token.
//!
//! # Platform and runtime
//!
//! Unix only, on the Tokio runtime (the socket is a Tokio TCP stream).
//!
//! # Errors
//!
//! One type, [`RealtimeError`]: no credential, the handshake refused (status and a scrubbed
//! excerpt), the gateway out of reach or too slow (`websocket_connect_timeout_ms`), a
//! message over [`MAX_MESSAGE_BYTES`], or the session closed. No message carries a token.
//!
//! # Cancellation
//!
//! Dropping the connect future or the session closes the socket; nothing keeps running.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(info: provider_config::ModelProviderInfo) -> Result<(), Box<dyn std::error::Error>> {
//! use provider_auth::auth_manager_for_provider;
//! use realtime::RealtimeClient;
//!
//! let manager = auth_manager_for_provider("corp", &info, None)?;
//! let mut session = RealtimeClient::connect("corp", info, manager, "gpt-realtime").await?;
//! while let Some(event) = session.next_event().await {
//!     println!("{}", event?.kind);
//! }
//! # Ok(()) }
//! ```

mod error;
mod session;

pub use error::RealtimeError;
pub use session::{
    MAX_MESSAGE_BYTES, OpenSocket, RealtimeClient, RealtimeEvent, RealtimeSession, Socket,
};
