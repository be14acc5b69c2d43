//! What the request handlers share: each provider's [`Route`] (its config, auth manager,
//! upstream client, counters and scrubber), the proxy-wide [`Shared`] state, the replay
//! budget, and how a request's upstream URL and headers are made. A leaf of the crate's
//! modules: the handlers (`forward`, `websocket`, `sse`, `idle`) and the server import it,
//! never the other way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, header};
use provider_auth::{Provider, RequestAuth, Scrubber};
use provider_config::ModelProviderInfo;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) replays: AtomicU64,
    pub(crate) upstream_auth_failures: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// Answers by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub(crate) by_status_class: [AtomicU64; 5],
    /// Answers whose body is still going to the client.
    pub(crate) in_flight: Arc<AtomicU64>,
}

/// A provider as the request handlers see it.
pub(crate) struct Route {
    /// The provider: id, settings, auth manager, headers, scrubbed values, re-auth statuses.
    pub(crate) provider: Provider,
    /// `base_url` with the provider's `query_params`, parsed once at bind.
    pub(crate) base: url::Url,
    /// `base` without its query or a trailing `/`: what every upstream URL starts with.
    pub(crate) base_prefix: String,
    /// The provider's `query_params`, as `base` writes them (`None` when it has none).
    pub(crate) base_query: Option<String>,
    /// The provider's headers, checked at bind.
    pub(crate) headers: http::HeaderMap,
    pub(crate) http: crate::upstream::UpstreamClient,
    pub(crate) counters: Counters,
    pub(crate) unavailable: Option<String>,
    /// The scrubber last built for a request, and the credential generation it was built
    /// for: answers of one generation share it.
    pub(crate) last_scrubber: std::sync::Mutex<Option<(u64, Arc<Scrubber>)>>,
}

impl Route {
    /// The provider id.
    pub(crate) fn id(&self) -> &str {
        self.provider.id()
    }

    /// The provider's settings.
    pub(crate) fn info(&self) -> &ModelProviderInfo {
        self.provider.info()
    }

    pub(crate) fn count(&self, counter: impl Fn(&Counters) -> &AtomicU64) {
        counter(&self.counters).fetch_add(1, Ordering::Relaxed);
    }

    /// The answer on its way to the client: counted by status class, and as in flight
    /// until its body has ended or the client went away (the server's body wrapper takes
    /// the count from the answer's extensions).
    pub(crate) fn answered(&self, response: crate::body::Response) -> crate::body::Response {
        let class = usize::from(response.status().as_u16() / 100).clamp(1, 5) - 1;
        self.counters.by_status_class[class].fetch_add(1, Ordering::Relaxed);
        // The server's body wrapper holds it (no second wrapper per answer).
        let mut response = response;
        response
            .extensions_mut()
            .insert(crate::limits::Counted::new(self.counters.in_flight.clone()));
        response
    }

