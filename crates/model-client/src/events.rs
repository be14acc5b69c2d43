//! Typed stream events and the model list.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One event of a streamed response. Unknown event types are passed through as
/// [`ResponseEvent::Other`], never dropped.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ResponseEvent {
    /// `response.created`.
    Created {
        /// The event as received.
        data: Value,
    },
    /// `response.output_text.delta`, or a chat chunk's `delta.content`.
    OutputTextDelta {
        /// The text.
        delta: String,
    },
    /// `response.completed`, or `[DONE]` of a chat stream (with `Value::Null`).
    Completed {
        /// The event as received.
        data: Value,
    },
    /// `response.failed`, `response.incomplete` or `error`.
    Failed {
        /// The event type.
        kind: String,
        /// The event as received.
        data: Value,
    },
    /// Any other event.
    Other {
        /// The event type (`type` field, else the SSE event name).
        kind: String,
        /// The event as received.
        data: Value,
    },
}

impl ResponseEvent {
    /// The event type as the gateway named it.
    pub fn kind(&self) -> &str {
        match self {
            ResponseEvent::Created { .. } => "response.created",
            ResponseEvent::OutputTextDelta { .. } => "response.output_text.delta",
            ResponseEvent::Completed { .. } => "response.completed",
            ResponseEvent::Failed { kind, .. } | ResponseEvent::Other { kind, .. } => kind,
        }
    }

    /// The text of an output-text delta, `None` for every other event.
    pub fn text_delta(&self) -> Option<&str> {
        match self {
            ResponseEvent::OutputTextDelta { delta } => Some(delta),
            _ => None,
        }
    }

    /// The event as one JSON object (for printing).
    pub fn to_json(&self) -> Value {
        match self {
            ResponseEvent::OutputTextDelta { delta } => {
                serde_json::json!({"type": "response.output_text.delta", "delta": delta})
            }
            ResponseEvent::Created { data }
            | ResponseEvent::Completed { data }
            | ResponseEvent::Failed { data, .. }
            | ResponseEvent::Other { data, .. } => data.clone(),
        }
    }

    /// The error message of a [`ResponseEvent::Failed`] event (`response.error.message` or
    /// `error.message`), already scrubbed by the client.
    pub fn error_message(&self) -> Option<&str> {
        match self {
            ResponseEvent::Failed { data, .. } => data
                .pointer("/response/error/message")
                .or_else(|| data.pointer("/error/message"))
                .and_then(Value::as_str),
            _ => None,
        }
    }

    /// The event with every string of a failed event's data scrubbed (excerpts of at most
    /// 1000 characters, control characters removed, secrets replaced). Other events pass
    /// through unchanged.
    pub(crate) fn scrubbed(self, scrubber: &provider_auth::Scrubber) -> Self {
        match self {
            ResponseEvent::Failed { kind, mut data } => {
                scrub_strings(&mut data, scrubber);
                ResponseEvent::Failed {
                    kind: scrubber.excerpt(&kind, 100),
                    data,
                }
            }
            other => other,
        }
    }

    /// Whether this event ends the stream.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ResponseEvent::Completed { .. } | ResponseEvent::Failed { .. }
        )
    }

    /// A Responses API event from its SSE name and data.
    pub(crate) fn from_responses(name: Option<&str>, data: Value) -> Self {
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(name)
            .unwrap_or("message")
            .to_owned();
        match kind.as_str() {
            "response.created" => ResponseEvent::Created { data },
            "response.output_text.delta" => match data.get("delta").and_then(Value::as_str) {
                Some(delta) => ResponseEvent::OutputTextDelta {
                    delta: delta.to_owned(),
                },
                None => ResponseEvent::Other { kind, data },
            },
            "response.completed" => ResponseEvent::Completed { data },
            "response.failed" | "response.incomplete" | "error" => {
                ResponseEvent::Failed { kind, data }
            }
            _ => ResponseEvent::Other { kind, data },
        }
    }

    /// A chat-completions chunk.
    pub(crate) fn from_chat(data: Value) -> Self {
        if data.get("error").is_some() {
            return ResponseEvent::Failed {
                kind: "error".to_owned(),
                data,
            };
        }
        match data
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            Some(delta) if !delta.is_empty() => ResponseEvent::OutputTextDelta {
                delta: delta.to_owned(),
            },
            _ => ResponseEvent::Other {
                kind: "chat.completion.chunk".to_owned(),
                data,
            },
        }
    }
}

fn scrub_strings(value: &mut Value, scrubber: &provider_auth::Scrubber) {
    match value {
        Value::String(s) => *s = scrubber.excerpt(s, 1000),
        Value::Array(items) => items.iter_mut().for_each(|v| scrub_strings(v, scrubber)),
        Value::Object(map) => map.values_mut().for_each(|v| scrub_strings(v, scrubber)),
        _ => {}
    }
}

/// One model of `GET /models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model id.
    pub id: String,
    /// Everything else the gateway said about it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The body of `GET /models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `"list"`.
    #[serde(default)]
    pub object: String,
    /// The models.
    pub data: Vec<ModelInfo>,
}
