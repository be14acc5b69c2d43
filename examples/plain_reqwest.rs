//! `provider-auth` in a plain `reqwest` client, two ways: by hand with `RequestAuth` (the
//! protocol every client here follows), and with `AuthMiddleware` (feature
//! `reqwest-middleware`), which does the same for every request.
//!
//! `cargo run --example plain_reqwest`

mod common;

use provider_auth::{AuthMiddleware, AuthRetry, RequestAuth, auth_manager_for_provider};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run_as_token_command_if_asked().await;
    let (gateway, info) = common::gateway_and_provider().await?;
    let url = info.endpoint_url("models")?;
    let manager = auth_manager_for_provider("dev", &info, None)?;
    let http = reqwest::Client::new();

    // A token is cached; then the gateway revokes every token.
    manager.credential().await?;
    gateway.rotate();

    // By hand: credential headers, send; after a 401 report it and send once more.
    let mut auth = RequestAuth::new(manager.clone());
    let status = loop {
        let mut request = http.get(url.clone());
        for (name, value) in auth.credential_headers().await? {
            request = request.header(name, value);
        }
        let response = request.send().await?;
        if response.status() == 401 && matches!(auth.on_unauthorized().await?, AuthRetry::Retry) {
            continue;
        }
        if response.status().is_success() {
            auth.on_success();
        }
        break response.status();
    };
    println!("by hand: HTTP {status}");

    // With the middleware: the same rule on every request of the client.
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(AuthMiddleware::for_provider("dev", &info)?)
        .build();
    gateway.rotate();
    let response = client.get(url).send().await?;
    println!(
        "with AuthMiddleware after a rotation: HTTP {}",
        response.status()
    );
    println!(
        "token command runs: {} (one at start, one per rotation)",
        manager.stats().map_or(0, |s| s.command_runs)
    );
    Ok(())
}
