//! The configuration types, their defaults and accessors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::oauth2::OAuth2Info;
use crate::validate;

/// Default `auth.timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Largest accepted `auth.timeout_ms` (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// Default `auth.refresh_interval_ms` (5 minutes).
pub const DEFAULT_REFRESH_INTERVAL_MS: u64 = 300_000;
/// Default `request_max_retries`.
pub const DEFAULT_REQUEST_MAX_RETRIES: u64 = 4;
/// Default `stream_max_retries`.
pub const DEFAULT_STREAM_MAX_RETRIES: u64 = 5;
/// Largest accepted `request_max_retries` and `stream_max_retries`.
pub const MAX_RETRIES: u64 = 100;
/// Default `stream_idle_timeout_ms` (5 minutes).
pub const DEFAULT_STREAM_IDLE_TIMEOUT_MS: u64 = 300_000;
/// Default `connect_timeout_ms`: TCP and TLS connect of every request.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Default `request_timeout_ms`: the whole of `GET /models` and of reading an error body.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 60_000;
/// Largest non-streaming response body read (model lists, JSON answers, error bodies).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Default `websocket_connect_timeout_ms`.
pub const DEFAULT_WEBSOCKET_CONNECT_TIMEOUT_MS: u64 = 15_000;
/// Id of the built-in OpenAI provider.
pub const OPENAI_PROVIDER_ID: &str = "openai";
/// Id of the built-in Ollama provider.
pub const OLLAMA_PROVIDER_ID: &str = "ollama";

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", schemars(title = "modelauth configuration"))]
pub struct ConfigToml {
    /// Id of the provider used when none is named (`-p`). Must name a provider defined
    /// under `model_providers` or a built-in one (`openai`, `ollama`). Defaults to `openai`.
    #[serde(default)]
    pub model_provider: Option<String>,
    /// Providers by id. The ids `openai` and `ollama` are reserved for the built-ins.
    #[serde(default)]
    pub model_providers: BTreeMap<String, ModelProviderInfo>,
}

/// Which OpenAI-compatible API a provider speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum WireApi {
    /// `POST /responses` (the default).
    #[default]
    Responses,
    /// `POST /chat/completions`.
    Chat,
}

/// How the token command prints its token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TokenFormat {
    /// The trimmed standard output is the token.
    #[default]
    Text,
    /// One JSON object: an OAuth2 token response, `{token, expires_at}` or a Kubernetes
    /// `ExecCredential`.
    Json,
}

/// Whether the token command may ask a person (`auth.interactive`), after kubectl's
/// `interactiveMode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Interactive {
    /// Never: stdin is null (the default).
    #[default]
    Never,
    /// When the process has a terminal, the command gets it (stdin and stderr).
    IfAvailable,
    /// The command needs the terminal; without one it is an error.
    Always,
}

/// Default `auth.interactive_timeout_ms`.
pub const DEFAULT_INTERACTIVE_TIMEOUT_MS: u64 = 120_000;

