//! Real OAuth2 servers on loopback (`oauth2-mock-server` and `oidc-provider` from npm, and a
//! GitHub Actions token stand-in), run by node from `oauth2/servers.mjs`.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

/// The script, written beside the npm packages it imports.
const SCRIPT: &str = include_str!("../oauth2/servers.mjs");
/// The client the servers know.
pub const OAUTH2_CLIENT_ID: &str = "modelauth";
/// Its secret (the servers refuse any other with `invalid_client`).
pub const OAUTH2_CLIENT_SECRET: &str = "client-secret-value-7f3a9c";

/// The running servers; stopped when dropped (their stdin closes).
pub struct OAuth2Servers {
    child: Child,
    script: PathBuf,
    stdin: Option<ChildStdin>,
    info: serde_json::Value,
}

impl OAuth2Servers {
    /// Starts the servers, tokens living `ttl_s` seconds. `None` (and a note on stderr) when
    /// the npm packages are not installed, except under `CI`, where that fails the test.
    pub fn start(ttl_s: u64) -> Option<Self> {
        let dir = std::env::var_os("MODELAUTH_OAUTH_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/modelauth-ci/oauth"))
            })?;
        let installed = dir.join("node_modules/oauth2-mock-server").exists()
            && dir.join("node_modules/oidc-provider").exists();
        if !installed {
            assert!(
                std::env::var("CI").is_err(),
                "oauth2-mock-server and oidc-provider are not installed in {} (.ci/run installs them with npm)",
                dir.display()
            );
            eprintln!(
                "skipped: oauth2-mock-server and oidc-provider are not installed in {} (run .ci/run)",
                dir.display()
            );
            return None;
        }
        // Beside node_modules, so that its imports resolve; one file per instance (tests in
        // one process start several at once, and each removes its own when dropped).
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let script = dir.join(format!("servers-{}-{n}.mjs", std::process::id()));
        std::fs::write(&script, SCRIPT).unwrap();
        let mut child = Command::new("node")
            .arg(&script)
            .env("OAUTH_CLIENT_ID", OAUTH2_CLIENT_ID)
            .env("OAUTH_CLIENT_SECRET", OAUTH2_CLIENT_SECRET)
            .env("OAUTH_TOKEN_TTL", ttl_s.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the OAuth2 servers did not start ({e}): {line:?}"));
        let stdin = child.stdin.take();
        Some(Self {
            child,
            script,
            stdin,
            info,
        })
    }

    fn field(&self, name: &str) -> String {
        self.info[name].as_str().unwrap().to_owned()
    }

    /// oauth2-mock-server's issuer (its token endpoint is `/token`).
    pub fn mock_issuer(&self) -> String {
        self.field("mock")
    }

    /// oidc-provider's issuer (token exchange; discovery at `/.well-known/...`).
    pub fn oidc_issuer(&self) -> String {
        self.field("oidc")
    }

    /// `ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN` of the GitHub
    /// Actions stand-in.
    pub fn github_actions(&self) -> (String, String) {
        (self.field("gha_url"), self.field("gha_token"))
    }

    /// The public client oidc-provider knows for the device flow.
    pub fn device_client_id(&self) -> String {
        self.field("device_client_id")
    }

    /// Approves `user_code` (or denies it, with `deny`) as the person would on the
    /// verification page.
    pub fn approve(&self, user_code: &str, deny: bool) {
        let url = format!(
            "{}?user_code={user_code}{}",
            self.field("approve"),
            if deny { "&deny=1" } else { "" }
        );
        assert_eq!(http_get(&url), "ok", "no such user code: {user_code}");
    }

    /// Every token request so far: `grant_type`, `client_auth` (`basic`, `post`, `none`),
    /// the subject's `sub`, `refresh_token`, `scope`, `audience`, `at` (ms).
    pub fn token_requests(&self) -> Vec<serde_json::Value> {
        let body = http_get(&self.field("stats"));
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Makes oauth2-mock-server answer every token request with `fault`: `echo` (400
    /// `invalid_grant` whose description quotes the whole request), `invalid_grant`, or
    /// `none`.
    pub fn set_fault(&self, fault: &str) {
        http_get(&format!("{}?set={fault}", self.field("fault")));
    }
}

impl Drop for OAuth2Servers {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.script);
    }
}

/// A plain HTTP/1.0 GET on loopback; the body.
fn http_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}
