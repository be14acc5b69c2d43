//! `auth.oauth2`: tokens from an OAuth2 token endpoint instead of a command (SPEC §14).
//!
//! [`OAuth2Refresher`] is one more [`ExternalAuthRefresher`], so the same cache, store,
//! single flight, breaker and scrubber apply: only the way a token is minted differs. Every
//! exchange is bounded (connect, whole exchange, answer size), follows no redirect, and
//! reads its secrets afresh: the client secret from its variable or file, the subject token
//! from its file, GitHub Actions or a command. None of them ever reaches an error or a log;
//! what the endpoint says back is reduced to its `error` code and a scrubbed excerpt.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use provider_config::{
    ClientAuthMethod, JWT_TOKEN_TYPE, ModelProviderAuthInfo, OAuth2Grant, OAuth2Info, SubjectSource,
};
use serde_json::Value;

use crate::command::CommandRefresher;
use crate::error::{AuthError, OAuth2Failure};
use crate::refresher::{ExternalAuthRefresher, RefreshReason};
use crate::scrub::Scrubber;
use crate::token::{AuthToken, FreshToken, TokenShape};

/// Largest answer read from a token, discovery or GitHub Actions endpoint.
pub const MAX_OAUTH2_RESPONSE_BYTES: usize = 64 * 1024;
/// Largest secret or subject token read from a file.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;
/// How much of an `error_description` an error keeps (scrubbed).
const DESCRIPTION_CHARS: usize = 200;
/// The variables GitHub Actions sets for a job with `id-token: write`.
pub const GITHUB_ACTIONS_URL_ENV: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
/// See [`GITHUB_ACTIONS_URL_ENV`].
pub const GITHUB_ACTIONS_TOKEN_ENV: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";

/// The token endpoint, from `token_url` or discovery.
#[derive(Debug, Clone)]
struct Endpoints {
    token: url::Url,
    device: Option<url::Url>,
}

/// What the last exchange used, for `check --live` (never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExchangeReport {
    /// The grant.
    pub grant: OAuth2Grant,
    /// The token endpoint's host (and port, when not the default).
    pub endpoint_host: String,
    /// Where the subject token came from, if the grant sends one.
    pub subject: Option<SubjectSource>,
    /// How old the subject file was when it was read (its modification time).
    pub subject_age: Option<Duration>,
}

/// Mints tokens at an OAuth2 token endpoint (`auth.oauth2`).
pub struct OAuth2Refresher {
    provider: Arc<str>,
    auth: ModelProviderAuthInfo,
    oauth2: OAuth2Info,
    client: tokio::sync::OnceCell<reqwest::Client>,
    endpoints: tokio::sync::OnceCell<Endpoints>,
    /// The refresh token in use (rotated by the endpoint), when the grant has one.
    refresh_token: Mutex<Option<AuthToken>>,
    /// Where a rotated refresh token is kept (the shared store, 0600), if anywhere.
    refresh_token_path: Option<PathBuf>,
    last: Mutex<Option<ExchangeReport>>,
}

impl fmt::Debug for OAuth2Refresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Refresher")
            .field("provider", &self.provider)
            .field("oauth2", &self.oauth2)
            .finish_non_exhaustive()
    }
}

impl OAuth2Refresher {
    /// A refresher for `auth` (whose `oauth2` table must be set); `provider` names it in
    /// errors. `None` when `auth` has no `oauth2` table.
    pub fn new(provider: impl Into<Arc<str>>, auth: ModelProviderAuthInfo) -> Option<Self> {
        let oauth2 = auth.oauth2.clone()?;
        Some(Self {
            provider: provider.into(),
            auth,
            oauth2,
            client: tokio::sync::OnceCell::new(),
            endpoints: tokio::sync::OnceCell::new(),
            refresh_token: Mutex::new(None),
            refresh_token_path: None,
            last: Mutex::new(None),
        })
    }

