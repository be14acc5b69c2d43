//! `modelauth check` and `modelauth schema`, run as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

#[path = "support/docs.rs"]
mod docs;
use docs::documentation;

fn modelauth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_modelauth"))
        .args(args)
        .env_remove("MODELAUTH_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent-modelauth-test")
        .output()
        .unwrap()
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every ```toml block of the README and the docs that is a modelauth config (not a Cargo
/// manifest).
fn readme_examples() -> Vec<String> {
    documentation()
        .iter()
        .flat_map(|(_, page)| docs::fenced_blocks(page))
        .filter(|b| {
            b.lang == "toml"
                && !b.text.starts_with("[dependencies]")
                && !b.text.trim_start().starts_with("[keys.")
        })
        .map(|b| b.text)
        .collect()
}

/// Splits a shell line into words: whitespace-separated, `'...'` and `"..."` quoted.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            (None, c) => word.push(c),
        }
    }
    if started || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Every `modelauth ...` command line of the README's and the docs' shell blocks, cut at a
/// comment, a pipe, a redirection or `&`.
fn documented_commands() -> Vec<(String, Vec<String>)> {
    let mut commands = Vec::new();
    for (page, text) in documentation() {
        let mut in_shell = false;
        for line in text.lines() {
            let trimmed = line.trim_start();
            if let Some(lang) = trimmed.strip_prefix("```") {
                in_shell = !in_shell && matches!(lang, "sh" | "bash" | "console" | "shell");
                continue;
            }
            if !in_shell {
                continue;
            }
            let line = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
            let Some(rest) = line.strip_prefix("modelauth ") else {
                continue;
            };
            let rest = rest
                .split(" #")
                .next()
                .unwrap_or_default()
                .split(['|', '>', '&'])
                .next()
                .unwrap_or_default();
            commands.push((page.clone(), shell_words(rest)));
        }
    }
    commands
}

/// Every `modelauth` command the README and the docs show is one the binary accepts: its
/// subcommand and flags parse (run with `--help` added, so that nothing is executed).
#[test]
fn every_documented_command_line_parses() {
    let commands = documented_commands();
    assert!(
        commands.len() >= 10,
        "{} documented commands",
        commands.len()
    );
    for (page, args) in commands {
        let mut with_help: Vec<&str> = args.iter().map(String::as_str).collect();
        with_help.push("--help");
        let out = modelauth(&with_help);
        assert!(
            out.status.success(),
            "{page}: `modelauth {}` does not parse:\n{}",
            args.join(" "),
            stderr(&out)
        );
    }
}

