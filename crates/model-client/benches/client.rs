//! Requests per second through `ModelClient` (`GET /models` on the dev gateway on loopback)
//! with command auth (warm shared cache) vs a static token, in the same run. Target: the
//! command-auth throughput is at least 0.97 of the static one.
//!
//! Run with `cargo bench -p model-client`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dev_gateway::{DevGateway, GatewayConfig};
use model_client::ModelClient;
use provider_auth::{AuthManager, AuthToken, StaticAuthManager, auth_manager_for_provider};
use provider_config::{ModelProviderAuthInfo, ModelProviderInfo};

fn throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gw = rt
        .block_on(DevGateway::start(GatewayConfig::default()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("token.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho {}\n", gw.mint_token().access_token),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut command_info = ModelProviderInfo::new("Bench", gw.base_url());
    command_info.auth = Some(ModelProviderAuthInfo::new(script.to_str().unwrap()));
    let command_auth = auth_manager_for_provider("bench", &command_info, None).unwrap();
    let command = ModelClient::new("bench", command_info, command_auth.clone()).unwrap();

    let static_auth: Arc<dyn AuthManager> = Arc::new(StaticAuthManager::new(
        "bench",
        AuthToken::new(gw.mint_token().access_token),
    ));
    let fixed = ModelClient::new(
        "bench",
        ModelProviderInfo::new("Bench", gw.base_url()),
        static_auth,
    )
    .unwrap();
    rt.block_on(command.list_models()).unwrap();
    rt.block_on(fixed.list_models()).unwrap();

    let mut group = c.benchmark_group("models_rps");
    group.throughput(Throughput::Elements(1));
    group.bench_function("static_token", |b| {
        b.to_async(&rt)
            .iter(|| async { fixed.list_models().await.unwrap() })
    });
    group.bench_function("command_auth", |b| {
        b.to_async(&rt)
            .iter(|| async { command.list_models().await.unwrap() })
    });
    group.finish();
    assert_eq!(command_auth.stats().unwrap().command_runs, 1);
}

criterion_group!(benches, throughput);
criterion_main!(benches);
