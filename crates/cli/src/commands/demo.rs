//! `modelauth demo`: the whole thing end to end against the embedded dev gateway, with no
//! network and no config of the user's.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dev_gateway::{DevGateway, GatewayConfig, Route};
use futures::StreamExt as _;
use model_client::ModelClient;
use provider_auth::{AuthManager, auth_manager_for_provider};
use provider_config::{Config, load_config_file};
use realtime::RealtimeClient;

use crate::commands::token::human;
use crate::error::CliError;
use crate::output::print;

/// Lifetime of the gateway's tokens: short, so the demo can show a refresh ahead of expiry.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3);
const PROVIDER: &str = "dev";
const MODEL: &str = "dev-small";

struct Demo {
    manager: Option<Arc<dyn AuthManager>>,
    spinner: bool,
}

impl Demo {
    fn runs(&self) -> u64 {
        self.manager
            .as_ref()
            .and_then(|m| m.stats())
            .map_or(0, |s| s.command_runs)
    }

    /// Runs one step: a progress line while it waits (on a terminal), then one line.
    async fn step<T, F>(&self, name: &str, waiting: &str, work: F) -> Result<T, CliError>
    where
        F: Future<Output = Result<(T, String), String>>,
    {
        let spinner = self.spinner.then(|| {
            let label = format!("{name}: {waiting}");
            tokio::spawn(async move {
                let frames = ['|', '/', '-', '\\'];
                for i in 0usize.. {
                    eprint!("\r{} {label}", frames[i % frames.len()]);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });
        let result = work.await;
        if let Some(s) = spinner {
            s.abort();
            eprint!("\r\x1b[2K");
        }
        match result {
            Ok((value, line)) => {
                print(&format!(
                    "ok  {name:<13} {line} [command runs: {}]\n",
                    self.runs()
                ))?;
                Ok(value)
            }
            Err(e) => {
                print(&format!("ERR {name:<13} {e}\n"))?;
                Err(CliError::runtime(format!("demo step `{name}` failed: {e}")))
            }
        }
    }
}

/// Runs the demo. Everything it starts lives in this process and a temp dir.
pub async fn demo() -> Result<(), CliError> {
    let started = Instant::now();
    let mut demo = Demo {
        manager: None,
        spinner: crate::output::progress_on_stderr(),
    };
    let exe = std::env::current_exe()
        .map_err(|e| CliError::runtime(format!("cannot find the modelauth binary: {e}")))?;
    let dir = tempfile::tempdir()
        .map_err(|e| CliError::runtime(format!("cannot create a temp dir: {e}")))?;

    let gw = demo
        .step("gateway", "starting on 127.0.0.1", async {
            let gw =
                DevGateway::start(GatewayConfig::default().with_token_lifetime(TOKEN_LIFETIME))
                    .await
                    .map_err(|e| e.to_string())?;
            let line = format!(
                "dev gateway on {} (tokens live {} s)",
                gw.base_url(),
                TOKEN_LIFETIME.as_secs()
            );
            Ok((gw, line))
        })
        .await?;

    let config_path = dir.path().join("config.toml");
    let config: Config = demo
        .step("check", "writing and validating a config", async {
            let text = format!(
                "model_provider = \"{PROVIDER}\"\n\n[model_providers.{PROVIDER}]\nname = \"Dev gateway\"\nbase_url = \"{}\"\n\n\
                 [model_providers.{PROVIDER}.auth]\ncommand = {:?}\nargs = [\"mint-token\", \"--url\", \"{}\"]\nformat = \"json\"\n",
                gw.base_url(),
                exe.display().to_string(),
                gw.token_url()
            );
            std::fs::write(&config_path, text).map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
            let config = load_config_file(&config_path).map_err(|e| crate::error::with_causes(&e))?;
            let settings = crate::commands::check::Settings {
                provider: Some(PROVIDER.to_owned()),
                ..Default::default()
            };
            let report = crate::commands::check::check(&config, String::new(), &settings)
                .await
                .map_err(|e| e.render_plain())?;
            let line = report
                .lines(&config)
                .lines()
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join("  ");
            Ok((config, format!("{line} (auth.command = modelauth mint-token)")))
        })
        .await?;
    let info = config
        .provider(PROVIDER)
        .cloned()
        .ok_or_else(|| CliError::runtime("the demo config lost its provider"))?;
    let manager = auth_manager_for_provider(PROVIDER, &info, None)
        .map_err(|e| CliError::from_error("could not set up credentials", &e))?;
    demo.manager = Some(manager.clone());

    demo.step("token", "running the token command", async {
        let t = Instant::now();
        let credential = manager.credential().await.map_err(|e| e.to_string())?;
        let token = credential.ok_or("the provider handed out no token")?.token;
        let left = manager
            .token_status()
            .and_then(|s| s.expires_in)
            .map_or_else(|| "until a 401".to_owned(), human);
        Ok((
            (),
            format!(
                "obtained in {} ms: {} chars, redacted; cached for {left}",
                t.elapsed().as_millis(),
                token.len()
            ),
        ))
    })
    .await?;

    let client = ModelClient::new(PROVIDER, info.clone(), manager.clone())
        .map_err(|e| CliError::from_error("could not build the client", &e))?;

    demo.step("models", "GET /models", async {
        let list = client.list_models().await.map_err(|e| e.to_string())?;
        let ids: Vec<&str> = list.data.iter().map(|m| m.id.as_str()).collect();
        Ok(((), format!("GET /models -> {}", ids.join(", "))))
    })
    .await?;

    demo.step("respond", "streaming POST /responses", async {
        let mut stream = client
            .stream_prompt(MODEL, "say hello")
            .await
            .map_err(|e| e.to_string())?;
        let (mut text, mut events) = (String::new(), 0);
        while let Some(event) = stream.next().await {
            events += 1;
            if let Some(delta) = event.map_err(|e| e.to_string())?.text_delta() {
                text.push_str(delta);
            }
        }
        Ok(((), format!("{events} SSE events: \"{text}\"")))
    })
    .await?;

    demo.step("rotation", "rotating the gateway's tokens", async {
        let before = (manager.stats().map_or(0, |s| s.command_runs), gw.counters().unauthorized(Route::Models));
        gw.rotate();
        client.list_models().await.map_err(|e| e.to_string())?;
        let after = (manager.stats().map_or(0, |s| s.command_runs), gw.counters().unauthorized(Route::Models));
        if after.1 <= before.1 || after.0 <= before.0 {
            return Err("the old token was not rejected and replaced".to_owned());
        }
        Ok(((), format!("gateway rotated; GET /models got {} x 401, reran the command {} x, retried once: ok", after.1 - before.1, after.0 - before.0)))
    })
    .await?;

    demo.step("realtime", "websocket session", async {
        let mut session = RealtimeClient::connect(PROVIDER, info.clone(), manager.clone(), MODEL)
            .await
            .map_err(|e| e.to_string())?;
        let first = session
            .next_event()
            .await
            .ok_or("the server sent nothing")?
            .map_err(|e| e.to_string())?;
        session
            .send_json(
                serde_json::json!({"type": "response.create", "response": {"instructions": "hi"}}),
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut kinds = vec![first.kind];
        let mut text = String::new();
        while let Some(event) = session.next_event().await {
            let event = event.map_err(|e| e.to_string())?;
            if let Some(d) = event.fields.get("delta").and_then(|d| d.as_str()) {
                text.push_str(d);
            }
            let done = event.kind == "response.done";
            if kinds.last() != Some(&event.kind) {
                kinds.push(event.kind);
            }
            if done {
                break;
            }
        }
        let _ = session.close().await;
        Ok((
            (),
            format!(
                "same token over the websocket: {} \"{text}\"",
                kinds.join(" -> ")
            ),
        ))
    })
    .await?;

    demo.step("proxy", "modelauth proxy in front of the gateway", async {
        let proxy = proxy::Proxy::bind(proxy::ProxyConfig::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            vec![proxy::ProxyProvider::new(PROVIDER, info.clone(), manager.clone())],
        ))
        .await
        .map_err(|e| e.to_string())?;
        let base = format!("http://{}/{PROVIDER}", proxy.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(proxy.serve(async {
            let _ = stopped.await;
        }));
        // A plain HTTP client with a dummy key, as any OpenAI SDK pointed at the proxy.
        let plain = reqwest::Client::new();
        let get = || plain.get(format!("{base}/models")).bearer_auth("sk-dummy").send();
        let first = get().await.map_err(|e| e.to_string())?.status();
        gw.rotate();
        let after = get().await.map_err(|e| e.to_string())?.status();
        let _ = stop.send(());
        let _ = serving.await;
        if !(first.is_success() && after.is_success()) {
            return Err(format!("GET {base}/models answered {first}, then {after} after a rotation"));
        }
        Ok(((), format!("GET {base}/models with a dummy key: {first}; rotated; {after} (the proxy replayed it with a fresh token)")))
    })
    .await?;

    let refresh_in = manager
        .token_status()
        .and_then(|s| s.refresh_in)
        .unwrap_or_default();
    demo.step(
        "refresh-ahead",
        &format!("waiting {} for 80% of the token's lifetime", human(refresh_in)),
        async {
            tokio::time::sleep(refresh_in + Duration::from_millis(50)).await;
            let runs = manager.stats().map_or(0, |s| s.command_runs);
            let t = Instant::now();
            client.list_models().await.map_err(|e| e.to_string())?;
            let waited = t.elapsed();
            let deadline = Instant::now() + Duration::from_secs(5);
            while manager.stats().map_or(0, |s| s.command_runs) == runs {
                if Instant::now() > deadline {
                    return Err("no background refresh started".to_owned());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            while manager.token_status().and_then(|s| s.refresh_in).is_none_or(|r| r.is_zero()) {
                if Instant::now() > deadline {
                    return Err("the background refresh did not finish".to_owned());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(((), format!("GET /models took {} ms on the old token while a new one was minted in the background", waited.as_millis())))
        },
    )
    .await?;

    let counters = gw.counters();
    let requests: u64 = counters.requests.values().sum();
    let unauthorized: u64 = counters.unauthorized.values().sum();
    print(&format!(
        "demo ok in {:.1} s: {} gateway requests, {} answered 401, {} tokens minted, {} command runs\n",
        started.elapsed().as_secs_f64(),
        requests,
        unauthorized,
        counters.tokens_minted,
        demo.runs()
    ))
}
