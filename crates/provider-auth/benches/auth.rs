//! Benchmarks of the auth hot paths, each against a baseline in the same run:
//!
//! - `warm_cache`: the Authorization header for a request from a warm command-backed cache,
//!   vs the same from a static-token manager (target ratio at most 1.5);
//! - `spawn_to_token`: running a trivial token command through the runner, vs
//!   `std::process::Command::output()` of the same program (target ratio at most 1.2);
//! - `scrub_check`: [`Scrubber::finds_secret`] over 16 KiB of gateway JSON that holds no
//!   copy (what every answer header and every SSE event through the proxy pays), with the
//!   scrubber of three tokens in all their forms, vs one `memchr::memmem` search for the raw
//!   token in the same text.
//!
//! Run with `cargo bench -p provider-auth`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use provider_auth::{
    AuthManager, AuthToken, RequestAuth, Scrubber, StaticAuthManager, auth_manager_for_provider,
    run_token_command,
};
use provider_config::{ModelProviderAuthInfo, ModelProviderInfo};

fn warm_cache(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("token.sh");
    std::fs::write(&script, "#!/bin/sh\necho bench-token-0123456789\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut info = ModelProviderInfo::new("Bench", "http://127.0.0.1:9/v1");
    info.auth = Some(ModelProviderAuthInfo::new(script.to_str().unwrap()));
    let command: Arc<dyn AuthManager> = auth_manager_for_provider("bench", &info, None).unwrap();
    rt.block_on(command.credential()).unwrap();
    let fixed: Arc<dyn AuthManager> = Arc::new(StaticAuthManager::new(
        "bench",
        AuthToken::new("bench-token-0123456789".to_owned()),
    ));

    let mut group = c.benchmark_group("warm_cache");
    group.bench_function("static_token", |b| {
        b.to_async(&rt).iter(|| async {
            let mut request = RequestAuth::new(fixed.clone());
            black_box(request.credential_headers().await.unwrap())
        })
    });
    group.bench_function("command_cache", |b| {
        b.to_async(&rt).iter(|| async {
            let mut request = RequestAuth::new(command.clone());
            black_box(request.credential_headers().await.unwrap())
        })
    });
    group.finish();
    assert_eq!(command.stats().unwrap().command_runs, 1);
}

fn spawn_to_token(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut auth = ModelProviderAuthInfo::new("/bin/echo");
    auth.args = vec!["bench-token-0123456789".to_owned()];
    let mut group = c.benchmark_group("spawn_to_token");
    group.sample_size(50);
    group.bench_function("std_command_output", |b| {
        b.iter(|| {
            let out = std::process::Command::new("/bin/echo")
                .arg("bench-token-0123456789")
                .output()
                .unwrap();
            black_box(String::from_utf8(out.stdout).unwrap().trim().to_owned())
        })
    });
    group.bench_function("token_command", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(run_token_command(&auth).await.unwrap()) })
    });
    group.finish();
}

fn scrub_check(c: &mut Criterion) {
    let tokens = [
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJlLWJlbmNo",
        "sk-bench-previous-0123456789abcdef",
        "sk-bench-older-fedcba9876543210",
    ];
    let scrubber = Scrubber::new(tokens);
    let event = r#"data: {"type":"response.output_text.delta","item_id":"msg_0123","delta":"Some ordinary model output, with numbers 12345 and words."}"#;
    let mut text = String::new();
    while text.len() < 16 * 1024 {
        text.push_str(event);
        text.push_str("\n\n");
    }
    let finder = memchr::memmem::Finder::new(tokens[0].as_bytes());
    let mut group = c.benchmark_group("scrub_check");
    group.throughput(criterion::Throughput::Bytes(text.len() as u64));
    group.bench_function("memmem_one_token", |b| {
        b.iter(|| black_box(finder.find(black_box(text.as_bytes()))))
    });
    group.bench_function("finds_secret", |b| {
        b.iter(|| black_box(scrubber.finds_secret(black_box(text.as_bytes()))))
    });
    group.finish();
    assert!(!scrubber.finds_secret(text.as_bytes()));
}

criterion_group!(benches, warm_cache, spawn_to_token, scrub_check);
criterion_main!(benches);