#[test]
fn every_readme_example_passes_check() {
    let examples = readme_examples();
    assert!(
        examples.len() >= 8,
        "README and docs have {} toml examples",
        examples.len()
    );
    for text in examples {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &text);
        let out = modelauth(&["--config", &config, "check"]);
        assert!(
            out.status.success(),
            "check failed on\n{text}\n{}",
            stderr(&out)
        );
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn check_prints_one_line_per_provider() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw.example.com/v1\"\nauth = { command = \"gcloud\" }\n",
    );
    let out = modelauth(&["--config", &config, "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["corp", "command", "https://gw.example.com/v1"]);
    assert_eq!(lines[1], ["ollama", "none", "http://localhost:11434/v1"]);
    assert_eq!(lines[2], ["openai", "env_key", "https://api.openai.com/v1"]);
    assert_eq!(lines.len(), 3);
}

#[test]
fn auth_with_env_key_exits_2_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw.example.com/v1\"\nenv_key = \"CORP_KEY\"\n[model_providers.corp.auth]\ncommand = \"gcloud\"\n",
    );
    let out = modelauth(&["--config", &config, "check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("model_providers.corp: provider auth cannot be combined with env_key"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("Error {"),
        "{err}"
    );
}

#[test]
fn typo_in_auth_exits_2_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw.example.com/v1\"\n\n[model_providers.corp.auth]\ncommand = \"gcloud\"\nrefresh_interval = 60\n",
    );
    let out = modelauth(&["--config", &config, "check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("{config}:7:1")), "{err}");
    assert!(
        err.contains("model_providers.corp.auth.refresh_interval"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn schema_prints_exactly_the_committed_file() {
    let out = modelauth(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let committed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/config.schema.json"),
    )
    .unwrap();
    assert!(
        out.stdout == committed,
        "modelauth schema differs from schema/config.schema.json"
    );
}

#[test]
fn missing_named_config_exits_2() {
    let out = modelauth(&["--config", "/nonexistent/config.toml", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/config.toml"));
}

#[test]
fn config_is_found_through_env_and_xdg() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[model_providers.envcorp]\nname = \"E\"\nbase_url = \"https://e.example.com/v1\"\n";
    let config = write_config(dir.path(), text);
    let out = Command::new(env!("CARGO_BIN_EXE_modelauth"))
        .arg("check")
        .env("MODELAUTH_CONFIG", &config)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("envcorp"));

    let xdg = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(xdg.path().join("modelauth")).unwrap();
    std::fs::write(
        xdg.path().join("modelauth/config.toml"),
        text.replace("envcorp", "xdgcorp"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modelauth"))
        .arg("check")
        .env_remove("MODELAUTH_CONFIG")
        .env("XDG_CONFIG_HOME", xdg.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("xdgcorp"));
}

#[test]
fn unknown_subcommand_exits_2() {
    assert_eq!(modelauth(&["frobnicate"]).status.code(), Some(2));
}

/// The service units of `deploy/` (docs/service.md): the systemd user units pass
/// `systemd-analyze verify` (where it is installed; with the binary path made this build's),
/// the launchd agent is a property list (Python's `plistlib` reads it, as `plutil -lint`
/// would on macOS), and the command line each runs is one the binary accepts.
#[test]
fn the_service_units_are_valid_and_run_a_command_the_binary_accepts() {
    let root = docs::root().join("deploy");
    let service = std::fs::read_to_string(root.join("systemd/modelauth-proxy.service")).unwrap();
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let out = modelauth(&[args.as_slice(), &["--help"]].concat());
    assert!(out.status.success(), "`{exec}`: {}", stderr(&out));
    let has_analyze = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_analyze {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modelauth-proxy.service"),
            service.replace("%h/.cargo/bin/modelauth", env!("CARGO_BIN_EXE_modelauth")),
        )
        .unwrap();
        std::fs::copy(
            root.join("systemd/modelauth-proxy.socket"),
            dir.path().join("modelauth-proxy.socket"),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join("modelauth-proxy.socket"))
            .arg(dir.path().join("modelauth-proxy.service"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd-analyze verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    } else {
        eprintln!("systemd-analyze is not installed: the units were only read");
    }
    let plist = root.join("launchd/com.modelauth.proxy.plist");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys\nprint(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
        ])
        .arg(&plist)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let agent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(agent["Label"], "com.modelauth.proxy");
    let program: Vec<&str> = agent["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(program[0].ends_with("/modelauth"), "{program:?}");
    let out = modelauth(&[&program[1..], &["--help"]].concat());
    assert!(out.status.success(), "{program:?}: {}", stderr(&out));
    assert!(agent["EnvironmentVariables"]["MODELAUTH_CACHE_DIR"].is_string());
}

/// Every scoped-key file the docs show (a ```toml block of `[keys.NAME]` tables) is one the
/// proxy reads.
#[test]
fn every_documented_key_file_is_read_by_the_proxy() {
    let blocks: Vec<String> = documentation()
        .iter()
        .flat_map(|(_, page)| docs::fenced_blocks(page))
        .filter(|b| b.lang == "toml" && b.text.trim_start().starts_with("[keys."))
        .map(|b| b.text)
        .collect();
    assert!(!blocks.is_empty());
    for text in blocks {
        let keys = proxy::ClientKeys::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(!keys.names().is_empty(), "{text}");
    }
}
