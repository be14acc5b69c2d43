//! `modelauth proxy`: the credential-injecting loopback proxy (the `proxy` crate) as a
//! command: choose the providers, print the addresses, serve until SIGINT or SIGTERM.

use std::net::SocketAddr;

use provider_config::Config;
use proxy::{Proxy, ProxyConfig, ProxyError, ProxyProvider};

use crate::auth::manager_for_provider;
use crate::error::CliError;
use crate::output::print;

/// How often the key file is looked at for a change (a revocation takes effect within a
/// second).
const KEYS_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Reloads the key file on SIGHUP and whenever it changes; a file that cannot be read
/// keeps the keys loaded before (and says why on stderr).
async fn reload_keys(
    path: std::path::PathBuf,
    handle: proxy::ClientKeysHandle,
    mut hangup: Option<tokio::signal::unix::Signal>,
) {
    let version = |path: &std::path::Path| {
        std::fs::metadata(path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt as _;
            (m.modified().ok(), m.len(), m.ino())
        })
    };
    let mut seen = version(&path);
    loop {
        let asked = tokio::select! {
            Some(()) = async {
                match &mut hangup {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
            () = tokio::time::sleep(KEYS_POLL) => false,
        };
        let now = version(&path);
        if !asked && now == seen {
            continue;
        }
        seen = now;
        match proxy::ClientKeys::load(&path) {
            Ok(keys) => {
                tracing::info!(target: proxy::TRACING_TARGET, keys = keys.names().len(), "client keys reloaded");
                handle.replace(keys);
            }
            Err(e) => eprintln!(
                "warning: {}; keeping the client keys loaded before",
                crate::error::with_causes(&e)
            ),
        }
    }
}

/// systemd's socket activation: the first socket passed in `LISTEN_FDS` (for this process:
/// `LISTEN_PID` unset or ours), if any. Read before any thread starts: it clears the
/// variables, as the protocol asks.
pub fn inherited_listener() -> Result<Option<proxy::InheritedListener>, CliError> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    if let Ok(Some(tcp)) = fds.take_tcp_listener(0) {
        return Ok(Some(proxy::InheritedListener::Tcp(tcp)));
    }
    match fds.take_unix_listener(0) {
        Ok(unix) => Ok(unix.map(proxy::InheritedListener::Unix)),
        Err(e) => Err(CliError::Usage(format!(
            "LISTEN_FDS: the first socket passed is not a listening TCP or Unix stream socket ({e})"
        ))),
    }
}

/// Serves until a signal; exit 0 after a clean stop.
pub async fn proxy(
    config: &Config,
    settings: Args,
    inherited: Option<proxy::InheritedListener>,
) -> Result<(), CliError> {
    let unix = settings.listen.strip_prefix("unix:");
    let listen = match unix {
        Some(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
        None => listen_address(&settings.listen)?,
    };
    let socket_mode = match (&settings.socket_mode, unix) {
        (None, _) => proxy::DEFAULT_SOCKET_MODE,
        (Some(mode), Some(_)) => u32::from_str_radix(mode, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--socket-mode {mode}: expected permission bits in octal, such as 600 or 660"
                ))
            })?,
        (Some(_), None) => {
            return Err(CliError::Usage(
                "--socket-mode applies only to --listen unix:PATH".into(),
            ));
        }
    };
    if unix.is_some_and(str::is_empty) {
        return Err(CliError::Usage(
            "--listen unix:PATH: the socket's path is missing".into(),
        ));
    }
    let ids: Vec<String> = if settings.provider.is_empty() {
        config.toml().model_providers.keys().cloned().collect()
    } else {
        settings.provider.clone()
    };
    // The proxy's terminal is not its users': no token command ever prompts here.
    provider_auth::disable_prompts();
    let mut providers = Vec::new();
    for id in &ids {
        let (id, info) = crate::config_file::provider(config, Some(id))?;
        // A provider whose credential cannot be set up does not stop the others.
        providers.push(match manager_for_provider(id, info) {
            Ok(manager) => ProxyProvider::new(id, info.clone(), manager),
            Err(e) => ProxyProvider::unavailable(id, info.clone(), e),
        });
    }
    let mut proxy_config = ProxyConfig::new(listen, providers)
        .with_max_replay_bytes(settings.max_replay_bytes)
        .with_shutdown_grace(std::time::Duration::from_millis(settings.shutdown_grace_ms));
    if let Some(path) = &settings.client_keys {
        let keys = proxy::ClientKeys::load(path).map_err(|e| {
            CliError::Usage(format!("--client-keys: {}", crate::error::with_causes(&e)))
        })?;
        proxy_config = proxy_config.with_client_keys(keys);
    }
    if let Some(path) = unix {
        proxy_config = proxy_config.with_unix_socket(path, socket_mode);
    }
    if let Some(var) = &settings.client_key_env {
        let key = std::env::var(var)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--client-key-env {var}: the environment variable `{var}` is not set or empty"
                ))
            })?;
        proxy_config = proxy_config.with_client_key(key.trim());
    }
    // Every client connection may hold a connection to a gateway: the more files the
    // better (the connection cap follows this limit).
    let open_files = proxy::limits::raise_open_file_limit();
    tracing::debug!(target: proxy::TRACING_TARGET, ?open_files, "open-file limit");
    // The library says what is wrong; the command line says which flag mends it.
    let bound = match inherited {
        Some(listener) => Proxy::bind_inherited(proxy_config, listener).await,
        None => Proxy::bind(proxy_config).await,
    };
    let proxy = bound.map_err(|e| match e {
        ProxyError::NotLoopback { addr } => CliError::Usage(format!(
            "refusing to listen on {addr}: it is not a loopback address; require a client key with --client-key-env to listen there"
        )),
        ProxyError::NoProviders => CliError::Usage(
            "no provider to serve: name one with -p, or define one in the config file".into(),
        ),
        other => CliError::from_error("could not start the proxy", &other),
    })?;
    // What a client uses: `http://ADDR`, or for a socket `unix:PATH` (with any `Host`).
    let (listening, base) = match proxy.unix_socket_path() {
        Some(path) => (
            format!("unix:{}", path.display()),
            format!("unix:{} ", path.display()),
        ),
        None => {
            let base = format!("http://{}", proxy.local_addr());
            (base.clone(), base)
        }
    };
    let mut lines = format!("listening on {listening}\n");
    for id in proxy.provider_ids() {
        if let Some(info) = config.provider(&id) {
            lines.push_str(&format!("{id}  {base}/{id}  ->  {}\n", info.base_url));
        }
        if let Some(why) = proxy.unavailable(&id) {
            eprintln!(
                "warning: provider `{id}` is unavailable ({why}); {base}/{id} answers 502 token_unavailable"
            );
        }
    }
    // With scoped keys, SIGHUP reloads them instead of stopping (its handler is in place
    // before the address is printed).
    let reloading = match (&settings.client_keys, proxy.client_keys_handle()) {
        (Some(path), Some(handle)) => {
            let hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            Some(tokio::spawn(reload_keys(path.clone(), handle, hangup)))
        }
        _ => None,
    };
    print(&lines)?;
    let reloads = reloading.is_some();
    proxy
        .serve(async move {
            let name = if reloads {
                crate::signals::stopped().await
            } else {
                crate::signals::terminated().await
            };
            tracing::info!(target: proxy::TRACING_TARGET, signal = name, "stopping");
        })
        .await;
    if let Some(reloading) = reloading {
        reloading.abort();
    }
    Ok(())
}

