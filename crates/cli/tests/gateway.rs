//! `modelauth models`, `respond`, `realtime`, `bench` and `demo` against the dev gateway
//! on loopback, with the config's `auth.command` minting real tokens from it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;

use dev_gateway::{DevGateway, Fault, GatewayConfig, Route};
use test_support::TokenScript;

const BIN: &str = env!("CARGO_BIN_EXE_modelauth");

struct Setup {
    gw: DevGateway,
    script: TokenScript,
}

impl Setup {
    /// A config whose token command is a script: the first run prints the token in
    /// `stale-token` if the test wrote one, every run after mints from the gateway.
    async fn new() -> Self {
        let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
        let script = TokenScript::new(&format!(
            "if [ -f \"$D/stale-token\" ] && [ $N -eq 1 ]; then cat \"$D/stale-token\"; else exec {BIN} mint-token --url {} --text; fi",
            gw.token_url()
        ));
        script.write(
            "config.toml",
            &format!(
                "model_provider = \"dev\"\n[model_providers.dev]\nname = \"Dev\"\nbase_url = \"{}\"\n[model_providers.dev.auth]\ncommand = \"./token.sh\"\n",
                gw.base_url()
            ),
        );
        Self { gw, script }
    }

    fn runs(&self) -> usize {
        self.script.runs()
    }

    /// Makes the first token run print a token the gateway has since rotated away.
    fn stale_first_token(&self) {
        self.script
            .write("stale-token", &self.gw.mint_token().access_token);
        self.gw.rotate();
    }

    async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(BIN)
            .arg("--config")
            .arg(self.script.dir().join("config.toml"))
            .args(args)
            .current_dir(Path::new("/"))
            .output()
            .await
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_succeeds_across_a_rotation_with_one_extra_run() {
    let s = Setup::new().await;
    s.stale_first_token();
    let out = s.run(&["models"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "dev-small\ndev-large\n");
    assert_eq!(s.runs(), 2);
    assert_eq!(s.gw.counters().unauthorized(Route::Models), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_streams_across_a_rotation_with_one_extra_run() {
    let s = Setup::new().await;
    s.stale_first_token();
    let out = s.run(&["respond", "-m", "dev-small", "hi"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Hello from the dev gateway. You said: hi\n"
    );
    assert_eq!(s.runs(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_json_prints_every_event() {
    let s = Setup::new().await;
    let out = s.run(&["respond", "-m", "dev-small", "--json", "hi"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["type"], "response.created");
    assert_eq!(lines.last().unwrap()["type"], "response.completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_401_exits_1_after_exactly_two_requests() {
    let s = Setup::new().await;
    s.gw.set_fault(Route::Models, Some(Fault::Unauthorized));
    let out = s.run(&["models"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the gateway rejected a freshly minted token"),
        "{stderr}"
    );
    assert_eq!(s.gw.counters().requests(Route::Models), 2);
    assert_eq!(s.runs(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_prints_events_until_the_asked_type() {
    let s = Setup::new().await;
    let out = s
        .run(&[
            "realtime",
            "-m",
            "dev-small",
            "--send",
            r#"{"type":"response.create"}"#,
            "--until",
            "response.done",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let kinds: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("session.created"));
    assert_eq!(kinds.last().map(String::as_str), Some("response.done"));
    assert!(kinds.iter().any(|k| k == "response.output_text.delta"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_times_out_with_exit_1() {
    let s = Setup::new().await;
    let out = s
        .run(&[
            "realtime",
            "-m",
            "dev-small",
            "--until",
            "never.comes",
            "--timeout-ms",
            "300",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("timed out after 300 ms waiting for a `never.comes` event"));
    assert!(text(&out.stdout).contains("session.created"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_rejects_bad_send_json_as_usage() {
    let s = Setup::new().await;
    let out = s
        .run(&["realtime", "-m", "dev-small", "--send", "{not json"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(s.gw.counters().requests(Route::Realtime), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_json_reports_the_contract_fields() {
    let s = Setup::new().await;
    let out = s
        .run(&["bench", "--requests", "200", "--concurrency", "8", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "requests",
        "ok",
        "failed",
        "unauthorized",
        "command_runs",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "rps",
    ] {
        assert!(report.get(key).is_some(), "missing {key}: {report}");
    }
    assert_eq!(report["requests"], 200);
    assert_eq!(report["ok"], 200);
    assert_eq!(report["command_runs"], 1);
    // Found in trial: float noise such as `2002.4098829999998`. Three decimals at most.
    for key in ["p50_ms", "p90_ms", "p99_ms", "max_ms", "rps"] {
        let written = report[key].to_string();
        let decimals = written.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "{key} = {written}");
    }
    assert_eq!(s.runs(), 1);
    assert_eq!(s.gw.counters().requests(Route::Models), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_every_step_and_exits_0() {
    let out = tokio::process::Command::new(BIN)
        .arg("demo")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    for step in [
        "gateway",
        "check",
        "token",
        "models",
        "respond",
        "rotation",
        "realtime",
        "proxy",
        "refresh-ahead",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("ok  {step} "))),
            "step {step} missing:\n{stdout}"
        );
    }
    assert!(stdout.lines().last().unwrap().starts_with("demo ok in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_rejecting_every_token_does_not_flood_the_token_command() {
    let s = Setup::new().await;
    s.gw.set_fault(Route::Models, Some(Fault::Unauthorized));
    let out = s
        .run(&[
            "bench",
            "--requests",
            "2000",
            "--concurrency",
            "256",
            "--json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed"], 2000);
    // The first token, one run at once after the first 401 (a rotation), then the breaker
    // holds runs back for a step (1 s): the bench is over before that.
    assert!(
        s.runs() <= 3,
        "{} runs for 2000 requests: {report}",
        s.runs()
    );
    assert_eq!(report["command_runs"].as_u64(), Some(s.runs() as u64));
    assert!(
        text(&out.stderr).contains("the gateway rejected"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_goes_through_the_proxy_the_environment_names() {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let proxy = test_support::ConnectProxy::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("token.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho {}\n", gw.mint_token().access_token),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[model_providers.dev]\nname = \"Dev\"\nbase_url = \"{}\"\nauth = {{ command = \"./token.sh\" }}\n",
            gw.base_url()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .args([
            "realtime",
            "-p",
            "dev",
            "-m",
            "dev-small",
            "--until",
            "session.created",
        ])
        .env("HTTP_PROXY", proxy.url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("session.created"));
    assert_eq!(proxy.tunnels(), vec![gw.addr().to_string()]);
}

/// Found in trial: `modelauth realtime ... | head -1` went on running after `head` left.
/// A closed stdout ends the command, quietly, with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_stops_when_its_reader_goes_away() {
    use tokio::io::AsyncBufReadExt as _;
    let s = Setup::new().await;
    let mut child = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(s.script.dir().join("config.toml"))
        .args([
            "realtime",
            "-m",
            "dev-small",
            "--send",
            r#"{"type":"response.create"}"#,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    assert!(first.contains("session.created"), "{first}");
    // `head -1` leaves: the next events find the pipe closed.
    drop(lines);
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("still running after its reader went away")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert_eq!(stderr, "");
}
