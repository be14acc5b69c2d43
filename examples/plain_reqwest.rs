//! `provider-auth` in a plain `reqwest` client, two ways: by hand with `Provider` and
//! `RequestAuth::after_status` (the rule every client here follows), and with `AuthMiddleware` (feature
//! `reqwest-middleware`), which does the same for every request.
//!
//! `cargo run --example plain_reqwest`

mod common;

use provider_auth::{AuthMiddleware, Provider, Verdict};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run_as_token_command_if_asked().await;
    let (gateway, info) = common::gateway_and_provider().await?;
    let url = info.endpoint_url("models")?;
    let provider = Provider::from_config("dev", info.clone(), None)?;
    let manager = provider.manager();
    let http = reqwest::Client::new();

    // A token is cached; then the gateway revokes every token.
    manager.credential().await?;
    gateway.rotate();

    // By hand: credential headers, send; the answer's status says whether to send once more.
    let mut auth = provider.request();
    let status = loop {
        let mut request = http.get(url.clone());
        for (name, value) in auth.credential_headers().await? {
            request = request.header(name, value);
        }
        let response = request.send().await?;
        if auth.after_status(response.status().as_u16()).await? == Verdict::Retry {
            continue;
        }
        break response.status();
    };
    println!("by hand: HTTP {status}");

    // With the middleware: the same rule on every request of the client.
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(AuthMiddleware::for_provider(&provider))
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
