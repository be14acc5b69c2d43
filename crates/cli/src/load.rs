//! A small load generator over `GET /models`, shared by `modelauth bench` and the
//! benchmarks of this package.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use model_client::ModelClient;

/// How much load to apply.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum LoadLimit {
    /// A number of requests.
    Requests(u64),
    /// As many requests as fit in this time.
    Duration(Duration),
}

/// What a load run measured. Latencies are per logical request (401 recovery and retries
/// included).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadReport {
    /// Logical requests made.
    pub requests: u64,
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// 401 answers received (each recovered or reported).
    pub unauthorized: u64,
    /// Token command runs during the load.
    pub command_runs: u64,
    /// Concurrent workers.
    pub concurrency: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile latency, ms.
    pub p90_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
    /// Requests per second.
    pub rps: f64,
    /// Wall time, ms.
    pub elapsed_ms: f64,
    /// The first error, if any request failed.
    pub first_error: Option<String>,
}

impl LoadReport {
    /// The report as one JSON object, as `modelauth bench --json` prints it (times and rates to three decimals, without
    /// float noise such as `2002.4098829999998`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::json!({
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.failed,
            "unauthorized": self.unauthorized,
            "command_runs": self.command_runs,
            "concurrency": self.concurrency,
            "p50_ms": round3(self.p50_ms),
            "p90_ms": round3(self.p90_ms),
            "p99_ms": round3(self.p99_ms),
            "max_ms": round3(self.max_ms),
            "rps": round3(self.rps),
            "elapsed_ms": self.elapsed_ms,
        });
        if let Some(first) = &self.first_error {
            object["first_error"] = serde_json::Value::String(first.clone());
        }
        object
    }
}

/// Runs `GET /models` through `client` from `concurrency` workers until `limit`. Each
/// finished request adds one to `progress`, when given (for a progress line).
pub async fn run_load(
    client: &ModelClient,
    limit: LoadLimit,
    concurrency: u64,
    progress: Option<&Arc<AtomicU64>>,
) -> LoadReport {
    let concurrency = concurrency.max(1);
    let runs_before = client.auth_manager().stats().map_or(0, |s| s.command_runs);
    let unauthorized_before = client.stats().unauthorized;
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = match limit {
        LoadLimit::Duration(d) => started.checked_add(d),
        LoadLimit::Requests(_) => None,
    };
    let max_requests = match limit {
        LoadLimit::Requests(n) => n,
        LoadLimit::Duration(_) => u64::MAX,
    };
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let issued = issued.clone();
            let progress = progress.cloned();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failed = 0u64;
                let mut first_error = None;
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d)
                        || issued.fetch_add(1, Ordering::Relaxed) >= max_requests
                    {
                        break;
                    }
                    let t = Instant::now();
                    let result = client.list_models().await;
                    latencies.push(t.elapsed());
                    if let Some(done) = &progress {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Err(e) = result {
                        failed += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                (latencies, failed, first_error)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    for worker in workers {
        match worker.await {
            Ok((l, f, e)) => {
                latencies.extend(l);
                failed += f;
                if first_error.is_none() {
                    first_error = e;
                }
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("a load worker failed: {e}"));
            }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies
            .get(rank.saturating_sub(1).min(latencies.len() - 1))
            .map_or(0.0, |d| ms(*d))
    };
    LoadReport {
        requests,
        ok: requests.saturating_sub(failed),
        failed,
        unauthorized: client.stats().unauthorized - unauthorized_before,
        command_runs: client.auth_manager().stats().map_or(0, |s| s.command_runs) - runs_before,
        concurrency,
        p50_ms: pct(50.0),
        p90_ms: pct(90.0),
        p99_ms: pct(99.0),
        max_ms: latencies.last().map_or(0.0, |d| ms(*d)),
        rps: if elapsed.is_zero() {
            0.0
        } else {
            requests as f64 / elapsed.as_secs_f64()
        },
        elapsed_ms: ms(elapsed),
        first_error,
    }
}

/// `x` to three decimals (a microsecond for times in ms), as JSON writes it.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
