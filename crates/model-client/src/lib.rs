//! An HTTP client for OpenAI-compatible model gateways on the scoped
//! [`provider_auth::AuthManager`]: `GET /models`, `POST /responses` (JSON or SSE) and
//! `POST /chat/completions` (SSE).
//!
//! Every request takes one path: credential -> send -> on 401 report the credential and
//! retry once -> on 429, 5xx or a connection error back off (exponential, jittered,
//! `Retry-After` honoured) up to `request_max_retries`. Streams are bounded by
//! `stream_idle_timeout_ms`; a stream that fails before its first event is reopened up to
//! `stream_max_retries` times, and nothing is retried once an event was yielded. Without a
//! credential no request is sent.
//!
//! # Platform and runtime
//!
//! Unix only (through `provider-auth`'s command runner), on the Tokio runtime: call it from
//! inside one (multi-threaded or current-thread).
//!
//! # Errors
//!
//! One type, [`ClientError`]: no credential ([`ClientError::Auth`]), an error status after
//! retries (with the method, the URL path and a scrubbed excerpt of the body; a 404 hints at
//! `base_url`), the gateway out of reach (a TLS failure is not retried), a bound passed
//! (`request_timeout_ms`, `stream_idle_timeout_ms`, the 4 MiB body cap), or an answer that
//! cannot be understood. Messages never carry a token or a query string.
//!
//! # Cancellation
//!
//! Dropping a future or a [`ResponseStream`] at any point is safe: the request or the
//! stream's connection is closed, and a token run it was waiting for goes on only if
//! another caller still waits for it.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use model_client::ModelClient;
//! use provider_auth::auth_manager_for_provider;
//! use provider_config::{ModelProviderAuthInfo, ModelProviderInfo};
//!
//! let mut info = ModelProviderInfo::new("Corp", "https://gateway.example.com/v1");
//! info.auth = Some(ModelProviderAuthInfo::new("corp-token-helper"));
//! let manager = auth_manager_for_provider("corp", &info, None)?;
//! let client = ModelClient::new("corp", info, manager)?;
//! for model in client.list_models().await?.data {
//!     println!("{}", model.id);
//! }
//! # Ok(()) }
//! ```

mod client;
mod error;
mod events;
mod models;
mod retry;

pub use client::{ClientStats, ModelClient, ResponseStream, USER_AGENT};
pub use error::ClientError;
/// The SSE parser (the workspace's one framer, shared with the proxy).
pub use event_stream::{MAX_EVENT_BYTES, SseError, SseEvent, SseParser};
pub use events::{ModelInfo, ModelList, ResponseEvent};
pub use models::{DEFAULT_MODELS_TTL, ModelsManager};
pub use retry::{BASE_BACKOFF, MAX_RETRY_AFTER};
