//! `modelauth token`, run as a user would, with real token scripts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let config = dir.join("config.toml");
    Command::new(env!("CARGO_BIN_EXE_modelauth"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .output()
        .unwrap()
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "good.sh",
        "echo 'minting' >&2\necho tok-SECRET-123",
    );
    script(
        dir.path(),
        "bad.sh",
        "echo 'ERROR: Reauthentication required. Run: gcloud auth login' >&2\nexit 1",
    );
    std::fs::write(
        dir.path().join("config.toml"),
        "model_provider = \"corp\"\n\
         [model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = { command = \"./good.sh\" }\n\
         [model_providers.bad]\nname = \"Bad\"\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = { command = \"./bad.sh\" }\n",
    )
    .unwrap();
    dir
}

#[test]
fn token_prints_a_redacted_summary() {
    let dir = setup();
    let out = run(dir.path(), &["token", "-p", "corp"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains("SECRET"), "{stdout}");
    assert!(
        stdout.starts_with("corp: token from command `./good.sh` (14 chars"),
        "{stdout}"
    );
    assert!(stdout.contains("command runs: 1"), "{stdout}");
    assert!(out.stderr.is_empty());
}

#[test]
fn token_show_prints_only_the_token() {
    let dir = setup();
    let out = run(dir.path(), &["token", "--show"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"tok-SECRET-123\n");
}

#[test]
fn failing_command_exits_1_with_its_stderr_excerpt() {
    let dir = setup();
    let out = run(dir.path(), &["token", "-p", "bad"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        "error: could not obtain a token: provider `bad`: token command `./bad.sh` exited with status 1; \
         stderr: ERROR: Reauthentication required. Run: gcloud auth login\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn verbose_logs_the_run_but_never_the_token() {
    let dir = setup();
    let out = run(dir.path(), &["-v", "token", "--show"]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("provider_auth") && stderr.contains("token refreshed"),
        "{stderr}"
    );
    assert!(!stderr.contains("SECRET"), "{stderr}");
}

#[test]
fn unknown_provider_is_a_usage_error() {
    let dir = setup();
    let out = run(dir.path(), &["token", "-p", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Sends `signal` to `modelauth token` while its command (and the command's child) runs:
/// modelauth exits 1 saying why, and neither process outlives it.
fn signal_kills_the_running_token_command(signal: &str) {
    let dir = setup();
    script(
        dir.path(),
        "hang.sh",
        "echo $$ > hang.pid\nsleep 60 &\necho $! > child.pid\nwait",
    );
    std::fs::write(
        dir.path().join("config.toml"),
        "[model_providers.hang]\nname = \"Hang\"\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = { command = \"./hang.sh\", timeout_ms = 600000 }\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_modelauth"))
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .args(["token", "-p", "hang"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let read_pid = |name: &str| {
        let path = dir.path().join(name);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(pid) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                break pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the token command never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    let pids = [read_pid("hang.pid"), read_pid("child.pid")];
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{signal}");
    let name = format!("SIG{}", signal.trim_start_matches('-'));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("error: interrupted by {name}\n")
    );
    // SIGKILL went to the group before modelauth exited; delivery takes a moment.
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while pids.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived modelauth after {name}");
    }
}

#[test]
fn sigint_kills_a_running_token_command_and_its_children() {
    signal_kills_the_running_token_command("-INT");
}

#[test]
fn sigterm_kills_a_running_token_command_and_its_children() {
    signal_kills_the_running_token_command("-TERM");
}

#[test]
fn sighup_kills_a_running_token_command_and_its_children() {
    signal_kills_the_running_token_command("-HUP");
}

#[test]
fn relative_config_and_command_paths_resolve_from_the_config_folder() {
    let dir = setup();
    std::fs::write(dir.path().join("noshebang.sh"), "echo tok\n").unwrap();
    std::fs::set_permissions(
        dir.path().join("noshebang.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "model_provider = \"corp\"\n\
         [model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = { command = \"./good.sh\" }\n\
         [model_providers.raw]\nname = \"Raw\"\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = { command = \"./noshebang.sh\" }\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_modelauth"))
            .args(["--config", "config.toml"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&["token", "--show"]);
    assert_eq!(
        out.stdout,
        b"tok-SECRET-123\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["token", "-p", "raw"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "./noshebang.sh is not a program the system can run (a script needs a #! line)"
        ),
        "{stderr}"
    );
}

#[test]
fn a_relative_config_path_and_command_run_the_file_the_check_found() {
    // From the parent folder: `--config cfgdir/c.toml` with `command = "bin/helper"`. The
    // decoy at cfgdir/cfgdir/bin/helper is what a second resolution from cfgdir would run.
    let top = tempfile::tempdir().unwrap();
    let write_script = |path: &std::path::Path, token: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("#!/bin/sh\necho {token}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_script(&top.path().join("cfgdir/bin/helper"), "right-token");
    write_script(&top.path().join("cfgdir/cfgdir/bin/helper"), "decoy-token");
    std::fs::write(
        top.path().join("cfgdir/c.toml"),
        "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = { command = \"bin/helper\" }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modelauth"))
        .args(["--config", "cfgdir/c.toml", "token", "--show"])
        .current_dir(top.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "right-token\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `modelauth -v token` on a real terminal (`script` gives it one), with `extra_env`.
fn verbose_on_a_terminal(dir: &Path, extra_env: &[(&str, &str)]) -> String {
    let command = format!(
        "{} -v --no-shared-cache --config {} token",
        env!("CARGO_BIN_EXE_modelauth"),
        dir.join("config.toml").display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("NO_COLOR")
        .envs(extra_env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn verbose_logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    let dir = setup();
    let coloured = verbose_on_a_terminal(dir.path(), &[]);
    assert!(coloured.contains("token refreshed"), "{coloured}");
    assert!(
        coloured.contains("\u{1b}["),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = verbose_on_a_terminal(dir.path(), &[("NO_COLOR", "1")]);
    assert!(plain.contains("token refreshed"), "{plain}");
    assert!(!plain.contains("\u{1b}["), "NO_COLOR ignored: {plain:?}");
}

/// `--write` to a folder that does not exist: exit 1, and the file and the OS's reason.
#[test]
fn a_token_file_that_cannot_be_written_says_which_and_why() {
    let dir = setup();
    let out = run(
        dir.path(),
        &[
            "--no-shared-cache",
            "token",
            "--write",
            "no/such/folder/token",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    insta::assert_snapshot!(
        "token_write_missing_folder",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--watch` with a failing command: a warning per failed run, the file untouched, and
/// SIGTERM ends it with exit 0.
#[test]
fn a_watched_token_file_outlives_a_failing_command() {
    use std::io::BufRead as _;
    let dir = setup();
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelauth"))
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .args(["--no-shared-cache", "token", "-p", "bad", "--write"])
        .arg(dir.path().join("token"))
        .arg("--watch")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    insta::assert_snapshot!("token_watch_failing_command", first);
    assert!(!dir.path().join("token").exists());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
