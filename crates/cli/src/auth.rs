//! Building the auth manager for a provider, with the CLI's base session (`OPENAI_API_KEY`).

use std::sync::Arc;

use provider_auth::{AuthManager, AuthToken, StaticAuthManager, auth_manager_for_provider};
use provider_config::ModelProviderInfo;

use crate::error::CliError;

/// The CLI's base session: `OPENAI_API_KEY`, when set.
fn base_session() -> Option<Arc<dyn AuthManager>> {
    let key = std::env::var("OPENAI_API_KEY").ok()?;
    let token = AuthToken::parse(key.trim()).ok()?;
    Some(Arc::new(StaticAuthManager::new("openai", token)))
}

/// The provider-scoped manager for `id`.
pub fn manager_for(id: &str, info: &ModelProviderInfo) -> Result<Arc<dyn AuthManager>, CliError> {
    manager_for_provider(id, info)
        .map_err(|e| CliError::from_error("could not set up credentials", &e))
}

/// The provider handle for `id` (manager, headers, scrubber), what the clients take.
pub fn handle_for(id: &str, info: ModelProviderInfo) -> Result<provider_auth::Provider, CliError> {
    provider_auth::Provider::from_config(id, info, base_session())
        .map_err(|e| CliError::from_error("could not set up credentials", &e))
}

/// The manager alone, with the library's error (the proxy serves a provider that has none).
pub fn manager_for_provider(
    id: &str,
    info: &ModelProviderInfo,
) -> Result<Arc<dyn AuthManager>, provider_auth::AuthError> {
    auth_manager_for_provider(id, info, base_session())
}
