//! `modelauth`: check a provider config, obtain tokens, talk to a gateway, run the demo.

mod auth;
mod commands;
mod config_file;
mod context;
mod error;
mod output;
mod signals;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, CommandFactory as _, Parser, Subcommand};

use crate::error::{CliError, EXIT_OK, EXIT_USAGE};
use crate::output::print;

/// Talk to OpenAI-compatible gateways whose bearer tokens are minted by a command.
#[derive(Debug, Parser)]
#[command(
    name = "modelauth",
    version,
    long_about = None,
    after_help = "Examples:
  modelauth check --live            run each token command once and say what it printed
  modelauth token -p corp           obtain a token (redacted summary)
  modelauth proxy                   serve http://127.0.0.1:8585/<provider> for any OpenAI tool
  modelauth demo                    the whole thing against an embedded gateway, no network

Environment: MODELAUTH_CONFIG (config file), RUST_LOG (log filter, e.g. modelauth=debug),
NO_COLOR (no colour), MODELAUTH_CACHE_DIR (shared token store)."
)]
struct Cli {
    /// Config file (default: $MODELAUTH_CONFIG, else $XDG_CONFIG_HOME/modelauth/config.toml).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        conflicts_with = "codex_config"
    )]
    config: Option<PathBuf>,
    /// Read Codex's own config.toml by Codex's rules (default: $CODEX_HOME/config.toml,
    /// else ~/.codex/config.toml).
    #[arg(long, global = true, value_name = "PATH", num_args = 0..=1)]
    codex_config: Option<Option<PathBuf>>,
    /// Log token-command runs, retries and connections on stderr (never a token); -vv also
    /// every request. RUST_LOG, when set, decides instead.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    /// Keep tokens in this process only: neither read nor write the shared token store.
    #[arg(long, global = true)]
    no_shared_cache: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the config; one line per provider: id, auth kind, base_url.
    #[command(after_help = "Examples:
  modelauth check                          validate; says which file it read
  modelauth check --live                   run each token command once (never prints a token)
  modelauth check --live --models -p corp  also list corp's models with that token
  modelauth check --live --codex-config    debug the auth command of Codex's own config
  modelauth check --json                   one JSON object")]
    Check(commands::check::Args),
    /// Print the JSON schema of the config file.
    Schema,
    /// Obtain a token; print a redacted summary, or only the token with --show.
    #[command(after_help = "Examples:
  modelauth token -p corp                  redacted summary: source, length, lifetime
  curl -H \"Authorization: Bearer $(modelauth token --show)\" https://gateway.example.com/v1/models
  modelauth token --exec-credential        for a kubeconfig exec plugin
  modelauth token --forget                 drop the shared token; the next call runs the command")]
    Token(commands::token::Args),
    /// List model ids, one per line.
    #[command(after_help = "Examples:
  modelauth models -p corp
  modelauth models --json | jq '.data[].id'")]
    Models {
        /// Provider id (default: the config's model_provider).
        #[arg(short, long = "provider", value_name = "ID")]
        provider: Option<String>,
        /// Print the whole list as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Stream a response's text (PROMPT, or stdin).
    #[command(after_help = "Examples:
  modelauth respond -m gpt-4.1 'Say hello'
  echo 'Say hello' | modelauth respond -p corp -m gpt-4.1 --json")]
    Respond {
        /// Provider id (default: the config's model_provider).
        #[arg(short, long = "provider", value_name = "ID")]
        provider: Option<String>,
        /// Model id.
        #[arg(short, long)]
        model: String,
        /// Print every event as a JSON line instead of the text.
        #[arg(long)]
        json: bool,
        /// The prompt (default: read stdin).
        prompt: Option<String>,
    },
    /// Open a realtime session; print server events as JSON lines.
    #[command(after_help = "Examples:
  modelauth realtime -m gpt-realtime --until session.created --timeout-ms 5000
  modelauth realtime -m gpt-realtime --send '{\"type\":\"response.create\"}' --until response.done")]
    Realtime(commands::realtime::Args),
    /// Load GET /models; report latency percentiles, throughput, 401s and command runs.
    #[command(after_help = "Examples:
  modelauth bench -p corp --requests 5000 --concurrency 64
  modelauth bench --duration 30 --json")]
    Bench(commands::bench::Args),
    /// An end-to-end run against the embedded dev gateway (no network, no config).
    Demo,
    /// Run the provider's token command once with the terminal (an SSO or password
    /// prompt), or its OAuth2 device flow, and fill the shared store, so that later calls
    /// need no prompt.
    #[command(after_help = "Examples:
  modelauth login -p corp                  answer the helper's prompt once (or approve the
                                           device: open the printed URL, enter the code)
  modelauth token -p corp                  later calls, in any process, use the stored token")]
    Login {
        /// Provider id (default: the config's model_provider).
        #[arg(short, long = "provider", value_name = "ID")]
        provider: Option<String>,
    },
    /// A loopback proxy that adds each provider's credential: point any OpenAI-compatible
    /// tool at http://HOST:PORT/<provider>.
    #[command(after_help = "Examples:
  modelauth proxy -p corp
  OPENAI_BASE_URL=http://127.0.0.1:8585/corp OPENAI_API_KEY=unused codex
  MODELAUTH_PROXY_KEY=$(openssl rand -hex 16) modelauth proxy --listen 0.0.0.0:8585 --client-key-env MODELAUTH_PROXY_KEY")]
    Proxy(commands::proxy::Args),
    /// Print shell completions.
    #[command(after_help = "Examples:
  modelauth completions bash > ~/.local/share/bash-completion/completions/modelauth
  modelauth completions zsh > ~/.zfunc/_modelauth
  modelauth completions fish > ~/.config/fish/completions/modelauth.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Run the dev gateway in the foreground (for trying configs by hand).
    #[command(hide = true)]
    DevGateway {
        /// Port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Lifetime of minted tokens, in ms.
        #[arg(long, default_value_t = 300_000)]
        token_lifetime_ms: u64,
        /// Rotate every token this often, in ms.
        #[arg(long, value_name = "MS")]
        rotate_every_ms: Option<u64>,
    },
    /// POST a token endpoint and print its answer (a ready-made auth.command).
    #[command(hide = true)]
    MintToken {
        /// The token endpoint.
        #[arg(long)]
        url: String,
        /// Print only the access_token (for format = "text").
        #[arg(long)]
        text: bool,
    },
}