    /// Keeps a rotated refresh token in `path` (mode 0600, replaced atomically) and reads
    /// it from there first: the shared store's place for this scope.
    pub fn with_refresh_token_file(mut self, path: PathBuf) -> Self {
        self.refresh_token_path = Some(path);
        self
    }

    /// What the last successful exchange used (never a value).
    pub fn last_exchange(&self) -> Option<ExchangeReport> {
        lock(&self.last).clone()
    }

    fn fail(&self, endpoint: &str, failure: OAuth2Failure) -> AuthError {
        AuthError::OAuth2 {
            provider: self.provider.clone(),
            grant: self.oauth2.grant.as_str(),
            endpoint: endpoint.to_owned(),
            failure,
        }
    }

    fn timeout(&self) -> Duration {
        self.auth.timeout()
    }

    async fn client(&self) -> Result<&reqwest::Client, AuthError> {
        self.client
            .get_or_try_init(|| async {
                // The one TLS configuration of the process (the platform's trust store).
                let tls = transport::tls_config().map_err(|e| {
                    self.fail(
                        "(none)",
                        OAuth2Failure::Unreachable {
                            reason: e.to_string(),
                        },
                    )
                })?;
                reqwest::Client::builder()
                    .tls_backend_preconfigured(tls.as_ref().clone())
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(Duration::from_millis(
                        provider_config::DEFAULT_CONNECT_TIMEOUT_MS,
                    ))
                    .user_agent(crate::headers::USER_AGENT)
                    .build()
                    .map_err(|e| {
                        self.fail(
                            "(none)",
                            OAuth2Failure::Unreachable {
                                reason: format!("the HTTP client cannot be built: {e}"),
                            },
                        )
                    })
            })
            .await
    }

    /// The endpoints: `token_url`, or the issuer's discovery document (read once).
    async fn endpoints(&self) -> Result<&Endpoints, AuthError> {
        self.endpoints
            .get_or_try_init(|| async {
                if let Some(token_url) = &self.oauth2.token_url {
                    let token = parse_url(token_url).map_err(|reason| {
                        self.fail(token_url, OAuth2Failure::BadResponse { reason })
                    })?;
                    let device = match &self.oauth2.device_authorization_url {
                        Some(u) => Some(parse_url(u).map_err(|reason| {
                            self.fail(u, OAuth2Failure::BadResponse { reason })
                        })?),
                        None => None,
                    };
                    return Ok(Endpoints { token, device });
                }
                let issuer = self.oauth2.issuer.as_deref().unwrap_or_default();
                self.discover(issuer).await
            })
            .await
    }

    async fn discover(&self, issuer: &str) -> Result<Endpoints, AuthError> {
        let issuer_url = parse_url(issuer)
            .map_err(|reason| self.fail(issuer, OAuth2Failure::BadResponse { reason }))?;
        let mut url = issuer_url.clone();
        let path = format!(
            "{}/.well-known/openid-configuration",
            url.path().trim_end_matches('/')
        );
        url.set_path(&path);
        let shown = host_of(&url);
        let fail = |failure| self.fail(&format!("{shown} (discovery)"), failure);
        let request = self.client().await?.get(url);
        let (status, body) = self.exchange(request).await.map_err(fail)?;
        if !(200..300).contains(&status) {
            return Err(fail(OAuth2Failure::Status { status }));
        }
        let doc: Value = serde_json::from_slice(&body).map_err(|_| {
            fail(OAuth2Failure::BadResponse {
                reason: "the discovery document is not JSON".to_owned(),
            })
        })?;
        let endpoint = |name: &str| -> Result<Option<url::Url>, AuthError> {
            let Some(v) = doc.get(name) else {
                return Ok(None);
            };
            let text = v.as_str().unwrap_or_default();
            let url = parse_url(text).map_err(|reason| {
                fail(OAuth2Failure::BadResponse {
                    reason: format!("`{name}` {reason}"),
                })
            })?;
            // An https issuer never hands secrets to a plain-http endpoint.
            if issuer_url.scheme() == "https" && url.scheme() != "https" {
                return Err(fail(OAuth2Failure::BadResponse {
                    reason: format!("`{name}` is not https while the issuer is"),
                }));
            }
            Ok(Some(url))
        };
        let token = endpoint("token_endpoint")?.ok_or_else(|| {
            fail(OAuth2Failure::BadResponse {
                reason: "the discovery document names no `token_endpoint`".to_owned(),
            })
        })?;
        let device = match &self.oauth2.device_authorization_url {
            Some(u) => {
                Some(parse_url(u).map_err(|reason| fail(OAuth2Failure::BadResponse { reason }))?)
            }
            None => endpoint("device_authorization_endpoint")?,
        };
        Ok(Endpoints { token, device })
    }