/// One model provider.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModelProviderInfo {
    /// Display name. Required, not blank.
    #[serde(deserialize_with = "validate::non_blank")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::NON_BLANK_PATTERN)))]
    pub name: String,
    /// Base URL of the OpenAI-compatible API, e.g. `https://gateway.example.com/openai/v1`.
    /// Required: credentials are never sent to a host the config did not name.
    #[serde(deserialize_with = "validate::base_url")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::BASE_URL_PATTERN)))]
    pub base_url: String,
    /// Environment variable holding a static API key.
    #[serde(default, deserialize_with = "validate::env_name")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::ENV_NAME_PATTERN)))]
    pub env_key: Option<String>,
    /// Text shown when `env_key` is not set, telling the user how to get a key.
    #[serde(default)]
    pub env_key_instructions: Option<String>,
    /// A static bearer token written in the config. Prefer `env_key` or `auth`.
    #[serde(default, deserialize_with = "validate::bearer_token")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::BEARER_TOKEN_PATTERN)))]
    pub experimental_bearer_token: Option<String>,
    /// The API this provider speaks.
    #[serde(default)]
    pub wire_api: WireApi,
    /// Query parameters added to every request (e.g. `api-version`).
    #[serde(default)]
    pub query_params: BTreeMap<String, String>,
    /// Extra HTTP headers sent with every request.
    #[serde(default, deserialize_with = "validate::header_map")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "validate::header_map_schema")
    )]
    pub http_headers: BTreeMap<String, String>,
    /// Extra HTTP headers whose values come from environment variables (header name ->
    /// variable name). A variable that is not set skips its header.
    #[serde(default, deserialize_with = "validate::env_header_map")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "validate::env_header_map_schema")
    )]
    pub env_http_headers: BTreeMap<String, String>,
    /// How often a failed request (429, 5xx, connection error) is retried.
    #[serde(
        default = "default_request_max_retries",
        deserialize_with = "validate::retries"
    )]
    #[cfg_attr(feature = "schema", schemars(range(max = MAX_RETRIES)))]
    pub request_max_retries: u64,
    /// How often a stream that failed before its first event is retried.
    #[serde(
        default = "default_stream_max_retries",
        deserialize_with = "validate::retries"
    )]
    #[cfg_attr(feature = "schema", schemars(range(max = MAX_RETRIES)))]
    pub stream_max_retries: u64,
    /// Longest silence inside a stream before it is abandoned, in milliseconds.
    #[serde(
        default = "default_stream_idle_timeout_ms",
        deserialize_with = "validate::positive_ms"
    )]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub stream_idle_timeout_ms: u64,
    /// Longest websocket connect and handshake, in milliseconds.
    #[serde(
        default = "default_websocket_connect_timeout_ms",
        deserialize_with = "validate::positive_ms"
    )]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub websocket_connect_timeout_ms: u64,
    /// Longest TCP and TLS connect of a request, in milliseconds.
    #[serde(
        default = "default_connect_timeout_ms",
        deserialize_with = "validate::positive_ms"
    )]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub connect_timeout_ms: u64,
    /// Longest whole exchange for `GET /models` and for reading an error body, in
    /// milliseconds (streams and long generations are bounded by `stream_idle_timeout_ms`).
    #[serde(
        default = "default_request_timeout_ms",
        deserialize_with = "validate::positive_ms"
    )]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub request_timeout_ms: u64,
    /// Use the application's base session credentials (for the CLI: `OPENAI_API_KEY`).
    /// Cannot be `true` together with `auth`.
    #[serde(default)]
    pub requires_openai_auth: bool,
    /// Obtain bearer tokens by running a command.
    #[serde(default)]
    pub auth: Option<ModelProviderAuthInfo>,
}

