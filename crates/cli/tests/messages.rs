//! Every user-visible message of the common error paths, pinned by snapshots: the exact
//! stderr (and stdout where it matters) and the exit code, so a duplicated or garbled
//! message cannot slip through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs modelauth in `dir` with `config` written to `config.toml`; returns the exit code,
/// stdout and stderr as one text, with the temp dir replaced by `[DIR]`.
fn transcript(config: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fail.sh");
    std::fs::write(&path, "#!/bin/sh\necho 'backend unavailable' >&2\nexit 4\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modelauth"))
        .args(args)
        .current_dir(dir.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("MODELAUTH_CONFIG")
        .env("XDG_CONFIG_HOME", dir.path())
        .env("MODELAUTH_CACHE_DIR", dir.path().join("store"))
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let shown = format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    stable(&shown, dir.path())
}

fn stable(text: &str, dir: &Path) -> String {
    let dir = dir.display().to_string();
    let canonical = std::fs::canonicalize(&dir)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| dir.clone());
    text.replace(&canonical, "[DIR]").replace(&dir, "[DIR]")
}

const CORP: &str = "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw.example.com/v1\"\nauth = { command = \"./fail.sh\" }\n";

#[test]
fn a_named_config_file_that_does_not_exist() {
    insta::assert_snapshot!(transcript("", &["--config", "nope.toml", "check"]));
}

#[test]
fn an_unknown_key_names_file_line_column_and_key_path() {
    insta::assert_snapshot!(transcript(
        "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw/v1\"\n[model_providers.corp.auth]\ncommand = \"x\"\ntimout_ms = 5\n",
        &["--config", "config.toml", "check"]
    ));
}

#[test]
fn auth_combined_with_env_key() {
    insta::assert_snapshot!(transcript(
        "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw/v1\"\nenv_key = \"K\"\nauth = { command = \"x\" }\n",
        &["--config", "config.toml", "check"]
    ));
}

#[test]
fn a_password_in_base_url_is_refused_and_never_printed() {
    let shown = transcript(
        "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://me:hunter2@gw/v1\"\n",
        &["--config", "config.toml", "check"],
    );
    assert!(!shown.contains("hunter2"));
    insta::assert_snapshot!(shown);
}

#[test]
fn check_warns_about_plain_http_to_a_remote_host() {
    insta::assert_snapshot!(transcript(
        "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://gw.example.com/v1\"\nauth = { command = \"./fail.sh\" }\n\
         [model_providers.local]\nname = \"Local\"\nbase_url = \"http://127.0.0.1:8080/v1\"\nauth = { command = \"./fail.sh\" }\n",
        &["--config", "config.toml", "check"]
    ));
}

#[test]
fn an_unknown_provider() {
    insta::assert_snapshot!(transcript(
        CORP,
        &["--config", "config.toml", "token", "-p", "nope"]
    ));
}

#[test]
fn a_failing_token_command_is_reported_once_by_every_command() {
    for args in [
        &["token"][..],
        &["models"],
        &["respond", "-m", "m", "hi"],
        &["realtime", "-m", "m"],
        &["bench", "--requests", "2"],
    ] {
        let mut full = vec!["--config", "config.toml"];
        full.extend(args);
        let mut shown = transcript(CORP, &full);
        if args[0] == "bench" {
            // The report's timings differ run to run: keep its first line's shape only.
            let (head, rest) = shown.split_once("--- stderr").unwrap();
            let first = head.lines().nth(2).unwrap_or_default();
            let kept = first.split(':').next().unwrap_or_default();
            shown = format!("exit 1\n--- stdout\n{kept}: ...\n--- stderr{rest}");
        }
        assert_eq!(
            shown.matches("backend unavailable").count(),
            1,
            "printed more than once: {shown}"
        );
        insta::assert_snapshot!(format!("failing_command_{}", args[0]), shown);
    }
}

#[test]
fn a_missing_env_key_says_how_to_get_one() {
    insta::assert_snapshot!(transcript("", &["models", "-p", "openai"]));
}

#[test]
fn usage_errors_exit_2() {
    insta::assert_snapshot!(
        "bench_zero_requests",
        transcript(
            CORP,
            &["--config", "config.toml", "bench", "--requests", "0"]
        )
    );
    insta::assert_snapshot!(
        "realtime_send_not_json",
        transcript(
            CORP,
            &[
                "--config",
                "config.toml",
                "realtime",
                "-m",
                "m",
                "--send",
                "{nope"
            ]
        )
    );
}

