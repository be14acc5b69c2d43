//! Plugging command-backed credentials into clients this workspace did not write, each
//! behind a cargo feature:
//! - `tower`: [`AuthLayer`], a `tower::Layer` for hyper-, tonic- or axum-based clients;
//! - `reqwest-middleware`: [`AuthMiddleware`] for a `reqwest_middleware::ClientWithMiddleware`.
//!
//! Both apply the credential (the token where the provider wants it, and the helper's
//! headers) to every request and follow the one-retry rule of every client here
//! ([`crate::RequestAuth::after_status`]): when the gateway answers a re-auth status (401, or
//! a status of `auth.reauth_on`), the rejection is reported, and the request is sent once
//! more with the newer token if its body can be replayed; a second rejection is returned as
//! it came. A success tells the cache the token was accepted (see
//! [`crate::AuthManager::accepted`]). Each holds a blank [`crate::RequestAuth`] (its manager
//! and re-auth statuses) and clones it for every request. For a client whose header hook is
//! synchronous, see [`crate::cached_credential_headers`].

#[cfg(feature = "reqwest-middleware")]
mod reqwest_middleware;
#[cfg(feature = "tower")]
mod tower;

#[cfg(feature = "reqwest-middleware")]
pub use self::reqwest_middleware::AuthMiddleware;
#[cfg(feature = "tower")]
pub use self::tower::{AuthLayer, AuthService, BoxError};