/// How a provider obtains its bearer token: from a command (`command`), or from an OAuth2
/// token endpoint (`oauth2`); exactly one of the two. Every other key applies to both.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", schemars(extend("oneOf" = [{"required": ["command"]}, {"required": ["oauth2"]}])))]
#[non_exhaustive]
pub struct ModelProviderAuthInfo {
    /// The program: a bare name is looked up on `PATH`, a name with a `/` is resolved
    /// against `cwd`. It is run directly, never through a shell. Empty when `oauth2` is set.
    #[serde(default, deserialize_with = "validate::non_blank")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::NON_BLANK_PATTERN)))]
    pub command: String,
    /// Obtain the token from an OAuth2 token endpoint instead of a command (SPEC §14).
    #[serde(default)]
    pub oauth2: Option<OAuth2Info>,
    /// Arguments passed to the program.
    #[serde(default)]
    pub args: Vec<String>,
    /// How long the command may run, in milliseconds (1..=600000).
    #[serde(
        default = "default_timeout_ms",
        deserialize_with = "validate::timeout_ms"
    )]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_TIMEOUT_MS)))]
    pub timeout_ms: u64,
    /// How long a token is used before the command is run again, in milliseconds (default
    /// 300000). A token that states its own expiry is used until then (less a skew), and
    /// this caps it only when the key is set. `0` reruns only after a 401 (or the stated
    /// expiry).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "u64", extend("default" = DEFAULT_REFRESH_INTERVAL_MS)))]
    pub refresh_interval_ms: Option<u64>,
    /// Working directory of the command; relative to the config file's folder.
    #[serde(default = "default_cwd")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub cwd: PathBuf,
    /// Extra environment for the command, on top of the inherited one.
    #[serde(default, deserialize_with = "validate::env_map")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "validate::env_map_schema"))]
    pub env: BTreeMap<String, String>,
    /// How the command prints its token.
    #[serde(default)]
    pub format: TokenFormat,
    /// The statuses that mean "this token is no longer good": `[401]` (default) or
    /// `[401, 403]` for gateways that answer 403 to an expired token.
    #[serde(
        default = "default_reauth_on",
        deserialize_with = "validate::reauth_on"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "validate::reauth_on_schema")
    )]
    pub reauth_on: Vec<u16>,
    /// The header the token goes in (default `Authorization`; e.g. `api-key`, `x-api-key`).
    /// `Host`, `Content-Length`, `Connection` and `Transfer-Encoding` are refused.
    #[serde(
        default = "default_auth_header",
        deserialize_with = "validate::credential_header"
    )]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::CREDENTIAL_HEADER_PATTERN)))]
    pub header: String,
    /// The scheme before the token (default `Bearer`); `""` sends the token bare.
    #[serde(
        default = "default_auth_scheme",
        deserialize_with = "validate::auth_scheme"
    )]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = validate::AUTH_SCHEME_PATTERN)))]
    pub scheme: String,
    /// Whether the command may ask a person on the terminal.
    #[serde(default)]
    pub interactive: Interactive,
    /// How long an interactive run may take, in milliseconds (1..=600000).
    #[serde(
        default = "default_interactive_timeout_ms",
        deserialize_with = "validate::timeout_ms"
    )]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_TIMEOUT_MS)))]
    pub interactive_timeout_ms: u64,
    /// More environment variables that select the identity the command mints for (besides
    /// the built-in set: `AWS_PROFILE`, `CLOUDSDK_CONFIG`, `AZURE_CONFIG_DIR`,
    /// `KUBECONFIG`, ...): their values are part of the shared store's key, so a call with
    /// another value never gets the token minted for the first.
    #[serde(default, deserialize_with = "validate::env_names")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "validate::env_names_schema")
    )]
    pub key_env: Vec<String>,
}

fn default_request_max_retries() -> u64 {
    DEFAULT_REQUEST_MAX_RETRIES
}
fn default_stream_max_retries() -> u64 {
    DEFAULT_STREAM_MAX_RETRIES
}
fn default_stream_idle_timeout_ms() -> u64 {
    DEFAULT_STREAM_IDLE_TIMEOUT_MS
}
fn default_websocket_connect_timeout_ms() -> u64 {
    DEFAULT_WEBSOCKET_CONNECT_TIMEOUT_MS
}
fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_request_timeout_ms() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_MS
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_interactive_timeout_ms() -> u64 {
    DEFAULT_INTERACTIVE_TIMEOUT_MS
}
fn default_auth_header() -> String {
    "Authorization".to_owned()
}
fn default_auth_scheme() -> String {
    "Bearer".to_owned()
}
fn default_reauth_on() -> Vec<u16> {
    vec![401]
}
fn default_cwd() -> PathBuf {
    PathBuf::from(".")
}

/// The kind of credential a provider uses, in the order the auth manager picks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthKind {
    /// A token command (`auth.command`).
    Command,
    /// An OAuth2 token endpoint (`auth.oauth2`).
    OAuth2,
    /// `experimental_bearer_token`.
    BearerToken,
    /// `env_key`.
    EnvKey,
    /// The application's base session (`requires_openai_auth = true`).
    BaseSession,
    /// No credentials.
    None,
}

impl fmt::Display for AuthKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthKind::Command => "command",
            AuthKind::OAuth2 => "oauth2",
            AuthKind::BearerToken => "bearer_token",
            AuthKind::EnvKey => "env_key",
            AuthKind::BaseSession => "openai_auth",
            AuthKind::None => "none",
        })
    }
}

