//! The token cache: one per distinct auth config per process, single flight, refresh ahead,
//! failure backoff and generation-aware 401 invalidation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

// Tokio's clock (the machine's outside a runtime, or in one whose clock is not paused): tests
// drive lifetimes, refresh ahead and the backoff with a paused clock.
use tokio::time::Instant;

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared, WeakShared};

use crate::TRACING_TARGET;
use crate::command::CommandRefresher;
use crate::error::AuthError;
use crate::refresher::{ExternalAuthRefresher, RefreshReason};
use crate::scope::TokenScope;
use crate::token::{Credential, FreshToken, lifetime};

/// When and how a cache refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachePolicy {
    /// How long a token that states no expiry is used; `None` keeps it until a 401.
    pub refresh_interval: Option<Duration>,
    /// The longest a token that states its own expiry is used (it is used until that
    /// expiry, less a skew, when shorter); `None`: the stated expiry governs.
    pub expiry_cap: Option<Duration>,
    /// Refresh in the background once 80% of the lifetime has passed (default on).
    pub refresh_ahead: bool,
    /// First wait after a failure with no usable token (default 1 s).
    pub initial_backoff: Duration,
    /// Longest wait after repeated failures (default 30 s).
    pub max_backoff: Duration,
}

impl CachePolicy {
    /// The default policy for a refresh interval, which also caps a stated expiry.
    pub fn new(refresh_interval: Option<Duration>) -> Self {
        Self {
            refresh_interval,
            expiry_cap: refresh_interval,
            refresh_ahead: true,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }

    /// The policy of a command's auth table: `refresh_interval_ms` (default 5 minutes) for
    /// a token that states no expiry; a stated expiry governs, capped by
    /// `refresh_interval_ms` only when the config sets it (SPEC §5).
    pub fn for_auth(auth: &provider_config::ModelProviderAuthInfo) -> Self {
        Self {
            expiry_cap: auth.stated_expiry_cap(),
            ..Self::new(auth.refresh_interval())
        }
    }

    /// The same policy with refresh ahead switched on or off.
    pub fn with_refresh_ahead(mut self, on: bool) -> Self {
        self.refresh_ahead = on;
        self
    }
}

/// Counters of one cache, readable by the application.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Times the token source ran (the command was spawned; a token read from the shared
    /// store does not count).
    pub command_runs: u64,
    /// Runs that failed.
    pub failures: u64,
    /// Runs started by a 401 report.
    pub refreshes_after_401: u64,
    /// Calls answered from the cache without waiting.
    pub cache_hits: u64,
}

/// The cached token's place in its lifetime, without the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenStatus {
    /// Which run produced it (1 for the first).
    pub generation: u64,
    /// Time left before it is no longer used; `None` = kept until a 401.
    pub expires_in: Option<Duration>,
    /// Time left before a background refresh starts; `None` = never.
    pub refresh_in: Option<Duration>,
    /// When the token was obtained (by this process, or by another through the shared
    /// store).
    pub obtained_at: SystemTime,
    /// Whether it came from the shared store rather than a run of this process.
    pub from_shared_store: bool,
    /// The shape of output it was read from.
    pub shape: crate::token::TokenShape,
    /// Whether the token stated its own expiry (in the output, or a JWT's `exp`).
    pub states_expiry: bool,
    /// The expiry the token stated, if it stated one (it may be past: a stale helper cache,
    /// or a clock that is off).
    pub stated_expiry: Option<SystemTime>,
}

#[derive(Default)]
struct Counters {
    /// The newest generation the gateway accepted (reported by [`TokenCache::accepted`]).
    proven: AtomicU64,
    runs: AtomicU64,
    failures: AtomicU64,
    after_401: AtomicU64,
    hits: AtomicU64,
}

type Flight = Shared<BoxFuture<'static, Result<Credential, AuthError>>>;

