//! Each configuration rule, checked through the public loading API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use provider_config::{
    AuthKind, ConfigError, DEFAULT_TIMEOUT_MS, TokenFormat, WireApi, load_config_file,
    parse_config_str,
};

fn parse(text: &str) -> Result<provider_config::Config, ConfigError> {
    parse_config_str(text, Path::new("config.toml"), None)
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

const CORP: &str =
    "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw.example.com/v1\"\n";

#[test]
fn defaults_are_applied() {
    let config = parse(&format!(
        "{CORP}[model_providers.corp.auth]\ncommand = \"gcloud\"\n"
    ))
    .unwrap();
    let corp = config.provider("corp").unwrap();
    let auth = corp.auth.as_ref().unwrap();
    assert_eq!(auth.timeout_ms, DEFAULT_TIMEOUT_MS);
    assert_eq!(auth.timeout(), Duration::from_millis(5000));
    assert_eq!(auth.refresh_interval_ms, None);
    assert_eq!(auth.stated_expiry_cap(), None, "a stated expiry governs");
    assert_eq!(auth.refresh_interval(), Some(Duration::from_secs(300)));
    assert_eq!(auth.cwd, Path::new("."));
    assert_eq!(auth.format, TokenFormat::Text);
    assert!(auth.args.is_empty() && auth.env.is_empty());
    assert_eq!(corp.wire_api, WireApi::Responses);
    assert_eq!(corp.request_max_retries, 4);
    assert_eq!(corp.stream_max_retries, 5);
    assert_eq!(corp.auth_kind(), AuthKind::Command);
    assert_eq!(config.default_provider_id(), "openai");
}

#[test]
fn refresh_interval_zero_means_only_after_401() {
    let config = parse(&format!(
        "{CORP}[model_providers.corp.auth]\ncommand = \"x\"\nrefresh_interval_ms = 0\n"
    ))
    .unwrap();
    let auth = config.provider("corp").unwrap().auth.clone().unwrap();
    assert_eq!(auth.refresh_interval(), None);
}

#[test]
fn unknown_auth_key_names_key_path_and_line() {
    let text = format!(
        "{CORP}\n[model_providers.corp.auth]\ncommand = \"gcloud\"\nrefresh_interval = 60\n"
    );
    let err = parse(&text).unwrap_err();
    let ConfigError::Toml {
        line,
        key_path,
        message,
        ..
    } = &err
    else {
        panic!("wrong error: {err:?}");
    };
    assert_eq!(*line, 7, "{err}");
    assert!(key_path.starts_with("model_providers.corp.auth"), "{err}");
    assert!(message.contains("refresh_interval"), "{err}");
    let shown = err.to_string();
    assert!(shown.starts_with("config.toml:7:"), "{shown}");
}

#[test]
fn unknown_top_level_key_is_an_error() {
    let err = error("model_provder = \"corp\"\n");
    assert!(
        err.contains("model_provder") && err.contains("config.toml:1:"),
        "{err}"
    );
}

#[test]
fn unknown_provider_key_is_an_error() {
    let err = error(&format!("{CORP}base_uri = \"x\"\n"));
    assert!(
        err.contains("base_uri") && err.contains("config.toml:4:"),
        "{err}"
    );
}

#[test]
fn auth_with_env_key_is_rejected_naming_the_field() {
    let err = error(&format!(
        "{CORP}env_key = \"K\"\nauth = {{ command = \"x\" }}\n"
    ));
    assert!(
        err.ends_with("model_providers.corp: provider auth cannot be combined with env_key"),
        "{err}"
    );
}

#[test]
fn auth_with_all_three_lists_every_field() {
    let err = error(&format!(
        "{CORP}env_key = \"K\"\nexperimental_bearer_token = \"t\"\nrequires_openai_auth = true\nauth = {{ command = \"x\" }}\n"
    ));
    assert!(err.ends_with(
        "model_providers.corp: provider auth cannot be combined with env_key, experimental_bearer_token, requires_openai_auth"
    ), "{err}");
}

#[test]
fn explicit_requires_openai_auth_false_is_allowed_with_auth() {
    parse(&format!(
        "{CORP}requires_openai_auth = false\nauth = {{ command = \"x\" }}\n"
    ))
    .unwrap();
}

#[test]
fn blank_command_is_rejected() {
    let err = error(&format!("{CORP}auth = {{ command = \" \" }}\n"));
    assert!(
        err.contains("model_providers.corp.auth.command") && err.contains("blank"),
        "{err}"
    );
}

#[test]
fn timeout_out_of_range_is_rejected_with_key_path() {
    for bad in ["0", "600001"] {
        let err = error(&format!(
            "{CORP}[model_providers.corp.auth]\ncommand = \"x\"\ntimeout_ms = {bad}\n"
        ));
        assert!(
            err.contains("model_providers.corp.auth.timeout_ms"),
            "{err}"
        );
        assert!(err.contains("between 1 and 600000"), "{err}");
        assert!(err.starts_with("config.toml:6:"), "{err}");
    }
}

#[test]
fn model_provider_must_exist() {
    let err = error("model_provider = \"corp\"\n");
    assert!(
        err.contains("model_provider") && err.contains("`corp`"),
        "{err}"
    );
    assert!(parse("model_provider = \"ollama\"\n").is_ok());
}

#[test]
fn built_in_ids_are_reserved() {
    let err = error("[model_providers.ollama]\nname = \"x\"\nbase_url = \"http://h/v1\"\n");
    assert!(
        err.contains("model_providers.ollama") && err.contains("built-in"),
        "{err}"
    );
}

#[test]
fn syntax_error_has_line_and_column() {
    let err = error("[model_providers.corp\nname = 1\n");
    assert!(err.starts_with("config.toml:1:"), "{err}");
}

#[test]
fn bad_bearer_token_error_does_not_echo_it() {
    let err = error(&format!(
        "{CORP}experimental_bearer_token = \"sk secret\"\n"
    ));
    assert!(!err.contains("sk secret"), "{err}");
}

#[test]
fn debug_redacts_bearer_token_and_env_values() {
    let config = parse(&format!(
        "{CORP}experimental_bearer_token = \"sk-supersecret\"\n[model_providers.other]\nname = \"o\"\nbase_url = \"http://h/v1\"\nauth = {{ command = \"x\", env = {{ CLIENT_SECRET = \"hunter2\" }} }}\n"
    ))
    .unwrap();
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("sk-supersecret") && !shown.contains("hunter2"),
        "{shown}"
    );
    assert!(shown.contains("CLIENT_SECRET"));
}

