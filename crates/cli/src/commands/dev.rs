//! Hidden helpers: `modelauth dev-gateway` runs the dev gateway in the foreground, and
//! `modelauth mint-token` asks a token endpoint for a token (a ready-made `auth.command`).

use std::time::Duration;

#[cfg(feature = "demo")]
use dev_gateway::{DevGateway, GatewayConfig};

use crate::error::CliError;
use crate::output::print;

/// Runs the dev gateway until Ctrl-C, printing its addresses and a config that uses it.
#[cfg(feature = "demo")]
pub async fn gateway(
    port: u16,
    token_lifetime_ms: u64,
    rotate_every_ms: Option<u64>,
) -> Result<(), CliError> {
    let config = GatewayConfig::default()
        .with_port(port)
        .with_token_lifetime(Duration::from_millis(token_lifetime_ms.max(1)));
    let gw = DevGateway::start(config)
        .await
        .map_err(|e| CliError::from_error("could not start the dev gateway", &e))?;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "modelauth".to_owned());
    print(&format!(
        "dev gateway listening on {}\nbase_url  = {}\ntoken url = {}\n\n\
         # a config that uses it:\nmodel_provider = \"dev\"\n\n[model_providers.dev]\nname = \"Dev gateway\"\nbase_url = \"{}\"\n\n\
         [model_providers.dev.auth]\ncommand = \"{exe}\"\nargs = [\"mint-token\", \"--url\", \"{}\"]\nformat = \"json\"\n\n\
         # rotate every token: curl -X POST http://{}/admin/rotate\n\
         # always answer 401: curl -d '{{\"route\":\"models\",\"fault\":\"unauthorized\"}}' http://{}/admin/fault\n\
         # Ctrl-C stops it.\n",
        gw.addr(),
        gw.base_url(),
        gw.token_url(),
        gw.base_url(),
        gw.token_url(),
        gw.addr(),
        gw.addr(),
    ))?;
    let gw = std::sync::Arc::new(gw);
    if let Some(every) = rotate_every_ms.filter(|ms| *ms > 0) {
        let gw = gw.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(every));
            ticks.tick().await;
            loop {
                ticks.tick().await;
                gw.rotate();
            }
        });
    }
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| CliError::runtime(format!("cannot wait for Ctrl-C: {e}")))?;
    Ok(())
}

/// `POST url` and prints the OAuth2 token response (or only its `access_token` with `text`).
pub async fn mint(url: &str, text: bool) -> Result<(), CliError> {
    let response = reqwest::Client::new()
        .post(url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| {
            CliError::runtime(format!(
                "cannot reach the token endpoint: {}",
                e.without_url()
            ))
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(CliError::runtime(format!(
            "the token endpoint answered HTTP {status}"
        )));
    }
    let body: serde_json::Value = response.json().await.map_err(|e| {
        CliError::runtime(format!(
            "the token endpoint did not answer JSON: {}",
            e.without_url()
        ))
    })?;
    if text {
        let token = body
            .get("access_token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| CliError::runtime("the token endpoint's answer has no access_token"))?;
        print(&format!("{token}\n"))
    } else {
        print(&format!("{body}\n"))
    }
}
