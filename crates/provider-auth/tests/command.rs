//! The token command as a real process: output handling, failures, process hygiene.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::time::Duration;

use provider_auth::{
    AuthError, CachePolicy, CommandFailure, CommandRefresher, TokenCache, run_token_command,
};
use provider_config::{ModelProviderAuthInfo, TokenFormat};
use support::{Script, process_alive, process_exists, wait_until};

async fn failure(auth: &ModelProviderAuthInfo) -> CommandFailure {
    run_token_command(auth).await.unwrap_err()
}

async fn token(auth: &ModelProviderAuthInfo) -> String {
    run_token_command(auth)
        .await
        .unwrap()
        .token
        .expose_secret()
        .to_owned()
}

#[tokio::test]
async fn token_is_trimmed() {
    let script = Script::new("printf '  tok-123 \\n\\n'");
    assert_eq!(token(&script.auth_with_refresh(0)).await, "tok-123");
}

#[tokio::test]
async fn nonzero_exit_reports_status_and_stderr_excerpt() {
    let script = Script::new(
        "echo 'line one' >&2\nprintf 'oops:\\tinvalid_grant\\033[0m\\n' >&2\necho SECRET-OUT\nexit 3",
    );
    let f = failure(&script.auth_with_refresh(0)).await;
    let CommandFailure::Exited { status, stderr, .. } = &f else {
        panic!("{f:?}")
    };
    assert_eq!(status, "status 3");
    assert_eq!(stderr, "line one oops: invalid_grant");
    assert!(!f.to_string().contains("SECRET-OUT"));
}

#[tokio::test]
async fn stderr_excerpt_keeps_only_the_last_2_kib() {
    let script = Script::new(
        "i=0; while [ $i -lt 300 ]; do echo \"noise line $i\" >&2; i=$((i+1)); done\necho LAST-LINE >&2\nexit 1",
    );
    let CommandFailure::Exited { stderr, .. } = failure(&script.auth_with_refresh(0)).await else {
        panic!()
    };
    assert!(stderr.len() <= 2048, "{}", stderr.len());
    assert!(stderr.ends_with("LAST-LINE"), "{stderr}");
    assert!(!stderr.contains("noise line 0 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabytes_of_output_is_rejected_and_killed() {
    let script = Script::new("echo $$ > pid\nhead -c 10000000 /dev/zero | tr '\\0' a\nsleep 60");
    let mut auth = script.auth_with_refresh(0);
    auth.cwd = script.dir().to_path_buf();
    let f = failure(&auth).await;
    assert_eq!(f, CommandFailure::OutputTooLarge { limit: 64 * 1024 });
    let pid: u32 = script.wait_for_file("pid").trim().parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || (!process_alive(pid))
            .then_some(()))
        .is_some()
    );
}

#[tokio::test]
async fn non_utf8_output_is_rejected() {
    let script = Script::new("printf '\\377\\376tok'");
    assert_eq!(
        failure(&script.auth_with_refresh(0)).await,
        CommandFailure::NotUtf8
    );
}

#[tokio::test]
async fn empty_output_is_rejected() {
    let script = Script::new("printf '  \\n'");
    let f = failure(&script.auth_with_refresh(0)).await;
    assert!(matches!(f, CommandFailure::InvalidToken { .. }), "{f:?}");
    assert!(f.to_string().contains("empty"));
}

#[tokio::test]
async fn tokens_with_interior_whitespace_are_rejected() {
    for body in [
        "printf 'secret-a secret-b'",
        "printf 'secret-a\\nsecret-b\\n'",
    ] {
        let script = Script::new(body);
        let f = failure(&script.auth_with_refresh(0)).await;
        assert!(matches!(f, CommandFailure::InvalidToken { .. }), "{f:?}");
        assert!(!f.to_string().contains("secret"), "{f}");
    }
}

#[tokio::test]
async fn missing_program_is_not_found() {
    let auth = ModelProviderAuthInfo::new("modelauth-no-such-program-xyz");
    let f = failure(&auth).await;
    assert!(matches!(f, CommandFailure::NotFound { .. }), "{f:?}");
    assert!(f.to_string().contains("not on PATH"));
}

