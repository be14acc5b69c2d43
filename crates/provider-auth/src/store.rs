//! The shared token store: one entry per auth config in a per-user folder (tmpfs), so that
//! every process of a user shares one token and one command run, as the in-process cache
//! does within a process.
//!
//! It is a layer under [`crate::TokenCache`], not a second cache: [`StoreRefresher`] wraps
//! the command refresher. A cache miss first reads the store; only when the store has no
//! usable token does one process, holding the entry's file lock, run the command and write
//! the result. A rejected token is deleted only if the entry still holds it
//! (compare-and-delete), so a process that already has a newer token is not affected.
//!
//! Everything read from the store is input: an entry that is a symlink, belongs to another
//! user or is readable by others is ignored (and reported), a corrupt one is replaced.
//!
//! Beside each entry, a small state file (`<entry>.state`, guarded by its own `flock`) holds
//! what processes must agree on besides the token (SPEC §9.1): the failure backoff and the
//! rejected-token breaker, the newest token the gateway accepted, and which token each
//! helper caller (a parent process of `modelauth token`) was handed last. A problem with the
//! store never fails a call: it runs the command without the store instead, and says so.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{AuthError, StoreError};
use crate::refresher::{ExternalAuthRefresher, RefreshReason};
use crate::scope::TokenScope;
use crate::token::{AuthToken, FreshToken};

/// Target of the shared store's warnings (a store that cannot be used, a lock given up on).
/// The CLI shows them at default verbosity.
pub const STORE_TRACING_TARGET: &str = "provider_auth::store";

/// How long past the command's timeout a process waits for another one's refresh.
const LOCK_MARGIN: Duration = Duration::from_secs(5);
/// How often a waiting process retries the lock.
const LOCK_POLL: Duration = Duration::from_millis(10);
/// Largest entry read.
const MAX_ENTRY_BYTES: u64 = 256 * 1024;
/// Attempts (1 ms apart) at a state file's lock, which is held only to read and write it.
const STATE_LOCK_TRIES: u32 = 500;
/// How long a helper caller's last handout is remembered.
const CALLER_MEMORY_MS: u64 = 60 * 60 * 1000;
/// How stale a caller's record may get before a handout of the same token rewrites it.
const RECORD_REFRESH_MS: u64 = 60 * 1000;
/// Most callers remembered per entry.
const MAX_CALLERS: usize = 256;

/// A per-user folder of shared tokens.
#[derive(Debug, Clone)]
pub struct SharedStore {
    dir: PathBuf,
    origin: String,
}

/// Where the environment puts the shared store ([`SharedStore::from_env`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct StoreLocation {
    /// The store, or why there is none.
    pub store: Result<SharedStore, StoreError>,
    /// Folders passed over and why (another user's runtime folder, a folder open to
    /// others): worth a warning, since the user expected them to be used.
    pub passed_over: Vec<StoreError>,
}

static PROCESS_STORE: OnceLock<SharedStore> = OnceLock::new();

/// Makes every command cache this process creates from now on share its tokens through
/// `store` (see [`crate::TokenCache::shared_for_command`]). Library users opt in with this
/// call; without it, tokens stay in memory. Returns false if a store was already set.
pub fn use_shared_store(store: SharedStore) -> bool {
    PROCESS_STORE.set(store).is_ok()
}

pub(crate) fn process_store() -> Option<&'static SharedStore> {
    PROCESS_STORE.get()
}

