//! Reading an unmodified Codex `config.toml` the way Codex reads its providers.
//!
//! The native format is strict; this reader follows Codex instead, so that `modelauth` can
//! debug the auth command a Codex user already has:
//! - only `model_provider`, `openai_base_url` and `[model_providers.*]` are read; every other
//!   key (profiles, MCP servers, projects, ...) is ignored, and so are unknown keys inside a
//!   provider or its `auth`;
//! - every provider is validated, selected or not, and one invalid provider refuses the file;
//! - the ids `openai`, `ollama` and `lmstudio` are reserved (exact, case-sensitive);
//! - `amazon-bedrock`, `amazon-bedrock-runtime` and `gcp` are Codex's cloud built-ins: a
//!   config may select them, and its table for one may change only the fields Codex lists
//!   (Codex's message says which); modelauth reads no credential for them;
//! - `aws` is refused outside the Bedrock built-ins, `wire_api = "chat"` on any provider,
//!   and the legacy top-level `profile = "..."`; integers beyond 64 bits are refused;
//! - `name` is required and not blank (a missing one too, as Codex says it); `base_url` is optional (the OpenAI API) and is not
//!   checked as a URL; retries default to 4 and 5 and are capped at 100; timeouts of 0 load;
//! - `auth.command` is required and not blank (checked before the conflicts), `timeout_ms`
//!   is non-zero with no upper bound, `refresh_interval_ms` may be 0 (only after a 401),
//!   `cwd` defaults to the file's folder (a relative one is joined to it, `~` is expanded);
//! - `auth` conflicts with `env_key` (even `""`), `experimental_bearer_token` and
//!   `requires_openai_auth = true`, reported in that order with the native message;
//! - `model_provider` must name a defined or built-in provider; without it, `openai`.
//!
//! Codex runs its command and reads stdout as the token: `format` is always `text`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::load::{
    Config, auth_clash_message, deserialize, read_config_text, reserved_id_message,
    unknown_default_message, without_dot_components,
};
use crate::{
    ConfigError, ConfigToml, MAX_RETRIES, ModelProviderAuthInfo, ModelProviderInfo, WireApi,
    built_in_providers,
};

/// Id of the LM Studio provider Codex builds in.
pub const LMSTUDIO_PROVIDER_ID: &str = "lmstudio";

/// The provider ids Codex reserves for its built-ins.
pub const CODEX_RESERVED_IDS: [&str; 3] = [
    crate::OPENAI_PROVIDER_ID,
    crate::OLLAMA_PROVIDER_ID,
    LMSTUDIO_PROVIDER_ID,
];

/// Codex's built-ins that Codex authenticates itself (AWS or Google credentials, not a
/// token command): a config may select them, and change only a few of their fields, but
/// modelauth has no credential for them.
pub const CODEX_CLOUD_PROVIDER_IDS: [&str; 3] = ["amazon-bedrock", "amazon-bedrock-runtime", "gcp"];

/// What a table for one of [`CODEX_CLOUD_PROVIDER_IDS`] may set, as Codex words it.
fn cloud_fields(id: &str) -> &'static str {
    if id == "gcp" {
        "`base_url`, `auth`, `http_headers`, `project_id`, `location`, and `credential_file`"
    } else {
        "`base_url`, `auth`, `http_headers`, `aws.profile`, `aws.region`, `aws.credential_export`, and `aws.auth_refresh`"
    }
}

/// The keys of a Codex config that matter here; everything else is ignored.
#[derive(Deserialize)]
struct CodexToml {
    #[serde(default)]
    model_provider: Option<String>,
    /// The legacy top-level profile, which Codex refuses.
    #[serde(default)]
    profile: Option<toml::Value>,
    #[serde(default)]
    openai_base_url: Option<String>,
    #[serde(default)]
    model_providers: BTreeMap<String, CodexProvider>,
}

