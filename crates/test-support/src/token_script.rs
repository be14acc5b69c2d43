//! Token commands for tests: real processes written into a temp dir.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use provider_config::ModelProviderAuthInfo;

/// `token.sh` in a temp dir of its own. Every run appends a line to `runs` beside the
/// script before anything else, so tests count runs independently of the code under test.
/// In `body`, `$D` is the script's folder and `$N` this run's number (1, 2, ...).
pub struct TokenScript {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl TokenScript {
    /// A script that runs `body` after counting the run.
    pub fn new(body: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.sh");
        let script = format!(
            "#!/bin/sh\nD=\"$(dirname \"$0\")\"\necho run >> \"$D/runs\"\nN=$(wc -l < \"$D/runs\" | tr -d ' ')\n{body}\n"
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir, path }
    }

    /// A script printing `tok-1`, `tok-2`, ... (one token per run).
    pub fn counting() -> Self {
        Self::new("echo tok-$N")
    }

    /// A script printing, on its N-th run, the file `token-N` the test wrote with
    /// [`TokenScript::put_token`].
    pub fn from_files() -> Self {
        Self::new("cat \"$D/token-$N\"")
    }

    /// The script's folder (also its `cwd` in [`TokenScript::auth`]).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The script's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Command auth running this script from its folder, every other field at its default.
    pub fn auth(&self) -> ModelProviderAuthInfo {
        let mut auth = ModelProviderAuthInfo::new(self.path.to_str().unwrap());
        auth.cwd = self.dir.path().to_path_buf();
        auth
    }

    /// Like [`TokenScript::auth`], with `auth.refresh_interval_ms` set.
    pub fn auth_with_refresh(&self, refresh_interval_ms: u64) -> ModelProviderAuthInfo {
        let mut auth = self.auth();
        auth.refresh_interval_ms = Some(refresh_interval_ms);
        auth
    }

    /// How many times the script ran.
    pub fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("runs"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Writes a file beside the script.
    pub fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.dir.path().join(name), contents).unwrap();
    }

    /// Sets what the `n`-th run of a [`TokenScript::from_files`] script prints.
    pub fn put_token(&self, n: usize, token: &str) {
        self.write(&format!("token-{n}"), token);
    }

    /// A file the script writes, once it exists and ends with a newline (at most 10 s).
    pub fn wait_for_file(&self, name: &str) -> String {
        let path = self.dir.path().join(name);
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|s| s.ends_with('\n'))
        })
        .unwrap_or_else(|| panic!("{name} never appeared"))
    }
}

/// Polls `f` every 10 ms until it yields a value or `limit` passes.
pub fn wait_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
