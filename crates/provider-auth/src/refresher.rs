//! Token sources.

use async_trait::async_trait;

use crate::error::AuthError;
use crate::token::{AuthToken, FreshToken};

/// Why a token is being fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshReason {
    /// No token yet.
    Initial,
    /// The cached token's lifetime ended.
    Expired,
    /// Background refresh ahead of expiry (80% of the lifetime has passed).
    RefreshAhead,
    /// The gateway answered 401 to the current token.
    Unauthorized,
}

impl RefreshReason {
    /// A short label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshReason::Initial => "initial",
            RefreshReason::Expired => "expired",
            RefreshReason::RefreshAhead => "refresh_ahead",
            RefreshReason::Unauthorized => "unauthorized",
        }
    }
}

/// A source of bearer tokens: the token command, a static token, or an application's own.
///
/// Implementations are called by [`crate::TokenCache`], which guarantees at most one call
/// at a time per cache and shares the result with every waiting caller.
#[async_trait]
pub trait ExternalAuthRefresher: Send + Sync + 'static {
    /// Produces a token (and its expiry, when known). Errors must not contain the token.
    async fn refresh(&self, reason: RefreshReason) -> Result<FreshToken, AuthError>;

    /// Produces a token after the gateway rejected `rejected` (a source with a store of
    /// its own must not hand `rejected` out again). By default, `refresh(Unauthorized)`.
    async fn refresh_rejected(&self, rejected: &AuthToken) -> Result<FreshToken, AuthError> {
        let _ = rejected;
        self.refresh(RefreshReason::Unauthorized).await
    }

    /// The gateway accepted `token` (called once per token by [`crate::TokenCache`]): a
    /// source shared between processes records it, so that a later rejection of it is
    /// known as a rotation everywhere. By default, nothing.
    fn accepted(&self, token: &AuthToken) {
        let _ = token;
    }

    /// What this source is, for logs (e.g. the program name). Never a secret.
    fn describe(&self) -> String {
        "token source".to_owned()
    }
}

/// A source that always yields the same token (an `env_key` value, a bearer token from the
/// config, or a benchmark baseline).
#[derive(Debug, Clone)]
pub struct StaticRefresher {
    token: AuthToken,
}

impl StaticRefresher {
    /// A source yielding `token`.
    pub fn new(token: AuthToken) -> Self {
        Self { token }
    }
}

#[async_trait]
impl ExternalAuthRefresher for StaticRefresher {
    async fn refresh(&self, _reason: RefreshReason) -> Result<FreshToken, AuthError> {
        Ok(FreshToken::new(self.token.clone()))
    }

    fn describe(&self) -> String {
        "static token".to_owned()
    }
}
