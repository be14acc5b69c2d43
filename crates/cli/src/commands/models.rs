//! `modelauth models` and `modelauth respond`.

use std::io::Read as _;

use futures::StreamExt as _;
use model_client::{ModelClient, ResponseEvent};

use crate::error::CliError;
use crate::output::print;

/// Lists model ids, one per line, or the whole list as JSON.
pub async fn models(client: &ModelClient, json: bool) -> Result<(), CliError> {
    let list = client
        .list_models()
        .await
        .map_err(|e| CliError::from_error("could not list models", &e))?;
    if json {
        let text = serde_json::to_string(&list)
            .map_err(|e| CliError::runtime(format!("cannot print the list: {e}")))?;
        return print(&format!("{text}\n"));
    }
    let mut out = String::new();
    for model in &list.data {
        out.push_str(&model.id);
        out.push('\n');
    }
    print(&out)
}

/// Largest prompt read from stdin (8 MiB): `/dev/zero` must not fill the memory.
pub const MAX_PROMPT_BYTES: u64 = 8 << 20;

/// The prompt: the argument, else stdin (at most [`MAX_PROMPT_BYTES`]).
pub fn prompt(arg: Option<String>) -> Result<String, CliError> {
    if let Some(p) = arg {
        return Ok(p);
    }
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_PROMPT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| CliError::Usage(format!("cannot read the prompt from stdin: {e}")))?;
    if text.len() as u64 > MAX_PROMPT_BYTES {
        return Err(CliError::Usage(format!(
            "the prompt on stdin is larger than {} MiB",
            MAX_PROMPT_BYTES >> 20
        )));
    }
    if text.trim().is_empty() {
        return Err(CliError::Usage(
            "no prompt: give one as an argument or on stdin".to_owned(),
        ));
    }
    Ok(text)
}

/// Streams a response: text deltas as they arrive, or every event as a JSON line.
pub async fn respond(
    client: &ModelClient,
    model: &str,
    prompt: &str,
    json: bool,
) -> Result<(), CliError> {
    let mut stream = client
        .stream_prompt(model, prompt)
        .await
        .map_err(|e| CliError::from_error("could not start the response", &e))?;
    let mut printed_text = false;
    while let Some(item) = stream.next().await {
        let event = item.map_err(|e| {
            if printed_text {
                let _ = print("\n");
            }
            CliError::from_error("the response stream failed", &e)
        })?;
        if json {
            print(&format!("{}\n", event.to_json()))?;
        } else if let Some(delta) = event.text_delta() {
            print(delta)?;
            printed_text = true;
        }
        if let ResponseEvent::Failed { kind, .. } = &event {
            if printed_text && !json {
                print("\n")?;
            }
            // Already scrubbed by the client: control characters and tokens removed.
            let message = event.error_message().unwrap_or("no message");
            return Err(CliError::runtime(format!(
                "the gateway reported `{kind}`: {message}"
            )));
        }
    }
    if printed_text && !json {
        print("\n")?;
    }
    Ok(())
}
