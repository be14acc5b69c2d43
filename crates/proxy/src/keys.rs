//! Scoped client keys (`--client-keys FILE`, SPEC §13): named keys, each limited to some
//! providers and path prefixes and, if it says so, to a time. An agent holds a key that
//! reaches what it needs and nothing more, and never the gateway's token.
//!
//! The file (TOML), one table per key:
//!
//! ```toml
//! [keys.reviewer]
//! key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! providers = ["corp"]                  # default: every provider
//! paths = ["/responses", "/models"]     # prefixes of the path after /ID; default: all
//! expires = "2027-01-31T00:00:00Z"      # default: never
//! ```
//!
//! `key = "..."` may stand for `key_sha256` (then the file holds the key itself). Keys are
//! compared as SHA-256 digests, in time that does not depend on where they differ, every
//! key against every key the request presents.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use http::HeaderMap;
use sha2::{Digest as _, Sha256};

use crate::access::{constant_time_eq, presented_keys};

/// The largest key file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientKeysError {
    /// The file cannot be read.
    #[error("{}: cannot read the client keys", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a key file.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong, naming the key (never a key).
        reason: String,
    },
    /// The text is not a key file ([`ClientKeys::parse`], which has no file to name).
    #[error("{reason}")]
    Parse {
        /// What is wrong, naming the key (never a key).
        reason: String,
    },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    keys: BTreeMap<String, KeyEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    key: Option<String>,
    key_sha256: Option<String>,
    providers: Option<Vec<String>>,
    paths: Option<Vec<String>>,
    expires: Option<String>,
}

/// A set of scoped client keys.
#[derive(Clone, Default)]
pub struct ClientKeys {
    keys: Vec<ScopedKey>,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.name))
            .finish()
    }
}

/// One key: its name, its digest, and what it may reach.
#[derive(Clone)]
pub(crate) struct ScopedKey {
    pub(crate) name: String,
    digest: [u8; 32],
    providers: Option<Vec<String>>,
    paths: Option<Vec<String>>,
    expires: Option<SystemTime>,
}

impl ScopedKey {
    /// Whether this key may reach `rest` (the path after `/ID`) of provider `id`.
    pub(crate) fn allows(&self, id: &str, rest: &str) -> bool {
        let provider = self
            .providers
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|p| p == id));
        let rest = format!("/{}", rest.trim_start_matches('/'));
        let path = self.paths.as_ref().is_none_or(|prefixes| {
            prefixes.iter().any(|prefix| {
                rest == *prefix
                    || rest
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|after| prefix.ends_with('/') || after.starts_with('/'))
            })
        });
        provider && path
    }
}

impl ClientKeys {
    /// Reads the key file at `path` (a regular file of at most 1 MiB).
    pub fn load(path: &Path) -> Result<Self, ClientKeysError> {
        use std::io::Read as _;
        let read = |source| ClientKeysError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let meta = file.metadata().map_err(read)?;
        if !meta.is_file() {
            return Err(ClientKeysError::Invalid {
                path: path.to_path_buf(),
                reason: "not a regular file".into(),
            });
        }
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(ClientKeysError::Invalid {
                path: path.to_path_buf(),
                reason: "larger than 1 MiB".into(),
            });
        }
        Self::parse(&text).map_err(|e| ClientKeysError::Invalid {
            path: path.to_path_buf(),
            reason: match e {
                ClientKeysError::Parse { reason } => reason,
                other => other.to_string(),
            },
        })
    }

    /// Reads a key file's text; the error names the key at fault, never a key.
    pub fn parse(text: &str) -> Result<Self, ClientKeysError> {
        Self::parse_keys(text).map_err(|reason| ClientKeysError::Parse { reason })
    }

    fn parse_keys(text: &str) -> Result<Self, String> {
        let file: KeyFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut keys = Vec::new();
        for (name, entry) in file.keys {
            let digest = match (&entry.key, &entry.key_sha256) {
                (Some(key), None) if !key.is_empty() => Sha256::digest(key.as_bytes()).into(),
                (None, Some(hex)) => parse_digest(hex).ok_or_else(|| {
                    format!("key `{name}`: key_sha256 must be 64 hexadecimal digits")
                })?,
                _ => {
                    return Err(format!(
                        "key `{name}`: give exactly one of `key` and `key_sha256`"
                    ));
                }
            };
            let expires = entry
                .expires
                .as_deref()
                .map(|at| {
                    chrono::DateTime::parse_from_rfc3339(at)
                        .map(SystemTime::from)
                        .map_err(|_| {
                            format!("key `{name}`: expires must be an RFC 3339 time, such as 2027-01-31T00:00:00Z")
                        })
                })
                .transpose()?;
            if let Some(paths) = &entry.paths
                && let Some(bad) = paths.iter().find(|p| !p.starts_with('/'))
            {
                return Err(format!(
                    "key `{name}`: the path prefix `{bad}` must start with /"
                ));
            }
            keys.push(ScopedKey {
                name,
                digest,
                providers: entry.providers,
                paths: entry.paths,
                expires,
            });
        }
        Ok(Self { keys })
    }

    /// The names of the keys, in order.
    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.name.as_str()).collect()
    }

    /// The key `headers` present, if it is one of these and has not expired at `now`.
    /// Every presented key is compared with every key of the set, whatever matched.
    pub(crate) fn find(&self, headers: &HeaderMap, now: SystemTime) -> Option<&ScopedKey> {
        let mut found = None;
        for given in presented_keys(headers) {
            let digest: [u8; 32] = Sha256::digest(given).into();
            for key in &self.keys {
                if constant_time_eq(&digest, &key.digest) && found.is_none() {
                    found = Some(key);
                }
            }
        }
        found.filter(|key| key.expires.is_none_or(|at| now < at))
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_scope_is_providers_and_whole_segment_path_prefixes() {
        let keys = ClientKeys::parse(
            "[keys.a]\nkey = \"k\"\nproviders = [\"corp\"]\npaths = [\"/models\", \"/files/\"]\n",
        )
        .unwrap();
        let key = &keys.keys[0];
        assert!(key.allows("corp", "models"));
        assert!(key.allows("corp", "models/gpt-4.1"));
        assert!(key.allows("corp", "files/x"));
        assert!(!key.allows("corp", "modelsX"));
        assert!(!key.allows("corp", "responses"));
        assert!(!key.allows("other", "models"));
    }

    #[test]
    fn a_key_file_error_names_the_key_never_the_key() {
        let err =
            ClientKeys::parse("[keys.a]\nkey = \"s3cret\"\nkey_sha256 = \"00\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "key `a`: give exactly one of `key` and `key_sha256`"
        );
        let err = ClientKeys::parse("[keys.b]\nkey_sha256 = \"zz\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "key `b`: key_sha256 must be 64 hexadecimal digits"
        );
    }
}
