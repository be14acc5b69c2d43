//! [`AuthLayer`]: command-backed credentials for any `tower::Service` over `http` requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::{AuthManager, Provider, RequestAuth, Verdict};

/// The error of an [`AuthService`]: the inner service's, or an [`AuthError`](crate::AuthError) (no credential
/// could be had: nothing was sent).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A `tower::Layer` that adds a provider's credential to every request and retries once
/// with a newer token after a re-auth status. The request body must be `Clone` to be
/// replayed (e.g. `http_body_util::Full<Bytes>`, `String`); the inner service must be
/// `Clone` (as hyper's and tonic's clients are).
///
/// ```
/// # use std::sync::Arc;
/// # use provider_auth::{AuthLayer, AuthToken, StaticAuthManager};
/// let manager = Arc::new(StaticAuthManager::new("corp", AuthToken::new("t".into())));
/// let layer = AuthLayer::new(manager);
/// // let client = tower::ServiceBuilder::new().layer(layer).service(hyper_client);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct AuthLayer {
    blank: RequestAuth,
}

impl AuthLayer {
    /// A layer over `manager`, treating 401 as a rejected token.
    pub fn new(manager: Arc<dyn AuthManager>) -> Self {
        Self {
            blank: RequestAuth::new(manager),
        }
    }

    /// A layer for a configured provider (see [`Provider::from_config`]): its manager,
    /// sharing the process-wide cache of its auth config, and its re-auth statuses
    /// (`auth.reauth_on`).
    pub fn for_provider(provider: &Provider) -> Self {
        Self {
            blank: provider.request(),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            blank: self.blank.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    blank: RequestAuth,
}

impl<S, B, RB> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Clone + Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service that was made ready serves the first attempt; a clone the retry.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let mut auth = self.blank.clone();
        Box::pin(async move {
            loop {
                let mut attempt = request.clone();
                for (name, value) in auth.credential_headers().await? {
                    attempt.headers_mut().insert(name, value);
                }
                std::future::poll_fn(|cx| inner.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                let response = inner.call(attempt).await.map_err(Into::into)?;
                // Retry: the same request again, with the newer credential.
                if auth.after_status(response.status().as_u16()).await? != Verdict::Retry {
                    return Ok(response);
                }
            }
        })
    }
}
