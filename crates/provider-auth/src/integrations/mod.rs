//! Plugging command-backed credentials into clients this workspace did not write, each
//! behind a cargo feature:
//! - `tower`: [`AuthLayer`], a `tower::Layer` for hyper-, tonic- or axum-based clients;
//! - `reqwest-middleware`: [`AuthMiddleware`] for a `reqwest_middleware::ClientWithMiddleware`.
//!
//! Both apply the credential (the token where the provider wants it, and the helper's
//! headers) to every request and follow the one-retry rule of every client here: when the
//! gateway answers a re-auth status (401, or a status of `auth.reauth_on`), the rejection is
//! reported, and the request is sent once more with the newer token if its body can be
//! replayed; a second rejection is returned as it came. A success tells the cache the token
//! was accepted (see [`crate::AuthManager::accepted`]). For a client whose header hook is
//! synchronous, see [`crate::cached_credential_headers`].

#[cfg(feature = "reqwest-middleware")]
mod reqwest_middleware;
#[cfg(feature = "tower")]
mod tower;

#[cfg(feature = "reqwest-middleware")]
pub use self::reqwest_middleware::AuthMiddleware;
#[cfg(feature = "tower")]
pub use self::tower::{AuthLayer, AuthService, BoxError};

use std::sync::Arc;

use crate::AuthManager;

/// What both integrations hold: the provider's manager and the statuses that mean "this
/// token is no longer good".
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    pub(crate) manager: Arc<dyn AuthManager>,
    reauth: Arc<[u16]>,
}

impl Binding {
    /// Over `manager`, with 401 alone meaning a rejected token.
    pub(crate) fn new(manager: Arc<dyn AuthManager>) -> Self {
        Self {
            manager,
            reauth: Arc::from([401u16].as_slice()),
        }
    }

    /// For a configured provider: its manager (no base session) and its statuses
    /// (`ModelProviderInfo::is_reauth_status`).
    pub(crate) fn for_provider(
        provider_id: &str,
        info: &provider_config::ModelProviderInfo,
    ) -> Result<Self, crate::AuthError> {
        let statuses: Vec<u16> = [401u16, 403]
            .into_iter()
            .filter(|s| info.is_reauth_status(*s))
            .collect();
        Ok(Self {
            manager: crate::auth_manager_for_provider(provider_id, info, None)?,
            reauth: statuses.into(),
        })
    }

    pub(crate) fn is_reauth(&self, status: u16) -> bool {
        self.reauth.contains(&status)
    }
}
