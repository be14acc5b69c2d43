//! Finding and loading the config file: `--config`, else `$MODELAUTH_CONFIG`, else
//! `$XDG_CONFIG_HOME/modelauth/config.toml`, else `~/.config/modelauth/config.toml`; or,
//! with `--codex-config [PATH]`, Codex's own file read by Codex's rules (SPEC §12).

use std::path::{Path, PathBuf};

use provider_config::{Config, ModelProviderInfo, load_codex_config_file, load_config_file};

use crate::error::CliError;

/// Which config the user asked for: the flags, before any file is read.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--codex-config [PATH]`: `Some(None)` for Codex's default file.
    pub codex: Option<Option<PathBuf>>,
}

/// Where the config file was looked for, and why there.
#[derive(Debug, Clone)]
pub struct ConfigLocation {
    /// The path.
    pub path: PathBuf,
    /// Whether the user named it (flag or variable): then it must exist.
    pub explicit: bool,
    /// Whether it is a Codex config, read by Codex's rules.
    pub codex: bool,
}

impl Source {
    /// Works out which file to read, from the flags and the environment.
    pub fn locate(&self) -> Option<ConfigLocation> {
        match &self.codex {
            Some(Some(path)) => Some(ConfigLocation {
                path: path.clone(),
                explicit: true,
                codex: true,
            }),
            Some(None) => {
                let codex_home = std::env::var_os("CODEX_HOME").map(PathBuf::from);
                let home = std::env::var_os("HOME").map(PathBuf::from);
                provider_config::default_codex_config_path(codex_home.as_deref(), home.as_deref())
                    .map(|path| ConfigLocation {
                        path,
                        explicit: true,
                        codex: true,
                    })
            }
            None => locate(self.config.as_deref()),
        }
    }

    /// Loads the config. A file the user named must exist (Codex's too); the default file
    /// may be absent, in which case only the built-in providers exist.
    pub fn load(&self) -> Result<Config, CliError> {
        match self.locate() {
            Some(loc) if loc.codex => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                Ok(load_codex_config_file(&loc.path, home.as_deref())?)
            }
            Some(loc) if loc.explicit || loc.path.exists() => {
                load_config_file(&loc.path).map_err(|e| match codex_note(&loc.path) {
                    Some(note) => CliError::Usage(format!("invalid config: {e}\n  {note}")),
                    None => e.into(),
                })
            }
            None if self.codex.is_some() => Err(CliError::Usage(
                "cannot find Codex's config: set CODEX_HOME or HOME, or give --codex-config PATH"
                    .to_owned(),
            )),
            _ => Ok(Config::built_ins_only()),
        }
    }

    /// When no file was read because the default file does not exist: a note saying where
    /// it was looked for, for errors that would otherwise only name a built-in provider's
    /// missing key (`OPENAI_API_KEY is not set`).
    pub fn missing_default_note(&self) -> Option<String> {
        if self.codex.is_some() {
            return None;
        }
        let where_ = match locate(self.config.as_deref()) {
            Some(loc) if loc.explicit || loc.path.exists() => return None,
            Some(loc) => format!("the default file {} does not exist", loc.path.display()),
            None => "no --config, MODELAUTH_CONFIG or HOME".to_owned(),
        };
        Some(format!(
            "note: no config file was read ({where_}), so only the built-in providers are defined; write one there or give --config FILE"
        ))
    }

    /// One line for `check`: which file was read, or that the default one is missing.
    pub fn describe(&self) -> String {
        match self.locate() {
            Some(loc) if loc.codex => format!(
                "config: {} (a Codex config, read by Codex's rules)",
                loc.path.display()
            ),
            Some(loc) if loc.explicit || loc.path.exists() => {
                format!("config: {}", loc.path.display())
            }
            Some(loc) => format!(
                "config: none; the default file {} does not exist, so only the built-in providers are defined",
                loc.path.display()
            ),
            None => "config: none (no --config, MODELAUTH_CONFIG or HOME); only the built-in providers are defined".to_owned(),
        }
    }
}

/// Works out which native file to read, from `--config` and the environment.
fn locate(flag: Option<&Path>) -> Option<ConfigLocation> {
    if let Some(path) = flag {
        return Some(ConfigLocation {
            path: path.to_path_buf(),
            explicit: true,
            codex: false,
        });
    }
    if let Some(path) = std::env::var_os("MODELAUTH_CONFIG").filter(|v| !v.is_empty()) {
        return Some(ConfigLocation {
            path: PathBuf::from(path),
            explicit: true,
            codex: false,
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
        codex: false,
    })
}

/// Keys only Codex's own `config.toml` has at its top level.
const CODEX_ONLY_KEYS: &[&str] = &[
    "model",
    "approval_policy",
    "sandbox_mode",
    "model_reasoning_effort",
    "profiles",
    "mcp_servers",
    "projects",
    "model_provider_id",
];

/// For a file that modelauth could not read: a note when it looks like Codex's own
/// `config.toml` (under a `.codex` folder, or with a key only Codex has at the top).
fn codex_note(path: &Path) -> Option<String> {
    let under_codex = path.components().any(|c| c.as_os_str() == ".codex");
    // Only a file the loader could have read (never a FIFO or a device).
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > provider_config::MAX_CONFIG_BYTES {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let codex_key = text.lines().any(|line| {
        let key = line.split('=').next().unwrap_or_default().trim();
        !line.starts_with([' ', '\t']) && CODEX_ONLY_KEYS.contains(&key)
    });
    (under_codex || codex_key).then(|| {
        format!(
            "note: this looks like Codex's own config.toml: read it with --codex-config {}",
            path.display()
        )
    })
}

/// The provider named by `-p`, or the config's default.
pub fn provider<'a>(
    config: &'a Config,
    requested: Option<&'a str>,
) -> Result<(&'a str, &'a ModelProviderInfo), CliError> {
    let id = requested.unwrap_or_else(|| config.default_provider_id());
    match config.provider(id) {
        Some(info) => Ok((id, info)),
        None if provider_config::CODEX_CLOUD_PROVIDER_IDS.contains(&id) => {
            Err(CliError::Usage(format!(
                "provider `{id}` is built into Codex, which authenticates it with its own cloud credentials (AWS or Google); modelauth has no token command for it: choose another with -p"
            )))
        }
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
