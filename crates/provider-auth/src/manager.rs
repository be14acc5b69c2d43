//! The scoped auth-manager trait shared by the HTTP and realtime clients, and its
//! implementations.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use provider_config::{AuthKind, ModelProviderInfo};

use crate::cache::{CacheStats, TokenCache, TokenStatus};
use crate::error::AuthError;
use crate::scope::TokenScope;
use crate::scrub::Scrubber;
use crate::token::{AuthToken, Credential, CredentialHeader};

/// What to do after a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// A newer token is available: send the request once more.
    Retry,
    /// Nothing would change (a static key): return the 401.
    NotRecoverable,
}

/// Credentials for one provider's requests, shared by every client built for it.
///
/// Protocol: take [`AuthManager::credential`] before each request; after a 401, report the
/// credential that was sent to [`AuthManager::unauthorized`]. [`RequestAuth`] does both and
/// allows one recovery per logical request.
#[async_trait]
pub trait AuthManager: Send + Sync + fmt::Debug {
    /// The provider this manager is scoped to.
    fn provider_id(&self) -> &str;

    /// The credential for the next request; `None` when the provider takes no credentials.
    /// Never `Ok(None)` for a provider that needs one (fail closed).
    async fn credential(&self) -> Result<Option<Credential>, AuthError>;

    /// The gateway answered 401 to `sent`.
    async fn unauthorized(&self, sent: &Credential) -> Result<Recovery, AuthError>;

    /// The credential as it is now, without waiting: for clients whose header hook is
    /// synchronous (async-openai's `Config::headers()`). It never starts the first run:
    /// `None` when there is no usable credential yet, so call [`AuthManager::credential`]
    /// first (at start-up), and whenever this returns `None`.
    ///
    /// Staleness: the value is the cached token of this moment. A background refresh keeps
    /// it fresh while calls keep coming (inside a Tokio runtime), but a token a gateway has
    /// just rotated away is only replaced after a rejection is reported with
    /// [`AuthManager::unauthorized`]; a client that cannot retry will see that one request
    /// fail.
    fn cached_credential(&self) -> Option<Credential> {
        None
    }

    /// Cache counters, for managers backed by a cache.
    fn stats(&self) -> Option<CacheStats> {
        None
    }

    /// Where the cached token stands, for managers backed by a cache.
    fn token_status(&self) -> Option<TokenStatus> {
        None
    }

    /// The tokens this manager handed out lately (current and previous generations), for
    /// scrubbing gateway text that echoes them. Never logged or shown.
    fn recent_tokens(&self) -> Vec<AuthToken> {
        Vec::new()
    }

    /// The gateway accepted `sent` (a success answer). Cheap; called once per successful
    /// request so that a later rejection of the same token reads as a rotation.
    fn accepted(&self, _sent: &Credential) {}

    /// Where the token goes (`Authorization: Bearer` unless the provider's `auth.header` and
    /// `auth.scheme` say otherwise).
    fn credential_header(&self) -> &CredentialHeader {
        &DEFAULT_HEADER
    }
}

static DEFAULT_HEADER: std::sync::LazyLock<CredentialHeader> =
    std::sync::LazyLock::new(CredentialHeader::default);

/// A manager over a [`TokenCache`] (command auth, or any [`crate::ExternalAuthRefresher`]).
#[derive(Debug, Clone)]
pub struct CachedAuthManager {
    provider: Arc<str>,
    cache: Arc<TokenCache>,
    header: CredentialHeader,
}

impl CachedAuthManager {
    /// A manager for `provider` over `cache`, sending `Authorization: Bearer TOKEN`.
    pub fn new(provider: impl Into<Arc<str>>, cache: Arc<TokenCache>) -> Self {
        Self {
            provider: provider.into(),
            cache,
            header: CredentialHeader::default(),
        }
    }

    /// The same manager sending the token in `header`.
    pub fn with_header(mut self, header: CredentialHeader) -> Self {
        self.header = header;
        self
    }

