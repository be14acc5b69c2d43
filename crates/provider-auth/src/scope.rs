//! What a token belongs to.

use provider_config::{ModelProviderAuthInfo, ModelProviderInfo};

/// What a command token belongs to: the provider, where it is sent and how it is minted.
///
/// The command learns the provider through `MODELAUTH_PROVIDER` and may mint a token per
/// audience, so two scopes that differ in any part never share a token: not in a process's
/// cache ([`crate::TokenCache::shared_for_command`]) and not in the shared store
/// ([`crate::SharedStore`]), even when their `auth` tables are the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenScope {
    /// The provider id.
    pub provider: String,
    /// The provider's `base_url`.
    pub base_url: String,
    /// The provider's `auth` table.
    pub auth: ModelProviderAuthInfo,
}

impl TokenScope {
    /// The scope of a provider's command token; `None` when it has no `auth` table.
    pub fn of(provider_id: &str, info: &ModelProviderInfo) -> Option<Self> {
        Some(Self::new(provider_id, &info.base_url, info.auth.clone()?))
    }

    /// A scope from its parts.
    pub fn new(provider_id: &str, base_url: &str, auth: ModelProviderAuthInfo) -> Self {
        Self {
            provider: provider_id.to_owned(),
            base_url: base_url.to_owned(),
            auth,
        }
    }
}
