//! Command-backed bearer tokens with one shared, single-flight cache, and the scoped
//! [`AuthManager`] trait that the HTTP and realtime clients share.
//!
//! - [`ExternalAuthRefresher`] is a token source: [`CommandRefresher`] runs the configured
//!   command (no shell, own process group, bounded output, always reaped),
//!   [`StaticRefresher`] returns a fixed token, and applications can plug in their own.
//! - [`TokenCache`] caches one source's token: one cache per distinct auth config per process
//!   ([`TokenCache::shared_for_command`]), at most one run at a time shared by every waiter,
//!   refresh ahead at 80% of the lifetime without blocking callers, a backoff (1 s doubling
//!   to 30 s) after failures, and generation-aware invalidation after a 401.
//! - [`AuthManager`] is what clients hold; [`auth_manager_for_provider`] builds the right one
//!   from a [`provider_config::ModelProviderInfo`], and [`RequestAuth`] applies the
//!   one-retry-after-401 rule for one logical request.
//!
//! Tokens are [`AuthToken`]s: redacted `Debug`, no `Display` or `Serialize`, sensitive
//! header values, never in errors or tracing events (target `provider_auth`).

mod cache;
mod command;
mod error;
mod format;
mod headers;
mod manager;
mod refresher;
mod scrub;
mod store;
mod token;

pub use cache::{CachePolicy, CacheStats, TRACING_TARGET, TokenCache, TokenStatus};
pub use command::{
    CommandRefresher, MAX_STDERR_EXCERPT_BYTES, MAX_STDOUT_BYTES, disable_prompts,
    locate_token_command, run_token_command,
};
pub use error::{AuthError, CommandFailure};
pub use format::parse_token_output;
pub use headers::{USER_AGENT, configured_header_values, provider_headers};
pub use manager::{
    AuthManager, AuthRetry, CachedAuthManager, NoAuthManager, Recovery, RequestAuth,
    StaticAuthManager, auth_manager_for_provider,
};
pub use refresher::{ExternalAuthRefresher, RefreshReason, StaticRefresher};
pub use scrub::{REDACTED, Scrubber};
pub use store::{SharedStore, StoreRefresher, use_shared_store};
pub use token::{AuthToken, Credential, CredentialHeader, FreshToken, TokenShape};