/// A provider as Codex reads it: unknown keys are ignored.
#[derive(Deserialize)]
struct CodexProvider {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    env_key: Option<String>,
    #[serde(default)]
    env_key_instructions: Option<String>,
    #[serde(default)]
    experimental_bearer_token: Option<String>,
    #[serde(default)]
    wire_api: WireApi,
    #[serde(default)]
    query_params: BTreeMap<String, String>,
    #[serde(default)]
    http_headers: BTreeMap<String, String>,
    #[serde(default)]
    env_http_headers: BTreeMap<String, String>,
    #[serde(default)]
    request_max_retries: Option<u64>,
    #[serde(default)]
    stream_max_retries: Option<u64>,
    #[serde(default)]
    stream_idle_timeout_ms: Option<u64>,
    #[serde(default)]
    websocket_connect_timeout_ms: Option<u64>,
    #[serde(default)]
    requires_openai_auth: bool,
    #[serde(default)]
    auth: Option<CodexAuth>,
    /// AWS settings: only the Bedrock built-ins take them.
    #[serde(default)]
    aws: Option<toml::Value>,
    /// Google settings of the `gcp` built-in.
    #[serde(default)]
    project_id: Option<toml::Value>,
    #[serde(default)]
    location: Option<toml::Value>,
    #[serde(default)]
    credential_file: Option<toml::Value>,
}

impl CodexProvider {
    /// Whether a field other than those a cloud built-in's table may change is set to
    /// something other than its default (Codex's rule: `wire_api = "responses"` is fine).
    fn changes_more_than(&self, id: &str) -> bool {
        let gcp = id == "gcp";
        self.name.as_deref().is_some_and(|n| !n.is_empty())
            || self.env_key.is_some()
            || self.env_key_instructions.is_some()
            || self.experimental_bearer_token.is_some()
            || self.wire_api != WireApi::default()
            || !self.query_params.is_empty()
            || !self.env_http_headers.is_empty()
            || self.request_max_retries.is_some()
            || self.stream_max_retries.is_some()
            || self.stream_idle_timeout_ms.is_some()
            || self.websocket_connect_timeout_ms.is_some()
            || self.requires_openai_auth
            || (!gcp
                && (self.project_id.is_some()
                    || self.location.is_some()
                    || self.credential_file.is_some()))
    }
}

/// A provider's `auth` table as Codex reads it.
#[derive(Deserialize)]
struct CodexAuth {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    refresh_interval_ms: Option<u64>,
    #[serde(default)]
    cwd: Option<PathBuf>,
}

/// The default Codex config file: `$CODEX_HOME/config.toml`, else `~/.codex/config.toml`.
/// `codex_home` and `home` are the caller's reading of `CODEX_HOME` and `HOME`.
pub fn default_codex_config_path(
    codex_home: Option<&Path>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    match codex_home.filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => Some(dir.join("config.toml")),
        None => home
            .filter(|p| !p.as_os_str().is_empty())
            .map(|h| h.join(".codex").join("config.toml")),
    }
}

/// Reads a Codex config file by Codex's rules (see the module docs). `home` expands a
/// leading `~` in `auth.cwd`; loading reads no other environment.
pub fn load_codex_config_file(path: &Path, home: Option<&Path>) -> Result<Config, ConfigError> {
    let (text, base_dir) = read_config_text(path)?;
    let mut config = parse_codex_config_str(&text, path, &base_dir, home)?;
    config.set_path(path);
    Ok(config)
}