    /// Sends `request` with the exchange's bounds: the whole of it within
    /// `auth.timeout_ms`, at most [`MAX_OAUTH2_RESPONSE_BYTES`] read, no redirect.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), OAuth2Failure> {
        let timeout = self.timeout();
        let run = async {
            let mut response = request
                .send()
                .await
                .map_err(|e| OAuth2Failure::Unreachable {
                    reason: transport_reason(&e),
                })?;
            let status = response.status().as_u16();
            if response.status().is_redirection() {
                return Err(OAuth2Failure::Redirect { status });
            }
            if response
                .content_length()
                .is_some_and(|n| n > MAX_OAUTH2_RESPONSE_BYTES as u64)
            {
                return Err(OAuth2Failure::TooLarge {
                    limit: MAX_OAUTH2_RESPONSE_BYTES,
                });
            }
            let mut body = Vec::new();
            while let Some(chunk) =
                response
                    .chunk()
                    .await
                    .map_err(|e| OAuth2Failure::BadResponse {
                        reason: transport_reason(&e),
                    })?
            {
                if body.len() + chunk.len() > MAX_OAUTH2_RESPONSE_BYTES {
                    return Err(OAuth2Failure::TooLarge {
                        limit: MAX_OAUTH2_RESPONSE_BYTES,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, body))
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(OAuth2Failure::TimedOut {
                timeout_ms: self.auth.timeout_ms,
            }),
        }
    }

    /// The client secret, read now from its variable or file.
    fn client_secret(&self) -> Result<Option<AuthToken>, OAuth2Failure> {
        if let Some(var) = &self.oauth2.client_secret_env {
            let what = format!("client secret: environment variable `{var}`");
            let value = std::env::var(var).unwrap_or_default();
            return parse_secret(value.trim(), what, "is not set or empty").map(Some);
        }
        if let Some(path) = &self.oauth2.client_secret_file {
            let what = format!("client secret: file {}", path.display());
            let (text, _) = read_secret_file(path, &what)?;
            return parse_secret(text.trim(), what, "is empty").map(Some);
        }
        Ok(None)
    }

    /// The subject token, read afresh, and the file's age when it came from one.
    async fn subject(
        &self,
        reason: RefreshReason,
    ) -> Result<(AuthToken, Option<Duration>), AuthError> {
        let input = |what: String, reason: String| {
            self.fail(
                &self.endpoint_label(),
                OAuth2Failure::Input { what, reason },
            )
        };
        match self.oauth2.subject_source() {
            Some(SubjectSource::File) | None => {
                let path = self
                    .oauth2
                    .subject_token_file
                    .as_deref()
                    .unwrap_or(Path::new(""));
                let what = format!("subject_token_file {}", path.display());
                let (text, age) = read_secret_file(path, &what)
                    .map_err(|f| self.fail(&self.endpoint_label(), f))?;
                let token = parse_secret(text.trim(), what, "is empty")
                    .map_err(|f| self.fail(&self.endpoint_label(), f))?;
                Ok((token, age))
            }
            Some(SubjectSource::GithubActions) => {
                let url = std::env::var(GITHUB_ACTIONS_URL_ENV).unwrap_or_default();
                let bearer = std::env::var(GITHUB_ACTIONS_TOKEN_ENV).unwrap_or_default();
                if url.is_empty() || bearer.is_empty() {
                    return Err(input(
                        format!(
                            "subject: GitHub Actions ({GITHUB_ACTIONS_URL_ENV}, {GITHUB_ACTIONS_TOKEN_ENV})"
                        ),
                        "is not available: the variables are not set (does the job have `permissions: id-token: write`?)".to_owned(),
                    ));
                }
                let mut request_url = url::Url::parse(&url).map_err(|_| {
                    input(
                        format!("subject: GitHub Actions ({GITHUB_ACTIONS_URL_ENV})"),
                        "is not a URL".to_owned(),
                    )
                })?;
                if let Some(audience) = &self.oauth2.subject_audience {
                    request_url
                        .query_pairs_mut()
                        .append_pair("audience", audience);
                }
                let host = host_of(&request_url);
                let bearer = AuthToken::new(bearer);
                let request = self
                    .client()
                    .await?
                    .get(request_url)
                    .bearer_auth(bearer.expose_secret());
                let fail = |failure| self.fail(&format!("{host} (GitHub Actions)"), failure);
                let (status, body) = self.exchange(request).await.map_err(fail)?;
                if !(200..300).contains(&status) {
                    return Err(fail(OAuth2Failure::Status { status }));
                }
                let value = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("value").and_then(Value::as_str).map(str::to_owned))
                    .ok_or_else(|| {
                        fail(OAuth2Failure::BadResponse {
                            reason: "the GitHub Actions answer has no string `value`".to_owned(),
                        })
                    })?;
                let token = parse_secret(
                    value.trim(),
                    "subject: GitHub Actions token".to_owned(),
                    "is empty",
                )
                .map_err(fail)?;
                Ok((token, None))
            }
            Some(SubjectSource::Command) => {
                let (program, args) = self
                    .oauth2
                    .subject_command
                    .split_first()
                    .map(|(p, a)| (p.clone(), a.to_vec()))
                    .unwrap_or_default();
                let mut auth = ModelProviderAuthInfo::new(program);
                auth.args = args;
                auth.cwd = self.auth.cwd.clone();
                auth.env = self.auth.env.clone();
                auth.timeout_ms = self.auth.timeout_ms;
                let fresh = CommandRefresher::new(self.provider.clone(), auth)
                    .refresh(reason)
                    .await?;
                Ok((fresh.token, None))
            }
            Some(other) => Err(input(
                format!("subject `{}`", other.as_str()),
                "is not supported by this version".to_owned(),
            )),
        }
    }

