//! Any command output through both formats: a token or an error, never a panic, and an
//! error never quotes the output (a marker placed in the output never shows in it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use provider_config::TokenFormat;

const MARKER: &str = "Zq9XMARKx7";

fuzz_target!(|input: &str| {
    let candidates = [
        format!("{input}{MARKER}"),
        format!("{MARKER}{input}"),
        format!("{{\"error\":\"{MARKER}{input}\",\"{MARKER}\":1}}"),
        format!("{{\"access_token\":\"{input}{MARKER}\"}}"),
    ];
    for stdout in &candidates {
        for format in [TokenFormat::Text, TokenFormat::Json] {
            if let Err(e) = provider_auth::parse_token_output(stdout, format) {
                assert!(!e.to_string().contains(MARKER), "stdout quoted");
            }
        }
    }
});
