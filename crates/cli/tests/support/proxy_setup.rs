//! What the proxy tests of the binary share: a token script and a config that uses it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// `dir/token.sh`: `body`, after a line that appends the script's pid to `dir/pids`.
pub fn write_script(dir: &Path, body: &str) {
    let path = dir.join("token.sh");
    std::fs::write(&path, format!("#!/bin/sh\necho $$ >> pids\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `dir/config.toml`: provider `corp` at `base_url`, its token from `./token.sh`.
pub fn write_config(dir: &Path, base_url: &str) {
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"{base_url}\"\nauth = {{ command = \"./token.sh\" }}\n"
        ),
    )
    .unwrap();
}
