//! The shared token cache with real token commands: caching, single flight, refresh
//! ahead, backoff and 401 invalidation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use provider_auth::{CachePolicy, CommandRefresher, Credential, TokenCache};
use provider_config::{ModelProviderAuthInfo, TokenFormat};
use support::Script;

fn cache(auth: &ModelProviderAuthInfo, refresh_ahead: bool) -> Arc<TokenCache> {
    TokenCache::new(
        Arc::new(CommandRefresher::new("corp", auth.clone())),
        CachePolicy::new(auth.refresh_interval()).with_refresh_ahead(refresh_ahead),
    )
}

async fn secret(cache: &Arc<TokenCache>) -> String {
    cache
        .credential()
        .await
        .unwrap()
        .token
        .expose_secret()
        .to_owned()
}

#[tokio::test]
async fn hundred_sequential_calls_within_the_interval_run_once() {
    let script = Script::new("echo tok-$N");
    let cache = cache(&script.auth_with_refresh(300_000), true);
    for _ in 0..100 {
        assert_eq!(secret(&cache).await, "tok-1");
    }
    assert_eq!(script.runs(), 1);
    let stats = cache.stats();
    assert_eq!((stats.command_runs, stats.cache_hits), (1, 99));
}

#[tokio::test]
async fn command_reruns_after_the_interval() {
    let script = Script::new("echo tok-$N");
    let cache = cache(&script.auth_with_refresh(300), false);
    assert_eq!(secret(&cache).await, "tok-1");
    let status = cache.token_status().unwrap();
    assert!(status.expires_in.unwrap() <= Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        cache.token_status().is_none(),
        "token outlived its interval"
    );
    assert_eq!(secret(&cache).await, "tok-2");
    assert_eq!(script.runs(), 2);
}

