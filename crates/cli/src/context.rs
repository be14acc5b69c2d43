//! What every command starts from: where the config is, the shared token store, and the
//! one way from a provider id to its settings, its auth manager and its HTTP client.

use std::sync::Arc;

use model_client::ModelClient;
use provider_auth::{AuthManager, SharedStore};
use provider_config::{Config, ModelProviderInfo};

use crate::config_file;
use crate::error::CliError;

/// The command line's global settings, resolved once for the command that runs.
pub struct Context {
    /// Where the config is read from (`--config`, `--codex-config`, the defaults).
    pub source: config_file::Source,
    /// The shared token store, when the command uses tokens and it is not turned off.
    pub store: Option<SharedStore>,
}

/// One provider of the config: its id and settings.
pub struct Provider {
    /// The provider id.
    pub id: String,
    /// Its settings.
    pub info: ModelProviderInfo,
}

impl Context {
    /// The config, loaded (and checked) from its source.
    pub fn config(&self) -> Result<Config, CliError> {
        self.source.load()
    }

    /// The provider `id` (`-p`), or the config's default one.
    pub fn provider(&self, id: Option<&str>) -> Result<Provider, CliError> {
        let config = self.config()?;
        let (id, info) = config_file::provider(&config, id)?;
        Ok(Provider {
            id: id.to_owned(),
            info: info.clone(),
        })
    }

    /// The HTTP client of the provider `id` (or the default one).
    pub fn client(&self, id: Option<&str>) -> Result<ModelClient, CliError> {
        ModelClient::for_provider(self.provider(id)?.handle()?)
            .map_err(|e| CliError::from_error("could not build the client", &e))
    }
}

impl Provider {
    /// Its scoped auth manager (with the CLI's base session).
    pub fn manager(&self) -> Result<Arc<dyn AuthManager>, CliError> {
        crate::auth::manager_for(&self.id, &self.info)
    }

    /// Its handle (manager, headers, scrubber, re-auth statuses), what the clients take.
    pub fn handle(self) -> Result<provider_auth::Provider, CliError> {
        crate::auth::handle_for(&self.id, self.info)
    }
}
