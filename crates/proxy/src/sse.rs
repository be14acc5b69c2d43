//! Server-sent events on their way to the client: every event goes on as it came, except
//! an error event (an `event: error`, a `{"type":"error"}`, a `response.failed` or a
//! top-level `"error": {...}` in its data), whose lines are scrubbed of every token sent
//! to the provider and of terminal escapes, those in its JSON strings included. A text
//! delta that merely says "error" goes on untouched. A gateway that echoes the credential
//! in a stream's error does not hand it to the client.
//!
//! Events go on whole, as soon as their blank line arrives: an SSE client acts on nothing
//! before that, so holding the rest of a partial event back delays nothing it could use.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use provider_auth::Scrubber;

use crate::TRACING_TARGET;
use crate::idle::IdleBounded;
use crate::server::Route;

/// Largest event held back while its end has not arrived (as the clients' own limit,
/// `model_client::MAX_EVENT_BYTES`). A stream with a longer one is cut.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// A cheap first test: an event without these bytes is no error event.
const ERROR_MARK: &[u8] = b"error";

/// An event over [`MAX_EVENT_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("the gateway sent an event of more than {} MiB", MAX_EVENT_BYTES >> 20)]
pub(crate) struct EventTooLarge;

/// A `text/event-stream` answer body, its error events scrubbed.
pub(crate) struct ScrubbedEvents {
    body: IdleBounded,
    route: Arc<Route>,
    /// The start of an event whose end has not arrived.
    pending: BytesMut,
    /// How far `pending` has been searched for an event's end.
    framer: Framer,
    /// Built at the first error event.
    scrubber: Option<Scrubber>,
}

impl ScrubbedEvents {
    pub(crate) fn new(body: IdleBounded, route: Arc<Route>) -> Self {
        Self {
            body,
            route,
            pending: BytesMut::new(),
            framer: Framer::default(),
            scrubber: None,
        }
    }

    /// Complete events as they go to the client.
    fn pass(&mut self, events: Bytes) -> Bytes {
        if memchr::memmem::find(&events, ERROR_MARK).is_none() {
            return events;
        }
        let route = &self.route;
        let scrubber = self.scrubber.get_or_insert_with(|| route.scrubber());
        scrub_error_events(&events, scrubber)
    }
}

impl Body for ScrubbedEvents {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            let frame = match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    // The last event, should the stream end without its blank line.
                    if this.pending.is_empty() {
                        return Poll::Ready(None);
                    }
                    let rest = this.pending.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(this.pass(rest)))));
                }
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                // Trailers go on as they are.
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            };
            // Only what arrived is searched (the framer resumes where it stopped): a long
            // event costs its length once.
            let end = if this.pending.is_empty() {
                let end = this.framer.last_end(&data);
                if end == Some(data.len()) {
                    // The common case: whole events, passed on without a copy.
                    this.framer = Framer::default();
                    return Poll::Ready(Some(Ok(Frame::data(this.pass(data)))));
                }
                this.pending.extend_from_slice(&data);
                end
            } else {
                this.pending.extend_from_slice(&data);
                this.framer.last_end(&this.pending)
            };
            let complete = match end {
                Some(end) => {
                    this.framer.cut(end);
                    this.pending.split_to(end).freeze()
                }
                None if this.pending.len() > MAX_EVENT_BYTES => {
                    this.route.count(|c| &c.errors);
                    tracing::warn!(
                        target: TRACING_TARGET,
                        provider = %this.route.id,
                        "the gateway sent an SSE event of more than 4 MiB; the stream is cut"
                    );
                    this.pending = BytesMut::new();
                    this.framer = Framer::default();
                    return Poll::Ready(Some(Err(EventTooLarge.into())));
                }
                None => continue,
            };
            return Poll::Ready(Some(Ok(Frame::data(this.pass(complete)))));
        }
    }

    fn size_hint(&self) -> SizeHint {
        // Scrubbing changes the length.
        SizeHint::default()
    }
}

