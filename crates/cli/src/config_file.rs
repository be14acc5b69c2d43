//! Finding and loading the config file: `--config`, else `$MODELAUTH_CONFIG`, else
//! `$XDG_CONFIG_HOME/modelauth/config.toml`, else `~/.config/modelauth/config.toml`.

use std::path::{Path, PathBuf};

use provider_config::{Config, ModelProviderInfo, load_config_file};

use crate::error::CliError;

/// Where the config file was looked for, and why there.
#[derive(Debug, Clone)]
pub struct ConfigLocation {
    /// The path.
    pub path: PathBuf,
    /// Whether the user named it (flag or variable): then it must exist.
    pub explicit: bool,
}

/// Works out which file to read, from the flag and the environment.
pub fn locate(flag: Option<&Path>) -> Option<ConfigLocation> {
    if let Some(path) = flag {
        return Some(ConfigLocation {
            path: path.to_path_buf(),
            explicit: true,
        });
    }
    if let Some(path) = std::env::var_os("MODELAUTH_CONFIG").filter(|v| !v.is_empty()) {
        return Some(ConfigLocation {
            path: PathBuf::from(path),
            explicit: true,
        });
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    Some(ConfigLocation {
        path: base.join("modelauth").join("config.toml"),
        explicit: false,
    })
}

/// Loads the config. A file the user named must exist; the default file may be absent, in
/// which case only the built-in providers exist.
pub fn load(flag: Option<&Path>) -> Result<Config, CliError> {
    match locate(flag) {
        Some(loc) if loc.explicit || loc.path.exists() => Ok(load_config_file(&loc.path)?),
        _ => Ok(Config::built_ins_only()),
    }
}

/// The provider named by `-p`, or the config's default.
pub fn provider<'a>(
    config: &'a Config,
    requested: Option<&'a str>,
) -> Result<(&'a str, &'a ModelProviderInfo), CliError> {
    let id = requested.unwrap_or_else(|| config.default_provider_id());
    match config.provider(id) {
        Some(info) => Ok((id, info)),
        None => {
            let known: Vec<&str> = config.providers().keys().map(String::as_str).collect();
            let origin = config
                .path()
                .map_or_else(|| "no config file".to_owned(), |p| p.display().to_string());
            Err(CliError::Usage(format!(
                "unknown provider `{id}` (known in {origin}: {})",
                known.join(", ")
            )))
        }
    }
}