/// An entry as written: the token and when it was obtained and expires (Unix ms).
#[derive(Serialize, Deserialize)]
struct Entry {
    version: u32,
    token: String,
    obtained_at_ms: u64,
    expires_at_ms: Option<u64>,
    /// The helper's headers (secrets too).
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

/// What processes agree on besides the token (the `<entry>.state` file).
#[derive(Serialize, Deserialize, Default)]
struct State {
    /// The failure backoff and rejected-token breaker, as in [`crate::TokenCache`].
    #[serde(default)]
    strike: Option<Strike>,
    /// Fingerprint of the newest token a gateway accepted.
    #[serde(default)]
    proven: Option<String>,
    /// The token last checked with the gateway, and when.
    #[serde(default)]
    checked: Option<HandoutRecord>,
    /// Helper callers and what each was handed last.
    #[serde(default)]
    callers: std::collections::BTreeMap<String, HandoutRecord>,
}

#[derive(Serialize, Deserialize, Clone)]
struct Strike {
    /// The step of the last strike (0 after a first rejection, which is retried at once).
    step_ms: u64,
    /// No run before this (Unix ms), unless a usable token turns up.
    not_before_ms: u64,
    /// Until when a new strike follows this one (set by a success after it).
    #[serde(default)]
    probation_until_ms: Option<u64>,
    /// The rejected token whose hold is being served: its next rejection runs the command.
    #[serde(default)]
    held: Option<String>,
    /// The failed run's message, shown to callers held back (no token: errors never hold one).
    #[serde(default)]
    error: Option<String>,
    /// The rejected token this strike is for (its fingerprint).
    #[serde(default)]
    struck: Option<String>,
}

#[derive(Serialize, Deserialize, Clone)]
struct HandoutRecord {
    fp: String,
    at_ms: u64,
}

/// What a reader makes of an entry.
#[derive(Debug)]
pub(crate) enum Read {
    Missing,
    Ignored(String),
    Corrupt,
    Found(FreshToken),
}

impl SharedStore {
    /// The store the environment names (SPEC §9): `$MODELAUTH_CACHE_DIR` when set; else
    /// `$XDG_RUNTIME_DIR/modelauth` (per user, tmpfs) when that runtime folder is this
    /// user's; else a per-user folder on disk, `${XDG_CACHE_HOME:-~/.cache}/modelauth`
    /// (on macOS `$TMPDIR/modelauth`, which is per user there). A folder that cannot be
    /// used is passed over with the reason, never silently.
    pub fn from_env() -> StoreLocation {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let mut passed_over = Vec::new();
        if let Some(dir) = var("MODELAUTH_CACHE_DIR") {
            let dir = PathBuf::from(dir);
            return StoreLocation {
                store: Self::at(&dir).map(|s| s.from("MODELAUTH_CACHE_DIR")),
                passed_over,
            };
        }
        if let Some(runtime) = var("XDG_RUNTIME_DIR") {
            let runtime = PathBuf::from(runtime);
            match owner_check(&runtime) {
                Ok(()) => match Self::at(&runtime.join("modelauth")) {
                    Ok(store) => {
                        return StoreLocation {
                            store: Ok(store.from("XDG_RUNTIME_DIR")),
                            passed_over,
                        };
                    }
                    Err(why) => passed_over.push(why),
                },
                Err(why) => passed_over.push(StoreError::Named {
                    var: "XDG_RUNTIME_DIR",
                    source: Box::new(why),
                }),
            }
        }
        let fallback = if cfg!(target_os = "macos") {
            var("TMPDIR").map(|t| {
                (
                    PathBuf::from(t).join("modelauth"),
                    "TMPDIR (per user on macOS)",
                )
            })
        } else {
            var("XDG_CACHE_HOME")
                .map(|c| (PathBuf::from(c).join("modelauth"), "XDG_CACHE_HOME"))
                .or_else(|| {
                    var("HOME").map(|h| {
                        (
                            PathBuf::from(h).join(".cache").join("modelauth"),
                            "the per-user cache folder",
                        )
                    })
                })
        };
        let store = match fallback {
            None => Err(StoreError::NoFolder),
            Some((dir, origin)) => owner_check(&dir).and_then(|()| Self::at(&dir)).map(|s| {
                let why = if passed_over.is_empty() {
                    "XDG_RUNTIME_DIR is not set"
                } else {
                    "XDG_RUNTIME_DIR cannot be used"
                };
                s.from(&format!("{origin}; {why}"))
            }),
        };
        StoreLocation { store, passed_over }
    }

    fn from(mut self, origin: &str) -> Self {
        self.origin = origin.to_owned();
        self
    }

