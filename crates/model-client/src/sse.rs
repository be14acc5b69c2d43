//! A small, bounded server-sent-events parser (public for fuzzing and for reuse).

/// One event: its `event:` name (if any) and its joined `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SseEvent {
    /// The `event:` field, if the event had one.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Largest event accepted (a misbehaving gateway cannot make the client buffer forever).
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Line endings are `\r\n`, `\n` or a lone `\r` (also when a `\r\n` pair is split across
/// chunks), and a leading byte-order mark is skipped, as the SSE specification says.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// The previous byte ended a line with `\r`: a `\n` right after it is part of that end.
    after_cr: bool,
    /// Bytes seen so far, up to 3 (for the byte-order mark).
    started: u8,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    /// Feeds bytes; returns the events completed by them. An event over
    /// [`MAX_EVENT_BYTES`] or a line that is not UTF-8 is an error (the stream is unusable).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut out = Vec::new();
        for &b in bytes {
            if usize::from(self.started) < BOM.len() {
                self.started += 1;
                self.line.push(b);
                if BOM.starts_with(&self.line) {
                    if self.line.len() == BOM.len() {
                        self.line.clear();
                    }
                    continue;
                }
                // Not a byte-order mark: what was held back is ordinary input.
                self.started = u8::MAX;
                let held = std::mem::take(&mut self.line);
                for h in held {
                    self.byte(h, &mut out)?;
                }
                continue;
            }
            self.byte(b, &mut out)?;
        }
        Ok(out)
    }

    fn byte(&mut self, b: u8, out: &mut Vec<SseEvent>) -> Result<(), String> {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        match b {
            b'\n' if after_cr => Ok(()),
            b'\n' | b'\r' => {
                self.after_cr = b == b'\r';
                let line = std::mem::take(&mut self.line);
                let line =
                    String::from_utf8(line).map_err(|_| "an SSE line is not UTF-8".to_owned())?;
                if let Some(event) = self.line_done(&line) {
                    out.push(event);
                }
                Ok(())
            }
            _ => {
                self.line.push(b);
                if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
                    return Err(format!(
                        "an SSE event is larger than {} MiB",
                        MAX_EVENT_BYTES >> 20
                    ));
                }
                Ok(())
            }
        }
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn lone_cr_line_endings_and_a_bom_are_understood() {
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
            // Every split of the input into two chunks gives the same events.
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
    fn oversized_event_is_an_error() {
        let mut p = SseParser::default();
        let big = vec![b'a'; MAX_EVENT_BYTES + 1];
        assert!(p.feed(&big).is_err());
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
                for (name, data) in &events {
                    if let Some(name) = name {
                        text.push_str(&format!("event: {name}{}", ending.next().unwrap_or("\n")));
                    }
                    for line in data {
                        text.push_str(&format!("data: {line}{}", ending.next().unwrap_or("\n")));
                    }
                    text.push_str(ending.next().unwrap_or("\n"));
                    expected.push(SseEvent { event: name.clone(), data: data.join("\n") });
                }
                let bytes = text.as_bytes();
                let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
                points.sort_unstable();
                let mut parser = SseParser::default();
                let mut got = Vec::new();
                let mut from = 0;
                for at in points.into_iter().chain([bytes.len()]) {
                    got.extend(parser.feed(&bytes[from..at]).unwrap());
                    from = at;
                }
                prop_assert_eq!(got, expected);
            }

            #[test]
            fn any_bytes_are_events_or_an_error_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
                let _ = SseParser::default().feed(&bytes);
            }
        }
    }
}
