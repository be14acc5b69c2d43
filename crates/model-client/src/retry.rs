//! Backoff between retries, honouring `Retry-After`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// Longest `Retry-After` the client waits for; a longer one ends the retries.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// First backoff delay; doubled for each retry, with ±10% jitter, at most 10 s.
pub const BASE_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The delay before retry number `attempt` (0-based).
pub(crate) fn backoff(attempt: u32) -> Duration {
    let exp = BASE_BACKOFF.saturating_mul(2u32.saturating_pow(attempt.min(16)));
    exp.min(MAX_BACKOFF).mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter() {
        for attempt in 0..4 {
            let d = backoff(attempt).as_secs_f64();
            let nominal = 0.2 * f64::from(1u32 << attempt);
            assert!(d >= nominal * 0.9 && d <= nominal * 1.1, "{attempt}: {d}");
        }
        assert!(backoff(30) <= Duration::from_secs(11));
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert(http::header::RETRY_AFTER, later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(27) && d <= Duration::from_secs(30));
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