/// Finds where events end in a buffer that grows at its end (and is cut at an event's
/// end): just after each blank line. Lines end with `\n`, `\r\n` or `\r`. What was
/// searched once is not searched again. (A `\r` at the very end is taken as a line end:
/// should a `\n` follow in the next part, it reads as one more blank line, which SSE
/// clients ignore.)
#[derive(Debug, Default)]
struct Framer {
    /// Where the current line starts.
    line_start: usize,
    /// Where the search for the next line end resumes.
    searched: usize,
}

impl Framer {
    /// The end of the next complete event at or after the last one found.
    fn next_end(&mut self, buf: &[u8]) -> Option<usize> {
        while let Some(found) = buf
            .get(self.searched..)
            .and_then(|rest| memchr::memchr2(b'\n', b'\r', rest))
        {
            let terminator = self.searched + found;
            let next = match buf.get(terminator..terminator + 2) {
                Some(b"\r\n") => terminator + 2,
                _ => terminator + 1,
            };
            let blank = terminator == self.line_start;
            self.line_start = next;
            self.searched = next;
            if blank {
                return Some(next);
            }
        }
        self.searched = buf.len();
        None
    }

    /// The end of the last complete event in `buf`.
    fn last_end(&mut self, buf: &[u8]) -> Option<usize> {
        let mut last = None;
        while let Some(end) = self.next_end(buf) {
            last = Some(end);
        }
        last
    }

    /// The buffer lost its first `end` bytes (complete events).
    fn cut(&mut self, end: usize) {
        self.line_start = self.line_start.saturating_sub(end);
        self.searched = self.searched.saturating_sub(end);
    }
}

/// Whether a JSON event or frame reports an error: `{"type": "error"}`, a `type` ending in
/// `.failed` (`response.failed`, which carries the error), or a top-level `error` (a chat
/// completion stream's error chunk). A text delta that merely says "error" does not.
pub(crate) fn reports_an_error(value: &serde_json::Value) -> bool {
    let kind = value.get("type").and_then(serde_json::Value::as_str);
    kind.is_some_and(|t| t == "error" || t.ends_with(".failed"))
        || value.get("error").is_some_and(|e| !e.is_null())
}

/// Whether a complete SSE event is an error event: an `event: error` line, a `data:` JSON
/// that [`reports_an_error`], or `data:` that is not JSON and mentions `error`.
fn is_error_event(event: &[u8]) -> bool {
    let text = String::from_utf8_lossy(event);
    let mut data = String::new();
    for line in text.split(['\n', '\r']) {
        if let Some(name) = line.strip_prefix("event:") {
            if name.trim() == "error" {
                return true;
            }
        } else if let Some(payload) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(payload.strip_prefix(' ').unwrap_or(payload));
        }
    }
    match serde_json::from_str::<serde_json::Value>(&data) {
        Ok(value) => reports_an_error(&value),
        Err(_) => data.contains("error"),
    }
}

