//! What the proxy tests of the binary share: a token script, a config that uses it, the
//! dev gateway behind both, and how the proxy process is stopped.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command};

use dev_gateway::{DevGateway, GatewayConfig};

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

/// The dev gateway, and a temp folder whose config points `corp` at it with a script that
/// prints one of its tokens.
pub async fn gateway_and_config() -> (DevGateway, tempfile::TempDir) {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_script(
        dir.path(),
        &format!("echo {}", gw.mint_token().access_token),
    );
    write_config(dir.path(), &gw.base_url());
    (gw, dir)
}

/// The address a freshly started `modelauth proxy` prints first (`listening on
/// http://ADDR`): `ADDR`.
pub fn listening_address(child: &mut Child) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    line.trim_end()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("the proxy printed {line:?}"))
        .to_owned()
}

/// The path of `relative` in the repository.
pub fn repository_file(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// Sends SIGTERM to `child`.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A child process killed when dropped, should the test fail before it stops it.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The proxy's `GET /_modelauth/stats` at `addr`, as JSON.
pub async fn stats(client: &reqwest::Client, addr: &str) -> serde_json::Value {
    client
        .get(format!("http://{addr}/_modelauth/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
