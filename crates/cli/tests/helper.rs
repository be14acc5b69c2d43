//! `modelauth token --show` as another tool's helper (Codex's `auth.command`, Claude Code's
//! `apiKeyHelper`, kubectl), through the shared store and against the dev gateway: a caller
//! whose gateway rejected its token gets a new one, callers whose token is good cost no
//! runs, and failures and rejections cost one run per backoff step across processes (SPEC
//! §9.1). The caller is this test process, as it is the tool in real use; a caller that is
//! a fresh process each time goes through `sh -c '...; true'`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dev_gateway::{DevGateway, Fault, GatewayConfig, Route};
use test_support::TokenScript;

#[path = "support/docs.rs"]
mod docs;
#[path = "support/proxy_setup.rs"]
mod proxy_setup;
use proxy_setup::Killed;

const BIN: &str = env!("CARGO_BIN_EXE_modelauth");

/// A config whose token command mints from the dev gateway, and a store folder.
struct Setup {
    gw: DevGateway,
    script: TokenScript,
    store: PathBuf,
}

impl Setup {
    async fn new() -> Self {
        let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
        let script = TokenScript::new(&format!(
            "exec {BIN} mint-token --url {} --text",
            gw.token_url()
        ));
        Self::with(gw, script)
    }

    fn with(gw: DevGateway, script: TokenScript) -> Self {
        script.write(
            "config.toml",
            &format!(
                "model_provider = \"dev\"\n[model_providers.dev]\nname = \"Dev\"\nbase_url = \"{}\"\n[model_providers.dev.auth]\ncommand = \"./token.sh\"\n",
                gw.base_url()
            ),
        );
        let store = script.dir().join("store");
        Self { gw, script, store }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.script.dir())
            .env("MODELAUTH_CACHE_DIR", &self.store)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("MODELAUTH_REJECTED")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    /// `modelauth --config config.toml ARGS`, with this test process as the caller.
    fn run(&self, args: &[&str]) -> Output {
        self.command(BIN)
            .args(["--config", "config.toml"])
            .args(args)
            .output()
            .unwrap()
    }

    /// The same from a fresh caller each time (a new `timeout` process is the parent: a
    /// shell wrapper would not be, the test process behind it would).
    fn run_as_new_caller(&self, args: &str) -> Output {
        self.command("sh")
            .arg("-c")
            .arg(format!("exec timeout 60 {BIN} --config config.toml {args}"))
            .output()
            .unwrap()
    }

