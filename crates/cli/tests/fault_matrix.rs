//! The fault matrix: `modelauth` run as a user would, against a real hostile server and real
//! hostile token commands. Every case asserts the exit code, a bounded time, bounded memory,
//! no token (in any encoding) and no command stdout in any output, no terminal escape code,
//! and no surviving process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::{HostileServer, PeakRss, leaked_forms, still_alive_after};

const BIN: &str = env!("CARGO_BIN_EXE_modelauth");
/// Every case ends within this, whatever the server or the command does.
const MAX_TIME: Duration = Duration::from_secs(10);
/// Every case stays below this resident size (a 1 GiB body must not be read).
const MAX_RSS_KIB: u64 = 150 * 1024;
/// A configured header value: a secret like the token.
const CONFIGURED_KEY: &str = "cfgkey-Hq7Rv2Xw9Pz4Lm6N";
/// Printed on stdout by some commands: stdout must never reach an error.
const STDOUT_MARKER: &str = "STDOUT-MARKER-q3f9";
/// The default command: a new token per run, with characters that every encoding changes.
const TOKEN_SCRIPT: &str = "printf 'sk/live+%s_Zq8xWvT3Lm0pRt5Yb2Nc=\\n' \"$N\"";

#[derive(Clone)]
struct Case {
    name: &'static str,
    /// The hostile server's fault (first path segment).
    fault: &'static str,
    /// The command's body (`$N` is the run number); it runs after its pid is recorded.
    script: &'static str,
    json_format: bool,
    args: &'static [&'static str],
    code: i32,
    /// Text stderr must contain.
    says: &'static str,
}

const MODELS: &[&str] = &["models"];
const BENCH: &[&str] = &["bench", "--requests", "4", "--concurrency", "2", "--json"];
const RESPOND: &[&str] = &["respond", "-m", "m1", "hi"];
const REALTIME: &[&str] = &["realtime", "-m", "m1", "--timeout-ms", "4000"];
const TOKEN: &[&str] = &["token"];

fn server_case(
    name: &'static str,
    fault: &'static str,
    args: &'static [&'static str],
    code: i32,
    says: &'static str,
) -> Case {
    Case {
        name,
        fault,
        script: TOKEN_SCRIPT,
        json_format: false,
        args,
        code,
        says,
    }
}

fn command_case(
    name: &'static str,
    script: &'static str,
    json_format: bool,
    args: &'static [&'static str],
    code: i32,
    says: &'static str,
) -> Case {
    Case {
        name,
        fault: "ok",
        script,
        json_format,
        args,
        code,
        says,
    }
}