    /// The refresh token to use: the stored one, else the one in memory, else the seed
    /// (`refresh_token_env` / `refresh_token_file`).
    fn current_refresh_token(&self) -> Result<AuthToken, OAuth2Failure> {
        // The store's file first: another process may have rotated it since (it ran the
        // exchange under the entry's lock).
        if let Some(path) = &self.refresh_token_path
            && let Ok((text, _)) = read_secret_file(path, "stored refresh token")
            && let Ok(token) = AuthToken::parse(text.trim())
        {
            return Ok(token);
        }
        if let Some(token) = lock(&self.refresh_token).clone() {
            return Ok(token);
        }
        if let Some(var) = &self.oauth2.refresh_token_env {
            let what = format!("refresh token: environment variable `{var}`");
            let value = std::env::var(var).unwrap_or_default();
            return parse_secret(value.trim(), what, "is not set or empty");
        }
        if let Some(path) = &self.oauth2.refresh_token_file {
            let what = format!("refresh token: file {}", path.display());
            let (text, _) = read_secret_file(path, &what)?;
            return parse_secret(text.trim(), what, "is empty");
        }
        Err(OAuth2Failure::Input {
            what: "refresh token".to_owned(),
            reason: if self.oauth2.grant == OAuth2Grant::DeviceCode {
                "is not there yet: nobody has approved this device (the device flow, `login`)"
                    .to_owned()
            } else {
                "is not configured (refresh_token_env or refresh_token_file)".to_owned()
            },
        })
    }