#[test]
fn with_no_config_file_token_and_models_say_where_it_was_looked_for() {
    for args in [&["token"][..], &["models"]] {
        insta::assert_snapshot!(
            format!("no_config_{}", args[0]),
            transcript("unused = true\n", args)
        );
    }
}

/// Found in trial: a FIFO as the config hung `check`, and `/dev/zero` reached 6 GB of
/// memory. Only a regular file is read, and at most 1 MiB of it.
#[test]
fn a_config_that_is_not_a_regular_file_or_too_large_is_refused() {
    let shown = transcript("", &["--config", "/dev/zero", "check"]);
    insta::assert_snapshot!("config_dev_zero", shown);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_modelauth"))
        .args(["--codex-config", fifo.to_str().unwrap(), "check"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it is not a regular file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let big = dir.path().join("big.toml");
    std::fs::write(&big, format!("# {}\n", "x".repeat(1024 * 1024))).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modelauth"))
        .args(["--config", big.to_str().unwrap(), "check"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it is larger than 1024 KiB"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Found in trial: `bench --concurrency 100000000000` aborted and `respond` read all of
/// `/dev/zero` into memory. Both are usage errors now.
#[test]
fn cli_bounds_on_concurrency_and_the_prompt() {
    insta::assert_snapshot!(
        "bench_huge_concurrency",
        transcript(
            CORP,
            &[
                "--config",
                "config.toml",
                "bench",
                "--concurrency",
                "100000000000"
            ]
        )
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), CORP).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modelauth"))
        .args(["--config", "config.toml", "respond", "-m", "m"])
        .current_dir(dir.path())
        .env("MODELAUTH_CACHE_DIR", dir.path().join("store"))
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: the prompt on stdin is larger than 8 MiB\n"
    );
}

/// Found in trial: `check --live` named the provider twice on its line.
#[test]
fn a_failed_live_check_names_its_provider_once() {
    let shown = transcript(CORP, &["--config", "config.toml", "check", "--live"]);
    assert_eq!(shown.matches("corp").count(), 3, "{shown}");
    insta::assert_snapshot!(shown);
}

/// Found in trial: `check --live --json` wrote a failure summary on stderr, although the
/// JSON says it all.
#[test]
fn check_live_json_writes_nothing_on_stderr_when_a_check_fails() {
    let shown = transcript(
        CORP,
        &["--config", "config.toml", "check", "--live", "--json"],
    );
    let (head, stderr) = shown.split_once("--- stderr\n").unwrap();
    assert!(head.starts_with("exit 1\n"), "{shown}");
    assert_eq!(stderr, "", "{shown}");
    assert!(head.contains("\"ok\":false"), "{shown}");
}

/// Found in trial: a token command that is not there was reported twice by `check --live`
/// (a warning, then the live line's error).
#[test]
fn a_missing_command_is_reported_once_by_check_live() {
    let config = CORP.replace("./fail.sh", "./not-there.sh");
    let shown = transcript(&config, &["--config", "config.toml", "check", "--live"]);
    assert_eq!(shown.matches("was not found").count(), 1, "{shown}");
    insta::assert_snapshot!(shown);
    // Without --live, the warning says it.
    let shown = transcript(&config, &["--config", "config.toml", "check"]);
    assert_eq!(shown.matches("was not found").count(), 1, "{shown}");
}

/// Found in trial: `--config` given Codex's own `config.toml` did not suggest
/// `--codex-config`.
#[test]
fn codex_s_own_config_given_to_config_suggests_codex_config() {
    let codex = "model = \"gpt-5\"\napproval_policy = \"never\"\n\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw.example.com/v1\"\n";
    insta::assert_snapshot!(transcript(codex, &["--config", "config.toml", "check"]));
}

/// Codex's cloud built-ins may be selected in Codex's config (Codex authenticates them
/// itself): modelauth says why it has no token for one.
#[test]
fn a_codex_cloud_built_in_selected_says_why_there_is_no_token() {
    insta::assert_snapshot!(transcript(
        "model_provider = \"amazon-bedrock\"\n",
        &["--codex-config", "config.toml", "token"]
    ));
}