struct Cached {
    credential: Credential,
    /// When the run that produced it ended.
    obtained_at: Instant,
    /// When it was obtained, by the clock (earlier than `obtained_at` for a shared token).
    obtained_wall: SystemTime,
    from_shared_store: bool,
    shape: crate::token::TokenShape,
    /// When a background refresh should start (80% of the lifetime).
    refresh_at: Option<Instant>,
    /// End of the lifetime: from here a caller waits for a new token, unless a refresh is
    /// already running (then the old token is served until that run ends or `hard_expiry`).
    expires_at: Option<Instant>,
    /// When the token itself says it expires, if it says so.
    hard_expiry: Option<Instant>,
    /// The same, by the clock.
    stated_expiry: Option<SystemTime>,
}

impl Cached {
    fn fresh(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }

    /// Still accepted by the gateway as far as we know: served while a refresh runs.
    fn usable_while_refreshing(&self, now: Instant) -> bool {
        self.hard_expiry.is_none_or(|t| now < t)
    }
}

#[derive(Default)]
struct State {
    current: Option<Cached>,
    /// The run in progress, if any. Weak: when every waiter has gone away the run is
    /// dropped, which kills the command.
    flight: Option<WeakShared<BoxFuture<'static, Result<Credential, AuthError>>>>,
    flight_id: u64,
    generation: u64,
    last_error: Option<AuthError>,
    retry_not_before: Option<Instant>,
    /// The step of the last strike (a failed run, a rejected or already-expired token);
    /// `Some(ZERO)` after a first rejection, which is retried at once.
    backoff: Option<Duration>,
    /// Until when a strike still counts as following the previous one: set when a run
    /// succeeds after a strike, cleared by every strike. A token that lives past it has
    /// proven itself, and the next strike starts the steps again.
    probation_until: Option<Instant>,
    /// The generation the breaker held back last: its hold has been served, so the next
    /// rejection of it runs the command (one strike per token).
    held: Option<u64>,
    /// The secrets (token and helper header values) of the generations handed out lately,
    /// newest last, for scrubbing echoes of them.
    recent: std::collections::VecDeque<Vec<crate::token::AuthToken>>,
}

impl State {
    fn running_flight(&self) -> Option<Flight> {
        self.flight.as_ref().and_then(WeakShared::upgrade)
    }

    fn in_backoff(&self, now: Instant) -> bool {
        self.retry_not_before.is_some_and(|t| now < t)
    }

    /// Records a strike and returns its backoff step: the next step when it follows the
    /// previous strike (no token has proven itself since), else `first`. A rejected token
    /// the gateway had accepted before (`proven`) is a rotation, never a follow-up strike.
    fn strike(
        &mut self,
        now: Instant,
        first: Duration,
        proven: bool,
        policy: &CachePolicy,
    ) -> Duration {
        let follows = match (self.backoff, self.probation_until) {
            _ if proven => false,
            (None, _) => false,
            (Some(_), None) => true,
            (Some(_), Some(until)) => now < until,
        };
        let step = match self.backoff {
            Some(b) if follows => next_step(b, policy),
            _ => first,
        };
        self.backoff = Some(step);
        self.probation_until = None;
        step
    }
}

/// The step after `b`: the initial backoff after an immediate retry, else double, capped.
fn next_step(b: Duration, policy: &CachePolicy) -> Duration {
    if b.is_zero() {
        policy.initial_backoff
    } else {
        (b * 2).min(policy.max_backoff)
    }
}

/// How many generations of secrets are kept for scrubbing echoes (current and previous).
const RECENT_TOKENS: usize = 4;