    /// Keeps a rotated refresh token: in memory, and in the store's file (atomically).
    fn keep_refresh_token(&self, token: AuthToken) {
        if let Some(path) = &self.refresh_token_path
            && let Err(e) = crate::files::write_private_file(path, token.expose_secret().as_bytes())
        {
            tracing::warn!(
                target: crate::TRACING_TARGET,
                provider = %self.provider,
                "cannot keep the rotated refresh token in {}: {e}",
                path.display()
            );
        }
        *lock(&self.refresh_token) = Some(token);
    }

    /// The configured `scope`, `audience` and `resource`, each when set.
    fn push_scope(&self, form: &mut Vec<(&'static str, String)>) {
        for (name, value) in [
            ("scope", &self.oauth2.scope),
            ("audience", &self.oauth2.audience),
            ("resource", &self.oauth2.resource),
        ] {
            if let Some(v) = value {
                form.push((name, v.clone()));
            }
        }
    }

    fn endpoint_label(&self) -> String {
        self.oauth2.endpoint_host()
    }

    /// One exchange at the token endpoint for this grant.
    async fn mint(&self, reason: RefreshReason) -> Result<FreshToken, AuthError> {
        let endpoints = self.endpoints().await?;
        let host = host_of(&endpoints.token);
        let grant = self.oauth2.grant;
        let mut secrets: Vec<AuthToken> = Vec::new();
        let mut form: Vec<(&str, String)> = vec![("grant_type", grant.grant_type().to_owned())];
        let mut report = ExchangeReport {
            grant,
            endpoint_host: host.clone(),
            subject: None,
            subject_age: None,
        };
        match grant {
            OAuth2Grant::ClientCredentials => {}
            OAuth2Grant::JwtBearer | OAuth2Grant::TokenExchange => {
                let (subject, age) = self.subject(reason).await?;
                report.subject = self.oauth2.subject_source();
                report.subject_age = age;
                if grant == OAuth2Grant::JwtBearer {
                    form.push(("assertion", subject.expose_secret().to_owned()));
                } else {
                    form.push(("subject_token", subject.expose_secret().to_owned()));
                    form.push((
                        "subject_token_type",
                        self.oauth2
                            .subject_token_type
                            .clone()
                            .unwrap_or_else(|| JWT_TOKEN_TYPE.to_owned()),
                    ));
                    if let Some(t) = &self.oauth2.requested_token_type {
                        form.push(("requested_token_type", t.clone()));
                    }
                }
                secrets.push(subject);
            }
            OAuth2Grant::RefreshToken | OAuth2Grant::DeviceCode => {
                let refresh = self
                    .current_refresh_token()
                    .map_err(|f| self.fail(&host, f))?;
                form[0].1 = "refresh_token".to_owned();
                form.push(("refresh_token", refresh.expose_secret().to_owned()));
                secrets.push(refresh);
            }
            other => {
                return Err(self.fail(
                    &host,
                    OAuth2Failure::Input {
                        what: format!("grant `{other}`"),
                        reason: "is not supported by this version".to_owned(),
                    },
                ));
            }
        }
        self.push_scope(&mut form);
        let secret = self.client_secret().map_err(|f| self.fail(&host, f))?;
        let (status, body) = self
            .post_form(&endpoints.token, form, secret.as_ref())
            .await
            .map_err(|f| self.fail(&host, f))?;
        if let Some(secret) = secret {
            secrets.push(secret);
        }
        let scrubber = Scrubber::new(secrets.iter().map(AuthToken::expose_secret));
        if !(200..300).contains(&status) {
            return Err(self.fail(&host, refusal(status, &body, &scrubber)));
        }
        let parsed = parse_token_response(&body).map_err(|f| self.fail(&host, f))?;
        if let Some(refresh) = parsed.refresh_token {
            self.keep_refresh_token(refresh);
        }
        *lock(&self.last) = Some(report);
        Ok(parsed.fresh)
    }

    /// POSTs `form` to `url` with the client's authentication, within the exchange's
    /// bounds: the status and the body.
    async fn post_form(
        &self,
        url: &url::Url,
        mut form: Vec<(&str, String)>,
        secret: Option<&AuthToken>,
    ) -> Result<(u16, Vec<u8>), OAuth2Failure> {
        let client = self
            .client()
            .await
            .map_err(|_| OAuth2Failure::Unreachable {
                reason: "the HTTP client cannot be built".to_owned(),
            })?;
        let mut request = client.post(url.clone());
        match (&self.oauth2.client_id, secret) {
            (Some(id), Some(secret)) if self.oauth2.client_auth == ClientAuthMethod::Basic => {
                request = request.header(
                    http::header::AUTHORIZATION,
                    basic_credentials(id, secret.expose_secret()),
                );
            }
            (Some(id), Some(secret)) => {
                form.push(("client_id", id.clone()));
                form.push(("client_secret", secret.expose_secret().to_owned()));
            }
            (Some(id), None) => form.push(("client_id", id.clone())),
            (None, _) => {}
        }
        let body = zeroize::Zeroizing::new(form_body(&form));
        drop(form);
        let request = request
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body.to_vec());
        self.exchange(request).await
    }

