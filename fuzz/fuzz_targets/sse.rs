//! Any bytes, in two chunks, through the SSE parser: events or an error, never a panic,
//! and the same events whatever the split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_client::SseParser;

fuzz_target!(|input: (usize, &[u8])| {
    let (cut, bytes) = input;
    let cut = cut % (bytes.len() + 1);
    let whole = SseParser::default().feed(bytes);
    let mut split = SseParser::default();
    let halves = split
        .feed(&bytes[..cut])
        .and_then(|mut a| split.feed(&bytes[cut..]).map(|b| { a.extend(b); a }));
    if let (Ok(a), Ok(b)) = (whole, halves) {
        assert_eq!(a, b);
    }
});
