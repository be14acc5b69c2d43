//! Server-sent events on their way to the client: every event goes on as it came, except
//! an error event (an `event: error`, a `{"type":"error"}`, a `response.failed` or a
//! top-level `"error": {...}` in its data) and an event that holds a copy of a token sent
//! to the provider, whose lines are scrubbed of every such token and of terminal escapes,
//! those in its JSON strings included. A text delta that merely says "error" goes on
//! untouched. A gateway that echoes the credential in a stream does not hand it to the
//! client.
//!
//! Events go on whole, as soon as their blank line arrives: an SSE client acts on nothing
//! before that, so holding the rest of a partial event back delays nothing it could use.
//! Where an event ends, and what it says, come from `event_stream`, the framer and parser
//! the HTTP client reads with, so the proxy judges the very events a client will see.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use event_stream::{EventFramer, MAX_EVENT_BYTES, SseParser};
use hyper::body::{Body, Frame, SizeHint};
use provider_auth::Scrubber;

use crate::TRACING_TARGET;
use crate::idle::IdleBounded;
use crate::route::Route;

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
    events: EventScrub,
}

impl ScrubbedEvents {
    pub(crate) fn new(body: IdleBounded, route: Arc<Route>, scrubber: Arc<Scrubber>) -> Self {
        Self {
            body,
            route,
            events: EventScrub::new(scrubber),
        }
    }
}

impl Body for ScrubbedEvents {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            let route = &this.route;
            let frame = match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    let rest = this.events.finish();
                    return Poll::Ready(rest.map(|rest| Ok(Frame::data(rest))));
                }
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                // Trailers go on as they are.
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            };
            match this.events.push(data) {
                Ok(Some(events)) => return Poll::Ready(Some(Ok(Frame::data(events)))),
                Ok(None) => {}
                Err(e) => {
                    route.count(|c| &c.errors);
                    tracing::warn!(
                        target: TRACING_TARGET,
                        provider = %route.id(),
                        "the gateway sent an SSE event of more than 4 MiB; the stream is cut"
                    );
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        // Scrubbing changes the length.
        SizeHint::default()
    }
}

/// The stream's bytes, cut into whole events, error events and echoes scrubbed.
struct EventScrub {
    /// The start of an event whose end has not arrived.
    pending: BytesMut,
    framer: EventFramer,
    scrubber: Arc<Scrubber>,
}

impl EventScrub {
    fn new(scrubber: Arc<Scrubber>) -> Self {
        Self {
            pending: BytesMut::new(),
            framer: EventFramer::default(),
            scrubber,
        }
    }

    /// The next part of the stream; returns the events it completes, if any. Only what
    /// arrived is searched: a long event costs its length once.
    fn push(&mut self, chunk: Bytes) -> Result<Option<Bytes>, EventTooLarge> {
        let end = self.framer.feed(&chunk);
        let complete = if self.pending.is_empty() && end == Some(chunk.len()) {
            // The common case: whole events, passed on without a copy.
            chunk
        } else {
            let held = self.pending.len();
            self.pending.extend_from_slice(&chunk);
            match end {
                Some(end) => self.pending.split_to(held + end).freeze(),
                None if self.pending.len() > MAX_EVENT_BYTES => {
                    self.pending = BytesMut::new();
                    self.framer = EventFramer::default();
                    return Err(EventTooLarge);
                }
                None => return Ok(None),
            }
        };
        Ok(Some(self.pass(complete)))
    }

    /// The last event, should the stream end without its blank line.
    fn finish(&mut self) -> Option<Bytes> {
        if self.pending.is_empty() {
            return None;
        }
        let rest = self.pending.split().freeze();
        Some(self.pass(rest))
    }

