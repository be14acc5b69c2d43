//! Token scripts for tests: real processes written into a temp dir. Every run appends a
//! line to `runs` beside the script, so tests count runs independently of the cache.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use provider_config::ModelProviderAuthInfo;

/// A temp dir holding `token.sh`.
pub struct Script {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Script {
    /// `body` runs after the run is counted; `$N` is this run's number (1, 2, ...).
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

    /// Command auth running this script, with the given refresh interval.
    pub fn auth(&self, refresh_interval_ms: u64) -> ModelProviderAuthInfo {
        let mut auth = ModelProviderAuthInfo::new(self.path.to_str().unwrap());
        auth.refresh_interval_ms = refresh_interval_ms;
        auth.cwd = self.dir.path().to_path_buf();
        auth
    }

    /// How many times the script ran.
    pub fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("runs"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// A file the script wrote, once it exists.
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

/// Polls `f` until it yields a value or `limit` passes.
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

/// Whether a process is still alive (present and not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X'))
        }
    }
}

/// Whether a process exists at all (a zombie counts).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
