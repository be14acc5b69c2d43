//! Any command output through both formats: a token or an error that quotes none of it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provider_config::TokenFormat;

fuzz_target!(|stdout: &str| {
    for format in [TokenFormat::Text, TokenFormat::Json] {
        if let Err(e) = provider_auth::parse_token_output(stdout, format) {
            let shown = e.to_string();
            let trimmed = stdout.trim();
            assert!(trimmed.len() < 16 || !shown.contains(trimmed), "stdout quoted");
        }
    }
});