    /// Complete events as they go to the client.
    fn pass(&self, events: Bytes) -> Bytes {
        if memchr::memmem::find(&events, ERROR_MARK).is_none()
            && !self.scrubber.finds_secret(&events)
        {
            return events;
        }
        scrub_events(&events, &self.scrubber)
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

/// Whether a complete SSE event is an error event: read as a client reads it, it is named
/// `error` (spaces aside), its data is JSON that [`reports_an_error`], or its data is not
/// JSON and mentions `error`. Bytes that make no event for a client (comments, an event
/// without data, lines that are not UTF-8) are judged an error event: they are only looked
/// at when they mention `error`, and scrubbing them costs nothing a client reads.
fn is_error_event(event: &[u8]) -> bool {
    let events = match SseParser::default().feed(event) {
        Ok(events) if !events.is_empty() => events,
        _ => return true,
    };
    events.iter().any(|e| {
        e.event
            .as_deref()
            .is_some_and(|name| name.trim() == "error")
            || match serde_json::from_str::<serde_json::Value>(&e.data) {
                Ok(value) => reports_an_error(&value),
                Err(_) => e.data.contains("error"),
            }
    })
}

/// `events` (complete ones) with each error event ([`is_error_event`]) and each event that
/// holds a secret rewritten: every line scrubbed (a `data:` line's JSON with
/// [`Scrubber::scrub_json`], so it stays JSON), lines ended with `\n`. Other events are
/// kept byte for byte.
fn scrub_events(events: &[u8], scrubber: &Scrubber) -> Bytes {
    let mut out = BytesMut::with_capacity(events.len());
    for event in event_stream::events(events) {
        let error = memchr::memmem::find(event, ERROR_MARK).is_some() && is_error_event(event);
        if !error && !scrubber.finds_secret(event) {
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
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "tok-SECRET-123";

    /// What a client gets when `stream` arrives cut at `cuts` (sorted).
    fn through(stream: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut scrub = EventScrub::new(Arc::new(Scrubber::new([SECRET])));
        let mut out = Vec::new();
        let mut from = 0;
        for &at in cuts.iter().chain([&stream.len()]) {
            let chunk = Bytes::copy_from_slice(&stream[from..at]);
            if let Some(events) = scrub.push(chunk).unwrap() {
                out.extend_from_slice(&events);
            }
            from = at;
        }
        out.extend_from_slice(&scrub.finish().unwrap_or_default());
        out
    }

    fn parse(bytes: &[u8]) -> Vec<event_stream::SseEvent> {
        SseParser::default().feed(bytes).unwrap()
    }

    #[test]
    fn an_error_event_split_after_its_cr_is_still_scrubbed() {
        let stream = b"data: {\"delta\":\"hi\"}\r\n\r\n\
            event: error\r\ndata: {\"message\":\"bad tok-SECRET-123\"}\r\n\r\n";
        for cut in 0..=stream.len() {
            let out = through(stream, &[cut]);
            let events = parse(&out);
            assert_eq!(events.len(), 2, "cut at {cut}");
            assert_eq!(events[1].event.as_deref(), Some("error"), "cut at {cut}");
            assert_eq!(
                events[1].data, r#"{"message":"bad [REDACTED]"}"#,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_delta_that_says_error_is_not_an_error_event() {
        let scrubber = Scrubber::new(["tok-SECRET-123"]);
        let delta = b"event: response.output_text.delta\n\
            data: {\"type\":\"response.output_text.delta\",\"delta\":\"raise ValueError(\\\"error\\\")\\n\"}\n\n";
        assert_eq!(scrub_events(delta, &scrubber), Bytes::from_static(delta));
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
    fn only_error_events_and_echoes_are_rewritten() {
        let scrubber = Scrubber::new(["tok-SECRET-123"]);
        let stream = b"event: delta\r\ndata: {\"delta\":\"tok-SECRET-123\"}\r\n\r\n\
            event: error\r\ndata: {\"type\":\"error\",\"message\":\"bad tok-SECRET-123 \\u001b[31m\"}\r\n\r\n\
            event: delta\r\ndata: {\"delta\":\"x\"}\r\n\r\n";
        let out = scrub_events(stream, &scrubber);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "event: delta\ndata: {\"delta\":\"[REDACTED]\"}\n\n\
             event: error\ndata: {\"message\":\"bad [REDACTED] \",\"type\":\"error\"}\n\n\
             event: delta\r\ndata: {\"delta\":\"x\"}\r\n\r\n"
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// An event: (is it kept as it came, its lines).
        fn event() -> impl Strategy<Value = (bool, Vec<String>)> {
            prop_oneof![
                "[a-zA-Z0-9 .,:!?]{0,12}".prop_map(|t| (
                    false,
                    vec![format!(
                        r#"data: {{"type":"response.output_text.delta","delta":"error {t}"}}"#
                    )]
                )),
                "[a-zA-Z0-9 .,:!?]{0,12}".prop_map(|t| (
                    true,
                    vec![format!(
                        r#"data: {{"type":"response.output_text.delta","delta":"{t} {SECRET}"}}"#
                    )]
                )),
                "[a-z ]{0,12}".prop_map(|t| (
                    true,
                    vec![
                        "event: error".to_owned(),
                        format!(r#"data: {{"message":"{t} {SECRET}"}}"#),
                    ]
                )),
                "[a-z ]{0,12}".prop_map(|t| (
                    true,
                    vec![format!(
                        r#"data: {{"type":"error","error":{{"message":"{t}{SECRET}"}}}}"#
                    )]
                )),
                Just((false, vec![": keep-alive".to_owned()])),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// The proxy's output, read by the client's parser, has the input's events in
            /// order: error events and echoes without the token, every other one as it was;
            /// whatever the line ends and wherever the stream is cut.
            #[test]
            fn a_client_reads_the_same_events_and_none_carries_the_token(
                events in prop::collection::vec(event(), 0..6),
                endings in prop::collection::vec(0usize..3, 64),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            ) {
                let mut previous = "";
                let mut ending = endings.iter().cycle().map(|i| {
                    let mut e = ["\n", "\r", "\r\n"][*i];
                    // `\r` then `\n` would be one line end.
                    if previous == "\r" && e == "\n" {
                        e = "\r\n";
                    }
                    previous = e;
                    e
                });
                let mut text = String::new();
                for (_, lines) in &events {
                    for line in lines {
                        text.push_str(line);
                        text.push_str(ending.next().unwrap_or("\n"));
                    }
                    text.push_str(ending.next().unwrap_or("\n"));
                }
                let bytes = text.as_bytes();
                let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
                points.sort_unstable();
                let expected = parse(bytes);
                let got = parse(&through(bytes, &points));
                prop_assert_eq!(got.len(), expected.len());
                let rewritten = events.iter().filter(|(_, lines)| lines.iter().any(|l| l.starts_with("data"))).map(|(e, _)| *e);
                for ((got, expected), rewritten) in got.iter().zip(&expected).zip(rewritten) {
                    if rewritten {
                        prop_assert!(!got.data.contains(SECRET), "{:?}", got);
                        prop_assert_eq!(&got.event, &expected.event);
                    } else {
                        prop_assert_eq!(got, expected);
                    }
                }
            }
        }
    }
}