fn server_cases() -> Vec<Case> {
    vec![
        server_case("models ok", "ok", MODELS, 0, ""),
        server_case(
            "models headers never sent",
            "silent",
            MODELS,
            1,
            "did not answer completely within 1500 ms",
        ),
        server_case(
            "models 200 body drips",
            "drip200",
            MODELS,
            1,
            "did not answer completely within 1500 ms",
        ),
        server_case("models 401 body drips", "drip401", MODELS, 1, "HTTP 401"),
        server_case("models 1 GiB body", "huge", MODELS, 1, "larger than 4 MiB"),
        server_case("models 1 GiB 401 body", "huge401", MODELS, 1, "HTTP 401"),
        server_case("models reset mid-body", "reset", MODELS, 1, "cannot reach"),
        server_case(
            "models 400 echoing every header",
            "echo400",
            MODELS,
            1,
            "HTTP 400",
        ),
        server_case(
            "models 401 echoing both generations",
            "echo401",
            MODELS,
            1,
            "rejected a freshly minted token",
        ),
        server_case(
            "models redirect to a second server",
            "redirect",
            MODELS,
            1,
            "HTTP 307",
        ),
        server_case("bench ok", "ok", BENCH, 0, ""),
        server_case(
            "bench headers never sent",
            "silent",
            BENCH,
            1,
            "4 of 4 requests failed",
        ),
        server_case(
            "bench 200 body drips",
            "drip200",
            BENCH,
            1,
            "4 of 4 requests failed",
        ),
        server_case("bench 1 GiB body", "huge", BENCH, 1, "larger than 4 MiB"),
        server_case("bench 401 echoing", "echo401", BENCH, 1, "requests failed"),
        server_case("bench reset mid-body", "reset", BENCH, 1, "requests failed"),
        server_case("respond ok", "ok", RESPOND, 0, ""),
        server_case(
            "respond headers never sent",
            "silent",
            RESPOND,
            1,
            "idle for 1500 ms",
        ),
        server_case("respond 401 body drips", "drip401", RESPOND, 1, "HTTP 401"),
        server_case("respond 1 GiB 401 body", "huge401", RESPOND, 1, "HTTP 401"),
        server_case(
            "respond 400 echoing every header",
            "echo400",
            RESPOND,
            1,
            "HTTP 400",
        ),
        server_case(
            "respond 401 echoing both generations",
            "echo401",
            RESPOND,
            1,
            "rejected a freshly minted token",
        ),
        server_case(
            "respond event data not JSON",
            "sse_garbage",
            RESPOND,
            1,
            "not JSON",
        ),
        server_case(
            "respond SSE line not UTF-8",
            "sse_not_utf8",
            RESPOND,
            1,
            "not UTF-8",
        ),
        server_case(
            "respond SSE error event with escapes and the token",
            "sse_error",
            RESPOND,
            1,
            "the gateway reported `error`: boom: your token [REDACTED] (json \"[REDACTED]\") is bad\n",
        ),
        server_case(
            "respond BOM and lone CR line ends",
            "sse_bom_cr",
            RESPOND,
            0,
            "",
        ),
        server_case(
            "respond endless SSE line",
            "sse_endless",
            RESPOND,
            1,
            "larger than 4 MiB",
        ),
        server_case(
            "respond stream goes silent",
            "sse_hold",
            RESPOND,
            1,
            "idle for 1500 ms",
        ),
        server_case(
            "respond stream cut short",
            "sse_truncated",
            RESPOND,
            1,
            "ended before it completed",
        ),
        server_case("respond reset mid-body", "reset", RESPOND, 1, "respon"),
        server_case(
            "realtime close reason with escapes and the token",
            "ws_close",
            REALTIME,
            1,
            "(code 1008: [REDACTED])",
        ),
        server_case(
            "realtime frame not JSON",
            "ws_not_json",
            REALTIME,
            1,
            "not a JSON event with a string `type`: not json [REDACTED]\n",
        ),
        server_case(
            "realtime 17 MiB frame",
            "ws_giant",
            REALTIME,
            1,
            "websocket connection",
        ),
        server_case(
            "realtime binary frame",
            "ws_binary",
            REALTIME,
            1,
            "a binary message",
        ),
        server_case(
            "realtime drop after handshake",
            "ws_abrupt",
            REALTIME,
            1,
            "websocket connection",
        ),
        server_case(
            "realtime handshake 401 echoing",
            "echo401",
            REALTIME,
            1,
            "rejected a freshly minted token on the websocket handshake",
        ),
        server_case(
            "realtime handshake never answered",
            "silent",
            REALTIME,
            1,
            "did not finish within 1500 ms",
        ),
        server_case(
            "realtime ok",
            "ok",
            &["realtime", "-m", "m1", "--until", "session.created"],
            0,
            "",
        ),
    ]
}

