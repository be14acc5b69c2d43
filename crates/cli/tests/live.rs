//! `check --live`, `--codex-config`, `completions`, logging and `bench --duration`, run as
//! a user would: real token scripts, the dev gateway on loopback, a Codex config as Codex
//! users have it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use dev_gateway::{DevGateway, GatewayConfig};
use test_support::{TokenScript, leaked_forms};

const BIN: &str = env!("CARGO_BIN_EXE_modelauth");
const SECRET: &str = "live-SECRET-0123456789abcdef";

fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env_remove("MODELAUTH_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("CODEX_HOME")
        .env_remove("OPENAI_API_KEY")
        .env("XDG_CONFIG_HOME", dir.join("no-xdg"))
        .env("MODELAUTH_CACHE_DIR", dir.join("store"))
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit code, stdout and stderr, with the folder, timings and lifetimes made stable.
fn transcript(out: &Output, dir: &Path) -> String {
    let shown = format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr)
    );
    let dir = dir.display().to_string();
    let canonical = std::fs::canonicalize(&dir).map_or(dir.clone(), |p| p.display().to_string());
    let shown = shown.replace(&canonical, "[DIR]").replace(&dir, "[DIR]");
    stable_numbers(&shown)
}

/// `in 12 ms` -> `in [N] ms`, `used for 4m 59s` -> `used for [T]`, `:12345` -> `:[PORT]`.
fn stable_numbers(text: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let mut line = line.to_owned();
        for (marker, end) in [(" in ", " ms"), ("used for ", ";"), ("(written ", " ago")] {
            if let Some(start) = line.find(marker) {
                let from = start + marker.len();
                if let Some(len) = line[from..].find(end) {
                    let label = if end == " ms" { "[N]" } else { "[T]" };
                    if line[from..from + len].contains('[') {
                        continue;
                    }
                    line.replace_range(from..from + len, label);
                }
            }
        }
        while let Some(at) = line.find("127.0.0.1:") {
            let from = at + "127.0.0.1:".len();
            let digits = line[from..]
                .chars()
                .take_while(char::is_ascii_digit)
                .count();
            line.replace_range(at..from + digits, "LOOPBACK:[PORT]");
        }
        out.push_str(&line);
    }
    out
}

fn assert_no_secret(out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        let shown = text(stream);
        assert!(
            leaked_forms(&shown, SECRET).is_empty(),
            "the token leaked: {shown}"
        );
    }
}

/// The dev gateway, and a config (`config.toml` beside the script) whose provider `dev`
/// mints its tokens from it.
async fn dev_gateway() -> (DevGateway, TokenScript) {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let script = TokenScript::new(&format!(
        "exec {BIN} mint-token --url {} --text",
        gw.token_url()
    ));
    script.write(
        "config.toml",
        &format!(
            "[model_providers.dev]\nname = \"Dev\"\nbase_url = \"{}\"\nauth = {{ command = \"./token.sh\" }}\n",
            gw.base_url()
        ),
    );
    (gw, script)
}

/// `modelauth ARGS` in `dir`, on a blocking thread (the test's runtime serves the gateway).
async fn run_off_runtime(dir: &Path, args: &[&str]) -> Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_in(&dir, &args, &[])
    })
    .await
    .unwrap()
}

/// Two providers: `corp`'s helper prints an OAuth2 response with a helper header, `down`'s
/// exits 3.
fn two_helpers() -> (TokenScript, TokenScript) {
    let good = TokenScript::new(&format!(
        "echo '{{\"access_token\": \"{SECRET}\", \"expires_in\": 3600, \"token_type\": \"Bearer\", \"headers\": {{\"x-tenant\": \"t-1\"}}}}'"
    ));
    let bad = TokenScript::new("echo 'session expired; run sso login' >&2\nexit 3");
    good.write(
        "config.toml",
        &format!(
            "model_provider = \"corp\"\n\
             [model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw.example.com/v1\"\n\
             [model_providers.corp.auth]\ncommand = \"./token.sh\"\nformat = \"json\"\n\
             [model_providers.down]\nname = \"Down\"\nbase_url = \"https://gw.example.com/v1\"\n\
             [model_providers.down.auth]\ncommand = \"{}\"\n",
            bad.path().display()
        ),
    );
    (good, bad)
}

