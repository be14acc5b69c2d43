//! Loading: TOML text -> validated [`Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{ConfigError, ConfigToml, ModelProviderInfo, OPENAI_PROVIDER_ID, built_in_providers};

/// A loaded, validated configuration: the file's providers plus the built-in ones.
#[derive(Debug, Clone)]
pub struct Config {
    path: Option<PathBuf>,
    toml: ConfigToml,
    providers: BTreeMap<String, ModelProviderInfo>,
}

impl Config {
    /// A configuration with only the built-in providers (no file).
    pub fn built_ins_only() -> Self {
        Self {
            path: None,
            toml: ConfigToml::default(),
            providers: built_in_providers(),
        }
    }

    /// A configuration from already-validated parts, read from no file yet.
    pub(crate) fn from_parts(
        toml: ConfigToml,
        providers: BTreeMap<String, ModelProviderInfo>,
    ) -> Self {
        Self {
            path: None,
            toml,
            providers,
        }
    }

    /// Records the file this configuration was read from.
    pub(crate) fn set_path(&mut self, path: &Path) {
        self.path = Some(path.to_path_buf());
    }

    /// The file this configuration was read from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The configuration as written (without built-ins).
    pub fn toml(&self) -> &ConfigToml {
        &self.toml
    }

    /// The provider used when none is named: `model_provider`, else `openai`.
    pub fn default_provider_id(&self) -> &str {
        self.toml
            .model_provider
            .as_deref()
            .unwrap_or(OPENAI_PROVIDER_ID)
    }

    /// A provider by id, defined or built-in.
    pub fn provider(&self, id: &str) -> Option<&ModelProviderInfo> {
        self.providers.get(id)
    }

    /// Every provider, defined and built-in, by id.
    pub fn providers(&self) -> &BTreeMap<String, ModelProviderInfo> {
        &self.providers
    }

    /// Whether `id` is one of the file's own providers (not a built-in).
    pub fn is_defined_in_file(&self, id: &str) -> bool {
        self.toml.model_providers.contains_key(id)
    }
}

/// Reads and validates a config file. A relative `auth.cwd` is resolved against the
/// file's folder.
pub fn load_config_file(path: &Path) -> Result<Config, ConfigError> {
    let (text, base_dir) = read_config_text(path)?;
    let mut config = parse_config_str(&text, path, Some(&base_dir))?;
    config.set_path(path);
    Ok(config)
}

/// Largest config file read (1 MiB): a config is a few kilobytes.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A config file's text and its folder (where a relative `auth.cwd` points). Only a regular
/// file is read (a FIFO would block, a device never end), and at most
/// [`MAX_CONFIG_BYTES`] of it.
pub(crate) fn read_config_text(path: &Path) -> Result<(String, PathBuf), ConfigError> {
    use std::io::Read as _;
    let failed = |source: std::io::Error| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(failed)?;
    if !meta.is_file() {
        return Err(failed(std::io::Error::other(
            "it is not a regular file (a folder, a FIFO or a device)",
        )));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
        .map_err(failed)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(failed(std::io::Error::other(format!(
            "it is larger than {} KiB",
            MAX_CONFIG_BYTES / 1024
        ))));
    }
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((text, base_dir))
}

/// Parses and validates config text. `origin` names the text in errors (a path or a label
/// such as `<string>`); `base_dir`, when given, is where a relative `auth.cwd` points.
pub fn parse_config_str(
    text: &str,
    origin: &Path,
    base_dir: Option<&Path>,
) -> Result<Config, ConfigError> {
    let mut toml: ConfigToml = deserialize(text, origin)?;
    check_cross_field_rules(&toml, origin)?;
    if let Some(base) = base_dir {
        for provider in toml.model_providers.values_mut() {
            if let Some(auth) = provider.auth.as_mut() {
                if auth.cwd.is_relative() {
                    auth.cwd = without_dot_components(&base.join(&auth.cwd));
                }
                if let Some(oauth2) = auth.oauth2.as_mut() {
                    oauth2.resolve_paths(base);
                }
            }
        }
    }
    let mut providers = built_in_providers();
    providers.extend(toml.model_providers.clone());
    Ok(Config::from_parts(toml, providers))
}