    /// Why this folder: the variable that named it, or the fallback and why it was taken.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The store in `dir`, created with mode 0700 if missing. The folder must be a real
    /// folder (not a link), owned by this user, with no access for others.
    pub fn at(dir: &Path) -> Result<Self, StoreError> {
        let io = |action, source| StoreError::Io {
            action,
            path: dir.to_path_buf(),
            source,
        };
        if std::fs::symlink_metadata(dir).is_err() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io("create", e))?;
        }
        let meta = std::fs::symlink_metadata(dir).map_err(|e| io("read", e))?;
        if !meta.file_type().is_dir() {
            return Err(StoreError::NotAFolder {
                path: dir.to_path_buf(),
            });
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(StoreError::OtherOwner {
                path: dir.to_path_buf(),
                owner: meta.uid(),
                me,
            });
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(StoreError::OpenToOthers {
                path: dir.to_path_buf(),
                mode: meta.permissions().mode() & 0o777,
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            origin: "given by the application".to_owned(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry file of a scope: a hash of the provider id, its `base_url` and its whole
    /// auth table, so the name reveals nothing of them and two providers never share one.
    pub fn entry_path(&self, scope: &TokenScope) -> PathBuf {
        self.dir.join(format!("{}.json", key(scope)))
    }

    /// Where the refresh token of an OAuth2 scope is kept (grant `refresh_token`):
    /// beside the entry, mode 0600, replaced atomically when the endpoint rotates it.
    pub fn refresh_token_path(&self, scope: &TokenScope) -> PathBuf {
        self.dir.join(format!("{}.refresh", key(scope)))
    }

    /// Writes `fresh` as the entry of `scope`, replacing any (`modelauth login`).
    pub fn save(&self, scope: &TokenScope, fresh: &FreshToken) -> std::io::Result<()> {
        self.write(&self.entry_path(scope), fresh)
    }

    /// Deletes the entry of `scope` (and what the store knows of its token); false when
    /// there was none.
    pub fn forget(&self, scope: &TokenScope) -> std::io::Result<bool> {
        let path = self.entry_path(scope);
        let _ = std::fs::remove_file(path.with_extension("state"));
        let _ = std::fs::remove_file(path.with_extension("refresh"));
        match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads an entry, trusting nothing: no link is followed, the file must be ours, 0600
    /// or narrower, and small.
    pub(crate) fn read(&self, path: &Path) -> Read {
        // O_NONBLOCK: a FIFO in the entry's place must not block the reader (it is then
        // refused below as not a file).
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Read::Missing,
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Read::Ignored(format!("{} is a link", path.display()));
            }
            Err(e) => return Read::Ignored(format!("cannot open {}: {e}", path.display())),
        };
        let Ok(meta) = file.metadata() else {
            return Read::Corrupt;
        };
        if !meta.is_file() {
            return Read::Ignored(format!("{} is not a file", path.display()));
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Read::Ignored(format!("{} belongs to another user", path.display()));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Read::Ignored(format!(
                "{} is readable by others (mode {:o})",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        let mut text = String::new();
        if file
            .take(MAX_ENTRY_BYTES)
            .read_to_string(&mut text)
            .is_err()
        {
            return Read::Corrupt;
        }
        let Ok(entry) = serde_json::from_str::<Entry>(&text) else {
            return Read::Corrupt;
        };
        let Ok(token) = AuthToken::parse(&entry.token) else {
            return Read::Corrupt;
        };
        let mut headers = Vec::new();
        for (name, value) in entry.headers {
            // The same rules as for a helper's own output: an entry never names a header
            // modelauth sets itself (`Host: evil.example`).
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(name)
                    if http::HeaderValue::from_str(&value).is_ok()
                        && !crate::format::RESERVED_HELPER_HEADERS.contains(&name.as_str()) =>
                {
                    headers.push((name, AuthToken::new(value)));
                }
                _ => return Read::Corrupt,
            }
        }
        Read::Found(FreshToken {
            token,
            expires_at: entry.expires_at_ms.map(from_ms),
            obtained_at: Some(from_ms(entry.obtained_at_ms)),
            headers,
            shape: crate::token::TokenShape::SharedStore,
        })
    }

    /// Writes an entry atomically: a new 0600 file beside it, then a rename over it.
    pub(crate) fn write(&self, path: &Path, fresh: &FreshToken) -> std::io::Result<()> {
        let entry = Entry {
            version: 1,
            token: fresh.token.expose_secret().to_owned(),
            obtained_at_ms: to_ms(fresh.obtained_at.unwrap_or_else(SystemTime::now)),
            expires_at_ms: fresh.expires_at.map(to_ms),
            headers: fresh
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.expose_secret().to_owned()))
                .collect(),
        };
        let text =
            zeroize::Zeroizing::new(serde_json::to_string(&entry).map_err(std::io::Error::other)?);
        crate::files::write_private_file(path, text.as_bytes())
    }

    /// Takes the entry's lock (a `flock` on `<entry>.lock`), waiting at most `wait`. A
    /// holder that dies releases it. A folder or a link where the lock file should be is
    /// replaced, like a corrupt entry; an error says why the lock cannot be had.
    pub(crate) async fn lock(&self, path: &Path, wait: Duration) -> Result<EntryLock, String> {
        let lock_path = path.with_extension("lock");
        let deadline = Instant::now() + wait;
        let mut file = open_lock_file(&lock_path)?;
        loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(EntryLock { _lock: lock }),
                Err((back, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "another process has held the lock {} for more than {} ms (its command's time limit plus {} s)",
                            lock_path.display(),
                            wait.as_millis(),
                            LOCK_MARGIN.as_secs()
                        ));
                    }
                    file = back;
                    tokio::time::sleep(LOCK_POLL).await;
                }
                Err((_, errno)) => {
                    return Err(format!("cannot lock {}: {errno}", lock_path.display()));
                }
            }
        }
    }

    /// Reads and updates the state beside `entry` under its own short `flock`. Best effort:
    /// a state file that cannot be had is read as empty and not written (a warning).
    fn update_state<T>(&self, entry: &Path, change: impl FnOnce(&mut State) -> T) -> T {
        let path = entry.with_extension("state");
        let file = open_lock_file(&path).and_then(|file| {
            let mut file = file;
            for _ in 0..STATE_LOCK_TRIES {
                match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                    Ok(lock) => return Ok(lock),
                    Err((back, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                        file = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((_, errno)) => {
                        return Err(format!("cannot lock {}: {errno}", path.display()));
                    }
                }
            }
            Err(format!("{} stayed locked", path.display()))
        });
        let mut locked = match file {
            Ok(locked) => locked,
            Err(why) => {
                tracing::warn!(target: STORE_TRACING_TARGET, "shared token store: {why}; going on without it");
                return change(&mut State::default());
            }
        };
        let mut text = String::new();
        let mut state = match (&*locked).take(MAX_ENTRY_BYTES).read_to_string(&mut text) {
            Ok(_) => serde_json::from_str::<State>(&text).unwrap_or_default(),
            Err(_) => State::default(),
        };
        let before = serde_json::to_string(&state).unwrap_or_default();
        let out = change(&mut state);
        let after = serde_json::to_string(&state).unwrap_or_default();
        if after != before {
            let written = locked
                .set_len(0)
                .and_then(|()| std::io::Seek::rewind(&mut *locked))
                .and_then(|()| locked.write_all(after.as_bytes()));
            if let Err(e) = written {
                tracing::warn!(target: STORE_TRACING_TARGET, "cannot write {}: {e}", path.display());
            }
        }
        out
    }

    /// Hands `token` to `caller` (e.g. its parent's pid and start time): records it, so
    /// that the caller's next call can tell a re-ask, and says what the store knew before
    /// ([`Handout`]). One read and write of the state file.
    pub fn hand_out(&self, scope: &TokenScope, caller: &str, token: &AuthToken) -> Handout {
        let fp = fingerprint(token);
        let now = now_ms();
        self.update_state(&self.entry_path(scope), |state| {
            let last = state.callers.get(caller);
            let handout = Handout {
                caller_known: last.is_some(),
                again: last.is_some_and(|h| h.fp == fp),
                checked_ago: match &state.checked {
                    Some(checked) if checked.fp == fp => {
                        Some(Duration::from_millis(now.saturating_sub(checked.at_ms)))
                    }
                    _ => None,
                },
            };
            record(state, caller, fp, now);
            handout
        })
    }

    /// Records that `caller` was handed `token` after all (a new one, after a check).
    pub fn record_handout(&self, scope: &TokenScope, caller: &str, token: &AuthToken) {
        let fp = fingerprint(token);
        let now = now_ms();
        self.update_state(&self.entry_path(scope), |state| {
            record(state, caller, fp, now);
        });
    }

    /// Records that `token` was checked with the gateway just now (accepted, or the check
    /// said nothing either way), so that re-asks do not check it again for a while.
    pub fn mark_checked(&self, scope: &TokenScope, token: &AuthToken) {
        let fp = fingerprint(token);
        let now = now_ms();
        self.update_state(&self.entry_path(scope), |state| {
            state.checked = Some(HandoutRecord { fp, at_ms: now });
        });
    }
}

