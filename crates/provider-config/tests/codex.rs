//! `--codex-config`: an unmodified Codex config is read by Codex's rules (SPEC §12). Each
//! fixture in `tests/codex/` is a real-shaped Codex file whose first line says what Codex
//! does with it: `# expect: accepted`, or the error it refuses it with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

use provider_config::{
    AuthKind, ConfigError, DEFAULT_TIMEOUT_MS, TokenFormat, load_codex_config_file,
    load_config_file,
};

const HOME: &str = "/home/ada";

fn fixtures() -> Vec<PathBuf> {
    support::toml_files("codex")
}

fn load(name: &str) -> Result<provider_config::Config, ConfigError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/codex")
        .join(name);
    load_codex_config_file(&path, Some(Path::new(HOME)))
}

/// The error without its file prefix: `key.path: message`, or `toml: key.path: message`.
fn outcome(result: &Result<provider_config::Config, ConfigError>) -> String {
    match result {
        Ok(_) => "accepted".to_owned(),
        Err(ConfigError::Invalid {
            key_path, message, ..
        }) => format!("{key_path}: {message}"),
        Err(ConfigError::Toml {
            key_path, message, ..
        }) => format!("toml: {key_path}: {message}"),
        Err(other) => format!("other: {other}"),
    }
}

#[test]
fn every_codex_fixture_is_accepted_or_refused_as_codex_does() {
    let files = fixtures();
    assert!(files.len() >= 15, "fixtures missing: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", file.display()));
        let result = load_codex_config_file(&file, Some(Path::new(HOME)));
        assert_eq!(outcome(&result), expected, "{}", file.display());
        if let Err(e) = &result {
            let shown = e.to_string();
            assert!(shown.starts_with(&file.display().to_string()), "{shown}");
            assert!(!shown.contains("sk-not-shown"), "{shown}");
        }
    }
}

#[test]
fn codex_config_reads_only_the_providers() {
    let config = load("accepted_full.toml").unwrap();
    assert_eq!(config.default_provider_id(), "corp");
    let corp = config.provider("corp").unwrap();
    assert_eq!(corp.name, "Corp gateway");
    assert_eq!(corp.stream_idle_timeout_ms, 120_000);
    assert_eq!(corp.query_params["api-version"], "2025-04-01-preview");
    let auth = corp.auth.as_ref().unwrap();
    assert_eq!(auth.command, "gcloud");
    assert_eq!(auth.args, ["auth", "print-access-token"]);
    // No upper bound on the command's timeout; 0 = refresh only after a 401.
    assert_eq!(auth.timeout_ms, 900_000);
    assert_eq!(auth.refresh_interval(), None);
    // openai_base_url moves the built-in provider.
    assert_eq!(
        config.provider("openai").unwrap().base_url,
        "https://openai-proxy.example.com/v1"
    );
    // The same file is not a native config: the native format is strict.
    let native = load_config_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codex/accepted_full.toml"),
    );
    assert!(native.is_err());
}

#[test]
fn codex_config_defaults_caps_and_ignored_keys() {
    let config = load("accepted_defaults.toml").unwrap();
    assert_eq!(config.default_provider_id(), "openai");
    let helper = config.provider("helper").unwrap();
    assert_eq!(helper.base_url, "https://api.openai.com/v1");
    assert_eq!(helper.request_max_retries, 100);
    assert_eq!(helper.stream_max_retries, 100);
    assert_eq!(helper.stream_idle_timeout_ms, 0);
    assert_eq!(helper.websocket_connect_timeout_ms, 0);
    assert_eq!(helper.auth_kind(), AuthKind::Command);
    let auth = helper.auth.as_ref().unwrap();
    assert_eq!(auth.timeout_ms, DEFAULT_TIMEOUT_MS);
    // Codex reads stdout as the token: an unknown `format` key does not change that.
    assert_eq!(auth.format, TokenFormat::Text);
    assert_eq!(
        auth.cwd,
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codex")
    );
    assert!(config.provider("lmstudio").is_some());
}

#[test]
fn codex_cwd_expands_home_and_joins_relative_paths() {
    let config = load("accepted_cwd_home.toml").unwrap();
    let home = config.provider("home").unwrap();
    assert_eq!(home.auth.as_ref().unwrap().cwd, Path::new("/home/ada/bin"));
    assert_eq!(
        home.base_url,
        "not even a URL: Codex does not check it at load"
    );
    let rel = config.provider("rel").unwrap();
    assert_eq!(
        rel.auth.as_ref().unwrap().cwd,
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codex/tools")
    );
}

#[test]
fn a_missing_codex_file_names_the_path() {
    let err = load("no-such-file.toml").unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("no-such-file.toml"), "{err}");
}