/// Deserializes TOML text into `T`, with file, line, column and key path in errors.
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &Path,
) -> Result<T, ConfigError> {
    let toml_error = |err: &toml::de::Error, key_path: String, message: String| {
        let (line, column) = err
            .span()
            .map(|span| line_column(text, span.start))
            .unwrap_or((1, 1));
        ConfigError::Toml {
            file: origin.to_path_buf(),
            line,
            column,
            key_path,
            message,
        }
    };
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|e| toml_error(&e, String::new(), e.message().to_owned()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let key_path = if path == "." { String::new() } else { path };
        let inner = e.inner();
        toml_error(inner, key_path, inner.message().to_owned())
    })
}

/// `path` without its `.` components (`./a/./b` -> `a/b`, `./.` -> `.`), for readable
/// paths in messages. Nothing else changes: `..` stays, links are not resolved.
pub fn without_dot_components(path: &Path) -> PathBuf {
    let tidy: PathBuf = path
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    if tidy.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        tidy
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

fn check_cross_field_rules(toml: &ConfigToml, origin: &Path) -> Result<(), ConfigError> {
    let invalid = |key_path: String, message: String| ConfigError::Invalid {
        file: origin.to_path_buf(),
        key_path,
        message,
    };
    let built_ins = built_in_providers();
    for (id, provider) in &toml.model_providers {
        let key_path = format!("model_providers.{id}");
        if built_ins.contains_key(id) {
            return Err(invalid(key_path, reserved_id_message(id)));
        }
        if let Some(auth) = &provider.auth {
            let auth_path = format!("{key_path}.auth");
            match &auth.oauth2 {
                Some(_) if !auth.command.is_empty() => {
                    return Err(invalid(
                        format!("{auth_path}.oauth2"),
                        "cannot be combined with auth.command; give one of them".to_owned(),
                    ));
                }
                Some(oauth2) => {
                    if let Some((key, message)) = oauth2.missing_for_grant() {
                        return Err(invalid(format!("{auth_path}.oauth2.{key}"), message));
                    }
                }
                None if auth.command.is_empty() => {
                    return Err(invalid(
                        format!("{auth_path}.command"),
                        "is required (or an `oauth2` table)".to_owned(),
                    ));
                }
                None => {}
            }
        }
        if provider.auth.is_some()
            && let Some(message) = auth_clash_message(
                provider.env_key.is_some(),
                provider.experimental_bearer_token.is_some(),
                provider.requires_openai_auth,
            )
        {
            return Err(invalid(key_path, message));
        }
    }
    if let Some(id) = &toml.model_provider
        && !toml.model_providers.contains_key(id)
        && !built_ins.contains_key(id)
    {
        let known = toml.model_providers.keys().chain(built_ins.keys());
        return Err(invalid(
            "model_provider".to_owned(),
            unknown_default_message(id, known),
        ));
    }
    Ok(())
}

/// The cross-field messages, shared by the native and the Codex reader so both say the
/// same thing.
pub(crate) fn reserved_id_message(id: &str) -> String {
    format!("`{id}` is a built-in provider id and cannot be redefined; choose another id")
}

/// `auth` with any of `env_key`, `experimental_bearer_token`, `requires_openai_auth =
/// true`: the message naming them in that order, or `None`.
pub(crate) fn auth_clash_message(
    env_key: bool,
    bearer_token: bool,
    requires_openai_auth: bool,
) -> Option<String> {
    let clashes: Vec<&str> = [
        (env_key, "env_key"),
        (bearer_token, "experimental_bearer_token"),
        (requires_openai_auth, "requires_openai_auth"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    (!clashes.is_empty()).then(|| {
        format!(
            "provider auth cannot be combined with {}",
            clashes.join(", ")
        )
    })
}

/// `model_provider` names no provider: the message listing the `known` ones.
pub(crate) fn unknown_default_message<'a>(
    id: &str,
    known: impl Iterator<Item = &'a String>,
) -> String {
    let known: Vec<&str> = known.map(String::as_str).collect();
    format!(
        "`{id}` is not a defined or built-in provider (known: {})",
        known.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_components_are_dropped() {
        assert_eq!(without_dot_components(Path::new("./.")), Path::new("."));
        assert_eq!(
            without_dot_components(Path::new("./a/./b.sh")),
            Path::new("a/b.sh")
        );
        assert_eq!(
            without_dot_components(Path::new("/x/./../y")),
            Path::new("/x/../y")
        );
    }

    #[test]
    fn line_column_counts_characters_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 10), (2, 4));
        assert_eq!(line_column(text, 999), (3, 1));
    }
}
