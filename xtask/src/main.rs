//! Project automation, run as `cargo xtask <task>`.
//!
//! - `cargo xtask schema` rewrites `schema/config.schema.json` from the config types.
//! - `cargo xtask schema --check` exits 1 when the committed file is stale.
//! - `cargo xtask bench` runs every benchmark: the criterion benches of `provider-auth` and
//!   `model-client`, the scenario table of the README, then the soak.
//! - `cargo xtask msrv` checks the declared `rust-version` against every dependency in
//!   `Cargo.lock` (for this platform): none may need a newer Rust than the workspace says it
//!   builds with. (Clippy's `incompatible_msrv` lint checks the workspace's own code against
//!   the same number.)

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["schema"] => schema(false),
        ["schema", "--check"] => schema(true),
        ["bench"] => bench(),
        ["msrv"] => msrv(),
        _ => {
            eprintln!("usage: cargo xtask schema [--check] | cargo xtask bench | cargo xtask msrv");
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

/// `1.88`, `1.85.0` -> (1, 88, 0).
fn version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.trim().split('.').map(str::parse::<u64>);
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

fn msrv() -> ExitCode {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let host = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        });
    let mut command = std::process::Command::new(&cargo);
    command.args(["metadata", "--format-version", "1", "--locked"]);
    if let Some(host) = &host {
        command.args(["--filter-platform", host]);
    }
    let metadata: serde_json::Value = match command
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
    {
        Some(m) => m,
        None => {
            eprintln!("cannot read `cargo metadata`");
            return ExitCode::FAILURE;
        }
    };
    let empty = Vec::new();
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let in_resolve: std::collections::BTreeSet<&str> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let packages = metadata["packages"].as_array().unwrap_or(&empty);
    let declared = packages
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(&id)))
        .filter_map(|p| p["rust_version"].as_str())
        .filter_map(version)
        .min();
    let Some(declared) = declared else {
        eprintln!("the workspace declares no rust-version");
        return ExitCode::FAILURE;
    };
    let mut newer = Vec::new();
    for package in packages {
        let id = package["id"].as_str().unwrap_or_default();
        if !in_resolve.contains(id) {
            continue;
        }
        if let Some(needs) = package["rust_version"].as_str().and_then(version)
            && needs > declared
        {
            newer.push(format!(
                "{} {} needs Rust {}.{}.{}",
                package["name"].as_str().unwrap_or("?"),
                package["version"].as_str().unwrap_or("?"),
                needs.0,
                needs.1,
                needs.2
            ));
        }
    }
    let shown = format!("{}.{}", declared.0, declared.1);
    if newer.is_empty() {
        println!(
            "rust-version {shown}: no dependency in Cargo.lock needs a newer Rust ({} checked)",
            in_resolve.len()
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("rust-version {shown} is older than some dependencies need:");
        for line in &newer {
            eprintln!("  {line}");
        }
        eprintln!("raise rust-version in Cargo.toml, or hold those dependencies back");
        ExitCode::FAILURE
    }
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

#[cfg(test)]
mod tests {
    use super::version;

    #[test]
    fn rust_versions_compare_by_number() {
        assert_eq!(version("1.88"), Some((1, 88, 0)));
        assert_eq!(version("1.85.1"), Some((1, 85, 1)));
        assert!(version("1.90") > version("1.88"));
        assert!(version("1.100") > version("1.99.9"));
        assert_eq!(version("one"), None);
    }
}
