//! What an application does to use the user's own modelauth config and to share tokens with
//! every other process (the `modelauth` CLI, other copies of the application): load the
//! config file, opt into the shared store, build the client for the configured default
//! provider.
//!
//! `cargo run --example config_and_store` (with `MODELAUTH_CONFIG=PATH` to use your own
//! config; without it, a config for the embedded dev gateway is written to a temp folder).

mod common;

use model_client::ModelClient;
use provider_auth::{SharedStore, auth_manager_for_provider, use_shared_store};
use provider_config::load_config_file;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run_as_token_command_if_asked().await;
    // The dev gateway stands in for the company gateway (kept alive until the end).
    let (_gateway, dev) = common::gateway_and_provider().await?;
    let scratch = std::env::temp_dir().join(format!("modelauth-example-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;

    // 1. The config file: the one the user names, else (for this example) one for the
    //    dev gateway. An application would use its own flag, or modelauth's default path.
    let path = match std::env::var_os("MODELAUTH_CONFIG") {
        Some(path) => path.into(),
        None => {
            let path = scratch.join("config.toml");
            let auth = dev
                .auth
                .as_ref()
                .ok_or("the dev provider has a token command")?;
            std::fs::write(
                &path,
                format!(
                    "model_provider = \"corp\"\n\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"{}\"\n\n[model_providers.corp.auth]\ncommand = {:?}\nargs = {:?}\nformat = \"json\"\n",
                    dev.base_url, auth.command, auth.args
                ),
            )?;
            path
        }
    };
    // Errors name the file, the line and the key: show them to the user as they are.
    let config = load_config_file(&path)?;

    // 2. The shared store, where `modelauth` itself keeps tokens: `$MODELAUTH_CACHE_DIR`,
    //    else the user's runtime folder, else a per-user cache folder. Before any manager
    //    is built. (Here a private folder, so that the example leaves nothing behind.)
    if std::env::var_os("MODELAUTH_CACHE_DIR").is_none() {
        let store = SharedStore::at(&scratch.join("store"))?;
        use_shared_store(store);
    } else {
        let location = SharedStore::from_env();
        // A `StoreError` says its own part; its causes (an I/O error) are its sources.
        let said = |e: &(dyn std::error::Error + 'static)| {
            std::iter::successors(Some(e), |e| e.source())
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ")
        };
        for note in &location.passed_over {
            eprintln!("warning: {}", said(note));
        }
        match location.store {
            Ok(store) => {
                use_shared_store(store);
            }
            Err(why) => eprintln!(
                "warning: no shared store ({}); tokens stay in this process",
                said(&why)
            ),
        }
    }

    // 3. The default provider, its manager and a client.
    let id = config.default_provider_id();
    let info = config
        .provider(id)
        .ok_or("the default provider is defined")?
        .clone();
    let manager = auth_manager_for_provider(id, &info, None)?;
    let client = ModelClient::new(id, info, manager.clone())?;
    let models = client.list_models().await?;
    println!(
        "{id}: {} models through {}",
        models.data.len(),
        path.display()
    );
    let from_store = manager.token_status().is_some_and(|s| s.from_shared_store);
    let runs = manager.stats().map_or(0, |s| s.command_runs);
    // A second run of this program within the token's lifetime reads it from the store.
    println!("token command runs: {runs}; read from the shared store: {from_store}");
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
