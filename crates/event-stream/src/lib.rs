//! The one server-sent-events framer of the workspace, shared by the HTTP client (which
//! reads events) and the proxy (which passes events on and scrubs error events), so both
//! agree on where an event ends.
//!
//! - [`EventFramer`] finds where events end in a byte stream that arrives in chunks, without
//!   copying it: just after each blank line. Lines end with `\r\n`, `\n` or a lone `\r`,
//!   also when a `\r\n` pair is split across two chunks (a `\r` at a chunk's end ends its
//!   line, and a `\n` that opens the next chunk belongs to that same end).
//! - [`SseParser`] turns the bytes into [`SseEvent`]s (name and joined `data:` lines), on
//!   the same framer, skipping a leading byte-order mark, as the SSE specification says.
//!
//! Both are bounded: an event over [`MAX_EVENT_BYTES`] is an error, never a growing buffer.

/// Largest event accepted (a misbehaving gateway cannot make a reader buffer forever).
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Why a stream cannot be read as events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// An event grew past [`MAX_EVENT_BYTES`] before it ended.
    #[error("an SSE event is larger than {} MiB", MAX_EVENT_BYTES >> 20)]
    TooLarge,
    /// A line is not UTF-8.
    #[error("an SSE line is not UTF-8")]
    NotUtf8,
}

/// Finds where events end in a stream fed chunk by chunk; each byte is looked at once.
///
/// An event ends just after the line end of its blank line; when that line end is a `\r`
/// that closes a chunk, a `\n` opening the next chunk is part of it and is the first byte
/// of the next part (where it ends no line).
#[derive(Debug, Default, Clone)]
pub struct EventFramer {
    /// The current line has bytes (so a line end now is not a blank line).
    line_has_bytes: bool,
    /// The last byte fed was a `\r` line end: a `\n` next belongs to it.
    after_cr: bool,
}

impl EventFramer {
    /// Feeds the next chunk; returns the offset in `chunk` just past the last event that
    /// ends in it, if any.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        self.scan(chunk, false)
    }

    /// Like [`feed`](Self::feed), but stops at the first event's end.
    fn scan(&mut self, chunk: &[u8], first_only: bool) -> Option<usize> {
        let mut at = 0;
        let mut last = None;
        loop {
            if self.after_cr {
                match chunk.get(at) {
                    None => break,
                    Some(b'\n') => at += 1,
                    Some(_) => {}
                }
                self.after_cr = false;
            }
            let rest = chunk.get(at..).unwrap_or_default();
            let Some(found) = memchr::memchr2(b'\n', b'\r', rest) else {
                if !rest.is_empty() {
                    self.line_has_bytes = true;
                }
                break;
            };
            let blank = found == 0 && !self.line_has_bytes;
            self.line_has_bytes = false;
            self.after_cr = rest.get(found) == Some(&b'\r');
            at += found + 1;
            if blank {
                // A `\r\n` inside the chunk ends the event after its `\n`.
                if self.after_cr && chunk.get(at) == Some(&b'\n') {
                    at += 1;
                    self.after_cr = false;
                }
                last = Some(at);
                if first_only {
                    break;
                }
            }
        }
        last
    }
}

/// The events in `bytes` one by one, each with its line ends as they came; what follows the
/// last blank line (an event whose end has not arrived) comes last.
pub fn events(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = EventFramer::default()
            .scan(rest, true)
            .unwrap_or(rest.len());
        let (event, after) = rest.split_at(end);
        rest = after;
        Some(event)
    })
}

/// One event: its `event:` name (if any) and its joined `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SseEvent {
    /// The `event:` field, if the event had one.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Reads events from a stream fed chunk by chunk, on [`EventFramer`].