impl ModelProviderInfo {
    /// A provider with the given name and base URL and every other field at its default.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into(),
            env_key: None,
            env_key_instructions: None,
            experimental_bearer_token: None,
            wire_api: WireApi::default(),
            query_params: BTreeMap::new(),
            http_headers: BTreeMap::new(),
            env_http_headers: BTreeMap::new(),
            request_max_retries: DEFAULT_REQUEST_MAX_RETRIES,
            stream_max_retries: DEFAULT_STREAM_MAX_RETRIES,
            stream_idle_timeout_ms: DEFAULT_STREAM_IDLE_TIMEOUT_MS,
            websocket_connect_timeout_ms: DEFAULT_WEBSOCKET_CONNECT_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            requires_openai_auth: false,
            auth: None,
        }
    }

    /// The credential kind, in the order auth managers use: `auth`, then
    /// `experimental_bearer_token`, then `env_key`, then the base session.
    pub fn auth_kind(&self) -> AuthKind {
        if let Some(auth) = &self.auth {
            if auth.oauth2.is_some() {
                AuthKind::OAuth2
            } else {
                AuthKind::Command
            }
        } else if self.experimental_bearer_token.is_some() {
            AuthKind::BearerToken
        } else if self.env_key.is_some() {
            AuthKind::EnvKey
        } else if self.requires_openai_auth {
            AuthKind::BaseSession
        } else {
            AuthKind::None
        }
    }

    /// `base_url` for messages and listings: a user name or password in it (possible only
    /// in a config read by Codex's rules, or built in code) is shown as `***`.
    pub fn display_base_url(&self) -> String {
        crate::validate::redact_userinfo(&self.base_url)
    }

    /// The URL of an endpoint below `base_url` (e.g. `models`), with `query_params` added.
    pub fn endpoint_url(&self, path: &str) -> Result<url::Url, EndpointUrlError> {
        let shown = || crate::validate::redact_userinfo(&self.base_url);
        let mut url =
            url::Url::parse(&self.base_url).map_err(|reason| EndpointUrlError::NotAUrl {
                base_url: shown(),
                reason,
            })?;
        if url.cannot_be_a_base() {
            return Err(EndpointUrlError::NotABase { base_url: shown() });
        }
        // The endpoint goes on the path; a query written in base_url (only possible when
        // the struct is built in code) stays a query.
        let joined = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        url.set_fragment(None);
        if !self.query_params.is_empty() {
            url.query_pairs_mut().extend_pairs(&self.query_params);
        }
        Ok(url)
    }

    /// The extra headers of every request: `http_headers`, then `env_http_headers` whose
    /// variable `env` knows (a missing or empty variable skips its header). `env` is the
    /// caller's choice, usually `|name| std::env::var(name).ok()`.
    pub fn extra_headers(&self, env: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = self
            .http_headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, var) in &self.env_http_headers {
            if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                headers.push((name.clone(), value));
            }
        }
        headers
    }

    /// `stream_idle_timeout_ms` as a duration.
    pub fn stream_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.stream_idle_timeout_ms)
    }

    /// `websocket_connect_timeout_ms` as a duration.
    pub fn websocket_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.websocket_connect_timeout_ms)
    }

    /// Whether `status` means the credential is no longer good: 401, or a status of
    /// `auth.reauth_on`. Every client and the proxy ask here.
    pub fn is_reauth_status(&self, status: u16) -> bool {
        match &self.auth {
            Some(auth) => auth.reauth_on.contains(&status),
            None => status == 401,
        }
    }

    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// `request_timeout_ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// A warning when credentials would travel unencrypted: plain `http://` to a host that
    /// is not loopback, for a provider that sends a credential or configured headers.
    pub fn cleartext_warning(&self) -> Option<String> {
        let url = url::Url::parse(&self.base_url).ok()?;
        if url.scheme() != "http" {
            return None;
        }
        let loopback = match url.host()? {
            url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
        };
        let sends_secrets = !matches!(self.auth_kind(), AuthKind::None)
            || !self.http_headers.is_empty()
            || !self.env_http_headers.is_empty();
        (!loopback && sends_secrets).then(|| {
            format!(
                "base_url uses plain http:// to {}: the token travels unencrypted",
                url.host_str().unwrap_or_default()
            )
        })
    }
}