/// Records a handout: `caller` was last handed the token `fp`. Callers not seen for an
/// hour are forgotten, and at most [`MAX_CALLERS`] are kept. A caller handed the same token
/// within the last minute is left as it is, so a warm call writes nothing.
fn record(state: &mut State, caller: &str, fp: String, now: u64) {
    if state
        .callers
        .get(caller)
        .is_some_and(|h| h.fp == fp && now.saturating_sub(h.at_ms) < RECORD_REFRESH_MS)
    {
        return;
    }
    state
        .callers
        .retain(|_, h| now.saturating_sub(h.at_ms) < CALLER_MEMORY_MS);
    if state.callers.len() >= MAX_CALLERS
        && !state.callers.contains_key(caller)
        && let Some(oldest) = state
            .callers
            .iter()
            .min_by_key(|(_, h)| h.at_ms)
            .map(|(k, _)| k.clone())
    {
        state.callers.remove(&oldest);
    }
    state
        .callers
        .insert(caller.to_owned(), HandoutRecord { fp, at_ms: now });
}

/// What the store knows of a token a helper caller is about to be handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Handout {
    /// The store has a record of this caller.
    pub caller_known: bool,
    /// The same caller was handed the same token last time: it is asking again, which a
    /// helper caller does after its gateway rejected the token.
    pub again: bool,
    /// How long ago the token was last checked with the gateway (a process saw it
    /// accepted, or a check said nothing either way), if it was.
    pub checked_ago: Option<Duration>,
}