    fn runs(&self) -> usize {
        self.script.runs()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn token(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert!(!token.is_empty());
    token
}

/// Whether the gateway accepts `token` (a `GET /models` with it).
async fn accepted(gw: &DevGateway, token: &str) -> bool {
    reqwest::Client::new()
        .get(format!("{}/models", gw.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .is_success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_replaced_on_the_callers_next_call_with_one_run() {
    let s = Setup::new().await;
    let first = token(&s.run(&["token", "--show"]));
    assert!(accepted(&s.gw, &first).await);
    assert_eq!(s.runs(), 1);
    // The gateway revokes it; the caller's next call (as after its 401) gets a new one.
    s.gw.rotate();
    assert!(!accepted(&s.gw, &first).await);
    let second = token(&s.run(&["token", "--show"]));
    assert_ne!(first, second);
    assert!(accepted(&s.gw, &second).await);
    assert_eq!(s.runs(), 2, "one run for the revocation");
    // Callers whose token is good cost no runs, however often they ask.
    for _ in 0..100 {
        assert_eq!(token(&s.run(&["token", "--show"])), second);
    }
    for _ in 0..5 {
        assert_eq!(token(&s.run_as_new_caller("token --show")), second);
    }
    assert_eq!(s.runs(), 2);
}

/// Found with the real Claude Code: it runs `apiKeyHelper` as `sh -c '...'`, a new shell on
/// every call, so each call looked like a new caller and a revoked token was handed back
/// until its lifetime ended. The shell is looked through: the caller is its parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_behind_a_shell_wrapper_is_the_process_that_started_the_shell() {
    let s = Setup::new().await;
    // `; exit $?` keeps the shell from replacing itself with modelauth.
    let through_a_shell = || {
        s.command("sh")
            .arg("-c")
            .arg(format!("{BIN} --config config.toml token --show; exit $?"))
            .output()
            .unwrap()
    };
    let first = token(&through_a_shell());
    s.gw.rotate();
    let second = token(&through_a_shell());
    assert_ne!(first, second, "the revoked token was handed back");
    assert!(accepted(&s.gw, &second).await);
    assert_eq!(s.runs(), 2, "one run for the revocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_says_rejected_gets_a_new_token_once_for_every_caller() {
    let s = Setup::new().await;
    let first = token(&s.run(&["token", "--show"]));
    s.gw.rotate();
    // Four calls at once say so (`--rejected`, MODELAUTH_REJECTED=1): one run for all.
    let children: Vec<_> = (0..4)
        .map(|i| {
            let mut c = s.command(BIN);
            c.args(["--config", "config.toml", "token", "--show"]);
            if i % 2 == 0 {
                c.arg("--rejected");
            } else {
                c.env("MODELAUTH_REJECTED", "1");
            }
            c.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let tokens: Vec<String> = children
        .into_iter()
        .map(|c| token(&c.wait_with_output().unwrap()))
        .collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]), "one new token");
    assert_ne!(tokens[0], first);
    assert!(accepted(&s.gw, &tokens[0]).await);
    assert_eq!(s.runs(), 2);
    // A caller the store has never seen, saying rejected about a token minted just now,
    // is taken to mean an older one: it gets the new token, no run.
    assert_eq!(
        token(&s.run_as_new_caller("token --show --rejected")),
        tokens[0]
    );
    assert_eq!(s.runs(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_rejects_every_token_costs_one_run_per_backoff_step() {
    let s = Setup::new().await;
    s.gw.set_fault(Route::Models, Some(Fault::Unauthorized));
    let started = Instant::now();
    let mut calls = 0;
    let mut held_back = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let out = s.run(&["token", "--show"]);
        calls += 1;
        if !out.status.success() {
            let stderr = text(&out.stderr);
            assert!(
                stderr.contains("rejected a freshly minted token")
                    || stderr.contains("the next run is held back"),
                "{stderr}"
            );
            held_back += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Runs at 0 (cold), at once after the first rejection (a rotation), then after 1 s,
    // 2 s, 4 s ... from when each rejected token was minted.
    let steps = 2 + (elapsed + 1.0).log2().floor() as usize;
    assert!(
        s.runs() <= steps,
        "{} runs for {calls} calls in {elapsed:.1} s (at most {steps})",
        s.runs()
    );
    assert!(
        held_back > 0 && calls > s.runs() * 3,
        "{calls} calls, {held_back} failed"
    );
}

#[test]
fn a_failing_command_runs_once_per_backoff_step_across_processes() {
    let script = TokenScript::new("echo 'idp down' >&2\nexit 3");
    let s = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { DevGateway::start(GatewayConfig::default()).await.unwrap() });
    let s = Setup::with(s, script);
    let started = Instant::now();
    let mut calls = 0;
    let mut messages = Vec::new();
    while started.elapsed() < Duration::from_secs(2) {
        let out = s.run_as_new_caller("token --show");
        assert_eq!(out.status.code(), Some(1));
        messages.push(text(&out.stderr));
        calls += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let steps = 1 + (elapsed + 1.0).log2().floor() as usize;
    assert!(
        s.runs() <= steps,
        "{} runs for {calls} calls in {elapsed:.1} s",
        s.runs()
    );
    assert!(calls > s.runs() * 3, "{calls} calls");
    // The callers in between get the same error at once, and say it is held back.
    assert!(
        messages[0].contains("exited with status 3; stderr: idp down"),
        "{}",
        messages[0]
    );
    let held = messages[1]
        .split(" (the next run is held back")
        .next()
        .unwrap()
        .to_owned();
    assert!(
        messages[1].contains("(the next run is held back"),
        "{}",
        messages[1]
    );
    assert!(
        held.contains("exited with status 3; stderr: idp down"),
        "{held}"
    );
}

#[test]
fn two_providers_with_the_same_auth_table_never_share_a_stored_token() {
    let script = TokenScript::new("echo tok-$MODELAUTH_PROVIDER-$N");
    script.write(
        "config.toml",
        "[model_providers.a]\nname = \"A\"\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = { command = \"./token.sh\" }\n\
         [model_providers.b]\nname = \"B\"\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = { command = \"./token.sh\" }\n\
         [model_providers.c]\nname = \"C\"\nbase_url = \"http://127.0.0.1:10/v1\"\nauth = { command = \"./token.sh\" }\n",
    );
    let run = |p: &str| {
        let out = Command::new(BIN)
            .args(["--config", "config.toml", "token", "--show", "-p", p])
            .current_dir(script.dir())
            .env("MODELAUTH_CACHE_DIR", script.dir().join("store"))
            .output()
            .unwrap();
        token(&out)
    };
    assert_eq!(run("a"), "tok-a-1");
    assert_eq!(run("b"), "tok-b-2");
    assert_eq!(run("c"), "tok-c-3");
    assert_eq!(run("a"), "tok-a-1", "from the store");
    assert_eq!(script.runs(), 3);
}

/// A store with no variable naming it: the per-user cache folder under `home`.
fn fallback(script: &TokenScript, home: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--config", "config.toml"])
        .args(args)
        .current_dir(script.dir())
        .env_remove("MODELAUTH_CACHE_DIR")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("XDG_RUNTIME_DIR")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn without_a_runtime_folder_the_store_is_the_per_user_cache_folder() {
    let script = TokenScript::counting();
    script.write(
        "config.toml",
        "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = { command = \"./token.sh\" }\n",
    );
    let home = script.dir().join("home");
    std::fs::create_dir(&home).unwrap();
    for _ in 0..20 {
        let out = fallback(&script, &home, &["token", "--show"]);
        assert_eq!(token(&out), "tok-1");
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
    assert_eq!(script.runs(), 1, "20 calls, one run");
    let out = fallback(&script, &home, &["check"]);
    let stderr = text(&out.stderr).replace(&home.display().to_string(), "[HOME]");
    assert!(
        stderr.contains("shared token store: [HOME]/.cache/modelauth (the per-user cache folder; XDG_RUNTIME_DIR is not set)"),
        "{stderr}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&fallback(&script, &home, &["check", "--json"]).stdout).unwrap();
    assert_eq!(
        json["shared_store"]["dir"],
        home.join(".cache/modelauth").display().to_string()
    );
}

#[test]
fn another_users_runtime_folder_is_passed_over_with_a_warning() {
    if !nix_is_root() {
        eprintln!("skipped: needs root to give a folder to another user");
        return;
    }
    let script = TokenScript::counting();
    script.write(
        "config.toml",
        "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = { command = \"./token.sh\" }\n",
    );
    let home = script.dir().join("home");
    let runtime = script.dir().join("run-user-65534");
    std::fs::create_dir(&home).unwrap();
    std::fs::create_dir(&runtime).unwrap();
    let status = Command::new("chown")
        .args(["65534:65534"])
        .arg(&runtime)
        .status()
        .unwrap();
    assert!(status.success());
    let run = || {
        let mut c = Command::new(BIN);
        c.args(["--config", "config.toml", "token", "--show"])
            .current_dir(script.dir())
            .env_remove("MODELAUTH_CACHE_DIR")
            .env_remove("XDG_CACHE_HOME")
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("HOME", &home);
        c.output().unwrap()
    };
    let out = run();
    assert_eq!(token(&out), "tok-1");
    let stderr = text(&out.stderr).replace(&script.dir().display().to_string(), "[DIR]");
    insta::assert_snapshot!(stderr, @"warning: shared token store: passed over XDG_RUNTIME_DIR: [DIR]/run-user-65534 belongs to another user (uid 65534, this process runs as uid 0)");
    assert_eq!(token(&run()), "tok-1", "the fallback store is shared");
    assert!(
        std::fs::read_dir(&runtime).unwrap().next().is_none(),
        "nothing written in the other user's folder"
    );
    assert_eq!(script.runs(), 1);
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| text(&o.stdout).trim() == "0")
}

/// The real Codex CLI (npm `@openai/codex@0.169.0`), installed by `.ci/run` into
/// `$MODELAUTH_CODEX_DIR` (default `~/.cache/modelauth-ci/codex`). Without it the Codex tests
/// say they were skipped and why; in CI (`CI=true`) a missing Codex is a failure.
fn codex_bin() -> Option<PathBuf> {
    npm_tool(
        "MODELAUTH_CODEX_DIR",
        "codex",
        "codex",
        "@openai/codex@0.169.0",
    )
}

/// A tool the tests run, installed by `.ci/run` into `~/.cache/modelauth-ci/<folder>` (or
/// `$<variable>`) with npm: its binary, if installed. Without it the tests that need it say
/// they were skipped and why; in CI (`CI=true`) a missing tool is a failure.
fn npm_tool(variable: &str, folder: &str, bin: &str, package: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(variable).map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/modelauth-ci").join(folder))
    })?;
    let path = dir.join("node_modules/.bin").join(bin);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").is_err(),
        "{package} is not installed at {} (.ci/run installs it with npm)",
        path.display()
    );
    eprintln!(
        "skipped: {package} is not installed at {} (run .ci/run, or `npm install --prefix {} {package}`)",
        path.display(),
        dir.display()
    );
    None
}

/// The recipe block of the README that holds `needle`, as written.
fn readme_recipe(needle: &str) -> String {
    let readme = std::fs::read_to_string(docs::root().join("README.md")).unwrap();
    docs::fenced_blocks(&readme)
        .into_iter()
        .find(|b| b.text.contains(needle))
        .unwrap_or_else(|| panic!("the README has no block with `{needle}`"))
        .text
}

/// A command that runs a README recipe as written: `modelauth` on `PATH`, and the default
/// config file (`$MODELAUTH_CONFIG`) naming the provider `corp`, which is `s`'s gateway and
/// token script.
fn recipe_command(s: &Setup, program: &Path) -> Command {
    let dir = s.script.dir();
    let bin = dir.join("bin");
    if !bin.exists() {
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(BIN, bin.join("modelauth")).unwrap();
        let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
        std::fs::write(
            dir.join("corp.toml"),
            config
                .replace("\"dev\"", "\"corp\"")
                .replace("providers.dev", "providers.corp"),
        )
        .unwrap();
    }
    let mut command = s.command(program.to_str().unwrap());
    command
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("MODELAUTH_CONFIG", dir.join("corp.toml"));
    command
}

/// The README's Claude Code recipe, as written, with the real Claude Code (npm
/// `@anthropic-ai/claude-code@2.1.332`) against the dev gateway's Messages API: three
/// `claude -p` runs cost one command run. After a revocation, Claude Code's request gets a
/// 401, it reruns `apiKeyHelper` (a re-ask) and gets a new token with one more run, within
/// the same `claude -p`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_claude_code_recipe_with_the_real_claude_code() {
    let Some(claude) = npm_tool(
        "MODELAUTH_CLAUDE_DIR",
        "claude",
        "claude",
        "@anthropic-ai/claude-code@2.1.332",
    ) else {
        return;
    };
    let s = Setup::new().await;
    let home = s.script.dir().join("claude-home");
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    std::fs::write(
        home.join(".claude/settings.json"),
        readme_recipe("apiKeyHelper"),
    )
    .unwrap();
    let root = s.gw.base_url().trim_end_matches("/v1").to_owned();
    let claude_p = || {
        let out = recipe_command(&s, &claude)
            .args(["-p", "say hi"])
            .env("HOME", &home)
            .env("ANTHROPIC_BASE_URL", &root)
            .env_remove("ANTHROPIC_API_KEY")
            .env("DISABLE_TELEMETRY", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "claude -p failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("Hello from the dev gateway"),
            "{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    };
    for _ in 0..3 {
        claude_p();
    }
    assert_eq!(s.runs(), 1, "three claude -p, one run");
    s.gw.rotate();
    claude_p();
    assert_eq!(s.runs(), 2, "one extra run for the revocation");
    assert!(s.gw.counters().unauthorized(Route::Messages) >= 1);
}

/// The README's kubectl recipe, as written, in a kubeconfig whose server is the dev gateway
/// behind a TLS front (`kubectl get --raw /v1/models` sends the ExecCredential's token as a
/// bearer token, over TLS only):
/// three runs cost one command run; after a revocation the run that gets the 401 fails (kubectl
/// does not repeat a request), its plugin is rerun for the next request, and the next
/// kubectl run succeeds, with one extra command run in all. Uses the `kubectl` on `PATH`
/// (1.22 or newer, for `client.authentication.k8s.io/v1`); without one, says it was skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_kubectl_recipe_with_the_real_kubectl() {
    let Ok(kubectl) = which_on_path("kubectl") else {
        eprintln!("skipped: no kubectl on PATH");
        return;
    };
    let s = Setup::new().await;
    // kubectl sends a credential only over TLS.
    let gateway = reqwest::Url::parse(&s.gw.base_url()).unwrap();
    let front = test_support::TlsFront::start(
        format!("127.0.0.1:{}", gateway.port().unwrap())
            .parse()
            .unwrap(),
    )
    .await;
    let ca = s.script.dir().join("ca.pem");
    std::fs::write(&ca, &front.certificate_pem).unwrap();
    let kubeconfig = s.script.dir().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dev\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: dev\n  context:\n    cluster: dev\n    user: corp\ncurrent-context: dev\n{}",
            front.url,
            ca.display(),
            readme_recipe("client.authentication.k8s.io")
        ),
    )
    .unwrap();
    let get = || {
        recipe_command(&s, &kubectl)
            .args([
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "get",
                "--raw",
                "/v1/models",
            ])
            .output()
            .unwrap()
    };
    for _ in 0..3 {
        let out = get();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("dev-small"),
            "{}",
            text(&out.stdout)
        );
    }
    assert_eq!(s.runs(), 1, "three kubectl runs, one command run");
    s.gw.rotate();
    let mut attempts = Vec::new();
    for _ in 0..2 {
        let out = get();
        attempts.push(out.status.code());
        if out.status.success() {
            break;
        }
    }
    assert_eq!(attempts, [Some(1), Some(0)], "kubectl's exit codes");
    assert_eq!(
        s.runs(),
        2,
        "one extra run for the revocation ({attempts:?})"
    );
}

/// The full path of `program` on `PATH`.
fn which_on_path(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or(())
}

/// A `CODEX_HOME` whose provider `dev` has `base_url` and, when `auth_args` is given,
/// `auth.command = modelauth` with those args.
fn codex_home(s: &Setup, base_url: &str, auth_args: Option<&str>) -> PathBuf {
    let home = s
        .script
        .dir()
        .join(format!("codex-home-{}", fastrand_suffix()));
    std::fs::create_dir_all(&home).unwrap();
    let mut config = format!(
        "model = \"dev-small\"\nmodel_provider = \"dev\"\n[model_providers.dev]\nname = \"Dev\"\nbase_url = \"{base_url}\"\nwire_api = \"responses\"\nrequest_max_retries = 0\nstream_max_retries = 0\n"
    );
    if let Some(args) = auth_args {
        config.push_str(&format!(
            "[model_providers.dev.auth]\ncommand = \"{BIN}\"\nargs = {args}\n"
        ));
    }
    std::fs::write(home.join("config.toml"), config).unwrap();
    home
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// `codex exec` with `home`, the shared store of `s`; its output.
fn codex_exec(s: &Setup, codex: &Path, home: &Path) -> std::process::Child {
    s.command(codex.to_str().unwrap())
        .args(["exec", "--skip-git-repo-check", "say hi"])
        .env("CODEX_HOME", home)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn codex_ok(child: std::process::Child) {
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "codex exec failed:\n{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("Hello from the dev gateway"),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn helper_args(s: &Setup) -> String {
    format!(
        "[\"--config\", \"{}\", \"token\", \"--show\"]",
        s.script.dir().join("config.toml").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_codex_with_modelauth_as_its_auth_command_runs_it_once() {
    let Some(codex) = codex_bin() else { return };
    let s = Setup::new().await;
    let home = codex_home(&s, &s.gw.base_url(), Some(&helper_args(&s)));
    for _ in 0..3 {
        codex_ok(codex_exec(&s, &codex, &home));
    }
    let parallel: Vec<_> = (0..4).map(|_| codex_exec(&s, &codex, &home)).collect();
    for child in parallel {
        codex_ok(child);
    }
    assert_eq!(
        s.runs(),
        1,
        "3 sequential and 4 parallel codex exec, one run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_codex_recovers_from_a_revocation_within_one_exec() {
    let Some(codex) = codex_bin() else { return };
    let s = Setup::new().await;
    let home = codex_home(&s, &s.gw.base_url(), Some(&helper_args(&s)));
    codex_ok(codex_exec(&s, &codex, &home));
    assert_eq!(s.runs(), 1);
    // The gateway revokes the stored token: the next codex exec sees a 401, reruns its
    // auth command, and gets a token the gateway accepts, with one more run.
    s.gw.rotate();
    codex_ok(codex_exec(&s, &codex, &home));
    assert_eq!(s.runs(), 2, "one extra run for the revocation");
    assert!(s.gw.counters().unauthorized(Route::Responses) >= 1);
}

/// `modelauth proxy` on the config of `s`, and its base URL.
fn start_proxy(s: &Setup) -> (Killed, String) {
    let mut proxy = s
        .command(BIN)
        .args([
            "--config",
            "config.toml",
            "proxy",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://{}", proxy_setup::listening_address(&mut proxy));
    (Killed(proxy), base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_codex_through_the_proxy_across_a_revocation() {
    let Some(codex) = codex_bin() else { return };
    let s = Setup::new().await;
    let (_proxy, base) = start_proxy(&s);
    // Codex's base URL through the proxy is http://HOST:PORT/<id>, with no /v1.
    let home = codex_home(&s, &format!("{base}/dev"), None);
    codex_ok(codex_exec(&s, &codex, &home));
    s.gw.rotate();
    codex_ok(codex_exec(&s, &codex, &home));
    assert_eq!(s.runs(), 2, "one run, one more after the revocation");
}

/// Codex with `supports_websockets = true` speaks the Responses API over a websocket
/// through the proxy, which puts the credential on the handshake; after a revocation the
/// proxy's handshake gets a 401, and its one retry with a new token succeeds. Codex never
/// falls back to `POST /responses`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_codex_over_a_websocket_through_the_proxy_across_a_revocation() {
    let Some(codex) = codex_bin() else { return };
    let s = Setup::new().await;
    let (_proxy, base) = start_proxy(&s);
    let home = codex_home(&s, &format!("{base}/dev"), None);
    // The provider's table is the file's last one.
    let config = home.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("supports_websockets = true\n");
    std::fs::write(&config, text).unwrap();
    codex_ok(codex_exec(&s, &codex, &home));
    let counters = s.gw.counters();
    assert!(
        counters.requests(Route::ResponsesSocket) >= 1,
        "{counters:?}"
    );
    s.gw.rotate();
    codex_ok(codex_exec(&s, &codex, &home));
    let counters = s.gw.counters();
    assert_eq!(
        counters.requests(Route::Responses),
        0,
        "Codex fell back to POST /responses: {counters:?}"
    );
    assert!(
        counters.unauthorized(Route::ResponsesSocket) >= 1,
        "{counters:?}"
    );
    assert_eq!(s.runs(), 2, "one run, one more after the revocation");
}

/// The same leak through the store: the helper process never handed the old token out
/// itself, but the stored (or rejected) token is scrubbed from a failed run's stderr too,
/// in the error and in the state file that keeps it for the backoff.
#[test]
fn a_failed_runs_stderr_never_carries_the_stored_token() {
    let script = TokenScript::new(
        "if [ $N -eq 1 ]; then echo tok-SECRET-stored-0123456789; exit 0; fi\n\
         echo \"+ curl -H 'Authorization: Bearer tok-SECRET-stored-0123456789'\" >&2\nexit 1",
    );
    script.write(
        "config.toml",
        "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = { command = \"./token.sh\" }\n",
    );
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(["--config", "config.toml"])
            .args(args)
            .current_dir(script.dir())
            .env("MODELAUTH_CACHE_DIR", script.dir().join("store"))
            .env_remove("MODELAUTH_REJECTED")
            .output()
            .unwrap()
    };
    assert_eq!(
        token(&run(&["token", "--show"])),
        "tok-SECRET-stored-0123456789"
    );
    let out = run(&["token", "--show", "--rejected"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("tok-SECRET"), "{stderr}");
    assert!(stderr.contains("Bearer [REDACTED]"), "{stderr}");
    for entry in std::fs::read_dir(script.dir().join("store")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "state") {
            let state = std::fs::read_to_string(&path).unwrap();
            assert!(!state.contains("tok-SECRET"), "{state}");
        }
    }
    assert_eq!(script.runs(), 2);
}

/// A helper that prints a token whose stated expiry is past: the gateway's rejection says
/// so, not only "rejected".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_of_a_token_stated_expired_says_so() {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let script = TokenScript::new(
        r#"echo '{"token":"expired-token-0123456789","expires_at":"2001-09-09T01:46:40Z"}'"#,
    );
    script.write(
        "config.toml",
        &format!(
            "model_provider = \"dev\"\n[model_providers.dev]\nname = \"Dev\"\nbase_url = \"{}\"\nrequest_max_retries = 0\n[model_providers.dev.auth]\ncommand = \"./token.sh\"\nformat = \"json\"\n",
            gw.base_url()
        ),
    );
    let out = Command::new(BIN)
        .args(["--config", "config.toml", "--no-shared-cache", "models"])
        .current_dir(script.dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the token states it expired at 2001-09-09T01:46:40Z: the helper printed an expired token"),
        "{stderr}"
    );
    assert!(!stderr.contains("expired-token-0123456789"), "{stderr}");
}

/// Found in trial: after `AWS_PROFILE=prod`, a call with `AWS_PROFILE=dev` printed the prod
/// token from the store. The identity-selecting variables (and `auth.key_env`) are part of
/// the entry's key.
#[test]
fn a_call_for_another_identity_never_gets_the_stored_token_of_the_first() {
    let script = TokenScript::new("echo tok-${AWS_PROFILE:-none}-${CORP_TENANT:-none}-$N");
    script.write(
        "config.toml",
        "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [model_providers.corp.auth]\ncommand = \"./token.sh\"\nkey_env = [\"CORP_TENANT\"]\n",
    );
    let run = |env: &[(&str, &str)]| {
        let out = Command::new(BIN)
            .args(["--config", "config.toml", "token", "--show"])
            .current_dir(script.dir())
            .env("MODELAUTH_CACHE_DIR", script.dir().join("store"))
            .env_remove("AWS_PROFILE")
            .env_remove("CORP_TENANT")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        token(&out)
    };
    assert_eq!(run(&[("AWS_PROFILE", "prod")]), "tok-prod-none-1");
    assert_eq!(run(&[("AWS_PROFILE", "dev")]), "tok-dev-none-2");
    assert_eq!(
        run(&[("AWS_PROFILE", "prod")]),
        "tok-prod-none-1",
        "from the store"
    );
    assert_eq!(
        run(&[("AWS_PROFILE", "prod"), ("CORP_TENANT", "a")]),
        "tok-prod-a-3"
    );
    assert_eq!(
        run(&[("AWS_PROFILE", "prod"), ("CORP_TENANT", "b")]),
        "tok-prod-b-4"
    );
    assert_eq!(script.runs(), 4);
    // The values never reach the store in clear.
    for entry in std::fs::read_dir(script.dir().join("store")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.contains("prod") && !name.contains("dev"), "{name}");
    }
}

/// SPEC §12: `--codex-config` gives the verdict the real Codex gives. Every fixture of
/// `crates/provider-config/tests/codex/` (whose first line says what modelauth expects) is
/// loaded by the real Codex 0.169 (`codex mcp list`, which loads the whole config and
/// exits 0, or 1 when it refuses it) and by `modelauth --codex-config FILE check`: both
/// accept it, or both refuse it. Where they disagree, the binary is right and the fixture
/// (and the reader) must change.
#[test]
fn the_real_codex_and_modelauth_give_every_codex_fixture_the_same_verdict() {
    let Some(codex) = codex_bin() else { return };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../provider-config/tests/codex");
    let mut checked = 0;
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let fixture = std::fs::read_to_string(&file).unwrap();
        let expect_accepted = fixture.starts_with("# expect: accepted");
        // Codex keeps state beside its config: a fresh home (not under /tmp, where it
        // warns) for each file.
        let home = tempfile::Builder::new()
            .prefix("codex-home")
            .tempdir_in(std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from))
            .unwrap();
        std::fs::write(home.path().join("config.toml"), &fixture).unwrap();
        let by_codex = Command::new(&codex)
            .args(["mcp", "list"])
            .env("CODEX_HOME", home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let by_modelauth = Command::new(BIN)
            .arg("--codex-config")
            .arg(home.path().join("config.toml"))
            .arg("check")
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            by_codex.status.success(),
            expect_accepted,
            "{}: the real Codex {} it:\n{}",
            file.display(),
            if by_codex.status.success() {
                "accepts"
            } else {
                "refuses"
            },
            text(&by_codex.stderr)
        );
        assert_eq!(
            by_modelauth.status.success(),
            expect_accepted,
            "{}: modelauth disagrees with Codex:\n{}",
            file.display(),
            text(&by_modelauth.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 25, "{checked} fixtures");
}

/// `token --write FILE --watch`, the token-file sidecar: the gateway's tokens live 6 s (the
/// next is written at 80%, 1.2 s before the last expires); a reader reads the file every
/// 10 ms for 12 s and never sees a partial token, nor one the
/// gateway refuses (expired), across at least two rotations; the file is 0600; SIGTERM
/// ends it with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_token_file_never_holds_a_partial_or_expired_token() {
    use std::os::unix::fs::PermissionsExt as _;
    let gw =
        DevGateway::start(GatewayConfig::default().with_token_lifetime(Duration::from_secs(6)))
            .await
            .unwrap();
    // The gateway's JSON answer, so the cache knows each token's expiry.
    let script = TokenScript::new(&format!("exec {BIN} mint-token --url {}", gw.token_url()));
    script.write(
        "config.toml",
        &format!(
            "[model_providers.dev]\nname = \"Dev\"\nbase_url = \"{}\"\n[model_providers.dev.auth]\ncommand = \"./token.sh\"\nformat = \"json\"\n",
            gw.base_url()
        ),
    );
    let s = Setup {
        gw,
        store: script.dir().join("store"),
        script,
    };
    let file = s.script.dir().join("token");
    let watcher = s
        .command(BIN)
        .args(["--config", "config.toml", "token", "-p", "dev", "--write"])
        .arg(&file)
        .arg("--watch")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !file.exists() {
        assert!(Instant::now() < deadline, "the file was never written");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut seen = std::collections::BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let text = std::fs::read_to_string(&file).unwrap();
        let token = text.trim_end_matches('\n');
        assert!(
            token.starts_with("dg.") && !token.contains(char::is_whitespace),
            "a partial token: {text:?}"
        );
        seen.insert(token.to_owned());
        assert!(
            accepted(&s.gw, token).await,
            "the file held a refused token"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen.len() >= 3,
        "{} tokens in 12 s of 6-s tokens",
        seen.len()
    );
    // No temporary file is left beside it.
    let beside: Vec<_> = std::fs::read_dir(s.script.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
    let status = Command::new("kill")
        .args(["-TERM", &watcher.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = watcher.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The token written after the reader's last look counts too; a run under way when
    // SIGTERM came wrote nothing.
    seen.insert(
        std::fs::read_to_string(&file)
            .unwrap()
            .trim_end_matches('\n')
            .to_owned(),
    );
    let runs = s.runs();
    assert!(
        runs == seen.len() || runs == seen.len() + 1,
        "one run per token written: {runs} runs, {} tokens",
        seen.len()
    );
}
