//! The shared store between two caches standing for two processes: one run for both, and a
//! rejected token invalidated once (compare-and-delete).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use provider_auth::{
    CachePolicy, CommandRefresher, ExternalAuthRefresher, SharedStore, StoreRefresher, TokenCache,
    TokenScope,
};
use support::Script;

fn process(script: &Script, store: &SharedStore) -> Arc<TokenCache> {
    let auth = script.auth_with_refresh(300_000);
    let command: Arc<dyn ExternalAuthRefresher> =
        Arc::new(CommandRefresher::new("corp", auth.clone()));
    TokenCache::new(
        Arc::new(StoreRefresher::new(
            command,
            store.clone(),
            &TokenScope::new("corp", "http://127.0.0.1:9/v1", auth.clone()),
        )),
        CachePolicy::new(auth.refresh_interval()),
    )
}

#[tokio::test]
async fn a_rejected_token_is_replaced_once_and_a_newer_one_is_left_alone() {
    let script = Script::new("echo tok-$N");
    let dir = tempfile::tempdir().unwrap();
    let store = SharedStore::at(&dir.path().join("store")).unwrap();
    let (a, b) = (process(&script, &store), process(&script, &store));
    let first = a.credential().await.unwrap();
    assert_eq!(first.token.expose_secret(), "tok-1");
    let seen_by_b = b.credential().await.unwrap();
    assert_eq!(seen_by_b.token.expose_secret(), "tok-1");
    assert_eq!(script.runs(), 1, "the second process read the store");
    assert_eq!(b.stats().command_runs, 0);
    assert!(b.token_status().unwrap().from_shared_store);
    // A sees a 401: the entry still holds tok-1, so it is replaced by one run.
    let second = a.unauthorized(&first).await.unwrap();
    assert_eq!(second.token.expose_secret(), "tok-2");
    // B sees a 401 for tok-1 too: the entry already holds tok-2, which B takes, no run.
    let b_second = b.unauthorized(&seen_by_b).await.unwrap();
    assert_eq!(b_second.token.expose_secret(), "tok-2");
    assert_eq!(script.runs(), 2);
    assert_eq!(
        std::fs::metadata(store.dir())
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap(),
        0o700
    );
}

#[tokio::test]
async fn a_token_read_from_the_store_keeps_its_age() {
    let script = Script::new("echo tok-$N");
    let dir = tempfile::tempdir().unwrap();
    let store = SharedStore::at(&dir.path().join("store")).unwrap();
    let mut auth = script.auth_with_refresh(2000);
    auth.refresh_interval_ms = Some(2000);
    let make = || {
        let command: Arc<dyn ExternalAuthRefresher> =
            Arc::new(CommandRefresher::new("corp", auth.clone()));
        TokenCache::new(
            Arc::new(StoreRefresher::new(
                command,
                store.clone(),
                &TokenScope::new("corp", "http://127.0.0.1:9/v1", auth.clone()),
            )),
            CachePolicy::new(auth.refresh_interval()).with_refresh_ahead(false),
        )
    };
    make().credential().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let late = make();
    late.credential().await.unwrap();
    let left = late.token_status().unwrap().expires_in.unwrap();
    assert!(
        left <= std::time::Duration::from_millis(850),
        "{left:?}: the age was not counted"
    );
}

#[tokio::test]
async fn helper_headers_travel_with_the_token_through_the_store() {
    let script =
        Script::new("echo '{\"token\":\"tok-'$N'\",\"headers\":{\"X-Tenant\":\"tenant-'$N'\"}}'");
    let dir = tempfile::tempdir().unwrap();
    let store = SharedStore::at(&dir.path().join("store")).unwrap();
    let mut auth = script.auth_with_refresh(300_000);
    auth.format = provider_config::TokenFormat::Json;
    let make = || {
        let command: Arc<dyn ExternalAuthRefresher> =
            Arc::new(CommandRefresher::new("corp", auth.clone()));
        TokenCache::new(
            Arc::new(StoreRefresher::new(
                command,
                store.clone(),
                &TokenScope::new("corp", "http://127.0.0.1:9/v1", auth.clone()),
            )),
            CachePolicy::new(auth.refresh_interval()),
        )
    };
    make().credential().await.unwrap();
    let other = make().credential().await.unwrap();
    assert_eq!(script.runs(), 1);
    let headers: Vec<(String, String)> = other
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.expose_secret().to_owned()))
        .collect();
    assert_eq!(headers, [("x-tenant".to_owned(), "tenant-1".to_owned())]);
}

/// Found in trial: a proxy whose token was rotated away read the token another process had
/// stored since; the gateway had revoked that one too, and the proxy held its next run
/// back ("a newly minted token was rejected"), answering 401 for a second. A token read
/// from the store is a rotation when rejected, whichever process minted it.
#[tokio::test]
async fn a_stored_token_the_gateway_rejects_is_a_rotation_in_every_process() {
    let script = Script::new("echo tok-$N");
    let dir = tempfile::tempdir().unwrap();
    let store = SharedStore::at(&dir.path().join("store")).unwrap();
    let proxy = process(&script, &store);
    let first = proxy.credential().await.unwrap();
    proxy.accepted(&first);
    // Another process stores a token of its own (its refresh, or `modelauth login`).
    let scope = TokenScope::new(
        "corp",
        "http://127.0.0.1:9/v1",
        script.auth_with_refresh(300_000),
    );
    store
        .save(
            &scope,
            &provider_auth::FreshToken::new(provider_auth::AuthToken::new("other-1".into())),
        )
        .unwrap();
    // The gateway revokes both. The proxy's token is rejected: it takes the stored one.
    let stored = proxy.unauthorized(&first).await.unwrap();
    assert_eq!(stored.token.expose_secret(), "other-1");
    assert_eq!(script.runs(), 1);
    // That one is rejected too: a rotation, run at once, not a hold.
    let fresh = proxy.unauthorized(&stored).await.unwrap();
    assert_eq!(fresh.token.expose_secret(), "tok-2");
    assert_eq!(script.runs(), 2);
}