#[tokio::test]
async fn refresh_interval_zero_reruns_only_after_401() {
    let script = Script::new("echo tok-$N");
    let cache = cache(&script.auth_with_refresh(0), true);
    let first = cache.credential().await.unwrap();
    for _ in 0..50 {
        assert_eq!(secret(&cache).await, "tok-1");
    }
    assert_eq!(cache.token_status().unwrap().expires_in, None);
    assert_eq!(script.runs(), 1);
    let fresh = cache.unauthorized(&first).await.unwrap();
    assert_eq!(fresh.token.expose_secret(), "tok-2");
    assert_eq!(secret(&cache).await, "tok-2");
    assert_eq!(script.runs(), 2);
    assert_eq!(cache.stats().refreshes_after_401, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_cold_callers_run_the_command_once() {
    let script = Script::new("sleep 0.3\necho tok-$N");
    let cache = cache(&script.auth_with_refresh(300_000), true);
    support::cold_callers_share_the_first_generation(&cache, 1000).await;
    assert_eq!(script.runs(), 1);
    assert_eq!(cache.stats().command_runs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_401s_on_one_credential_run_the_command_once() {
    let script = Script::new("sleep 0.2\necho tok-$N");
    let cache = cache(&script.auth_with_refresh(300_000), true);
    let sent = cache.credential().await.unwrap();
    let reports: Vec<_> = (0..1000)
        .map(|_| {
            let cache = cache.clone();
            let sent = sent.clone();
            tokio::spawn(async move { cache.unauthorized(&sent).await.map(|c| c.generation) })
        })
        .collect();
    for report in reports {
        assert_eq!(report.await.unwrap().unwrap(), 2);
    }
    assert_eq!(script.runs(), 2);
    assert_eq!(cache.stats().refreshes_after_401, 1);
    assert_eq!(secret(&cache).await, "tok-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_401_reports_after_a_failed_run_do_not_rerun() {
    let script = Script::new("[ \"$N\" -gt 1 ] && { echo 'idp down' >&2; exit 1; }\necho tok-$N");
    let cache = cache(&script.auth_with_refresh(300_000), true);
    let sent = cache.credential().await.unwrap();
    let err = cache.unauthorized(&sent).await.unwrap_err();
    assert!(err.to_string().contains("idp down"), "{err}");
    let reports: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            let sent = sent.clone();
            tokio::spawn(async move { cache.unauthorized(&sent).await.is_err() })
        })
        .collect();
    for report in reports {
        assert!(report.await.unwrap());
    }
    assert_eq!(script.runs(), 2);
    assert!(
        cache.credential().await.is_err(),
        "the rejected token came back"
    );
}

#[tokio::test]
async fn a_401_for_an_older_credential_does_not_rerun() {
    let script = Script::new("echo tok-$N");
    let cache = cache(&script.auth_with_refresh(0), true);
    let old: Credential = cache.credential().await.unwrap();
    let newer = cache.unauthorized(&old).await.unwrap();
    assert_eq!(script.runs(), 2);
    // A late 401 for the first token: the newer one is handed out, nothing runs.
    let again = cache.unauthorized(&old).await.unwrap();
    assert_eq!(again.generation, newer.generation);
    assert_eq!(again.token.expose_secret(), "tok-2");
    assert_eq!(script.runs(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_never_wait_during_a_slow_background_refresh() {
    // Lifetime 1 s; the command takes 500 ms after its first run.
    let script = Script::new("[ \"$N\" -gt 1 ] && sleep 0.5\necho tok-$N");
    let cache = cache(&script.auth_with_refresh(1000), true);
    assert_eq!(secret(&cache).await, "tok-1");
    let refresh_in = cache.token_status().unwrap().refresh_in.unwrap();
    tokio::time::sleep(refresh_in + Duration::from_millis(20)).await;
    // From here on a background refresh runs for 500 ms; nobody may wait for it.
    let mut saw_old = 0;
    let deadline = Instant::now() + Duration::from_millis(900);
    while Instant::now() < deadline {
        let got = tokio::time::timeout(Duration::from_millis(200), secret(&cache))
            .await
            .expect("a caller waited for the background refresh");
        if got == "tok-1" {
            saw_old += 1;
        } else {
            assert_eq!(got, "tok-2");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_old > 0);
    assert_eq!(secret(&cache).await, "tok-2");
    assert_eq!(script.runs(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_background_refresh_keeps_the_old_token_until_its_lifetime_ends() {
    let script =
        Script::new("[ \"$N\" -gt 1 ] && { echo 'backend down' >&2; exit 7; }\necho tok-$N");
    let cache = cache(&script.auth_with_refresh(2000), true);
    assert_eq!(secret(&cache).await, "tok-1");
    let status = cache.token_status().unwrap();
    tokio::time::sleep(status.refresh_in.unwrap() + Duration::from_millis(20)).await;
    // Triggers the background refresh, which fails.
    assert_eq!(secret(&cache).await, "tok-1");
    support::wait_until(Duration::from_secs(5), || {
        (cache.stats().failures == 1).then_some(())
    })
    .expect("the background refresh never failed");
    assert_eq!(secret(&cache).await, "tok-1");
    tokio::time::sleep(
        cache.token_status().unwrap().expires_in.unwrap() + Duration::from_millis(20),
    )
    .await;
    // Lifetime over, inside the backoff window: the failure is returned without a run.
    let err = cache.credential().await.unwrap_err().to_string();
    assert!(
        err.contains("exited with status 7") && err.contains("backend down"),
        "{err}"
    );
    assert_eq!(script.runs(), 2);
}

#[tokio::test]
async fn failing_command_is_not_rerun_inside_the_backoff_window() {
    let script = Script::new("echo nope >&2\nexit 1");
    let cache = cache(&script.auth_with_refresh(300_000), true);
    for _ in 0..50 {
        let err = cache.credential().await.unwrap_err();
        assert!(err.to_string().contains("nope"));
    }
    assert_eq!(script.runs(), 1);
    assert_eq!(cache.stats().failures, 1);
}

/// Backoff steps of 100 ms doubling to 800 ms, so the breaker tests are quick.
fn fast_policy(refresh_interval: Option<Duration>) -> CachePolicy {
    let mut policy = CachePolicy::new(refresh_interval);
    policy.initial_backoff = Duration::from_millis(100);
    policy.max_backoff = Duration::from_millis(800);
    policy
}

/// `callers` tasks that each get a credential and report it rejected, again and again,
/// for `span`: a gateway that rejects every token.
async fn reject_everything(cache: &Arc<TokenCache>, callers: usize, span: Duration) {
    let deadline = Instant::now() + span;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if let Ok(sent) = cache.credential().await {
                        let _ = cache.unauthorized(&sent).await;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_rejecting_every_token_costs_one_run_per_backoff_step() {
    let script = Script::new("echo tok-$N");
    let auth = script.auth_with_refresh(300_000);
    let cache = TokenCache::new(
        Arc::new(CommandRefresher::new("corp", auth.clone())),
        fast_policy(auth.refresh_interval()),
    );
    reject_everything(&cache, 256, Duration::from_millis(1600)).await;
    // Runs at 0 (first token), at once after the first rejection (a rotation), then one
    // per step: +100, +200, +400, +800 ms. Without the breaker: one run per rejection.
    let runs = script.runs();
    assert!((4..=6).contains(&runs), "{runs} runs in 1.6 s");
    let sent = cache.credential().await.unwrap();
    let err = cache.unauthorized(&sent).await.unwrap_err().to_string();
    assert!(
        err.contains("the gateway rejected a newly minted token from command")
            && err.contains("the next run is held back"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_printing_an_expired_token_runs_once_per_backoff_step() {
    let script = Script::new("echo '{\"access_token\":\"tok-'$N'\",\"expires_in\":0}'");
    let mut auth = script.auth_with_refresh(300_000);
    auth.format = TokenFormat::Json;
    let cache = TokenCache::new(
        Arc::new(CommandRefresher::new("corp", auth.clone())),
        fast_policy(auth.refresh_interval()),
    );
    let deadline = Instant::now() + Duration::from_millis(1600);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                let mut served = 0u64;
                while Instant::now() < deadline {
                    // The token is served (a skewed clock may be all that is wrong).
                    cache.credential().await.unwrap();
                    served += 1;
                    tokio::task::yield_now().await;
                }
                served
            })
        })
        .collect();
    let mut served = 0;
    for t in tasks {
        served += t.await.unwrap();
    }
    // Steps of 100, 200, 400, 800 ms: runs at 0, 0.1, 0.3, 0.7, 1.5 s.
    let runs = script.runs();
    assert!((3..=6).contains(&runs), "{runs} runs for {served} calls");
    assert!(served > 1000, "only {served} calls were served");
}

#[tokio::test]
async fn a_rotation_is_recovered_at_once_and_a_rejected_new_token_is_held_back() {
    let script = Script::new("echo tok-$N");
    let auth = script.auth_with_refresh(300_000);
    let cache = TokenCache::new(
        Arc::new(CommandRefresher::new("corp", auth.clone())),
        fast_policy(auth.refresh_interval()),
    );
    let first = cache.credential().await.unwrap();
    // The gateway rotated: the first rejection runs the command at once.
    let second = cache.unauthorized(&first).await.unwrap();
    assert_eq!(second.token.expose_secret(), "tok-2");
    // A late report of the old token gets the new one, no run.
    let again = cache.unauthorized(&first).await.unwrap();
    assert_eq!(again.token.expose_secret(), "tok-2");
    assert_eq!(script.runs(), 2);
    // The new token is rejected as well, before it proved itself: held back one step, and
    // it stays in use meanwhile (the rejections may have been a passing storm).
    let err = cache.unauthorized(&second).await.unwrap_err();
    assert!(err.to_string().contains("held back"), "{err}");
    assert_eq!(secret(&cache).await, "tok-2");
    assert!(cache.unauthorized(&second).await.is_err());
    assert_eq!(script.runs(), 2);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let third = cache.unauthorized(&second).await.unwrap();
    assert_eq!(third.token.expose_secret(), "tok-3");
    // tok-3 proves itself (lives past its probation of 200 ms): the next rotation is again
    // recovered at once.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let fourth = cache.unauthorized(&third).await.unwrap();
    assert_eq!(fourth.token.expose_secret(), "tok-4");
}

#[tokio::test]
async fn rotations_in_quick_succession_are_recovered_at_once_when_each_token_was_accepted() {
    let script = Script::new("echo tok-$N");
    let auth = script.auth_with_refresh(300_000);
    let cache = TokenCache::new(
        Arc::new(CommandRefresher::new("corp", auth.clone())),
        fast_policy(auth.refresh_interval()),
    );
    let mut sent = cache.credential().await.unwrap();
    for generation in 2..=6 {
        // The gateway took the token, then rotated it (within the 100 ms probation).
        cache.accepted(&sent);
        sent = cache.unauthorized(&sent).await.unwrap();
        assert_eq!(sent.token.expose_secret(), format!("tok-{generation}"));
    }
    assert_eq!(script.runs(), 6);
}

async fn lifetime_of(body: &str, format: TokenFormat) -> Duration {
    let script = Script::new(body);
    let mut auth = script.auth_with_refresh(300_000);
    auth.format = format;
    let cache = cache(&auth, true);
    cache.credential().await.unwrap();
    cache.token_status().unwrap().expires_in.unwrap()
}

#[tokio::test]
async fn oauth_expires_in_shortens_the_lifetime() {
    // 100 s left, skew 10 s: about 90 s.
    let left = lifetime_of(
        "echo '{\"access_token\":\"a\",\"expires_in\":100}'",
        TokenFormat::Json,
    )
    .await;
    assert!(
        left > Duration::from_secs(88) && left <= Duration::from_secs(90),
        "{left:?}"
    );
}

#[tokio::test]
async fn expires_at_shortens_the_lifetime() {
    let left = lifetime_of(
        "echo \"{\\\"token\\\":\\\"a\\\",\\\"expires_at\\\":\\\"$(date -u -d '+200 seconds' +%Y-%m-%dT%H:%M:%SZ)\\\"}\"",
        TokenFormat::Json,
    )
    .await;
    // 200 s left (to the second), skew 20 s.
    assert!(
        left > Duration::from_secs(176) && left <= Duration::from_secs(180),
        "{left:?}"
    );
}

#[tokio::test]
async fn exec_credential_expiry_is_honoured_with_skew_capped_at_60s() {
    let left = lifetime_of(
        "echo \"{\\\"apiVersion\\\":\\\"client.authentication.k8s.io/v1\\\",\\\"kind\\\":\\\"ExecCredential\\\",\\\"status\\\":{\\\"token\\\":\\\"k\\\",\\\"expirationTimestamp\\\":\\\"$(date -u -d '+1200 seconds' +%Y-%m-%dT%H:%M:%SZ)\\\"}}\"",
        TokenFormat::Json,
    )
    .await;
    // Interval 300 s is shorter than 1200 - 60 s.
    assert!(
        left > Duration::from_secs(298) && left <= Duration::from_secs(300),
        "{left:?}"
    );
}

#[tokio::test]
async fn jwt_exp_is_honoured() {
    // header {"alg":"none"}, payload {"exp": now + 50}
    let body = r#"exp=$(( $(date +%s) + 50 ))
payload=$(printf '{"sub":"u","exp":%s}' "$exp" | base64 -w0 | tr '+/' '-_' | tr -d '=')
printf 'eyJhbGciOiJub25lIn0.%s.c2ln\n' "$payload""#;
    let left = lifetime_of(body, TokenFormat::Text).await;
    assert!(
        left > Duration::from_secs(43) && left <= Duration::from_secs(45),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_is_told_its_provider_and_why_it_runs() {
    let script = Script::new(
        "echo \"$MODELAUTH_PROVIDER $MODELAUTH_REFRESH_REASON\" >> \"$D/reasons\"\necho tok-$N",
    );
    let cache = cache(&script.auth_with_refresh(500), true);
    let first = cache.credential().await.unwrap();
    tokio::time::sleep(
        cache.token_status().unwrap().refresh_in.unwrap() + Duration::from_millis(20),
    )
    .await;
    cache.credential().await.unwrap();
    // The refresh ahead runs on this runtime: wait for it here without blocking it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let current = loop {
        let current = cache.credential().await.unwrap();
        if current.generation > first.generation {
            break current;
        }
        assert!(Instant::now() < deadline, "no refresh ahead");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(script.runs(), 2);
    cache.unauthorized(&current).await.unwrap();
    // No call until the lifetime is over: the next one finds it expired.
    tokio::time::sleep(Duration::from_millis(600)).await;
    cache.credential().await.unwrap();
    let reasons = std::fs::read_to_string(script.dir().join("reasons")).unwrap();
    assert_eq!(
        reasons,
        "corp initial\ncorp refresh_ahead\ncorp unauthorized\ncorp expired\n"
    );
}

/// Found in trial: a one-hour OAuth2 token was used for five minutes, because the default
/// `refresh_interval_ms` capped it (12 times the IdP calls). A stated expiry governs, and
/// `refresh_interval_ms` caps it only when the config sets it.
#[tokio::test]
async fn a_stated_expiry_governs_unless_refresh_interval_ms_is_set() {
    let script = Script::new(r#"echo '{"access_token":"tok-'$N'","expires_in":3600}'"#);
    let mut auth = script.auth();
    auth.format = TokenFormat::Json;
    let used_for = |auth: &ModelProviderAuthInfo| {
        let auth = auth.clone();
        async move {
            let cache = TokenCache::new(
                Arc::new(CommandRefresher::new("corp", auth.clone())),
                CachePolicy::for_auth(&auth),
            );
            cache.credential().await.unwrap();
            cache.token_status().unwrap().expires_in.unwrap()
        }
    };
    // One hour less the skew (60 s).
    let default = used_for(&auth).await;
    assert!(
        default > Duration::from_secs(3530) && default <= Duration::from_secs(3540),
        "{default:?}"
    );
    auth.refresh_interval_ms = Some(300_000);
    let capped = used_for(&auth).await;
    assert!(capped <= Duration::from_secs(300), "{capped:?}");
    assert!(capped > Duration::from_secs(290), "{capped:?}");
    // With no stated expiry the default interval (5 minutes) applies.
    let plain = Script::new("echo tok-$N");
    let plain_for = used_for(&plain.auth()).await;
    assert!(
        plain_for <= Duration::from_secs(300) && plain_for > Duration::from_secs(290),
        "{plain_for:?}"
    );
}

/// Found in trial: a refresh script that traces the previous token on stderr (`set -x`,
/// `curl -v`) and fails put that token in the error (the CLI's, the `-v` line, the proxy's
/// 502 body). The excerpt is scrubbed of every token the cache handed out.
#[tokio::test]
async fn a_failed_runs_stderr_never_carries_a_token_handed_out() {
    let script = Script::new(
        "if [ $N -eq 1 ]; then echo tok-SECRET-first-0123456789; exit 0; fi\n\
         echo \"+ curl -H 'Authorization: Bearer tok-SECRET-first-0123456789'\" >&2\nexit 1",
    );
    let cache = cache(&script.auth(), false);
    let first = cache.credential().await.unwrap();
    let err = cache.unauthorized(&first).await.unwrap_err().to_string();
    assert!(!err.contains("tok-SECRET"), "{err}");
    assert!(err.contains("Authorization: Bearer [REDACTED]"), "{err}");
}