/// A token cache around one token source. Cheap to share (`Arc`); see the crate docs for
/// the guarantees.
pub struct TokenCache {
    refresher: Arc<dyn ExternalAuthRefresher>,
    policy: CachePolicy,
    state: Mutex<State>,
    counters: Counters,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("source", &self.refresher.describe())
            .field("policy", &self.policy)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

static SHARED_CACHES: LazyLock<Mutex<HashMap<TokenScope, Arc<TokenCache>>>> =
    LazyLock::new(Default::default);

impl TokenCache {
    /// A new, unshared cache. Most applications want [`TokenCache::shared_for_command`].
    pub fn new(refresher: Arc<dyn ExternalAuthRefresher>, policy: CachePolicy) -> Arc<Self> {
        Arc::new(Self {
            refresher,
            policy,
            state: Mutex::new(State::default()),
            counters: Counters::default(),
        })
    }

    /// The process-wide cache for this scope (provider, `base_url` and auth table), created
    /// on first use: every manager and client built for the same provider shares it, so a
    /// new client never reruns the command. Two providers never share one.
    pub fn shared_for_command(scope: &TokenScope) -> Arc<Self> {
        let mut caches = lock(&SHARED_CACHES);
        let auth = &scope.auth;
        caches
            .entry(scope.clone())
            .or_insert_with(|| {
                let store = crate::store::process_store();
                let command: Arc<dyn ExternalAuthRefresher> =
                    match crate::oauth2::OAuth2Refresher::new(scope.provider.as_str(), auth.clone())
                    {
                        Some(oauth2) => Arc::new(match store {
                            Some(store) => {
                                oauth2.with_refresh_token_file(store.refresh_token_path(scope))
                            }
                            None => oauth2,
                        }),
                        None => {
                            Arc::new(CommandRefresher::new(scope.provider.as_str(), auth.clone()))
                        }
                    };
                // With a shared store (opted in by `use_shared_store`), tokens are shared
                // with every process of the user.
                let source: Arc<dyn ExternalAuthRefresher> = match store {
                    Some(store) => Arc::new(crate::store::StoreRefresher::new(
                        command,
                        store.clone(),
                        scope,
                    )),
                    None => command,
                };
                TokenCache::new(source, CachePolicy::for_auth(auth))
            })
            .clone()
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            command_runs: self.counters.runs.load(Ordering::Relaxed),
            failures: self.counters.failures.load(Ordering::Relaxed),
            refreshes_after_401: self.counters.after_401.load(Ordering::Relaxed),
            cache_hits: self.counters.hits.load(Ordering::Relaxed),
        }
    }

    /// Where the cached token stands, if there is a usable one.
    pub fn token_status(&self) -> Option<TokenStatus> {
        let state = lock(&self.state);
        let now = Instant::now();
        let cached = state.current.as_ref()?;
        if !cached.fresh(now) {
            return None;
        }
        Some(TokenStatus {
            obtained_at: cached.obtained_wall,
            from_shared_store: cached.from_shared_store,
            shape: cached.shape,
            states_expiry: cached.stated_expiry.is_some(),
            stated_expiry: cached.stated_expiry,
            generation: cached.credential.generation,
            expires_in: cached.expires_at.map(|t| t.saturating_duration_since(now)),
            refresh_in: cached.refresh_at.map(|t| t.saturating_duration_since(now)),
        })
    }