#[test]
fn relative_cwd_resolves_against_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!("{CORP}auth = {{ command = \"x\", cwd = \"helpers\" }}\n[model_providers.abs]\nname = \"a\"\nbase_url = \"http://h/v1\"\nauth = {{ command = \"x\", cwd = \"/opt/tools\" }}\n"),
    )
    .unwrap();
    let config = load_config_file(&path).unwrap();
    let corp = config.provider("corp").unwrap().auth.clone().unwrap();
    assert_eq!(corp.cwd, dir.path().join("helpers"));
    let abs = config.provider("abs").unwrap().auth.clone().unwrap();
    assert_eq!(abs.cwd, Path::new("/opt/tools"));
    assert_eq!(config.path(), Some(path.as_path()));
}

#[test]
fn missing_file_names_it() {
    let err = load_config_file(Path::new("/nonexistent/modelauth.toml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/modelauth.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn built_ins_are_present() {
    let config = parse("").unwrap();
    let openai = config.provider("openai").unwrap();
    assert_eq!(openai.base_url, "https://api.openai.com/v1");
    assert_eq!(openai.env_key.as_deref(), Some("OPENAI_API_KEY"));
    assert_eq!(
        config.provider("ollama").unwrap().auth_kind(),
        AuthKind::None
    );
}

#[test]
fn garbage_input_never_panics() {
    let inputs = [
        "\u{0}",
        "[[[",
        "model_providers = 3",
        "[model_providers]\ncorp = 1",
        "[model_providers.corp]\nauth = []",
        "a = \"\\uD800\"",
        "[model_providers.\"\"]\nname=\"x\"\nbase_url=\"http://[::1\"",
        "[model_providers.c]\nname=\"x\"\nbase_url=\"https://h/v1\"\nrequest_max_retries = 18446744073709551615",
        "[model_providers.c]\nname=\"x\"\nbase_url=\"https://h/v1\"\nstream_idle_timeout_ms = 1e3",
    ];
    for input in inputs {
        assert!(parse(input).is_err(), "accepted {input:?}");
    }
}

fn base_url_error(url: &str) -> String {
    error(&format!(
        "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"{url}\"\n"
    ))
}

#[test]
fn base_url_with_a_query_is_rejected_with_a_hint() {
    let err = base_url_error("https://gw/v1?team=a");
    assert!(err.contains("model_providers.corp.base_url"), "{err}");
    assert!(
        err.contains("put query parameters in `query_params`"),
        "{err}"
    );
}

#[test]
fn base_url_userinfo_is_rejected_without_printing_the_password() {
    let err = base_url_error("https://user:hunter2@gw.example.com/v1");
    assert!(err.contains("user name or password"), "{err}");
    assert!(!err.contains("hunter2") && !err.contains("user:"), "{err}");
    assert!(err.contains("***@gw.example.com"), "{err}");
}

#[test]
fn base_url_without_a_host_or_with_a_fragment_is_rejected() {
    assert!(base_url_error("http:///v1").contains("has no host"));
    assert!(base_url_error("https://gw/v1#top").contains("fragment"));
}

/// A `base_url` built in code that cannot make an endpoint URL is a typed error, whose
/// message shows the URL without its user info.
#[test]
fn a_base_url_that_makes_no_endpoint_is_a_typed_error() {
    use provider_config::{EndpointUrlError, ModelProviderInfo};
    let err = ModelProviderInfo::new("Corp", "mailto:ops@corp.example")
        .endpoint_url("models")
        .unwrap_err();
    assert!(matches!(err, EndpointUrlError::NotABase { .. }), "{err:?}");
    let err = ModelProviderInfo::new("Corp", "https://user:s3cret@[gw/v1")
        .endpoint_url("models")
        .unwrap_err();
    assert!(matches!(err, EndpointUrlError::NotAUrl { .. }), "{err:?}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(err.to_string().starts_with("base_url `"), "{err}");
}

#[test]
fn endpoint_urls_keep_a_query_written_in_code_as_a_query() {
    let mut info = provider_config::ModelProviderInfo::new("Corp", "https://gw/v1?team=a");
    info.query_params
        .insert("api-version".to_owned(), "2".to_owned());
    let url = info.endpoint_url("models").unwrap();
    assert_eq!(url.as_str(), "https://gw/v1/models?team=a&api-version=2");
}

#[test]
fn plain_http_to_a_remote_host_with_a_credential_warns() {
    let remote = parse(
        "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://gw.example.com/v1\"\n[model_providers.corp.auth]\ncommand = \"t\"\n",
    )
    .unwrap();
    let warning = remote
        .provider("corp")
        .unwrap()
        .cleartext_warning()
        .unwrap();
    assert_eq!(
        warning,
        "base_url uses plain http:// to gw.example.com: the token travels unencrypted"
    );
    for local in [
        "http://127.0.0.1:8080/v1",
        "http://localhost/v1",
        "http://[::1]/v1",
    ] {
        let config = parse(&format!(
            "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"{local}\"\n[model_providers.corp.auth]\ncommand = \"t\"\n"
        ))
        .unwrap();
        assert_eq!(
            config.provider("corp").unwrap().cleartext_warning(),
            None,
            "{local}"
        );
    }
    // No credential, nothing to leak: no warning.
    let anonymous =
        parse("[model_providers.o]\nname = \"O\"\nbase_url = \"http://gw.example.com/v1\"\n")
            .unwrap();
    assert_eq!(anonymous.provider("o").unwrap().cleartext_warning(), None);
}

/// Every `auth.oauth2` message, as a config author meets it: the key path, and what to
/// give instead. An inline secret is refused without being repeated.
#[test]
fn oauth2_messages() {
    let oauth2 = |body: &str| format!("{CORP}[model_providers.corp.auth.oauth2]\n{body}");
    let url = "token_url = \"https://idp.example.com/token\"\n";
    let cases = [
        format!("{url}grant = \"client_credentials\"\nclient_id = \"x\"\nclient_secret = \"s3cr3t-inline\"\n"),
        format!("{url}grant = \"device_code\"\nclient_id = \"x\"\n"),
        "grant = \"client_credentials\"\nclient_id = \"x\"\n".to_owned(),
        format!("{url}issuer = \"https://idp.example.com\"\ngrant = \"client_credentials\"\nclient_id = \"x\"\n"),
        format!("{url}grant = \"client_credentials\"\n"),
        format!("{url}grant = \"client_credentials\"\nclient_id = \"x\"\nclient_secret_env = \"A\"\nclient_secret_file = \"b\"\n"),
        format!("{url}grant = \"jwt_bearer\"\nclient_secret_env = \"A\"\n"),
        format!("{url}grant = \"jwt_bearer\"\n"),
        format!("{url}grant = \"token_exchange\"\nsubject = \"github_actions\"\n"),
        format!("{url}grant = \"token_exchange\"\nsubject = \"command\"\n"),
        format!("{url}grant = \"token_exchange\"\nsubject = \"github_actions\"\nsubject_audience = \"a\"\nsubject_token_file = \"t\"\n"),
        format!("{url}grant = \"client_credentials\"\nclient_id = \"x\"\nsubject_token_file = \"t\"\n"),
        format!("{url}grant = \"refresh_token\"\nclient_id = \"x\"\n"),
        format!("{url}grant = \"client_credentials\"\nclient_id = \"x\"\nrefresh_token_env = \"R\"\n"),
        "token_url = \"https://user:pw@idp.example.com/token\"\ngrant = \"client_credentials\"\nclient_id = \"x\"\n".to_owned(),
    ];
    let mut shown = String::new();
    for case in &cases {
        let message = error(&oauth2(case));
        assert!(!message.contains("s3cr3t-inline") && !message.contains(":pw@"));
        shown.push_str(&message);
        shown.push('\n');
    }
    shown.push_str(&error(&format!(
        "{CORP}[model_providers.corp.auth]\ncommand = \"gcloud\"\n[model_providers.corp.auth.oauth2]\n{url}grant = \"client_credentials\"\nclient_id = \"x\"\n"
    )));
    shown.push('\n');
    shown.push_str(&error(&format!(
        "{CORP}[model_providers.corp.auth]\nheader = \"api-key\"\n"
    )));
    insta::assert_snapshot!(shown);
}

#[test]
fn oauth2_relative_paths_are_relative_to_the_config_folder() {
    let text = format!(
        "{CORP}[model_providers.corp.auth.oauth2]\ntoken_url = \"https://idp.example.com/token\"\ngrant = \"token_exchange\"\nclient_id = \"x\"\nclient_secret_file = \"secrets/client\"\nsubject_token_file = \"/var/run/secrets/tokens/gateway\"\n"
    );
    let config = parse_config_str(
        &text,
        Path::new("/etc/modelauth/config.toml"),
        Some(Path::new("/etc/modelauth")),
    )
    .unwrap();
    let corp = config.provider("corp").unwrap();
    assert_eq!(corp.auth_kind(), AuthKind::OAuth2);
    let oauth2 = corp.auth.as_ref().unwrap().oauth2.as_ref().unwrap();
    assert_eq!(
        oauth2.client_secret_file.as_deref(),
        Some(Path::new("/etc/modelauth/secrets/client"))
    );
    assert_eq!(
        oauth2.subject_token_file.as_deref(),
        Some(Path::new("/var/run/secrets/tokens/gateway"))
    );
    assert_eq!(
        oauth2.describe(),
        "oauth2 `token_exchange` at idp.example.com"
    );
}
