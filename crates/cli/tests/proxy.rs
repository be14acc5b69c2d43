//! `modelauth proxy`, the binary, as a user runs it: its output, its logs, its refusals,
//! and how it stops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dev_gateway::{DevGateway, GatewayConfig, Route};

#[path = "support/proxy_setup.rs"]
mod proxy_setup;
#[path = "support/sdk.rs"]
mod sdk;
use proxy_setup::{Killed, gateway_and_config, terminate, write_config, write_script};

const BIN: &str = env!("CARGO_BIN_EXE_modelauth");

/// Starts `modelauth proxy ARGS` and reads its address lines.
fn spawn(dir: &Path, args: &[&str]) -> (Child, Vec<String>) {
    spawn_with_env(dir, args, &[])
}

/// [`spawn`] with extra environment variables (and none of `NO_PROXY`).
fn spawn_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Child, Vec<String>) {
    spawn_reading(dir, &[&["--listen", "127.0.0.1:0"], args].concat(), env, 2)
}

/// `modelauth proxy ARGS` in `dir`, and the first `lines` lines it prints.
fn spawn_reading(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    lines: usize,
) -> (Child, Vec<String>) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .arg("proxy")
        .args(args)
        .envs(env.iter().copied())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut read = Vec::new();
    for _ in 0..lines {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        read.push(line.trim_end().to_owned());
    }
    (child, read)
}

