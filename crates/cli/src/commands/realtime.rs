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
pub async fn print_events(
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

/// `modelauth realtime`'s flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Provider id (default: the config's model_provider).
    #[arg(short, long = "provider", value_name = "ID")]
    pub provider: Option<String>,
    /// Model id.
    #[arg(short, long)]
    pub model: String,
    /// An event to send (JSON with a "type"), after the server's first event. Repeatable.
    #[arg(long = "send", value_name = "JSON")]
    pub send: Vec<String>,
    /// Exit 0 after printing an event of this type.
    #[arg(long, value_name = "TYPE")]
    pub until: Option<String>,
    /// Exit 1 if the session is not over (or TYPE has not come) after N ms.
    #[arg(long, value_name = "N")]
    pub timeout_ms: Option<u64>,
}

/// `modelauth realtime`: a session whose server events are printed as JSON lines.
pub fn run(args: Args, ctx: &crate::context::Context) -> Result<(), CliError> {
    let Args {
        provider,
        model,
        send,
        until,
        timeout_ms,
    } = args;
    let sends = parse_sends(&send)?;
    let client =
        realtime::RealtimeClient::for_provider(ctx.provider(provider.as_deref())?.handle()?);
    crate::block_on(async {
        let session = client
            .open(&model)
            .await
            .map_err(|e| CliError::from_error("could not open the realtime session", &e))?;
        print_events(
            session,
            sends,
            until.as_deref(),
            timeout_ms.map(Duration::from_millis),
        )
        .await
    })
}
