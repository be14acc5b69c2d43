//! `GET /_modelauth/metrics`: the proxy's counters and gauges in the OpenMetrics text format
//! (which Prometheus scrapes), encoded by `prometheus-client` from the same counters the
//! stats endpoint reads, at scrape time. Labels are provider ids and status classes only:
//! never a token, a header value, a path or a query string.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::route::{Route, Shared};

/// The `Content-Type` of the metrics answer.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics text of a running proxy.
pub(crate) fn render(shared: &Arc<Shared>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProxyCollector(shared.clone())));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

struct ProxyCollector(Arc<Shared>);

/// A counter per provider: name, help, and how to read it from the provider's route.
type CounterOf = (&'static str, &'static str, fn(&Route) -> u64);
/// How to read a gauge (absent: `None`) from a provider's route, at a moment.
type ReadGauge = fn(&Route, SystemTime) -> Option<f64>;
/// A gauge per provider: name, help, how to read it.
type GaugeOf = (&'static str, &'static str, ReadGauge);

impl std::fmt::Debug for ProxyCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyCollector")
    }
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Collector for ProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shared = &self.0;
        let routes: Vec<(&str, &Arc<Route>)> = shared
            .routes
            .iter()
            .map(|(id, r)| (id.as_str(), r))
            .collect();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        let mut family = encoder.encode_descriptor(
            "modelauth_requests",
            "Answers to clients, by provider and status class.",
            None,
            MetricType::Counter,
        )?;
        for (id, route) in &routes {
            for (class, count) in STATUS_CLASSES.iter().zip(&route.counters.by_status_class) {
                let labels = [("provider", *id), ("status_class", *class)];
                ConstCounter::new(load(count)).encode(family.encode_family(&labels)?)?;
            }
        }

        let counters: [CounterOf; 6] = [
            (
                "modelauth_replays",
                "Requests replayed with a new token after an auth failure.",
                |r| r.counters.replays.load(Ordering::Relaxed),
            ),
            (
                "modelauth_upstream_auth_failures",
                "Auth-failure answers from the gateway (401, or a status of auth.reauth_on; websocket handshakes included).",
                |r| r.counters.upstream_auth_failures.load(Ordering::Relaxed),
            ),
            (
                "modelauth_proxy_errors",
                "Answers the proxy made itself (token unavailable, gateway unreachable or timed out, refused paths).",
                |r| r.counters.errors.load(Ordering::Relaxed),
            ),
            (
                "modelauth_command_runs",
                "Token command runs (a token read from the shared store is not a run).",
                |r| r.provider.manager().stats().map_or(0, |s| s.command_runs),
            ),
            (
                "modelauth_command_failures",
                "Token command runs that failed.",
                |r| r.provider.manager().stats().map_or(0, |s| s.failures),
            ),
            (
                "modelauth_command_runs_after_401",
                "Token command runs started by an auth failure.",
                |r| {
                    r.provider
                        .manager()
                        .stats()
                        .map_or(0, |s| s.refreshes_after_401)
                },
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (id, route) in &routes {
                let labels = [("provider", *id)];
                ConstCounter::new(value(route)).encode(family.encode_family(&labels)?)?;
            }
        }

        let now = SystemTime::now();
        let gauges: [GaugeOf; 4] = [
            (
                "modelauth_token_age_seconds",
                "Seconds since the cached token was obtained (absent without one).",
                |r, now| {
                    let status = r.provider.manager().token_status()?;
                    Some(
                        now.duration_since(status.obtained_at)
                            .unwrap_or_default()
                            .as_secs_f64(),
                    )
                },
            ),
            (
                "modelauth_token_expires_in_seconds",
                "Seconds before the cached token is no longer used (absent without one, or when it is kept until a 401).",
                |r, _| {
                    Some(
                        r.provider
                            .manager()
                            .token_status()?
                            .expires_in?
                            .as_secs_f64(),
                    )
                },
            ),
            (
                "modelauth_streams_in_flight",
                "Answers whose body is still going to the client.",
                |r, _| Some(r.counters.in_flight.load(Ordering::Relaxed) as f64),
            ),
            (
                "modelauth_provider_available",
                "1 when the provider can be served, 0 when its credential cannot be set up.",
                |r, _| Some(if r.unavailable.is_some() { 0.0 } else { 1.0 }),
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (id, route) in &routes {
                if let Some(v) = value(route, now) {
                    let labels = [("provider", *id)];
                    ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        let process: [(&str, &str, MetricType, u64); 4] = [
            (
                "modelauth_connections_open",
                "Client connections open.",
                MetricType::Gauge,
                shared.slots.open() as u64,
            ),
            (
                "modelauth_connections_max",
                "The most client connections open at once.",
                MetricType::Gauge,
                shared.slots.max() as u64,
            ),
            (
                "modelauth_replay_buffer_bytes",
                "Bytes of request bodies buffered for replay.",
                MetricType::Gauge,
                shared.replay_budget.used() as u64,
            ),
            (
                "modelauth_refused",
                "Requests refused by the access check (client key, local user, Host, Origin).",
                MetricType::Counter,
                load(&shared.refused),
            ),
        ];
        for (name, help, kind, value) in process {
            let family = encoder.encode_descriptor(name, help, None, kind)?;
            match kind {
                MetricType::Counter => ConstCounter::new(value).encode(family)?,
                _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(family)?,
            }
        }
        Ok(())
    }
}