/// Opens (creating) a lock or state file, never through a link; a folder or a link in its
/// place is removed and the file made again.
fn open_lock_file(path: &Path) -> Result<File, String> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
    };
    let first = match open() {
        Ok(file) => return Ok(file),
        Err(e) => e,
    };
    let meta = std::fs::symlink_metadata(path);
    let replaced = match &meta {
        Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(path).is_ok(),
        Ok(m) if m.is_dir() => std::fs::remove_dir(path).is_ok(),
        _ => false,
    };
    if !replaced {
        return Err(format!("cannot open {}: {first}", path.display()));
    }
    tracing::warn!(target: STORE_TRACING_TARGET, "{} was a link or a folder; replaced it", path.display());
    open().map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// The folder (or, when it does not exist yet, its nearest existing parent) belongs to
/// this user: another user's folder is never taken over (a root run with the user's
/// `XDG_RUNTIME_DIR` or `HOME`).
fn owner_check(dir: &Path) -> Result<(), StoreError> {
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(meta) => {
                let me = nix::unistd::geteuid().as_raw();
                return if meta.uid() == me {
                    Ok(())
                } else {
                    Err(StoreError::OtherOwner {
                        path: at.to_path_buf(),
                        owner: meta.uid(),
                        me,
                    })
                };
            }
            Err(_) => match at.parent() {
                Some(parent) => at = parent,
                None => return Ok(()),
            },
        }
    }
}

