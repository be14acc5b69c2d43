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

mod client;
mod error;
mod events;
mod models;
mod retry;
mod sse;

pub use client::{ClientStats, ModelClient, ResponseStream, USER_AGENT};
pub use error::ClientError;
pub use events::{ModelInfo, ModelList, ResponseEvent};
pub use models::{DEFAULT_MODELS_TTL, ModelsManager};
pub use retry::{BASE_BACKOFF, MAX_RETRY_AFTER};
pub use sse::{MAX_EVENT_BYTES, SseEvent, SseParser};
