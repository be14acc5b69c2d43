//! The one scrubber for text that comes from a gateway (error bodies, SSE `error` events,
//! websocket close reasons and frames): control characters removed, and every copy of a
//! secret this process sent replaced by [`REDACTED`], in the forms a gateway is likely to
//! echo it in.

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::token::AuthToken;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// A secret copied this many characters long or longer is caught even when only part of it
/// is echoed (a truncated copy, or a copy split by a control character or a line break).
const WINDOW: usize = 8;

/// Shorter needles are not searched for (they would match ordinary text).
const MIN_NEEDLE: usize = 3;

/// Scrubs gateway text of a set of secrets.
///
/// For each secret it looks for the secret itself, its JSON-escaped forms (with and without
/// `\/`), its URL-encoded forms (either case of hex digits) and its base64 forms (standard
/// and URL-safe alphabets, at any alignment inside a longer base64 text). Any run of
/// 8 or more characters of one of those forms is replaced, so truncated and split
/// copies are caught too.
///
/// Built once, it checks text in about 2 ns per byte: every 8-byte run of
/// every form is kept (sorted, zeroed on drop) behind a 64 Ki-bit filter, so most positions
/// cost one multiplication and one bit test.
pub struct Scrubber {
    /// Forms shorter than [`WINDOW`], searched for whole.
    short: Vec<Zeroizing<String>>,
    /// Every `WINDOW`-byte run of the longer forms, as little-endian `u64`s, sorted.
    windows: Zeroizing<Vec<u64>>,
    /// One bit per [`filter_bit`] of each of `windows`.
    filter: Box<[u64; FILTER_BITS / 64]>,
}

/// Bits in [`Scrubber::filter`].
const FILTER_BITS: usize = 1 << 16;

/// Where a window lands in the filter.
fn filter_bit(window: u64) -> usize {
    // A multiplicative hash; its top 16 bits pick the bit.
    usize::try_from(window.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48).unwrap_or_default()
}

/// The `WINDOW` bytes at the start of `bytes`, if it has that many.
fn window_at(bytes: &[u8]) -> Option<u64> {
    let first: [u8; WINDOW] = bytes.get(..WINDOW)?.try_into().ok()?;
    Some(u64::from_le_bytes(first))
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("short", &self.short.len())
            .field("windows", &self.windows.len())
            .finish()
    }
}

