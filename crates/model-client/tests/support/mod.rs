//! Token scripts (real processes) and provider configs for the client tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use model_client::ModelClient;
use provider_auth::{AuthManager, auth_manager_for_provider};
use provider_config::ModelProviderInfo;

pub use test_support::TokenScript;

/// A provider at `base_url` using `script` for tokens.
pub fn command_provider(base_url: &str, script: &TokenScript) -> ModelProviderInfo {
    let mut info = ModelProviderInfo::new("Test", base_url);
    info.auth = Some(script.auth());
    info
}

pub fn client(info: &ModelProviderInfo) -> (ModelClient, Arc<dyn AuthManager>) {
    let auth = auth_manager_for_provider("corp", info, None).unwrap();
    (
        ModelClient::new("corp", info.clone(), auth.clone()).unwrap(),
        auth,
    )
}
