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
//!   from a [`provider_config::ModelProviderInfo`]. [`Provider`] is a configured provider set
//!   up once (manager, headers, scrubber, re-auth statuses) for every client, and
//!   [`RequestAuth::after_status`] is the one-retry-after-401 rule for one logical request.
//!
//! - Other clients: [`AuthLayer`] (feature `tower`) and [`AuthMiddleware`] (feature
//!   `reqwest-middleware`) apply the credential and the one-retry rule to a tower service or
//!   a `reqwest_middleware` client; [`cached_credential_headers`] gives the current headers
//!   without waiting, for clients whose header hook is synchronous.
//!
//! Tokens are [`AuthToken`]s: redacted `Debug`, no `Display` or `Serialize`, sensitive
//! header values, never in errors or tracing events (target `provider_auth`).
//!
//! # Platform and runtime
//!
//! Unix only (process groups, `flock`, `O_NOFOLLOW`), on the Tokio runtime: the command
//! runner and the background refresh use Tokio's process and timer support, so every async
//! call here must run inside a Tokio runtime (multi-threaded or current-thread).
//!
//! # Errors
//!
//! One type, [`AuthError`]: the command's failure ([`CommandFailure`], with what to fix),
//! a missing `env_key`, an unusable static token. Messages name the provider and never
//! quote a token or the command's stdout.
//!
//! # Cancellation
//!
//! Dropping a future of this crate is safe at any point. A token run is shared by all its
//! waiters; when the last one goes away the run is dropped, which kills the command's whole
//! process group, and a later call starts a new run.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), provider_auth::AuthError> {
//! use provider_auth::{Provider, Verdict};
//! use provider_config::{ModelProviderAuthInfo, ModelProviderInfo};
//!
//! let mut info = ModelProviderInfo::new("Corp", "https://gateway.example.com/v1");
//! let mut auth = ModelProviderAuthInfo::new("gcloud");
//! auth.args = vec!["auth".into(), "print-access-token".into()];
//! info.auth = Some(auth);
//!
//! let provider = Provider::from_config("corp", info, None)?;
//! let mut request = provider.request();
//! loop {
//!     let headers = request.credential_headers().await?; // runs gcloud once, then cached
//!     # let _ = headers;
//!     let status = 401; // send with `headers`; the gateway's answer
//!     if request.after_status(status).await? != Verdict::Retry {
//!         break; // the answer stands
//!     }
//! }
//! # Ok(()) }
//! ```

mod cache;
mod command;
mod error;
mod files;
mod format;
mod headers;
#[cfg(any(feature = "tower", feature = "reqwest-middleware"))]
mod integrations;
mod manager;
mod oauth2;
mod provider;
mod refresher;
/// Target of this crate's tracing events.
pub const TRACING_TARGET: &str = "provider_auth";

mod scope;
mod scrub;
mod store;
mod token;

pub use cache::{CachePolicy, CacheStats, TokenCache, TokenStatus};
pub use command::{
    CommandRefresher, MAX_STDERR_EXCERPT_BYTES, MAX_STDOUT_BYTES, disable_prompts,
    locate_token_command, run_token_command,
};
pub use error::{AuthError, CommandFailure, OAuth2Failure, StoreError};
pub use files::write_private_file;
pub use format::{format_rfc3339, jwt_not_before, parse_token_output};
pub use headers::{InvalidHeader, USER_AGENT};
#[cfg(feature = "reqwest-middleware")]
pub use integrations::AuthMiddleware;
#[cfg(feature = "tower")]
pub use integrations::{AuthLayer, AuthService, BoxError};
pub use manager::{
    AuthManager, AuthRetry, CachedAuthManager, NoAuthManager, Recovery, RequestAuth,
    StaticAuthManager, UnavailableAuthManager, Verdict, auth_manager_for_provider,
    cached_credential_headers,
};
pub use oauth2::{
    DevicePrompt, ExchangeReport, GITHUB_ACTIONS_TOKEN_ENV, GITHUB_ACTIONS_URL_ENV,
    MAX_OAUTH2_RESPONSE_BYTES, OAuth2Refresher,
};
pub use provider::Provider;
pub use refresher::{ExternalAuthRefresher, RefreshReason, StaticRefresher};
pub use scope::TokenScope;
pub use scrub::{REDACTED, Scrubber};
pub use store::{
    Handout, IDENTITY_ENV, STORE_TRACING_TARGET, SharedStore, StoreLocation, StoreRefresher,
    use_shared_store,
};
pub use token::{AuthToken, Credential, CredentialHeader, FreshToken, TokenShape};
