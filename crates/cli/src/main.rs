//! `modelauth`: check a provider config, obtain tokens, talk to a gateway, run the demo.

mod auth;
mod commands;
mod config_file;
mod error;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{CliError, EXIT_OK, EXIT_USAGE};

/// Talk to OpenAI-compatible gateways whose bearer tokens are minted by a command.
#[derive(Debug, Parser)]
#[command(name = "modelauth", version, about, long_about = None)]
struct Cli {
    /// Config file (default: $MODELAUTH_CONFIG, else $XDG_CONFIG_HOME/modelauth/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log token-command runs and requests to stderr (never the token).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the config; one line per provider: id, auth kind, base_url.
    Check,
    /// Print the JSON schema of the config file.
    Schema,
    /// Obtain a token; print a redacted summary, or only the token with --show.
    Token {
        /// Provider id (default: the config's model_provider).
        #[arg(short, long = "provider", value_name = "ID")]
        provider: Option<String>,
        /// Print only the token, for piping into another tool.
        #[arg(long)]
        show: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
            let _ = writeln!(std::io::stderr(), "{}", e.render());
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    if cli.verbose {
        init_logging();
    }
    match cli.command {
        Command::Check => {
            let config = config_file::load(cli.config.as_deref())?;
            print(&commands::check::check(&config))
        }
        Command::Schema => print(&commands::check::schema()),
        Command::Token { provider, show } => {
            let config = config_file::load(cli.config.as_deref())?;
            let (id, info) = config_file::provider(&config, provider.as_deref())?;
            let manager = auth::manager_for(id, info)?;
            let out =
                runtime()?.block_on(commands::token::token(id, info, manager.as_ref(), show))?;
            print(&out)
        }
    }
}

/// The async runtime for commands that talk to a token command or a gateway.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(format!("cannot start the async runtime: {e}")))
}

/// `-v`: token-command runs, retries and connections on stderr. Tokens are never logged.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let ours = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::WARN)
        .with_target(provider_auth::TRACING_TARGET, tracing::Level::DEBUG)
        .with_target("model_client", tracing::Level::DEBUG)
        .with_target("realtime", tracing::Level::DEBUG)
        .with_target("dev_gateway", tracing::Level::DEBUG);
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(ours)
        .try_init();
}

/// Writes to stdout; a closed pipe is not an error worth a panic.
fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::runtime(format!("cannot write to stdout: {e}"))),
    }
}
