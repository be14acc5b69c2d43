//! Any text through the config loader: an error or a config, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = provider_config::parse_config_str(text, std::path::Path::new("fuzz.toml"), None);
});
