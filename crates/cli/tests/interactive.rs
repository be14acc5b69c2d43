//! Helpers that ask a person: `auth.interactive` and `modelauth login`, under a real
//! pseudo-terminal (`script` gives the command one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use test_support::TokenScript;

const BIN: &str = env!("CARGO_BIN_EXE_modelauth");

struct Setup {
    script: TokenScript,
}

impl Setup {
    /// A helper that asks for a password on the terminal and prints `tok-<answer>`.
    fn new(interactive: &str) -> Self {
        let script = TokenScript::new("printf 'password: ' >&2\nread pw\necho \"tok-$pw\"");
        script.write(
            "config.toml",
            &format!(
                "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                 [model_providers.corp.auth]\ncommand = \"./token.sh\"\ninteractive = \"{interactive}\"\ninteractive_timeout_ms = 10000\n"
            ),
        );
        Self { script }
    }

    fn dir(&self) -> &std::path::Path {
        self.script.dir()
    }

    fn runs(&self) -> usize {
        self.script.runs()
    }

    /// `modelauth ARGS` on a terminal, typing `input`.
    fn on_terminal(&self, args: &str, input: &str) -> Output {
        let mut child = Command::new("script")
            .args([
                "-qec",
                &format!("{BIN} --config config.toml {args}"),
                "/dev/null",
            ])
            .current_dir(self.dir())
            .env("MODELAUTH_CACHE_DIR", self.dir().join("store"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// `modelauth ARGS` with no terminal.
    fn detached(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(["--config", "config.toml"])
            .args(args)
            .current_dir(self.dir())
            .env("MODELAUTH_CACHE_DIR", self.dir().join("store"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn login_asks_once_and_later_calls_without_a_terminal_need_no_prompt() {
    let s = Setup::new("always");
    let out = s.on_terminal("login -p corp", "hunter2\n");
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("password: "), "{screen}");
    assert!(
        screen.contains("corp: logged in; the token is in the shared store (11 chars, redacted); it states no expiry, so it is used for 5m 0s (refresh_interval_ms)"),
        "{screen}"
    );
    let out = s.detached(&["token", "--show"]);
    assert_eq!(text(&out.stdout), "tok-hunter2\n", "{}", text(&out.stderr));
    assert_eq!(s.runs(), 1, "the stored token was used");
}

#[test]
fn always_without_a_terminal_fails_fast_and_says_to_log_in() {
    let s = Setup::new("always");
    let started = Instant::now();
    let out = s.detached(&["token", "--show"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        text(&out.stderr),
        "error: could not obtain a token: provider `corp`: token command `./token.sh` needs a terminal to ask you and this process has no terminal; sign in on a terminal first with `modelauth login -p corp`\n"
    );
    assert_eq!(s.runs(), 0);
}

#[test]
fn if_available_asks_on_a_terminal_once_for_concurrent_callers() {
    let s = Setup::new("if_available");
    // Eight requests at once need a token: one prompt, one run.
    let out = s.on_terminal("bench --requests 8 --concurrency 8 --json", "s3cret\n");
    let screen = text(&out.stdout);
    assert_eq!(screen.matches("password: ").count(), 1, "{screen}");
    assert_eq!(s.runs(), 1);
    // Without a terminal the helper runs with stdin closed: its question gets no answer.
    let s = Setup::new("if_available");
    let out = s.detached(&["token", "--show"]);
    assert_eq!(text(&out.stdout), "tok-\n", "{}", text(&out.stderr));
}

#[test]
fn the_proxy_never_prompts_even_on_a_terminal() {
    use std::io::{BufRead as _, BufReader, Read as _};
    let s = Setup::new("always");
    let mut child = Command::new("script")
        .args([
            "-qec",
            &format!("{BIN} --config config.toml proxy --listen 127.0.0.1:0"),
            "/dev/null",
        ])
        .current_dir(s.dir())
        .env("MODELAUTH_CACHE_DIR", s.dir().join("store"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .write_all(
            format!("GET /corp/models HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(
        answer.contains(
            "this process never prompts; sign in on a terminal first with `modelauth login -p corp`"
        ),
        "{answer}"
    );
    assert_eq!(s.runs(), 0, "the helper never ran");
}

/// Found in trial: Ctrl-C at a helper's password prompt killed it at once and left the
/// terminal without echo. The command gets SIGINT (and a short grace), the terminal's modes
/// come back whatever the command did, and a failure says its stderr went to the terminal.
#[test]
fn ctrl_c_at_a_prompt_interrupts_the_command_and_restores_the_terminal() {
    let script = TokenScript::new(
        "stty -echo\ntrap 'echo got-int > \"$D/interrupted\"; exit 130' INT\nprintf 'password: ' >&2\necho ready > \"$D/prompted\"\nread pw\necho \"tok-$pw\"",
    );
    script.write(
        "config.toml",
        "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [model_providers.corp.auth]\ncommand = \"./token.sh\"\ninteractive = \"always\"\n",
    );
    // The outer shell survives the Ctrl-C (a trap, reset in its children) to show the
    // terminal's modes afterwards.
    let mut child = Command::new("script")
        .args([
            "-qec",
            &format!("trap 'true' INT; {BIN} --config config.toml login -p corp; echo \"exit=$?\"; stty -a"),
            "/dev/null",
        ])
        .current_dir(script.dir())
        .env("MODELAUTH_CACHE_DIR", script.dir().join("store"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    script.wait_for_file("prompted");
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let screen = text(&out.stdout);
    assert_eq!(script.wait_for_file("interrupted"), "got-int\n", "{screen}");
    assert!(screen.contains("exit=1"), "{screen}");
    // The terminal sends SIGINT to modelauth and the command at once: whichever ends
    // first, the error says what happened.
    assert!(
        screen.contains("interrupted by SIGINT") || screen.contains("exited with status 130"),
        "{screen}"
    );
    let modes = screen.rsplit("exit=1").next().unwrap();
    assert!(
        modes.split_whitespace().any(|w| w == "echo"),
        "echo was not restored: {modes}"
    );
}

#[test]
fn a_failing_terminal_run_says_its_stderr_went_to_the_terminal() {
    let script = TokenScript::new("echo 'no such user' >&2\nexit 3");
    script.write(
        "config.toml",
        "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [model_providers.corp.auth]\ncommand = \"./token.sh\"\ninteractive = \"always\"\n",
    );
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("{BIN} --config config.toml login -p corp"),
            "/dev/null",
        ])
        .current_dir(script.dir())
        .env("MODELAUTH_CACHE_DIR", script.dir().join("store"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let screen = text(&out.stdout).replace('\r', "");
    let dir = script.dir().display().to_string();
    insta::assert_snapshot!(screen.replace(&dir, "[DIR]"), @r"
    no such user
    error: could not log in: provider `corp`: token command `./token.sh` exited with status 3 (what it printed on stderr went to the terminal, above)
    ");
}
