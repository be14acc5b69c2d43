//! The performance table of the README: every scenario against a baseline in the same run,
//! through the real client, auth manager and token commands, on the dev gateway on loopback.
//!
//! Run with `cargo bench -p modelauth --bench scenarios` (or `cargo xtask bench`); it prints
//! a Markdown table. Set `SCENARIO_SECONDS` to shorten the timed scenarios (default 10).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dev_gateway::{DevGateway, GatewayConfig};
use model_client::ModelClient;
use modelauth::load::{LoadLimit, LoadReport, run_load};
use provider_auth::{
    AuthError, AuthManager, AuthToken, CachePolicy, CachedAuthManager, CommandRefresher,
    Credential, Recovery, RequestAuth, StaticAuthManager, TokenCache, auth_manager_for_provider,
    run_token_command,
};
use provider_config::{ModelProviderAuthInfo, ModelProviderInfo};

struct Row {
    scenario: String,
    baseline: String,
    measured: String,
    ratio: String,
    target: String,
}

fn script(dir: &Path, name: &str, body: &str) -> ModelProviderAuthInfo {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut auth = ModelProviderAuthInfo::new(path.to_str().unwrap());
    auth.cwd = dir.to_path_buf();
    auth
}

fn provider(gw: &DevGateway, auth: Option<ModelProviderAuthInfo>) -> ModelProviderInfo {
    let mut info = ModelProviderInfo::new("Bench", gw.base_url());
    info.auth = auth;
    info
}

fn client(gw: &DevGateway, manager: Arc<dyn AuthManager>) -> ModelClient {
    ModelClient::new("bench", provider(gw, None), manager).unwrap()
}

fn static_manager(gw: &DevGateway) -> Arc<dyn AuthManager> {
    Arc::new(StaticAuthManager::new(
        "bench",
        AuthToken::new(gw.mint_token().access_token),
    ))
}

/// The naive baseline: runs the command for every request (a per-request callback).
#[derive(Debug)]
struct PerRequestCommand(ModelProviderAuthInfo);

#[async_trait]
impl AuthManager for PerRequestCommand {
    fn provider_id(&self) -> &str {
        "bench"
    }
    async fn credential(&self) -> Result<Option<Credential>, AuthError> {
        let fresh = run_token_command(&self.0)
            .await
            .map_err(|failure| AuthError::Command {
                provider: "bench".into(),
                program: "naive".into(),
                failure,
            })?;
        Ok(Some(Credential::new(fresh.token, 0)))
    }
    async fn unauthorized(&self, _sent: &Credential) -> Result<Recovery, AuthError> {
        Ok(Recovery::NotRecoverable)
    }
}

async fn ns_per_header(manager: &Arc<dyn AuthManager>, iterations: u32) -> f64 {
    let t = Instant::now();
    for _ in 0..iterations {
        let mut request = RequestAuth::new(manager.clone());
        std::hint::black_box(request.credential_headers().await.unwrap());
    }
    t.elapsed().as_nanos() as f64 / f64::from(iterations)
}

/// Rounds of interleaved measurements (A, B, A, B ...), so that a noisy machine shifts
/// both sides of every ratio alike.
const ROUNDS: usize = 3;

async fn interleaved(
    a: &ModelClient,
    b: &ModelClient,
    load: LoadLimit,
    concurrency: u64,
) -> (Vec<LoadReport>, Vec<LoadReport>) {
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ra.push(run_load(a, load, concurrency, None).await);
        rb.push(run_load(b, load, concurrency, None).await);
    }
    (ra, rb)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median of the per-round ratios `f(b) / f(a)`.
fn median_ratio(a: &[LoadReport], b: &[LoadReport], f: impl Fn(&LoadReport) -> f64) -> f64 {
    median(a.iter().zip(b).map(|(a, b)| f(b) / f(a)).collect())
}

fn fmt_load(r: &LoadReport) -> String {
    format!(
        "{:.0} req/s, p99 {:.2} ms, max {:.1} ms",
        r.rps, r.p99_ms, r.max_ms
    )
}

