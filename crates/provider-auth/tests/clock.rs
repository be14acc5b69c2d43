//! The cache's timing rules on a paused clock (tokio's, which the cache reads): lifetimes,
//! refresh ahead at 80%, the skew under a stated expiry and the backoff steps, each to the
//! millisecond, with a token source in this process that counts its calls. The tests with
//! real token commands (`cache.rs`) prove the rest: processes, single flight, stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use provider_auth::{
    AuthError, AuthToken, CachePolicy, ExternalAuthRefresher, FreshToken, RefreshReason, TokenCache,
};

/// What the source answers on each call, in order; the last answer repeats.
#[derive(Clone)]
enum Answer {
    /// `tok-N` (N = the call's number), stating no expiry.
    Token,
    /// `tok-N`, stating it expires this long after now (the machine's clock).
    Expiring(Duration),
    /// A failure.
    Fail,
}

struct Source {
    answers: Mutex<VecDeque<Answer>>,
    calls: AtomicUsize,
}

impl Source {
    fn new(answers: &[Answer]) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.iter().cloned().collect()),
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl ExternalAuthRefresher for Source {
    async fn refresh(&self, _reason: RefreshReason) -> Result<FreshToken, AuthError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let answer = {
            let mut answers = self.answers.lock().unwrap();
            if answers.len() > 1 {
                answers.pop_front().unwrap()
            } else {
                answers.front().cloned().unwrap()
            }
        };
        let token = AuthToken::new(format!("tok-{n}"));
        match answer {
            Answer::Token => Ok(FreshToken::new(token)),
            Answer::Expiring(left) => {
                let mut fresh = FreshToken::new(token);
                fresh.expires_at = Some(SystemTime::now() + left);
                Ok(fresh)
            }
            Answer::Fail => Err(AuthError::Source {
                provider: "dev".into(),
                message: format!("down ({n})"),
            }),
        }
    }
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

/// Lets a background refresh started by the last call run to its end.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn a_token_that_states_no_expiry_lives_its_interval_to_the_millisecond() {
    let source = Source::new(&[Answer::Token]);
    let cache = TokenCache::new(
        source.clone(),
        CachePolicy::new(Some(Duration::from_secs(300))).with_refresh_ahead(false),
    );
    assert_eq!(secret(&cache).await, "tok-1");
    tokio::time::advance(Duration::from_secs(300) - MS).await;
    assert_eq!(secret(&cache).await, "tok-1");
    assert_eq!(source.calls(), 1);
    tokio::time::advance(MS).await;
    assert_eq!(
        secret(&cache).await,
        "tok-2",
        "the token outlived its interval"
    );
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_starts_at_80_percent_and_no_caller_waits_for_it() {
    let source = Source::new(&[Answer::Token]);
    let cache = TokenCache::new(
        source.clone(),
        CachePolicy::new(Some(Duration::from_secs(100))),
    );
    assert_eq!(secret(&cache).await, "tok-1");
    tokio::time::advance(Duration::from_secs(80) - MS).await;
    assert_eq!(secret(&cache).await, "tok-1");
    settle().await;
    assert_eq!(source.calls(), 1, "refreshed before 80% of the lifetime");
    tokio::time::advance(MS).await;
    // Due: this caller gets the token it had, and the refresh runs in the background.
    assert_eq!(secret(&cache).await, "tok-1");
    settle().await;
    assert_eq!(source.calls(), 2);
    assert_eq!(secret(&cache).await, "tok-2");
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stated_expiry_is_used_less_its_skew() {
    // 1,000 s left: the skew is min(60 s, 10%) = 60 s, so the token is used for 940 s
    // (less the moment between the source's answer and the cache's reading of the clock).
    let source = Source::new(&[Answer::Expiring(Duration::from_secs(1000))]);
    let cache = TokenCache::new(
        source.clone(),
        CachePolicy::new(None).with_refresh_ahead(false),
    );
    assert_eq!(secret(&cache).await, "tok-1");
    let expires_in = cache.token_status().unwrap().expires_in.unwrap();
    assert!(
        expires_in <= Duration::from_secs(940) && expires_in > Duration::from_secs(939),
        "{expires_in:?}"
    );
    tokio::time::advance(Duration::from_secs(939)).await;
    assert_eq!(secret(&cache).await, "tok-1");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(secret(&cache).await, "tok-2");
    // 100 s left: the skew is 10%, 10 s.
    let source = Source::new(&[Answer::Expiring(Duration::from_secs(100))]);
    let cache = TokenCache::new(source, CachePolicy::new(None).with_refresh_ahead(false));
    assert_eq!(secret(&cache).await, "tok-1");
    let expires_in = cache.token_status().unwrap().expires_in.unwrap();
    assert!(
        expires_in <= Duration::from_secs(90) && expires_in > Duration::from_secs(89),
        "{expires_in:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_source_is_called_once_per_backoff_step_doubling_to_the_cap() {
    let source = Source::new(&[Answer::Fail]);
    let cache = TokenCache::new(
        source.clone(),
        CachePolicy::new(Some(Duration::from_secs(300))),
    );
    assert!(cache.credential().await.is_err());
    assert_eq!(source.calls(), 1);
    // The steps: 1 s, doubling, at most 30 s. Callers inside a step get the failure
    // without a call; the first caller after it makes the next call.
    for (i, step) in [1u64, 2, 4, 8, 16, 30, 30].into_iter().enumerate() {
        let step = Duration::from_secs(step);
        for _ in 0..5 {
            let err = cache.credential().await.unwrap_err().to_string();
            assert!(err.contains("down"), "{err}");
        }
        tokio::time::advance(step - MS).await;
        assert!(cache.credential().await.is_err());
        assert_eq!(source.calls(), i + 1, "a call inside step {i} ({step:?})");
        tokio::time::advance(MS).await;
        assert!(cache.credential().await.is_err());
        assert_eq!(source.calls(), i + 2, "no call after step {i} ({step:?})");
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_that_lived_its_whole_lifetime_resets_the_backoff() {
    // Fail, fail (steps 1 s, 2 s), a token for 10 s, then fail: the step is 1 s again.
    let source = Source::new(&[
        Answer::Fail,
        Answer::Fail,
        Answer::Token,
        Answer::Fail,
        Answer::Token,
    ]);
    let cache = TokenCache::new(
        source.clone(),
        CachePolicy::new(Some(Duration::from_secs(10))).with_refresh_ahead(false),
    );
    assert!(cache.credential().await.is_err());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(cache.credential().await.is_err());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(secret(&cache).await, "tok-3");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(cache.credential().await.is_err());
    assert_eq!(source.calls(), 4);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        secret(&cache).await,
        "tok-5",
        "the step was not reset to 1 s"
    );
}
