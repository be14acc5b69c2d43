//! Embedding `ModelClient` in an application: a full Tokio `main`, one provider whose
//! bearer token comes from a command, a gateway that rotates its tokens, and the client
//! recovering on its own.
//!
//! `cargo run --example embed_client`

mod common;

use model_client::ModelClient;
use provider_auth::auth_manager_for_provider;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run_as_token_command_if_asked().await;
    let (gateway, info) = common::gateway_and_provider().await?;

    // One manager per provider; every client built with it shares one token cache.
    let manager = auth_manager_for_provider("dev", &info, None)?;
    let client = ModelClient::new("dev", info, manager.clone())?;

    let models = client.list_models().await?;
    let ids: Vec<&str> = models.data.iter().map(|m| m.id.as_str()).collect();
    println!("models: {}", ids.join(", "));

    // The gateway revokes every token: the next request gets a 401, the client reports
    // it, the command runs once more and the request is sent again.
    gateway.rotate();
    let models = client.list_models().await?;
    println!("after a rotation: {} models", models.data.len());

    let runs = manager.stats().map_or(0, |s| s.command_runs);
    println!("token command runs: {runs} (one at start, one after the rotation)");
    Ok(())
}