    /// The cache behind this manager.
    pub fn cache(&self) -> &Arc<TokenCache> {
        &self.cache
    }
}

#[async_trait]
impl AuthManager for CachedAuthManager {
    fn provider_id(&self) -> &str {
        &self.provider
    }

    async fn credential(&self) -> Result<Option<Credential>, AuthError> {
        self.cache
            .credential()
            .await
            .map(Some)
            .map_err(|e| e.for_provider(&self.provider))
    }

    async fn unauthorized(&self, sent: &Credential) -> Result<Recovery, AuthError> {
        self.cache
            .unauthorized(sent)
            .await
            .map(|_| Recovery::Retry)
            .map_err(|e| e.for_provider(&self.provider))
    }

    fn cached_credential(&self) -> Option<Credential> {
        self.cache.peek()
    }

    fn stats(&self) -> Option<CacheStats> {
        Some(self.cache.stats())
    }

    fn token_status(&self) -> Option<TokenStatus> {
        self.cache.token_status()
    }

    fn recent_tokens(&self) -> Vec<AuthToken> {
        self.cache.recent_tokens()
    }

    fn accepted(&self, sent: &Credential) {
        self.cache.accepted(sent);
    }

    fn credential_header(&self) -> &CredentialHeader {
        &self.header
    }
}

/// A fixed token (`env_key`, `experimental_bearer_token`): a 401 is final.
#[derive(Debug, Clone)]
pub struct StaticAuthManager {
    provider: Arc<str>,
    credential: Credential,
}

impl StaticAuthManager {
    /// A manager for `provider` always sending `token`.
    pub fn new(provider: impl Into<Arc<str>>, token: AuthToken) -> Self {
        Self {
            provider: provider.into(),
            credential: Credential::new(token, 0),
        }
    }
}

#[async_trait]
impl AuthManager for StaticAuthManager {
    fn provider_id(&self) -> &str {
        &self.provider
    }

    async fn credential(&self) -> Result<Option<Credential>, AuthError> {
        Ok(Some(self.credential.clone()))
    }

    async fn unauthorized(&self, _sent: &Credential) -> Result<Recovery, AuthError> {
        Ok(Recovery::NotRecoverable)
    }

    fn recent_tokens(&self) -> Vec<AuthToken> {
        vec![self.credential.token.clone()]
    }

    fn cached_credential(&self) -> Option<Credential> {
        Some(self.credential.clone())
    }
}

/// A provider that takes no credentials (e.g. a local Ollama).
#[derive(Debug, Clone)]
pub struct NoAuthManager {
    provider: Arc<str>,
}

impl NoAuthManager {
    /// A manager for `provider` sending no `Authorization` header.
    pub fn new(provider: impl Into<Arc<str>>) -> Self {
        Self {
            provider: provider.into(),
        }
    }
}

#[async_trait]
impl AuthManager for NoAuthManager {
    fn provider_id(&self) -> &str {
        &self.provider
    }

    async fn credential(&self) -> Result<Option<Credential>, AuthError> {
        Ok(None)
    }

    async fn unauthorized(&self, _sent: &Credential) -> Result<Recovery, AuthError> {
        Ok(Recovery::NotRecoverable)
    }
}

/// A provider whose credential could not be set up (an unset `env_key`, no base session):
/// every call fails with that error, so a server of several providers (the proxy) can keep
/// serving the others and answer this one's requests with the reason. Fails closed.
#[derive(Debug, Clone)]
pub struct UnavailableAuthManager {
    provider: Arc<str>,
    error: AuthError,
}

impl UnavailableAuthManager {
    /// A manager for `provider` that always fails with `error`.
    pub fn new(provider: impl Into<Arc<str>>, error: AuthError) -> Self {
        Self {
            provider: provider.into(),
            error,
        }
    }

    /// Why the credential is unavailable.
    pub fn error(&self) -> &AuthError {
        &self.error
    }
}