    /// The device flow (RFC 8628, grant `device_code`): asks the device authorization
    /// endpoint for a code, hands `show` what the person must open and type, then polls the
    /// token endpoint (every `interval`, 5 s unless the endpoint says, 5 s more after each
    /// `slow_down`) until the person approves, denies or the code expires. The refresh
    /// token it gives is kept like a rotated one.
    ///
    /// # Errors
    ///
    /// [`AuthError::OAuth2`]: the grant is not `device_code`, an endpoint failed, or the
    /// person denied (`access_denied`) or was too late (`expired_token`).
    pub async fn device_login(
        &self,
        show: &mut (dyn FnMut(&DevicePrompt) + Send),
    ) -> Result<FreshToken, AuthError> {
        let endpoints = self.endpoints().await?;
        let host = host_of(&endpoints.token);
        let Some(device_url) = endpoints.device.clone() else {
            return Err(self.fail(
                &host,
                OAuth2Failure::Input {
                    what: "the device authorization endpoint".to_owned(),
                    reason: "is not known: set device_authorization_url, or an issuer whose discovery document names one".to_owned(),
                },
            ));
        };
        let device_host = format!("{} (device authorization)", host_of(&device_url));
        let secret = self.client_secret().map_err(|f| self.fail(&host, f))?;
        let mut scrub_with: Vec<AuthToken> = secret.iter().cloned().collect();
        let mut form: Vec<(&str, String)> = Vec::new();
        self.push_scope(&mut form);
        let (status, body) = self
            .post_form(&device_url, form, secret.as_ref())
            .await
            .map_err(|f| self.fail(&device_host, f))?;
        let scrubber = Scrubber::new(scrub_with.iter().map(AuthToken::expose_secret));
        if !(200..300).contains(&status) {
            return Err(self.fail(&device_host, refusal(status, &body, &scrubber)));
        }
        let (prompt, device_code, mut interval, expires_in) =
            parse_device_answer(&body).map_err(|f| self.fail(&device_host, f))?;
        scrub_with.push(device_code.clone());
        show(&prompt);
        let scrubber = Scrubber::new(scrub_with.iter().map(AuthToken::expose_secret));
        let deadline = tokio::time::Instant::now() + expires_in;
        loop {
            tokio::time::sleep(interval).await;
            if tokio::time::Instant::now() >= deadline {
                return Err(self.fail(
                    &host,
                    OAuth2Failure::Refused {
                        status: 400,
                        code: "expired_token".to_owned(),
                        description: Some("the code expired before it was approved".to_owned()),
                    },
                ));
            }
            let form = vec![
                (
                    "grant_type",
                    OAuth2Grant::DeviceCode.grant_type().to_owned(),
                ),
                ("device_code", device_code.expose_secret().to_owned()),
            ];
            let (status, body) = self
                .post_form(&endpoints.token, form, secret.as_ref())
                .await
                .map_err(|f| self.fail(&host, f))?;
            if (200..300).contains(&status) {
                let parsed = parse_token_response(&body).map_err(|f| self.fail(&host, f))?;
                if let Some(refresh) = parsed.refresh_token {
                    self.keep_refresh_token(refresh);
                }
                return Ok(parsed.fresh);
            }
            match refusal(status, &body, &scrubber) {
                OAuth2Failure::Refused { code, .. } if code == "authorization_pending" => {}
                OAuth2Failure::Refused { code, .. } if code == "slow_down" => {
                    interval += Duration::from_secs(5);
                }
                other => return Err(self.fail(&host, other)),
            }
        }
    }
}