impl Scrubber {
    /// A scrubber for `secrets` (tokens, helper header values, configured header values).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut short: Vec<Zeroizing<String>> = Vec::new();
        let mut windows = Zeroizing::new(Vec::new());
        for secret in secrets {
            for form in encoded_forms(secret) {
                if form.len() >= WINDOW {
                    let bytes = form.as_bytes();
                    windows.extend(
                        (0..=bytes.len() - WINDOW)
                            .filter_map(|at| bytes.get(at..).and_then(window_at)),
                    );
                } else if form.len() >= MIN_NEEDLE
                    && !short.iter().any(|n| n.as_str() == form.as_str())
                {
                    short.push(form);
                }
            }
        }
        windows.sort_unstable();
        windows.dedup();
        let mut filter = Box::new([0u64; FILTER_BITS / 64]);
        for window in windows.iter() {
            let bit = filter_bit(*window);
            filter[(bit >> 6) & (FILTER_BITS / 64 - 1)] |= 1 << (bit & 63);
        }
        Self {
            short,
            windows,
            filter,
        }
    }

    /// Whether `text` holds a copy of a secret (any run of 8 bytes of one of its
    /// forms, or a whole short one): what [`Scrubber::scrub`] would replace. Cheap enough
    /// for every header of every answer.
    pub fn finds_secret(&self, text: &[u8]) -> bool {
        let mut hits = Vec::new();
        self.find_copies(text, &mut hits, true);
        !hits.is_empty()
    }

    /// Adds to `hits` the byte ranges of `text` that copy a short form whole, or any run of
    /// [`WINDOW`] bytes of a longer one; with `first_only`, stops at the first.
    fn find_copies(&self, text: &[u8], hits: &mut Vec<(usize, usize)>, first_only: bool) {
        for needle in &self.short {
            let needle = needle.as_bytes();
            let mut from = 0;
            while let Some(pos) = text
                .get(from..)
                .and_then(|rest| memchr::memmem::find(rest, needle))
            {
                hits.push((from + pos, from + pos + needle.len()));
                if first_only {
                    return;
                }
                from += pos + needle.len();
            }
        }
        if self.windows.is_empty() || text.len() < WINDOW {
            return;
        }
        // The window rolls one byte at a time (the newest byte on top), so that it reads as
        // `u64::from_le_bytes` of the 8 bytes ending here.
        let (head, rest) = text.split_at(WINDOW - 1);
        let mut window: u64 = head
            .iter()
            .fold(0, |w, &byte| (w >> 8) | (u64::from(byte) << 56));
        for (at, &byte) in rest.iter().enumerate() {
            window = (window >> 8) | (u64::from(byte) << 56);
            let bit = filter_bit(window);
            // `bit` is below FILTER_BITS: the mask only spares a bounds check.
            let maybe = self.filter[(bit >> 6) & (FILTER_BITS / 64 - 1)] & (1 << (bit & 63)) != 0;
            if maybe && self.windows.binary_search(&window).is_ok() {
                let start = at;
                hits.push((start, start + WINDOW));
                if first_only {
                    return;
                }
            }
        }
    }

    /// A scrubber for tokens.
    pub fn for_tokens<'a>(tokens: impl IntoIterator<Item = &'a AuthToken>) -> Self {
        Self::new(tokens.into_iter().map(AuthToken::expose_secret))
    }

    /// `text` with terminal escape sequences and control characters removed (line breaks
    /// and tabs become spaces) and every secret replaced by [`REDACTED`].
    pub fn scrub(&self, text: &str) -> String {
        let clean = without_control(text);
        let mut hits: Vec<(usize, usize)> = Vec::new();
        self.find_copies(clean.as_bytes(), &mut hits, false);
        if hits.is_empty() {
            return clean;
        }
        hits.sort_unstable();
        let mut out = String::with_capacity(clean.len());
        let mut at = 0;
        for (start, end) in merge(hits) {
            // Needles are ASCII, so every range starts and ends on a char boundary.
            out.push_str(clean.get(at..start).unwrap_or_default());
            out.push_str(REDACTED);
            at = end;
        }
        out.push_str(clean.get(at..).unwrap_or_default());
        out
    }

    /// [`Scrubber::scrub`] for text that may be JSON (an error body, an SSE error event's
    /// data, a websocket frame). When it parses, the control characters and terminal escape
    /// sequences inside its strings (written `\u001b` in the text, so [`Scrubber::scrub`]
    /// does not see them) are removed too, but for line breaks and tabs, and the result is
    /// still JSON (compact, keys in order). Otherwise it is [`Scrubber::scrub`] of the text.
    pub fn scrub_json(&self, text: &str) -> String {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(mut value) => {
                strip_control_in_strings(&mut value);
                self.scrub(&value.to_string())
            }
            Err(_) => self.scrub(text),
        }
    }

    /// [`Scrubber::scrub`], whitespace folded, at most `max_chars` characters: a one-line
    /// excerpt for an error message.
    pub fn excerpt(&self, text: &str, max_chars: usize) -> String {
        let scrubbed = self.scrub(text);
        let folded = scrubbed.split_whitespace().collect::<Vec<_>>().join(" ");
        match folded.char_indices().nth(max_chars) {
            Some((cut, _)) => format!("{}...", folded.get(..cut).unwrap_or_default()),
            None => folded,
        }
    }
}

/// `text` without terminal escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL`
/// or `ESC \\`, and two-character `ESC x`) and without other control characters; line
/// breaks and tabs become spaces.
fn without_control(text: &str) -> String {
    without_escapes(text, true)
}

