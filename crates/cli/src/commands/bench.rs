//! `modelauth bench`.

use model_client::{LoadLimit, LoadReport, ModelClient, run_load};

use crate::error::CliError;
use crate::output::print;

/// Loads `GET /models` and prints the report (one JSON object with `json`). Fails (exit 1)
/// when any request failed, after printing the report.
pub async fn bench(
    client: &ModelClient,
    requests: u64,
    concurrency: u64,
    json: bool,
) -> Result<(), CliError> {
    if requests == 0 || concurrency == 0 {
        return Err(CliError::Usage(
            "--requests and --concurrency must be at least 1".to_owned(),
        ));
    }
    let report = run_load(client, LoadLimit::Requests(requests), concurrency).await;
    if json {
        let text = serde_json::to_string(&report)
            .map_err(|e| CliError::runtime(format!("cannot print the report: {e}")))?;
        print(&format!("{text}\n"))?;
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
