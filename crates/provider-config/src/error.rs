//! The one error type of this crate.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be loaded.
///
/// Every variant names the file; parse errors also name the key path and the line and
/// column, and cross-field errors the key path of the provider they concern.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the config file", file.display())]
    Read {
        /// The file that was asked for.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or a value does not fit its key.
    #[error("{}", TomlDisplay(self))]
    Toml {
        /// The file (or a label such as `<string>`).
        file: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column of the offending text.
        column: usize,
        /// Dotted key path, e.g. `model_providers.corp.auth.timeout_ms`; empty at the top level.
        key_path: String,
        /// What is wrong.
        message: String,
    },
    /// The file is well-formed but breaks a rule that spans several keys.
    #[error("{}: {key_path}: {message}", file.display())]
    Invalid {
        /// The file (or a label such as `<string>`).
        file: PathBuf,
        /// Dotted key path of the table the rule is about, e.g. `model_providers.corp`.
        key_path: String,
        /// What is wrong.
        message: String,
    },
}

struct TomlDisplay<'a>(&'a ConfigError);

impl fmt::Display for TomlDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let ConfigError::Toml {
            file,
            line,
            column,
            key_path,
            message,
        } = self.0
        {
            write!(f, "{}:{line}:{column}: ", file.display())?;
            if !key_path.is_empty() {
                write!(f, "{key_path}: ")?;
            }
            write!(f, "{message}")?;
        }
        Ok(())
    }
}