impl Command {
    /// Whether the command obtains tokens from the user's config (the shared store, and
    /// the note about a missing config file, are for these).
    fn uses_tokens(&self) -> bool {
        matches!(
            self,
            Command::Token(_)
                | Command::Login { .. }
                | Command::Models { .. }
                | Command::Respond { .. }
                | Command::Realtime(_)
                | Command::Bench(_)
                | Command::Proxy(_)
        )
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(codex_flag_before_subcommand(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            if !matches!(e, CliError::OutputClosed | CliError::Reported) {
                let _ = writeln!(std::io::stderr(), "{}", e.render());
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    init_logging(cli.verbose);
    // A command that needs a provider's credential, run with no config file, says where the
    // file was looked for: otherwise its error only names the built-in provider's key.
    let needs_config = cli.command.uses_tokens();
    let note = config_file::Source {
        config: cli.config.clone(),
        codex: cli.codex_config.clone(),
    }
    .missing_default_note()
    .filter(|_| needs_config);
    run_command(cli).map_err(|e| e.with_note(note))
}

fn run_command(cli: Cli) -> Result<(), CliError> {
    let ctx = context::Context {
        store: shared_store(&cli),
        source: config_file::Source {
            config: cli.config.clone(),
            codex: cli.codex_config.clone(),
        },
    };
    match cli.command {
        Command::Check(args) => commands::check::run(args, &ctx),
        #[cfg(feature = "schema")]
        Command::Schema => print(&commands::check::schema()),
        #[cfg(not(feature = "schema"))]
        Command::Schema => Err(not_built("schema")),
        Command::Token(args) => commands::token::run(args, &ctx),
        Command::Models { provider, json } => {
            let client = ctx.client(provider.as_deref())?;
            block_on(commands::models::models(&client, json))
        }
        Command::Respond {
            provider,
            model,
            json,
            prompt,
        } => {
            let client = ctx.client(provider.as_deref())?;
            let prompt = commands::models::prompt(prompt)?;
            block_on(commands::models::respond(&client, &model, &prompt, json))
        }
        Command::Realtime(args) => commands::realtime::run(args, &ctx),
        Command::Bench(args) => commands::bench::run(args, &ctx),
        #[cfg(feature = "demo")]
        Command::Demo => block_on_many(commands::demo::demo()),
        #[cfg(not(feature = "demo"))]
        Command::Demo => Err(not_built("demo")),
        Command::Login { provider } => {
            let chosen = ctx.provider(provider.as_deref())?;
            let out = block_on(commands::token::login(
                &chosen.id,
                &chosen.info,
                ctx.store.as_ref(),
            ))?;
            print(&out)
        }
        Command::Proxy(args) => commands::proxy::run(args, &ctx),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "modelauth", &mut out);
            print(&String::from_utf8_lossy(&out))
        }
        #[cfg(feature = "demo")]
        Command::DevGateway {
            port,
            token_lifetime_ms,
            rotate_every_ms,
        } => runtime()?.block_on(commands::dev::gateway(
            port,
            token_lifetime_ms,
            rotate_every_ms,
        )),
        #[cfg(not(feature = "demo"))]
        Command::DevGateway { .. } => Err(not_built("demo")),
        Command::MintToken { url, text } => block_on(commands::dev::mint(&url, text)),
    }
}

/// A command whose cargo feature this binary was built without (`demo`, `schema`): a
/// usage error that says so, rather than a command missing from `--help`.
#[cfg_attr(all(feature = "demo", feature = "schema"), allow(dead_code))]
fn not_built(feature: &str) -> CliError {
    CliError::Usage(format!(
        "this modelauth was built without the `{feature}` feature; build it with `--features {feature}`"
    ))
}

/// `--codex-config` takes an optional PATH, so in `modelauth --codex-config check` the
/// subcommand would be read as the path: a valueless flag right before a subcommand name is
/// moved to the end of the line, where it has no value to take.
fn codex_flag_before_subcommand(
    args: impl Iterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = args.collect();
    if !args.iter().any(|a| a == "--codex-config") {
        return args;
    }
    let subcommands: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let misplaced = args.windows(2).position(|pair| {
        pair[0] == "--codex-config"
            && pair[1]
                .to_str()
                .is_some_and(|n| subcommands.iter().any(|s| s == n))
    });
    if let Some(i) = misplaced {
        let flag = args.remove(i);
        args.push(flag);
    }
    args
}

/// The shared token store, opted in for this process unless `--no-shared-cache`, or the
/// command does not obtain tokens from the user's config (`demo` has its own). Without a
/// usable store, tokens stay in this process (`-v` says why).
fn shared_store(cli: &Cli) -> Option<provider_auth::SharedStore> {
    if !cli.command.uses_tokens() {
        return None;
    }
    if cli.no_shared_cache {
        tracing::info!(target: "modelauth", "shared token store off (--no-shared-cache): tokens stay in this process");
        return None;
    }
    let location = provider_auth::SharedStore::from_env();
    for why in &location.passed_over {
        eprintln!(
            "warning: shared token store: passed over {}",
            error::with_causes(why)
        );
    }
    match location.store {
        Ok(store) => {
            tracing::info!(target: "modelauth", dir = %store.dir().display(), origin = store.origin(), "shared token store");
            provider_auth::use_shared_store(store.clone());
            Some(store)
        }
        Err(why) => {
            eprintln!(
                "warning: no shared token store ({}); tokens stay in this process, so every call runs the token command",
                error::with_causes(&why)
            );
            None
        }
    }
}

/// The async runtime.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    built(tokio::runtime::Builder::new_multi_thread())
}

/// The proxy's runtime: one event-loop thread, like one nginx worker. Every request is
/// parsed, forwarded and answered on that thread, so no task or buffer crosses threads:
/// nothing waits for a second thread to be scheduled (the latency tail of a shared CPU)
/// or for an allocator lock another thread holds. One thread forwards tens of thousands
/// of requests a second (docs/performance.md); token commands still run as
/// their own processes.
fn proxy_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    built(tokio::runtime::Builder::new_current_thread())
}