/// [`without_control`], but with `\n` and `\t` kept unless `fold` (text inside a JSON
/// string, where a line break is content, not a way to forge a log line).
fn without_escapes(text: &str, fold: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    // Parameters and intermediates, up to the final byte (@ to ~).
                    for n in chars.by_ref() {
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(n) = chars.next() {
                        if n == '\u{7}' {
                            break;
                        }
                        if n == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\n' | '\t' if !fold => out.push(c),
            '\n' | '\r' | '\t' if fold => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Every string of `value` (object keys aside) without terminal escapes and control
/// characters; line breaks and tabs, which are content there, are kept.
fn strip_control_in_strings(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                *s = without_escapes(s, false);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_control_in_strings),
        Value::Object(map) => map.values_mut().for_each(strip_control_in_strings),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The forms a secret may be echoed in.
fn encoded_forms(secret: &str) -> Vec<Zeroizing<String>> {
    let mut forms = vec![Zeroizing::new(secret.to_owned())];
    if let Ok(json) = serde_json::to_string(secret) {
        let inner = json
            .strip_prefix('"')
            .and_then(|j| j.strip_suffix('"'))
            .unwrap_or(&json);
        forms.push(Zeroizing::new(inner.replace('/', "\\/")));
        forms.push(Zeroizing::new(inner.to_owned()));
    }
    let upper = percent_encode(secret);
    forms.push(Zeroizing::new(upper.to_ascii_lowercase_hex()));
    forms.push(Zeroizing::new(upper));
    for engine in [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for shift in 0..3usize {
            // The secret at every alignment inside a longer base64 text: encode it behind
            // `shift` filler bytes and keep only the characters that depend on it alone.
            let mut input = Zeroizing::new(vec![0u8; shift]);
            input.extend_from_slice(secret.as_bytes());
            let encoded = Zeroizing::new(engine.encode(input.as_slice()));
            let skip = [0, 2, 3][shift];
            let keep_end = if input.len() % 3 == 0 {
                encoded.len()
            } else {
                encoded.len().saturating_sub(1)
            };
            if let Some(core) = encoded.get(skip..keep_end) {
                forms.push(Zeroizing::new(core.to_owned()));
            }
        }
    }
    forms
}

/// Percent-encodes every byte but the unreserved ones, with upper-case hex digits.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

trait LowerHex {
    fn to_ascii_lowercase_hex(&self) -> String;
}

impl LowerHex for String {
    /// The same percent-encoding with lower-case hex digits (`%2f` for `%2F`).
    fn to_ascii_lowercase_hex(&self) -> String {
        let mut out = String::with_capacity(self.len());
        let mut hex_left = 0;
        for c in self.chars() {
            if c == '%' {
                hex_left = 2;
                out.push(c);
            } else if hex_left > 0 {
                hex_left -= 1;
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Overlapping or touching ranges merged, in order.
fn merge(sorted: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (start, end) in sorted {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "eyJhbGciOi.Jz/d+Uxw9Zq_Xk3Lm==";

    fn scrubbed(text: &str) -> String {
        Scrubber::new([TOKEN]).scrub(text)
    }

    #[test]
    fn json_keeps_its_shape_and_loses_escapes_inside_strings() {
        let scrubber = Scrubber::new([TOKEN]);
        // The token as JSON writes it (`/` may be escaped as `\/`).
        let escaped = TOKEN.replace('/', "\\/");
        let body = format!(
            "{{\n  \"error\": {{\"message\": \"\\u001b]0;owned\\u0007\\u001b[31mbad {escaped}\", \"code\": 401}}\n}}"
        );
        let out = scrubber.scrub_json(&body);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["error"]["message"], "bad [REDACTED]");
        assert_eq!(value["error"]["code"], 401);
        // A line break inside a string is content: kept.
        let lines = scrubber.scrub_json(r#"{"message":"line one\nline two\tx\r"}"#);
        assert_eq!(lines, r#"{"message":"line one\nline two\tx"}"#);
        // Not JSON: the plain scrub.
        assert_eq!(scrubber.scrub_json("bad \u{1b}[31m"), "bad ");
    }

    #[test]
    fn every_encoding_of_the_token_is_replaced() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(TOKEN);
        let b64_bearer =
            base64::engine::general_purpose::URL_SAFE.encode(format!("Bearer {TOKEN}"));
        let json = serde_json::to_string(TOKEN).unwrap().replace('/', "\\/");
        for echo in [
            TOKEN.to_owned(),
            json,
            percent_encode(TOKEN),
            percent_encode(TOKEN).to_ascii_lowercase_hex(),
            b64,
            b64_bearer,
            TOKEN[..20].to_owned(),
            TOKEN[8..].to_owned(),
            format!("{}\u{1}{}", &TOKEN[..14], &TOKEN[14..]),
            format!("{}\n{}", &TOKEN[..14], &TOKEN[14..]),
        ] {
            let out = scrubbed(&format!("bad token <{echo}> sent"));
            assert!(out.contains(REDACTED), "{echo}: {out}");
            for piece in TOKEN.as_bytes().windows(8) {
                let piece = std::str::from_utf8(piece).unwrap();
                assert!(!out.contains(piece), "{echo} leaked {piece}: {out}");
            }
            assert!(
                out.starts_with("bad token <") && out.ends_with("> sent"),
                "{out}"
            );
        }
    }

    #[test]
    fn other_text_is_kept_and_control_characters_removed() {
        assert_eq!(
            scrubbed("\u{1b}[31mquota\u{7} exceeded\u{1b}[0m\r\n"),
            "quota exceeded  "
        );
        assert_eq!(
            scrubbed("\u{1b}]0;title\u{7}a\u{1b}]8;;x\u{1b}\\b\u{1b}Mc\u{1b}"),
            "abc"
        );
        assert_eq!(Scrubber::new([]).excerpt("a  b\n\nc", 100), "a b c");
        assert_eq!(Scrubber::new([]).excerpt("abcdef", 3), "abc...");
    }

    #[test]
    fn debug_shows_no_secret() {
        let shown = format!("{:?}", Scrubber::new([TOKEN]));
        assert!(!shown.contains("eyJ"), "{shown}");
    }
}