/// Parses Codex config text. `origin` names it in errors, `base_dir` is the folder a
/// relative `auth.cwd` is joined to, `home` expands `~`.
pub fn parse_codex_config_str(
    text: &str,
    origin: &Path,
    base_dir: &Path,
    home: Option<&Path>,
) -> Result<Config, ConfigError> {
    let codex: CodexToml = deserialize(text, origin)?;
    let invalid = |key_path: String, message: String| ConfigError::Invalid {
        file: origin.to_path_buf(),
        key_path,
        message,
    };
    if let Some(profile) = &codex.profile {
        let name = profile
            .as_str()
            .map_or_else(|| profile.to_string(), str::to_owned);
        return Err(invalid(
            "profile".to_owned(),
            format!(
                "legacy `profile = \"{name}\"` config is no longer supported; use `--profile {name}` with `{name}.config.toml` instead"
            ),
        ));
    }
    // Codex refuses the chat wire API on any provider, before anything else.
    if let Some((id, _)) = codex
        .model_providers
        .iter()
        .find(|(_, p)| p.wire_api == WireApi::Chat)
    {
        return Err(invalid(
            format!("model_providers.{id}.wire_api"),
            "`wire_api = \"chat\"` is no longer supported; set `wire_api = \"responses\"` in the provider's table (https://github.com/openai/codex/discussions/7782)".to_owned(),
        ));
    }
    let mut defined = BTreeMap::new();
    for (id, provider) in codex.model_providers {
        let key_path = format!("model_providers.{id}");
        if CODEX_RESERVED_IDS.contains(&id.as_str()) {
            return Err(invalid(key_path, reserved_id_message(&id)));
        }
        let bedrock =
            id.starts_with("amazon-bedrock") && CODEX_CLOUD_PROVIDER_IDS.contains(&id.as_str());
        if provider.aws.is_some() && !bedrock {
            return Err(invalid(
                key_path,
                "provider aws is only supported for `amazon-bedrock` or `amazon-bedrock-runtime`"
                    .to_owned(),
            ));
        }
        if CODEX_CLOUD_PROVIDER_IDS.contains(&id.as_str()) {
            // Codex's own built-in: a table may change a few fields, and modelauth cannot
            // authenticate it (Codex does, with AWS or Google credentials).
            if provider.changes_more_than(&id) {
                return Err(invalid(
                    key_path,
                    format!(
                        "only supports changing {}; other non-default provider fields are not supported",
                        cloud_fields(&id)
                    ),
                ));
            }
            continue;
        }
        let name = provider.name.clone().unwrap_or_default();
        if name.trim().is_empty() {
            return Err(invalid(
                format!("{key_path}.name"),
                "must not be empty or blank".to_owned(),
            ));
        }
        if let Some(auth) = &provider.auth {
            if auth.command.trim().is_empty() {
                return Err(invalid(
                    format!("{key_path}.auth.command"),
                    "must not be empty or blank".to_owned(),
                ));
            }
            if auth.timeout_ms == Some(0) {
                return Err(invalid(
                    format!("{key_path}.auth.timeout_ms"),
                    "must be at least 1, got 0".to_owned(),
                ));
            }
            if let Some(message) = auth_clash_message(
                provider.env_key.is_some(),
                provider.experimental_bearer_token.is_some(),
                provider.requires_openai_auth,
            ) {
                return Err(invalid(key_path, message));
            }
        }
        defined.insert(id, provider.into_info(base_dir, home));
    }
    let mut providers = codex_built_in_providers(codex.openai_base_url);
    if let Some(id) = &codex.model_provider
        && !defined.contains_key(id)
        && !providers.contains_key(id)
        && !CODEX_CLOUD_PROVIDER_IDS.contains(&id.as_str())
    {
        let known = defined.keys().chain(providers.keys());
        return Err(invalid(
            "model_provider".to_owned(),
            unknown_default_message(id, known),
        ));
    }
    providers.extend(defined.clone());
    let toml = ConfigToml {
        model_provider: codex.model_provider,
        model_providers: defined,
    };
    Ok(Config::from_parts(toml, providers))
}

/// Codex's built-ins: `openai` (at `openai_base_url` when set), `ollama`, `lmstudio`.
fn codex_built_in_providers(
    openai_base_url: Option<String>,
) -> BTreeMap<String, ModelProviderInfo> {
    let mut providers = built_in_providers();
    if let (Some(url), Some(openai)) = (
        openai_base_url,
        providers.get_mut(crate::OPENAI_PROVIDER_ID),
    ) {
        openai.base_url = url;
    }
    providers.insert(
        LMSTUDIO_PROVIDER_ID.to_owned(),
        ModelProviderInfo::new("LM Studio", "http://localhost:1234/v1"),
    );
    providers
}

