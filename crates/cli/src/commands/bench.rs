//! `modelauth bench`.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use model_client::ModelClient;
use modelauth::load::{LoadLimit, LoadReport, run_load};

use crate::error::CliError;
use crate::output::print;

/// Most requests in flight at once.
pub const MAX_CONCURRENCY: u64 = 10_000;

/// How long `bench` runs: a number of requests, or a time (`--duration`).
#[derive(Debug, Clone, Copy)]
pub enum Amount {
    /// `--requests N`.
    Requests(u64),
    /// `--duration SECONDS`.
    Duration(Duration),
}

/// Loads `GET /models` and prints the report (one JSON object with `json`). Fails (exit 1)
/// when any request failed, after printing the report. On a terminal, a progress line is
/// kept up to date on stderr.
pub async fn bench(
    client: &ModelClient,
    amount: Amount,
    concurrency: u64,
    json: bool,
) -> Result<(), CliError> {
    let limit = match amount {
        Amount::Requests(0) => return Err(usage("--requests must be at least 1")),
        Amount::Requests(n) => LoadLimit::Requests(n),
        Amount::Duration(d) if d.is_zero() => {
            return Err(usage("--duration must be more than 0 seconds"));
        }
        Amount::Duration(d) => LoadLimit::Duration(d),
    };
    if concurrency == 0 {
        return Err(usage("--concurrency must be at least 1"));
    }
    if concurrency > MAX_CONCURRENCY {
        return Err(usage(&format!(
            "--concurrency is at most {MAX_CONCURRENCY} (each request in flight holds a connection)"
        )));
    }
    let done = Arc::new(AtomicU64::new(0));
    let ticker = crate::output::progress_on_stderr().then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let line = progress_line(amount, done.load(Ordering::Relaxed), started.elapsed());
                let _ = write!(std::io::stderr(), "\r{line}\x1b[K");
            }
        })
    });
    let report = run_load(client, limit, concurrency, Some(&done)).await;
    if let Some(ticker) = ticker {
        ticker.abort();
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
    if json {
        print(&format!("{}\n", report.to_json()))?;
    } else {
        print(&human(client.provider_id(), &report))?;
    }
    match (&report.first_error, report.failed) {
        (_, 0) => Ok(()),
        (first, n) => Err(CliError::runtime(format!(
            "{n} of {} requests failed; the first: {}",
            report.requests,
            first.as_deref().unwrap_or("unknown error")
        ))),
    }
}

fn usage(message: &str) -> CliError {
    CliError::Usage(message.to_owned())
}

/// `1200/5000 requests, 2.4 s` or `1200 requests, 2.4 s of 10 s`.
fn progress_line(amount: Amount, done: u64, elapsed: Duration) -> String {
    match amount {
        Amount::Requests(n) => format!("{done}/{n} requests, {:.1} s", elapsed.as_secs_f64()),
        Amount::Duration(d) => format!(
            "{done} requests, {:.1} s of {} s",
            elapsed.as_secs_f64(),
            d.as_secs_f64()
        ),
    }
}

fn human(provider: &str, r: &LoadReport) -> String {
    format!(
        "provider {provider}: {} requests at concurrency {}: {} ok, {} failed, {} answered 401, {} command runs\n\
         latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
         throughput {:.1} requests/s over {:.0} ms\n",
        r.requests,
        r.concurrency,
        r.ok,
        r.failed,
        r.unauthorized,
        r.command_runs,
        r.p50_ms,
        r.p90_ms,
        r.p99_ms,
        r.max_ms,
        r.rps,
        r.elapsed_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_requests_or_time() {
        assert_eq!(
            progress_line(Amount::Requests(5000), 1200, Duration::from_millis(2400)),
            "1200/5000 requests, 2.4 s"
        );
        assert_eq!(
            progress_line(
                Amount::Duration(Duration::from_secs(10)),
                1200,
                Duration::from_millis(2400)
            ),
            "1200 requests, 2.4 s of 10 s"
        );
    }
}

/// `modelauth bench`'s flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Provider id (default: the config's model_provider).
    #[arg(short, long = "provider", value_name = "ID")]
    pub provider: Option<String>,
    /// Number of requests.
    #[arg(long, default_value_t = 1000, conflicts_with = "duration")]
    pub requests: u64,
    /// Run for this many seconds instead of a number of requests.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `modelauth bench`: load `GET /models` and report what it cost.
pub fn run(args: Args, ctx: &crate::context::Context) -> Result<(), CliError> {
    let Args {
        provider,
        requests,
        duration,
        concurrency,
        json,
    } = args;
    let amount = match duration {
        // A negative or not-a-number duration is refused like 0.
        Some(secs) => Amount::Duration(Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)),
        None => Amount::Requests(requests),
    };
    let client = ctx.client(provider.as_deref())?;
    crate::block_on_many(bench(&client, amount, concurrency, json))
}
