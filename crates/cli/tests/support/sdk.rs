//! The tools `.ci/run` installs for the tests under `$MODELAUTH_SDK_DIR` (default
//! `~/.cache/modelauth-ci/sdk`): a Python with the OpenAI SDK, `prometheus_client` and
//! PyYAML, and the `openai` npm package.
#![allow(dead_code)]

use std::path::PathBuf;

/// The SDK folder, if `.ci/run` installed it. Without it the tests that need it say they
/// were skipped and why; in CI (`CI=true`) a missing SDK is a failure.
pub fn sdk_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MODELAUTH_SDK_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/modelauth-ci/sdk"))
        })?;
    let ready =
        dir.join("py/bin/python3").exists() && dir.join("node/node_modules/openai").exists();
    if ready {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").is_err(),
        "the SDKs are not installed under {} (.ci/run installs them)",
        dir.display()
    );
    eprintln!(
        "skipped: the SDKs are not installed under {} (run .ci/run)",
        dir.display()
    );
    None
}

/// The SDK folder's Python.
pub fn python() -> Option<PathBuf> {
    sdk_dir().map(|dir| dir.join("py/bin/python3"))
}