#[async_trait]
impl AuthManager for UnavailableAuthManager {
    fn provider_id(&self) -> &str {
        &self.provider
    }

    async fn credential(&self) -> Result<Option<Credential>, AuthError> {
        Err(self.error.clone())
    }

    async fn unauthorized(&self, _sent: &Credential) -> Result<Recovery, AuthError> {
        Err(self.error.clone())
    }
}

/// A provider using the application's base session (`requires_openai_auth = true`): it
/// borrows the base session's credential but never invalidates it.
#[derive(Debug, Clone)]
struct BaseSessionManager {
    provider: Arc<str>,
    base: Arc<dyn AuthManager>,
}

#[async_trait]
impl AuthManager for BaseSessionManager {
    fn provider_id(&self) -> &str {
        &self.provider
    }

    async fn credential(&self) -> Result<Option<Credential>, AuthError> {
        match self.base.credential().await? {
            Some(c) => Ok(Some(c)),
            None => Err(AuthError::NoBaseSession {
                provider: self.provider.clone(),
            }),
        }
    }

    async fn unauthorized(&self, _sent: &Credential) -> Result<Recovery, AuthError> {
        Ok(Recovery::NotRecoverable)
    }

    fn recent_tokens(&self) -> Vec<AuthToken> {
        self.base.recent_tokens()
    }
}

/// The manager for a configured provider: command auth (sharing the process-wide cache of
/// its auth config), a bearer token, an `env_key` (read now), the base session, or none.
pub fn auth_manager_for_provider(
    provider_id: &str,
    info: &ModelProviderInfo,
    base_session: Option<Arc<dyn AuthManager>>,
) -> Result<Arc<dyn AuthManager>, AuthError> {
    let provider: Arc<str> = provider_id.into();
    let parse_static = |secret: &str, what: String| {
        AuthToken::parse(secret).map_err(|reason| AuthError::InvalidStaticToken {
            provider: provider.clone(),
            what,
            reason,
        })
    };
    Ok(match (info.auth_kind(), &info.auth) {
        (AuthKind::Command | AuthKind::OAuth2, Some(auth)) => {
            let header = CredentialHeader::new(&auth.header, &auth.scheme).ok_or_else(|| {
                AuthError::Source {
                    provider: provider.clone(),
                    message: format!("auth.header `{}` is not a header name", auth.header),
                }
            })?;
            Arc::new(
                CachedAuthManager::new(
                    provider.clone(),
                    TokenCache::shared_for_command(&TokenScope::new(
                        provider_id,
                        &info.base_url,
                        auth.clone(),
                    )),
                )
                .with_header(header),
            )
        }
        (AuthKind::BearerToken, _) => {
            let secret = info
                .experimental_bearer_token
                .as_deref()
                .unwrap_or_default();
            let token = parse_static(secret, "experimental_bearer_token".to_owned())?;
            Arc::new(StaticAuthManager::new(provider.clone(), token))
        }
        (AuthKind::EnvKey, _) => {
            let var = info.env_key.clone().unwrap_or_default();
            let value = std::env::var(&var).unwrap_or_default();
            if value.trim().is_empty() {
                return Err(AuthError::MissingEnvKey {
                    provider,
                    var,
                    instructions: info.env_key_instructions.clone(),
                });
            }
            let token = parse_static(value.trim(), format!("environment variable `{var}`"))?;
            Arc::new(StaticAuthManager::new(provider.clone(), token))
        }
        (AuthKind::BaseSession, _) => match base_session {
            Some(base) => Arc::new(BaseSessionManager {
                provider: provider.clone(),
                base,
            }),
            None => return Err(AuthError::NoBaseSession { provider }),
        },
        (AuthKind::None, _) => Arc::new(NoAuthManager::new(provider.clone())),
        // Fail closed: a kind this version does not know never means "no credentials".
        (kind, _) => {
            return Err(AuthError::Source {
                provider,
                message: format!("auth kind `{kind}` is not supported by this version"),
            });
        }
    })
}