#[async_trait]
impl ExternalAuthRefresher for OAuth2Refresher {
    async fn refresh(&self, reason: RefreshReason) -> Result<FreshToken, AuthError> {
        self.mint(reason).await
    }

    fn describe(&self) -> String {
        self.oauth2.describe()
    }
}

/// What the person must do to approve a device login: open `verification_uri` and type
/// `user_code` (or open `verification_uri_complete`, which carries it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DevicePrompt {
    /// The page to open.
    pub verification_uri: String,
    /// The page with the code in it, when the endpoint gives one.
    pub verification_uri_complete: Option<String>,
    /// The code to type.
    pub user_code: String,
    /// How long the code is good for.
    pub expires_in: Duration,
}

/// Reads a device authorization answer (RFC 8628 §3.2): the prompt, the device code, the
/// polling interval (default 5 s, at least 1 s) and the code's lifetime. What is shown to
/// the person is checked to be printable: an http(s) URL, a short visible code.
fn parse_device_answer(
    body: &[u8],
) -> Result<(DevicePrompt, AuthToken, Duration, Duration), OAuth2Failure> {
    let bad = |reason: &str| OAuth2Failure::BadResponse {
        reason: reason.to_owned(),
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("the answer is not JSON"))?;
    let text = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_owned);
    let device_code = text("device_code")
        .and_then(|c| AuthToken::parse(c.trim()).ok())
        .ok_or_else(|| bad("the answer has no usable `device_code`"))?;
    let printable_url = |u: &String| parse_url(u).is_ok() && u.len() <= 2048;
    let verification_uri = text("verification_uri")
        .or_else(|| text("verification_url"))
        .filter(printable_url)
        .ok_or_else(|| bad("the answer has no http(s) `verification_uri`"))?;
    let user_code = text("user_code")
        .filter(|c| !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| (b' '..=b'~').contains(&b)))
        .ok_or_else(|| bad("the answer has no printable `user_code`"))?;
    let seconds = |name: &str, default: u64| {
        v.get(name)
            .and_then(Value::as_u64)
            .unwrap_or(default)
            .clamp(1, 3600)
    };
    let interval = Duration::from_secs(seconds("interval", 5));
    let expires_in = Duration::from_secs(seconds("expires_in", 600));
    Ok((
        DevicePrompt {
            verification_uri,
            verification_uri_complete: text("verification_uri_complete").filter(printable_url),
            user_code,
            expires_in,
        },
        device_code,
        interval,
        expires_in,
    ))
}

/// A token endpoint's successful answer.
struct TokenResponse {
    fresh: FreshToken,
    refresh_token: Option<AuthToken>,
}