fn pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_its_addresses_serves_logs_without_secrets_and_stops_on_sigterm() {
    let (gw, dir) = gateway_and_config().await;
    let (child, lines) = spawn(dir.path(), &["-v"]);
    let addr = lines[0]
        .strip_prefix("listening on http://")
        .unwrap()
        .to_owned();
    assert_eq!(
        lines[1],
        format!("corp  http://{addr}/corp  ->  {}", gw.base_url())
    );
    let response = reqwest::Client::new()
        .get(format!(
            "http://{addr}/corp/models?api-key=query-secret-123"
        ))
        .bearer_auth("dummy")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    terminate(&child);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("proxy: request"))
        .unwrap_or_else(|| panic!("no request line in {log}"));
    for part in [
        "provider=corp",
        "method=GET",
        "path=/models",
        "status=200",
        "replayed=false",
    ] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
    assert!(
        !log.contains("query-secret-123") && !log.contains("dummy"),
        "{log}"
    );
    let token = gw.mint_token().access_token;
    assert!(!log.contains(&token[..16]), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaches_the_gateway_through_the_proxy_the_environment_names() {
    let (gw, dir) = gateway_and_config().await;
    let corporate = test_support::ConnectProxy::start();
    let (child, lines) = spawn_with_env(dir.path(), &[], &[("HTTP_PROXY", &corporate.url())]);
    let _stop = Killed(child);
    let addr = lines[0]
        .strip_prefix("listening on http://")
        .unwrap()
        .to_owned();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..3 {
        let response = client
            .get(format!("http://{addr}/corp/models"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // One tunnel to the gateway, kept alive for the three requests.
    assert_eq!(corporate.tunnels(), vec![gw.addr().to_string()]);
}

/// Kills the proxy when the test ends, however it ends.

#[test]
fn sigterm_waits_for_a_request_in_flight_then_exits_0_with_no_command_left() {
    let dir = tempfile::tempdir().unwrap();
    // A command that takes 1.5 s: a request is waiting for it when SIGTERM comes.
    write_script(dir.path(), "sleep 1.5 &\necho $! >> pids\nwait\necho tok");
    write_config(dir.path(), "http://127.0.0.1:1/v1");
    let (child, lines) = spawn(dir.path(), &[]);
    let addr = lines[0]
        .strip_prefix("listening on http://")
        .unwrap()
        .to_owned();
    let request = std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        std::io::Write::write_all(
            &mut stream,
            format!("GET /corp/models HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
        answer
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids(dir.path()).len() < 2 {
        assert!(Instant::now() < deadline, "the token command never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    terminate(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // The request in flight got its answer (the gateway is down: 502 from the proxy).
    let answer = request.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("upstream_unreachable"), "{answer}");
    let left = test_support::still_alive_after(&pids(dir.path()), Duration::from_secs(2));
    assert!(left.is_empty(), "{left:?} outlived the proxy");
}

#[test]
fn a_token_command_still_running_after_the_grace_period_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path(), "sleep 60 &\necho $! >> pids\nwait\necho tok");
    std::fs::write(
        dir.path().join("config.toml"),
        "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:1/v1\"\nauth = { command = \"./token.sh\", timeout_ms = 600000 }\n",
    )
    .unwrap();
    let (child, lines) = spawn(dir.path(), &["--shutdown-grace-ms", "300"]);
    let addr = lines[0]
        .strip_prefix("listening on http://")
        .unwrap()
        .to_owned();
    std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        let _ = std::io::Write::write_all(
            &mut stream,
            format!("GET /corp/models HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes(),
        );
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut sink);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids(dir.path()).len() < 2 {
        assert!(Instant::now() < deadline, "the token command never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    terminate(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let left = test_support::still_alive_after(&pids(dir.path()), Duration::from_secs(2));
    assert!(left.is_empty(), "{left:?} outlived the proxy");
}

fn refusal(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path(), "echo tok");
    write_config(dir.path(), "http://127.0.0.1:1/v1");
    let out = Command::new(BIN)
        .args(["--config", "config.toml", "proxy"])
        .args(args)
        .current_dir(dir.path())
        .env_remove("MODELAUTH_TEST_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn refusals_exit_2_with_the_reason() {
    insta::assert_snapshot!(
        "proxy_non_loopback_without_a_key",
        format!("{:?}", refusal(&["--listen", "0.0.0.0:0"], &[]))
    );
    insta::assert_snapshot!(
        "proxy_client_key_variable_unset",
        format!(
            "{:?}",
            refusal(&["--client-key-env", "MODELAUTH_TEST_KEY"], &[])
        )
    );
    insta::assert_snapshot!(
        "proxy_unknown_provider",
        format!("{:?}", refusal(&["-p", "nope"], &[]))
    );
    insta::assert_snapshot!(
        "proxy_bad_listen_address",
        format!("{:?}", refusal(&["--listen", "localhost"], &[]))
    );
    insta::assert_snapshot!(
        "proxy_client_keys_missing",
        format!(
            "{:?}",
            refusal(&["--client-keys", "/nonexistent/keys.toml"], &[])
        )
    );
    insta::assert_snapshot!(
        "proxy_socket_mode_not_octal",
        format!(
            "{:?}",
            refusal(
                &["--listen", "unix:/tmp/x.sock", "--socket-mode", "rw"],
                &[]
            )
        )
    );
}

#[test]
fn a_listen_address_in_use_is_a_runtime_error_that_says_so_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = refusal(&["--listen", &addr], &[]);
    assert_eq!(code, Some(1));
    insta::assert_snapshot!("proxy_listen_address_in_use", stderr.replace(&addr, "ADDR"));
}

/// Found in trial: one provider with an unset `env_key` (the README's own sample config)
/// stopped the whole proxy. It starts, names the unavailable route and why, answers it with
/// `token_unavailable`, and serves the others; `localhost:PORT` listens on loopback; a
/// client whose base URL repeats the provider's `/v1` gets a hint with its 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_its_key_does_not_stop_the_others() {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_script(
        dir.path(),
        &format!("exec {BIN} mint-token --url {} --text", gw.token_url()),
    );
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"{}\"\nauth = {{ command = \"./token.sh\" }}\n\
             [model_providers.keyed]\nname = \"Keyed\"\nbase_url = \"https://api.example.com/v1\"\nenv_key = \"MODELAUTH_TEST_UNSET_KEY\"\n",
            gw.base_url()
        ),
    )
    .unwrap();
    // An empty variable is an unset key.
    let (child, lines) = spawn_reading(
        dir.path(),
        &["--listen", "localhost:0"],
        &[("MODELAUTH_TEST_UNSET_KEY", "")],
        3,
    );
    let base = lines[0].strip_prefix("listening on ").unwrap().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{lines:?}");
    assert_eq!(
        lines[2],
        format!("keyed  {base}/keyed  ->  https://api.example.com/v1")
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str| client.get(format!("{base}{path}")).send();
    let keyed = get("/keyed/models").await.unwrap();
    assert_eq!(keyed.status(), 502);
    let body: serde_json::Value = keyed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "token_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`MODELAUTH_TEST_UNSET_KEY` is not set"),
        "{body}"
    );
    assert_eq!(get("/corp/models").await.unwrap().status(), 200);
    let doubled = get("/corp/v1/models").await.unwrap();
    assert_eq!(doubled.status(), 404);
    assert!(
        doubled.headers()["x-modelauth-hint"]
            .to_str()
            .unwrap()
            .contains("base_url already ends in /v1"),
    );
    assert_eq!(
        get("/corp/models")
            .await
            .unwrap()
            .headers()
            .get("x-modelauth-hint"),
        None
    );
    let health: serde_json::Value = get("/_modelauth/health")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert!(health["unavailable"]["keyed"].is_string(), "{health}");
    terminate(&child);
    let stopped = child.wait_with_output().unwrap();
    assert!(stopped.status.success());
    let stderr = String::from_utf8_lossy(&stopped.stderr).replace(&base, "http://[ADDR]");
    insta::assert_snapshot!(stderr, @"warning: provider `keyed` is unavailable (provider `keyed`: environment variable `MODELAUTH_TEST_UNSET_KEY` is not set or empty); http://[ADDR]/keyed answers 502 token_unavailable");
}

/// Reads OpenMetrics text with the Python `prometheus_client` parser: every sample as
/// `[name, labels, value]`.
fn parse_openmetrics(python: &Path, text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    use std::io::Write as _;
    let mut child = Command::new(python)
        .args([
            "-c",
            "import json, sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families\nprint(json.dumps([[s.name, s.labels, s.value] for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the metrics:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `GET /_modelauth/ready` is 503 until the provider holds a token (the probe itself starts
/// fetching one), then 200; `GET /_modelauth/metrics` is OpenMetrics text that the Python
/// `prometheus_client` parser reads, with the answers by status class, the command runs
/// and the token's age, and never the token, a path or a query string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_openmetrics_and_ready_follows_the_token() {
    let Some(python) = sdk::python() else { return };
    let (gw, dir) = gateway_and_config().await;
    let script = std::fs::read_to_string(dir.path().join("token.sh")).unwrap();
    let token = script
        .lines()
        .last()
        .unwrap()
        .trim_start_matches("echo ")
        .to_owned();
    let (child, lines) = spawn(dir.path(), &[]);
    let child = Killed(child);
    let base = lines[0].strip_prefix("listening on ").unwrap().to_owned();
    let client = reqwest::Client::new();
    let ready = || async {
        let answer = client
            .get(format!("{base}/_modelauth/ready"))
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    };
    let (status, body) = ready().await;
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "not ready", "providers": {"corp": "no usable token yet; fetching one"}})
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = ready().await;
        if status == 200 {
            assert_eq!(body, r#"{"status":"ready"}"#);
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pids(dir.path()).len(), 1, "the probes ran the command once");
    let ok = client
        .get(format!("{base}/corp/models?api_key=query-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let missing = client
        .get(format!("{base}/corp/no-such-route"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // A stream still going out is in flight (the gateway sends an event every 200 ms).
    gw.set_fault(
        dev_gateway::Route::Responses,
        Some(dev_gateway::Fault::SlowStream {
            delay: Duration::from_millis(200),
        }),
    );
    let mut stream = client
        .post(format!("{base}/corp/responses"))
        .json(&serde_json::json!({"model": "dev-small", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert!(stream.chunk().await.unwrap().is_some());
    let during = client
        .get(format!("{base}/_modelauth/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        during.contains("modelauth_streams_in_flight{provider=\"corp\"} 1"),
        "{during}"
    );
    drop(stream);
    gw.set_fault(dev_gateway::Route::Responses, None);
    // The stream's end is seen by the proxy once the client has gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = client
            .get(format!("{base}/_modelauth/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let text = answer.text().await.unwrap();
        if text.contains("modelauth_streams_in_flight{provider=\"corp\"} 0") {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = answer;
    let answer = client
        .get(format!("{base}/_modelauth/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    for secret in [token.as_str(), "query-secret", "no-such-route", "api_key"] {
        assert!(
            !text.contains(secret),
            "the metrics hold `{secret}`:\n{text}"
        );
    }
    let samples = parse_openmetrics(&python, &text);
    let value = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in\n{text}"))
    };
    let corp = ("provider", "corp");
    assert_eq!(
        value("modelauth_requests_total", &[corp, ("status_class", "2xx")]),
        2.0,
        "the models list and the stream"
    );
    assert_eq!(
        value("modelauth_requests_total", &[corp, ("status_class", "4xx")]),
        1.0
    );
    assert_eq!(value("modelauth_command_runs_total", &[corp]), 1.0);
    assert_eq!(value("modelauth_command_failures_total", &[corp]), 0.0);
    assert_eq!(value("modelauth_provider_available", &[corp]), 1.0);
    assert!(value("modelauth_token_age_seconds", &[corp]) < 60.0);
    assert!(value("modelauth_token_expires_in_seconds", &[corp]) > 0.0);
    assert_eq!(value("modelauth_streams_in_flight", &[corp]), 0.0);
    assert!(value("modelauth_connections_open", &[]) >= 1.0);
    assert_eq!(value("modelauth_replay_buffer_bytes", &[]), 0.0);
    terminate(&child.0);
}

/// `--listen unix:PATH` (SPEC §13): the socket is made with mode 0600 (or `--socket-mode`),
/// the OpenAI Python SDK reaches a provider through it (httpx's Unix-socket transport, a
/// list and a stream), another user cannot connect (the file's permissions are the access
/// rule; checked when the tests run as root), and stopping removes the socket. (The SDK's
/// HTTP client is `httpx2`, httpx's successor, since openai 3.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_serves_the_openai_sdk_and_only_its_owner() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    use std::os::unix::process::CommandExt as _;
    let Some(python) = sdk::python() else { return };
    let (_gw, dir) = gateway_and_config().await;
    let socket = dir.path().join("proxy.sock");
    let listen = format!("unix:{}", socket.display());
    let (child, lines) = spawn_reading(dir.path(), &["--listen", &listen], &[], 2);
    let child = Killed(child);
    assert_eq!(lines[0], format!("listening on {listen}"));
    assert!(
        lines[1].starts_with(&format!("corp  {listen} /corp  ->  http://127.0.0.1:")),
        "{}",
        lines[1]
    );
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let sdk = format!(
        "import httpx2, openai\n\
         client = openai.OpenAI(base_url='http://localhost/corp', api_key='unused',\n\
             http_client=httpx2.Client(transport=httpx2.HTTPTransport(uds='{}')))\n\
         print(' '.join(m.id for m in client.models.list()))\n\
         events = [e.type for e in client.responses.create(model='dev-small', input='hi', stream=True)]\n\
         print(events[-1])\n",
        socket.display()
    );
    let out = Command::new(&python).args(["-c", &sdk]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("dev-small"), "{printed}");
    assert!(printed.ends_with("response.completed\n"), "{printed}");
    if nix::unistd::geteuid().is_root() {
        // `nobody` may not write to the socket file: its connect is refused by the system.
        let out = Command::new("curl")
            .args(["-sS", "--unix-socket"])
            .arg(&socket)
            .arg("http://localhost/corp/models")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied")
                || String::from_utf8_lossy(&out.stderr).contains("Couldn't connect"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    terminate(&child.0);
    let mut child = child;
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
    assert!(!socket.exists(), "the socket outlived the proxy");

    // Another mode, and a socket left by a stopped proxy is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(stale);
    let (child, lines) = spawn_reading(
        dir.path(),
        &["--listen", &listen, "--socket-mode", "660"],
        &[],
        1,
    );
    let _child = Killed(child);
    assert_eq!(lines[0], format!("listening on {listen}"));
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o660
    );
}

/// systemd's socket activation: a listening socket passed as fd 3 with `LISTEN_FDS=1` is
/// served in place of `--listen` (here made by the test and handed over by a shell, as
/// systemd would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_passed_by_systemd_is_served() {
    let (_gw, dir) = gateway_and_config().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "exec 3<&0 0</dev/null; exec \"$0\" \"$@\""])
        .arg(BIN)
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("proxy")
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .current_dir(dir.path())
        .stdin(std::os::fd::OwnedFd::from(listener))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let child = Killed(child);
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first.trim_end(), format!("listening on http://{addr}"));
    let answer = reqwest::get(format!("http://{addr}/corp/models"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    terminate(&child.0);
}

/// Scoped client keys (SPEC §13): a key reaches only its providers and path prefixes until
/// it expires; an unknown or expired key gets 401, one out of its scope 403
/// `key_out_of_scope`; both are counted as refusals and logged with the key's name, never
/// the key. Removing a key from the file revokes it within a second; SIGHUP reloads the
/// file and does not stop the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_client_keys_reach_only_their_scope_and_are_revoked_within_a_second() {
    let (_gw, dir) = gateway_and_config().await;
    let keys = dir.path().join("keys.toml");
    let sha = |key: &str| {
        use sha2::Digest as _;
        sha2::Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let file = |extra: &str| {
        format!(
            "[keys.reader]\nkey_sha256 = \"{}\"\nproviders = [\"corp\"]\npaths = [\"/models\"]\n\n[keys.old]\nkey = \"k-old-0123\"\nexpires = \"2020-01-01T00:00:00Z\"\n{extra}",
            sha("k-reader-0123")
        )
    };
    std::fs::write(&keys, file("")).unwrap();
    let (child, lines) = spawn_reading(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "-v",
            "--client-keys",
            keys.to_str().unwrap(),
        ],
        &[],
        2,
    );
    let mut child = Killed(child);
    let base = lines[0].strip_prefix("listening on ").unwrap().to_owned();
    let client = reqwest::Client::new();
    let get = |path: &str, key: Option<&str>| {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.text().await.unwrap())
        }
    };
    assert_eq!(get("/corp/models", Some("k-reader-0123")).await.0, 200);
    let (status, body) = get("/corp/responses", Some("k-reader-0123")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"key_out_of_scope\""), "{body}");
    assert!(body.contains("`reader`"), "{body}");
    assert_eq!(
        get("/corp/models", Some("k-old-0123")).await.0,
        401,
        "expired"
    );
    assert_eq!(get("/corp/models", Some("k-unknown")).await.0, 401);
    assert_eq!(get("/corp/models", None).await.0, 401);
    let (_, stats) = get("/_modelauth/stats", Some("k-reader-0123")).await;
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["refused"], 4, "{stats}");

    // Revoked: the file is rewritten without `reader`, and within a second it is refused.
    std::fs::write(&keys, "[keys.other]\nkey = \"k-other-0123\"\n").unwrap();
    let revoked = Instant::now();
    while get("/corp/models", Some("k-reader-0123")).await.0 != 401 {
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "a revoked key still served after {:?}",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get("/corp/models", Some("k-other-0123")).await.0, 200);

    // SIGHUP reloads (the file is back as it was), and the proxy goes on.
    std::fs::write(&keys, file("")).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while get("/corp/models", Some("k-reader-0123")).await.0 != 200 {
        assert!(Instant::now() < deadline, "the reload never took effect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "SIGHUP stopped the proxy"
    );
    terminate(&child.0);
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("key=reader"), "{stderr}");
    for key in ["k-reader-0123", "k-old-0123", "k-unknown", "k-other-0123"] {
        assert!(!stderr.contains(key), "the log holds a key:\n{stderr}");
    }
}

/// The Kubernetes example (`deploy/kubernetes/pod.yaml`), run as its containers would run:
/// the manifests are parsed (PyYAML), the ConfigMap's config is the config, the projected
/// service-account token is a gateway token in a file, the identity provider's token
/// endpoint is the dev gateway's, and the exact command lines of the two modelauth sidecars
/// and of the readiness probe run against the dev gateway, their absolute paths moved under
/// a temporary folder. The proxy's socket serves the application's base URL (the token sent
/// as it is) and `corp-sts` (the token exchanged), the probe passes, and the token file is
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_example_runs_as_written() {
    let Some(python) = sdk::python() else { return };
    let manifest = proxy_setup::repository_file("deploy/kubernetes/pod.yaml");
    let out = Command::new(&python)
        .args([
            "-c",
            "import json, sys, yaml\nprint(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let pod = docs.iter().find(|d| d["kind"] == "Pod").unwrap();
    let container = |name: &str| {
        pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    // Every absolute path of the manifest, under the temporary folder.
    let moved = |text: &str| {
        [
            "/etc/modelauth",
            "/run/modelauth",
            "/var/run/secrets/tokens",
        ]
        .into_iter()
        .fold(text.to_owned(), |text, path| {
            text.replace(path, &format!("{}{path}", root.path().display()))
        })
    };
    for folder in [
        "/etc/modelauth",
        "/run/modelauth",
        "/var/run/secrets/tokens",
    ] {
        std::fs::create_dir_all(format!("{}{folder}", root.path().display())).unwrap();
    }
    let config = moved(config_map["data"]["config.toml"].as_str().unwrap())
        .replace("https://gateway.example.com/openai/v1", &gw.base_url())
        .replace("https://sts.example.com/oauth2/token", &gw.token_url());
    std::fs::write(moved("/etc/modelauth/config.toml"), config).unwrap();
    std::fs::write(
        moved("/var/run/secrets/tokens/gateway-token"),
        gw.mint_token().access_token,
    )
    .unwrap();
    // A container's command line and environment, as the kubelet runs it.
    let command_of = |c: &serde_json::Value| {
        let mut line: Vec<String> = c["command"]
            .as_array()
            .unwrap()
            .iter()
            .chain(c["args"].as_array().unwrap())
            .map(|a| moved(a.as_str().unwrap()))
            .collect();
        assert_eq!(line[0], "modelauth");
        line[0] = BIN.to_owned();
        let mut command = Command::new(&line[0]);
        command.args(&line[1..]);
        for var in c["env"].as_array().into_iter().flatten() {
            command.env(
                var["name"].as_str().unwrap(),
                moved(var["value"].as_str().unwrap()),
            );
        }
        command
    };
    let mut proxy = command_of(&container("modelauth-proxy"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(proxy.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let proxy = Killed(proxy);
    let socket = moved("/run/modelauth/proxy.sock");
    assert_eq!(first.trim_end(), format!("listening on unix:{socket}"));
    // The readiness probe, as written: ready once the token is held (the probe fetches it).
    let probe: Vec<String> = container("modelauth-proxy")["readinessProbe"]["exec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| moved(a.as_str().unwrap()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Command::new(&probe[0])
        .args(&probe[1..])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the readiness probe never passed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The application's base URL, through the socket.
    let app = container("app");
    let base_url = app["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "OPENAI_BASE_URL")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--unix-socket", &socket])
        .arg(format!("{base_url}/models"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("dev-small"));
    // The same gateway with the projected token exchanged: one exchange, then the cache.
    let minted = gw.counters().tokens_minted;
    for _ in 0..2 {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--unix-socket", &socket])
            .arg(base_url.replace("/corp", "/corp-sts") + "/models")
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("dev-small"),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        gw.counters().tokens_minted,
        minted,
        "the readiness probe's exchange serves"
    );
    // The token-file sidecar writes the file.
    let writer = command_of(&container("modelauth-token"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let writer = Killed(writer);
    let file = moved("/run/modelauth/token");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::path::Path::new(&file).exists() {
        assert!(
            Instant::now() < deadline,
            "the token file was never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(std::fs::read_to_string(&file).unwrap().starts_with("dg."));
    terminate(&writer.0);
    terminate(&proxy.0);
}

/// A provider with `auth.oauth2` through the proxy: the token comes from the dev gateway's
/// own OAuth2 endpoint (client credentials); cold requests at once share one exchange, and
/// after the gateway revokes every token, the next request gets a new one and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth2_provider_is_served_and_recovers_from_a_revocation() {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client-secret"), "proxy-client-secret-5150").unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[model_providers.corp]\nname = \"Corp\"\nbase_url = \"{}\"\n\
             [model_providers.corp.auth.oauth2]\ntoken_url = \"{}\"\ngrant = \"client_credentials\"\n\
             client_id = \"modelauth\"\nclient_secret_file = \"client-secret\"\n",
            gw.base_url(),
            gw.token_url()
        ),
    )
    .unwrap();
    let (child, lines) = spawn(dir.path(), &[]);
    let mut stop = Killed(child);
    let addr = lines[0]
        .strip_prefix("listening on http://")
        .unwrap()
        .to_owned();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{addr}/corp/models");
    let answers = futures::future::join_all((0..20).map(|_| client.get(&url).send())).await;
    for answer in answers {
        assert_eq!(answer.unwrap().status(), 200);
    }
    let stats = proxy_setup::stats(&client, &addr).await;
    let runs = stats.to_string();
    gw.rotate();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(gw.counters().unauthorized(Route::Models), 1);
    terminate(&stop.0);
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut stop.0.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(!logs.contains("proxy-client-secret-5150"), "{logs}");
    assert!(
        runs.contains("\"command_runs\":1"),
        "one exchange for 20 cold requests: {runs}"
    );
}

/// The one TLS configuration (`transport::tls_config`: rustls with the platform's trust
/// store, which honours `SSL_CERT_FILE`): the proxy and the HTTP client (`modelauth models`)
/// reach an https gateway and `modelauth realtime` a wss one when the environment trusts the
/// gateway's certificate, and none does when it does not (the certificate's CA is made by
/// the test, so only `SSL_CERT_FILE` vouches for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_gateway_is_reached_only_with_the_trust_store_the_environment_names() {
    let (gw, dir) = gateway_and_config().await;
    let front = test_support::TlsFront::start(front_target(&gw)).await;
    write_config(dir.path(), &format!("{}/v1", front.url));
    // A provider whose OAuth2 token endpoint is behind the same front.
    let mut config = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();
    config.push_str(&format!(
        "[model_providers.sts]\nname = \"STS\"\nbase_url = \"{0}/v1\"\n\
         [model_providers.sts.auth.oauth2]\ntoken_url = \"{0}/oauth/token\"\n\
         grant = \"client_credentials\"\nclient_id = \"modelauth\"\nclient_secret_env = \"STS_SECRET\"\n",
        front.url
    ));
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &front.certificate_pem).unwrap();
    // Another CA: a trust store that loads, and does not vouch for this gateway.
    let other = dir.path().join("other.pem");
    let another = test_support::TlsFront::start(front_target(&gw)).await;
    std::fs::write(&other, &another.certificate_pem).unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for (trust, expected) in [(&ca, 200), (&other, 502)] {
        let mut child = Command::new(BIN)
            .args([
                "--config",
                "config.toml",
                "proxy",
                "--listen",
                "127.0.0.1:0",
            ])
            .current_dir(dir.path())
            .env("SSL_CERT_FILE", trust)
            .env_remove("SSL_CERT_DIR")
            .env("MODELAUTH_CACHE_DIR", dir.path().join("store"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = proxy_setup::listening_address(&mut child);
        let _child = Killed(child);
        let answer = client
            .get(format!("http://{addr}/corp/models"))
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap();
        assert_eq!(status, expected, "{}: {body}", trust.display());
        if expected == 502 {
            assert!(body.contains("upstream_unreachable"), "{body}");
        }
    }
    let client = |trust: &Path, args: &[&str]| {
        Command::new(BIN)
            .args(["--config", "config.toml"])
            .args(args)
            .current_dir(dir.path())
            .env("SSL_CERT_FILE", trust)
            .env_remove("SSL_CERT_DIR")
            .env("MODELAUTH_CACHE_DIR", dir.path().join("store"))
            .env("STS_SECRET", "sts-client-secret-7731")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let trusted = client(&ca, &["models", "-p", "corp"]);
    assert_eq!(
        trusted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(String::from_utf8_lossy(&trusted.stdout).contains("dev-small"));
    let untrusted = client(&other, &["models", "-p", "corp"]);
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("TLS handshake failed"),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
    // The OAuth2 token endpoint's client too (each run exchanges: no store to read).
    let trusted = client(&ca, &["--no-shared-cache", "models", "-p", "sts"]);
    assert_eq!(
        trusted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let untrusted = client(&other, &["--no-shared-cache", "models", "-p", "sts"]);
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("token endpoint") && stderr.contains("certificate"),
        "{stderr}"
    );
    let realtime = |trust: &Path| {
        client(
            trust,
            &[
                "realtime",
                "-p",
                "corp",
                "-m",
                "dev-small",
                "--until",
                "session.created",
                "--timeout-ms",
                "10000",
            ],
        )
    };
    let trusted = realtime(&ca);
    assert_eq!(
        trusted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(String::from_utf8_lossy(&trusted.stdout).contains("session.created"));
    let untrusted = realtime(&other);
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
}

/// The dev gateway's address, for a TLS front.
fn front_target(gw: &DevGateway) -> std::net::SocketAddr {
    let url = reqwest::Url::parse(&gw.base_url()).unwrap();
    format!("127.0.0.1:{}", url.port().unwrap())
        .parse()
        .unwrap()
}