/// The headers of `credential`: the token where the manager puts it, then the helper's
/// headers, every value marked sensitive. Fails closed: a value that cannot be a header is
/// an error, never dropped.
fn header_values(
    manager: &dyn AuthManager,
    credential: &Credential,
) -> Result<Vec<(HeaderName, HeaderValue)>, AuthError> {
    let unusable = || AuthError::Source {
        provider: manager.provider_id().into(),
        message: "the token (or a helper header) cannot be sent as an HTTP header value".to_owned(),
    };
    let place = manager.credential_header();
    let mut headers = vec![(
        place.name().clone(),
        place.value(&credential.token).ok_or_else(unusable)?,
    )];
    for (name, secret) in credential.headers.iter() {
        let mut value = HeaderValue::from_str(secret.expose_secret()).map_err(|_| unusable())?;
        value.set_sensitive(true);
        headers.push((name.clone(), value));
    }
    Ok(headers)
}

/// The credential headers as they are now, without waiting: for a client whose header
/// hook is synchronous (async-openai's `Config::headers()`). `None` when the manager has no
/// usable credential at this moment (obtain one with [`AuthManager::credential`] first) or
/// the provider takes none. See [`AuthManager::cached_credential`] for how stale it can be.
pub fn cached_credential_headers(
    manager: &dyn AuthManager,
) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let credential = manager.cached_credential()?;
    header_values(manager, &credential).ok()
}

/// What a client should do after a 401, per logical request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRetry {
    /// Send the request once more (with [`RequestAuth::credential_headers`] again).
    Retry,
    /// Return the 401. `after_fresh_token` is true when the request was already retried
    /// with a newer token: the gateway rejected a freshly minted token.
    GiveUp {
        /// Whether the rejected token was the one obtained after a first 401.
        after_fresh_token: bool,
    },
}

/// What an answer's status means for the logical request (see [`RequestAuth::after_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Not a re-auth status: the answer stands (a success was recorded as the credential
    /// accepted).
    Answer,
    /// A re-auth status, and a newer credential is ready: send the request once more (with
    /// [`RequestAuth::credential_headers`] again), if its body can be replayed.
    Retry,
    /// A re-auth status to return as it came. `after_fresh_token` is true when the request
    /// was already retried with a newer token: the gateway rejected a freshly minted token.
    Rejected {
        /// Whether the rejected token was the one obtained after a first rejection.
        after_fresh_token: bool,
    },
}

/// The auth side of one logical request: hands out the credential headers, remembers what
/// was sent, and applies the one rule every client here follows (the HTTP client, the
/// websocket client, the proxy, the tower layer and the reqwest middleware): a re-auth
/// status (401, or a status of `auth.reauth_on`) is reported and allows one retry with a
/// newer token; a success marks the credential accepted. See [`RequestAuth::after_status`].
#[derive(Debug, Clone)]
pub struct RequestAuth {
    manager: Arc<dyn AuthManager>,
    /// The statuses that mean "this credential is no longer good".
    reauth: Arc<[u16]>,
    sent: Option<Credential>,
    recovered: bool,
}

impl RequestAuth {
    /// Starts a logical request with 401 alone as the re-auth status. For a configured
    /// provider, [`crate::Provider::request`] also knows its `auth.reauth_on`.
    pub fn new(manager: Arc<dyn AuthManager>) -> Self {
        Self::with_reauth_statuses(manager, Arc::from([401u16].as_slice()))
    }

    pub(crate) fn with_reauth_statuses(manager: Arc<dyn AuthManager>, reauth: Arc<[u16]>) -> Self {
        Self {
            manager,
            reauth,
            sent: None,
            recovered: false,
        }
    }

    /// Whether `status` means the credential is no longer good.
    pub fn is_reauth_status(&self, status: u16) -> bool {
        self.reauth.contains(&status)
    }