#[tokio::test]
async fn non_executable_file_is_reported() {
    let script = Script::new("echo tok");
    std::fs::set_permissions(script.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = failure(&script.auth_with_refresh(0)).await;
    assert!(matches!(f, CommandFailure::NotExecutable { .. }), "{f:?}");
}

#[tokio::test]
async fn missing_cwd_is_reported() {
    let script = Script::new("echo tok");
    let mut auth = script.auth_with_refresh(0);
    auth.cwd = script.dir().join("no-such-dir");
    let f = failure(&auth).await;
    assert!(matches!(f, CommandFailure::CwdMissing { .. }), "{f:?}");
    assert!(f.to_string().contains("no-such-dir"));
}

#[tokio::test]
async fn relative_command_resolves_against_cwd() {
    let script = Script::new("pwd");
    let mut auth = ModelProviderAuthInfo::new("./token.sh");
    auth.cwd = script.dir().to_path_buf();
    let printed = token(&auth).await;
    assert_eq!(
        std::fs::canonicalize(printed).unwrap(),
        std::fs::canonicalize(script.dir()).unwrap()
    );
}

#[tokio::test]
async fn env_is_passed_and_stdin_is_null() {
    let script = Script::new(
        "read line || true\nprintf '%s-%s' \"$MODELAUTH_TEST_TOKEN\" \"${line:-nostdin}\"",
    );
    let mut auth = script.auth_with_refresh(0);
    auth.env
        .insert("MODELAUTH_TEST_TOKEN".to_owned(), "from-env".to_owned());
    assert_eq!(token(&auth).await, "from-env-nostdin");
}

#[tokio::test]
async fn bare_name_is_found_on_path_from_env() {
    let script = Script::new("echo path-token");
    let mut auth = ModelProviderAuthInfo::new("token.sh");
    auth.env.insert(
        "PATH".to_owned(),
        format!("{}:/usr/bin:/bin", script.dir().display()),
    );
    assert_eq!(token(&auth).await, "path-token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_command_and_its_grandchild() {
    let script =
        Script::new("echo $$ > leader.pid\nsh -c 'sleep 60 & echo $! > grandchild.pid; sleep 60'");
    let mut auth = script.auth_with_refresh(0);
    auth.cwd = script.dir().to_path_buf();
    auth.timeout_ms = 500;
    let f = failure(&auth).await;
    assert_eq!(f, CommandFailure::TimedOut { timeout_ms: 500 });
    assert!(f.to_string().contains("timed out after 500 ms"));
    let leader: u32 = script.wait_for_file("leader.pid").trim().parse().unwrap();
    let grandchild: u32 = script
        .wait_for_file("grandchild.pid")
        .trim()
        .parse()
        .unwrap();
    let gone = wait_until(Duration::from_secs(5), || {
        (!process_exists(leader) && !process_alive(grandchild)).then_some(())
    });
    assert!(
        gone.is_some(),
        "leader exists: {}, grandchild alive: {}",
        process_exists(leader),
        process_alive(grandchild)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_every_waiter_kills_the_run() {
    let script =
        Script::new("echo $$ > leader.pid\nsh -c 'sleep 60 & echo $! > grandchild.pid; sleep 60'");
    let mut auth = script.auth_with_refresh(0);
    auth.cwd = script.dir().to_path_buf();
    auth.timeout_ms = 600_000;
    let cache = TokenCache::new(
        Arc::new(CommandRefresher::new("corp", auth)),
        CachePolicy::new(None),
    );
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.credential().await })
        })
        .collect();
    let leader: u32 = script.wait_for_file("leader.pid").trim().parse().unwrap();
    let grandchild: u32 = script
        .wait_for_file("grandchild.pid")
        .trim()
        .parse()
        .unwrap();
    assert!(process_alive(leader) && process_alive(grandchild));
    for w in &waiters {
        w.abort();
    }
    for w in waiters {
        assert!(w.await.unwrap_err().is_cancelled());
    }
    let gone = wait_until(Duration::from_secs(5), || {
        (!process_exists(leader) && !process_alive(grandchild)).then_some(())
    });
    assert!(gone.is_some(), "the abandoned run survived");
    assert_eq!(script.runs(), 1);
}

