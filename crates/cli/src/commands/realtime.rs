//! `modelauth realtime`.

use std::time::Duration;

use realtime::RealtimeSession;
use serde_json::Value;

use crate::error::CliError;
use crate::output::print;

/// Parses each `--send` value; a bad one is a usage error (before connecting).
pub fn parse_sends(sends: &[String]) -> Result<Vec<Value>, CliError> {
    sends
        .iter()
        .map(|s| match serde_json::from_str::<Value>(s) {
            Ok(v) if v.get("type").and_then(Value::as_str).is_some() => Ok(v),
            _ => Err(CliError::Usage(format!(
                "--send `{s}` is not a JSON object with a string \"type\""
            ))),
        })
        .collect()
}

/// Prints server events as JSON lines; sends `sends` after the first server event; stops
/// after an event of type `until`, or fails when `timeout` passes first.
pub async fn run(
    mut session: RealtimeSession,
    sends: Vec<Value>,
    until: Option<&str>,
    timeout: Option<Duration>,
) -> Result<(), CliError> {
    let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
    let mut pending = Some(sends);
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, session.next_event()).await {
                Ok(next) => next,
                Err(_) => {
                    let waited = timeout.map_or(0, |t| t.as_millis());
                    return Err(CliError::runtime(match until {
                        Some(kind) => {
                            format!("timed out after {waited} ms waiting for a `{kind}` event")
                        }
                        None => format!("timed out after {waited} ms"),
                    }));
                }
            },
            None => session.next_event().await,
        };
        let event = match next {
            None => return Ok(()),
            Some(Ok(event)) => event,
            Some(Err(e)) => match (&e, until) {
                (realtime::RealtimeError::Closed { code: 1000, .. }, None) => return Ok(()),
                _ => return Err(CliError::from_error("the realtime session failed", &e)),
            },
        };
        let line = serde_json::to_string(&event)
            .map_err(|e| CliError::runtime(format!("cannot print an event: {e}")))?;
        print(&format!("{line}\n"))?;
        if until == Some(event.kind.as_str()) {
            let _ = session.close().await;
            return Ok(());
        }
        if let Some(sends) = pending.take() {
            for value in sends {
                session
                    .send_json(value)
                    .await
                    .map_err(|e| CliError::from_error("could not send an event", &e))?;
            }
        }
    }
}