async fn scenarios(seconds: u64) -> Vec<Row> {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), gw.mint_token().access_token).unwrap();
    let quick = script(dir.path(), "quick.sh", "cat token");
    let slow = script(dir.path(), "slow.sh", "sleep 0.3\ncat token");
    let mut rows = Vec::new();

    // 1. Warm cache vs static token: the Authorization header for one request.
    let fixed = static_manager(&gw);
    let cached =
        auth_manager_for_provider("bench", &provider(&gw, Some(quick.clone())), None).unwrap();
    cached.credential().await.unwrap();
    let (mut best_static, mut best_cached) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        best_static = best_static.min(ns_per_header(&fixed, 200_000).await);
        best_cached = best_cached.min(ns_per_header(&cached, 200_000).await);
    }
    rows.push(Row {
        scenario: "1. warm-cache auth header vs static token".into(),
        baseline: format!("{best_static:.0} ns"),
        measured: format!("{best_cached:.0} ns"),
        ratio: format!("{:.2}x", best_cached / best_static),
        target: "<= 1.5x".into(),
    });

    // 2. Throughput through the dev gateway: interleaved rounds, median of the ratios.
    let load = LoadLimit::Duration(Duration::from_secs(seconds.min(3)));
    let static_client = client(&gw, fixed.clone());
    let command_client = client(&gw, cached.clone());
    let (base, measured) = interleaved(&static_client, &command_client, load, 16).await;
    rows.push(Row {
        scenario: format!(
            "2. GET /models throughput, command auth vs static (c=16, {ROUNDS} interleaved rounds)"
        ),
        baseline: format!("{:.0} req/s", median(base.iter().map(|r| r.rps).collect())),
        measured: format!(
            "{:.0} req/s",
            median(measured.iter().map(|r| r.rps).collect())
        ),
        ratio: format!(
            "{:.3}x (rounds: {})",
            median_ratio(&base, &measured, |r| r.rps),
            base.iter()
                .zip(&measured)
                .map(|(a, b)| format!("{:.3}", b.rps / a.rps))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        target: ">= 0.97x".into(),
    });

    // 3. 1000 concurrent cold requests; 1000 concurrent 401s.
    let cold_auth = script(dir.path(), "cold.sh", "sleep 0.2\ncat token");
    let cold = auth_manager_for_provider("bench", &provider(&gw, Some(cold_auth)), None).unwrap();
    let cold_client = client(&gw, cold.clone());
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let c = cold_client.clone();
            tokio::spawn(async move { c.list_models().await.is_ok() })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    let cold_runs = cold.stats().unwrap().command_runs;
    gw.rotate();
    std::fs::write(dir.path().join("token"), gw.mint_token().access_token).unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let c = cold_client.clone();
            tokio::spawn(async move { c.list_models().await.is_ok() })
        })
        .collect();
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    let rotation_runs = cold.stats().unwrap().command_runs - cold_runs;
    rows.push(Row {
        scenario: format!(
            "3. 1000 concurrent cold requests / then 1000 concurrent 401s ({ok}/2000 ok)"
        ),
        baseline: "-".into(),
        measured: format!("{cold_runs} / {rotation_runs} runs"),
        ratio: "-".into(),
        target: "1 / 1".into(),
    });

    // 4 and 5. Lifetime 1 s, a 300 ms command, concurrency 16: refresh ahead on and off.
    let timed = LoadLimit::Duration(Duration::from_secs(seconds));
    let mut slow_1s = slow.clone();
    slow_1s.refresh_interval_ms = Some(1000);
    let static_report = run_load(&client(&gw, static_manager(&gw)), timed, 16, None).await;
    let ahead =
        auth_manager_for_provider("bench", &provider(&gw, Some(slow_1s.clone())), None).unwrap();
    // The first token is a cold start for any cache: fetch it before the clock starts.
    ahead.credential().await.unwrap();
    let ahead_report = run_load(&client(&gw, ahead.clone()), timed, 16, None).await;
    rows.push(Row {
        scenario: format!(
            "4. refresh ahead on: lifetime 1 s, 300 ms command, c=16, {seconds} s ({} runs)",
            ahead_report.command_runs
        ),
        baseline: fmt_load(&static_report),
        measured: fmt_load(&ahead_report),
        ratio: format!("p99 {:.2}x", ahead_report.p99_ms / static_report.p99_ms),
        target: "p99 <= 1.2x, max < 300 ms".into(),
    });
    let off_cache = TokenCache::new(
        Arc::new(CommandRefresher::new("bench", slow_1s.clone())),
        CachePolicy::new(slow_1s.refresh_interval()).with_refresh_ahead(false),
    );
    let off: Arc<dyn AuthManager> = Arc::new(CachedAuthManager::new("bench", off_cache));
    off.credential().await.unwrap();
    let off_report = run_load(&client(&gw, off), timed, 16, None).await;
    rows.push(Row {
        scenario: format!(
            "5. refresh ahead off: same load ({} runs)",
            off_report.command_runs
        ),
        baseline: fmt_load(&static_report),
        measured: fmt_load(&off_report),
        ratio: format!("p99 {:.2}x", off_report.p99_ms / static_report.p99_ms),
        target: "(shows what 4 buys)".into(),
    });

    // 6. Naive: the (quick) command for every request.
    let short = LoadLimit::Duration(Duration::from_secs(seconds.min(3)));
    let naive: Arc<dyn AuthManager> = Arc::new(PerRequestCommand(quick.clone()));
    let (cached_runs, naive_runs) =
        interleaved(&command_client, &client(&gw, naive), short, 16).await;
    rows.push(Row {
        scenario: format!(
            "6. command run per request (naive) vs cached command auth (c=16, {ROUNDS} interleaved rounds)"
        ),
        baseline: fmt_load(&cached_runs[0]),
        measured: fmt_load(&naive_runs[0]),
        ratio: format!(
            "{:.3}x throughput",
            median_ratio(&cached_runs, &naive_runs, |r| r.rps)
        ),
        target: "(shows what the cache buys)".into(),
    });
    rows
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects nothing here.
    let seconds = std::env::var("SCENARIO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows = rt.block_on(scenarios(seconds));
    println!("| scenario | baseline | measured | ratio | target |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.scenario, r.baseline, r.measured, r.ratio, r.target
        );
    }
}
