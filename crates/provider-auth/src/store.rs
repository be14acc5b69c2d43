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

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use provider_config::ModelProviderAuthInfo;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::cache::TRACING_TARGET;
use crate::error::AuthError;
use crate::refresher::{ExternalAuthRefresher, RefreshReason};
use crate::token::{AuthToken, FreshToken};

/// How long past the command's timeout a process waits for another one's refresh.
const LOCK_MARGIN: Duration = Duration::from_secs(5);
/// How often a waiting process retries the lock.
const LOCK_POLL: Duration = Duration::from_millis(10);
/// Largest entry read.
const MAX_ENTRY_BYTES: u64 = 256 * 1024;

/// A per-user folder of shared tokens.
#[derive(Debug, Clone)]
pub struct SharedStore {
    dir: PathBuf,
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

/// What a reader makes of an entry.
#[derive(Debug)]
pub(crate) enum Read {
    Missing,
    Ignored(String),
    Corrupt,
    Found(FreshToken),
}

impl SharedStore {
    /// The store the environment names: `$MODELAUTH_CACHE_DIR`, else
    /// `$XDG_RUNTIME_DIR/modelauth` (per user, tmpfs). An error says why there is none.
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let dir = match (var("MODELAUTH_CACHE_DIR"), var("XDG_RUNTIME_DIR")) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(runtime)) => PathBuf::from(runtime).join("modelauth"),
            (None, None) => {
                return Err("neither MODELAUTH_CACHE_DIR nor XDG_RUNTIME_DIR is set".to_owned());
            }
        };
        Self::at(&dir)
    }

    /// The store in `dir`, created with mode 0700 if missing. The folder must be a real
    /// folder (not a link), owned by this user, with no access for others.
    pub fn at(dir: &Path) -> Result<Self, String> {
        if std::fs::symlink_metadata(dir).is_err() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let meta = std::fs::symlink_metadata(dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        if !meta.file_type().is_dir() {
            return Err(format!("{} is not a folder (or is a link)", dir.display()));
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(format!("{} belongs to another user", dir.display()));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "{} is open to other users (mode {:o}); it must be 0700",
                dir.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry file of an auth config: a hash of the whole table, so the name reveals
    /// nothing of it.
    pub fn entry_path(&self, auth: &ModelProviderAuthInfo) -> PathBuf {
        self.dir.join(format!("{}.json", key(auth)))
    }

    /// Writes `fresh` as the entry of `auth`, replacing any (`modelauth login`).
    pub fn save(&self, auth: &ModelProviderAuthInfo, fresh: &FreshToken) -> std::io::Result<()> {
        self.write(&self.entry_path(auth), fresh)
    }

    /// Deletes the entry of `auth`; false when there was none.
    pub fn forget(&self, auth: &ModelProviderAuthInfo) -> std::io::Result<bool> {
        match std::fs::remove_file(self.entry_path(auth)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads an entry, trusting nothing: no link is followed, the file must be ours, 0600
    /// or narrower, and small.
    pub(crate) fn read(&self, path: &Path) -> Read {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
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
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) if http::HeaderValue::from_str(&value).is_ok() => {
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
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_data());
        drop(file);
        match written.and_then(|()| std::fs::rename(&tmp, path)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Takes the entry's lock (a `flock` on `<entry>.lock`), waiting at most `wait`. A
    /// holder that dies releases it.
    pub(crate) async fn lock(&self, path: &Path, wait: Duration) -> Result<EntryLock, String> {
        let lock_path = path.with_extension("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| format!("cannot open the lock file {}: {e}", lock_path.display()))?;
        let deadline = Instant::now() + wait;
        let mut file = file;
        loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(EntryLock { _lock: lock }),
                Err((back, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "another process held the lock {} for more than {} ms (the command's timeout plus {} s); gave up waiting",
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
}

/// A held entry lock; released when dropped (or when the process dies).
pub(crate) struct EntryLock {
    _lock: nix::fcntl::Flock<File>,
}

fn key(auth: &ModelProviderAuthInfo) -> String {
    let cwd = std::path::absolute(&auth.cwd).unwrap_or_else(|_| auth.cwd.clone());
    let canonical = serde_json::json!({
        "command": auth.command,
        "args": auth.args,
        "timeout_ms": auth.timeout_ms,
        "refresh_interval_ms": auth.refresh_interval_ms,
        "cwd": cwd.to_string_lossy(),
        "env": auth.env,
        "format": format!("{:?}", auth.format),
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
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
/// source and writes the result for the others.
pub struct StoreRefresher {
    inner: Arc<dyn ExternalAuthRefresher>,
    store: SharedStore,
    path: PathBuf,
    refresh_interval: Option<Duration>,
    lock_wait: Duration,
}

impl std::fmt::Debug for StoreRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreRefresher")
            .field("source", &self.inner.describe())
            .field("entry", &self.path)
            .finish_non_exhaustive()
    }
}

impl StoreRefresher {
    /// Shares `inner`'s tokens for `auth` through `store`.
    pub fn new(
        inner: Arc<dyn ExternalAuthRefresher>,
        store: SharedStore,
        auth: &ModelProviderAuthInfo,
    ) -> Self {
        Self {
            path: store.entry_path(auth),
            inner,
            store,
            refresh_interval: auth.refresh_interval(),
            lock_wait: auth.timeout() + LOCK_MARGIN,
        }
    }

    /// The entry's token if it is still within its lifetime (and, for a refresh ahead,
    /// before 80% of it), and is not `rejected`.
    fn usable(&self, rejected: Option<&AuthToken>, ahead: bool) -> Option<FreshToken> {
        let fresh = match self.store.read(&self.path) {
            Read::Found(fresh) => fresh,
            Read::Missing | Read::Corrupt => return None,
            Read::Ignored(why) => {
                tracing::warn!(target: TRACING_TARGET, "shared token store entry ignored: {why}");
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
        let limit = match (crate::cache::lifetime(self.refresh_interval, left), ahead) {
            (None, _) => Duration::MAX,
            (Some(l), true) => l.mul_f64(0.8),
            (Some(l), false) => l,
        };
        (age < limit).then_some(fresh)
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
        let _lock = self
            .store
            .lock(&self.path, self.lock_wait)
            .await
            .map_err(|message| AuthError::Source {
                provider: "".into(),
                message,
            })?;
        // Someone may have refreshed while this process waited.
        if let Some(fresh) = self.usable(rejected, ahead) {
            return Ok(fresh);
        }
        let fresh = self.inner.refresh(reason).await?;
        if let Err(e) = self.store.write(&self.path, &fresh) {
            tracing::warn!(target: TRACING_TARGET, "cannot write the shared token store: {e}");
        }
        Ok(fresh)
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

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