impl CodexProvider {
    fn into_info(self, base_dir: &Path, home: Option<&Path>) -> ModelProviderInfo {
        let mut info = ModelProviderInfo::new(
            self.name.unwrap_or_default(),
            self.base_url
                .unwrap_or_else(|| "https://api.openai.com/v1".to_owned()),
        );
        info.env_key = self.env_key;
        info.env_key_instructions = self.env_key_instructions;
        info.experimental_bearer_token = self.experimental_bearer_token;
        info.wire_api = self.wire_api;
        info.query_params = self.query_params;
        info.http_headers = self.http_headers;
        info.env_http_headers = self.env_http_headers;
        if let Some(n) = self.request_max_retries {
            info.request_max_retries = n.min(MAX_RETRIES);
        }
        if let Some(n) = self.stream_max_retries {
            info.stream_max_retries = n.min(MAX_RETRIES);
        }
        if let Some(ms) = self.stream_idle_timeout_ms {
            info.stream_idle_timeout_ms = ms;
        }
        if let Some(ms) = self.websocket_connect_timeout_ms {
            info.websocket_connect_timeout_ms = ms;
        }
        info.requires_openai_auth = self.requires_openai_auth;
        info.auth = self.auth.map(|auth| {
            let mut out = ModelProviderAuthInfo::new(auth.command);
            out.args = auth.args;
            if let Some(ms) = auth.timeout_ms {
                out.timeout_ms = ms;
            }
            if let Some(ms) = auth.refresh_interval_ms {
                out.refresh_interval_ms = Some(ms);
            }
            out.cwd = codex_cwd(auth.cwd.as_deref(), base_dir, home);
            out
        });
        info
    }
}

/// `auth.cwd` as Codex resolves it: the file's folder by default, `~` expanded, a relative
/// path joined to the file's folder.
fn codex_cwd(cwd: Option<&Path>, base_dir: &Path, home: Option<&Path>) -> PathBuf {
    let Some(cwd) = cwd else {
        return without_dot_components(base_dir);
    };
    let expanded = match (cwd.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => cwd.to_path_buf(),
    };
    if expanded.is_relative() {
        without_dot_components(&base_dir.join(expanded))
    } else {
        expanded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cwd_defaults_to_the_folder_and_expands_home() {
        let base = Path::new("/etc/codex");
        let home = Some(Path::new("/home/ada"));
        assert_eq!(codex_cwd(None, base, home), Path::new("/etc/codex"));
        assert_eq!(
            codex_cwd(Some(Path::new("~/bin")), base, home),
            Path::new("/home/ada/bin")
        );
        assert_eq!(
            codex_cwd(Some(Path::new("~")), base, home),
            Path::new("/home/ada")
        );
        assert_eq!(
            codex_cwd(Some(Path::new("./tools")), base, home),
            Path::new("/etc/codex/tools")
        );
        assert_eq!(
            codex_cwd(Some(Path::new("/opt")), base, home),
            Path::new("/opt")
        );
        // `~user` is not expanded, and without a home `~` stays a folder name.
        assert_eq!(
            codex_cwd(Some(Path::new("~bob/x")), base, home),
            Path::new("/etc/codex/~bob/x")
        );
        assert_eq!(
            codex_cwd(Some(Path::new("~/x")), base, None),
            Path::new("/etc/codex/~/x")
        );
    }

    #[test]
    fn default_path_prefers_codex_home() {
        assert_eq!(
            default_codex_config_path(Some(Path::new("/c")), Some(Path::new("/h"))),
            Some(PathBuf::from("/c/config.toml"))
        );
        assert_eq!(
            default_codex_config_path(Some(Path::new("")), Some(Path::new("/h"))),
            Some(PathBuf::from("/h/.codex/config.toml"))
        );
        assert_eq!(default_codex_config_path(None, None), None);
    }
}