#[test]
fn check_live_runs_each_command_once_and_never_prints_the_token() {
    let (good, bad) = two_helpers();
    let out = run_in(
        good.dir(),
        &["--config", "config.toml", "check", "--live"],
        &[],
    );
    assert_no_secret(&out);
    assert_eq!(good.runs(), 1);
    assert_eq!(bad.runs(), 1);
    let shown = transcript(&out, good.dir()).replace(&bad.path().display().to_string(), "[BAD]");
    insta::assert_snapshot!(shown);
}

#[test]
fn check_live_json_is_one_object_without_the_token() {
    let (good, _bad) = two_helpers();
    let out = run_in(
        good.dir(),
        &[
            "--config",
            "config.toml",
            "check",
            "--live",
            "-p",
            "corp",
            "--json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_no_secret(&out);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["config"], "config.toml");
    assert_eq!(report["default_provider"], "corp");
    assert_eq!(report["providers"].as_array().unwrap().len(), 1);
    let live = &report["live"][0];
    assert_eq!(live["provider"], "corp");
    assert_eq!(live["ok"], true);
    assert_eq!(live["output"], "json (OAuth2 token response)");
    assert_eq!(live["states_expiry"], true);
    assert_eq!(live["token_chars"], SECRET.len());
    assert_eq!(live["helper_headers"], serde_json::json!(["x-tenant"]));
    assert_eq!(live["command_runs"], 1);
    assert_eq!(good.runs(), 1);
}

#[tokio::test]
async fn check_live_models_uses_the_same_token_for_get_models() {
    let (_gw, script) = dev_gateway().await;
    let out = run_off_runtime(
        script.dir(),
        &[
            "--config",
            "config.toml",
            "check",
            "--live",
            "--models",
            "-p",
            "dev",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let models = GatewayConfig::default().models.len();
    assert!(
        stdout.contains(&format!("dev: GET /models: {models} models in ")),
        "{stdout}"
    );
    assert_eq!(script.runs(), 1, "one run serves the check and the listing");
}

#[test]
fn check_warns_about_a_command_off_path_and_a_missing_cwd() {
    let script = TokenScript::counting();
    script.write(
        "config.toml",
        "[model_providers.typo]\nname = \"Typo\"\nbase_url = \"https://gw.example.com/v1\"\nauth = { command = \"gcloudd-not-installed\" }\n\
         [model_providers.moved]\nname = \"Moved\"\nbase_url = \"https://gw.example.com/v1\"\nauth = { command = \"./token.sh\", cwd = \"gone\" }\n",
    );
    let out = run_in(script.dir(), &["--config", "config.toml", "check"], &[]);
    insta::assert_snapshot!(transcript(&out, script.dir()));
    assert_eq!(script.runs(), 0, "check without --live runs nothing");
}

#[test]
fn check_says_when_the_default_config_file_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["check"], &[]);
    insta::assert_snapshot!(transcript(&out, dir.path()));
}

/// A Codex config as Codex users have it, with a command-backed provider.
fn codex_home(token_body: &str) -> TokenScript {
    let script = TokenScript::new(token_body);
    script.write(
        "config.toml",
        "model = \"gpt-5-codex\"\nmodel_provider = \"corp\"\napproval_policy = \"on-request\"\n\n\
         [profiles.deep]\nmodel = \"gpt-5\"\nmodel_reasoning_effort = \"high\"\n\n\
         [mcp_servers.docs]\ncommand = \"npx\"\nargs = [\"-y\", \"docs-mcp\"]\n\n\
         [model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw.example.com/v1\"\nsupports_websockets = false\n\n\
         [model_providers.corp.auth]\ncommand = \"./token.sh\"\ntimeout_ms = 900000\nrefresh_interval_ms = 0\n",
    );
    script
}

#[test]
fn codex_config_check_live_debugs_codex_own_auth_command() {
    let home = codex_home(&format!("echo {SECRET}"));
    let dir = home.dir().display().to_string();
    let store = format!("{dir}/store");
    // From CODEX_HOME, with the flag and no value, after the subcommand.
    let out = run_in(
        Path::new("/"),
        &["check", "--live", "--codex-config"],
        &[("CODEX_HOME", &dir), ("MODELAUTH_CACHE_DIR", &store)],
    );
    assert_no_secret(&out);
    assert_eq!(home.runs(), 1);
    insta::assert_snapshot!(transcript(&out, home.dir()));
    // Before the subcommand, with no value, the flag still means Codex's default file.
    let out = run_in(
        Path::new("/"),
        &["--codex-config", "check"],
        &[("CODEX_HOME", &dir), ("MODELAUTH_CACHE_DIR", &store)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("corp "));
    // An explicit path reads the same file.
    let out = run_in(
        Path::new("/"),
        &["check", "--codex-config", &format!("{dir}/config.toml")],
        &[("MODELAUTH_CACHE_DIR", &store)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("corp "));
}

#[test]
fn codex_config_refused_as_codex_refuses_it() {
    let script = TokenScript::counting();
    script.write(
        "config.toml",
        "[model_providers.openai]\nname = \"Mine\"\nbase_url = \"https://gw.example.com/v1\"\n",
    );
    let out = run_in(
        script.dir(),
        &["--codex-config", "config.toml", "check"],
        &[],
    );
    insta::assert_snapshot!(transcript(&out, script.dir()));
    let missing = run_in(
        script.dir(),
        &["check", "--codex-config"],
        &[("CODEX_HOME", "/nonexistent-codex-home")],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("/nonexistent-codex-home/config.toml"),
        "{}",
        text(&missing.stderr)
    );
    let both = run_in(
        script.dir(),
        &[
            "--config",
            "config.toml",
            "--codex-config",
            "config.toml",
            "check",
        ],
        &[],
    );
    assert_eq!(both.status.code(), Some(2));
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = run_in(Path::new("/"), &["completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["modelauth", "check", "proxy", "codex-config"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = run_in(Path::new("/"), &["completions", "tcsh"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_subcommand_help_has_examples() {
    for sub in [
        "check",
        "token",
        "models",
        "respond",
        "realtime",
        "bench",
        "login",
        "proxy",
        "completions",
    ] {
        let out = run_in(Path::new("/"), &[sub, "--help"], &[]);
        assert_eq!(out.status.code(), Some(0));
        let help = text(&out.stdout);
        assert!(
            help.contains("Examples:\n  modelauth ") || help.contains("Examples:\n  curl "),
            "{sub} --help has no examples:\n{help}"
        );
    }
}

#[test]
fn rust_log_selects_what_is_logged_and_never_the_token() {
    let script = TokenScript::new(&format!("echo {SECRET}"));
    script.write(
        "config.toml",
        "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw.example.com/v1\"\nauth = { command = \"./token.sh\" }\n",
    );
    let args = [
        "--config",
        "config.toml",
        "--no-shared-cache",
        "token",
        "-p",
        "corp",
    ];
    let quiet = run_in(script.dir(), &args, &[]);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(quiet.stderr.is_empty(), "{}", text(&quiet.stderr));

    let logged = run_in(script.dir(), &args, &[("RUST_LOG", "provider_auth=debug")]);
    assert_eq!(logged.status.code(), Some(0));
    let stderr = text(&logged.stderr);
    assert!(stderr.contains("provider_auth"), "{stderr}");
    assert!(stderr.contains("token refreshed"), "{stderr}");
    assert_no_secret(&logged);

    let bad = run_in(script.dir(), &args, &[("RUST_LOG", "provider_auth=loud")]);
    assert_eq!(bad.status.code(), Some(0));
    assert!(
        text(&bad.stderr).starts_with("warning: RUST_LOG is not a valid filter"),
        "{}",
        text(&bad.stderr)
    );

    let very = run_in(script.dir(), &[&args[..], &["-vv"]].concat(), &[]);
    assert_eq!(very.status.code(), Some(0));
    assert!(text(&very.stderr).contains("token refreshed"));
    assert_no_secret(&very);
}

#[tokio::test]
async fn bench_runs_for_a_duration() {
    let (_gw, script) = dev_gateway().await;
    let out = run_off_runtime(
        script.dir(),
        &[
            "--config",
            "config.toml",
            "--no-shared-cache",
            "bench",
            "-p",
            "dev",
            "--duration",
            "0.5",
            "--concurrency",
            "4",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["requests"].as_u64().unwrap() > 0);
    assert_eq!(report["failed"], 0);
    let elapsed = report["elapsed_ms"].as_f64().unwrap();
    assert!((500.0..5_000.0).contains(&elapsed), "{elapsed}");
    assert_eq!(script.runs(), 1);
    // Not on a terminal: no progress line.
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn bench_duration_errors() {
    let script = TokenScript::counting();
    script.write(
        "config.toml",
        "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = { command = \"./token.sh\" }\n",
    );
    let mut shown = String::new();
    for args in [
        &["--duration", "0"][..],
        &["--duration", "-1"],
        &["--duration", "1", "--requests", "5"],
    ] {
        let all = [
            &["--config", "config.toml", "bench", "-p", "corp"][..],
            args,
        ]
        .concat();
        let out = run_in(script.dir(), &all, &[]);
        shown.push_str(&format!("$ bench {}\n", args.join(" ")));
        shown.push_str(&transcript(&out, script.dir()));
    }
    insta::assert_snapshot!(shown);
    assert_eq!(script.runs(), 0);
}

#[test]
fn the_top_level_help_is_pinned() {
    let out = run_in(Path::new("/"), &["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!(text(&out.stdout));
}

/// A helper that prints a token whose stated expiry is past, or a JWT not valid yet: the
/// gateway would reject it, and `check --live` fails saying why.
#[test]
fn check_live_fails_on_a_token_expired_already_or_not_valid_yet() {
    const HEADER: &str = "eyJhbGciOiJub25lIn0";
    // {"exp":1000000000} (2001) and {"nbf":4000000000} (2096).
    for (name, payload) in [
        ("expired", "eyJleHAiOjEwMDAwMDAwMDB9"),
        ("not_yet", "eyJuYmYiOjQwMDAwMDAwMDB9"),
    ] {
        let script = TokenScript::new(&format!("echo {HEADER}.{payload}.c2ln"));
        script.write(
            "config.toml",
            "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw.example.com/v1\"\nauth = { command = \"./token.sh\" }\n",
        );
        let out = run_in(
            script.dir(),
            &["--config", "config.toml", "check", "--live"],
            &[],
        );
        assert_eq!(out.status.code(), Some(1));
        let shown = transcript(&out, script.dir());
        let shown = shown
            .split_inclusive('\n')
            .map(|l| match l.find(" ago)").or_else(|| l.find(" from now)")) {
                // The distance to a fixed date changes every second.
                Some(end) => {
                    let start = l[..end].rfind(", ").max(l[..end].rfind(" (")).unwrap_or(0);
                    format!("{}[T]{}", &l[..start + 2], &l[end..])
                }
                None => l.to_owned(),
            })
            .collect::<String>();
        insta::assert_snapshot!(format!("check_live_{name}"), shown);
    }
}

/// `auth.oauth2` as a user meets it: three providers minting at real OAuth2 servers
/// (oauth2-mock-server, oidc-provider by discovery, a GitHub Actions stand-in), one with a
/// wrong secret. `check --live` says the grant, the endpoint, the subject source and its
/// age, and the lifetime; never a secret.
#[test]
fn check_live_reports_oauth2_grants_and_names_the_endpoint_error() {
    let Some(servers) = test_support::OAuth2Servers::start(3600) else {
        return;
    };
    let script = TokenScript::counting();
    let subject = script.dir().join("sa-token");
    let sa_token =
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YWk6YWdlbnQifQ.c2ln";
    std::fs::write(&subject, sa_token).unwrap();
    script.write(
        "config.toml",
        &format!(
            "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw.example.com/v1\"\n\
             [model_providers.corp.auth.oauth2]\ntoken_url = \"{mock}/token\"\ngrant = \"client_credentials\"\n\
             client_id = \"{id}\"\nclient_secret_env = \"CORP_CLIENT_SECRET\"\nscope = \"models.read\"\n\n\
             [model_providers.ci]\nname = \"CI\"\nbase_url = \"https://gw.example.com/v1\"\n\
             [model_providers.ci.auth.oauth2]\ntoken_url = \"{mock}/token\"\ngrant = \"jwt_bearer\"\n\
             subject = \"github_actions\"\nsubject_audience = \"api://gateway\"\n\n\
             [model_providers.k8s]\nname = \"K8s\"\nbase_url = \"https://gw.example.com/v1\"\n\
             [model_providers.k8s.auth.oauth2]\nissuer = \"{oidc}\"\ngrant = \"token_exchange\"\n\
             client_id = \"{id}\"\nclient_secret_file = \"client-secret\"\nsubject_token_file = \"sa-token\"\naudience = \"gateway\"\n\n\
             [model_providers.wrong]\nname = \"Wrong\"\nbase_url = \"https://gw.example.com/v1\"\n\
             [model_providers.wrong.auth.oauth2]\ntoken_url = \"{mock}/token\"\ngrant = \"client_credentials\"\n\
             client_id = \"{id}\"\nclient_secret_env = \"WRONG_CLIENT_SECRET\"\n",
            mock = servers.mock_issuer(),
            oidc = servers.oidc_issuer(),
            id = test_support::OAUTH2_CLIENT_ID,
        ),
    );
    script.write("client-secret", test_support::OAUTH2_CLIENT_SECRET);
    let (gha_url, gha_token) = servers.github_actions();
    let out = run_in(
        script.dir(),
        &["--config", "config.toml", "check", "--live"],
        &[
            ("CORP_CLIENT_SECRET", test_support::OAUTH2_CLIENT_SECRET),
            ("WRONG_CLIENT_SECRET", "wrong-secret-value-8812"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &gha_url),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &gha_token),
        ],
    );
    for stream in [&out.stdout, &out.stderr] {
        let shown = text(stream);
        for secret in [
            test_support::OAUTH2_CLIENT_SECRET,
            "wrong-secret-value-8812",
            sa_token,
            gha_token.as_str(),
        ] {
            assert!(leaked_forms(&shown, secret).is_empty(), "{shown}");
        }
    }
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let requests = servers.token_requests();
    assert_eq!(requests.len(), 4, "one exchange per provider: {requests:?}");
    insta::assert_snapshot!(transcript(&out, script.dir()));
}

/// Codex has no `oauth2` auth: its reader refuses the table as Codex does (a missing
/// `command`).
#[test]
fn codex_config_refuses_an_oauth2_table() {
    let script = TokenScript::counting();
    script.write(
        "config.toml",
        "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw.example.com/v1\"\n\
         [model_providers.corp.auth.oauth2]\ntoken_url = \"https://idp.example.com/token\"\ngrant = \"client_credentials\"\nclient_id = \"x\"\n",
    );
    let out = run_in(
        script.dir(),
        &["--codex-config", "config.toml", "check"],
        &[],
    );
    insta::assert_snapshot!(transcript(&out, script.dir()));
}

/// The device flow against oidc-provider: `login` prints where to go and the code, the
/// person approves (the test does what the page does), the token and the refresh token land
/// in the store. A later process refreshes with the kept refresh token, which oidc-provider
/// rotates; a denied login says `access_denied`.
#[test]
fn login_runs_the_device_flow_and_the_refresh_token_rotates() {
    use std::io::{BufRead as _, BufReader};
    let Some(servers) = test_support::OAuth2Servers::start(3600) else {
        return;
    };
    let script = TokenScript::counting();
    let provider = |id: &str| {
        format!(
            "[model_providers.{id}]\nname = \"{id}\"\nbase_url = \"https://gw.example.com/v1\"\n\
             [model_providers.{id}.auth.oauth2]\nissuer = \"{}\"\ngrant = \"device_code\"\n\
             client_id = \"{}\"\nscope = \"openid offline_access\"\n",
            servers.oidc_issuer(),
            servers.device_client_id()
        )
    };
    script.write(
        "config.toml",
        &format!("{}\n{}", provider("corp"), provider("other")),
    );
    let dir = script.dir().to_path_buf();
    let spawn_login = |id: &str| {
        Command::new(BIN)
            .args(["--config", "config.toml", "login", "-p", id])
            .current_dir(&dir)
            .env_remove("RUST_LOG")
            .env("XDG_CONFIG_HOME", dir.join("no-xdg"))
            .env("MODELAUTH_CACHE_DIR", dir.join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Reads the prompt up to the code; the rest of stderr stays in the pipe.
    let prompt_of = |child: &mut std::process::Child| {
        let mut reader = BufReader::new(child.stderr.take().unwrap());
        let mut prompt = String::new();
        while !prompt.contains("Waiting for the approval") {
            assert!(reader.read_line(&mut prompt).unwrap() > 0, "{prompt}");
        }
        let code = prompt
            .split("enter the code ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap()
            .to_owned();
        (prompt, code, reader)
    };
    let mut approved = spawn_login("corp");
    let mut denied = spawn_login("other");
    let (prompt, code, mut rest) = prompt_of(&mut approved);
    let (_, other_code, mut other_rest) = prompt_of(&mut denied);
    servers.approve(&code, false);
    servers.approve(&other_code, true);

    let status = approved.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut approved.stdout.take().unwrap(), &mut stdout).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut rest, &mut stderr).unwrap();
    let shown = format!(
        "exit {}\n--- stdout\n{stdout}--- stderr\n{}{stderr}",
        status.code().unwrap_or(-1),
        prompt.replace(&code, "[CODE]")
    );
    // `expires at 2026-12-05T10:00:00Z (in 59m 59s)` -> `expires at [TIME] (in [T])`.
    let shown = match shown.split_once("expires at ") {
        Some((before, after)) => match after.split_once(')') {
            Some((_, rest)) => format!("{before}expires at [TIME] (in [T]){rest}"),
            None => shown.clone(),
        },
        None => shown.clone(),
    };
    insta::assert_snapshot!(stable_numbers(&shown));

    let denied_status = denied.wait().unwrap();
    let mut denied_err = String::new();
    std::io::Read::read_to_string(&mut other_rest, &mut denied_err).unwrap();
    assert_eq!(denied_status.code(), Some(1), "{denied_err}");
    assert!(
        denied_err.contains("`access_denied` (the person or the policy denied it)"),
        "{denied_err}"
    );

    // The store holds the token and, beside it, the refresh token (0600).
    let refresh_files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("store"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "refresh"))
        .collect();
    assert_eq!(refresh_files.len(), 1, "{refresh_files:?}");
    let first_refresh = std::fs::read_to_string(&refresh_files[0]).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&refresh_files[0])
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Another process uses the stored token: no exchange.
    let before = servers.token_requests().len();
    let out = run_in(
        &dir,
        &["--config", "config.toml", "token", "-p", "corp"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(servers.token_requests().len(), before);
    // Without the stored token, the next process refreshes; the refresh token rotates.
    for entry in std::fs::read_dir(dir.join("store")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let out = run_in(
        &dir,
        &["--config", "config.toml", "token", "-p", "corp"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("token from oauth2 `device_code`"),
        "{}",
        text(&out.stdout)
    );
    let second_refresh = std::fs::read_to_string(&refresh_files[0]).unwrap();
    assert_ne!(second_refresh, first_refresh, "rotated");
    let refreshes: Vec<_> = servers
        .token_requests()
        .into_iter()
        .filter(|r| r["grant_type"] == "refresh_token")
        .collect();
    assert_eq!(refreshes.len(), 1, "{refreshes:?}");
    assert_eq!(refreshes[0]["refresh_token"], first_refresh.as_str());
    assert_eq!(refreshes[0]["outcome"], "success");
    for stream in [&out.stdout, &out.stderr] {
        for secret in [&first_refresh, &second_refresh] {
            assert!(leaked_forms(&text(stream), secret).is_empty());
        }
    }
}

/// A token endpoint for the refresh-token grant that the test steers: it accepts only the
/// refresh token it issued last and rotates it on every exchange, or (while `hang` is set)
/// reads the request, reports it, and never answers.
struct RotatingEndpoint {
    addr: std::net::SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<Rotation>>,
    held: std::sync::mpsc::Receiver<()>,
}

struct Rotation {
    valid: String,
    issued: u32,
    hang: bool,
    /// The refresh token of every request, in order.
    presented: Vec<String>,
}

impl RotatingEndpoint {
    fn start(seed: &str) -> Self {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = std::sync::Arc::new(std::sync::Mutex::new(Rotation {
            valid: seed.to_owned(),
            issued: 0,
            hang: false,
            presented: Vec::new(),
        }));
        let (held_tx, held) = std::sync::mpsc::channel();
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let state = shared.clone();
                let held_tx = held_tx.clone();
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    let body = loop {
                        let n = stream.read(&mut buf).unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request).into_owned();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let length = head
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if body.len() >= length {
                                break body.to_owned();
                            }
                        }
                    };
                    let presented = body
                        .split('&')
                        .find_map(|pair| pair.strip_prefix("refresh_token="))
                        .unwrap_or_default()
                        .to_owned();
                    let answer = {
                        let mut state = state.lock().unwrap();
                        state.presented.push(presented.clone());
                        if state.hang {
                            None
                        } else if presented == state.valid {
                            state.issued += 1;
                            let n = state.issued;
                            state.valid = format!("refresh-{n}-Qv7mZx3LpT9wRk2N");
                            Some(format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n\
                                 {{\"access_token\":\"access-{n}-Hs8dJq4WbV6yEc1U\",\"token_type\":\"Bearer\",\
                                 \"expires_in\":3600,\"refresh_token\":\"{}\"}}",
                                state.valid
                            ))
                        } else {
                            Some(
                                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\r\n\
                                 {\"error\":\"invalid_grant\"}"
                                    .to_owned(),
                            )
                        }
                    };
                    match answer {
                        Some(answer) => {
                            let _ = stream.write_all(answer.as_bytes());
                        }
                        None => {
                            let _ = held_tx.send(());
                            // Held open until the client goes away.
                            while stream.read(&mut buf).is_ok_and(|n| n > 0) {}
                        }
                    }
                });
            }
        });
        Self { addr, state, held }
    }
}

/// SPEC §14: a process killed in the middle of a refresh leaves the store's refresh token
/// usable. The endpoint has the request (it holds it), the process is killed with SIGKILL;
/// the stored refresh token is the one from before, its lock is free, and the next process
/// refreshes with it and keeps the rotated one.
#[test]
fn a_process_killed_mid_refresh_leaves_a_usable_refresh_token() {
    let endpoint = RotatingEndpoint::start("refresh-0-SeedKq5Wn8Rb");
    let script = TokenScript::counting();
    script.write("seed", "refresh-0-SeedKq5Wn8Rb\n");
    script.write(
        "config.toml",
        &format!(
            "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\n\
             base_url = \"https://gw.example.com/v1\"\n\
             [model_providers.corp.auth.oauth2]\ntoken_url = \"http://{}/token\"\n\
             grant = \"refresh_token\"\nclient_id = \"modelauth\"\nrefresh_token_file = \"seed\"\n",
            endpoint.addr
        ),
    );
    let dir = script.dir().to_path_buf();
    let stored = || -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = std::fs::read_dir(dir.join("store"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "refresh"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                (p.file_name().unwrap().to_string_lossy().into_owned(), text)
            })
            .collect();
        files.sort();
        files
    };
    let token = ["--config", "config.toml", "token", "-p", "corp"];
    let rejected = [
        "--config",
        "config.toml",
        "token",
        "-p",
        "corp",
        "--rejected",
    ];

    let first = run_in(&dir, &token, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let before = stored();
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].1, "refresh-1-Qv7mZx3LpT9wRk2N");

    // The next refresh is held by the endpoint; the process dies while it waits.
    endpoint.state.lock().unwrap().hang = true;
    let mut child = Command::new(BIN)
        .args(rejected)
        .current_dir(&dir)
        .env_remove("RUST_LOG")
        .env("XDG_CONFIG_HOME", dir.join("no-xdg"))
        .env("MODELAUTH_CACHE_DIR", dir.join("store"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    endpoint
        .held
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the refresh reached the endpoint");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(stored(), before, "the stored refresh token is untouched");
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The next process refreshes with it (the lock the dead one held is free).
    endpoint.state.lock().unwrap().hang = false;
    let next = run_in(&dir, &rejected, &[]);
    assert_eq!(next.status.code(), Some(0), "{}", text(&next.stderr));
    let after = stored();
    assert_eq!(after[0].0, before[0].0);
    assert_eq!(after[0].1, "refresh-2-Qv7mZx3LpT9wRk2N");
    let presented = endpoint.state.lock().unwrap().presented.clone();
    assert_eq!(
        presented,
        [
            "refresh-0-SeedKq5Wn8Rb",
            "refresh-1-Qv7mZx3LpT9wRk2N",
            "refresh-1-Qv7mZx3LpT9wRk2N"
        ]
    );
    for out in [&first, &next] {
        for stream in [&out.stdout, &out.stderr] {
            for secret in &presented {
                assert!(leaked_forms(&text(stream), secret).is_empty());
            }
        }
    }
}