    /// A scrubber for what this provider's gateway sends about a request (`auth`, or none
    /// when there is no request): every recent token, the credential the request sent, and
    /// every configured header value. Built once per credential generation.
    pub(crate) fn scrubber(&self, auth: Option<&RequestAuth>) -> Arc<Scrubber> {
        let Some(generation) = auth.and_then(RequestAuth::sent_generation) else {
            return Arc::new(self.provider.scrubber(auth));
        };
        let mut last = match self.last_scrubber.lock() {
            Ok(last) => last,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((built_for, scrubber)) = last.as_ref()
            && *built_for == generation
        {
            return scrubber.clone();
        }
        let scrubber = Arc::new(self.provider.scrubber(auth));
        *last = Some((generation, scrubber.clone()));
        scrubber
    }
}

pub(crate) struct Shared {
    pub(crate) routes: BTreeMap<String, Arc<Route>>,
    pub(crate) client_key: Option<Vec<u8>>,
    /// Scoped client keys, replaced whole on a reload.
    pub(crate) client_keys: Option<std::sync::RwLock<Arc<crate::keys::ClientKeys>>>,
    pub(crate) port: u16,
    /// Serving a Unix-domain socket: its file's permissions are the access rule, and the
    /// `Host` header is not checked (no browser reaches a socket file).
    pub(crate) unix_socket: bool,
    pub(crate) max_replay_bytes: usize,
    pub(crate) client_idle_timeout: Duration,
    pub(crate) body_idle_timeout: Duration,
    /// How long requests in flight may go on once stopping.
    pub(crate) shutdown_grace: Duration,
    /// Bytes of request bodies buffered for replay right now, and the most allowed.
    pub(crate) replay_budget: Arc<ReplayBudget>,
    /// Requests refused by the access check (client key, `Host`, `Origin`).
    pub(crate) refused: AtomicU64,
    /// The open client connections and their bounds.
    pub(crate) slots: Arc<crate::limits::Slots>,
}

/// The bytes of request bodies buffered for replay, process-wide, against a limit: a body
/// that would go over it streams through without replay instead, so a thousand slow
/// uploads cannot take the proxy's memory.
pub(crate) struct ReplayBudget {
    used: std::sync::atomic::AtomicUsize,
    limit: usize,
}

impl ReplayBudget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            used: std::sync::atomic::AtomicUsize::new(0),
            limit,
        }
    }

    /// The bytes buffered for replays right now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes `bytes` more for `reservation`, if the budget has them.
    pub(crate) fn take(&self, reservation: &mut Reservation, bytes: usize) -> bool {
        use std::sync::atomic::Ordering;
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok();
        if taken {
            reservation.bytes += bytes;
        }
        taken
    }
}

/// Bytes held against the replay budget, given back when dropped.
pub(crate) struct Reservation {
    pub(crate) budget: Arc<ReplayBudget>,
    pub(crate) bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget
            .used
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

/// `<base_url>/<rest>` with the client's query, then the provider's `query_params`: the
/// URL [`provider_config::ModelProviderInfo::endpoint_url`] makes, written straight from
/// the route's `base_prefix` and `base_query` (made once, at bind). `rest` and `query` are
/// as hyper parsed them from the request target, so the result is a valid URI too.
pub(crate) fn upstream_url(route: &Route, rest: &str, query: Option<&str>) -> String {
    let rest = rest.trim_start_matches('/');
    let query = query.filter(|q| !q.is_empty());
    let mut url = String::with_capacity(
        route.base_prefix.len()
            + rest.len()
            + query.map_or(0, str::len)
            + route.base_query.as_ref().map_or(0, String::len)
            + 3,
    );
    url.push_str(&route.base_prefix);
    url.push('/');
    url.push_str(rest);
    for (i, part) in query
        .into_iter()
        .chain(route.base_query.as_deref())
        .enumerate()
    {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(part);
    }
    url
}

/// The provider's headers over the client's; the client's `User-Agent` is kept.
pub(crate) fn upstream_headers(route: &Route, inbound: &HeaderMap) -> HeaderMap {
    let mut headers = crate::headers::forwardable(inbound);
    for (name, value) in &route.headers {
        if name == header::USER_AGENT && headers.contains_key(header::USER_AGENT) {
            continue;
        }
        headers.insert(name.clone(), value.clone());
    }
    headers
}

impl Shared {
    /// Whether clients must present a key (one, or one of the scoped keys).
    pub(crate) fn keyed(&self) -> bool {
        self.client_key.is_some() || self.client_keys.is_some()
    }

    /// The scoped key `headers` present, when the proxy has scoped keys: `Some(Ok(key))`,
    /// or `Some(Err(()))` when none of them (valid now) is presented; `None` without them.
    pub(crate) fn scoped_key(
        &self,
        headers: &HeaderMap,
    ) -> Option<Result<crate::keys::ScopedKey, ()>> {
        let keys = self.client_keys.as_ref()?;
        let keys = match keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Some(
            keys.find(headers, std::time::SystemTime::now())
                .cloned()
                .ok_or(()),
        )
    }
}
