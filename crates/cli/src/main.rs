//! `modelauth`: check a provider config, obtain tokens, talk to a gateway, run the demo.

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
    match cli.command {
        Command::Check => {
            let config = config_file::load(cli.config.as_deref())?;
            print(&commands::check::check(&config))
        }
        Command::Schema => print(&commands::check::schema()),
    }
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