#[tokio::test]
async fn background_grandchild_holding_stdout_does_not_block() {
    let script = Script::new("echo bg-token\nsleep 30 &");
    let mut auth = script.auth_with_refresh(0);
    auth.timeout_ms = 10_000;
    let started = std::time::Instant::now();
    assert_eq!(token(&auth).await, "bg-token");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn json_oauth_response_is_read() {
    let script = Script::new(
        "echo '{\"access_token\":\"oauth-tok\",\"token_type\":\"Bearer\",\"expires_in\":3599}'",
    );
    let mut auth = script.auth_with_refresh(0);
    auth.format = TokenFormat::Json;
    let fresh = run_token_command(&auth).await.unwrap();
    assert_eq!(fresh.token.expose_secret(), "oauth-tok");
    let left = fresh
        .expires_at
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3599));
}

#[tokio::test]
async fn the_token_never_appears_in_errors() {
    // A command that prints a token and then fails, one that prints an unusable token,
    // and one that prints JSON with the token in an unexpected shape.
    let secret = "tok-SHOULD-NEVER-LEAK-42";
    let cases = [
        (format!("echo {secret}\nexit 1"), TokenFormat::Text),
        (format!("echo '{secret} {secret}'"), TokenFormat::Text),
        (
            format!("echo '{{\"acces_token\":\"{secret}\"}}'"),
            TokenFormat::Json,
        ),
        (
            format!("echo '{{\"access_token\":{secret}}}'"),
            TokenFormat::Json,
        ),
        (
            format!("echo '{{\"access_token\":\"{secret}\",\"expires_in\":\"{secret}\"}}'"),
            TokenFormat::Json,
        ),
    ];
    for (body, format) in cases {
        let script = Script::new(&body);
        let mut auth = script.auth_with_refresh(0);
        auth.format = format;
        let err = CommandRefresher::new("corp", auth.clone());
        let cache = TokenCache::new(Arc::new(err), CachePolicy::new(None));
        let err: AuthError = cache.credential().await.unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("provider `corp`"), "{shown}");
    }
}

#[tokio::test]
async fn a_background_refresh_never_prompts() {
    use provider_auth::{ExternalAuthRefresher, RefreshReason};
    use provider_config::Interactive;
    let script = Script::new("[ -t 0 ] && echo tty >> stdin || echo notty >> stdin\necho tok-$N");
    let mut auth = script.auth_with_refresh(0);
    auth.interactive = Interactive::Always;
    let always = CommandRefresher::new("corp", auth.clone());
    let err = always
        .refresh(RefreshReason::RefreshAhead)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("a background refresh never prompts; sign in on a terminal first")
            // The library names no command of the CLI's: the CLI adds how to sign in.
            && !err.contains("modelauth"),
        "{err}"
    );
    assert_eq!(script.runs(), 0, "nothing ran");
    auth.interactive = Interactive::IfAvailable;
    let if_available = CommandRefresher::new("corp", auth);
    if_available
        .refresh(RefreshReason::RefreshAhead)
        .await
        .unwrap();
    assert_eq!(script.wait_for_file("stdin"), "notty\n");
}

/// Found in trial: with `auth.header = "x-api-key"`, a helper header `X-Api-Key` silently
/// replaced the token.
#[tokio::test]
async fn a_helper_header_may_not_replace_the_token_header() {
    let script = Script::new(r#"echo '{"token":"tok-1","headers":{"X-Api-Key":"other"}}'"#);
    let mut auth = script.auth_with_refresh(0);
    auth.format = provider_config::TokenFormat::Json;
    auth.header = "x-api-key".to_owned();
    auth.scheme = String::new();
    let f = failure(&auth).await;
    assert_eq!(
        f.to_string(),
        "printed unusable JSON: `headers` names the header the token goes in (auth.header)"
    );
}