/// `events` (complete ones) with each error event ([`is_error_event`]) rewritten: every
/// line scrubbed (a `data:` line's JSON with [`Scrubber::scrub_json`], so it stays JSON),
/// lines ended with `\n`. Other events are kept byte for byte.
fn scrub_error_events(events: &[u8], scrubber: &Scrubber) -> Bytes {
    let mut out = BytesMut::with_capacity(events.len());
    let mut start = 0;
    while start < events.len() {
        let rest = events.get(start..).unwrap_or_default();
        let len = Framer::default().next_end(rest).unwrap_or(rest.len());
        let event = rest.get(..len).unwrap_or_default();
        if memchr::memmem::find(event, ERROR_MARK).is_none() || !is_error_event(event) {
            out.extend_from_slice(event);
        } else {
            let text = String::from_utf8_lossy(event);
            for line in text.split(['\n', '\r']) {
                // `\r\n` splits into a line and an empty piece: one blank line too many
                // would end the event early, so only real lines are written, then one
                // blank line.
                if line.is_empty() {
                    continue;
                }
                match line.strip_prefix("data:") {
                    Some(data) => {
                        let (space, data) = match data.strip_prefix(' ') {
                            Some(rest) => (" ", rest),
                            None => ("", data),
                        };
                        out.extend_from_slice(b"data:");
                        out.extend_from_slice(space.as_bytes());
                        out.extend_from_slice(scrubber.scrub_json(data).as_bytes());
                    }
                    None => out.extend_from_slice(scrubber.scrub(line).as_bytes()),
                }
                out.extend_from_slice(b"\n");
            }
            out.extend_from_slice(b"\n");
        }
        start += len;
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_end_at_a_blank_line_whatever_the_line_ends() {
        assert_eq!(Framer::default().last_end(b"data: a\n\n"), Some(9));
        assert_eq!(Framer::default().last_end(b"data: a\r\n\r\n"), Some(11));
        assert_eq!(Framer::default().last_end(b"data: a\r\r"), Some(9));
        assert_eq!(
            Framer::default().last_end(b"data: a\n\ndata: b\n\ndata: c"),
            Some(18)
        );
        assert_eq!(Framer::default().last_end(b"data: a\n"), None);
        assert_eq!(Framer::default().last_end(b"data: a"), None);
        assert_eq!(Framer::default().last_end(b"data: a\r\n\r"), Some(10));
        assert_eq!(Framer::default().last_end(b"\n"), Some(1));
        assert_eq!(Framer::default().last_end(b""), None);
    }

    #[test]
    fn a_delta_that_says_error_is_not_an_error_event() {
        let scrubber = Scrubber::new(["tok-SECRET-123"]);
        let delta = b"event: response.output_text.delta\n\
            data: {\"type\":\"response.output_text.delta\",\"delta\":\"raise ValueError(\\\"error\\\")\\n\"}\n\n";
        assert_eq!(
            scrub_error_events(delta, &scrubber),
            Bytes::from_static(delta)
        );
        for error in [
            &b"event: error\ndata: {\"message\":\"x\"}\n\n"[..],
            b"data: {\"type\":\"response.failed\",\"response\":{\"error\":{}}}\n\n",
            b"data: {\"error\":{\"message\":\"x\"}}\n\n",
            b"data: an error, not JSON\n\n",
        ] {
            assert!(is_error_event(error), "{}", String::from_utf8_lossy(error));
        }
    }

    #[test]
    fn a_growing_buffer_is_searched_once() {
        let mut framer = Framer::default();
        let mut buf = b"data: a".to_vec();
        assert_eq!(framer.last_end(&buf), None);
        buf.extend_from_slice(b"bc\n");
        assert_eq!(framer.last_end(&buf), None);
        buf.extend_from_slice(b"\ndata: d\n");
        assert_eq!(framer.last_end(&buf), Some(11));
        framer.cut(11);
        buf.drain(..11);
        buf.extend_from_slice(b"\n");
        assert_eq!(framer.last_end(&buf), Some(9));
    }

    #[test]
    fn only_error_events_are_rewritten() {
        let scrubber = Scrubber::new(["tok-SECRET-123"]);
        let stream = b"event: delta\r\ndata: {\"delta\":\"tok-SECRET-123\"}\r\n\r\n\
            event: error\r\ndata: {\"type\":\"error\",\"message\":\"bad tok-SECRET-123 \\u001b[31m\"}\r\n\r\n\
            data: {\"delta\":\"x\"}\n\n";
        let out = scrub_error_events(stream, &scrubber);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "event: delta\r\ndata: {\"delta\":\"tok-SECRET-123\"}\r\n\r\n\
             event: error\ndata: {\"message\":\"bad [REDACTED] \",\"type\":\"error\"}\n\n\
             data: {\"delta\":\"x\"}\n\n"
        );
    }
}
