//! Streaming a response: text deltas printed as they arrive, over server-sent events.
//!
//! `cargo run --example stream_response`

mod common;

use std::io::Write as _;

use futures::StreamExt as _;
use model_client::ModelClient;
use provider_auth::auth_manager_for_provider;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run_as_token_command_if_asked().await;
    let (_gateway, info) = common::gateway_and_provider().await?;
    let manager = auth_manager_for_provider("dev", &info, None)?;
    let client = ModelClient::new("dev", info, manager)?;

    // Dropping the stream at any point closes its connection.
    let mut stream = client
        .stream_prompt("dev-small", "Say hello in five words")
        .await?;
    let mut out = std::io::stdout();
    while let Some(event) = stream.next().await {
        if let Some(delta) = event?.text_delta() {
            write!(out, "{delta}")?;
            out.flush()?;
        }
    }
    writeln!(out)?;
    Ok(())
}
