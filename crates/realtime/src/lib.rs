//! A websocket realtime client for OpenAI-compatible gateways, on the same scoped
//! [`provider_auth::AuthManager`] as the HTTP client: there is no second auth path.
//!
//! [`RealtimeClient::connect`] opens `ws(s)://{base_url host and path}/realtime?model=M`
//! with `Authorization: Bearer` from the manager (never in the URL), the provider's
//! `query_params` and headers, bounded by `websocket_connect_timeout_ms`. A 401 on the
//! handshake reports the credential and reconnects once with a fresh token; a second 401 is
//! an error saying the gateway rejected a freshly minted token.

mod error;
mod proxy;
mod session;

pub use error::RealtimeError;
pub use session::{MAX_MESSAGE_BYTES, RealtimeClient, RealtimeEvent, RealtimeSession, Socket};
