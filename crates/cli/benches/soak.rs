//! Soak: 1,000,000 `GET /models` through the real client, auth manager and token command on
//! the dev gateway, with the gateway's tokens rotated every second and a 401 storm (the next
//! 256 requests answered 401 whatever their token) every 10 seconds. Prints failures, command
//! runs per rotation, and RSS and open file descriptors at start and end.
//!
//! Run with `cargo bench -p modelauth --bench soak` (or `cargo xtask bench`). Set
//! `SOAK_REQUESTS` to change the request count.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dev_gateway::{DevGateway, Fault, GatewayConfig, Route};
use model_client::ModelClient;
use modelauth::load::{LoadLimit, run_load};
use provider_auth::auth_manager_for_provider;
use provider_config::{ModelProviderAuthInfo, ModelProviderInfo};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

async fn soak(requests: u64) {
    let gw = Arc::new(DevGateway::start(GatewayConfig::default()).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, gw.mint_token().access_token).unwrap();
    let script = dir.path().join("token.sh");
    std::fs::write(&script, "#!/bin/sh\ncat token\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut auth = ModelProviderAuthInfo::new(script.to_str().unwrap());
    auth.cwd = dir.path().to_path_buf();
    let mut info = ModelProviderInfo::new("Soak", gw.base_url());
    info.auth = Some(auth);
    let manager = auth_manager_for_provider("soak", &info, None).unwrap();
    let client = ModelClient::new("soak", info, manager.clone()).unwrap();
    // Warm up at the same concurrency, so the connection pool and the gateway's sockets are
    // open before the start figures are taken.
    run_load(&client, LoadLimit::Requests(20_000), 64, None).await;
    let (rss_start, fds_start) = (test_support::rss_kib(std::process::id()), open_fds());

    let done = Arc::new(AtomicBool::new(false));
    let rotations = Arc::new(AtomicU64::new(0));
    let storms = Arc::new(AtomicU64::new(0));
    let rotator = {
        let (gw, done, rotations, storms) =
            (gw.clone(), done.clone(), rotations.clone(), storms.clone());
        let token_file = token_file.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            ticks.tick().await;
            let mut second = 0u64;
            while !done.load(Ordering::Relaxed) {
                ticks.tick().await;
                second += 1;
                gw.rotate();
                std::fs::write(&token_file, gw.mint_token().access_token).unwrap();
                rotations.fetch_add(1, Ordering::Relaxed);
                if second.is_multiple_of(10) {
                    gw.set_fault_times(Route::Models, Fault::Unauthorized, 256);
                    storms.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let started = Instant::now();
    let report = run_load(&client, LoadLimit::Requests(requests), 64, None).await;
    done.store(true, Ordering::Relaxed);
    rotator.abort();
    let (rss_end, fds_end) = (test_support::rss_kib(std::process::id()), open_fds());
    let rotations = rotations.load(Ordering::Relaxed).max(1);
    println!(
        "soak: {} requests at c=64 in {:.1} s ({:.0} req/s)",
        report.requests,
        started.elapsed().as_secs_f64(),
        report.rps
    );
    println!(
        "  {} ok, {} failed, {} answered 401; {} rotations, {} storms of 256 forced 401s",
        report.ok,
        report.failed,
        report.unauthorized,
        rotations,
        storms.load(Ordering::Relaxed)
    );
    println!(
        "  {} command runs: {:.2} per rotation",
        report.command_runs,
        report.command_runs as f64 / rotations as f64
    );
    println!(
        "  RSS {rss_start} KiB at start, {rss_end} KiB at end; open fds {fds_start} at start, {fds_end} at end"
    );
    if let Some(e) = report.first_error {
        println!("  first error: {e}");
    }
}

fn main() {
    let requests = std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(soak(requests));
}
