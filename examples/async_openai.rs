//! async-openai with command-backed tokens. Its `Config::headers()` is synchronous, so the
//! config reads the cached credential without waiting (`cached_credential_headers`); the
//! application obtains a token before the first call, and after a 401 reports it and
//! tries once more.
//!
//! Staleness: `headers()` returns the token of the moment. While calls keep coming, the
//! cache refreshes it in the background before it expires; a token the gateway revokes
//! early is replaced only after the 401 is reported, as below.
//!
//! `cargo run --example async_openai`

mod common;

use std::sync::Arc;

use async_openai::config::Config;
use async_openai::error::OpenAIError;
use provider_auth::{AuthManager, auth_manager_for_provider, cached_credential_headers};
use secrecy::SecretString;

/// An async-openai config whose headers come from a modelauth manager.
struct CommandAuthConfig {
    base: String,
    manager: Arc<dyn AuthManager>,
    unused_key: SecretString,
}

impl Config for CommandAuthConfig {
    fn headers(&self) -> reqwest::header::HeaderMap {
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in cached_credential_headers(self.manager.as_ref()).unwrap_or_default() {
            headers.insert(name, value);
        }
        headers
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn query(&self) -> Vec<(&str, &str)> {
        Vec::new()
    }

    fn api_base(&self) -> &str {
        &self.base
    }

    fn api_key(&self) -> &SecretString {
        &self.unused_key
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run_as_token_command_if_asked().await;
    let (gateway, info) = common::gateway_and_provider().await?;
    let manager = auth_manager_for_provider("dev", &info, None)?;
    let config = CommandAuthConfig {
        base: info.base_url.clone(),
        manager: manager.clone(),
        unused_key: SecretString::from("unused"),
    };
    let client = async_openai::Client::with_config(config);

    // At start-up (and whenever `headers()` would be empty): make sure a credential is
    // cached. Then the gateway revokes every token, as a real one does on rotation.
    let mut sent = manager.credential().await?;
    gateway.rotate();
    let models = loop {
        match client.models().list().await {
            Err(OpenAIError::ApiError(e)) if e.status_code == 401 => {
                // Report the rejected token once; the next `headers()` has the newer one.
                match sent.take() {
                    Some(credential) => {
                        manager.unauthorized(&credential).await?;
                    }
                    None => return Err(OpenAIError::ApiError(e).into()),
                }
            }
            other => break other?,
        }
    };
    let ids: Vec<&str> = models.data.iter().map(|m| m.id.as_str()).collect();
    println!("async-openai listed: {}", ids.join(", "));
    println!(
        "token command runs: {} (one at start, one after the 401)",
        manager.stats().map_or(0, |s| s.command_runs)
    );
    Ok(())
}