fn command_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for args in [TOKEN, MODELS] {
        cases.extend([
            command_case("binary output", "printf '\\000\\001\\377'", false, args, 1, "not UTF-8"),
            command_case("NUL inside the token", "printf 'abc\\000def\\n'", false, args, 1, "control characters"),
            command_case("CRLF line end", "printf 'sk/crlf+Zq8xWvT3Lm0pRt5Y\\r\\n'", false, args, 0, ""),
            command_case("64 KiB and one byte", "head -c 65537 /dev/zero | tr '\\0' 'a'", false, args, 1, "more than 64 KiB"),
            command_case("slow drip past the timeout", "i=0; while [ $i -lt 50 ]; do printf a; sleep 0.2; i=$((i+1)); done", false, args, 1, "timed out after 1000 ms"),
            command_case("grandchild holding the pipes", "sleep 30 &\necho $! >> kids\nprintf 'sk/grand+Zq8xWvT3Lm0pRt5Y\\n'", false, args, 0, ""),
            command_case("ignores SIGTERM", "trap '' TERM\nsleep 30", false, args, 1, "timed out after 1000 ms"),
            command_case("escape codes on stderr", "printf '\\033[31mboom\\007\\n' >&2\nexit 3", false, args, 1, "exited with status 3; stderr: boom\n"),
            command_case("OAuth error JSON", "echo '{\"error\":\"invalid_client\",\"error_description\":\"STDOUT-MARKER-q3f9\"}'", true, args, 1, "an object with an `error` key and no token"),
            command_case("already-expired token", "echo '{\"access_token\":\"sk/exp+'$N'_Zq8xWvT3Lm0p\",\"expires_in\":0}'", true, args, 0, ""),
            command_case("1 MiB of stderr", "head -c 1048576 /dev/zero | tr '\\0' 'e' >&2\nexit 1", false, args, 1, "exited with status 1"),
            command_case("interior space", "echo 'sk STDOUT-MARKER-q3f9 token'", false, args, 1, "interior whitespace"),
            command_case("killed by a signal", "kill -9 $$", false, args, 1, "exited with signal 9"),
            command_case("prints nothing", "true", false, args, 1, "empty token"),
            command_case("jq's null for a missing field", "echo null", false, args, 1, "printed `null` or `undefined`"),
            command_case("JSON in text format", "echo '{\"access_token\":\"STDOUT-MARKER-q3f9\"}'", false, args, 1, "set `format = \"json\"`"),
            command_case("grandchild holding stderr after a failure", "sleep 30 >&2 &\necho $! >> kids\nexit 1", false, args, 1, "exited with status 1"),
            command_case("JSON of an unknown shape", "echo '{\"STDOUT-MARKER-q3f9\":\"x\"}'", true, args, 1, "none of `access_token`"),
            command_case("prints a token then hangs", "echo sk/hang+Zq8xWvT3Lm0pRt5Y\nexec sleep 30", false, args, 1, "timed out after 1000 ms"),
            command_case("JSON token with a control character", "echo '{\"token\":\"a\\u0007b\"}'", true, args, 1, "control characters"),
            command_case("not JSON in json format", "echo 'STDOUT-MARKER-q3f9'", true, args, 1, "not valid JSON"),
        ]);
    }
    cases.push(command_case(
        "exactly 64 KiB",
        "head -c 65535 /dev/zero | tr '\\0' 'a'\necho",
        false,
        TOKEN,
        0,
        "",
    ));
    cases
}

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    peak_kib: u64,
}

