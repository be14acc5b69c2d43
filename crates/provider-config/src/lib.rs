//! Configuration of OpenAI-compatible model providers.
//!
//! This crate owns the TOML format of `modelauth`: the types, their defaults,
//! loading with file/line/key-path errors, the cross-field rules, and the JSON schema
//! generated from the same types so that the schema and the parser cannot drift apart.
//!
//! Loading never reads the process environment and never consults the current directory:
//! a relative `auth.cwd` is resolved against the folder of the file it was read from.
//!
//! [`load_codex_config_file`] reads an unmodified Codex `config.toml` by Codex's own, looser
//! rules instead (see its module docs); both give the same [`Config`].
//!
//! # Errors
//!
//! One type, [`ConfigError`]: the file cannot be read, the TOML is malformed or a value
//! does not fit its key (file, line, column and key path), or a rule across keys is broken
//! (file and key path). A secret value (`experimental_bearer_token`) is never quoted.
//!
//! # Example
//!
//! ```
//! use std::path::Path;
//!
//! let text = r#"
//! model_provider = "corp"
//!
//! [model_providers.corp]
//! name = "Corp"
//! base_url = "https://gateway.example.com/v1"
//! auth = { command = "gcloud", args = ["auth", "print-access-token"] }
//! "#;
//! let config = provider_config::parse_config_str(text, Path::new("config.toml"), None)?;
//! let corp = config.provider(config.default_provider_id()).expect("defined above");
//! assert_eq!(corp.auth.as_ref().map(|a| a.command.as_str()), Some("gcloud"));
//!
//! let typo = "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw/v1\"\ntimout_ms = 5\n";
//! let err = provider_config::parse_config_str(typo, Path::new("config.toml"), None).unwrap_err();
//! assert!(err.to_string().starts_with("config.toml:4:1: model_providers.corp.timout_ms: unknown field `timout_ms`"));
//! # Ok::<(), provider_config::ConfigError>(())
//! ```

mod codex;
mod error;
mod load;
mod oauth2;
#[cfg(feature = "schema")]
mod schema;
mod types;
mod validate;

pub use codex::{
    CODEX_CLOUD_PROVIDER_IDS, CODEX_RESERVED_IDS, LMSTUDIO_PROVIDER_ID, default_codex_config_path,
    load_codex_config_file, parse_codex_config_str,
};
pub use error::ConfigError;
pub use load::{
    Config, MAX_CONFIG_BYTES, load_config_file, parse_config_str, without_dot_components,
};
pub use oauth2::{ClientAuthMethod, JWT_TOKEN_TYPE, OAuth2Grant, OAuth2Info, SubjectSource};
#[cfg(feature = "schema")]
pub use schema::{SCHEMA_ID, SCHEMA_PATH_IN_REPO, config_schema, config_schema_json};
pub use types::{
    AuthKind, ConfigToml, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_INTERACTIVE_TIMEOUT_MS,
    DEFAULT_REFRESH_INTERVAL_MS, DEFAULT_REQUEST_MAX_RETRIES, DEFAULT_REQUEST_TIMEOUT_MS,
    DEFAULT_STREAM_IDLE_TIMEOUT_MS, DEFAULT_STREAM_MAX_RETRIES, DEFAULT_TIMEOUT_MS,
    DEFAULT_WEBSOCKET_CONNECT_TIMEOUT_MS, EndpointUrlError, Interactive, MAX_RESPONSE_BYTES,
    MAX_RETRIES, MAX_TIMEOUT_MS, ModelProviderAuthInfo, ModelProviderInfo, OLLAMA_PROVIDER_ID,
    OPENAI_PROVIDER_ID, TokenFormat, WireApi, built_in_providers,
};