    /// The rule, in one place: what the gateway's answer `status` to the attempt just
    /// sent means. A re-auth status is reported to the manager ([`RequestAuth::
    /// on_unauthorized`]) and gives [`Verdict::Retry`] once; a success (2xx, or 101 for a
    /// websocket handshake) marks the credential accepted ([`RequestAuth::on_success`]).
    ///
    /// A caller whose request cannot be replayed (a streamed body) still calls this, so
    /// that its client's own retry finds a newer token, and returns the answer.
    ///
    /// # Errors
    ///
    /// The manager could not recover (the token command failed, the breaker holds runs
    /// back): see [`AuthManager::unauthorized`].
    pub async fn after_status(&mut self, status: u16) -> Result<Verdict, AuthError> {
        if self.is_reauth_status(status) {
            return Ok(match self.on_unauthorized().await? {
                AuthRetry::Retry => Verdict::Retry,
                AuthRetry::GiveUp { after_fresh_token } => Verdict::Rejected { after_fresh_token },
            });
        }
        if (200..300).contains(&status) || status == 101 {
            self.on_success();
        }
        Ok(Verdict::Answer)
    }

    /// The credential headers for the next attempt: the token (`Authorization: Bearer
    /// TOKEN`, or the provider's `auth.header` and `auth.scheme`), then the helper's headers
    /// of the same generation, every value marked sensitive. Empty for providers without
    /// credentials. An error means no request may be sent.
    pub async fn credential_headers(
        &mut self,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, AuthError> {
        let credential = self.manager.credential().await?;
        let headers = match &credential {
            Some(c) => header_values(self.manager.as_ref(), c)?,
            None => Vec::new(),
        };
        self.sent = credential;
        Ok(headers)
    }

    /// The cache generation of the credential last sent (0 for static credentials), if one
    /// was: what a scrubber built for this request can be kept by.
    pub fn sent_generation(&self) -> Option<u64> {
        self.sent.as_ref().map(|sent| sent.generation)
    }

    /// The scrubber for gateway text about this request: every token this process sent to
    /// the provider lately (current and previous generations), in every encoding.
    pub fn scrubber(&self) -> Scrubber {
        self.scrubber_with(&[])
    }

    /// [`RequestAuth::scrubber`] that also scrubs `extra` secrets (configured header values).
    pub fn scrubber_with(&self, extra: &[String]) -> Scrubber {
        let mut tokens = self.manager.recent_tokens();
        if let Some(sent) = &self.sent {
            tokens.push(sent.token.clone());
            tokens.extend(sent.headers.iter().map(|(_, v)| v.clone()));
        }
        Scrubber::new(
            tokens
                .iter()
                .map(AuthToken::expose_secret)
                .chain(extra.iter().map(String::as_str)),
        )
    }

    /// Text from the gateway (an error body) made safe to show: see [`Scrubber::excerpt`].
    pub fn scrub_excerpt(&self, text: &str, max_chars: usize) -> String {
        self.scrubber().excerpt(text, max_chars)
    }

    /// The attempt succeeded: tells the manager its credential was accepted (see
    /// [`AuthManager::accepted`]).
    pub fn on_success(&self) {
        if let Some(sent) = &self.sent {
            self.manager.accepted(sent);
        }
    }

    /// The attempt got a 401: decide whether to retry.
    pub async fn on_unauthorized(&mut self) -> Result<AuthRetry, AuthError> {
        let Some(sent) = &self.sent else {
            return Ok(AuthRetry::GiveUp {
                after_fresh_token: false,
            });
        };
        if self.recovered {
            return Ok(AuthRetry::GiveUp {
                after_fresh_token: true,
            });
        }
        match self.manager.unauthorized(sent).await? {
            Recovery::Retry => {
                self.recovered = true;
                Ok(AuthRetry::Retry)
            }
            _ => Ok(AuthRetry::GiveUp {
                after_fresh_token: false,
            }),
        }
    }
}