/// `--listen`: `HOST:PORT` with an IP address, or `localhost:PORT` (loopback).
fn listen_address(listen: &str) -> Result<SocketAddr, CliError> {
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    match listen.rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => port
            .parse::<u16>()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| bad_listen(listen)),
        _ => Err(bad_listen(listen)),
    }
}

fn bad_listen(listen: &str) -> CliError {
    CliError::Usage(format!(
        "--listen `{listen}` is not an address like 127.0.0.1:8585 or localhost:8585"
    ))
}

/// `modelauth proxy`'s flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A provider to serve (repeatable; default: every provider of the config file).
    #[arg(short, long = "provider", value_name = "ID")]
    pub provider: Vec<String>,
    /// Listen address (port 0: any free port), or unix:PATH for a Unix-domain socket
    /// (mode 0600 unless --socket-mode). A socket passed by systemd (LISTEN_FDS) is
    /// served instead.
    #[arg(long, value_name = "ADDR", default_value = proxy::DEFAULT_LISTEN)]
    pub listen: String,
    /// The Unix-domain socket's permission bits, in octal (with --listen unix:PATH).
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<String>,
    /// Scoped client keys (a TOML file of named keys, each with the providers and path
    /// prefixes it may use and an optional expiry); reloaded on change and on SIGHUP.
    #[arg(long, value_name = "FILE", conflicts_with = "client_key_env")]
    pub client_keys: Option<std::path::PathBuf>,
    /// Require every client to present the key in this environment variable (needed to
    /// listen on a non-loopback address).
    #[arg(long, value_name = "VAR")]
    pub client_key_env: Option<String>,
    /// Largest request body buffered to replay after a 401.
    #[arg(long, value_name = "N", default_value_t = proxy::DEFAULT_MAX_REPLAY_BYTES)]
    pub max_replay_bytes: usize,
    /// On SIGINT or SIGTERM, how long requests in flight may go on before the proxy stops
    /// (and kills any token command still running).
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,
}

/// `--shutdown-grace-ms`'s default: the proxy library's.
const DEFAULT_SHUTDOWN_GRACE_MS: u64 = proxy::SHUTDOWN_GRACE.as_secs() * 1000;

/// `modelauth proxy`: serve the providers until a signal.
pub fn run(args: Args, ctx: &crate::context::Context) -> Result<(), CliError> {
    let config = ctx.config()?;
    let inherited = inherited_listener()?;
    let runtime = crate::proxy_runtime()?;
    let result = runtime.block_on(proxy(&config, args, inherited));
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}
