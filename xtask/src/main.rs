//! Project automation, run as `cargo xtask <task>`.
//!
//! - `cargo xtask schema` rewrites `schema/config.schema.json` from the config types.
//! - `cargo xtask schema --check` exits 1 when the committed file is stale.
//! - `cargo xtask bench` runs every benchmark: the criterion benches of `provider-auth` and
//!   `model-client`, the scenario table of the README, then the soak.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["schema"] => schema(false),
        ["schema", "--check"] => schema(true),
        ["bench"] => bench(),
        _ => {
            eprintln!("usage: cargo xtask schema [--check] | cargo xtask bench");
            ExitCode::from(2)
        }
    }
}

fn bench() -> ExitCode {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let runs: [&[&str]; 6] = [
        &["bench", "-p", "provider-auth"],
        &["bench", "-p", "model-client"],
        &["bench", "-p", "modelauth", "--bench", "scenarios"],
        &["bench", "-p", "modelauth", "--bench", "soak"],
        &["bench", "-p", "modelauth", "--bench", "proxy"],
        &["bench", "-p", "modelauth", "--bench", "store"],
    ];
    for args in runs {
        eprintln!("== cargo {}", args.join(" "));
        match std::process::Command::new(&cargo).args(args).status() {
            Ok(status) if status.success() => {}
            Ok(status) => {
                eprintln!("cargo {} failed: {status}", args.join(" "));
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("cannot run cargo: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn schema(check: bool) -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join(provider_config::SCHEMA_PATH_IN_REPO);
    let fresh = provider_config::config_schema_json();
    if check {
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == fresh => {
                println!("{} is up to date", provider_config::SCHEMA_PATH_IN_REPO);
                ExitCode::SUCCESS
            }
            Ok(_) => {
                eprintln!(
                    "{} is stale: run `cargo xtask schema` and commit the result",
                    provider_config::SCHEMA_PATH_IN_REPO
                );
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("cannot read {}: {e}", path.display());
                ExitCode::FAILURE
            }
        }
    } else {
        match std::fs::write(&path, fresh) {
            Ok(()) => {
                println!("wrote {}", provider_config::SCHEMA_PATH_IN_REPO);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot write {}: {e}", path.display());
                ExitCode::FAILURE
            }
        }
    }
}
