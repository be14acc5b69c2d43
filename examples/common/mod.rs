//! What every example needs: the dev gateway on loopback, and a provider whose token
//! command is this very program run with `mint URL` (a real process that fetches a
//! short-lived token from the gateway, as `gcloud auth print-access-token` would from
//! Google). No network, no config file.
#![allow(dead_code)]

use dev_gateway::{DevGateway, GatewayConfig};
use provider_config::{ModelProviderAuthInfo, ModelProviderInfo, TokenFormat};

/// When this process was started as the token command (`<example> mint URL`), mints a
/// token, prints the gateway's JSON answer and exits. Call it first thing in `main`.
pub async fn run_as_token_command_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, verb, url] = args.as_slice()
        && verb == "mint"
    {
        let code = match reqwest::Client::new().post(url).send().await {
            Ok(response) => match response.text().await {
                Ok(body) => {
                    println!("{body}");
                    0
                }
                Err(e) => {
                    eprintln!("cannot read the token endpoint's answer: {e}");
                    1
                }
            },
            Err(e) => {
                eprintln!("cannot reach the token endpoint: {e}");
                1
            }
        };
        std::process::exit(code);
    }
}

/// The dev gateway, and a provider for it whose `auth.command` mints tokens from it.
pub async fn gateway_and_provider()
-> Result<(DevGateway, ModelProviderInfo), Box<dyn std::error::Error>> {
    let gateway = DevGateway::start(GatewayConfig::default()).await?;
    let exe = std::env::current_exe()?;
    let mut auth = ModelProviderAuthInfo::new(exe.to_string_lossy());
    auth.args = vec!["mint".to_owned(), gateway.token_url()];
    // The gateway answers like an OAuth2 token endpoint: {"access_token", "expires_in"}.
    auth.format = TokenFormat::Json;
    let mut info = ModelProviderInfo::new("Dev gateway", gateway.base_url());
    info.auth = Some(auth);
    Ok((gateway, info))
}