impl ModelProviderAuthInfo {
    /// Command auth running `command` with every other field at its default.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            oauth2: None,
            args: Vec::new(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            refresh_interval_ms: None,
            cwd: default_cwd(),
            env: BTreeMap::new(),
            format: TokenFormat::default(),
            reauth_on: default_reauth_on(),
            header: default_auth_header(),
            scheme: default_auth_scheme(),
            interactive: Interactive::default(),
            interactive_timeout_ms: DEFAULT_INTERACTIVE_TIMEOUT_MS,
            key_env: Vec::new(),
        }
    }

    /// OAuth2 auth by `oauth2` with every other field at its default.
    pub fn with_oauth2(oauth2: OAuth2Info) -> Self {
        let mut auth = Self::new("");
        auth.oauth2 = Some(oauth2);
        auth
    }

    /// How long an interactive run may take.
    pub fn interactive_timeout(&self) -> Duration {
        Duration::from_millis(self.interactive_timeout_ms)
    }

    /// How long the command may run.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// How long a token that states no expiry is used before the command is run again
    /// (`refresh_interval_ms`, default 5 minutes); `None` when it is 0 (rerun only after a
    /// 401).
    pub fn refresh_interval(&self) -> Option<Duration> {
        let ms = self
            .refresh_interval_ms
            .unwrap_or(DEFAULT_REFRESH_INTERVAL_MS);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// The cap on a token that states its own expiry: `refresh_interval_ms` when the config
    /// sets it (and it is not 0), else none: the stated expiry governs (SPEC §5).
    pub fn stated_expiry_cap(&self) -> Option<Duration> {
        self.refresh_interval_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }
}

/// Secrets (the static bearer token, header values) are never printed.
impl fmt::Debug for ModelProviderInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelProviderInfo")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("env_key", &self.env_key)
            .field(
                "experimental_bearer_token",
                &self
                    .experimental_bearer_token
                    .as_ref()
                    .map(|_| "<redacted>"),
            )
            .field("wire_api", &self.wire_api)
            .field("query_params", &self.query_params.keys())
            .field("http_headers", &self.http_headers.keys())
            .field("env_http_headers", &self.env_http_headers)
            .field("request_max_retries", &self.request_max_retries)
            .field("stream_max_retries", &self.stream_max_retries)
            .field("stream_idle_timeout_ms", &self.stream_idle_timeout_ms)
            .field(
                "websocket_connect_timeout_ms",
                &self.websocket_connect_timeout_ms,
            )
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("requires_openai_auth", &self.requires_openai_auth)
            .field("auth", &self.auth)
            .finish()
    }
}

/// Values of `env` may be secrets (client secrets for an OAuth2 call): only names are printed.
impl fmt::Debug for ModelProviderAuthInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelProviderAuthInfo")
            .field("command", &self.command)
            .field("oauth2", &self.oauth2)
            .field("args", &self.args)
            .field("timeout_ms", &self.timeout_ms)
            .field("refresh_interval_ms", &self.refresh_interval_ms)
            .field("cwd", &self.cwd)
            .field("env", &self.env.keys())
            .field("format", &self.format)
            .field("reauth_on", &self.reauth_on)
            .field("header", &self.header)
            .field("scheme", &self.scheme)
            .field("interactive", &self.interactive)
            .field("interactive_timeout_ms", &self.interactive_timeout_ms)
            .field("key_env", &self.key_env)
            .finish()
    }
}

/// The built-in providers, by id: `openai` (`OPENAI_API_KEY`) and `ollama` (no auth).
pub fn built_in_providers() -> BTreeMap<String, ModelProviderInfo> {
    let mut openai = ModelProviderInfo::new("OpenAI", "https://api.openai.com/v1");
    openai.env_key = Some("OPENAI_API_KEY".to_owned());
    openai.env_key_instructions =
        Some("Create an API key at https://platform.openai.com/api-keys".to_owned());
    let ollama = ModelProviderInfo::new("Ollama", "http://localhost:11434/v1");
    BTreeMap::from([
        (OPENAI_PROVIDER_ID.to_owned(), openai),
        (OLLAMA_PROVIDER_ID.to_owned(), ollama),
    ])
}

/// Why `base_url` cannot make an endpoint's URL (a struct built in code; a loaded config's
/// `base_url` is checked at load). The URL is shown with any user info as `***`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointUrlError {
    /// It does not parse as a URL.
    #[error("base_url `{base_url}` does not make a valid URL: {reason}")]
    NotAUrl {
        /// `base_url`, user info redacted.
        base_url: String,
        /// Why not (shown in the message, not a separate cause).
        reason: url::ParseError,
    },
    /// It cannot have paths below it (`mailto:`, `data:`).
    #[error("base_url `{base_url}` cannot have endpoint paths below it")]
    NotABase {
        /// `base_url`, user info redacted.
        base_url: String,
    },
}