/// A held entry lock; released when dropped (or when the process dies).
pub(crate) struct EntryLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Environment variables that select which identity a token command mints for (a cloud
/// CLI's profile, account or config folder, a kubeconfig): their values are part of an
/// entry's key, so after `AWS_PROFILE=prod` a call with `AWS_PROFILE=dev` never gets the
/// prod token. `auth.key_env` adds more.
pub const IDENTITY_ENV: &[&str] = &[
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "CLOUDSDK_CONFIG",
    "CLOUDSDK_ACTIVE_CONFIG_NAME",
    "CLOUDSDK_CORE_ACCOUNT",
    "CLOUDSDK_CORE_PROJECT",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_CONFIG_DIR",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "KUBECONFIG",
    "VAULT_ADDR",
    "VAULT_NAMESPACE",
];

fn key(scope: &TokenScope) -> String {
    let auth = &scope.auth;
    let cwd = std::path::absolute(&auth.cwd).unwrap_or_else(|_| auth.cwd.clone());
    // The value the command will see (the config's `env` first), hashed: the key is a
    // file name and reveals nothing, and the values never reach the store in clear.
    let identity: std::collections::BTreeMap<&str, String> = IDENTITY_ENV
        .iter()
        .copied()
        .chain(auth.key_env.iter().map(String::as_str))
        // An OAuth2 table's variables (the client secret, the first refresh token) select
        // the identity the same way.
        .chain(auth.oauth2.iter().flat_map(|o| {
            [&o.client_secret_env, &o.refresh_token_env]
                .into_iter()
                .flatten()
                .map(String::as_str)
        }))
        .filter_map(|name| {
            let value = match auth.env.get(name) {
                Some(value) => value.clone(),
                None => std::env::var(name).ok()?,
            };
            Some((name, hex(&Sha256::digest(value.as_bytes()))))
        })
        .collect();
    let canonical = serde_json::json!({
        "provider": scope.provider,
        "base_url": scope.base_url,
        "command": auth.command,
        "args": auth.args,
        "timeout_ms": auth.timeout_ms,
        "refresh_interval_ms": auth.refresh_interval_ms,
        "cwd": cwd.to_string_lossy(),
        "env": auth.env,
        "format": format!("{:?}", auth.format),
        "oauth2": auth.oauth2,
        "identity": identity,
    });
    hex(&Sha256::digest(canonical.to_string().as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short fingerprint of a token, to tell tokens apart in the state file (which sits
/// beside the entry that holds the token itself).
fn fingerprint(token: &AuthToken) -> String {
    hex(&Sha256::digest(token.expose_secret().as_bytes())[..12])
}

fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

/// A token source that shares its tokens through a [`SharedStore`]: a valid entry is used
/// without running anything; otherwise one process (holding the entry's lock) runs the inner
/// source and writes the result for the others. The failure backoff and the rejected-token
/// breaker hold across processes too (the entry's state file).
pub struct StoreRefresher {
    inner: Arc<dyn ExternalAuthRefresher>,
    store: SharedStore,
    path: PathBuf,
    refresh_interval: Option<Duration>,
    expiry_cap: Option<Duration>,
    lock_wait: Duration,
    /// The lock was given up on once: said once, at warning level.
    warned: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for StoreRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreRefresher")
            .field("source", &self.inner.describe())
            .field("entry", &self.path)
            .finish_non_exhaustive()
    }
}

/// First step after a failure, and the longest (as [`crate::CachePolicy::new`]).
const INITIAL_BACKOFF_MS: u64 = 1000;
const MAX_BACKOFF_MS: u64 = 30_000;

fn next_step_ms(step: u64) -> u64 {
    if step == 0 {
        INITIAL_BACKOFF_MS
    } else {
        (step * 2).min(MAX_BACKOFF_MS)
    }
}

impl Strike {
    /// Whether a strike now follows this one (no token has proven itself since).
    fn followed_at(&self, now: u64) -> bool {
        self.probation_until_ms.is_none_or(|until| now < until)
    }

    /// Whether the run this strike started for `fp` never ended: it neither failed nor
    /// replaced the token (the process that ran it was killed, SPEC §14). Its rejection
    /// again is that same run, not the next step.
    fn run_lost_for(&self, fp: &str) -> bool {
        self.struck.as_deref() == Some(fp)
            && self.error.is_none()
            && self.probation_until_ms.is_none()
    }
}

impl StoreRefresher {
    /// Shares `inner`'s tokens for `scope` through `store`.
    pub fn new(
        inner: Arc<dyn ExternalAuthRefresher>,
        store: SharedStore,
        scope: &TokenScope,
    ) -> Self {
        let auth = &scope.auth;
        // Another process's run may be prompting (interactive), for up to its own bound.
        let run_bound = if auth.interactive == provider_config::Interactive::Never {
            auth.timeout()
        } else {
            auth.timeout().max(auth.interactive_timeout())
        };
        Self {
            path: store.entry_path(scope),
            inner,
            store,
            refresh_interval: auth.refresh_interval(),
            expiry_cap: auth.stated_expiry_cap(),
            lock_wait: run_bound + LOCK_MARGIN,
            warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The entry's token if it is still within its lifetime (and, for a refresh ahead,
    /// before 80% of it), and is not `rejected`.
    fn usable(&self, rejected: Option<&AuthToken>, ahead: bool) -> Option<FreshToken> {
        let fresh = match self.store.read(&self.path) {
            Read::Found(fresh) => fresh,
            Read::Missing | Read::Corrupt => return None,
            Read::Ignored(why) => {
                tracing::warn!(target: STORE_TRACING_TARGET, "shared token store entry ignored: {why}");
                return None;
            }
        };
        if rejected.is_some_and(|r| r.same_secret(&fresh.token)) {
            return None;
        }
        let obtained = fresh.obtained_at?;
        let age = SystemTime::now()
            .duration_since(obtained)
            .unwrap_or(Duration::MAX);
        let left = fresh
            .expires_at
            .map(|expires| expires.duration_since(obtained).unwrap_or(Duration::ZERO));
        let limit = match (
            crate::token::lifetime(self.refresh_interval, self.expiry_cap, left),
            ahead,
        ) {
            (None, _) => Duration::MAX,
            (Some(l), true) => l.mul_f64(0.8),
            (Some(l), false) => l,
        };
        (age < limit).then_some(fresh)
    }

    /// The error of a backoff another process (or this one) is serving, if any.
    fn held_back(&self) -> Option<AuthError> {
        let now = now_ms();
        let strike = self
            .store
            .update_state(&self.path, |state| state.strike.clone())?;
        if now >= strike.not_before_ms {
            return None;
        }
        let retry_in_ms = strike.not_before_ms - now;
        Some(match strike.error {
            Some(message) => AuthError::Backoff {
                provider: "".into(),
                message,
                retry_in_ms,
            },
            None => AuthError::Rejected {
                provider: "".into(),
                expired_at: None,
                origin: self.inner.describe(),
                retry_in_ms,
            },
        })
    }

    /// The breaker across processes, for a run after the gateway rejected `rejected`: the
    /// first rejection, and any rejection of a token a gateway had accepted, is a rotation
    /// (run at once); a rejection of a token minted after a strike and never accepted is
    /// the next step (1 s, 2 s, ... 30 s), counted from when that token was minted: the
    /// next run waits until then (a token that lived longer than its step is replaced at
    /// once).
    fn strike_rejected(
        &self,
        rejected: &AuthToken,
        minted_ms: Option<u64>,
        expired_at: Option<String>,
    ) -> Option<AuthError> {
        let fp = fingerprint(rejected);
        let now = now_ms();
        let origin = self.inner.describe();
        self.store.update_state(&self.path, |state| {
            let proven = state.proven.as_deref() == Some(fp.as_str());
            let previous = state.strike.take();
            if previous
                .as_ref()
                .is_some_and(|p| p.held.as_deref() == Some(fp.as_str()) || p.run_lost_for(&fp))
            {
                // Its hold has been served, or the run for it was lost: this rejection runs
                // the command.
                state.strike = previous;
                return None;
            }
            // Across processes a token proves itself only by being accepted: helper callers
            // say nothing of their successes, so time alone never ends the chain (a token
            // that lived long is still run for at once: the hold counts from its minting).
            let step = match &previous {
                Some(p) if !proven => next_step_ms(p.step_ms),
                _ => 0,
            };
            let not_before = minted_ms.unwrap_or(now).saturating_add(step);
            let hold = now < not_before;
            state.strike = Some(Strike {
                step_ms: step,
                not_before_ms: if hold { not_before } else { 0 },
                probation_until_ms: None,
                held: hold.then(|| fp.clone()),
                error: None,
                struck: Some(fp.clone()),
            });
            hold.then(|| {
                tracing::warn!(
                    target: crate::TRACING_TARGET,
                    source = %origin,
                    backoff_ms = step,
                    "the gateway rejected a newly minted token; holding the next run back (shared store)"
                );
                AuthError::Rejected {
                    provider: "".into(),
                    expired_at: expired_at.clone(),
                    origin: origin.clone(),
                    retry_in_ms: not_before - now,
                }
            })
        })
    }

    /// Records a run's outcome in the state: a failure is a strike (1 s, doubling to 30 s
    /// while failures follow each other); a success starts the probation of the last one.
    fn record(&self, outcome: &Result<FreshToken, AuthError>) {
        let now = now_ms();
        self.store.update_state(&self.path, |state| match outcome {
            Ok(_) => {
                if let Some(strike) = &mut state.strike {
                    strike.not_before_ms = 0;
                    strike.error = None;
                    strike.probation_until_ms =
                        Some(now + next_step_ms(strike.step_ms).max(INITIAL_BACKOFF_MS));
                }
            }
            Err(err) => {
                let step = match &state.strike {
                    Some(p) if p.followed_at(now) => next_step_ms(p.step_ms),
                    _ => INITIAL_BACKOFF_MS,
                };
                state.strike = Some(Strike {
                    step_ms: step,
                    not_before_ms: now + step,
                    probation_until_ms: None,
                    held: None,
                    error: Some(err.to_string()),
                    struck: None,
                });
            }
        });
    }

    async fn obtain(
        &self,
        reason: RefreshReason,
        rejected: Option<&AuthToken>,
    ) -> Result<FreshToken, AuthError> {
        let ahead = reason == RefreshReason::RefreshAhead;
        if let Some(fresh) = self.usable(rejected, ahead) {
            return Ok(fresh);
        }
        if let Some(err) = self.held_back() {
            return Err(err);
        }
        let lock = match self.store.lock(&self.path, self.lock_wait).await {
            Ok(lock) => Some(lock),
            Err(why) => {
                if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        target: STORE_TRACING_TARGET,
                        "shared token store: {why}; running the command without the store"
                    );
                }
                None
            }
        };
        if lock.is_some() {
            // Someone may have refreshed (or failed) while this process waited.
            if let Some(fresh) = self.usable(rejected, ahead) {
                return Ok(fresh);
            }
            if let Some(err) = self.held_back() {
                return Err(err);
            }
        }
        if let Some(rejected) = rejected {
            let (minted, stated_expiry) = match self.store.read(&self.path) {
                Read::Found(entry) if entry.token.same_secret(rejected) => {
                    (entry.obtained_at.map(to_ms), entry.expires_at)
                }
                _ => (None, None),
            };
            let expired_at = stated_expiry
                .filter(|at| *at <= SystemTime::now())
                .map(crate::format_rfc3339);
            if let Some(err) = self.strike_rejected(rejected, minted, expired_at) {
                return Err(err);
            }
        }
        let previous = match self.store.read(&self.path) {
            Read::Found(entry) => Some(entry.token),
            _ => None,
        };
        // A failed run's stderr may trace the stored token or the rejected one: scrubbed
        // before the error goes anywhere (the state file included).
        let result = self.inner.refresh(reason).await.map_err(|e| {
            e.scrubbed(&crate::Scrubber::for_tokens(
                previous.iter().chain(rejected),
            ))
        });
        if let (Some(_), Ok(fresh)) = (&lock, &result)
            && let Err(e) = self.store.write(&self.path, fresh)
        {
            tracing::warn!(target: STORE_TRACING_TARGET, "cannot write the shared token store: {e}");
        }
        self.record(&result);
        drop(lock);
        result
    }
}

#[async_trait]
impl ExternalAuthRefresher for StoreRefresher {
    async fn refresh(&self, reason: RefreshReason) -> Result<FreshToken, AuthError> {
        self.obtain(reason, None).await
    }

    async fn refresh_rejected(&self, rejected: &AuthToken) -> Result<FreshToken, AuthError> {
        self.obtain(RefreshReason::Unauthorized, Some(rejected))
            .await
    }

    fn accepted(&self, token: &AuthToken) {
        let fp = fingerprint(token);
        let now = now_ms();
        self.store.update_state(&self.path, |state| {
            state.proven = Some(fp.clone());
            state.checked = Some(HandoutRecord { fp, at_ms: now });
        });
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