/// Runs one case; returns what went wrong with it, if anything, and its stderr with ports,
/// paths and timings made stable (for the snapshot).
fn run_case(case: &Case, server: &HostileServer, second: &HostileServer) -> (Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    write_executable(
        &dir.path().join("token.sh"),
        &format!(
            "#!/bin/sh\necho $$ >> pids\necho run >> runs\nN=$(wc -l < runs | tr -d ' ')\n{}\n",
            case.script
        ),
    );
    let base_url = match case.fault {
        "redirect" => server.base_url(&format!("redirect-{}", second.addr().port())),
        fault => server.base_url(fault),
    };
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"{base_url}\"\n\
             request_timeout_ms = 1500\nstream_idle_timeout_ms = 1500\nwebsocket_connect_timeout_ms = 1500\n\
             request_max_retries = 1\nstream_max_retries = 0\nhttp_headers = {{ X-Api-Key = \"{CONFIGURED_KEY}\" }}\n\
             [model_providers.corp.auth]\ncommand = \"./token.sh\"\ntimeout_ms = 1000\nformat = \"{}\"\n",
            if case.json_format { "json" } else { "text" }
        ),
    )
    .unwrap();
    let outcome = run_modelauth(dir.path(), case.args);
    let mut problems = Vec::new();
    if outcome.code != Some(case.code) {
        problems.push(format!(
            "exit code {:?}, expected {}",
            outcome.code, case.code
        ));
    }
    if outcome.elapsed > MAX_TIME {
        problems.push(format!("took {:?}", outcome.elapsed));
    }
    if outcome.peak_kib > MAX_RSS_KIB {
        problems.push(format!("peak RSS {} KiB", outcome.peak_kib));
    }
    if !outcome.stderr.contains(case.says) {
        problems.push(format!("stderr does not say `{}`", case.says));
    }
    let both = format!("{}\n{}", outcome.stdout, outcome.stderr);
    let mut secrets: Vec<String> = (1..=runs(dir.path()))
        .map(|n| format!("sk/live+{n}_Zq8xWvT3Lm0pRt5Yb2Nc="))
        .collect();
    secrets.extend(
        [
            "sk/crlf+Zq8xWvT3Lm0pRt5Y",
            "sk/grand+Zq8xWvT3Lm0pRt5Y",
            "sk/hang+Zq8xWvT3Lm0pRt5Y",
            "_Zq8xWvT3Lm0p",
            CONFIGURED_KEY,
        ]
        .map(String::from),
    );
    for secret in &secrets {
        let leaks = leaked_forms(&both, secret);
        if !leaks.is_empty() {
            problems.push(format!("leaked {secret} as {leaks:?}"));
        }
    }
    for forbidden in [STDOUT_MARKER, "invalid_client", "\u{1b}", "\u{7}"] {
        if both.contains(forbidden) {
            problems.push(format!("output contains {forbidden:?}"));
        }
    }
    let pids: Vec<u32> = ["pids", "kids"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(dir.path().join(f))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    let survivors = still_alive_after(&pids, Duration::from_secs(2));
    if !survivors.is_empty() {
        problems.push(format!("processes survived: {survivors:?}"));
    }
    if !problems.is_empty() {
        problems.push(format!(
            "stdout: {:?}\nstderr: {:?}",
            outcome.stdout.chars().take(400).collect::<String>(),
            outcome.stderr.chars().take(1200).collect::<String>()
        ));
    }
    (problems, stable(&outcome.stderr, dir.path()))
}

/// `text` with what differs between runs replaced: the temp dir, ports, timings.
fn stable(text: &str, dir: &Path) -> String {
    let text = text.replace(&dir.display().to_string(), "[DIR]");
    let mut out = String::new();
    let mut rest = text.as_str();
    // A port after the loopback address, or in the path of the redirecting fault.
    while let Some(at) = ["127.0.0.1:", "/redirect-"]
        .iter()
        .filter_map(|m| rest.find(m).map(|i| i + m.len()))
        .min()
    {
        out.push_str(&rest[..at]);
        rest = rest[at..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push_str("[PORT]");
    }
    out.push_str(rest);
    out
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Runs `modelauth --config DIR/config.toml ARGS` in DIR, killing it past twice
/// [`MAX_TIME`] so a hang fails the case instead of the suite.
fn run_modelauth(dir: &Path, args: &[&str]) -> Outcome {
    let started = Instant::now();
    let child = Command::new(BIN)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .args(args)
        .current_dir(dir)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("all_proxy")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let memory = PeakRss::watch(pid);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(MAX_TIME * 2) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            rx.recv().unwrap().unwrap()
        }
    };
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
        peak_kib: memory.peak_kib(),
    }
}

/// Runs `cases` four at a time and fails with every problem of every case; returns every
/// case's stable stderr, in order.
fn run_matrix(cases: Vec<Case>) -> String {
    let server = HostileServer::start();
    let second = HostileServer::start();
    let mut failures = Vec::new();
    let mut transcript = String::new();
    for chunk in cases.chunks(4) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|case| {
                    scope.spawn(|| (case.name, case.args, run_case(case, &server, &second)))
                })
                .collect();
            for handle in handles {
                let (name, args, (problems, stderr)) = handle.join().unwrap();
                transcript.push_str(&format!(
                    "$ modelauth {}  # {name}\n{stderr}\n",
                    args.join(" ")
                ));
                if !problems.is_empty() {
                    failures.push(format!(
                        "{name} ({}):\n  {}",
                        args.join(" "),
                        problems.join("\n  ")
                    ));
                }
            }
        });
    }
    assert!(
        second.seen().is_empty(),
        "the redirect target was contacted: {:?}",
        second.seen()
    );
    // The token is only ever in the Authorization header, never in a URL.
    for request in server.seen() {
        assert!(
            !request.request_line.contains("sk/") && !request.request_line.contains("sk%2F"),
            "{}",
            request.request_line
        );
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    transcript
}