/// Reads a token response (RFC 6749 §5.1): `access_token` (required), `expires_in`
/// (seconds, a number or a numeric string; else a JWT's `exp`), `refresh_token`.
fn parse_token_response(body: &[u8]) -> Result<TokenResponse, OAuth2Failure> {
    let bad = |reason: &str| OAuth2Failure::BadResponse {
        reason: reason.to_owned(),
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("the answer is not JSON"))?;
    let access = match v.get("access_token") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(bad("`access_token` is not a string")),
        None => return Err(bad("the answer has no `access_token`")),
    };
    let token = AuthToken::parse(access.trim()).map_err(|reason| OAuth2Failure::BadResponse {
        reason: format!("`access_token` {reason}"),
    })?;
    let now = SystemTime::now();
    let expires_at = match v.get("expires_in") {
        None | Some(Value::Null) => crate::format::jwt_expiry(token.expose_secret()),
        Some(value) => {
            let secs = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .filter(|s| s.is_finite() && (0.0..1e10).contains(s))
            .ok_or_else(|| bad("`expires_in` is not a number of seconds"))?;
            now.checked_add(Duration::from_secs_f64(secs))
        }
    };
    let refresh_token = match v.get("refresh_token") {
        Some(Value::String(s)) => {
            Some(
                AuthToken::parse(s.trim()).map_err(|reason| OAuth2Failure::BadResponse {
                    reason: format!("`refresh_token` {reason}"),
                })?,
            )
        }
        _ => None,
    };
    let mut fresh = FreshToken::new(token);
    fresh.expires_at = expires_at;
    fresh.shape = TokenShape::OAuth2;
    Ok(TokenResponse {
        fresh,
        refresh_token,
    })
}

/// An error answer: its `error` code (visible ASCII, at most 64 characters, else none) and
/// its `error_description` scrubbed of every secret of the exchange.
fn refusal(status: u16, body: &[u8], scrubber: &Scrubber) -> OAuth2Failure {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        v.as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let code = field("error").filter(|c| {
        !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'`')
    });
    match code {
        Some(code) if !scrubber.finds_secret(code.as_bytes()) => OAuth2Failure::Refused {
            status,
            code,
            description: field("error_description")
                .map(|d| scrubber.excerpt(&d, DESCRIPTION_CHARS))
                .filter(|d| !d.is_empty()),
        },
        _ => OAuth2Failure::Status { status },
    }
}

/// RFC 6749 §2.3.1: the id and secret form-encoded, then joined and base64'd.
fn basic_credentials(id: &str, secret: &str) -> http::HeaderValue {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let joined = zeroize::Zeroizing::new(format!("{}:{}", encode(id), encode(secret)));
    let value = zeroize::Zeroizing::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(joined.as_bytes())
    ));
    match http::HeaderValue::from_str(&value) {
        Ok(mut v) => {
            v.set_sensitive(true);
            v
        }
        // Base64 is always a valid header value.
        Err(_) => http::HeaderValue::from_static(""),
    }
}

fn form_body(pairs: &[(&str, String)]) -> Vec<u8> {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    serializer.finish().into_bytes()
}

/// A secret read from somewhere, as a token (visible ASCII, no spaces); never quoted.
fn parse_secret(value: &str, what: String, missing: &str) -> Result<AuthToken, OAuth2Failure> {
    if value.is_empty() {
        return Err(OAuth2Failure::Input {
            what,
            reason: missing.to_owned(),
        });
    }
    AuthToken::parse(value).map_err(|reason| OAuth2Failure::Input {
        what,
        reason: format!("is not usable: {reason}"),
    })
}

/// Reads a small secret file afresh: at most 64 KiB, UTF-8; its age from its modification
/// time.
fn read_secret_file(path: &Path, what: &str) -> Result<(String, Option<Duration>), OAuth2Failure> {
    use std::io::Read as _;
    let input = |reason: String| OAuth2Failure::Input {
        what: what.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path)
        .map_err(|e| input(format!("cannot be read: {}", io_reason(&e))))?;
    let age = file
        .metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|m| SystemTime::now().duration_since(m).ok());
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| input(format!("cannot be read: {}", io_reason(&e))))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(input(format!(
            "is larger than {} KiB",
            MAX_SECRET_FILE_BYTES / 1024
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| input("is not UTF-8".to_owned()))?;
    Ok((text, age))
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

fn parse_url(text: &str) -> Result<url::Url, String> {
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(u),
        _ => Err("is not an http(s) URL".to_owned()),
    }
}

/// `host[:port]` of a URL: what errors and `check --live` show of an endpoint.
fn host_of(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => String::new(),
    }
}

/// A transport error without the URL (which may carry a query), with its causes.
fn transport_reason(e: &reqwest::Error) -> String {
    let mut out = if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    }
    .to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
