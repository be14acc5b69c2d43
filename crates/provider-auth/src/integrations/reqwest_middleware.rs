//! [`AuthMiddleware`]: command-backed credentials for a `reqwest_middleware` client.

use std::sync::Arc;

use http::Extensions;
use reqwest_middleware::{Middleware, Next};

use crate::{AuthManager, Provider, RequestAuth, Verdict};

/// A `reqwest_middleware::Middleware` that adds a provider's credential to every request
/// and retries once with a newer token after a re-auth status. A request whose body is a
/// stream cannot be replayed: its rejection is reported (the next request gets a new token)
/// and returned as it came.
///
/// An [`AuthError`](crate::AuthError) (no credential could be had; nothing was sent) comes back as
/// `reqwest_middleware::Error::Middleware`.
#[derive(Debug, Clone)]
pub struct AuthMiddleware {
    blank: RequestAuth,
}

impl AuthMiddleware {
    /// A middleware over `manager`, treating 401 as a rejected token.
    pub fn new(manager: Arc<dyn AuthManager>) -> Self {
        Self {
            blank: RequestAuth::new(manager),
        }
    }

    /// A middleware for a configured provider (see [`Provider::from_config`]): its manager,
    /// sharing the process-wide cache of its auth config, and its re-auth statuses
    /// (`auth.reauth_on`).
    pub fn for_provider(provider: &Provider) -> Self {
        Self {
            blank: provider.request(),
        }
    }
}

#[async_trait::async_trait]
impl Middleware for AuthMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let mut auth = self.blank.clone();
        let mut request = request;
        loop {
            let replay = request.try_clone();
            for (name, value) in auth
                .credential_headers()
                .await
                .map_err(reqwest_middleware::Error::middleware)?
            {
                request.headers_mut().insert(name, value);
            }
            let response = next.clone().run(request, extensions).await?;
            let verdict = auth
                .after_status(response.status().as_u16())
                .await
                .map_err(reqwest_middleware::Error::middleware)?;
            match (verdict, replay) {
                (Verdict::Retry, Some(again)) => request = again,
                _ => return Ok(response),
            }
        }
    }
}