#[derive(Debug, Default)]
pub struct SseParser {
    framer: EventFramer,
    /// The start of an event whose end has not arrived.
    pending: Vec<u8>,
    /// The stream's first bytes were looked at for a byte-order mark.
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    /// Feeds bytes; returns the events completed by them. An event over
    /// [`MAX_EVENT_BYTES`] or a line that is not UTF-8 is an error (the stream is unusable).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let Some(end) = self.framer.feed(bytes) else {
            if self.pending.len() + bytes.len() > MAX_EVENT_BYTES {
                return Err(SseError::TooLarge);
            }
            self.pending.extend_from_slice(bytes);
            return Ok(Vec::new());
        };
        let (complete, rest) = bytes.split_at(end);
        let mut out = Vec::new();
        if self.pending.is_empty() {
            self.events(complete, &mut out)?;
        } else {
            let mut held = std::mem::take(&mut self.pending);
            held.extend_from_slice(complete);
            self.events(&held, &mut out)?;
        }
        if rest.len() > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        self.pending.extend_from_slice(rest);
        Ok(out)
    }

    /// The events in `bytes`, which end where an event ends.
    fn events(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.started {
            self.started = true;
            bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        }
        let mut event_bytes = 0;
        for line in lines(bytes) {
            event_bytes += line.len();
            if event_bytes > MAX_EVENT_BYTES {
                return Err(SseError::TooLarge);
            }
            let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
            if let Some(event) = self.line(line) {
                out.push(event);
                event_bytes = 0;
            }
        }
        Ok(())
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            if !self.has_data {
                return None;
            }
            self.has_data = false;
            return Some(SseEvent {
                event,
                data: std::mem::take(&mut self.data),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

/// The lines of `bytes` (which end where an event ends), each without its line end. A
/// `\n` that opens `bytes` belongs to a `\r` before them and is skipped.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes.strip_prefix(b"\n").unwrap_or(bytes);
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
            // Unreachable for bytes that end where an event ends: a last line without its end.
            let line = rest;
            rest = &[];
            return Some(line);
        };
        let line = rest.get(..end).unwrap_or_default();
        let skip = match rest.get(end..end + 2) {
            Some(b"\r\n") => 2,
            _ => 1,
        };
        rest = rest.get(end + skip..).unwrap_or_default();
        Some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(chunks: &[&[u8]]) -> Vec<Option<usize>> {
        let mut framer = EventFramer::default();
        chunks.iter().map(|c| framer.feed(c)).collect()
    }

    #[test]
    fn events_end_just_after_a_blank_line_whatever_the_line_ends() {
        assert_eq!(ends(&[b"data: a\n\n"]), [Some(9)]);
        assert_eq!(ends(&[b"data: a\r\n\r\n"]), [Some(11)]);
        assert_eq!(ends(&[b"data: a\r\r"]), [Some(9)]);
        assert_eq!(ends(&[b"data: a\n\ndata: b\n\ndata: c"]), [Some(18)]);
        assert_eq!(ends(&[b"data: a\n"]), [None]);
        assert_eq!(ends(&[b"data: a"]), [None]);
        assert_eq!(ends(&[b"\n"]), [Some(1)]);
        assert_eq!(ends(&[b""]), [None]);
    }

    #[test]
    fn a_crlf_split_across_chunks_is_one_line_end() {
        // `event: error\r` | `\n` | `data: x\n\n`: one event, not two.
        assert_eq!(
            ends(&[b"event: error\r", b"\ndata: x\n", b"\n"]),
            [None, None, Some(1)]
        );
        // A blank line's `\r` at a chunk's end ends the event there; the `\n` after it
        // opens the next part and ends no line.
        assert_eq!(
            ends(&[b"data: a\r\n\r", b"\ndata: b\r\n", b"\r\n"]),
            [Some(10), None, Some(2)]
        );
        // A lone `\r` then another line: the `\r` was the whole line end.
        assert_eq!(ends(&[b"data: a\r", b"\r"]), [None, Some(1)]);
    }

    #[test]
    fn events_are_cut_one_by_one_with_their_bytes() {
        let stream = b"data: a\r\n\r\nevent: b\rdata: c\r\r\ndata: d\n\ndata: e";
        let cut: Vec<&[u8]> = events(stream).collect();
        assert_eq!(
            cut,
            [
                &b"data: a\r\n\r\n"[..],
                b"event: b\rdata: c\r\r\n",
                b"data: d\n\n",
                b"data: e"
            ]
        );
        assert_eq!(cut.concat(), stream);
    }

    #[test]
    fn parses_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.feed(b"event: a\r\nda").unwrap().is_empty());
        let events = p
            .feed(b"ta: x\ndata: y\n\n: comment\n\ndata: z\n\n")
            .unwrap();
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: Some("a".into()),
                    data: "x\ny".into()
                },
                SseEvent {
                    event: None,
                    data: "z".into()
                }
            ]
        );
    }

    #[test]
    fn lone_cr_line_endings_and_a_bom_are_understood_under_every_split() {
        let expected = vec![
            SseEvent {
                event: Some("a".into()),
                data: "x".into(),
            },
            SseEvent {
                event: None,
                data: "y".into(),
            },
        ];
        for input in [
            &b"\xEF\xBB\xBFevent: a\rdata: x\r\rdata: y\r\r"[..],
            &b"event: a\r\ndata: x\r\n\r\ndata: y\n\n"[..],
        ] {
            for cut in 0..=input.len() {
                let mut p = SseParser::default();
                let mut events = p.feed(&input[..cut]).unwrap();
                events.extend(p.feed(&input[cut..]).unwrap());
                assert_eq!(events, expected, "cut at {cut}");
            }
        }
    }

    #[test]
    fn first_bytes_that_only_look_like_a_bom_are_kept() {
        // U+FF00 starts with the BOM's first byte: the line is kept (and ignored as a field).
        let input = "\u{FF00}\ndata: z\n\n".as_bytes();
        for cut in 0..=input.len() {
            let mut p = SseParser::default();
            let mut events = p.feed(&input[..cut]).unwrap();
            events.extend(p.feed(&input[cut..]).unwrap());
            assert_eq!(
                events,
                vec![SseEvent {
                    event: None,
                    data: "z".into()
                }],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_oversized_event_is_an_error_in_one_chunk_or_many() {
        let big = vec![b'a'; MAX_EVENT_BYTES + 1];
        assert_eq!(SseParser::default().feed(&big), Err(SseError::TooLarge));
        let mut p = SseParser::default();
        let half = vec![b'a'; MAX_EVENT_BYTES / 2 + 1];
        assert_eq!(p.feed(&half), Ok(Vec::new()));
        assert_eq!(p.feed(&half), Err(SseError::TooLarge));
        let mut whole = b"data: ".to_vec();
        whole.extend_from_slice(&big);
        whole.extend_from_slice(b"\n\n");
        assert_eq!(SseParser::default().feed(&whole), Err(SseError::TooLarge));
    }

    #[test]
    fn a_line_that_is_not_utf8_is_an_error() {
        assert_eq!(
            SseParser::default().feed(b"data: \xff\n\n"),
            Err(SseError::NotUtf8)
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Events, each with an optional name and one to three data lines.
        fn events() -> impl Strategy<Value = Vec<(Option<String>, Vec<String>)>> {
            prop::collection::vec(
                (
                    prop::option::of("[a-z.]{1,12}"),
                    prop::collection::vec("[ -~]{0,20}", 1..4),
                ),
                0..6,
            )
        }

        /// `bytes` cut at `points` (sorted), fed chunk by chunk.
        fn chunks<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
            let mut out = Vec::new();
            let mut from = 0;
            for &at in points.iter().chain([&bytes.len()]) {
                out.push(&bytes[from..at]);
                from = at;
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn every_line_ending_bom_and_chunking_gives_the_same_events(
                events in events(),
                endings in prop::collection::vec(0usize..3, 64),
                bom in any::<bool>(),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            ) {
                // A lone `\r` followed by a `\n` would be one CRLF line end: write `\r\r\n` as
                // `\r` + `\r\n`.
                let mut previous = "";
                let mut ending = endings.iter().cycle().map(|i| {
                    let mut e = ["\n", "\r", "\r\n"][*i];
                    if previous == "\r" && e == "\n" {
                        e = "\r\n";
                    }
                    previous = e;
                    e
                });
                let mut text = String::new();
                if bom {
                    text.push('\u{FEFF}');
                }
                let mut expected = Vec::new();
                let mut expected_ends = Vec::new();
                for (name, data) in &events {
                    if let Some(name) = name {
                        text.push_str(&format!("event: {name}{}", ending.next().unwrap_or("\n")));
                    }
                    for line in data {
                        text.push_str(&format!("data: {line}{}", ending.next().unwrap_or("\n")));
                    }
                    text.push_str(ending.next().unwrap_or("\n"));
                    expected.push(SseEvent { event: name.clone(), data: data.join("\n") });
                    expected_ends.push(text.len());
                }
                let bytes = text.as_bytes();
                let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
                points.sort_unstable();

                let mut parser = SseParser::default();
                let mut got = Vec::new();
                for chunk in chunks(bytes, &points) {
                    got.extend(parser.feed(chunk).unwrap());
                }
                prop_assert_eq!(got, expected);

                // Each end the framer reports is an event's end, or one byte before it when
                // the chunk ended between the blank line's `\r` and its `\n`; the stream's
                // last event is always found.
                let mut framer = EventFramer::default();
                let mut found = Vec::new();
                let mut offset = 0;
                for chunk in chunks(bytes, &points) {
                    if let Some(end) = framer.feed(chunk) {
                        found.push(offset + end);
                    }
                    offset += chunk.len();
                }
                let split_crlf = |f: usize| {
                    expected_ends.contains(&(f + 1)) && bytes.get(f - 1..=f) == Some(b"\r\n")
                };
                for f in &found {
                    prop_assert!(expected_ends.contains(f) || split_crlf(*f), "{} of {:?}", f, expected_ends);
                }
                if let Some(last) = expected_ends.last() {
                    let reported = found.last().copied().unwrap_or(0);
                    prop_assert!(reported == *last || (reported + 1 == *last && split_crlf(reported)));
                }
            }

            #[test]
            fn any_bytes_are_events_or_an_error_never_a_panic(
                bytes in prop::collection::vec(any::<u8>(), 0..1024),
                cut in any::<prop::sample::Index>(),
            ) {
                let cut = cut.index(bytes.len() + 1);
                let whole = SseParser::default().feed(&bytes);
                let mut split = SseParser::default();
                let halves = split.feed(&bytes[..cut]).and_then(|mut a| {
                    a.extend(split.feed(&bytes[cut..])?);
                    Ok(a)
                });
                if let (Ok(a), Ok(b)) = (whole, halves) {
                    prop_assert_eq!(a, b);
                }
            }
        }
    }
}
