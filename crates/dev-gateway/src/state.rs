//! The gateway's shared state: tokens, rotation, faults, counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::GatewayConfig;

/// A route of the gateway, for faults and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Route {
    /// `GET /v1/models`.
    Models,
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `GET /v1/realtime` (the handshake).
    Realtime,
    /// `GET /v1/responses` (the handshake of the Responses API over a websocket).
    ResponsesSocket,
    /// `POST /v1/messages` (Anthropic's Messages API, for the tools that speak it).
    Messages,
}

/// A fault a route can be told to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// 401 whatever the token.
    Unauthorized,
    /// 429 with `Retry-After: <secs>`.
    TooManyRequests {
        /// The `Retry-After` value in seconds.
        retry_after_secs: u64,
    },
    /// 500.
    ServerError,
    /// Streams wait this long before each event (the realtime socket before each reply).
    SlowStream {
        /// The pause.
        delay: Duration,
    },
    /// The realtime server closes the socket right after `session.created`.
    CloseAfterGreeting,
}

/// A token minted by the gateway.
#[derive(Clone)]
pub struct MintedToken {
    /// The token.
    pub access_token: String,
    /// Its lifetime in seconds.
    pub expires_in: u64,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What the gateway has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Counters {
    /// Requests (and handshakes) per route.
    pub requests: HashMap<Route, u64>,
    /// 401 answers per route.
    pub unauthorized: HashMap<Route, u64>,
    /// Tokens minted.
    pub tokens_minted: u64,
    /// Rotations.
    pub rotations: u64,
    /// Realtime sessions opened.
    pub realtime_sessions: u64,
}

impl Counters {
    /// Requests seen on `route`.
    pub fn requests(&self, route: Route) -> u64 {
        self.requests.get(&route).copied().unwrap_or(0)
    }

    /// 401s answered on `route`.
    pub fn unauthorized(&self, route: Route) -> u64 {
        self.unauthorized.get(&route).copied().unwrap_or(0)
    }
}

struct TokenInfo {
    epoch: u64,
    expires: Instant,
}

pub(crate) struct Shared {
    pub(crate) config: GatewayConfig,
    epoch: AtomicU64,
    serial: AtomicU64,
    tokens: Mutex<HashMap<String, TokenInfo>>,
    faults: Mutex<HashMap<Route, (Fault, Option<u32>)>>,
    counters: Mutex<Counters>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a request's credentials were refused.
pub(crate) enum Refusal {
    Missing,
    Unknown,
    Rotated,
    Expired,
}

impl Refusal {
    pub(crate) fn message(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing bearer token",
            Refusal::Unknown => "unknown token",
            Refusal::Rotated => "token was rotated",
            Refusal::Expired => "token expired",
        }
    }
}

impl Shared {
    pub(crate) fn new(config: GatewayConfig) -> Self {
        Self {
            config,
            epoch: AtomicU64::new(1),
            serial: AtomicU64::new(0),
            tokens: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            counters: Mutex::new(Counters::default()),
        }
    }

    pub(crate) fn mint(&self) -> MintedToken {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let serial = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("dg.{epoch}.{serial}.{:016x}", fastrand::u64(..));
        let lifetime = self.config.token_lifetime;
        let expires = Instant::now() + lifetime;
        lock(&self.tokens).insert(token.clone(), TokenInfo { epoch, expires });
        lock(&self.counters).tokens_minted += 1;
        MintedToken {
            access_token: token,
            expires_in: lifetime.as_secs().max(1),
        }
    }

    pub(crate) fn rotate(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        lock(&self.counters).rotations += 1;
    }

    /// Checks a bearer token; counts the request and any 401.
    pub(crate) fn check(&self, route: Route, authorization: Option<&str>) -> Result<(), Refusal> {
        *lock(&self.counters).requests.entry(route).or_default() += 1;
        let result = self.validate(authorization);
        if result.is_err() {
            self.count_unauthorized(route);
        }
        result
    }

    pub(crate) fn count_unauthorized(&self, route: Route) {
        *lock(&self.counters).unauthorized.entry(route).or_default() += 1;
    }

    fn validate(&self, authorization: Option<&str>) -> Result<(), Refusal> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or(Refusal::Missing)?;
        let tokens = lock(&self.tokens);
        let info = tokens.get(token).ok_or(Refusal::Unknown)?;
        if info.epoch != self.epoch.load(Ordering::SeqCst) {
            return Err(Refusal::Rotated);
        }
        if Instant::now() >= info.expires {
            return Err(Refusal::Expired);
        }
        Ok(())
    }

    pub(crate) fn set_fault(&self, route: Route, fault: Option<Fault>, times: Option<u32>) {
        let mut faults = lock(&self.faults);
        match fault {
            Some(f) => {
                faults.insert(route, (f, times));
            }
            None => {
                faults.remove(&route);
            }
        }
    }

    /// The fault for this request, if any (consuming one of a limited number).
    pub(crate) fn take_fault(&self, route: Route) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let (fault, times) = faults.get_mut(&route)?;
        let fault = *fault;
        if let Some(n) = times {
            *n = n.saturating_sub(1);
            if *n == 0 {
                faults.remove(&route);
            }
        }
        Some(fault)
    }

    pub(crate) fn session_opened(&self) {
        lock(&self.counters).realtime_sessions += 1;
    }

    pub(crate) fn counters(&self) -> Counters {
        lock(&self.counters).clone()
    }
}
