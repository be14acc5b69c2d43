//! The secret token type and what travels with it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use zeroize::Zeroizing;

/// A bearer token. Cheap to clone (shared), wiped from memory when the last clone is dropped.
///
/// It has no `Display` and no `Serialize`, and its `Debug` is redacted: the only way to see
/// the secret is [`AuthToken::expose_secret`] or the sensitive header from
/// [`AuthToken::bearer_header`].
#[derive(Clone)]
pub struct AuthToken(Arc<Zeroizing<String>>);

impl AuthToken {
    /// Wraps a token. Use [`AuthToken::parse`] for untrusted text.
    pub fn new(secret: String) -> Self {
        AuthToken(Arc::new(Zeroizing::new(secret)))
    }

    /// Checks that `secret` can be sent as a bearer token (not empty, no whitespace or
    /// control characters) and wraps it. The reason on failure never contains the secret.
    pub fn parse(secret: &str) -> Result<Self, &'static str> {
        if secret.is_empty() {
            return Err("printed an empty token");
        }
        if secret.chars().any(char::is_whitespace) {
            return Err("printed a token with interior whitespace, not a valid HTTP header value");
        }
        if secret.chars().any(char::is_control) {
            return Err("printed a token with control characters, not a valid HTTP header value");
        }
        if !secret.is_ascii() {
            return Err("printed a token with non-ASCII characters, not a valid HTTP header value");
        }
        Ok(Self::new(secret.to_owned()))
    }

    /// The secret itself. Do not log it.
    pub fn expose_secret(&self) -> &str {
        self.0.as_str()
    }

    /// `Bearer <token>` as a header value marked sensitive (HTTP/2 never indexes it, and
    /// `Debug` of the header prints `Sensitive`).
    pub fn bearer_header(&self) -> Option<HeaderValue> {
        let value = Zeroizing::new(format!("Bearer {}", self.expose_secret()));
        let mut header = HeaderValue::from_str(&value).ok()?;
        header.set_sensitive(true);
        Some(header)
    }

    /// Number of characters, for redacted summaries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the token is empty (never true for a parsed token).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether two tokens are the same secret, without exposing either.
    pub fn same_secret(&self, other: &AuthToken) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.expose_secret() == other.expose_secret()
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// Where a provider takes its token: a header name and a scheme (`Authorization: Bearer
/// TOKEN` by default; `api-key: TOKEN` for gateways that take a bare key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialHeader {
    name: http::HeaderName,
    scheme: String,
}

impl Default for CredentialHeader {
    fn default() -> Self {
        Self {
            name: http::header::AUTHORIZATION,
            scheme: "Bearer".to_owned(),
        }
    }
}

impl CredentialHeader {
    /// `auth.header` and `auth.scheme` (validated by the config loader); `None` if the name
    /// is not a header name.
    pub fn new(name: &str, scheme: &str) -> Option<Self> {
        Some(Self {
            name: http::HeaderName::from_bytes(name.as_bytes()).ok()?,
            scheme: scheme.to_owned(),
        })
    }

    /// The header name.
    pub fn name(&self) -> &http::HeaderName {
        &self.name
    }

    /// The header value for `token`, marked sensitive: `SCHEME TOKEN`, or the bare token
    /// when the scheme is empty.
    pub fn value(&self, token: &AuthToken) -> Option<HeaderValue> {
        let secret = token.expose_secret();
        // Built by hand, not with `format!`: this runs for every request.
        let mut text = Zeroizing::new(String::with_capacity(self.scheme.len() + 1 + secret.len()));
        if !self.scheme.is_empty() {
            text.push_str(&self.scheme);
            text.push(' ');
        }
        text.push_str(secret);
        let mut value = HeaderValue::from_str(&text).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// Which shape of output a token was read from: `modelauth check --live` says it, so a
/// helper's author can see how its output was understood (never the token itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenShape {
    /// `format = "text"`: the trimmed output is the token (or a static token).
    #[default]
    Text,
    /// An OAuth2 token response: `{"access_token", "expires_in"}`.
    OAuth2,
    /// `{"token", "expires_at"}`.
    TokenObject,
    /// A Kubernetes `ExecCredential`.
    ExecCredential,
    /// An entry of the shared token store, written by an earlier run.
    SharedStore,
}

impl std::fmt::Display for TokenShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenShape::Text => "text",
            TokenShape::OAuth2 => "json (OAuth2 token response)",
            TokenShape::TokenObject => "json ({token, expires_at})",
            TokenShape::ExecCredential => "json (ExecCredential)",
            TokenShape::SharedStore => "shared store entry",
        })
    }
}

/// A token as a source produced it, with the expiry it stated, if any.
#[derive(Debug, Clone)]
pub struct FreshToken {
    /// The token.
    pub token: AuthToken,
    /// When the token says it expires (`expires_in`, `expires_at`, a JWT's `exp`...).
    pub expires_at: Option<SystemTime>,
    /// When it was obtained, if not just now (a token read from the shared store): its
    /// lifetime counts from then.
    pub obtained_at: Option<SystemTime>,
    /// Headers the helper printed with the token (`format = "json"`, `"headers"`), sent
    /// with it and refreshed with it; their values are secrets like the token.
    pub headers: Vec<(http::HeaderName, AuthToken)>,
    /// The shape of output it was read from.
    pub shape: TokenShape,
}

impl FreshToken {
    /// A token with no stated expiry, obtained now.
    pub fn new(token: AuthToken) -> Self {
        Self {
            token,
            expires_at: None,
            obtained_at: None,
            headers: Vec::new(),
            shape: TokenShape::Text,
        }
    }
}

/// The credential handed out for one request: the token and the cache generation it came
/// from. Report it back unchanged with [`crate::AuthManager::unauthorized`] after a 401, so
/// the cache can tell a stale token from the current one.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The token to send.
    pub token: AuthToken,
    /// Which cache generation minted it (0 for static credentials).
    pub generation: u64,
    /// The helper's headers of the same generation (values are secrets).
    pub headers: Arc<[(http::HeaderName, AuthToken)]>,
}

impl Credential {
    /// A credential with no helper headers.
    pub fn new(token: AuthToken, generation: u64) -> Self {
        Self {
            token,
            generation,
            headers: Arc::from(Vec::new()),
        }
    }

    /// The `Authorization` header value (`Bearer ...`, marked sensitive).
    pub fn header_value(&self) -> Option<HeaderValue> {
        self.token.bearer_header()
    }
}

/// A token's lifetime: the refresh interval when the token states no expiry; else (time
/// `left` - skew), with skew = min(60 s, 10% of the time left), capped by `cap`. `None` =
/// kept until a 401.
pub(crate) fn lifetime(
    interval: Option<Duration>,
    cap: Option<Duration>,
    left: Option<Duration>,
) -> Option<Duration> {
    match left {
        None => interval,
        Some(left) => {
            let usable = left - (left / 10).min(Duration::from_secs(60));
            Some(cap.map_or(usable, |l| l.min(usable)))
        }
    }
}