#[test]
fn hostile_gateways() {
    let cases = server_cases();
    assert!(cases.len() >= 30);
    insta::assert_snapshot!(run_matrix(cases));
}

#[test]
fn hostile_token_commands() {
    let cases = command_cases();
    assert!(cases.len() >= 30);
    insta::assert_snapshot!(run_matrix(cases));
}

/// The client secret of the token-endpoint cases.
const CLIENT_SECRET: &str = "cs/live+Zq8xWvT3Lm0pRt5Yb2Nc=";

/// `auth.oauth2` against hostile token endpoints: each ends in time and memory, says what
/// happened, and never shows the client secret (raw, encoded, or in its Basic form).
#[test]
fn hostile_token_endpoints() {
    use base64::Engine as _;
    let server = HostileServer::start();
    let second = HostileServer::start();
    let cases: [(&str, &str); 7] = [
        ("silent", "did not answer within 1500 ms (auth.timeout_ms)"),
        ("drip200", "did not answer within 1500 ms (auth.timeout_ms)"),
        (
            "huge",
            "answered more than 64 KiB; the answer was discarded",
        ),
        (
            "reset",
            "answered without a usable token: the answer broke off",
        ),
        ("echo400", "answered HTTP 400 without an OAuth2 error code"),
        (
            "ok",
            "answered without a usable token: the answer is not JSON",
        ),
        (
            "redirect",
            "answered HTTP 307, a redirect, which is not followed",
        ),
    ];
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "modelauth:{}",
        CLIENT_SECRET
            .replace('/', "%2F")
            .replace('+', "%2B")
            .replace('=', "%3D")
    ));
    let mut transcript = String::new();
    let mut failures = Vec::new();
    for (fault, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let base = match fault {
            "redirect" => server.base_url(&format!("redirect-{}", second.addr().port())),
            fault => server.base_url(fault),
        };
        std::fs::write(dir.path().join("secret"), CLIENT_SECRET).unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"https://gw.example.com/v1\"\n\
                 [model_providers.corp.auth]\ntimeout_ms = 1500\n\
                 [model_providers.corp.auth.oauth2]\ntoken_url = \"{base}/token\"\ngrant = \"client_credentials\"\n\
                 client_id = \"modelauth\"\nclient_secret_file = \"secret\"\n"
            ),
        )
        .unwrap();
        let outcome = run_modelauth(dir.path(), TOKEN);
        let mut problems = Vec::new();
        if outcome.code != Some(1) {
            problems.push(format!("exit code {:?}", outcome.code));
        }
        if outcome.elapsed > MAX_TIME {
            problems.push(format!("took {:?}", outcome.elapsed));
        }
        if outcome.peak_kib > MAX_RSS_KIB {
            problems.push(format!("peak RSS {} KiB", outcome.peak_kib));
        }
        if !outcome.stderr.contains(says) {
            problems.push(format!("stderr does not say `{says}`: {}", outcome.stderr));
        }
        let both = format!("{}\n{}", outcome.stdout, outcome.stderr);
        for secret in [CLIENT_SECRET, basic.as_str()] {
            let leaks = leaked_forms(&both, secret);
            if !leaks.is_empty() {
                problems.push(format!("leaked {secret} as {leaks:?}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{fault}: {}", problems.join("; ")));
        }
        transcript.push_str(&format!(
            "$ modelauth token  # token endpoint: {fault}\n{}\n",
            stable(&outcome.stderr, dir.path())
        ));
    }
    assert!(second.seen().is_empty(), "the redirect was followed");
    // The secret went only in the Basic header, never in a URL.
    for request in server.seen() {
        assert!(
            !request.request_line.contains("cs/"),
            "{}",
            request.request_line
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    insta::assert_snapshot!(transcript);
}
