//! [`Provider`]: one configured provider, set up once for every client that talks to it.

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use provider_config::ModelProviderInfo;

use crate::error::AuthError;
use crate::headers::{InvalidHeader, configured_header_values, provider_headers};
use crate::manager::{AuthManager, RequestAuth, auth_manager_for_provider};
use crate::scrub::Scrubber;

/// One configured provider, as every client here takes it (the HTTP client, the websocket
/// client, the proxy, the tower layer and the reqwest middleware): its id and settings, its
/// auth manager, the headers of every request, the configured header values to scrub, the
/// host to name in errors and the re-auth statuses. Cheap to clone (one `Arc`).
///
/// The headers are read once, when the handle is made (`env_http_headers` variables
/// included); one that cannot be sent is kept as the error [`Provider::headers`] returns,
/// so each client reports it where it reports its other config problems.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

struct Inner {
    id: Arc<str>,
    info: ModelProviderInfo,
    manager: Arc<dyn AuthManager>,
    headers: Result<HeaderMap, InvalidHeader>,
    header_secrets: Vec<String>,
    host: String,
    reauth: Arc<[u16]>,
}

impl Provider {
    /// The provider `id` with settings `info`, taking credentials from `manager`.
    pub fn new(id: &str, info: ModelProviderInfo, manager: Arc<dyn AuthManager>) -> Self {
        let reauth: Vec<u16> = [401u16, 403]
            .into_iter()
            .filter(|s| info.is_reauth_status(*s))
            .collect();
        Self {
            inner: Arc::new(Inner {
                id: id.into(),
                headers: provider_headers(&info),
                header_secrets: configured_header_values(&info),
                host: host_of(&info.base_url),
                reauth: reauth.into(),
                manager,
                info,
            }),
        }
    }

    /// The provider `id` with settings `info` and the manager its config calls for (see
    /// [`auth_manager_for_provider`]; one cache per auth config for the whole process).
    ///
    /// # Errors
    ///
    /// As [`auth_manager_for_provider`]: an unset `env_key`, an unusable static token, or
    /// `requires_openai_auth` without a base session.
    pub fn from_config(
        id: &str,
        info: ModelProviderInfo,
        base_session: Option<Arc<dyn AuthManager>>,
    ) -> Result<Self, AuthError> {
        let manager = auth_manager_for_provider(id, &info, base_session)?;
        Ok(Self::new(id, info, manager))
    }

    /// The provider id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The provider id, shared (what errors carry).
    pub fn shared_id(&self) -> Arc<str> {
        self.inner.id.clone()
    }

    /// Its settings.
    pub fn info(&self) -> &ModelProviderInfo {
        &self.inner.info
    }

    /// Its auth manager.
    pub fn manager(&self) -> &Arc<dyn AuthManager> {
        &self.inner.manager
    }

    /// The headers of every request and handshake, before the credential: `User-Agent`,
    /// then `http_headers` and `env_http_headers`, every configured value marked sensitive.
    ///
    /// # Errors
    ///
    /// A configured header that cannot be sent, named (never its value).
    pub fn headers(&self) -> Result<&HeaderMap, InvalidHeader> {
        self.inner.headers.as_ref().map_err(Clone::clone)
    }

    /// `host:port` of `base_url`, for messages (never a path or query, which may hold a key).
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Whether `status` means the credential is no longer good: 401, or a status of
    /// `auth.reauth_on`.
    pub fn is_reauth_status(&self, status: u16) -> bool {
        self.inner.reauth.contains(&status)
    }

    /// Starts a logical request: its [`RequestAuth`], with this provider's re-auth statuses.
    pub fn request(&self) -> RequestAuth {
        RequestAuth::with_reauth_statuses(self.inner.manager.clone(), self.inner.reauth.clone())
    }

    /// The scrubber for what this provider's gateway sends about a request (`auth`), or
    /// about none: every token sent lately, the one `auth` sent, and every configured header
    /// value long enough to be a key.
    pub fn scrubber(&self, auth: Option<&RequestAuth>) -> Scrubber {
        match auth {
            Some(auth) => auth.scrubber_with(&self.inner.header_secrets),
            None => self.request().scrubber_with(&self.inner.header_secrets),
        }
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No headers or header values: they often carry keys.
        f.debug_struct("Provider")
            .field("id", &self.inner.id)
            .field("host", &self.inner.host)
            .field("manager", &self.inner.manager)
            .finish_non_exhaustive()
    }
}

/// `host:port` of a URL (the port the scheme implies when none is written), or the text
/// itself when it does not parse.
fn host_of(base_url: &str) -> String {
    url::Url::parse(base_url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(match u.port_or_known_default() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            })
        })
        .unwrap_or_else(|| base_url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthToken, StaticAuthManager, Verdict};

    fn provider(reauth_on: Option<Vec<u16>>) -> Provider {
        let mut info = ModelProviderInfo::new("Corp", "https://gw.example.com/v1?key=secret");
        if let Some(statuses) = reauth_on {
            let mut auth = provider_config::ModelProviderAuthInfo::new("true");
            auth.reauth_on = statuses;
            info.auth = Some(auth);
        }
        let manager = Arc::new(StaticAuthManager::new("corp", AuthToken::new("t".into())));
        Provider::new("corp", info, manager)
    }

    #[test]
    fn the_host_names_no_path_or_query() {
        assert_eq!(provider(None).host(), "gw.example.com:443");
        assert_eq!(host_of("not a url"), "not a url");
    }

    #[tokio::test]
    async fn a_status_of_reauth_on_is_a_rejection_and_others_are_answers() {
        let with_403 = provider(Some(vec![401, 403]));
        assert!(with_403.is_reauth_status(403));
        let mut auth = with_403.request();
        auth.credential_headers().await.expect("headers");
        // A static key cannot recover: the 403 goes back as it came.
        assert_eq!(
            auth.after_status(403).await.expect("verdict"),
            Verdict::Rejected {
                after_fresh_token: false
            }
        );
        let only_401 = provider(None);
        assert!(!only_401.is_reauth_status(403));
        let mut auth = only_401.request();
        auth.credential_headers().await.expect("headers");
        assert_eq!(
            auth.after_status(403).await.expect("verdict"),
            Verdict::Answer
        );
    }
}