fn built(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, CliError> {
    builder
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(format!("cannot start the async runtime: {e}")))
}

/// Runs a command that talks to a token command or a gateway. SIGINT, SIGTERM or SIGHUP
/// drop the work, which kills a running token command's whole process group; the runtime
/// then shuts down (dropping background refreshes the same way) before the process exits.
///
/// One thread: a CLI command waits for one thing at a time (a token command, a gateway), and
/// not starting worker threads keeps a helper call (`token --show`) close to a bare process
/// start. `bench` and `demo`, which load the gateway from many tasks, use [`block_on_many`].
fn block_on<T>(
    work: impl std::future::Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    run_on(built(tokio::runtime::Builder::new_current_thread())?, work)
}

/// [`block_on`] on a multi-threaded runtime.
fn block_on_many<T>(
    work: impl std::future::Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    run_on(runtime()?, work)
}

fn run_on<T>(
    runtime: tokio::runtime::Runtime,
    work: impl std::future::Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    let result = runtime.block_on(async {
        tokio::select! {
            result = work => result,
            name = signals::terminated() => Err(CliError::runtime(format!("interrupted by {name}"))),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Logging on stderr, never a token: `RUST_LOG` when set (an `EnvFilter`, e.g.
/// `modelauth=debug,provider_auth=debug`); else `-v` (token-command runs, retries,
/// connections) or `-vv` (also every request); else only the shared store's warnings.
fn init_logging(verbosity: u8) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(output::colour_on_stderr());
    if let Some(directives) = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        match tracing_subscriber::EnvFilter::try_new(&directives) {
            Ok(filter) => {
                let _ = tracing_subscriber::registry()
                    .with(fmt)
                    .with(filter)
                    .try_init();
                return;
            }
            Err(e) => eprintln!("warning: RUST_LOG is not a valid filter ({e}); ignoring it"),
        }
    }
    let level = match verbosity {
        0 => {
            // Only the shared store's warnings (a lock given up on, an entry ignored).
            let store = tracing_subscriber::filter::Targets::new()
                .with_target(provider_auth::STORE_TRACING_TARGET, tracing::Level::WARN);
            let _ = tracing_subscriber::registry()
                .with(fmt.without_time().with_target(false))
                .with(store)
                .try_init();
            return;
        }
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let ours = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::WARN)
        .with_target(provider_auth::TRACING_TARGET, level)
        .with_target("modelauth", level)
        .with_target("model_client", level)
        .with_target("realtime", level)
        .with_target(proxy::TRACING_TARGET, level)
        .with_target("dev_gateway", level);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(ours)
        .try_init();
}

#[cfg(test)]
mod tests {
    /// What a binary built without `demo` or `schema` says for that command (the default
    /// build has both, so this is where the message is pinned).
    #[test]
    fn a_command_built_without_its_feature_says_which() {
        let err = super::not_built("demo");
        insta::assert_snapshot!(
            format!("exit {}\n{}", err.exit_code(), err.render()),
            @r"
        exit 2
        error: this modelauth was built without the `demo` feature; build it with `--features demo`
        "
        );
    }
}
