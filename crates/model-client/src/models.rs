//! A cached model list that refreshes itself.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client::ModelClient;
use crate::error::ClientError;
use crate::events::ModelList;

/// Default time a model list is kept.
pub const DEFAULT_MODELS_TTL: Duration = Duration::from_secs(300);

/// Caches `GET /models` for a TTL. Fetches go through the client's one request path, so a
/// 401 refreshes the provider's token like every other request.
#[derive(Debug)]
pub struct ModelsManager {
    client: ModelClient,
    ttl: Duration,
    cached: Mutex<Option<(Instant, ModelList)>>,
    fetch: tokio::sync::Mutex<()>,
}

impl ModelsManager {
    /// A manager over `client` keeping lists for `ttl`.
    pub fn new(client: ModelClient, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            cached: Mutex::new(None),
            fetch: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self) -> Option<ModelList> {
        let cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cached
            .as_ref()
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, list)| list.clone())
    }

    /// The model list: cached while fresh, else fetched (one fetch at a time).
    pub async fn list(&self) -> Result<ModelList, ClientError> {
        if let Some(list) = self.fresh() {
            return Ok(list);
        }
        let _one_at_a_time = self.fetch.lock().await;
        if let Some(list) = self.fresh() {
            return Ok(list);
        }
        self.fetch_now().await
    }

    /// Fetches the list now, whatever is cached.
    pub async fn refresh(&self) -> Result<ModelList, ClientError> {
        let _one_at_a_time = self.fetch.lock().await;
        self.fetch_now().await
    }

    async fn fetch_now(&self) -> Result<ModelList, ClientError> {
        let list = self.client.list_models().await?;
        *self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), list.clone()));
        Ok(list)
    }
}