    /// The cached credential, without waiting: `None` when there is no usable one (nothing
    /// obtained yet, or past its lifetime with no refresh running). It never starts the
    /// first run. Like [`TokenCache::credential`] it starts a background refresh when the
    /// token is due (80% of its lifetime) or past its lifetime, if called inside a Tokio
    /// runtime; outside one it only reads.
    pub fn peek(self: &Arc<Self>) -> Option<Credential> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        if let Some(credential) = self.fresh_hit(&mut state, now) {
            return Some(credential);
        }
        let cached = state.current.as_ref()?;
        let usable = cached
            .usable_while_refreshing(now)
            .then(|| cached.credential.clone());
        if !state.in_backoff(now)
            && state.running_flight().is_none()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let flight = self.start_flight(&mut state, RefreshReason::Expired);
            runtime.spawn(flight);
        }
        usable.filter(|_| state.running_flight().is_some())
    }

    /// The hot path of [`TokenCache::credential`] and [`TokenCache::peek`]: a fresh token,
    /// starting a background refresh once 80% of its lifetime has passed (inside a Tokio
    /// runtime). Nothing but the clock and one counter unless a refresh is due.
    fn fresh_hit(self: &Arc<Self>, state: &mut State, now: Instant) -> Option<Credential> {
        let cached = state.current.as_ref().filter(|c| c.fresh(now))?;
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        let credential = cached.credential.clone();
        let due = self.policy.refresh_ahead && cached.refresh_at.is_some_and(|t| now >= t);
        if due
            && !state.in_backoff(now)
            && state.running_flight().is_none()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let flight = self.start_flight(state, RefreshReason::RefreshAhead);
            runtime.spawn(flight);
        }
        Some(credential)
    }

    /// The current credential: cached if usable (starting a background refresh once 80% of
    /// its lifetime has passed), else from the one run in progress or a new one.
    pub async fn credential(self: &Arc<Self>) -> Result<Credential, AuthError> {
        let flight = {
            let mut state = lock(&self.state);
            let now = Instant::now();
            if let Some(credential) = self.fresh_hit(&mut state, now) {
                return Ok(credential);
            }
            let running = state.running_flight();
            if let (Some(_), Some(cached)) = (&running, &state.current)
                && cached.usable_while_refreshing(now)
            {
                // Past its lifetime but a refresh is on its way: no one waits for it.
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(cached.credential.clone());
            }
            match running {
                Some(flight) => flight,
                None => {
                    if state.in_backoff(now)
                        && let Some(err) = &state.last_error
                    {
                        return Err(err.clone());
                    }
                    let reason = if state.current.take().is_some() {
                        RefreshReason::Expired
                    } else {
                        RefreshReason::Initial
                    };
                    self.start_flight(&mut state, reason)
                }
            }
        };
        flight.await
    }

    /// Reports that the gateway rejected `sent` (401, or a status of `auth.reauth_on`). If
    /// a newer token exists it is returned at once; otherwise the token is invalidated and
    /// one run starts (or the run in progress is joined).
    ///
    /// Rejected-token breaker: a rejection of the newest token counts as a failure for
    /// backoff. A token the gateway had accepted (see [`TokenCache::accepted`]), or the first
    /// rejection after a quiet time, is a rotation and is recovered at once; a token rejected
    /// before it has proven itself holds the next run back one step (1 s, 2 s, ... 30 s
    /// after that token was minted): until then that token stays in use and rejections of
    /// it get [`AuthError::Rejected`] without a run.
    pub async fn unauthorized(
        self: &Arc<Self>,
        sent: &Credential,
    ) -> Result<Credential, AuthError> {
        let flight = {
            let mut state = lock(&self.state);
            let now = Instant::now();
            if let Some(cached) = &state.current
                && cached.credential.generation > sent.generation
                && cached.fresh(now)
            {
                return Ok(cached.credential.clone());
            }
            match state.running_flight() {
                Some(flight) => flight,
                None => {
                    // A run just failed, or the breaker holds runs back: late reports get
                    // that error, not a new run.
                    if state.in_backoff(now)
                        && let Some(err) = &state.last_error
                    {
                        return Err(err.clone());
                    }
                    // Compare and invalidate: only the token that was rejected is dropped.
                    let rejected = state
                        .current
                        .take_if(|c| c.credential.generation <= sent.generation);
                    if let Some(rejected) = rejected
                        && rejected.credential.generation == state.generation
                        && state.held != Some(rejected.credential.generation)
                    {
                        // A token the gateway had accepted, or one read from the shared
                        // store (another process minted it, and the store keeps the
                        // breaker across processes), is rotated at once.
                        let proven = rejected.from_shared_store
                            || rejected.credential.generation
                                <= self.counters.proven.load(Ordering::Relaxed);
                        let step = state.strike(now, Duration::ZERO, proven, &self.policy);
                        let not_before = rejected.obtained_at.checked_add(step).unwrap_or(now);
                        if now < not_before {
                            let err = AuthError::Rejected {
                                provider: "".into(),
                                expired_at: rejected
                                    .stated_expiry
                                    .filter(|at| *at <= SystemTime::now())
                                    .map(crate::format_rfc3339),
                                origin: self.refresher.describe(),
                                retry_in_ms: u64::try_from(
                                    not_before.saturating_duration_since(now).as_millis(),
                                )
                                .unwrap_or(u64::MAX),
                            };
                            tracing::warn!(
                                target: TRACING_TARGET,
                                source = %self.refresher.describe(),
                                generation = rejected.credential.generation,
                                backoff_ms = step.as_millis(),
                                "the gateway rejected a newly minted token; holding the next run back"
                            );
                            state.retry_not_before = Some(not_before);
                            state.last_error = Some(err.clone());
                            state.held = Some(rejected.credential.generation);
                            // The token stays in use: no run is spent on it, and if the
                            // rejections were a passing storm, requests succeed again at once.
                            state.current = Some(rejected);
                            return Err(err);
                        }
                    }
                    self.counters.after_401.fetch_add(1, Ordering::Relaxed);
                    self.start_flight_with(
                        &mut state,
                        RefreshReason::Unauthorized,
                        Some(sent.token.clone()),
                    )
                }
            }
        };
        flight.await
    }

    /// Reports that the gateway accepted `sent` (a success answer): a later rejection of
    /// that token is a rotation, recovered at once, not a sign of a gateway that rejects
    /// every token. One atomic operation; no lock.
    pub fn accepted(&self, sent: &Credential) {
        // A read first: the hot path (already proven) never writes the shared line.
        if self.counters.proven.load(Ordering::Relaxed) < sent.generation
            && self
                .counters
                .proven
                .fetch_max(sent.generation, Ordering::Relaxed)
                < sent.generation
        {
            // Once per generation: a source shared between processes records it.
            self.refresher.accepted(&sent.token);
        }
    }

    fn start_flight(self: &Arc<Self>, state: &mut State, reason: RefreshReason) -> Flight {
        self.start_flight_with(state, reason, None)
    }

    fn start_flight_with(
        self: &Arc<Self>,
        state: &mut State,
        reason: RefreshReason,
        rejected: Option<crate::token::AuthToken>,
    ) -> Flight {
        state.flight_id += 1;
        let id = state.flight_id;
        let cache = Arc::clone(self);
        let flight = async move { cache.run(id, reason, rejected).await }
            .boxed()
            .shared();
        state.flight = flight.downgrade();
        flight
    }

    async fn run(
        self: Arc<Self>,
        id: u64,
        reason: RefreshReason,
        rejected: Option<crate::token::AuthToken>,
    ) -> Result<Credential, AuthError> {
        let started = Instant::now();
        let result = match &rejected {
            Some(token) => self.refresher.refresh_rejected(token).await,
            None => self.refresher.refresh(reason).await,
        };
        // A token another process obtained (the shared store) cost no run here.
        let shared = matches!(&result, Ok(fresh) if fresh.obtained_at.is_some());
        if !shared {
            self.counters.runs.fetch_add(1, Ordering::Relaxed);
        }
        let elapsed_ms = started.elapsed().as_millis();
        let mut state = lock(&self.state);
        if state.flight_id == id {
            state.flight = None;
        }
        let now = Instant::now();
        match result {
            Ok(fresh) => {
                state.generation += 1;
                let generation = state.generation;
                let mut cached = self.install(fresh, generation, now);
                state.last_error = None;
                state.retry_not_before = None;
                if cached.expires_at.is_some_and(|t| t <= now) {
                    // Already expired: a strike. The token is served for one backoff step
                    // (a skewed clock may be all that is wrong), then the command reruns.
                    let step = state.strike(now, self.policy.initial_backoff, false, &self.policy);
                    cached.refresh_at = None;
                    cached.expires_at = now.checked_add(step);
                    tracing::warn!(
                        target: TRACING_TARGET,
                        source = %self.refresher.describe(),
                        backoff_ms = step.as_millis(),
                        "the token source returned a token that has already expired; using it for one backoff step"
                    );
                } else if let Some(b) = state.backoff {
                    state.probation_until = now
                        .checked_add(next_step(b, &self.policy).max(self.policy.initial_backoff));
                }
                tracing::info!(
                    target: TRACING_TARGET,
                    source = %self.refresher.describe(),
                    reason = reason.as_str(),
                    elapsed_ms,
                    generation,
                    lifetime_ms = cached.expires_at.map(|t| t.saturating_duration_since(now).as_millis()),
                    outcome = "ok",
                    shared_store = shared,
                    "{}",
                    if shared { "token read from the shared store" } else { "token refreshed" }
                );
                let credential = cached.credential.clone();
                if state.recent.len() >= RECENT_TOKENS {
                    state.recent.pop_front();
                }
                // Helper headers are secrets of the same generation.
                let secrets = std::iter::once(credential.token.clone())
                    .chain(credential.headers.iter().map(|(_, v)| v.clone()))
                    .collect();
                state.recent.push_back(secrets);
                state.current = Some(cached);
                Ok(credential)
            }
            Err(err) => {
                // Its stderr may trace a token this cache handed out (`set -x`).
                let err = err.scrubbed(&crate::Scrubber::for_tokens(state.recent.iter().flatten()));
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                let backoff = state.strike(now, self.policy.initial_backoff, false, &self.policy);
                state.retry_not_before = now.checked_add(backoff);
                state.last_error = Some(err.clone());
                tracing::warn!(
                    target: TRACING_TARGET,
                    source = %self.refresher.describe(),
                    reason = reason.as_str(),
                    elapsed_ms,
                    backoff_ms = backoff.as_millis(),
                    outcome = "error",
                    error = %err,
                    "token refresh failed"
                );
                Err(err)
            }
        }
    }

    /// The tokens this cache handed out lately (current and previous generations), so that
    /// gateway text echoing any of them can be scrubbed.
    pub fn recent_tokens(&self) -> Vec<crate::token::AuthToken> {
        lock(&self.state).recent.iter().flatten().cloned().collect()
    }

    /// Lifetime = refresh interval, shortened to (expiry - skew) when the token states an
    /// expiry, with skew = min(60 s, 10% of the time left).
    fn install(&self, fresh: FreshToken, generation: u64, now: Instant) -> Cached {
        // A token obtained earlier (by another process) has lived part of its lifetime.
        let age = fresh
            .obtained_at
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or(Duration::ZERO);
        let left = fresh.expires_at.map(|expires_at| {
            expires_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        });
        let hard_expiry = left.and_then(|left| now.checked_add(left));
        let lifetime = lifetime(
            self.policy.refresh_interval.map(|l| l.saturating_sub(age)),
            self.policy.expiry_cap.map(|l| l.saturating_sub(age)),
            left,
        );
        Cached {
            credential: Credential {
                token: fresh.token,
                generation,
                headers: Arc::from(fresh.headers),
            },
            obtained_at: now,
            obtained_wall: fresh.obtained_at.unwrap_or_else(SystemTime::now),
            from_shared_store: fresh.obtained_at.is_some(),
            shape: fresh.shape,
            refresh_at: lifetime.and_then(|l| now.checked_add(l.mul_f64(0.8))),
            expires_at: lifetime.and_then(|l| now.checked_add(l)),
            hard_expiry,
            stated_expiry: fresh.expires_at,
        }
    }
}

/// Locks a mutex, recovering from poisoning (the state stays consistent: every critical
/// section is a handful of assignments).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
